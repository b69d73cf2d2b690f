"""The program evaluated with a changed setting and compared with the original by lab/changes.py (the
lab's `pulumi preview`: Pulumi's diff with the provider's replace-on-change inputs).

A change replaces only the instances it must (none for what a running stack reloads); every instance it
replaces is deleted before its replacement is created, since every instance asks for a fixed private
address that its old self holds until deleted (create-first would fail with InvalidIPAddress.InUse); and
a load-balancer pair is never replaced at once.
"""

from __future__ import annotations

import pytest

from lab.changes import INSTANCE, Change, generated_outputs, plan, record
from lab.mock_cloud import run_program

BASES: dict[str, dict[str, object]] = {"one load balancer": {}, "load-balancer pair": {"lbCount": 2}}
# What each change must replace (the load balancers only where their user-data must change: a firewall
# rule or ACME's files); everything a running stack can reload (HAProxy's backends and rate limit, the
# firewall's allowlists, the failover controller's servers) travels as runtime configuration instead.
LBS = "the load balancers"
CHANGES: dict[str, tuple[dict[str, object], set[str]]] = {
    "rateLimitPer10s": ({"rateLimitPer10s": 300}, set()),
    "webCount": ({"webCount": 3}, set()),
    "rootVolumeGb": ({"rootVolumeGb": 30}, set()),  # in place
    "instanceType": ({"instanceType": "t3.small"}, set()),  # in place: stop, modify, start
    "adminCidr": ({"adminCidr": "203.0.113.7/32"}, {LBS}),  # the stats port's firewall rule
    "domain": ({"domain": "www.example.com", "acmeEmail": "ops@example.com"}, {LBS}),
    # a key pair replaces every instance but the primary (which ignores it: it holds the data)
    "sshKeyName": ({"adminCidr": "203.0.113.7/32", "sshKeyName": "ops"}, {LBS, "web-02-instance"}),
}


@pytest.fixture(scope="module")
def bases():
    runs = {label: run_program(config) for label, config in BASES.items()}
    return {label: (run, record(run), generated_outputs(run)) for label, run in runs.items()}


def replaced_instances(base, change: dict[str, object], config: dict[str, object]) -> dict[str, Change]:
    _, state, kept = base
    changed = run_program({**config, **change}, kept=kept)
    return {c.name: c for c in plan(state, changed) if c.type == INSTANCE and c.action == "replace"}


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
@pytest.mark.parametrize("base", BASES, ids=list(BASES))
def test_a_change_replaces_only_what_it_must_and_deletes_before_it_replaces(bases, base, change):
    settings, expected = CHANGES[change]
    replaced = replaced_instances(bases[base], settings, BASES[base])
    lbs = {"lb-01-instance", "lb-02-instance"} if base == "load-balancer pair" else {"lb-01-instance"}
    wanted = (lbs if LBS in expected else set()) | (expected - {LBS})
    assert set(replaced) == wanted, {name: c.forced_by for name, c in replaced.items()}
    for name, change_ in replaced.items():
        assert change_.delete_first, f"{name} is replaced ({change_.forced_by}) create-before-delete"
    if base == "load-balancer pair" and replaced.keys() & lbs:
        # both replaced by one `pulumi up`: lb-01 only after lb-02's replacement serves again
        order = [c.name for c in plan(bases[base][1], run_program({**BASES[base], **settings}, kept=bases[base][2]))]
        assert order.index("lb-02-instance") < order.index("lb-02-ready") < order.index("lb-01-instance")


def test_no_setting_replaces_the_database_primary(bases):
    # web-01 holds the data: it ignores user-data and key-pair changes, so none of these replaces it
    for label, base in bases.items():
        for settings, _ in CHANGES.values():
            assert "web-01-instance" not in replaced_instances(base, settings, BASES[label])


def test_every_fixed_address_instance_is_replaced_delete_before_replace(program):
    # `pulumi up --replace URN` may replace any of them
    for instance in program.of_type(INSTANCE):
        assert instance.inputs.get("privateIp") and instance.options["delete_before_replace"] is True, instance
