"""The whole stack, from validated settings to exports. `__main__.py` calls this; so do the tests."""
from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components.ec2 import HostProfile, debian_12_ami
from components.host_role import HostRole, HostRoleArgs
from components.load_balancer import LoadBalancer, LoadBalancerArgs
from components.network import Network, NetworkArgs
from components.secrets import DatabaseSecrets, DatabaseSecretsArgs
from components.web_tier import WebTier, WebTierArgs
from provisioning.render import Backend, StackFacts
from settings import Settings, subnet_cidrs


def stack_facts(settings: Settings) -> StackFacts:
    return StackFacts(
        stack=settings.stack,
        region=settings.region,
        vpc_cidr=settings.vpc_cidr,
        ssm_prefix=settings.ssm_prefix,
        max_replication_lag_seconds=settings.max_replication_lag_seconds,
        aws_endpoint_url=settings.aws_endpoint_url,
    )


def define_stack(settings: Settings) -> dict[str, pulumi.Input]:
    tags = settings.base_tags
    facts = stack_facts(settings)

    zones = aws.get_availability_zones_output(state="available").names
    network = Network(
        "net",
        NetworkArgs(
            vpc_cidr=settings.vpc_cidr,
            subnet_cidrs=subnet_cidrs(settings.vpc_cidr, settings.az_count),
            availability_zones=zones,
            admin_cidr=settings.admin_cidr,
            tags=tags,
        ),
    )

    secrets = DatabaseSecrets(
        "db",
        DatabaseSecretsArgs(
            parameter_names={"app": facts.ssm_db_app_password, "replication": facts.ssm_db_replication_password},
            tags=tags,
        ),
    )
    # Web servers may read exactly this stack's database passwords; the load balancer reads nothing.
    web_role = HostRole(
        "web-host",
        HostRoleArgs(
            description=f"webinfra {settings.stack} web servers: read the stack's database passwords",
            tags={**tags, "Role": "web"},
            statements=[
                {
                    "Sid": "ReadOwnStackDatabasePasswords",
                    "Effect": "Allow",
                    "Action": ["ssm:GetParameter"],
                    "Resource": list(secrets.parameter_arns.values()),
                }
            ],
        ),
    )
    lb_role = HostRole(
        "lb-host",
        HostRoleArgs(description=f"webinfra {settings.stack} load balancer", tags={**tags, "Role": "lb"}),
    )

    web_ami = debian_12_ami(settings.web_arch)
    lb_ami = web_ami if settings.lb_arch == settings.web_arch else debian_12_ami(settings.lb_arch)

    lb_slot, web_slots = settings.layout
    tier = WebTier(
        "web",
        WebTierArgs(
            slots=web_slots,
            facts=facts,
            profile=HostProfile(
                ami_id=web_ami,
                instance_type=settings.instance_type,
                security_group_ids=[network.web_security_group_id],
                instance_profile=web_role.instance_profile_name,
                root_volume_gb=settings.root_volume_gb,
                key_name=settings.ssh_key_name,
            ),
            subnet_ids=network.subnet_ids,
            tags=tags,
        ),
        # The passwords must be in SSM before any server boots and asks for them.
        opts=pulumi.ResourceOptions(depends_on=[secrets, web_role]),
    )
    lb = LoadBalancer(
        "lb",
        LoadBalancerArgs(
            hostname=lb_slot.hostname,
            facts=facts,
            backends=[Backend(slot.hostname, slot.private_ip) for slot in web_slots],
            profile=HostProfile(
                ami_id=lb_ami,
                instance_type=settings.lb_instance_type,
                security_group_ids=[network.lb_security_group_id],
                instance_profile=lb_role.instance_profile_name,
                root_volume_gb=settings.root_volume_gb,
                key_name=settings.ssh_key_name,
            ),
            subnet_id=network.subnet_ids[lb_slot.subnet_index],
            private_ip=lb_slot.private_ip,
            tags=tags,
        ),
    )

    return {
        "url": lb.url,
        "lb_public_ip": lb.public_ip,
        "web_private_ips": tier.private_ips,
        "db_primary_private_ip": tier.primary_private_ip,
        "ssh_enabled": settings.ssh_enabled,
        "ssm_parameter_prefix": settings.ssm_prefix,
    }
