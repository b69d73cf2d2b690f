"""What `pulumi up` would do to a running stack: the lab's `pulumi preview` (pure: no I/O, no root).

Pulumi keeps, for every resource, the inputs it was last created or updated with, and its outputs. On
`pulumi up` it runs the program again and compares each resource's new inputs with the recorded ones
(its provider's diff): a resource only in the program is created, one only in the state is deleted
(after everything else), one whose changed inputs include a property the provider cannot change in
place is replaced (deleted first with `delete_before_replace`, else created first), any other change
is an update, and `ignore_changes` properties are never compared. Outputs of an unchanged resource are
kept: a password or a key made once stays the same. A dependent that takes an output of a replaced
resource (an instance's id) sees that input change too.

`record()` turns a mock run of the program into that state (inputs as digests: no secret in clear;
ids other resources' inputs mention, to follow replacements), and `plan()` compares a new run with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lab.mock_cloud import Declared, ProgramRun
from lab.mock_tls import unwrap

INSTANCE = "aws:ec2/instance:Instance"
PARAMETER = "aws:ssm/parameter:Parameter"
LOCAL_COMMAND = "command:local:Command"
EIP_ASSOCIATION = "aws:ec2/eipAssociation:EipAssociation"

# Inputs a provider cannot change in place: a change replaces the resource (the provider schema's
# "ForceNew"; pulumi-aws docs: "Changing this creates a new resource" / "forces a new resource").
# An instance's type, tags, security groups, profile and metadata options change in place (a new
# instance type stops and starts it); its user-data replaces it only with user_data_replace_on_change.
REPLACED_BY = {
    # ForceNew in the Terraform AWS provider's aws_instance schema (internal/service/ec2/ec2_instance.go),
    # which pulumi-aws wraps.
    INSTANCE: frozenset(
        {
            "ami",
            "associatePublicIpAddress",
            "availabilityZone",
            "cpuCoreCount",
            "cpuThreadsPerCore",
            "cpuOptions",
            "ebsOptimized",
            "ephemeralBlockDevices",
            "hibernation",
            "hostId",
            "ipv6AddressCount",
            "ipv6Addresses",
            "keyName",
            "launchTemplate",
            "placementGroup",
            "placementPartitionNumber",
            "privateDnsNameOptions",
            "privateIp",
            "subnetId",
            "tenancy",
        }
    ),
    PARAMETER: frozenset({"name"}),
    EIP_ASSOCIATION: frozenset({"allocationId", "instanceId", "networkInterfaceId", "privateIpAddress"}),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": frozenset({"securityGroupId"}),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": frozenset({"securityGroupId"}),
    # pulumi-command: `triggers` replaces (runs `create` again); any other change is an update, which
    # runs `create` again when no `update` command is declared.
    LOCAL_COMMAND: frozenset({"triggers"}),
    "random:index/randomPassword:RandomPassword": frozenset(
        {"length", "special", "upper", "lower", "numeric", "minLower", "minUpper", "minNumeric", "minSpecial"}
    ),
}
USER_DATA = ("userData", "userDataBase64")
# Resources whose outputs are made up when they are created (a password, a key, a certificate): the
# state keeps them, and an unchanged resource gives the same ones to the next run.
GENERATED = frozenset(
    {
        "random:index/randomPassword:RandomPassword",
        "aws:s3/bucket:Bucket",  # the provider completes its name
        "tls:index/privateKey:PrivateKey",
        "tls:index/selfSignedCert:SelfSignedCert",
        "tls:index/locallySignedCert:LocallySignedCert",
        "tls:index/certRequest:CertRequest",
    }
)


def digest(value: Any) -> str:
    """A property's value, compared by digest: the state holds no secret in clear."""
    canonical = json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def _plain(value: Any) -> Any:
    value = unwrap(value)
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _mentions(value: Any, ids: Iterable[str]) -> list[str]:
    text = json.dumps(_plain(value), default=str)
    return sorted(i for i in ids if i and i in text)


@dataclass(frozen=True)
class Recorded:
    """One resource as the state keeps it."""

    type: str
    name: str
    id: str
    inputs: dict[str, str]  # property → digest
    mentions: dict[str, list[str]] = field(default_factory=dict)  # property → ids of other resources in it
    label: str = ""  # what it is called outside Pulumi: a parameter's name, an instance's hostname


def record(run: ProgramRun) -> dict[str, Recorded]:
    ids = {r.id for r in run.resources}
    state = {}
    for declared in run.resources:
        others = ids - {declared.id}
        mentions = {key: found for key, value in declared.inputs.items() if (found := _mentions(value, others))}
        state[declared.name] = Recorded(
            declared.type,
            declared.name,
            declared.id,
            {k: digest(v) for k, v in declared.inputs.items()},
            mentions,
            label_of(declared),
        )
    return state


def label_of(declared: Declared) -> str:
    if declared.type == PARAMETER:
        return str(declared.inputs.get("name", ""))
    if declared.type == INSTANCE:
        return str((declared.inputs.get("tags") or {}).get("Name", ""))
    return ""


def generated_outputs(run: ProgramRun) -> dict[str, dict]:
    """name → (inputs digest, outputs) of every resource whose outputs are made up at creation. Secret:
    the lab keeps it in a root-only file, as Pulumi keeps its state encrypted."""
    return {r.name: {"inputs": digest(r.inputs), "outputs": r.outputs} for r in run.resources if r.type in GENERATED}


def state_to_json(state: Mapping[str, Recorded]) -> list[dict]:
    return [vars(r) for r in state.values()]


def state_from_json(rows: Iterable[Mapping]) -> dict[str, Recorded]:
    return {row["name"]: Recorded(**row) for row in rows}


@dataclass(frozen=True)
class Change:
    name: str
    type: str
    action: str  # create | update | replace | delete
    properties: tuple[str, ...] = ()  # the inputs that changed
    forced_by: tuple[str, ...] = ()  # for a replacement: those the provider cannot change in place
    delete_first: bool = False  # a replacement with delete_before_replace
    why: str = ""
    label: str = ""  # for a deletion: what the state calls it outside Pulumi (lab/changes.py, label_of)


def _replacing(declared: Declared, changed: set[str]) -> set[str]:
    forced = set(REPLACED_BY.get(declared.type, frozenset())) & changed
    if declared.type == INSTANCE and declared.inputs.get("userDataReplaceOnChange"):
        forced |= set(USER_DATA) & changed
    return forced


REPLACE_FLAG = "--replace"


def plan(state: Mapping[str, Recorded], run: ProgramRun, replace: Iterable[str] = ()) -> list[Change]:
    """The changes `pulumi up` would make, in the order it would start them: creates, updates and
    replacements in dependency order, then deletions. `replace`: resources replaced whatever their inputs,
    as `pulumi up --replace URN` does."""
    changes: dict[str, Change] = {}
    by_name = {r.name: r for r in run.resources}
    replace = frozenset(replace)
    unknown = sorted(set(replace) - (set(by_name) & set(state)))
    if unknown:
        raise ValueError(f"--replace names no resource of the stack: {', '.join(unknown)}")
    for declared in run.resources:
        old = state.get(declared.name)
        if old is None:
            changes[declared.name] = Change(declared.name, declared.type, "create", why="new in the program")
            continue
        if old.type != declared.type:
            changes[declared.name] = Change(declared.name, declared.type, "replace", ("type",), ("type",), True)
            continue
        ignored = set(declared.options.get("ignore_changes") or [])
        new = {k: digest(v) for k, v in declared.inputs.items()}
        changed = {k for k in set(new) | set(old.inputs) if new.get(k) != old.inputs.get(k)} - ignored
        if declared.name in replace:
            first = bool(declared.options.get("delete_before_replace"))
            why = "pulumi up --replace"
            changes[declared.name] = Change(
                declared.name, declared.type, "replace", tuple(sorted(changed)), (REPLACE_FLAG,), first, why
            )
        elif changed:
            changes[declared.name] = _change(declared, changed)
    # A replaced resource gets a new id: every input that mentions the old one changes with it (and
    # may itself force a replacement, whose dependents then follow in turn).
    while True:
        gone = {state[c.name].id: c.name for c in changes.values() if c.action == "replace" and c.name in state}
        followed = False
        for name, old in state.items():
            if name not in by_name:
                continue
            declared = by_name[name]
            ignored = set(declared.options.get("ignore_changes") or [])
            following = {p for p, ids in old.mentions.items() if p not in ignored and set(ids) & set(gone)}
            current = changes.get(name)
            properties = set(current.properties if current else ()) | following
            if not following or (current and following <= set(current.properties)):
                continue
            because = sorted({gone[i] for p in following for i in old.mentions[p] if i in gone})
            changes[name] = _change(declared, properties, because)
            followed = True
        if not followed:
            break
    for name, old in state.items():
        if name not in by_name:
            changes[name] = Change(name, old.type, "delete", why="no longer in the program", label=old.label)
    return ordered(list(changes.values()), run)


def _change(declared: Declared, changed: set[str], because: list[str] | None = None) -> Change:
    forced = _replacing(declared, changed)
    why = f"follows the replacement of {', '.join(because)}" if because else ""
    if forced:
        first = bool(declared.options.get("delete_before_replace"))
        return Change(
            declared.name, declared.type, "replace", tuple(sorted(changed)), tuple(sorted(forced)), first, why
        )
    return Change(declared.name, declared.type, "update", tuple(sorted(changed)), why=why)


def dependencies(run: ProgramRun) -> dict[str, set[str]]:
    """name → the names it waits for: `depends_on` and the resources whose outputs its inputs use (by
    id), as Pulumi orders its steps. Components' dependencies pass to their children."""
    ids = {r.id: r.name for r in run.resources}
    component_children: dict[str, set[str]] = {}
    for name, options in run.options.items():
        if options.get("parent"):
            component_children.setdefault(options["parent"], set()).add(name)

    def expand(name: str, seen: set[str] | None = None) -> set[str]:
        seen = seen if seen is not None else set()
        if name in seen:
            return set()
        seen.add(name)
        found = {name} if name in {r.name for r in run.resources} else set()
        for child in component_children.get(name, ()):
            found |= expand(child, seen)
        return found

    result: dict[str, set[str]] = {}
    for declared in run.resources:
        wanted: set[str] = set()
        for dependency in declared.options.get("depends_on") or []:
            wanted |= expand(getattr(dependency, "_name", str(dependency)))
        for value in declared.inputs.values():
            wanted |= {ids[i] for i in _mentions(value, ids) if i != declared.id}
        result[declared.name] = wanted - {declared.name}
    return result


def ordered(changes: list[Change], run: ProgramRun) -> list[Change]:
    """Dependencies first (a stable topological order), deletions last, as `pulumi up` runs them."""
    needs = dependencies(run)
    pending = sorted((c for c in changes if c.action != "delete"), key=lambda c: c.name)
    names = {c.name for c in pending}
    done: set[str] = set()
    result: list[Change] = []
    while pending:
        ready = [c for c in pending if not (needs.get(c.name, set()) & names) - done]
        if not ready:  # a cycle cannot be declared; keep going rather than hang
            ready = pending[:1]
        for change in ready:
            result.append(change)
            done.add(change.name)
        pending = [c for c in pending if c.name not in done]
    return result + sorted((c for c in changes if c.action == "delete"), key=lambda c: c.name)
