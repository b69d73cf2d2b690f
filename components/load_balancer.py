"""LoadBalancer: the HAProxy instance with an Elastic IP, balancing round-robin over the web tier."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.ec2 import HostProfile, hardened_instance
from provisioning.render import Backend, StackFacts, encode_user_data, lb_cloud_config


@dataclass
class LoadBalancerArgs:
    hostname: str
    facts: StackFacts
    backends: list[Backend]
    profile: HostProfile
    subnet_id: pulumi.Input[str]
    private_ip: str
    tags: dict[str, str]


class LoadBalancer(pulumi.ComponentResource):
    public_ip: pulumi.Output[str]
    url: pulumi.Output[str]

    def __init__(self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("webinfra:load_balancer:LoadBalancer", name, None, opts)
        user_data = encode_user_data(lb_cloud_config(args.facts, args.hostname, args.backends))
        tags = {**args.tags, "Role": "lb", "Name": args.hostname}
        instance = hardened_instance(
            f"{name}-instance",
            args.profile,
            subnet_id=args.subnet_id,
            private_ip=args.private_ip,
            user_data_base64=user_data,
            tags=tags,
            # Stateless: a new configuration means a new instance; the Elastic IP follows it.
            replace_on_user_data_change=True,
            ipv6_address_count=1,
            parent=self,
        )
        address = aws.ec2.Eip(
            f"{name}-eip",
            domain="vpc",
            instance=instance.id,
            tags={**tags, "Name": f"{args.hostname}-eip"},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.public_ip = address.public_ip
        self.url = pulumi.Output.concat("http://", address.public_ip, "/")
        self.register_outputs({"public_ip": self.public_ip, "url": self.url})
