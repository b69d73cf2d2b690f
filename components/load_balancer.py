"""LoadBalancer: the HAProxy instance(s) behind the stack's Elastic IP, balancing round-robin over
the web tier and terminating TLS. One instance, or a pair in two availability zones where
keepalived (unicast VRRP) decides which is active and the active one moves the Elastic IP to
itself through the EC2 API.

Replacing load balancers (a new `adminCidr`, `domain`, `lbCount`, key pair, a new version of their
configuration, or `pulumi up --replace`): each instance is deleted before its replacement is created
(fixed private addresses). A single load balancer is therefore down until its replacement boots. A
pair is replaced one at a time: lb-01 waits for a readiness gate that waits until lb-02, if it was just
(re)created, reports HAProxy serving with backends (`scripts/wait-healthy`, CloudWatch) and the Elastic
IP is on a member of the pair; keepalived moves the address to whichever serves when the other goes.
lb-02 first, so that a second load balancer joining a single one (lbCount 1 -> 2, which replaces lb-01:
its user-data joins it to the pair) serves, and has taken the Elastic IP over (keepalived alone is
active), before lb-01 goes. `pulumi up --replace` of lb-01 alone does not run the gate again.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_command as command

from components.ec2 import HostProfile, hardened_instance
from provisioning.render import StackFacts, encode_user_data, lb_cloud_config
from settings import HostSlot


@dataclass
class LoadBalancerArgs:
    slots: list[HostSlot]  # lb-01 (and lb-02 of a pair)
    facts: StackFacts
    db_ca_certificate: pulumi.Input[str]  # public: the failover controller verifies the databases with it
    profile: HostProfile
    subnet_ids: Sequence[pulumi.Input[str]]
    eip_allocation_id: pulumi.Input[str]
    public_ip: pulumi.Input[str]
    tags: dict[str, str]
    ready_timeout_seconds: int = 900  # lb-01's first boot installs packages after EC2 reports it running
    # The AWS profile `pulumi up` uses (aws:profile), for the readiness gate's own API calls.
    aws_profile: str | None = None


class LoadBalancer(pulumi.ComponentResource):
    public_ip: pulumi.Output[str]
    instance_ids: dict[str, pulumi.Output[str]]  # hostname → instance id
    url: pulumi.Output[str]

    def __init__(self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("webinfra:load_balancer:LoadBalancer", name, None, opts)
        if len(args.slots) not in (1, 2):
            raise ValueError("a load balancer is one instance or a pair")
        self.instance_ids = {}
        ca = pulumi.Output.from_input(args.db_ca_certificate)

        def rendered(hostname: str) -> pulumi.Output[str]:
            return ca.apply(lambda pem: encode_user_data(lb_cloud_config(args.facts, hostname, db_ca=pem)))

        user_data = {slot.hostname: rendered(slot.hostname) for slot in args.slots}
        pair = len(args.slots) == 2
        after: list[pulumi.Resource] = []
        for slot in reversed(args.slots):  # lb-02 first (see above)
            number = f"{slot.number:02d}"
            instance = hardened_instance(
                f"{name}-{number}-instance",
                args.profile,
                subnet_id=args.subnet_ids[slot.subnet_index],
                private_ip=slot.private_ip,
                user_data_base64=user_data[slot.hostname],
                # LbPair: the readiness gate tells a single load balancer from a pair's by it
                tags={**args.tags, "Role": "lb", "Name": slot.hostname, "LbPair": "yes" if pair else "no"},
                # Stateless: a new configuration means a new instance; the Elastic IP follows it.
                replace_on_user_data_change=True,
                ipv6_address_count=1,
                opts=pulumi.ResourceOptions(
                    parent=self,
                    # lb-01 was `lb-instance` while a stack had only one load balancer: same resource.
                    aliases=[pulumi.Alias(name=f"{name}-instance")] if slot.number == 1 else None,
                    depends_on=after,
                ),
            )
            self.instance_ids[slot.hostname] = instance.id
            if len(args.slots) == 2 and not after:
                # Run again whenever lb-02 is replaced, or lb-01 is about to be (its replacing inputs).
                first = args.slots[0]
                lb_01: list[pulumi.Input[str]] = [
                    user_data[first.hostname],
                    first.private_ip,
                    args.profile.key_name or "",
                ]
                after = [self._readiness_gate(f"{name}-{number}-ready", slot.hostname, instance.id, lb_01, args)]
        self.instance_ids = {slot.hostname: self.instance_ids[slot.hostname] for slot in args.slots}
        if len(args.slots) == 1:
            aws.ec2.EipAssociation(
                f"{name}-eip-association",
                allocation_id=args.eip_allocation_id,
                instance_id=self.instance_ids[args.slots[0].hostname],
                # the provider's docs: an association may need the VPC's internet gateway first
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.profile.boot_after)),
            )
        # A pair declares no association: keepalived's active load balancer associates the address
        # with itself (at first boot, on failover, and every 30 s if anything moved it). One owned by
        # Pulumi would be dropped by `pulumi refresh` once keepalived moved it, and re-created on
        # lb-01 by the next `pulumi up`, even with lb-01 dead.
        self.public_ip = pulumi.Output.from_input(args.public_ip)
        self.url = pulumi.Output.concat("https://", self.public_ip, "/")
        self.register_outputs({"public_ip": self.public_ip, "url": self.url, "instance_ids": self.instance_ids})

    def _readiness_gate(
        self,
        name: str,
        hostname: str,
        instance_id: pulumi.Output[str],
        also_after: list[pulumi.Input[str]],
        args: LoadBalancerArgs,
    ) -> command.local.Command:
        """Waits (on the machine running `pulumi up`) until `hostname` serves: it has reported HAProxy
        serving with a backend in the last minutes, and since its launch; and the Elastic IP is on no single
        load balancer. Runs again whenever that
        instance is replaced or `also_after` changes; `pulumi preview` never runs it."""
        facts = args.facts

        def command_line(ids: list[str]) -> str:
            instance, allocation = ids
            return shlex.join(
                [
                    "scripts/wait-healthy",
                    "--stack",
                    facts.stack,
                    "--region",
                    facts.region,
                    "--host",
                    hostname,
                    "--instance-id",
                    instance,
                    "--metric",
                    "HealthyBackends",
                    "--at-least",
                    "1",
                    "--within-minutes",
                    "5",
                    "--timeout",
                    str(args.ready_timeout_seconds),
                    "--interval",
                    "15",
                    # and the Elastic IP off a single load balancer: one that joins a single one (lbCount
                    # 1 -> 2) must have taken the address over before the single one is replaced
                    "--elastic-ip",
                    allocation,
                ]
            )

        return command.local.Command(
            name,
            create=pulumi.Output.all(instance_id, args.eip_allocation_id).apply(command_line),
            # the credentials `pulumi up` uses, where they come from a profile in the stack's config
            environment={"AWS_PROFILE": args.aws_profile} if args.aws_profile else None,
            triggers=[instance_id, *also_after],
            opts=pulumi.ResourceOptions(parent=self),
        )
