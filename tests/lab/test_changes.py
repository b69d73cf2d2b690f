"""lab/changes.py: what `pulumi up` would do, from declarations (synthetic ones here: the rules, one by
one; tests/lab/test_update.py runs the real program)."""

from __future__ import annotations

from lab.changes import INSTANCE, LOCAL_COMMAND, PARAMETER, digest, plan, record
from lab.mock_cloud import Declared, ProgramRun


def instance(name: str, user_data: str, *, replace_on_change: bool, ignore: tuple[str, ...] = (), **inputs) -> Declared:
    return Declared(
        INSTANCE,
        name,
        {
            "userDataBase64": user_data,
            "userDataReplaceOnChange": replace_on_change,
            "instanceType": "t3.micro",
            **inputs,
        },
        {},
        options={"ignore_changes": list(ignore), "delete_before_replace": True},
        id=f"{name}-id",
    )


def command(name: str, triggers: list[str], *, depends_on: tuple[str, ...] = ()) -> Declared:
    return Declared(
        LOCAL_COMMAND,
        name,
        {"create": "scripts/smoke", "triggers": triggers},
        {},
        options={"depends_on": [type("R", (), {"_name": d})() for d in depends_on]},
        id=f"{name}-id",
    )


def run(*resources: Declared) -> ProgramRun:
    return ProgramRun(resources=list(resources), exports={})


def summary(changes) -> list[tuple[str, str]]:
    return [(c.action, c.name) for c in changes]


def test_nothing_changed_plans_nothing():
    first = run(instance("web-02", "a", replace_on_change=True), command("smoke", ["web-02-id"]))
    assert plan(record(first), first) == []


def test_user_data_replaces_only_with_replace_on_change_and_never_when_ignored():
    before = run(
        instance("web-01", "a", replace_on_change=False, ignore=("userDataBase64",)),
        instance("web-02", "a", replace_on_change=True),
        instance("lb-01", "a", replace_on_change=False),
    )
    after = run(
        instance("web-01", "b", replace_on_change=False, ignore=("userDataBase64",)),
        instance("web-02", "b", replace_on_change=True),
        instance("lb-01", "b", replace_on_change=False),
    )
    changes = {c.name: c for c in plan(record(before), after)}
    assert "web-01" not in changes  # ignore_changes: never compared
    assert (changes["web-02"].action, changes["web-02"].forced_by, changes["web-02"].delete_first) == (
        "replace",
        ("userDataBase64",),
        True,
    )
    assert (changes["lb-01"].action, changes["lb-01"].properties) == ("update", ("userDataBase64",))


def test_an_instance_type_is_changed_in_place_a_subnet_replaces():
    before = run(instance("web-02", "a", replace_on_change=True, subnetId="s1"))
    bigger = run(instance("web-02", "a", replace_on_change=True, subnetId="s1", instanceType="t3.large"))
    moved = run(instance("web-02", "a", replace_on_change=True, subnetId="s2"))
    assert summary(plan(record(before), bigger)) == [("update", "web-02")]
    assert summary(plan(record(before), moved)) == [("replace", "web-02")]


def test_a_replacement_reaches_what_mentions_its_id_and_orders_by_dependency():
    before = run(
        instance("lb-01", "a", replace_on_change=True),
        command("lb-01-ready", ["lb-01-id"]),
        instance("lb-02", "a", replace_on_change=True),
        command("smoke", ["web-02-id"], depends_on=("lb-02",)),
        instance("web-02", "a", replace_on_change=True),
    )
    before.resources[2].options["depends_on"] = [type("R", (), {"_name": "lb-01-ready"})()]
    after = run(*before.resources[:1], *before.resources[1:])
    after.resources[0] = instance("lb-01", "b", replace_on_change=True)
    after.resources[2] = instance("lb-02", "b", replace_on_change=True)
    after.resources[2].options["depends_on"] = [type("R", (), {"_name": "lb-01-ready"})()]
    changes = plan(record(before), after)
    assert summary(changes) == [("replace", "lb-01"), ("replace", "lb-01-ready"), ("replace", "lb-02")]
    assert changes[1].why == "follows the replacement of lb-01" and changes[1].forced_by == ("triggers",)


def test_created_and_deleted_resources_deletions_last():
    before = run(instance("web-03", "a", replace_on_change=True), command("smoke", ["web-03-id"]))
    after = run(instance("web-04", "a", replace_on_change=True), command("smoke", ["web-04-id"]))
    assert summary(plan(record(before), after)) == [("create", "web-04"), ("replace", "smoke"), ("delete", "web-03")]


def test_the_state_holds_digests_not_values():
    secret = Declared(PARAMETER, "db-password", {"name": "/p", "value": "hunter2hunter2"}, {}, id="p")
    state = record(run(secret))
    assert "hunter2hunter2" not in repr(state)
    assert state["db-password"].inputs["value"] == digest("hunter2hunter2")


def test_replace_replaces_a_resource_whose_inputs_did_not_change_and_what_mentions_it_follows():
    import pytest

    first = run(instance("web-02", "a", replace_on_change=False), command("smoke", ["web-02-id"]))
    changes = plan(record(first), first, replace=["web-02"])
    assert summary(changes) == [("replace", "web-02"), ("replace", "smoke")]
    assert changes[0].forced_by == ("--replace",) and changes[0].delete_first
    with pytest.raises(ValueError, match="--replace names no resource of the stack: web-09"):
        plan(record(first), first, replace=["web-09"])
