"""webinfra's security baseline as Pulumi resource and stack validation policies.

Each policy names the scanner rules it mirrors (Checkov CKV_*, Trivy AWS-*, AWS Security Hub FSBP
EC2.*), since no scanner reads a Pulumi Python program. Properties are the engine's (camelCase),
as `pulumi preview` passes them.
"""

from __future__ import annotations

import base64
import gzip
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pulumi_policy import ResourceValidationArgs, ResourceValidationPolicy, StackValidationArgs, StackValidationPolicy

WORLD = ("0.0.0.0/0", "::/0")
INSTANCE = "aws:ec2/instance:Instance"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
DEFAULT_SECURITY_GROUP = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
LEGACY_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS_RULE = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
SENSITIVE_PORTS = {22: "SSH", 3306: "MySQL"}
PUBLIC_PORTS = {80, 443}

Report = Callable[[str, Any], None]


# --- rules as data: every way a security-group rule can be declared -------------------------------------


def _rules(resource_type: str, props: Mapping[str, Any]) -> Iterable[dict]:
    """Normalise rules to {direction, protocol, from, to, cidrs, description}."""
    if resource_type in (INGRESS_RULE, EGRESS_RULE):
        yield {
            "direction": "ingress" if resource_type == INGRESS_RULE else "egress",
            "protocol": str(props.get("ipProtocol", "")),
            "from": props.get("fromPort"),
            "to": props.get("toPort"),
            "cidrs": [c for c in (props.get("cidrIpv4"), props.get("cidrIpv6")) if c],
            "description": props.get("description"),
        }
    elif resource_type == LEGACY_RULE:
        yield {
            "direction": props.get("type"),
            "protocol": str(props.get("protocol", "")),
            "from": props.get("fromPort"),
            "to": props.get("toPort"),
            "cidrs": list(props.get("cidrBlocks") or []) + list(props.get("ipv6CidrBlocks") or []),
            "description": props.get("description"),
        }
    elif resource_type in (SECURITY_GROUP, DEFAULT_SECURITY_GROUP):
        for direction in ("ingress", "egress"):
            for rule in props.get(direction) or []:
                yield {
                    "direction": direction,
                    "protocol": str(rule.get("protocol", "")),
                    "from": rule.get("fromPort"),
                    "to": rule.get("toPort"),
                    "cidrs": list(rule.get("cidrBlocks") or []) + list(rule.get("ipv6CidrBlocks") or []),
                    "description": rule.get("description"),
                }


def _all_ports(rule: dict) -> bool:
    return (
        rule["protocol"] in ("-1", "all")
        or rule["from"] in (None, -1)
        or (rule["from"] == 0 and rule["to"] in (0, 65535))
    )


def _covers(rule: dict, port: int) -> bool:
    return _all_ports(rule) or (
        rule["from"] is not None and rule["from"] <= port <= (rule["to"] if rule["to"] is not None else rule["from"])
    )


def _to_world(rule: dict) -> bool:
    return any(c in WORLD for c in rule["cidrs"])


# --- validators ------------------------------------------------------------------------------------------


def imdsv2_required(args: ResourceValidationArgs, report: Report) -> None:
    if args.resource_type == INSTANCE:
        tokens = (args.props.get("metadataOptions") or {}).get("httpTokens")
        if tokens != "required":
            report(
                f"instance {args.name}: IMDSv2 must be required (metadataOptions.httpTokens = required), "
                f"got {tokens!r}",
                None,
            )


def encrypted_volumes(args: ResourceValidationArgs, report: Report) -> None:
    if args.resource_type == INSTANCE:
        root = args.props.get("rootBlockDevice") or {}
        if root.get("encrypted") is not True:
            report(f"instance {args.name}: the root volume must be encrypted (rootBlockDevice.encrypted = true)", None)
        for device in args.props.get("ebsBlockDevices") or []:
            if device.get("encrypted") is not True:
                report(f"instance {args.name}: EBS volume {device.get('deviceName')} must be encrypted", None)
    elif args.resource_type == "aws:ebs/volume:Volume" and args.props.get("encrypted") is not True:
        report(f"volume {args.name} must be encrypted", None)


def no_world_on_sensitive_ports(args: ResourceValidationArgs, report: Report) -> None:
    for rule in _rules(args.resource_type, args.props):
        if rule["direction"] == "ingress" and _to_world(rule):
            for port, label in SENSITIVE_PORTS.items():
                if _covers(rule, port):
                    report(f"{args.name}: {label} (port {port}) open to {rule['cidrs']}", None)


def only_http_https_open_to_world(args: ResourceValidationArgs, report: Report) -> None:
    for rule in _rules(args.resource_type, args.props):
        public_only = not _all_ports(rule) and rule["from"] == rule["to"] and rule["from"] in PUBLIC_PORTS
        if rule["direction"] == "ingress" and _to_world(rule) and not public_only:
            report(
                f"{args.name}: only 80 and 443 may be open to the world, "
                f"this opens {rule['from']}-{rule['to']}/{rule['protocol']}",
                None,
            )


def restricted_egress(args: ResourceValidationArgs, report: Report) -> None:
    for rule in _rules(args.resource_type, args.props):
        public_only = not _all_ports(rule) and rule["from"] == rule["to"] and rule["from"] in PUBLIC_PORTS
        if rule["direction"] == "egress" and _to_world(rule) and not public_only:
            report(
                f"{args.name}: egress to the world only on 80/443, "
                f"this allows {rule['from']}-{rule['to']}/{rule['protocol']}",
                None,
            )


def default_security_group_closed(args: ResourceValidationArgs, report: Report) -> None:
    if args.resource_type == DEFAULT_SECURITY_GROUP and (args.props.get("ingress") or args.props.get("egress")):
        report(f"{args.name}: the VPC's default security group must have no rules", None)


def rules_have_descriptions(args: ResourceValidationArgs, report: Report) -> None:
    if args.resource_type == SECURITY_GROUP and not args.props.get("description"):
        report(f"security group {args.name} has no description", None)
    for rule in _rules(args.resource_type, args.props):
        if args.resource_type != DEFAULT_SECURITY_GROUP and not rule["description"]:
            report(f"{args.name}: every security-group rule needs a description", None)


def instance_role_attached(args: ResourceValidationArgs, report: Report) -> None:
    if args.resource_type == INSTANCE and not args.props.get("iamInstanceProfile"):
        report(f"instance {args.name} has no instance profile (IAM role)", None)


_SECRET_PATTERNS = [
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"(?i)aws_secret_access_key\s*[=:]"), "an AWS secret key"),
    # KEY=value or key: value where the key names a secret and the value is not a path or a name
    (
        re.compile(r"(?im)^\s*[\w.-]*(password|passwd|secret|token)[\w.-]*\s*[=:]\s*['\"]?(?![/$@{])[^\s'\"]{8,}"),
        "a password or token",
    ),
    (re.compile(r"(?i)identified\s+by\s+'[^'\s,)]{4,}'"), "a password in SQL"),
]


def user_data_text(props: Mapping[str, Any]) -> str:
    text = props.get("userData") or ""
    encoded = props.get("userDataBase64")
    if encoded:
        raw = base64.b64decode(encoded)
        text += (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode(errors="replace")
    return text


def no_secrets_in_user_data(args: ResourceValidationArgs, report: Report) -> None:
    if args.resource_type not in (INSTANCE, "aws:ec2/launchTemplate:LaunchTemplate"):
        return
    text = user_data_text(args.props)
    for pattern, what in _SECRET_PATTERNS:
        match = pattern.search(text)
        if match:
            report(
                f"instance {args.name}: user-data contains {what} ({match.group(0)[:24]}…); pass secrets through SSM",
                None,
            )


def fixed_address_delete_before_replace(args: ResourceValidationArgs, report: Report) -> None:
    """An instance that asks for a fixed private address cannot be created while its predecessor still
    holds it: Pulumi's default replacement (create, then delete) fails with InvalidIPAddress.InUse."""
    fixed = args.props.get("privateIp") or args.props.get("secondaryPrivateIps") or args.props.get("ipv6Addresses")
    if args.resource_type == INSTANCE and fixed and not (args.opts and args.opts.delete_before_replace):
        report(
            f"instance {args.name} has a fixed private address ({fixed}) but is replaced create-before-delete: "
            "set ResourceOptions(delete_before_replace=True), "
            "or its next replacement fails with InvalidIPAddress.InUse",
            None,
        )


def world_ports_only_on_the_load_balancer(args: StackValidationArgs, report: Report) -> None:
    """Ingress from the world is allowed only on security groups used by instances tagged Role=lb."""
    groups_by_role: dict[str | None, set[str]] = {}
    for resource in args.resources:
        if resource.resource_type == INSTANCE:
            # (an untagged instance's role still counts, and sorts among the others in the report)
            role = (resource.props.get("tags") or {}).get("Role") or "(no Role tag)"
            for group in resource.props.get("vpcSecurityGroupIds") or []:
                groups_by_role.setdefault(group, set()).add(role)
    for resource in args.resources:
        if resource.resource_type == INGRESS_RULE:
            rule = next(iter(_rules(resource.resource_type, resource.props)))
            roles = groups_by_role.get(resource.props.get("securityGroupId"), set())
            if _to_world(rule) and roles and roles != {"lb"}:
                report(
                    f"{resource.name}: opens {rule['from']} to the world on a group of {sorted(roles)} instances",
                    resource.urn,
                )


def _resource_policy(name: str, description: str, validate) -> ResourceValidationPolicy:
    return ResourceValidationPolicy(name=name, description=description, validate=validate)


POLICIES = [
    _resource_policy(
        "imdsv2-required", "IMDSv2 required on every instance (CKV_AWS_79, AWS-0028, FSBP EC2.8)", imdsv2_required
    ),
    _resource_policy("encrypted-volumes", "Root and EBS volumes encrypted (CKV_AWS_8, AWS-0131)", encrypted_volumes),
    _resource_policy(
        "no-world-ssh-mysql",
        "No 0.0.0.0/0 or ::/0 on 22 or 3306 (CKV_AWS_24, AWS-0107, FSBP EC2.13, EC2.19)",
        no_world_on_sensitive_ports,
    ),
    _resource_policy(
        "only-http-https-public", "Only 80/443 open to the world (FSBP EC2.18)", only_http_https_open_to_world
    ),
    _resource_policy("restricted-egress", "Egress to the world only on 80/443 (CKV_AWS_382)", restricted_egress),
    _resource_policy(
        "default-sg-closed", "The VPC's default security group has no rules (FSBP EC2.2)", default_security_group_closed
    ),
    _resource_policy(
        "rule-descriptions", "Every security group and rule has a description (CKV_AWS_23)", rules_have_descriptions
    ),
    _resource_policy(
        "no-secrets-in-user-data", "No secrets in user-data (CKV_AWS_46, AWS-0029)", no_secrets_in_user_data
    ),
    _resource_policy("instance-role-attached", "Every instance has an IAM role (CKV2_AWS_41)", instance_role_attached),
    _resource_policy(
        "fixed-address-delete-before-replace",
        "An instance with a fixed private address is replaced delete-before-replace (WEBINFRA-R1: EC2 "
        "InvalidIPAddress.InUse otherwise)",
        fixed_address_delete_before_replace,
    ),
    StackValidationPolicy(
        name="public-ports-on-lb-only",
        description="Ingress from the world only on the load balancer's security group (FSBP EC2.18)",
        validate=world_ports_only_on_the_load_balancer,
    ),
]
