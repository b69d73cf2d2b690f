"""LoadBalancer: the HAProxy instance with an Elastic IP, balancing round-robin over the web tier."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.ec2 import InstanceSpec, hardened_instance
from provisioning.render import Backend, StackFacts, encode_user_data, lb_cloud_config


@dataclass
class LoadBalancerArgs:
    hostname: str
    facts: StackFacts
    backend_names: list[str]
    backend_addresses: pulumi.Input[list[str]]
    ami_id: pulumi.Input[str]
    instance_type: str
    subnet_id: pulumi.Input[str]
    security_group_ids: list[pulumi.Input[str]]
    instance_profile: pulumi.Input[str]
    root_volume_gb: int
    tags: dict[str, str]
    key_name: str | None = None


class LoadBalancer(pulumi.ComponentResource):
    public_ip: pulumi.Output[str]
    private_ip: pulumi.Output[str]
    url: pulumi.Output[str]

    def __init__(self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("webinfra:load_balancer:LoadBalancer", name, None, opts)
        user_data = pulumi.Output.from_input(args.backend_addresses).apply(
            lambda addresses: encode_user_data(
                lb_cloud_config(
                    args.facts,
                    args.hostname,
                    [Backend(n, a) for n, a in zip(args.backend_names, addresses, strict=True)],
                )
            )
        )
        tags = {**args.tags, "Role": "lb", "Name": args.hostname}
        instance = hardened_instance(
            f"{name}-instance",
            InstanceSpec(
                ami_id=args.ami_id,
                instance_type=args.instance_type,
                subnet_id=args.subnet_id,
                security_group_ids=args.security_group_ids,
                instance_profile=args.instance_profile,
                user_data_base64=user_data,
                root_volume_gb=args.root_volume_gb,
                key_name=args.key_name,
                ipv6_address_count=1,
                tags=tags,
                # Stateless: a new configuration means a new instance; the Elastic IP follows it.
                replace_on_user_data_change=True,
            ),
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
        self.private_ip = instance.private_ip
        self.url = pulumi.Output.concat("http://", address.public_ip, "/")
        self.register_outputs({"public_ip": self.public_ip, "private_ip": self.private_ip, "url": self.url})
