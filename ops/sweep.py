"""scripts/sweep: find what a webinfra stack left behind (after `pulumi destroy`, an aborted `pulumi up`
or a lab), and delete it only when asked.

    scripts/sweep [--stack NAME] [--region R ... | --all-regions] [--delete] [--endpoint-url URL]

Finds, by the tags every resource of the program carries (Project=webinfra, and Stack=NAME when
given): instances, Elastic IPs, volumes, security groups, VPCs (with their subnets, route tables and
internet gateway), SSM parameters, CloudWatch alarms, SNS topics, backup buckets (S3), and (global) IAM
instance profiles and roles; the stack's dashboard by its exact name `webinfra-NAME` when --stack is
given (dashboards carry no tags). Prints a table. Without --delete nothing changes. With --delete it
removes them in dependency order (instances first, IAM last) and reports what it could not delete and
why; exit 1 then. A backup bucket is kept even then (`pulumi destroy` keeps it on purpose: the backups
outlive the stack) unless --delete-backups is given too, which deletes every backup in it, every
version. Untagged resources, and resources of other projects or stacks, are never touched.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload

import boto3
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:  # the stubs (boto3-stubs) are a test tool, not a runtime dependency
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import FilterTypeDef
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_ssm import SSMClient
    from mypy_boto3_ssm.type_defs import ParameterStringFilterTypeDef

PROJECT = "webinfra"
GLOBAL = "global"

# Deletion order: what holds on to something goes before it.
ORDER = [
    "instance",
    "elastic-ip",
    "volume",
    "alarm",
    "dashboard",
    "sns-topic",
    "ssm-parameter",
    "backup-bucket",
    "security-group",
    "vpc",
    "instance-profile",
    "iam-role",
]


class ClientFactory(Protocol):
    """(service, region) -> that service's boto3 client, typed per service."""

    @overload
    def __call__(self, service: Literal["ec2"], region: str) -> EC2Client: ...
    @overload
    def __call__(self, service: Literal["ssm"], region: str) -> SSMClient: ...
    @overload
    def __call__(self, service: Literal["cloudwatch"], region: str) -> CloudWatchClient: ...
    @overload
    def __call__(self, service: Literal["sns"], region: str) -> SNSClient: ...
    @overload
    def __call__(self, service: Literal["iam"], region: str) -> IAMClient: ...
    @overload
    def __call__(self, service: Literal["s3"], region: str) -> S3Client: ...


@dataclass(frozen=True)
class Found:
    kind: str
    region: str
    id: str
    name: str
    stack: str
    note: str = ""


@dataclass(frozen=True)
class Failure:
    found: Found
    reason: str


def _tags(pairs: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in pairs or []}


def _ours(tags: dict[str, str], stack: str | None) -> bool:
    return tags.get("Project") == PROJECT and (stack is None or tags.get("Stack") == stack)


def _ec2_filters(stack: str | None) -> list[FilterTypeDef]:
    filters: list[FilterTypeDef] = [{"Name": "tag:Project", "Values": [PROJECT]}]
    if stack:
        filters.append({"Name": "tag:Stack", "Values": [stack]})
    return filters


# --- finding ------------------------------------------------------------------------------------------------


def find_regional(clients: ClientFactory, region: str, stack: str | None) -> list[Found]:
    ec2 = clients("ec2", region)
    filters = _ec2_filters(stack)
    found: list[Found] = []

    def add(kind, id_, tags, note=""):
        found.append(Found(kind, region, id_, tags.get("Name", ""), tags.get("Stack", "?"), note))

    alive = ["pending", "running", "stopping", "stopped", "shutting-down"]
    for page in ec2.get_paginator("describe_instances").paginate(
        Filters=[*filters, {"Name": "instance-state-name", "Values": alive}]
    ):
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                add("instance", instance["InstanceId"], _tags(instance.get("Tags")), instance["State"]["Name"])
    for address in ec2.describe_addresses(Filters=filters)["Addresses"]:
        note = f"associated with {address['InstanceId']}" if address.get("InstanceId") else "unassociated"
        add("elastic-ip", address["AllocationId"], _tags(address.get("Tags")), f"{address.get('PublicIp', '')} {note}")
    for volumes in ec2.get_paginator("describe_volumes").paginate(Filters=filters):
        for volume in volumes["Volumes"]:
            attached = ", ".join(a["InstanceId"] for a in volume.get("Attachments", []))
            add(
                "volume",
                volume["VolumeId"],
                _tags(volume.get("Tags")),
                f"{volume['State']}" + (f" on {attached}" if attached else ""),
            )
    for groups in ec2.get_paginator("describe_security_groups").paginate(Filters=filters):
        for group in groups["SecurityGroups"]:
            if group["GroupName"] != "default":  # a VPC's default group goes with its VPC
                add("security-group", group["GroupId"], _tags(group.get("Tags")), group["VpcId"])
    for vpc in ec2.describe_vpcs(Filters=filters)["Vpcs"]:
        add("vpc", vpc["VpcId"], _tags(vpc.get("Tags")), vpc.get("CidrBlock", ""))

    ssm = clients("ssm", region)
    parameter_filters: list[ParameterStringFilterTypeDef] = [{"Key": "tag:Project", "Values": [PROJECT]}]
    if stack:
        parameter_filters.append({"Key": "tag:Stack", "Values": [stack]})
    for parameters in ssm.get_paginator("describe_parameters").paginate(ParameterFilters=parameter_filters):
        for parameter in parameters["Parameters"]:
            tags = _tags(ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=parameter["Name"])["TagList"])
            if _ours(tags, stack):
                found.append(
                    Found(
                        "ssm-parameter",
                        region,
                        parameter["Name"],
                        parameter["Name"],
                        tags.get("Stack", "?"),
                        parameter["Type"],
                    )
                )

    cloudwatch = clients("cloudwatch", region)
    for alarms in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=f"{PROJECT}-"):
        for alarm in alarms["MetricAlarms"]:
            tags = _tags(cloudwatch.list_tags_for_resource(ResourceARN=alarm["AlarmArn"])["Tags"])
            if _ours(tags, stack):
                found.append(Found("alarm", region, alarm["AlarmName"], tags.get("Name", ""), tags.get("Stack", "?")))
    if stack:
        for dashboard in cloudwatch.list_dashboards(DashboardNamePrefix=f"{PROJECT}-{stack}")["DashboardEntries"]:
            if dashboard["DashboardName"] == f"{PROJECT}-{stack}":
                found.append(Found("dashboard", region, dashboard["DashboardName"], dashboard["DashboardName"], stack))

    sns = clients("sns", region)
    for topics in sns.get_paginator("list_topics").paginate():
        for topic in topics["Topics"]:
            tags = _tags(sns.list_tags_for_resource(ResourceArn=topic["TopicArn"])["Tags"])
            if _ours(tags, stack):
                found.append(
                    Found("sns-topic", region, topic["TopicArn"], tags.get("Name", ""), tags.get("Stack", "?"))
                )
    found.extend(_backup_buckets(clients("s3", region), region, stack))
    return found


def _backup_buckets(s3: S3Client, region: str, stack: str | None) -> list[Found]:
    """The stack's backup buckets in `region` (S3 lists every region's buckets: each one's location
    decides), with how much they hold."""
    found = []
    names = [
        bucket["Name"]
        for page in s3.get_paginator("list_buckets").paginate(Prefix=f"{PROJECT}-")  # webinfra-STACK-backups-...
        for bucket in page["Buckets"]
    ]
    for name in names:
        try:
            if (s3.get_bucket_location(Bucket=name).get("LocationConstraint") or "us-east-1") != region:
                continue
            tags = _tags(s3.get_bucket_tagging(Bucket=name)["TagSet"])
        except ClientError as error:
            # untagged, or deleted since it was listed: not one to sweep
            if error.response["Error"].get("Code") not in ("NoSuchTagSet", "NoSuchBucket"):
                raise
            continue
        if _ours(tags, stack) and tags.get("Role") == "backups":
            versions = sum(
                len(page.get("Versions", [])) + len(page.get("DeleteMarkers", []))
                for page in s3.get_paginator("list_object_versions").paginate(Bucket=name)
            )
            note = f"{versions} object versions; deleted only with --delete-backups"
            found.append(Found("backup-bucket", region, name, tags.get("Name", ""), tags.get("Stack", "?"), note))
    return found


def find_global(clients: ClientFactory, stack: str | None) -> list[Found]:
    iam = clients("iam", "us-east-1")
    found: list[Found] = []
    for page in iam.get_paginator("list_roles").paginate():
        for role in page["Roles"]:
            tags = _tags(iam.get_role(RoleName=role["RoleName"])["Role"].get("Tags"))
            if _ours(tags, stack):
                found.append(Found("iam-role", GLOBAL, role["RoleName"], tags.get("Name", ""), tags.get("Stack", "?")))
    for profiles in iam.get_paginator("list_instance_profiles").paginate():
        for profile in profiles["InstanceProfiles"]:
            described = iam.get_instance_profile(InstanceProfileName=profile["InstanceProfileName"])
            tags = _tags(described["InstanceProfile"].get("Tags"))
            if _ours(tags, stack):
                roles = ", ".join(r["RoleName"] for r in profile.get("Roles", []))
                found.append(
                    Found(
                        "instance-profile",
                        GLOBAL,
                        profile["InstanceProfileName"],
                        tags.get("Name", ""),
                        tags.get("Stack", "?"),
                        f"role {roles}" if roles else "no role",
                    )
                )
    return found


def find(clients: ClientFactory, regions: list[str], stack: str | None) -> list[Found]:
    found = [item for region in regions for item in find_regional(clients, region, stack)]
    return found + find_global(clients, stack)


# --- deleting -------------------------------------------------------------------------------------------------


def _delete_one(clients: ClientFactory, item: Found, wait_seconds: float) -> None:
    if item.kind == "instance":
        ec2 = clients("ec2", item.region)
        ec2.terminate_instances(InstanceIds=[item.id])
        ec2.get_waiter("instance_terminated").wait(
            InstanceIds=[item.id], WaiterConfig={"Delay": 5, "MaxAttempts": max(1, int(wait_seconds // 5))}
        )
    elif item.kind == "elastic-ip":
        ec2 = clients("ec2", item.region)
        (address,) = ec2.describe_addresses(AllocationIds=[item.id])["Addresses"]
        if address.get("AssociationId"):
            ec2.disassociate_address(AssociationId=address["AssociationId"])
        ec2.release_address(AllocationId=item.id)
    elif item.kind == "volume":
        clients("ec2", item.region).delete_volume(VolumeId=item.id)
    elif item.kind == "alarm":
        clients("cloudwatch", item.region).delete_alarms(AlarmNames=[item.id])
    elif item.kind == "dashboard":
        clients("cloudwatch", item.region).delete_dashboards(DashboardNames=[item.id])
    elif item.kind == "sns-topic":
        clients("sns", item.region).delete_topic(TopicArn=item.id)
    elif item.kind == "ssm-parameter":
        clients("ssm", item.region).delete_parameter(Name=item.id)
    elif item.kind == "backup-bucket":
        _delete_bucket(clients("s3", item.region), item.id)
    elif item.kind == "security-group":
        clients("ec2", item.region).delete_security_group(GroupId=item.id)
    elif item.kind == "vpc":
        _delete_vpc(clients("ec2", item.region), item.id)
    elif item.kind == "instance-profile":
        iam = clients("iam", GLOBAL)
        profile = iam.get_instance_profile(InstanceProfileName=item.id)["InstanceProfile"]
        for role in profile.get("Roles", []):
            iam.remove_role_from_instance_profile(InstanceProfileName=item.id, RoleName=role["RoleName"])
        iam.delete_instance_profile(InstanceProfileName=item.id)
    elif item.kind == "iam-role":
        iam = clients("iam", GLOBAL)
        for profile in iam.list_instance_profiles_for_role(RoleName=item.id)["InstanceProfiles"]:
            iam.remove_role_from_instance_profile(InstanceProfileName=profile["InstanceProfileName"], RoleName=item.id)
        for policy_name in iam.list_role_policies(RoleName=item.id)["PolicyNames"]:
            iam.delete_role_policy(RoleName=item.id, PolicyName=policy_name)
        for attached in iam.list_attached_role_policies(RoleName=item.id)["AttachedPolicies"]:
            iam.detach_role_policy(RoleName=item.id, PolicyArn=attached["PolicyArn"])
        iam.delete_role(RoleName=item.id)
    else:
        raise ValueError(f"unknown kind {item.kind}")


def _delete_bucket(s3: S3Client, name: str) -> None:
    """A versioned bucket is deleted empty: every version and delete marker first, 1,000 at a time."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=name):
        entries = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
        if entries:
            errors = s3.delete_objects(
                Bucket=name,
                Delete={"Objects": [{"Key": e["Key"], "VersionId": e["VersionId"]} for e in entries], "Quiet": True},
            ).get("Errors", [])
            if errors:  # the real reason, not the BucketNotEmpty it would lead to
                first = errors[0]
                raise ClientError(
                    {
                        "Error": {
                            "Code": first.get("Code", ""),
                            "Message": f"{first.get('Key')}: {first.get('Message')}",
                        }
                    },
                    "DeleteObjects",
                )
    s3.delete_bucket(Bucket=name)


def _delete_vpc(ec2: EC2Client, vpc_id: str) -> None:
    """A VPC of ours goes with what lives only inside it: its subnets, route tables and gateway."""
    by_vpc: list[FilterTypeDef] = [{"Name": "vpc-id", "Values": [vpc_id]}]
    for subnet in ec2.describe_subnets(Filters=by_vpc)["Subnets"]:
        ec2.delete_subnet(SubnetId=subnet["SubnetId"])
    for table in ec2.describe_route_tables(Filters=by_vpc)["RouteTables"]:
        if not any(a.get("Main") for a in table.get("Associations", [])):
            for association in table.get("Associations", []):
                ec2.disassociate_route_table(AssociationId=association["RouteTableAssociationId"])
            ec2.delete_route_table(RouteTableId=table["RouteTableId"])
    attached: list[FilterTypeDef] = [{"Name": "attachment.vpc-id", "Values": [vpc_id]}]
    for gateway in ec2.describe_internet_gateways(Filters=attached)["InternetGateways"]:
        ec2.detach_internet_gateway(InternetGatewayId=gateway["InternetGatewayId"], VpcId=vpc_id)
        ec2.delete_internet_gateway(InternetGatewayId=gateway["InternetGatewayId"])
    ec2.delete_vpc(VpcId=vpc_id)


def _revoke_cross_references(clients: ClientFactory, groups: list[Found]) -> None:
    """Our groups name each other (LB ↔ web): empty them first so each can be deleted."""
    for item in groups:
        ec2 = clients("ec2", item.region)
        (group,) = ec2.describe_security_groups(GroupIds=[item.id])["SecurityGroups"]
        if group.get("IpPermissions"):
            ec2.revoke_security_group_ingress(GroupId=item.id, IpPermissions=group["IpPermissions"])
        if group.get("IpPermissionsEgress"):
            ec2.revoke_security_group_egress(GroupId=item.id, IpPermissions=group["IpPermissionsEgress"])


def delete(clients: ClientFactory, found: list[Found], *, wait_seconds: float = 600, out=sys.stdout) -> list[Failure]:
    failures: list[Failure] = []
    items = sorted(found, key=lambda f: ORDER.index(f.kind))
    groups = [f for f in items if f.kind == "security-group"]
    try:
        _revoke_cross_references(clients, groups)
    except (ClientError, BotoCoreError) as error:
        print(f"  (could not empty every security group first: {error})", file=out)
    terminated = {f.id for f in items if f.kind == "instance"}
    for item in items:
        if item.kind == "volume" and any(i in item.note for i in terminated):
            continue  # deleted on termination with its instance
        try:
            _delete_one(clients, item, wait_seconds)
            print(f"  deleted {item.kind} {item.id} ({item.region})", file=out, flush=True)
        except (ClientError, BotoCoreError) as error:
            reason = (
                error.response["Error"].get("Code", "") + ": " + error.response["Error"].get("Message", "")
                if isinstance(error, ClientError)
                else str(error)
            )
            failures.append(Failure(item, reason))
            print(f"  could not delete {item.kind} {item.id} ({item.region}): {reason}", file=out, flush=True)
    return failures


# --- output and entry point -------------------------------------------------------------------------------


def table(found: list[Found]) -> str:
    rows = [("REGION", "KIND", "ID", "NAME", "STACK", "NOTE")] + [
        (f.region, f.kind, f.id, f.name, f.stack, f.note)
        for f in sorted(found, key=lambda f: (ORDER.index(f.kind), f.region, f.id))
    ]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def client_factory(endpoint_url: str | None = None) -> ClientFactory:
    session = boto3.session.Session()

    def make(service: Literal["ec2", "ssm", "cloudwatch", "sns", "iam", "s3"], region: str) -> Any:
        return session.client(
            service, region_name="us-east-1" if region == GLOBAL else region, endpoint_url=endpoint_url
        )

    return make


def main(argv: list[str], clients: ClientFactory | None = None, out=sys.stdout) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/sweep",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--stack", help="only this stack's resources (default: every webinfra stack)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--region", action="append", help="a region to search (repeatable; default: the configured one)")
    where.add_argument("--all-regions", action="store_true", help="every region the account has enabled")
    parser.add_argument("--delete", action="store_true", help="delete what was found (default: only list it)")
    parser.add_argument(
        "--delete-backups",
        action="store_true",
        help="with --delete, also delete backup buckets and every backup in them (default: keep them)",
    )
    parser.add_argument(
        "--wait", type=float, default=600, help="seconds to wait for instances to terminate (default 600)"
    )
    parser.add_argument("--endpoint-url", help="an AWS API stand-in (the lab's moto server)")
    args = parser.parse_args(argv)
    if args.delete_backups and not args.delete:
        parser.error("--delete-backups deletes only with --delete")
    if args.delete_backups and not args.stack:
        parser.error("--delete-backups needs --stack: one stack's backups at a time, never every stack's")
    clients = clients or client_factory(args.endpoint_url)
    try:
        if args.all_regions:
            regions = sorted(r["RegionName"] for r in clients("ec2", "us-east-1").describe_regions()["Regions"])
        else:
            regions = args.region or [boto3.session.Session().region_name or ""]
            if not all(regions):
                parser.error("no region configured: give --region R or --all-regions")
        scope = f"stack {args.stack}" if args.stack else "every webinfra stack"
        print(f"sweep: {scope} in {', '.join(regions)} (and IAM)", file=out, flush=True)
        found = find(clients, regions, args.stack)
    except (ClientError, BotoCoreError) as error:
        print(f"sweep: could not list resources: {error}", file=out)
        return 2
    if not found:
        print("nothing left behind", file=out)
        return 0
    print(table(found), file=out)
    if not args.delete:
        print(f"\n{len(found)} resources found; nothing deleted (dry run). Delete them with --delete.", file=out)
        return 0
    kept = [f for f in found if f.kind == "backup-bucket" and not args.delete_backups]
    found = [f for f in found if f not in kept]
    for bucket in kept:
        print(f"\nkept backup bucket {bucket.id} ({bucket.region}): add --delete-backups to delete it", file=out)
    if not found:
        return 0
    print(f"\ndeleting {len(found)} resources, in dependency order:", file=out, flush=True)
    began = time.monotonic()
    failures = delete(clients, found, wait_seconds=args.wait, out=out)
    print(f"\ndeleted {len(found) - len(failures)} of {len(found)} in {time.monotonic() - began:.0f} s", file=out)
    if failures:
        print("not deleted:", file=out)
        for failure in failures:
            print(f"  {failure.found.kind} {failure.found.id} ({failure.found.region}): {failure.reason}", file=out)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
