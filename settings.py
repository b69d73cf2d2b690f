"""Stack settings: read once from Pulumi config, validated, frozen.

Components receive a `Settings` and never read config themselves. Defaults come from the `config:`
block of Pulumi.yaml, the single source both `pulumi up` and the tests see (the Pulumi CLI applies
those defaults, the SDK under mocks does not, so this module applies them itself).

Validation is pure Python: `Settings.from_mapping` raises `SettingsError` naming the setting and
what it accepts, before any resource is declared.
"""

from __future__ import annotations

import ipaddress
import pathlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlparse

import yaml

PROJECT = "webinfra"
PULUMI_YAML = pathlib.Path(__file__).resolve().parent / "Pulumi.yaml"

MIN_WEB_COUNT = 2
MAX_WEB_COUNT = 20
MAX_AZ_COUNT = 4
MAX_LB_COUNT = 2

# Instance families this program knows, by CPU architecture. An unknown family is refused rather
# than guessed, because the wrong architecture boots an image that cannot run.
ARM64_FAMILIES = frozenset(
    "a1 t4g m6g m6gd m7g m7gd m8g c6g c6gd c6gn c7g c7gd c7gn c8g r6g r6gd r7g r7gd r8g x2gd im4gn is4gen".split()
)
X86_64_FAMILIES = frozenset(
    "t2 t3 t3a m5 m5a m5d m5n m6a m6i m6id m7a m7i m7i-flex m8a m8i c5 c5a c5d c5n c6a c6i c6id c7a c7i "
    "c7i-flex c8i r5 r5a r5d r6a r6i r6id r7a r7i r7iz r8i".split()
)


_FAMILY = re.compile(r"^(?P<series>[a-z]+)(?P<generation>\d+)(?P<options>[a-z-]*)$")


def has_instance_store(instance_type: str) -> bool:
    """Families with instance-store (local NVMe) volumes: a `d` among the options (m5d, c6gd, m6id,
    x2gd) and the storage-optimized series (i3, im4gn, is4gen, d3)."""
    match = _FAMILY.match(instance_type.split(".", 1)[0])
    return match is not None and ("d" in match["options"] or match["series"] in ("i", "im", "is", "d"))


class SettingsError(ValueError):
    """An invalid stack setting; the message names the setting and what is accepted."""


@dataclass(frozen=True)
class Settings:
    project: str
    stack: str
    region: str
    web_count: int
    instance_type: str
    lb_instance_type: str
    vpc_cidr: str
    az_count: int
    admin_cidr: str | None
    ssh_key_name: str | None
    root_volume_gb: int
    max_replication_lag_seconds: int
    aws_endpoint_url: str | None
    # No defaults here: Pulumi.yaml declares them, once (project_defaults).
    acme_server: str
    rate_limit_per_10s: int
    lb_count: int
    smoke_test: bool
    backup_retention_days: int
    delete_backups_with_stack: bool
    domain: str | None = None
    acme_email: str | None = None
    alert_email: str | None = None
    lb_virtual_ip: str | None = None
    aws_profile: str | None = None  # aws:profile: the credentials `pulumi up` uses, for its own commands

    # --- derived values -------------------------------------------------------------------------
    @property
    def ssh_enabled(self) -> bool:
        """SSH only with both an admin network and a key pair; otherwise Session Manager."""
        return self.admin_cidr is not None and self.ssh_key_name is not None

    @property
    def acme_enabled(self) -> bool:
        return self.domain is not None and self.acme_email is not None

    @property
    def web_arch(self) -> str:
        return architecture_of(self.instance_type)

    @property
    def lb_arch(self) -> str:
        return architecture_of(self.lb_instance_type)

    @property
    def layout(self) -> tuple[list[HostSlot], list[HostSlot]]:
        return host_layout(self.vpc_cidr, self.az_count, self.web_count, self.lb_count)

    @property
    def lb_pair(self) -> bool:
        return self.lb_count == 2

    @property
    def ssm_prefix(self) -> str:
        """SSM Parameter Store path that holds this stack's secrets (and nothing else)."""
        return f"/{self.project}/{self.stack}"

    @property
    def base_tags(self) -> dict[str, str]:
        return {"Project": self.project, "Stack": self.stack, "ManagedBy": "pulumi"}

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any], *, stack: str, region: str | None, aws_profile: str | None = None
    ) -> Settings:
        """Validate raw config values (strings or typed, as Pulumi gives them) over the defaults."""
        raw = {**project_defaults(), **{k: v for k, v in values.items() if v is not None}}
        unknown = sorted(set(values) - set(project_defaults()))
        if unknown:
            raise SettingsError(
                f"unknown setting(s) {', '.join(PROJECT + ':' + k for k in unknown)}; "
                f"known: {', '.join(sorted(project_defaults()))}"
            )
        if not region:
            raise SettingsError("aws:region is required (for example: pulumi config set aws:region eu-west-1)")

        web_count = _int(raw, "webCount", MIN_WEB_COUNT, MAX_WEB_COUNT)
        az_count = _int(raw, "azCount", 1, MAX_AZ_COUNT)
        root_volume_gb = _int(raw, "rootVolumeGb", 8, 200)
        max_lag = _int(raw, "maxReplicationLagSeconds", 1, 3600)
        instance_type = _instance_type(raw, "instanceType")
        lb_instance_type = _instance_type(raw, "lbInstanceType")
        vpc_cidr = _vpc_cidr(raw["vpcCidr"])
        admin_cidr = _admin_cidr(raw["adminCidr"])
        ssh_key_name = str(raw["sshKeyName"]).strip() or None
        if ssh_key_name and admin_cidr is None:
            raise SettingsError(
                f"{PROJECT}:sshKeyName is set but {PROJECT}:adminCidr is not: a key pair is only useful "
                "with SSH allowed from an admin network; set adminCidr (for example 203.0.113.7/32) or unset sshKeyName"
            )
        lb_count = _int(raw, "lbCount", 1, MAX_LB_COUNT)
        if lb_count > 1 and az_count < 2:
            raise SettingsError(
                f"{PROJECT}:lbCount {lb_count} needs {PROJECT}:azCount of at least 2: the load balancers of a pair run "
                f"in different availability zones, so one zone's outage cannot take both (got azCount {az_count})"
            )
        lb_virtual_ip = _lb_virtual_ip(raw["lbVirtualIp"], vpc_cidr, az_count, web_count, lb_count)
        domain = _domain(raw["domain"])
        acme_email = _email(raw["acmeEmail"], "acmeEmail")
        if acme_email and not domain:
            raise SettingsError(
                f"{PROJECT}:acmeEmail is set but {PROJECT}:domain is not: a certificate needs the site's DNS name"
            )
        acme_server = _endpoint_url(raw["acmeServer"], "acmeServer")
        if acme_server is None:
            raise SettingsError(f"{PROJECT}:acmeServer must be an http(s) URL of an ACME directory")
        return cls(
            project=PROJECT,
            stack=stack,
            region=region,
            web_count=web_count,
            instance_type=instance_type,
            lb_instance_type=lb_instance_type,
            vpc_cidr=vpc_cidr,
            az_count=az_count,
            admin_cidr=admin_cidr,
            ssh_key_name=ssh_key_name,
            root_volume_gb=root_volume_gb,
            max_replication_lag_seconds=max_lag,
            aws_endpoint_url=_endpoint_url(raw["awsEndpointUrl"], "awsEndpointUrl"),
            domain=domain,
            acme_email=acme_email,
            acme_server=acme_server,
            rate_limit_per_10s=_int(raw, "rateLimitPer10s", 10, 100_000),
            alert_email=_email(raw["alertEmail"], "alertEmail"),
            lb_count=lb_count,
            lb_virtual_ip=lb_virtual_ip,
            smoke_test=_bool(raw, "smokeTest"),
            backup_retention_days=_int(raw, "backupRetentionDays", 1, 3650),
            delete_backups_with_stack=_bool(raw, "deleteBackupsWithStack"),
            aws_profile=(aws_profile or "").strip() or None,
        )

    @classmethod
    def from_pulumi_config(cls) -> Settings:
        import pulumi  # imported here so the rest of this module stays usable without Pulumi

        config = pulumi.Config(PROJECT)
        values = {key: config.get(key) for key in project_defaults()}
        aws = pulumi.Config("aws")
        return cls.from_mapping(
            values, stack=pulumi.get_stack(), region=aws.get("region"), aws_profile=aws.get("profile")
        )


def project_defaults() -> dict[str, Any]:
    """The `config:` defaults declared in Pulumi.yaml, keyed by setting name."""
    declared = yaml.safe_load(PULUMI_YAML.read_text())["config"]
    return {key: spec.get("default") for key, spec in declared.items()}


def architecture_of(instance_type: str) -> str:
    family = instance_type.split(".", 1)[0]
    if family in ARM64_FAMILIES:
        return "arm64"
    if family in X86_64_FAMILIES:
        return "x86_64"
    raise KeyError(family)


def subnet_cidrs(vpc_cidr: str, count: int) -> list[str]:
    """Split the VPC into `count` equal public subnets, /24 where the VPC is large enough."""
    vpc = ipaddress.ip_network(vpc_cidr)
    bits_needed = max(0, (count - 1).bit_length())
    new_prefix = max(vpc.prefixlen + bits_needed, 24)
    return [
        str(net) for net, _ in zip(vpc.subnets(new_prefix=new_prefix), range(count), strict=False)
    ]  # the first `count`


class HostKind(StrEnum):
    """What a host is: a load balancer or a web server (its hostname's prefix, its `Role` tag)."""

    LB = "lb"
    WEB = "web"


class DbRole(StrEnum):
    """What a web server's database is: the primary (web-01) or a replica of it."""

    PRIMARY = "primary"
    REPLICA = "replica"


@dataclass(frozen=True)
class HostSlot:
    """Where one instance lives: its kind and number (its hostname), subnet (by index) and fixed
    private address."""

    kind: HostKind
    number: int  # from 1: lb-01, web-01
    subnet_index: int
    private_ip: str

    @property
    def hostname(self) -> str:
        return f"{self.kind}-{self.number:02d}"


def host_layout(
    vpc_cidr: str, az_count: int, web_count: int, lb_count: int = 1
) -> tuple[list[HostSlot], list[HostSlot]]:
    """The load balancers and the web servers, with addresses fixed by the program.

    Fixed addresses (lb-NN at host .5 and web-NN at host 10+NN, each of subnet (NN-1) mod azCount)
    let every host know its peers at first boot: the load balancers their backends and their VRRP
    peer, replicas their primary, host firewalls and certificates their addresses, with no
    dependency on instance creation order. AWS reserves hosts .0-.3 and the last of each subnet.
    """
    subnets = [ipaddress.ip_network(cidr) for cidr in subnet_cidrs(vpc_cidr, az_count)]

    def slot(kind: HostKind, number: int, host: int) -> HostSlot:
        index = (number - 1) % az_count
        return HostSlot(kind, number, index, str(subnets[index][host]))

    lbs = [slot(HostKind.LB, number, 5) for number in range(1, lb_count + 1)]
    web = [slot(HostKind.WEB, number, 10 + number) for number in range(1, web_count + 1)]
    return lbs, web


# --- validators, one per kind of value --------------------------------------------------------------


def _int(raw: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = raw[key]
    try:
        number = int(str(value).strip())
    except ValueError:
        raise SettingsError(f"{PROJECT}:{key} must be a whole number from {low} to {high}, got {value!r}") from None
    if not low <= number <= high:
        raise SettingsError(f"{PROJECT}:{key} must be from {low} to {high}, got {number}")
    return number


def _bool(raw: Mapping[str, Any], key: str) -> bool:
    value = raw[key]
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise SettingsError(f"{PROJECT}:{key} must be true or false, got {value!r}")


def _instance_type(raw: Mapping[str, Any], key: str) -> str:
    value = str(raw[key]).strip()
    family, _, size = value.partition(".")
    if not size:
        raise SettingsError(f"{PROJECT}:{key} must look like FAMILY.SIZE (for example t3.micro), got {value!r}")
    try:
        architecture_of(value)
    except KeyError:
        raise SettingsError(
            f"{PROJECT}:{key} has unknown instance family {family!r}; accepted x86_64 families: "
            f"{', '.join(sorted(X86_64_FAMILIES))}; arm64 families: {', '.join(sorted(ARM64_FAMILIES))}"
        ) from None
    if has_instance_store(value):
        # EC2 cannot recover an instance with instance-store volumes onto new hardware, so the stack's
        # system-status-check alarm (its action: recover) could never act; and the stack keeps nothing
        # on local disks: the same family without `d` does the job.
        plain = family.replace("d", "", 1)
        suggestion = (
            f"; use {plain}.{size} instead" if plain != family and plain in X86_64_FAMILIES | ARM64_FAMILIES else ""
        )
        raise SettingsError(
            f"{PROJECT}:{key} {value} has instance-store volumes: EC2 cannot recover such an instance onto new "
            f"hardware, so the stack's recovery alarm could never act for it, and the stack keeps all its data on "
            f"EBS anyway{suggestion}"
        )
    return value


def _vpc_cidr(value: Any) -> str:
    try:
        network = ipaddress.IPv4Network(str(value).strip(), strict=True)
    except ValueError as error:
        raise SettingsError(
            f"{PROJECT}:vpcCidr must be an IPv4 network such as 10.0.0.0/16, got {value!r} ({error})"
        ) from None
    if not 16 <= network.prefixlen <= 24:
        raise SettingsError(f"{PROJECT}:vpcCidr must have a prefix from /16 to /24 (AWS VPC limits), got {network}")
    if not network.is_private:
        raise SettingsError(f"{PROJECT}:vpcCidr must be a private range (RFC 1918), got {network}")
    return str(network)


def _admin_cidr(value: Any) -> str | None:
    text = str(value or "").strip()
    if not text:
        return None
    try:
        network = ipaddress.IPv4Network(text, strict=False)
    except ValueError as error:
        raise SettingsError(
            f"{PROJECT}:adminCidr must be an IPv4 network such as 203.0.113.7/32, got {text!r} ({error})"
        ) from None
    if network.prefixlen < 8:
        raise SettingsError(
            f"{PROJECT}:adminCidr {network} opens SSH to too much of the internet (0.0.0.0/0 and prefixes "
            "shorter than /8 are refused); use your own address, for example 203.0.113.7/32"
        )
    return str(network)


def _lb_virtual_ip(value: Any, vpc_cidr: str, az_count: int, web_count: int, lb_count: int) -> str | None:
    text = str(value or "").strip()
    if not text:
        return None
    if lb_count < 2:
        raise SettingsError(
            f"{PROJECT}:lbVirtualIp is only used by a load-balancer pair: "
            f"set {PROJECT}:lbCount to 2 or unset lbVirtualIp"
        )
    vpc = ipaddress.IPv4Network(vpc_cidr)
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise SettingsError(
            f"{PROJECT}:lbVirtualIp must be an IPv4 address inside vpcCidr {vpc}, got {text!r}"
        ) from None
    lbs, web = host_layout(vpc_cidr, az_count, web_count, lb_count)
    taken = {slot.private_ip: slot.hostname for slot in lbs + web}
    if address not in vpc or int(address) - int(vpc.network_address) < 4 or address == vpc.broadcast_address:
        raise SettingsError(
            f"{PROJECT}:lbVirtualIp must be a usable address inside vpcCidr {vpc} "
            f"(not its first four or its last), got {address}"
        )
    if str(address) in taken:
        raise SettingsError(
            f"{PROJECT}:lbVirtualIp {address} is {taken[str(address)]}'s address; choose a free one such as {vpc[4]}"
        )
    return str(address)


def _endpoint_url(value: Any, key: str) -> str | None:
    text = str(value or "").strip()
    if not text:
        return None
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise SettingsError(f"{PROJECT}:{key} must be an http(s) URL such as http://10.0.0.1:5000, got {text!r}")
    return text.rstrip("/")


_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _domain(value: Any) -> str | None:
    text = str(value or "").strip().lower().rstrip(".")
    if not text:
        return None
    labels = text.split(".")
    if (
        len(labels) < 2
        or len(text) > 253
        or not all(_DNS_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise SettingsError(f"{PROJECT}:domain must be a DNS name such as www.example.com, got {text!r}")
    return text


def _email(value: Any, key: str) -> str | None:
    text = str(value or "").strip()
    if not text:
        return None
    local, _, host = text.partition("@")
    if not local or not host or " " in text:
        raise SettingsError(f"{PROJECT}:{key} must be an e-mail address, got {text!r}")
    try:
        domain = _domain(host)  # the address's domain must itself be a DNS name
    except SettingsError:
        raise SettingsError(f"{PROJECT}:{key} must be an e-mail address, got {text!r}") from None
    return f"{local}@{domain}"
