"""Network: the stack's own VPC, public subnets across AZs, and least-privilege security groups.

Every rule is its own resource with a description (CKV_AWS_23). Only 80/443 are open to the world,
and only on the load balancer (EC2.18); 3306 only to the web servers, from themselves and from the
load balancers (the failover controller); SSH only from `admin_cidr` (CKV_AWS_24, EC2.13); egress
only where the hosts need it (CKV_AWS_382); the VPC's default security group is emptied (EC2.2).
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from provisioning.render import HAPROXY_STATS_PORT

ANYWHERE_V4 = "0.0.0.0/0"
ANYWHERE_V6 = "::/0"
VRRP_PROTOCOL = "112"


@dataclass
class NetworkArgs:
    vpc_cidr: str
    subnet_cidrs: list[str]
    availability_zones: pulumi.Input[list[str]]
    ssh_cidr: str | None  # the admin network, only when SSH is enabled
    tags: dict[str, str]
    admin_cidr: str | None = None  # the admin network: HAProxy's stats/metrics port is open to it
    lb_pair: bool = False  # two load balancers: VRRP (IP protocol 112) between them


class Network(pulumi.ComponentResource):
    vpc: aws.ec2.Vpc
    subnet_ids: list[pulumi.Output[str]]
    lb_security_group_id: pulumi.Output[str]
    web_security_group_id: pulumi.Output[str]
    lb_address: aws.ec2.Eip  # allocated here, before the LB, so its certificate can name it
    # The internet gateway, the public route table and its associations: what an instance needs at
    # boot to download packages, and an Elastic IP association needs first (the provider's docs).
    internet_access: list[pulumi.Resource]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("webinfra:network:Network", name, None, opts)
        self._name = name
        self._args = args
        child = pulumi.ResourceOptions(parent=self)

        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.vpc_cidr,
            assign_generated_ipv6_cidr_block=True,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags=self._tags(f"{name}-vpc"),
            opts=child,
        )
        # Nothing may use the default security group: strip every rule from it.
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg",
            vpc_id=self.vpc.id,
            ingress=[],
            egress=[],
            tags=self._tags(f"{name}-default-sg (unused, no rules)"),
            opts=child,
        )
        self._public_subnets(child)
        self._security_groups(child)
        self.lb_address = aws.ec2.Eip(
            f"{name}-lb-eip", domain="vpc", tags={**self._tags(f"{name}-lb-eip"), "Role": "lb"}, opts=child
        )

        self.register_outputs(
            {
                "vpc_id": self.vpc.id,
                "subnet_ids": self.subnet_ids,
                "lb_security_group_id": self.lb_security_group_id,
                "web_security_group_id": self.web_security_group_id,
                "lb_public_ip": self.lb_address.public_ip,
            }
        )

    def _tags(self, name: str) -> dict[str, str]:
        return {**self._args.tags, "Role": "network", "Name": name}

    def _public_subnets(self, child: pulumi.ResourceOptions) -> None:
        name, args = self._name, self._args
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, tags=self._tags(f"{name}-igw"), opts=child)
        routes = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=self.vpc.id,
            routes=[
                aws.ec2.RouteTableRouteArgsDict(cidr_block=ANYWHERE_V4, gateway_id=gateway.id),
                aws.ec2.RouteTableRouteArgsDict(ipv6_cidr_block=ANYWHERE_V6, gateway_id=gateway.id),
            ],
            tags=self._tags(f"{name}-public-rt"),
            opts=child,
        )
        azs = pulumi.Output.from_input(args.availability_zones)
        self.subnet_ids = []
        self.internet_access = [gateway, routes]
        for index, cidr in enumerate(args.subnet_cidrs):
            subnet = aws.ec2.Subnet(
                f"{name}-public-{index + 1}",
                vpc_id=self.vpc.id,
                cidr_block=cidr,
                ipv6_cidr_block=self.vpc.ipv6_cidr_block.apply(functools.partial(_ipv6_subnet, index=index)),
                availability_zone=azs.apply(functools.partial(_zone, index=index)),
                # Public addresses let hosts reach package mirrors without a NAT gateway (~$32/month);
                # the security groups admit nothing from the internet except 80/443 on the LB.
                map_public_ip_on_launch=True,
                tags=self._tags(f"{name}-public-{index + 1}"),
                opts=child,
            )
            self.internet_access.append(
                aws.ec2.RouteTableAssociation(
                    f"{name}-public-{index + 1}-rta", subnet_id=subnet.id, route_table_id=routes.id, opts=child
                )
            )
            self.subnet_ids.append(subnet.id)

    def _security_groups(self, child: pulumi.ResourceOptions) -> None:
        name, args = self._name, self._args
        lb = aws.ec2.SecurityGroup(
            f"{name}-lb-sg",
            vpc_id=self.vpc.id,
            description="webinfra load balancer: HTTP/HTTPS from the internet",
            tags=self._tags(f"{name}-lb-sg"),
            opts=child,
        )
        web = aws.ec2.SecurityGroup(
            f"{name}-web-sg",
            vpc_id=self.vpc.id,
            description="webinfra web servers: HTTP from the load balancer, MySQL between web servers",
            tags=self._tags(f"{name}-web-sg"),
            opts=child,
        )
        self.lb_security_group_id, self.web_security_group_id = lb.id, web.id

        for port, label in ((80, "HTTP"), (443, "HTTPS")):
            for family, cidr in (("ipv4", ANYWHERE_V4), ("ipv6", ANYWHERE_V6)):
                self._rule(
                    "ingress",
                    f"lb-{label.lower()}-{family}",
                    lb.id,
                    port,
                    f"{label} from anywhere ({family})",
                    cidr=cidr,
                )
        self._rule(
            "ingress",
            "web-http-from-lb",
            web.id,
            80,
            "HTTP from the load balancer (traffic and health checks)",
            source=lb.id,
        )
        self._rule(
            "ingress",
            "web-mysql-from-web",
            web.id,
            3306,
            "MySQL replication and app writes between web servers",
            source=web.id,
        )
        self._rule(
            "ingress",
            "web-mysql-from-lb",
            web.id,
            3306,
            "MySQL from the failover controllers on the load balancers",
            source=lb.id,
        )
        self._rule(
            "egress",
            "lb-mysql-to-web",
            lb.id,
            3306,
            "MySQL to the web servers (the failover controller watches and promotes the databases)",
            source=web.id,
        )
        self._rule(
            "egress", "lb-http-to-web", lb.id, 80, "HTTP to the web servers (traffic and health checks)", source=web.id
        )
        self._rule(
            "egress",
            "web-mysql-to-web",
            web.id,
            3306,
            "MySQL to the other web servers (replication, writes to the primary)",
            source=web.id,
        )

        for group_name, group in (("lb", lb), ("web", web)):
            for port, label in ((80, "HTTP"), (443, "HTTPS")):
                for family, cidr in (("ipv4", ANYWHERE_V4), ("ipv6", ANYWHERE_V6)):
                    self._rule(
                        "egress",
                        f"{group_name}-{label.lower()}-out-{family}",
                        group.id,
                        port,
                        f"{label} out ({family}): Debian package mirrors and AWS APIs (SSM)",
                        cidr=cidr,
                    )
            if args.ssh_cidr:
                self._rule(
                    "ingress",
                    f"{group_name}-ssh-from-admin",
                    group.id,
                    22,
                    "SSH from the admin network only",
                    cidr=args.ssh_cidr,
                )
        if args.admin_cidr:
            self._rule(
                "ingress",
                "lb-stats-from-admin",
                lb.id,
                HAPROXY_STATS_PORT,
                "HAProxy stats and metrics from the admin network only",
                cidr=args.admin_cidr,
            )
        if args.lb_pair:
            # keepalived's unicast VRRP adverts, between the two load balancers only.
            self._rule(
                "ingress",
                "lb-vrrp-from-lb",
                lb.id,
                None,
                "VRRP (keepalived) from the other load balancer",
                source=lb.id,
                protocol=VRRP_PROTOCOL,
            )
            self._rule(
                "egress",
                "lb-vrrp-to-lb",
                lb.id,
                None,
                "VRRP (keepalived) to the other load balancer",
                source=lb.id,
                protocol=VRRP_PROTOCOL,
            )

    def _rule(
        self,
        direction: str,
        key: str,
        group_id,
        port: int | None,
        description: str,
        *,
        cidr: str | None = None,
        source=None,
        protocol: str = "tcp",
    ):
        rule_class = aws.vpc.SecurityGroupIngressRule if direction == "ingress" else aws.vpc.SecurityGroupEgressRule
        rule_name = f"{self._name}-{key}"
        rule_class(
            rule_name,
            security_group_id=group_id,
            ip_protocol=protocol,
            from_port=port,  # None for a protocol without ports (VRRP)
            to_port=port,
            description=description,
            cidr_ipv4=cidr if cidr and ":" not in cidr else None,
            cidr_ipv6=cidr if cidr and ":" in cidr else None,
            referenced_security_group_id=source,
            tags=self._tags(rule_name),
            opts=pulumi.ResourceOptions(parent=self),
        )


def _zone(zones: list[str], index: int) -> str:
    if index >= len(zones):
        raise ValueError(
            f"webinfra:azCount asks for {index + 1} availability zones but the region offers {len(zones)}: {zones}"
        )
    return zones[index]


def _ipv6_subnet(vpc_block: str, index: int) -> str:
    """The index-th /64 of the VPC's Amazon-provided /56."""
    return str(next(itertools.islice(ipaddress.IPv6Network(vpc_block).subnets(new_prefix=64), index, None)))
