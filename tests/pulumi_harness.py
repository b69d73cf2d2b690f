"""Run the whole Pulumi program under mocks and record every resource it declares.

`run_program(config)` sets the stack's config, runs `Settings.from_pulumi_config()` and
`define_stack()` exactly as `__main__.py` does, waits for every registration, and returns what was
declared (type, name, inputs) and the resolved exports. Tests then assert in plain Python, so a
failing check fails the test (no `.apply(check)` that is never awaited).
"""
from __future__ import annotations

import ipaddress
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

import pulumi

from settings import Settings
from stack import define_stack

ACCOUNT_ID = "123456789012"
LB_PUBLIC_IP = "198.51.100.10"
VPC_IPV6_BLOCK = "2600:1f18:4a3:6e00::/56"


@dataclass
class Declared:
    type: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)  # parent and ignore_changes, from a transform

    def __str__(self) -> str:  # failure messages name the resource
        return f"{self.type} {self.name!r}"


@dataclass
class ProgramRun:
    resources: list[Declared]
    exports: dict[str, Any]
    passwords: list[str] = field(default_factory=list)

    def of_type(self, type_: str) -> list[Declared]:
        return [r for r in self.resources if r.type == type_]

    def named(self, name: str) -> Declared:
        (found,) = [r for r in self.resources if r.name == name]
        return found


class RecordingMocks(pulumi.runtime.Mocks):
    """Copies inputs to outputs and adds what AWS would compute (camelCase keys, as the engine)."""

    def __init__(self) -> None:
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
            outputs["privateIp"] = self._address_for(args.inputs)
            outputs["arn"] = f"arn:aws:ec2:eu-west-1:{ACCOUNT_ID}:instance/{resource_id}"
        elif typ == "aws:ec2/eip:Eip":
            outputs["publicIp"] = LB_PUBLIC_IP
        elif typ == "random:index/randomPassword:RandomPassword":
            alphabet = string.ascii_letters + string.digits
            outputs["result"] = "".join(secrets.choice(alphabet) for _ in range(int(args.inputs["length"])))
            self.passwords.append(outputs["result"])
        elif typ == "aws:ssm/parameter:Parameter":
            outputs["arn"] = f"arn:aws:ssm:eu-west-1:{ACCOUNT_ID}:parameter{args.inputs['name']}"
        elif typ in ("aws:iam/role:Role", "aws:iam/instanceProfile:InstanceProfile"):
            outputs["name"] = f"{args.name}-1a2b3c"
            outputs["arn"] = f"arn:aws:iam::{ACCOUNT_ID}:{typ.split(':')[-1].lower()}/{args.name}"
        self.resources.append(Declared(typ, args.name, dict(args.inputs), outputs))
        return [resource_id, outputs]

    def _address_for(self, inputs: dict) -> str:
        """web-NN gets host 10+NN of its subnet, lb-NN host 4+NN: stable, and inside the subnet."""
        kind, number = inputs["tags"]["Name"].rsplit("-", 1)
        offset = (10 if kind == "web" else 4) + int(number)
        return str(ipaddress.ip_network(self.subnet_cidrs[inputs["subnetId"]])[offset])

    def call(self, args: pulumi.runtime.MockCallArgs):
        token = args.token
        if token == "aws:ec2/getAmi:getAmi":
            name_filter = next(f for f in args.args["filters"] if f["name"] == "name")
            return {"id": f"ami-{name_filter['values'][0].replace('*', 'latest')}", "architecture": "x86_64"}
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            return {"names": ["eu-west-1a", "eu-west-1b", "eu-west-1c"], "zoneIds": ["euw1-az1", "euw1-az2", "euw1-az3"]}
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT_ID, "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/test", "userId": "test"}
        if token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com"}
        raise NotImplementedError(f"the mocks do not answer {token}")


def run_program(config: dict[str, Any], stack: str = "dev", region: str | None = "eu-west-1") -> ProgramRun:
    """Run the program with `config` (setting name → value, without the `webinfra:` prefix)."""
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="webinfra", stack=stack, preview=False)
    all_config = {f"webinfra:{key}": str(value) for key, value in config.items()}
    if region:
        all_config["aws:region"] = region
    pulumi.runtime.set_all_config(all_config)
    exports: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}

    def record_options(args: pulumi.ResourceTransformationArgs):
        parent = args.opts.parent if args.opts else None
        options[args.name] = {
            "parent": getattr(parent, "_name", None),
            "ignore_changes": list((args.opts.ignore_changes if args.opts else None) or []),
            "depends_on": args.opts.depends_on if args.opts else None,
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
    return ProgramRun(resources=mocks.resources, exports=exports, passwords=mocks.passwords)
