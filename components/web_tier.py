"""WebTier: N web servers placed round-robin across the subnets; web-01 is the database primary.

A change that updates or replaces the replicas (a new instance type: stop, modify, start; new user-data:
a new instance) reaches them one at a time: each replica after the first waits for the previous one's
rolling gate, which, on such an update, waits on the machine running `pulumi up` until the site serves
with that replica in its rotation again (`scripts/smoke --backends web-0N`: HAProxy had taken it out
while it was stopped, and puts it back only once its /health, replication included, answers). When
the tier is first created the gates' `create` passes at once: each replica is launched as soon as EC2
reports the previous one running (seconds), and they boot side by side, each waiting for the primary
itself. Without the smoke test (smokeTest false) there are no gates, and such a change reaches every
replica at once (the program warns at preview). The primary ignores instance-type changes, as it
ignores user-data: it holds the data, so it is resized by hand after a switchover (README, "Changing a
running stack").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_command as command

from components.ec2 import HostProfile
from components.smoke_test import CERTIFICATE_VARIABLE, smoke_command
from components.web_server import WebServer, WebServerArgs
from provisioning.render import StackFacts
from settings import DbRole, HostSlot


@dataclass
class WebTierArgs:
    slots: list[HostSlot]  # web-01 first: the primary
    facts: StackFacts
    db_ca_certificate: pulumi.Input[str]
    backup_bucket: pulumi.Input[str]  # the S3 bucket of the stack's backups (its name: not secret)
    profile: HostProfile
    subnet_ids: Sequence[pulumi.Input[str]]
    tags: dict[str, str]
    # The site, for the rolling gates (the Elastic IP's URL, the exported certificate, the domain); no URL
    # (smokeTest false: the machine running `pulumi up` may not reach the site): no gates.
    url: pulumi.Input[str] | None = None
    certificate_pem: pulumi.Input[str] = ""
    domain: str | None = None
    ready_timeout_seconds: int = 900


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
        self.servers = []
        self.gates: list[command.local.Command] = []
        for slot in args.slots:
            role = DbRole.PRIMARY if slot is primary else DbRole.REPLICA
            server = WebServer(
                f"{name}-{slot.number:02d}",
                WebServerArgs(
                    hostname=slot.hostname,
                    role=role,
                    facts=args.facts,
                    db_ca_certificate=args.db_ca_certificate,
                    backup_bucket=args.backup_bucket,
                    profile=args.profile,
                    subnet_id=args.subnet_ids[slot.subnet_index],
                    private_ip=slot.private_ip,
                    tags=args.tags,
                    primary_address=None if slot is primary else primary.private_ip,
                    after=self.gates[-1:],
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.servers.append(server)
            if role == DbRole.REPLICA and args.url is not None:
                self.gates.append(self._rolling_gate(f"{name}-{slot.number:02d}-ready", server, args))
        self.hostnames = [slot.hostname for slot in args.slots]
        self.private_ips = [slot.private_ip for slot in args.slots]
        self.primary_private_ip = primary.private_ip
        self.register_outputs({"private_ips": self.private_ips, "primary_private_ip": self.primary_private_ip})

    def _rolling_gate(self, name: str, server: WebServer, args: WebTierArgs) -> command.local.Command:
        """Passes at once when created; on an update (its replica's instance type, or a new instance id
        after a replacement) waits until the site serves with the replica in its rotation again."""

        def waiting(url: str | None) -> str:
            return smoke_command(
                str(url), [server.hostname], timeout_seconds=args.ready_timeout_seconds, interval=5, domain=args.domain
            )

        return command.local.Command(
            name,
            create="true",
            update=pulumi.Output.from_input(args.url).apply(waiting),
            # What changes the replica changes the gate, so that it is updated (and waits) after it.
            environment={
                CERTIFICATE_VARIABLE: args.certificate_pem,
                "WEBINFRA_INSTANCE_TYPE": args.profile.instance_type,
                "WEBINFRA_INSTANCE_ID": server.instance_id,
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[server]),
        )
