"""LoadBalancer: the HAProxy instance behind the stack's Elastic IP, balancing round-robin over the
web tier, terminating TLS."""
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
    eip_allocation_id: pulumi.Input[str]
    public_ip: pulumi.Input[str]
    tags: dict[str, str]


class LoadBalancer(pulumi.ComponentResource):
    public_ip: pulumi.Output[str]
    instance_id: pulumi.Output[str]
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
        aws.ec2.EipAssociation(
            f"{name}-eip-association",
            allocation_id=args.eip_allocation_id,
            instance_id=instance.id,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.instance_id = instance.id
        self.public_ip = pulumi.Output.from_input(args.public_ip)
        self.url = pulumi.Output.concat("https://", self.public_ip, "/")
        self.register_outputs({"public_ip": self.public_ip, "url": self.url})
