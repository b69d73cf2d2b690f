"""EC2 building blocks every instance of the stack shares (helpers, not a component).

The security baseline lives here once, so no instance can be declared without it:
IMDSv2 only (CKV_AWS_79, AWS-0028, FSBP EC2.8), an encrypted gp3 root volume (CKV_AWS_8,
AWS-0131), an instance role (CKV2_AWS_41) and user-data that carries no secret (CKV_AWS_46).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
            aws.ec2.GetAmiFilterArgsDict(name="name", values=[f"debian-12-{DEBIAN_ARCH_NAMES[arch]}-*"]),
            aws.ec2.GetAmiFilterArgsDict(name="architecture", values=[arch]),
            aws.ec2.GetAmiFilterArgsDict(name="virtualization-type", values=["hvm"]),
            aws.ec2.GetAmiFilterArgsDict(name="root-device-type", values=["ebs"]),
        ],
        opts=opts,
    )
    return result.id


@dataclass
class HostProfile:
    """What every instance of one kind (web server, load balancer) shares."""

    ami_id: pulumi.Input[str]
    instance_type: str
    security_group_ids: Sequence[pulumi.Input[str]]
    instance_profile: pulumi.Input[str]
    root_volume_gb: int
    key_name: str | None = None
    # What must exist before an instance of this kind boots: the internet gateway and its routes (its
    # first boot downloads packages and agents), its secrets in SSM and its role.
    boot_after: Sequence[pulumi.Resource] = ()


def hardened_instance(
    name: str,
    profile: HostProfile,
    *,
    subnet_id: pulumi.Input[str],
    private_ip: str,
    user_data_base64: pulumi.Input[str],
    tags: dict[str, str],
    replace_on_user_data_change: bool,
    ipv6_address_count: int | None = None,
    opts: pulumi.ResourceOptions,
) -> aws.ec2.Instance:
    """`replace_on_user_data_change`: replace the instance when its user-data changes (cloud-init
    runs once, so an in-place change would silently never apply). False keeps an instance, and its
    data, across template changes. `opts`: the caller's options (parent, aliases, what else to wait
    for), merged over this function's own (the profile's `boot_after` first in `depends_on`).

    Every instance has a fixed private address, so a replacement deletes the old instance before it
    creates the new one: Pulumi's default (create first) would ask EC2 for an address the old instance
    still holds and fail with InvalidIPAddress.InUse. The policy pack refuses a fixed-address
    instance without it (fixed-address-delete-before-replace)."""
    ignored = ["ami"]  # a newer Debian image must not replace running servers
    if not replace_on_user_data_change:
        # The key pair too: EC2 can change it only by replacing the instance, which would take the
        # data with it (cloud-init installs the key at first boot only, so nothing is lost by ignoring it).
        # And the instance type: changing it stops the instance, and this one holds the primary's data:
        # resized by hand after a switchover, never by a `pulumi up` that stops every web server at once.
        ignored += ["userData", "userDataBase64", "keyName", "instanceType"]
    return aws.ec2.Instance(
        name,
        ami=profile.ami_id,
        instance_type=profile.instance_type,
        subnet_id=subnet_id,
        private_ip=private_ip,
        vpc_security_group_ids=list(profile.security_group_ids),
        iam_instance_profile=profile.instance_profile,
        key_name=profile.key_name,
        ipv6_address_count=ipv6_address_count,
        user_data_base64=user_data_base64,
        user_data_replace_on_change=replace_on_user_data_change,
        # Nested inputs through pulumi-aws's typed dicts: the type checker sees every key (mocks accept any).
        metadata_options=aws.ec2.InstanceMetadataOptionsArgsDict(
            http_endpoint="enabled",
            http_tokens="required",
            http_put_response_hop_limit=1,
        ),
        root_block_device=aws.ec2.InstanceRootBlockDeviceArgsDict(
            volume_type="gp3",
            volume_size=profile.root_volume_gb,
            encrypted=True,
            delete_on_termination=True,
        ),
        monitoring=False,
        tags=tags,
        volume_tags=tags,
        opts=pulumi.ResourceOptions.merge(
            pulumi.ResourceOptions(
                ignore_changes=ignored, delete_before_replace=True, depends_on=list(profile.boot_after)
            ),
            opts,
        ),
    )
