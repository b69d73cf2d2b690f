"""LoadBalancer: the HAProxy instance(s) behind the stack's Elastic IP, balancing round-robin over
the web tier and terminating TLS. One instance, or a pair in two availability zones where
keepalived (unicast VRRP) decides which is active and the active one moves the Elastic IP to
itself through the EC2 API."""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.ec2 import HostProfile, hardened_instance
from provisioning.render import Backend, StackFacts, encode_user_data, lb_cloud_config
from settings import HostSlot


@dataclass
class LoadBalancerArgs:
    slots: list[HostSlot]  # lb-01 (and lb-02 of a pair)
    facts: StackFacts
    backends: list[Backend]
    profile: HostProfile
    subnet_ids: list[pulumi.Input[str]]
    eip_allocation_id: pulumi.Input[str]
    public_ip: pulumi.Input[str]
    tags: dict[str, str]


class LoadBalancer(pulumi.ComponentResource):
    public_ip: pulumi.Output[str]
    instance_ids: dict[str, pulumi.Output[str]]  # hostname → instance id
    url: pulumi.Output[str]

    def __init__(self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("webinfra:load_balancer:LoadBalancer", name, None, opts)
        if len(args.slots) not in (1, 2):
            raise ValueError("a load balancer is one instance or a pair")
        self.instance_ids = {}
        for slot in args.slots:
            number = slot.hostname.rsplit("-", 1)[1]
            instance = hardened_instance(
                f"{name}-{number}-instance",
                args.profile,
                subnet_id=args.subnet_ids[slot.subnet_index],
                private_ip=slot.private_ip,
                user_data_base64=encode_user_data(lb_cloud_config(args.facts, slot.hostname, args.backends)),
                tags={**args.tags, "Role": "lb", "Name": slot.hostname},
                # Stateless: a new configuration means a new instance; the Elastic IP follows it.
                replace_on_user_data_change=True,
                ipv6_address_count=1,
                parent=self,
                # lb-01 was `lb-instance` while a stack had only one load balancer: same resource.
                aliases=[pulumi.Alias(name=f"{name}-instance")] if number == "01" else None,
            )
            self.instance_ids[slot.hostname] = instance.id
        # The Elastic IP starts on lb-01. In a pair keepalived moves it to whichever load balancer is
        # active, so Pulumi must not move it back on the next `pulumi up`.
        aws.ec2.EipAssociation(
            f"{name}-eip-association",
            allocation_id=args.eip_allocation_id,
            instance_id=self.instance_ids[args.slots[0].hostname],
            allow_reassociation=True if len(args.slots) == 2 else None,
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["instanceId"] if len(args.slots) == 2 else None),
        )
        self.public_ip = pulumi.Output.from_input(args.public_ip)
        self.url = pulumi.Output.concat("https://", self.public_ip, "/")
        self.register_outputs({"public_ip": self.public_ip, "url": self.url, "instance_ids": self.instance_ids})
