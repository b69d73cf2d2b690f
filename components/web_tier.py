"""WebTier: N web servers placed round-robin across the subnets; web-01 is the database primary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi

from components.ec2 import HostProfile
from components.web_server import WebServer, WebServerArgs
from provisioning.render import StackFacts
from settings import DbRole, HostSlot


@dataclass
class WebTierArgs:
    slots: list[HostSlot]  # web-01 first: the primary
    facts: StackFacts
    db_ca_certificate: pulumi.Input[str]
    profile: HostProfile
    subnet_ids: Sequence[pulumi.Input[str]]
    tags: dict[str, str]


class WebTier(pulumi.ComponentResource):
    servers: list[WebServer]
    hostnames: list[str]
    private_ips: list[str]
    primary_private_ip: str

    def __init__(self, name: str, args: WebTierArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("webinfra:web_tier:WebTier", name, None, opts)
        if len(args.slots) < 2:
            raise ValueError("a web tier needs a primary and at least one replica")
        primary = args.slots[0]
        self.servers = [
            WebServer(
                f"{name}-{slot.number:02d}",
                WebServerArgs(
                    hostname=slot.hostname,
                    role=DbRole.PRIMARY if slot is primary else DbRole.REPLICA,
                    facts=args.facts,
                    db_ca_certificate=args.db_ca_certificate,
                    profile=args.profile,
                    subnet_id=args.subnet_ids[slot.subnet_index],
                    private_ip=slot.private_ip,
                    tags=args.tags,
                    primary_address=None if slot is primary else primary.private_ip,
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for slot in args.slots
        ]
        self.hostnames = [slot.hostname for slot in args.slots]
        self.private_ips = [slot.private_ip for slot in args.slots]
        self.primary_private_ip = primary.private_ip
        self.register_outputs({"private_ips": self.private_ips, "primary_private_ip": self.primary_private_ip})
