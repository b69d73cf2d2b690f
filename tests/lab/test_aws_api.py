"""The AWS API stand-in's loader, against moto: parameters arrive as SecureStrings."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
import pytest
from moto import mock_aws

from lab import aws_api

if TYPE_CHECKING:  # the stubs (boto3-stubs) are a test tool, not a runtime dependency
    from mypy_boto3_ec2.type_defs import FilterTypeDef


@pytest.fixture
def fake_credentials(monkeypatch):
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)


@mock_aws
def test_parameters_are_stored_as_secure_strings(fake_credentials):
    client = boto3.client("ssm", region_name="us-east-1")
    names = aws_api.load_parameters(client, {"/webinfra/lab/db/app-password": ("SecureString", "s3cretvalue1234567")})
    assert names == ["/webinfra/lab/db/app-password"]
    parameter = client.get_parameter(Name="/webinfra/lab/db/app-password", WithDecryption=True)["Parameter"]
    assert parameter["Type"] == "SecureString" and parameter["Value"] == "s3cretvalue1234567"
    raw = client.get_parameter(Name="/webinfra/lab/db/app-password", WithDecryption=False)["Parameter"]["Value"]
    assert raw != "s3cretvalue1234567"
    # loading again (a second `lab up`) overwrites rather than failing
    aws_api.load_parameters(client, {"/webinfra/lab/db/app-password": ("SecureString", "another1234567890")})
    assert (
        client.get_parameter(Name="/webinfra/lab/db/app-password", WithDecryption=True)["Parameter"]["Value"]
        == "another1234567890"
    )


def test_main_refuses_bad_usage(capsys):
    assert aws_api.main(["store", "x"]) == 2
    assert "usage" in capsys.readouterr().err


@mock_aws
def test_latest_metrics_reads_what_hosts_publish(fake_credentials):
    client = boto3.client("cloudwatch", region_name="us-east-1")
    for value in (1, 2):
        client.put_metric_data(
            Namespace="webinfra/lab",
            MetricData=[
                {
                    "MetricName": "HealthyBackends",
                    "Dimensions": [{"Name": "Host", "Value": "lb-01"}],
                    "Value": value,
                    "Unit": "Count",
                }
            ],
        )
    assert aws_api.latest_metrics(client, "webinfra/lab") == {"HealthyBackends/lb-01": 2}
    assert aws_api.latest_metrics(client, "webinfra/other") == {}


@mock_aws
def test_ec2_is_seeded_as_pulumi_would_leave_it_and_the_takeovers_calls_move_the_address(fake_credentials):
    ec2 = boto3.client("ec2", region_name="us-east-1")
    lb_tags = {"Project": "webinfra", "Stack": "lab", "Role": "lb"}
    seeded = aws_api.seed_ec2(
        ec2,
        {
            "lb-01": {**lb_tags, "Name": "lb-01"},
            "lb-02": {**lb_tags, "Name": "lb-02"},
            "web-01": {"Project": "webinfra", "Stack": "lab", "Role": "web", "Name": "web-01"},
        },
        {**lb_tags, "Name": "net-lb-eip"},
        associate_with="lb-01",
    )
    ids = seeded["instances"]
    assert sorted(ids) == ["lb-01", "lb-02", "web-01"] and len(set(ids.values())) == 3
    assert aws_api.elastic_ip_holder(ec2, seeded["allocation_id"]) == ids["lb-01"]
    # what webinfra-lb-takeover asks: the stack's load-balancer address, by tags
    filters: list[FilterTypeDef] = [{"Name": f"tag:{key}", "Values": [value]} for key, value in lb_tags.items()]
    (found,) = ec2.describe_addresses(Filters=filters)["Addresses"]
    assert found["AllocationId"] == seeded["allocation_id"]
    assert ec2.describe_addresses(Filters=[*filters[:2], {"Name": "tag:Role", "Values": ["web"]}])["Addresses"] == []
    ec2.associate_address(AllocationId=found["AllocationId"], InstanceId=ids["lb-02"], AllowReassociation=True)
    assert aws_api.elastic_ip_holder(ec2, seeded["allocation_id"]) == ids["lb-02"]


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])  # the first takes no LocationConstraint
@mock_aws
def test_the_declared_buckets_are_created_with_their_tags_and_versioning_again_and_again(fake_credentials, region):
    from lab.mock_cloud import run_program
    from lab.topology import plan_from_program

    run = run_program({}, stack="lab", region=region)
    plan = plan_from_program(
        run, stack="lab", region=region, vpc_cidr="10.0.0.0/16", aws_endpoint_url="http://10.0.0.2:5000"
    )
    ((name, declared),) = plan.buckets.items()
    assert declared == {
        "tags": {
            "Project": "webinfra",
            "Stack": "lab",
            "ManagedBy": "pulumi",
            "Role": "backups",
            "Name": "webinfra-lab-backups",
        },
        "versioning": "Enabled",
    }
    s3 = boto3.client("s3", region_name=region)
    for _ in range(2):  # `lab up` on a lab that is up
        assert aws_api.create_buckets(s3, region, plan.buckets) == [name]
    assert (s3.get_bucket_location(Bucket=name).get("LocationConstraint") or "us-east-1") == region
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    assert {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=name)["TagSet"]} == declared["tags"]


@mock_aws
def test_a_kept_bucket_comes_back_with_its_tags_and_every_object(fake_credentials, tmp_path, monkeypatch):
    """scripts/lab down --keep-backups, then up: the S3 stand-in forgets everything when the lab goes."""
    s3 = boto3.client("s3", region_name="us-east-1")
    aws_api.create_buckets(s3, "us-east-1", {"kept": {"tags": {"Stack": "lab"}, "versioning": "Enabled"}})
    objects = {"lab/full/b.xbstream.zst": b"\x00" * 70000, "lab/binlog/../odd key": b"x", "lab/restores/r.json": b"{}"}
    for key, body in objects.items():
        s3.put_object(Bucket="kept", Key=key, Body=body)
    assert aws_api.export_bucket(s3, "kept", tmp_path / "kept") == 3
    assert sorted(p.name for p in (tmp_path / "kept" / "objects").iterdir()) == ["0", "1", "2"]  # no key as a path
    assert (tmp_path.stat().st_mode & 0o077) == 0  # root's only: the users' password hashes are in a backup
    s3.put_object(Bucket="kept", Key="lab/restores/r2.json", Body=b"{}")
    real_get, read = s3.get_object, []

    def get_object(**kwargs):  # a second export that fails midway ...
        read.append(kwargs["Key"])
        if len(read) == 2:
            raise ConnectionError("the S3 stand-in went away")
        return real_get(**kwargs)

    monkeypatch.setattr(s3, "get_object", get_object)
    with pytest.raises(ConnectionError):
        aws_api.export_bucket(s3, "kept", tmp_path / "kept")
    assert len(list((tmp_path / "kept" / "objects").iterdir())) == 3  # ... leaves the first copy whole
    monkeypatch.setattr(s3, "get_object", real_get)
    versions = s3.list_object_versions(Bucket="kept")["Versions"]
    s3.delete_objects(
        Bucket="kept", Delete={"Objects": [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions]}
    )
    s3.delete_bucket(Bucket="kept")  # the lab gone
    assert aws_api.import_bucket(s3, "us-east-1", tmp_path / "kept") == "kept (3 objects)"
    assert {k: s3.get_object(Bucket="kept", Key=k)["Body"].read() for k in objects} == objects
    assert {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket="kept")["TagSet"]} == {"Stack": "lab"}
    assert s3.get_bucket_versioning(Bucket="kept")["Status"] == "Enabled"
