"""scripts/sweep against moto: a stack's leftovers are found and removed in dependency order; untagged
and other-project (or other-stack) resources are never touched; a dry run changes nothing."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import boto3
import pytest
from botocore.exceptions import ClientError

from ops import sweep
from tests.helpers import MOTO_REGION

REGION = MOTO_REGION  # the fixture mocked_aws (tests/conftest.py) sets it
ASSUME = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
)


@pytest.fixture
def aws(mocked_aws):
    return sweep.client_factory()


def tags(project="webinfra", stack="dev", name="x", **extra):
    pairs = {"Name": name, **({"Project": project} if project else {}), **({"Stack": stack} if stack else {}), **extra}
    return [{"Key": k, "Value": v} for k, v in pairs.items()]


def spec(kind, **kwargs):
    return [{"ResourceType": kind, "Tags": tags(**kwargs)}]


def leave_behind(stack="dev", project="webinfra", region=REGION, prefix=""):
    """What `pulumi up` of the program makes, as tagged resources (a subset of each kind)."""
    ec2 = boto3.client("ec2", region_name=region)
    t = {"stack": stack, "project": project}
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16", TagSpecifications=spec("vpc", name="net-vpc", **t))["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24", TagSpecifications=spec("subnet", **t))["Subnet"][
        "SubnetId"
    ]
    gateway = ec2.create_internet_gateway(TagSpecifications=spec("internet-gateway", **t))["InternetGateway"][
        "InternetGatewayId"
    ]
    ec2.attach_internet_gateway(InternetGatewayId=gateway, VpcId=vpc)
    table = ec2.create_route_table(VpcId=vpc, TagSpecifications=spec("route-table", **t))["RouteTable"]["RouteTableId"]
    ec2.associate_route_table(RouteTableId=table, SubnetId=subnet)
    lb_sg = ec2.create_security_group(
        GroupName=f"{prefix}lb", Description="lb", VpcId=vpc, TagSpecifications=spec("security-group", **t)
    )["GroupId"]
    web_sg = ec2.create_security_group(
        GroupName=f"{prefix}web", Description="web", VpcId=vpc, TagSpecifications=spec("security-group", **t)
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=web_sg,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "UserIdGroupPairs": [{"GroupId": lb_sg}]}],
    )
    ec2.authorize_security_group_egress(
        GroupId=lb_sg,
        IpPermissions=[{"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "UserIdGroupPairs": [{"GroupId": web_sg}]}],
    )
    instance = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        SecurityGroupIds=[lb_sg],
        TagSpecifications=spec("instance", name="lb-01", **t),
    )["Instances"][0]["InstanceId"]
    address = ec2.allocate_address(Domain="vpc", TagSpecifications=spec("elastic-ip", **t))["AllocationId"]
    ec2.associate_address(AllocationId=address, InstanceId=instance)
    volume = ec2.create_volume(AvailabilityZone=f"{region}a", Size=8, TagSpecifications=spec("volume", **t))["VolumeId"]

    ssm = boto3.client("ssm", region_name=region)
    ssm.put_parameter(Name=f"/{project}/{stack}/db/app-password", Value="s3cret", Type="SecureString", Tags=tags(**t))
    cloudwatch = boto3.client("cloudwatch", region_name=region)
    cloudwatch.put_metric_alarm(
        AlarmName=f"webinfra-{stack}-cpu",
        MetricName="CPUUtilization",
        Namespace="AWS/EC2",
        Statistic="Average",
        Period=60,
        EvaluationPeriods=1,
        Threshold=80,
        ComparisonOperator="GreaterThanThreshold",
        Tags=tags(**t),
    )
    cloudwatch.put_dashboard(DashboardName=f"{project}-{stack}", DashboardBody=json.dumps({"widgets": []}))
    topic = boto3.client("sns", region_name=region).create_topic(Name=f"{prefix}alerts-{stack}", Tags=tags(**t))[
        "TopicArn"
    ]
    iam = boto3.client("iam", region_name="us-east-1")
    role = f"{prefix}{stack}-lb-host-role"
    iam.create_role(RoleName=role, AssumeRolePolicyDocument=ASSUME, Tags=tags(**t))
    iam.put_role_policy(
        RoleName=role,
        PolicyName="inline",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "*"}]}
        ),
    )
    profile = f"{prefix}{stack}-lb-host-profile"
    iam.create_instance_profile(InstanceProfileName=profile, Tags=tags(**t))
    iam.add_role_to_instance_profile(InstanceProfileName=profile, RoleName=role)
    bucket = f"{project}-{stack}-backups-{region}"
    s3 = boto3.client("s3", region_name=region)
    if region == "us-east-1":  # S3 refuses us-east-1 as a LocationConstraint
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tags(Role="backups", **t)})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for body in (b"full backup", b"overwritten"):  # two versions of one object
        s3.put_object(Bucket=bucket, Key=f"{stack}/full/1.xbstream", Body=body)
    s3.delete_object(Bucket=bucket, Key=f"{stack}/full/1.xbstream")  # and a delete marker
    return {
        "backup-bucket": bucket,
        "vpc": vpc,
        "security-group": {lb_sg, web_sg},
        "instance": instance,
        "elastic-ip": address,
        "volume": volume,
        "ssm-parameter": f"/{project}/{stack}/db/app-password",
        "alarm": f"webinfra-{stack}-cpu",
        "sns-topic": topic,
        "iam-role": role,
        "instance-profile": profile,
        "dashboard": f"{project}-{stack}",
    }


def not_ours(region=REGION):
    """Things the sweep must never touch: untagged, though named like ours."""
    ec2 = boto3.client("ec2", region_name=region)
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    group = ec2.create_security_group(GroupName="webinfra-lookalike", Description="untagged", VpcId=vpc)["GroupId"]
    boto3.client("ssm", region_name=region).put_parameter(Name="/webinfra/dev/untagged", Value="keep", Type="String")
    boto3.client("iam", region_name="us-east-1").create_role(
        RoleName="dev-lb-host-role-untagged", AssumeRolePolicyDocument=ASSUME
    )
    s3 = boto3.client("s3", region_name=region)
    s3.create_bucket(Bucket="webinfra-lookalike", CreateBucketConfiguration={"LocationConstraint": region})
    return {"vpc": vpc, "security-group": group, "bucket": "webinfra-lookalike"}


def inventory(region=REGION) -> dict[str, set]:
    ec2 = boto3.client("ec2", region_name=region)
    return {
        "vpcs": {v["VpcId"] for v in ec2.describe_vpcs()["Vpcs"]},
        "groups": {g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]},
        "instances": {
            i["InstanceId"]
            for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"]
            if i["State"]["Name"] != "terminated"
        },
        "addresses": {a["AllocationId"] for a in ec2.describe_addresses()["Addresses"]},
        "volumes": {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]},
        "parameters": {p["Name"] for p in boto3.client("ssm", region_name=region).describe_parameters()["Parameters"]},
        "alarms": {
            a["AlarmName"] for a in boto3.client("cloudwatch", region_name=region).describe_alarms()["MetricAlarms"]
        },
        "topics": {t["TopicArn"] for t in boto3.client("sns", region_name=region).list_topics()["Topics"]},
        "roles": {r["RoleName"] for r in boto3.client("iam", region_name="us-east-1").list_roles()["Roles"]},
        "profiles": {
            p["InstanceProfileName"]
            for p in boto3.client("iam", region_name="us-east-1").list_instance_profiles()["InstanceProfiles"]
        },
        "buckets": {b["Name"] for b in boto3.client("s3", region_name=region).list_buckets()["Buckets"]},
    }


def run(argv, clients) -> tuple[int, str]:
    out = io.StringIO()
    return sweep.main(argv, clients=clients, out=out), out.getvalue()


def test_finds_every_kind_the_stack_leaves_and_a_dry_run_changes_nothing(aws):
    ours = leave_behind()
    others = not_ours()
    leave_behind(stack="prod", prefix="prod-")  # another stack of the project
    before = inventory()
    code, out = run(["--stack", "dev", "--region", REGION], aws)
    assert code == 0 and "nothing deleted (dry run)" in out, out
    assert inventory() == before
    found = {(f.kind, f.id) for f in sweep.find(aws, [REGION], "dev")}
    expected = {(kind, value) for kind, value in ours.items() if kind != "security-group"} | {
        ("security-group", g) for g in ours["security-group"]
    }
    assert found == expected
    for kind in sweep.ORDER:
        assert f" {kind} " in out, f"{kind} missing from the table:\n{out}"
    assert others["vpc"] not in out and others["security-group"] not in out and "untagged" not in out
    assert "prod" not in out


def test_delete_removes_the_stacks_leftovers_in_order_and_nothing_else(aws):
    ours = leave_behind()
    others = not_ours()
    prod = leave_behind(stack="prod", prefix="prod-")
    code, out = run(["--stack", "dev", "--region", REGION, "--delete", "--wait", "30"], aws)
    assert code == 0, out
    after = inventory()
    assert ours["vpc"] not in after["vpcs"] and not ours["security-group"] & after["groups"]
    assert ours["instance"] not in after["instances"] and ours["elastic-ip"] not in after["addresses"]
    assert ours["volume"] not in after["volumes"] and ours["ssm-parameter"] not in after["parameters"]
    assert ours["alarm"] not in after["alarms"] and ours["sns-topic"] not in after["topics"]
    assert ours["iam-role"] not in after["roles"] and ours["instance-profile"] not in after["profiles"]
    # never touched: untagged lookalikes and the other stack
    assert others["vpc"] in after["vpcs"] and others["security-group"] in after["groups"]
    assert "/webinfra/dev/untagged" in after["parameters"] and "dev-lb-host-role-untagged" in after["roles"]
    assert (
        prod["vpc"] in after["vpcs"] and prod["instance"] in after["instances"] and prod["iam-role"] in after["roles"]
    )
    assert others["bucket"] in after["buckets"] and prod["backup-bucket"] in after["buckets"]
    # dependency order: instances first, the VPC after its groups, IAM last
    deleted = [line.split()[1] for line in out.splitlines() if line.startswith("  deleted ")]
    assert (
        deleted.index("instance")
        < deleted.index("elastic-ip")
        < deleted.index("security-group")
        < deleted.index("vpc")
        < deleted.index("iam-role")
    )
    # the backups outlive the stack unless asked for by name
    assert ours["backup-bucket"] in after["buckets"]
    assert f"kept backup bucket {ours['backup-bucket']} ({REGION}): add --delete-backups" in out
    assert [(f.kind, f.id) for f in sweep.find(aws, [REGION], "dev")] == [("backup-bucket", ours["backup-bucket"])]
    code, out = run(["--stack", "dev", "--region", REGION, "--delete", "--delete-backups"], aws)
    assert code == 0 and f"deleted backup-bucket {ours['backup-bucket']}" in out, out
    assert ours["backup-bucket"] not in inventory()["buckets"] and prod["backup-bucket"] in inventory()["buckets"]
    assert sweep.find(aws, [REGION], "dev") == []


def test_without_a_stack_every_webinfra_stack_is_swept_in_every_region(aws):
    leave_behind()
    leave_behind(stack="prod", prefix="prod-", region="us-west-2")
    others = not_ours()
    code, out = run(["--all-regions"], aws)
    assert code == 0 and "us-west-2" in out and REGION in out and "dev" in out and "prod" in out, out
    code, out = run(["--all-regions", "--delete", "--wait", "30"], aws)
    assert code == 0, out
    for stack in ("dev", "prod"):  # backups: one stack at a time, by name
        code, out = run(["--all-regions", "--stack", stack, "--delete", "--delete-backups"], aws)
        assert code == 0, out
    assert sweep.find(aws, [REGION, "us-west-2"], None) == []
    assert others["vpc"] in inventory()["vpcs"]


def test_what_cannot_be_deleted_is_reported_with_the_reason_and_the_rest_still_goes(aws, monkeypatch):
    ours = leave_behind()
    real = sweep._delete_one

    def refuse_the_topic(clients, item, wait):
        if item.kind == "sns-topic":
            raise ClientError(
                {"Error": {"Code": "AuthorizationError", "Message": "not allowed to delete this topic"}}, "DeleteTopic"
            )
        return real(clients, item, wait)

    monkeypatch.setattr(sweep, "_delete_one", refuse_the_topic)
    code, out = run(["--stack", "dev", "--region", REGION, "--delete", "--delete-backups", "--wait", "30"], aws)
    assert code == 1
    assert (
        f"sns-topic {ours['sns-topic']} ({REGION}): AuthorizationError: not allowed to delete this topic"
        in out.split("not deleted:")[1]
    )
    remaining = sweep.find(aws, [REGION], "dev")
    assert [(f.kind, f.id) for f in remaining] == [("sns-topic", ours["sns-topic"])]


def test_nothing_left_says_so(aws):
    code, out = run(["--stack", "dev", "--region", REGION], aws)
    assert code == 0 and "nothing left behind" in out


def test_the_command_refuses_conflicting_options():
    result = subprocess.run(
        [sys.executable, "-m", "ops.sweep", "--region", "x", "--all-regions"],
        capture_output=True,
        text=True,
        cwd=sweep.__file__.rsplit("/ops/", 1)[0],
    )
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


@pytest.mark.parametrize(
    "argv, refusal",
    [
        (["--stack", "dev", "--delete-backups"], "--delete-backups deletes only with --delete"),
        (["--delete", "--delete-backups"], "--delete-backups needs --stack"),
    ],
)
def test_delete_backups_deletes_nothing_unless_asked_with_delete_and_a_stack(argv, refusal):
    result = subprocess.run(
        [sys.executable, "-m", "ops.sweep", "--region", "x", *argv],
        capture_output=True,
        text=True,
        cwd=sweep.__file__.rsplit("/ops/", 1)[0],
    )
    assert result.returncode == 2 and refusal in result.stderr
