"""WebServer: one EC2 host running nginx → gunicorn app → MariaDB, as the primary or a replica."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi

from components.ec2 import HostProfile, hardened_instance
from provisioning.render import StackFacts, encode_user_data, web_cloud_config
from settings import DbRole


@dataclass
class WebServerArgs:
    hostname: str
    role: DbRole
    facts: StackFacts
    db_ca_certificate: pulumi.Input[str]  # public: travels in user-data
    backup_bucket: pulumi.Input[str]  # its name, in user-data too
    profile: HostProfile
    subnet_id: pulumi.Input[str]
    private_ip: str
    tags: dict[str, str]
    primary_address: str | None = None  # required for a replica
    # What its instance waits for besides the profile's boot_after (the previous replica's rolling gate):
    # a component's depends_on does not reach its children, so it is passed down to the instance itself.
    after: Sequence[pulumi.Resource] = ()


class WebServer(pulumi.ComponentResource):
    hostname: str
    role: DbRole
    private_ip: pulumi.Output[str]
    instance_id: pulumi.Output[str]

    def __init__(self, name: str, args: WebServerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("webinfra:web_server:WebServer", name, None, opts)
        user_data = pulumi.Output.all(args.db_ca_certificate, args.backup_bucket).apply(
            lambda values: encode_user_data(
                web_cloud_config(
                    args.facts, args.hostname, args.role, args.primary_address, db_ca=values[0], backup_bucket=values[1]
                )
            )
        )

        instance = hardened_instance(
            f"{name}-instance",
            args.profile,
            subnet_id=args.subnet_id,
            private_ip=args.private_ip,
            user_data_base64=user_data,
            tags={**args.tags, "Role": "web", "DbRole": args.role, "Name": args.hostname},
            # The primary holds the data: a template change must not replace it. Replicas are
            # rebuilt from the primary's binary log, so they follow template changes.
            replace_on_user_data_change=args.role != DbRole.PRIMARY,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.after)),
        )
        self.hostname, self.role = args.hostname, args.role
        self.private_ip = instance.private_ip
        self.instance_id = instance.id
        self.register_outputs({"private_ip": self.private_ip, "instance_id": self.instance_id, "role": args.role})
