"""The whole stack, from validated settings to exports. `__main__.py` calls this; so do the tests."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components.backups import BackupBucket, BackupBucketArgs
from components.db_tls import DatabaseTls, DatabaseTlsArgs
from components.ec2 import HostProfile, debian_12_ami
from components.host_programs import HostPrograms, HostProgramsArgs
from components.host_role import (
    SESSION_MANAGER_STATEMENT,
    HostRole,
    HostRoleArgs,
    find_elastic_ip,
    move_elastic_ip,
    put_metrics,
    read_parameters,
)
from components.lb_certificate import LoadBalancerCertificate, LoadBalancerCertificateArgs
from components.load_balancer import LoadBalancer, LoadBalancerArgs
from components.monitoring import MonitoredHost, Monitoring, MonitoringArgs
from components.network import Network, NetworkArgs
from components.runtime_config import RuntimeConfig, RuntimeConfigArgs
from components.secrets import StackSecrets, StackSecretsArgs
from components.smoke_test import SmokeTest, SmokeTestArgs
from components.web_tier import WebTier, WebTierArgs
from provisioning.render import (
    Backend,
    StackFacts,
    program_parameters,
    role_processes,
    runtime_config,
    stack_haproxy_config,
)
from settings import PROJECT, HostKind, HostSlot, Settings, subnet_cidrs


def stack_facts(settings: Settings) -> StackFacts:
    lb_slots, web_slots = settings.layout
    return StackFacts(
        stack=settings.stack,
        region=settings.region,
        vpc_cidr=settings.vpc_cidr,
        ssm_prefix=settings.ssm_prefix,
        lb_addresses=tuple(slot.private_ip for slot in lb_slots),
        lb_virtual_address=settings.lb_virtual_ip,
        web_addresses=tuple(slot.private_ip for slot in web_slots),
        max_replication_lag_seconds=settings.max_replication_lag_seconds,
        aws_endpoint_url=settings.aws_endpoint_url,
        ssh_cidr=settings.admin_cidr if settings.ssh_enabled else None,
        admin_cidr=settings.admin_cidr,
        domain=settings.domain,
        acme_email=settings.acme_email,
        acme_server=settings.acme_server if settings.acme_enabled else None,
        rate_limit_per_10s=settings.rate_limit_per_10s,
    )


def _standard_zones() -> pulumi.Output[list[str]]:
    """The region's available zones, not Local Zones or Wavelength Zones (opt-in zones): a web server
    placed there would miss the instance types, the pricing and the latency to its peers that the
    stack assumes."""
    return aws.get_availability_zones_output(
        state="available",
        filters=[aws.GetAvailabilityZonesFilterArgsDict(name="opt-in-status", values=["opt-in-not-required"])],
    ).names


def _program_arns(programs: HostPrograms, facts: StackFacts, name: str) -> list[pulumi.Output[str]]:
    prefix = facts.ssm_program(name) + "/"
    return [arn for parameter, arn in programs.parameter_arns.items() if parameter.startswith(prefix)]


def _web_host_role(
    settings: Settings,
    secrets: StackSecrets,
    programs: HostPrograms,
    config: RuntimeConfig,
    web_slots: list[HostSlot],
    backups: BackupBucket,
) -> HostRole:
    arns = secrets.parameter_arns
    facts = stack_facts(settings)
    return HostRole(
        "web-host",
        HostRoleArgs(
            description=f"webinfra {settings.stack} web servers: database passwords, backups, Session Manager",
            tags={**settings.base_tags, "Role": "web"},
            statements=[
                read_parameters(
                    "ReadOwnDatabaseSecretsAndProgram",
                    [
                        arns["db-app"],
                        arns["db-replication"],
                        arns["db-failover"],  # the primary creates the failover controllers' user
                        *(arns[f"db-tls-{slot.hostname}"] for slot in web_slots),
                        *_program_arns(programs, facts, "webinfra-app"),
                        *_program_arns(programs, facts, "webinfra-db-backup"),
                        *_program_arns(programs, facts, "webinfra-db-ship-binlogs"),
                        *_program_arns(programs, facts, "webinfra-db-restore"),
                        config.parameter_arns[facts.ssm_config("firewall-peers.nft")],
                    ],
                ),
                SESSION_MANAGER_STATEMENT,
                put_metrics(settings.stack),
                *backups.writer_statements(),
            ],
        ),
    )


def _lb_host_role(
    settings: Settings,
    secrets: StackSecrets,
    programs: HostPrograms,
    config: RuntimeConfig,
    eip_allocation_id: pulumi.Output[str],
) -> HostRole:
    """A pair's load balancers also move the stack's Elastic IP (keepalived's takeover); a lone one asks
    where it points (its failover controller decides only while it points there)."""
    facts = stack_facts(settings)
    return HostRole(
        "lb-host",
        HostRoleArgs(
            description=f"webinfra {settings.stack} load balancer: its TLS key, Session Manager"
            + (", moving its Elastic IP" if settings.lb_pair else ""),
            tags={**settings.base_tags, "Role": "lb"},
            statements=[
                read_parameters(
                    "ReadOwnCertificateFailoverPasswordAndProgram",
                    [
                        secrets.parameter_arns["lb-certificate"],
                        secrets.parameter_arns["db-failover"],  # the failover controller's database user
                        *_program_arns(programs, facts, "webinfra-failover"),
                        config.parameter_arns[facts.ssm_config("haproxy-runtime.cfg")],
                        config.parameter_arns[facts.ssm_config("failover-servers.json")],
                    ],
                ),
                SESSION_MANAGER_STATEMENT,
                put_metrics(settings.stack),
                *(
                    move_elastic_ip(
                        eip_allocation_id, region=settings.region, project=settings.project, stack=settings.stack
                    )
                    if settings.lb_pair
                    else [find_elastic_ip()]
                ),
            ],
        ),
    )


def _host_profiles(
    settings: Settings, network: Network, secrets: StackSecrets, web_role: HostRole, lb_role: HostRole
) -> tuple[HostProfile, HostProfile]:
    """What every web server, and every load balancer, shares: image, type, security group, role."""
    web_ami = debian_12_ami(settings.web_arch)
    lb_ami = web_ami if settings.lb_arch == settings.web_arch else debian_12_ami(settings.lb_arch)

    def profile(
        ami_id: pulumi.Input[str], instance_type: str, security_group_id: pulumi.Input[str], role: HostRole
    ) -> HostProfile:
        return HostProfile(
            ami_id=ami_id,
            instance_type=instance_type,
            security_group_ids=[security_group_id],
            instance_profile=role.instance_profile_name,
            root_volume_gb=settings.root_volume_gb,
            key_name=settings.ssh_key_name,
            # The secrets must be in SSM before any server boots and asks for them.
            boot_after=[*network.internet_access, secrets, role],
        )

    return (
        profile(web_ami, settings.instance_type, network.web_security_group_id, web_role),
        profile(lb_ami, settings.lb_instance_type, network.lb_security_group_id, lb_role),
    )


def _monitored_hosts(
    settings: Settings, lb_slots: list[HostSlot], lb: LoadBalancer, tier: WebTier
) -> list[MonitoredHost]:
    return [
        MonitoredHost(
            hostname=slot.hostname,
            kind=slot.kind,
            db_role=None,
            instance_id=lb.instance_ids[slot.hostname],
            processes=role_processes(slot.kind, lb_pair=settings.lb_pair),
        )
        for slot in lb_slots
    ] + [
        MonitoredHost(hostname=server.hostname, kind=HostKind.WEB, db_role=server.role, instance_id=server.instance_id)
        for server in tier.servers
    ]


def define_stack(settings: Settings) -> dict[str, pulumi.Input]:
    tags = settings.base_tags
    facts = stack_facts(settings)
    lb_slots, web_slots = settings.layout

    network = Network(
        "net",
        NetworkArgs(
            vpc_cidr=settings.vpc_cidr,
            subnet_cidrs=subnet_cidrs(settings.vpc_cidr, settings.az_count),
            availability_zones=_standard_zones(),
            ssh_cidr=facts.ssh_cidr,
            admin_cidr=settings.admin_cidr,
            lb_pair=settings.lb_pair,
            tags=tags,
        ),
    )
    certificate = LoadBalancerCertificate(
        "lb-tls",
        LoadBalancerCertificateArgs(
            public_ip=network.lb_address.public_ip, domain=settings.domain, stack=settings.stack
        ),
    )
    db_tls = DatabaseTls("db-tls", DatabaseTlsArgs(stack=settings.stack, servers=web_slots))
    secrets = StackSecrets(
        "secrets",
        StackSecretsArgs(
            passwords={
                "db-app": facts.ssm_db_app_password,
                "db-replication": facts.ssm_db_replication_password,
                "db-failover": facts.ssm_db_failover_password,
            },
            values={
                "lb-certificate": (facts.ssm_lb_certificate, certificate.haproxy_pem),
                **{f"db-tls-{host}": (facts.ssm_db_tls(host), pem) for host, pem in db_tls.server_pems.items()},
            },
            tags=tags,
        ),
    )
    # Each kind of host reads exactly its own secrets of this stack, and may be reached through
    # Session Manager; nothing else.
    programs = HostPrograms("programs", HostProgramsArgs(parameters=program_parameters(facts), tags=tags))
    backends = [Backend(slot.hostname, slot.private_ip) for slot in web_slots]
    config = RuntimeConfig("config", RuntimeConfigArgs(parameters=runtime_config(facts, backends), tags=tags))
    backups = BackupBucket(
        "backups",
        BackupBucketArgs(
            stack=settings.stack,
            retention_days=settings.backup_retention_days,
            delete_with_stack=settings.delete_backups_with_stack,
            tags=tags,
        ),
    )
    web_role = _web_host_role(settings, secrets, programs, config, web_slots, backups)
    lb_role = _lb_host_role(settings, secrets, programs, config, network.lb_address.allocation_id)
    web_profile, lb_profile = _host_profiles(settings, network, secrets, web_role, lb_role)

    if not settings.smoke_test and settings.web_count > 2:
        # No rolling gates without a way to reach the site: said at every preview, not found out at an update.
        pulumi.log.warn(
            f"{PROJECT}:smokeTest is false: a change that replaces or resizes the replicas changes them all at "
            "once (no rolling gate can see one come back); the primary then serves alone meanwhile"
        )
    tier = WebTier(
        "web",
        WebTierArgs(
            slots=web_slots,
            facts=facts,
            db_ca_certificate=db_tls.ca_certificate_pem,
            backup_bucket=backups.bucket_name,
            profile=web_profile,
            subnet_ids=network.subnet_ids,
            tags=tags,
            url=pulumi.Output.concat("https://", network.lb_address.public_ip, "/") if settings.smoke_test else None,
            certificate_pem=certificate.certificate_pem,
            domain=settings.domain,
        ),
        opts=pulumi.ResourceOptions(depends_on=[secrets, programs, config, web_role]),
    )
    lb = LoadBalancer(
        "lb",
        LoadBalancerArgs(
            slots=lb_slots,
            facts=facts,
            db_ca_certificate=db_tls.ca_certificate_pem,
            profile=lb_profile,
            subnet_ids=network.subnet_ids,
            eip_allocation_id=network.lb_address.allocation_id,
            public_ip=network.lb_address.public_ip,
            tags=tags,
            aws_profile=settings.aws_profile,
        ),
        opts=pulumi.ResourceOptions(depends_on=[secrets, programs, config, lb_role]),
    )

    monitoring = Monitoring(
        "monitoring",
        MonitoringArgs(
            stack=settings.stack,
            region=settings.region,
            hosts=_monitored_hosts(settings, lb_slots, lb, tier),
            web_count=settings.web_count,
            max_replication_lag_seconds=settings.max_replication_lag_seconds,
            tags=tags,
            alert_email=settings.alert_email,
        ),
    )

    if settings.smoke_test:
        SmokeTest(
            "smoke-test",
            SmokeTestArgs(
                url=lb.url,
                certificate_pem=certificate.certificate_pem,
                backends=[slot.hostname for slot in web_slots],
                instance_ids=[*lb.instance_ids.values(), *(server.instance_id for server in tier.servers)],
                config_version=stack_haproxy_config(facts, backends)[1],
                domain=settings.domain,
            ),
            # after every instance and the Elastic IP's association exist
            opts=pulumi.ResourceOptions(depends_on=[tier, lb]),
        )

    return {
        "url": lb.url,
        "alarm_topic_arn": monitoring.topic_arn,
        "dashboard": monitoring.dashboard_name,
        "lb_public_ip": lb.public_ip,
        "lb_certificate_pem": certificate.certificate_pem,
        "web_private_ips": tier.private_ips,
        "db_primary_private_ip": tier.primary_private_ip,
        "ssh_enabled": settings.ssh_enabled,
        "ssm_parameter_prefix": settings.ssm_prefix,
        "backup_bucket": backups.bucket_name,
    }
