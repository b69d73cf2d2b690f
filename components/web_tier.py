"""WebTier: N web servers placed round-robin across the subnets; web-01 is the database primary."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.ec2 import HostProfile
from components.web_server import WebServer, WebServerArgs
from provisioning.render import StackFacts


@dataclass
class WebTierArgs:
    count: int
    facts: StackFacts
    profile: HostProfile
    subnet_ids: list[pulumi.Input[str]]
    tags: dict[str, str]


class WebTier(pulumi.ComponentResource):
    servers: list[WebServer]
    hostnames: list[str]
    private_ips: pulumi.Output[list[str]]
    primary_private_ip: pulumi.Output[str]

    def __init__(self, name: str, args: WebTierArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("webinfra:web_tier:WebTier", name, None, opts)
        if args.count < 2:
            raise ValueError("a web tier needs a primary and at least one replica")
        self.servers, self.hostnames = [], []
        primary: WebServer | None = None
        for index in range(args.count):
            hostname = f"web-{index + 1:02d}"
            server = WebServer(
                f"{name}-{index + 1:02d}",
                WebServerArgs(
                    hostname=hostname,
                    role="primary" if primary is None else "replica",
                    facts=args.facts,
                    profile=args.profile,
                    subnet_id=args.subnet_ids[index % len(args.subnet_ids)],
                    tags=args.tags,
                    primary_address=None if primary is None else primary.private_ip,
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            primary = primary or server
            self.servers.append(server)
            self.hostnames.append(hostname)
        self.private_ips = pulumi.Output.all(*[s.private_ip for s in self.servers])
        self.primary_private_ip = self.servers[0].private_ip
        self.register_outputs({"private_ips": self.private_ips, "primary_private_ip": self.primary_private_ip})
