"""lab/update.py without a lab: the plans `scripts/lab update` prints and carries out for the day-two
changes the lab tests make, from the real program (the lab test runs them on hosts)."""

from __future__ import annotations

import pytest

from lab.changes import INSTANCE, PARAMETER, generated_outputs, plan, record
from lab.mock_cloud import run_program, stack_config
from lab.update import describe, preview, settings_after


@pytest.fixture(scope="module")
def lab_stack():
    config, region = stack_config("Pulumi.lab.yaml")
    run = run_program(dict(config), stack="lab", region=region)
    return config, region, record(run), generated_outputs(run)


def changes_for(lab_stack, **overrides):
    config, region, state, kept = lab_stack
    changed = run_program(
        settings_after(config, {k: str(v) for k, v in overrides.items()}), stack="lab", region=region, kept=kept
    )
    return plan(state, changed)


def by_type(changes, type_: str) -> dict[str, str]:
    return {c.name: c.action for c in changes if c.type == type_}


def test_a_third_web_server_is_created_and_the_running_hosts_only_reload(lab_stack):
    changes = changes_for(lab_stack, webCount=3)
    assert by_type(changes, INSTANCE) == {"web-03-instance": "create"}
    assert by_type(changes, PARAMETER) == {
        "config-haproxy-runtime-cfg": "update",  # the new backend
        "config-failover-servers-json": "update",  # the controller's servers
        "config-firewall-peers-nft": "update",  # who may reach MariaDB
        "secrets-db-tls-web-03-parameter": "create",
    }
    names = [c.name for c in changes]
    # the parameters before the instance that reads them, the smoke test after it
    assert names.index("config-firewall-peers-nft") < names.index("web-03-instance") < names.index("smoke-test-run")
    assert {c.name: c.action for c in changes}["smoke-test-run"] == "replace"  # a new instance: it runs again


def test_back_to_two_deletes_the_third_after_everything_else(lab_stack):
    config, region, _, kept = lab_stack
    three = run_program(settings_after(config, {"webCount": "3"}), stack="lab", region=region, kept=kept)
    two = run_program(dict(config), stack="lab", region=region, kept=generated_outputs(three))
    changes = plan(record(three), two)
    assert by_type(changes, INSTANCE) == {"web-03-instance": "delete"}
    deleted = [c for c in changes if c.action == "delete"]
    assert changes[-len(deleted) :] == deleted  # Pulumi deletes last
    (instance,) = [c for c in deleted if c.type == INSTANCE]
    assert instance.label == "web-03"


def test_a_new_rate_limit_changes_one_parameter_and_nothing_else(lab_stack):
    changes = changes_for(lab_stack, rateLimitPer10s=700)
    # the smoke test runs again: it waits until the site serves the new configuration (X-Webinfra-Config)
    assert [(c.name, c.action) for c in changes] == [
        ("config-haproxy-runtime-cfg", "update"),
        ("smoke-test-run", "replace"),
    ]


def test_the_preview_says_what_and_why():
    from lab.changes import Change

    changes = [
        Change("web-03-instance", INSTANCE, "create"),
        Change("lb-01-instance", INSTANCE, "replace", ("userDataBase64",), ("userDataBase64",), True),
        Change("config-haproxy-runtime-cfg", PARAMETER, "update", ("value",)),
    ]
    text = preview(changes)
    assert "+-" in describe(changes[1]) and "[userDataBase64] delete first" in describe(changes[1])
    assert text.endswith("resources: 1 to create, 1 to update, 1 to replace")
    assert preview([]).strip() == "no changes"


def test_a_new_instance_type_changes_the_replicas_one_at_a_time_and_never_the_primary(lab_stack):
    config, region, _, kept = lab_stack
    three = run_program(settings_after(config, {"webCount": "3"}), stack="lab", region=region, kept=kept)
    bigger = run_program(
        settings_after(config, {"webCount": "3", "instanceType": "t3.small"}),
        stack="lab",
        region=region,
        kept=generated_outputs(three),
    )
    changes = plan(record(three), bigger)
    # in place (stop, new type, start), each replica's gate (the site serves with it again) before the next
    assert [(c.name, c.action) for c in changes] == [
        ("web-02-instance", "update"),
        ("web-02-ready", "update"),
        ("web-03-instance", "update"),
        ("web-03-ready", "update"),
    ]
    assert changes[0].properties == ("instanceType",)
