"""The whole Pulumi program run under mocks that behave like a small AWS account.

`run_program(config)` sets the stack's config, runs `Settings.from_pulumi_config()` and
`define_stack()` exactly as `__main__.py` does, waits for every registration, and returns what was
declared (type, name, inputs, options) and the resolved exports.

Two users: the tests assert on the declarations in plain Python (so a failing check fails the test,
no `.apply(check)` that is never awaited), and the local lab boots the declared instances from the
very user-data `pulumi up` would send. Instances keep the private addresses the program fixes
(checked to lie inside their subnet) and get public addresses from 198.51.100.0/24 (a
documentation range, only ever routed inside the lab).
"""

from __future__ import annotations

import ipaddress
import os
import pathlib
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import Any

import pulumi
import yaml

from lab import mock_tls
from settings import Settings
from stack import define_stack

ACCOUNT_ID = "123456789012"
# The key of the Elastic IP's allocation id among the ids EC2 gave (by Name tag for the instances): the
# lab's stand-in for EC2 allocates it, and the program names it (a pair's readiness gate) as on AWS.
ELASTIC_IP = "(elastic ip)"
PUBLIC_PREFIX = "198.51.100."
LB_PUBLIC_IP = PUBLIC_PREFIX + "10"  # the Elastic IP of lb-01
VPC_IPV6_BLOCK = "2600:1f18:4a3:6e00::/56"
# As the provider's: a UTC timestamp and a number unique to this run (26 digits), the same for every
# evaluation in one run (`lab up` evaluates the program twice)
UNIQUE_SUFFIX = f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}{os.getpid():012d}"


@dataclass
class Declared:
    type: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)  # parent and ignore_changes, from a transform
    id: str = ""  # the id the cloud gave it

    def __str__(self) -> str:  # failure messages name the resource
        return f"{self.type} {self.name!r}"


@dataclass
class ProgramRun:
    resources: list[Declared]
    exports: dict[str, Any]
    passwords: list[str] = field(default_factory=list)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # by name, components included

    def of_type(self, type_: str) -> list[Declared]:
        return [r for r in self.resources if r.type == type_]

    def named(self, name: str) -> Declared:
        (found,) = [r for r in self.resources if r.name == name]
        return found


class RecordingMocks(pulumi.runtime.Mocks):
    """Copies inputs to outputs and adds what AWS would compute (camelCase keys, as the engine)."""

    def __init__(
        self, region: str, instance_ids: dict[str, str] | None = None, kept: dict[str, dict] | None = None
    ) -> None:
        self.region = region
        # What a stack's state keeps from an earlier run (lab/changes.py, generated_outputs): a password,
        # key or certificate whose inputs did not change comes out the same, as on `pulumi up`.
        self.kept = kept or {}
        # The ids EC2 gave the instances, by hostname (the lab's EC2 stand-in): a declaration that uses
        # an instance's id (a readiness gate, an alarm) then names the very instance the lab runs.
        self.instance_ids = instance_ids or {}
        self.resources: list[Declared] = []
        self.subnet_cidrs: dict[str, str] = {}
        self.passwords: list[str] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        resource_id = f"{args.name}-id"
        typ = args.typ
        if typ == "aws:ec2/vpc:Vpc":
            outputs["ipv6CidrBlock"] = VPC_IPV6_BLOCK
        elif typ == "aws:ec2/subnet:Subnet":
            self.subnet_cidrs[resource_id] = args.inputs["cidrBlock"]
        elif typ == "aws:ec2/instance:Instance":
            kind, number = args.inputs["tags"]["Name"].rsplit("-", 1)
            resource_id = self.instance_ids.get(args.inputs["tags"]["Name"], resource_id)
            assert ipaddress.ip_address(args.inputs["privateIp"]) in ipaddress.ip_network(
                self.subnet_cidrs[args.inputs["subnetId"]]
            ), f"{args.name}: its private address is outside its subnet"
            # the address AWS gives at launch in a public subnet (the LB's Elastic IP replaces it)
            outputs["publicIp"] = f"{PUBLIC_PREFIX}{(100 if kind == 'web' else 50) + int(number)}"
            outputs["arn"] = f"arn:aws:ec2:{self.region}:{ACCOUNT_ID}:instance/{resource_id}"
        elif typ == "aws:ec2/eip:Eip":
            resource_id = self.instance_ids.get(ELASTIC_IP, resource_id)
            outputs["allocationId"] = resource_id
            outputs["publicIp"] = f"{PUBLIC_PREFIX}{9 + len(self.of_type('aws:ec2/eip:Eip')) + 1}"
        elif typ == "random:index/randomPassword:RandomPassword":
            alphabet = string.ascii_letters + string.digits
            outputs["result"] = "".join(secrets.choice(alphabet) for _ in range(int(args.inputs["length"])))
            self.passwords.append(outputs["result"])
        elif typ in mock_tls.COMPUTE:
            outputs.update(mock_tls.COMPUTE[typ](args.inputs))
        elif typ == "aws:ssm/parameter:Parameter":
            outputs["arn"] = f"arn:aws:ssm:{self.region}:{ACCOUNT_ID}:parameter{args.inputs['name']}"
        elif typ == "aws:kms/key:Key":
            outputs["keyId"] = f"{args.name}-0000-1111-2222-333344445555"
            outputs["arn"] = f"arn:aws:kms:{self.region}:{ACCOUNT_ID}:key/{outputs['keyId']}"
        elif typ == "aws:s3/bucket:Bucket":
            # The provider completes a bucket_prefix with a unique suffix (26 characters): a new stack's
            # bucket is never a kept one's (scripts/lab down --keep-backups). A bucket the state has keeps
            # its name (an update in place), unless its prefix changed (a replacement).
            earlier_name = (self.kept.get(args.name) or {}).get("outputs", {}).get("bucket", "")
            outputs["bucket"] = outputs.get("bucket") or (
                earlier_name
                if earlier_name.startswith(args.inputs["bucketPrefix"])
                else f"{args.inputs['bucketPrefix']}{UNIQUE_SUFFIX}"
            )
            outputs["arn"] = f"arn:aws:s3:::{outputs['bucket']}"
        elif typ == "aws:sns/topic:Topic":
            outputs["arn"] = f"arn:aws:sns:{self.region}:{ACCOUNT_ID}:{args.name}"
        elif typ in ("aws:iam/role:Role", "aws:iam/instanceProfile:InstanceProfile"):
            outputs["name"] = f"{args.name}-1a2b3c"
            outputs["arn"] = f"arn:aws:iam::{ACCOUNT_ID}:{typ.split(':')[-1].lower()}/{args.name}"
        earlier = self.kept.get(args.name)
        if earlier is not None:
            from lab.changes import digest  # lab.changes imports this module

            if earlier["inputs"] == digest(dict(args.inputs)):
                outputs = dict(earlier["outputs"])
        self.resources.append(Declared(typ, args.name, dict(args.inputs), outputs, id=resource_id))
        return [resource_id, outputs]

    def of_type(self, typ: str) -> list[Declared]:
        return [r for r in self.resources if r.type == typ]

    def call(self, args: pulumi.runtime.MockCallArgs):
        token = args.token
        if token == "aws:ec2/getAmi:getAmi":
            name_filter = next(f for f in args.args["filters"] if f["name"] == "name")
            return {"id": f"ami-{name_filter['values'][0].replace('*', 'latest')}", "architecture": "x86_64"}
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            # As an account with a Local Zone opted in answers: the Local Zone is listed among the
            # available zones unless the caller filters on opt-in-status.
            zones = [
                (f"{self.region}a", "opt-in-not-required"),
                (f"{self.region}b", "opt-in-not-required"),
                (f"{self.region}-lz-1a", "opted-in"),
                (f"{self.region}c", "opt-in-not-required"),
            ]
            for wanted in args.args.get("filters") or []:
                if wanted["name"] == "opt-in-status":
                    zones = [z for z in zones if z[1] in wanted["values"]]
            return {"names": [name for name, _ in zones], "zoneIds": [f"az{n}" for n in range(1, len(zones) + 1)]}
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT_ID, "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/test", "userId": "test"}
        if token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com"}
        raise NotImplementedError(f"the mocks do not answer {token}")


def stack_config(path: str | pathlib.Path) -> tuple[dict[str, Any], str]:
    """Settings (without the `webinfra:` prefix) and aws:region from a Pulumi.<stack>.yaml file."""
    config = yaml.safe_load(pathlib.Path(path).read_text()).get("config", {})
    settings = {key.split(":", 1)[1]: value for key, value in config.items() if key.startswith("webinfra:")}
    if not config.get("aws:region"):  # the lab's plan and its API stand-in need one
        raise ValueError(f"{path} sets no aws:region")
    return settings, config["aws:region"]


def run_program(
    config: dict[str, Any],
    stack: str = "dev",
    region: str | None = "eu-west-1",
    instance_ids: dict[str, str] | None = None,
    aws_profile: str | None = None,
    kept: dict[str, dict] | None = None,
) -> ProgramRun:
    """Run the program with `config` (setting name → value, without the `webinfra:` prefix), and, where
    known, the ids EC2 gave the instances (by hostname) and what a state keeps from an earlier run."""
    mocks = RecordingMocks(region or "eu-west-1", instance_ids, kept)
    pulumi.runtime.set_mocks(mocks, project="webinfra", stack=stack, preview=False)
    all_config = {f"webinfra:{key}": str(value) for key, value in config.items()}
    if region:
        all_config["aws:region"] = region
    if aws_profile:
        all_config["aws:profile"] = aws_profile
    pulumi.runtime.set_all_config(all_config)
    exports: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}

    def record_options(args: pulumi.ResourceTransformationArgs):
        parent = args.opts.parent if args.opts else None
        options[args.name] = {
            "parent": getattr(parent, "_name", None),
            "ignore_changes": list((args.opts.ignore_changes if args.opts else None) or []),
            "depends_on": args.opts.depends_on if args.opts else None,
            "aliases": [getattr(a, "name", a) for a in ((args.opts.aliases if args.opts else None) or [])],
            "delete_before_replace": args.opts.delete_before_replace if args.opts else None,
            "retain_on_delete": args.opts.retain_on_delete if args.opts else None,
        }
        return None

    @pulumi.runtime.test
    def program():
        pulumi.runtime.register_stack_transformation(record_options)
        outputs = define_stack(Settings.from_pulumi_config())
        return pulumi.Output.all(**outputs).apply(exports.update)

    program()
    for declared in mocks.resources:
        declared.options = options.get(declared.name, {})
    return ProgramRun(resources=mocks.resources, exports=exports, passwords=mocks.passwords, options=options)
