"""EC2 building blocks every instance of the stack shares (helpers, not a component).

The security baseline lives here once, so no instance can be declared without it:
IMDSv2 only (CKV_AWS_79, AWS-0028, FSBP EC2.8), an encrypted gp3 root volume (CKV_AWS_8,
AWS-0131), an instance role (CKV2_AWS_41) and user-data that carries no secret (CKV_AWS_46).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pulumi
import pulumi_aws as aws

DEBIAN_OWNER = "136693071363"  # the Debian cloud team's AWS account
DEBIAN_ARCH_NAMES = {"x86_64": "amd64", "arm64": "arm64"}


def debian_12_ami(arch: str, opts: pulumi.InvokeOptions | None = None) -> pulumi.Output[str]:
    """The newest official Debian 12 image for `arch`. Instances ignore later AMI changes."""
    result = aws.ec2.get_ami_output(
        owners=[DEBIAN_OWNER],
        most_recent=True,
        filters=[
            {"name": "name", "values": [f"debian-12-{DEBIAN_ARCH_NAMES[arch]}-*"]},
            {"name": "architecture", "values": [arch]},
            {"name": "virtualization-type", "values": ["hvm"]},
            {"name": "root-device-type", "values": ["ebs"]},
        ],
        opts=opts,
    )
    return result.id


@dataclass
class InstanceSpec:
    """What differs between the stack's instances; everything else is the shared baseline."""

    ami_id: pulumi.Input[str]
    instance_type: str
    subnet_id: pulumi.Input[str]
    security_group_ids: Sequence[pulumi.Input[str]]
    instance_profile: pulumi.Input[str]
    user_data_base64: pulumi.Input[str]
    root_volume_gb: int
    tags: dict[str, str]
    key_name: str | None = None
    private_ip: pulumi.Input[str] | None = None
    ipv6_address_count: int | None = None
    # Replace the instance when its user-data changes (cloud-init runs once, so an in-place change
    # would silently never apply). False keeps an instance (and its data) across template changes.
    replace_on_user_data_change: bool = True


def hardened_instance(name: str, spec: InstanceSpec, parent: pulumi.Resource) -> aws.ec2.Instance:
    ignored = ["ami"]  # a newer Debian image must not replace running servers
    if not spec.replace_on_user_data_change:
        ignored += ["userData", "userDataBase64"]
    return aws.ec2.Instance(
        name,
        ami=spec.ami_id,
        instance_type=spec.instance_type,
        subnet_id=spec.subnet_id,
        vpc_security_group_ids=list(spec.security_group_ids),
        iam_instance_profile=spec.instance_profile,
        key_name=spec.key_name,
        private_ip=spec.private_ip,
        ipv6_address_count=spec.ipv6_address_count,
        user_data_base64=spec.user_data_base64,
        user_data_replace_on_change=spec.replace_on_user_data_change,
        metadata_options={
            "http_endpoint": "enabled",
            "http_tokens": "required",
            "http_put_response_hop_limit": 1,
        },
        root_block_device={
            "volume_type": "gp3",
            "volume_size": spec.root_volume_gb,
            "encrypted": True,
            "delete_on_termination": True,
        },
        monitoring=False,
        tags=spec.tags,
        volume_tags=spec.tags,
        opts=pulumi.ResourceOptions(parent=parent, ignore_changes=ignored),
    )
