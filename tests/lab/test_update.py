"""lab/update.py without a lab: the plans `scripts/lab update` prints and carries out for the day-two
changes the lab tests make, from the real program (the lab test runs them on hosts)."""

from __future__ import annotations

import pytest

from lab.changes import INSTANCE, PARAMETER, generated_outputs, plan, record
from lab.mock_cloud import run_program, stack_config
from lab.update import describe, preview, refused, settings_after


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


def test_a_rotated_certificate_updates_its_parameter_and_runs_the_checks_again(lab_stack):
    config, region, state, kept = lab_stack
    # `pulumi up --replace` of the certificate: made anew (its kept outputs are not given back), same key
    fresh = {name: outputs for name, outputs in kept.items() if name != "lb-tls-cert"}
    changed = run_program(dict(config), stack="lab", region=region, kept=fresh)
    changes = {c.name: c for c in plan(state, changed, replace=["lb-tls-cert"])}
    assert {name: c.action for name, c in changes.items()} == {
        "lb-tls-cert": "replace",
        "secrets-lb-certificate-parameter": "update",  # the load balancers reload it
        "smoke-test-run": "replace",  # waits until the site serves it
        "web-02-ready": "update",  # the replica's gate checks with the new certificate
    }
    assert changes["lb-tls-cert"].forced_by == ("--replace",) and "lb-tls-key" not in changes


def test_a_second_load_balancer_is_created_and_serves_before_the_first_is_replaced(lab_stack):
    config, region, _, _ = lab_stack
    one = settings_after(config, {"lbCount": "1"})
    single = run_program(one, stack="lab", region=region)
    pair = run_program(
        settings_after(one, {"lbCount": "2", "lbVirtualIp": config["lbVirtualIp"]}),
        stack="lab",
        region=region,
        kept=generated_outputs(single),
    )
    changes = plan(record(single), pair)
    actions = {c.name: c for c in changes}
    assert by_type(changes, INSTANCE) == {"lb-02-instance": "create", "lb-01-instance": "replace"}
    assert actions["lb-01-instance"].delete_first and actions["lb-eip-association"].action == "delete"
    names = [c.name for c in changes]
    assert names.index("lb-02-instance") < names.index("lb-02-ready") < names.index("lb-01-instance")
    # the single load balancer's association last, when lb-02 has long taken the address over
    deleted = [c for c in changes if c.action == "delete"]
    assert changes[-len(deleted) :] == deleted and "lb-eip-association" in {c.name for c in deleted}


def test_going_back_to_one_load_balancer_is_refused_with_the_reason(lab_stack):
    config = lab_stack[0]
    assert "the lab does not evaluate IAM" in refused(config, {"lbCount": "1"})
    assert refused(config, {"webCount": "3"}) == "" and refused(settings_after(config, {"lbCount": "1"}), {}) == ""


def test_an_update_keeps_the_backup_buckets_name_and_a_new_stack_gets_another(lab_stack, monkeypatch):
    """The provider completes a bucket_prefix once, at creation: `scripts/lab update` keeps the name (the
    servers' user-data holds it); a new lab's bucket is never the one an earlier lab kept."""
    from lab import mock_cloud

    config, region, _, kept = lab_stack
    (original,) = [k["outputs"]["bucket"] for k in kept.values() if "bucket" in k["outputs"]]
    monkeypatch.setattr(mock_cloud, "UNIQUE_SUFFIX", "7" * 26)  # a later run of the program

    def bucket(run) -> str:
        (declared,) = run.of_type("aws:s3/bucket:Bucket")
        return declared.outputs["bucket"]

    assert bucket(run_program(settings_after(config, {"webCount": "3"}), stack="lab", region=region, kept=kept)) == (
        original
    )
    fresh = bucket(run_program(dict(config), stack="lab", region=region))
    assert fresh != original and fresh.startswith("webinfra-lab-backups-") and len(fresh) == len(original)
