"""The lab's stand-in for the AWS APIs the hosts call: a moto server, holding the SSM parameters
the program declared (as SecureStrings, as on AWS), the instances and the Elastic IP in EC2 (a load
balancer of a pair moves the address through it), and receiving the hosts' CloudWatch metrics.

`python -m lab.aws_api load ENDPOINT REGION` reads {name: [type, value]} as JSON on standard input
(never on the command line) and stores them; the lab runs it inside its cloud namespace.
`put-parameter` changes one (its value on standard input too), as a `pulumi up` that re-mints a
certificate does; `get-parameter` prints one. `run-instances`, `terminate-instances` and
`delete-parameters` are what `scripts/lab update` does in EC2 and SSM for a changed program.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys
import time
from typing import TYPE_CHECKING, Any, Literal, overload

import boto3
from botocore.config import Config

if TYPE_CHECKING:  # the stubs (boto3-stubs) are a test tool, not a runtime dependency
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ssm import SSMClient


def ssm_client(endpoint: str, region: str) -> SSMClient:
    return aws_client("ssm", endpoint, region)


@overload
def aws_client(service: Literal["ssm"], endpoint: str, region: str) -> SSMClient: ...
@overload
def aws_client(service: Literal["ec2"], endpoint: str, region: str) -> EC2Client: ...
def aws_client(service: Literal["ssm", "ec2"], endpoint: str, region: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="lab",
        aws_secret_access_key="lab",
        config=Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=5),
    )


def s3_client(endpoint: str, region: str) -> Any:
    """The stand-in's S3, as the lab's commands reach it (no short timeouts: objects are copied whole)."""
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=region, aws_access_key_id="lab", aws_secret_access_key="lab"
    )


def wait_until_serving(client, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            client.describe_parameters(MaxResults=1)
            return
        except Exception:  # not up yet; bounded by the deadline
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def load_parameters(client, parameters: dict[str, tuple[str, str]]) -> list[str]:
    for name, (kind, value) in sorted(parameters.items()):
        client.put_parameter(Name=name, Type=kind, Value=value, Overwrite=True)
    return sorted(parameters)


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def seed_ec2(ec2, instances: dict[str, dict[str, str]], elastic_ip_tags: dict[str, str], associate_with: str) -> dict:
    """What `pulumi up` would have made in EC2 and what the hosts' API calls act on: the instances
    (tags as declared) and the stack's Elastic IP, associated with `associate_with` when the program
    declares that association ("" for a pair, whose active load balancer associates it).

    EC2 chooses ids, so the lab takes its hosts' instance ids from here. Returns
    {"instances": {hostname: instance id}, "allocation_id": ...}.
    """
    ids = run_instances(ec2, instances)
    address = ec2.allocate_address(
        Domain="vpc", TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": _tag_list(elastic_ip_tags)}]
    )
    if associate_with:  # a single load balancer: the program's association; a pair: keepalived's to make
        ec2.associate_address(AllocationId=address["AllocationId"], InstanceId=ids[associate_with])
    return {"instances": ids, "allocation_id": address["AllocationId"]}


def run_instances(ec2, instances: dict[str, dict[str, str]]) -> dict[str, str]:
    """New instances (a `pulumi up` that creates or replaces them): {hostname: instance id}."""
    ids = {}
    for name, tags in sorted(instances.items()):
        reservation = ec2.run_instances(
            ImageId="ami-debian-12-lab",
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.micro",
            TagSpecifications=[{"ResourceType": "instance", "Tags": _tag_list(tags)}],
        )
        ids[name] = reservation["Instances"][0]["InstanceId"]
    return ids


def create_buckets(s3, region: str, buckets: dict[str, dict]) -> list[str]:
    """Each declared bucket, with its tags and versioning, in `region` (idempotent: `lab up` again)."""
    for name, declared in buckets.items():
        existing = {b["Name"] for b in s3.list_buckets()["Buckets"]}
        if name not in existing and region == "us-east-1":  # S3's first region takes no LocationConstraint
            s3.create_bucket(Bucket=name)
        elif name not in existing:
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
        s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": _tag_list(declared["tags"])})
        if declared["versioning"]:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": declared["versioning"]})
    return sorted(buckets)


def export_bucket(s3, bucket: str, into: pathlib.Path) -> int:
    """Every object of `bucket` (its current versions) and its tags, as files under `into`: the S3 stand-in
    forgets everything when the lab goes, a bucket `scripts/lab down --keep-backups` keeps is kept here.
    Root's only (database backups: the users' password hashes), and whole or not at all: written beside,
    then put in place of an earlier copy."""
    into.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    into.parent.chmod(0o700)
    work = into.with_name(f".{into.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    (work / "objects").mkdir(mode=0o700, parents=True)
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            # numbered files: a key is no path to trust
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            (work / "objects" / str(len(keys))).write_bytes(body)
            keys.append(item["Key"])
    tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
    (work / "bucket.json").write_text(json.dumps({"name": bucket, "tags": tags, "keys": keys}))
    shutil.rmtree(into, ignore_errors=True)
    work.rename(into)
    return len(keys)


def import_bucket(s3, region: str, kept: pathlib.Path) -> str:
    """A bucket export_bucket kept, created again with its tags and objects (`scripts/lab up`)."""
    bucket = json.loads((kept / "bucket.json").read_text())
    create_buckets(s3, region, {bucket["name"]: {"tags": bucket["tags"], "versioning": "Enabled"}})
    for number, key in enumerate(bucket["keys"]):
        s3.put_object(Bucket=bucket["name"], Key=key, Body=(kept / "objects" / str(number)).read_bytes())
    return f"{bucket['name']} ({len(bucket['keys'])} objects)"


def elastic_ip_holder(ec2, allocation_id: str) -> str:
    """The instance the Elastic IP is associated with now ("" when none)."""
    (address,) = ec2.describe_addresses(AllocationIds=[allocation_id])["Addresses"]
    return address.get("InstanceId") or ""


def latest_metrics(client, namespace: str, minutes: int = 15) -> dict[str, float]:
    """The latest value of every metric the hosts published: {"MetricName/Host": value}."""
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    found = {}
    for metric in client.list_metrics(Namespace=namespace)["Metrics"]:
        points = client.get_metric_statistics(
            Namespace=namespace,
            MetricName=metric["MetricName"],
            Dimensions=metric["Dimensions"],
            StartTime=now - datetime.timedelta(minutes=minutes),
            EndTime=now + datetime.timedelta(minutes=1),
            Period=60,
            Statistics=["Maximum"],
        )["Datapoints"]
        if points:
            latest = max(points, key=lambda p: p["Timestamp"])
            host = next((d["Value"] for d in metric["Dimensions"] if d["Name"] == "Host"), "")
            found[f"{metric['MetricName']}/{host}"] = latest["Maximum"]
    return found


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "seed-ec2":
        request = json.load(sys.stdin)
        wait_until_serving(ssm_client(argv[1], argv[2]))  # the server was just started
        print(
            json.dumps(
                seed_ec2(
                    aws_client("ec2", argv[1], argv[2]),
                    request["instances"],
                    request["elastic_ip_tags"],
                    request["associate_with"],
                )
            )
        )
        return 0
    if len(argv) == 3 and argv[0] == "run-instances":
        print(json.dumps(run_instances(aws_client("ec2", argv[1], argv[2]), json.load(sys.stdin))))
        return 0
    if len(argv) > 3 and argv[0] == "terminate-instances":
        aws_client("ec2", argv[1], argv[2]).terminate_instances(InstanceIds=argv[3:])
        return 0
    if len(argv) == 3 and argv[0] == "delete-parameters":
        names = json.load(sys.stdin)
        if names:
            ssm_client(argv[1], argv[2]).delete_parameters(Names=names)
        print(f"deleted {len(names)} parameters")
        return 0
    if len(argv) == 3 and argv[0] == "create-buckets":
        s3 = s3_client(argv[1], argv[2])
        print(f"created {', '.join(create_buckets(s3, argv[2], json.load(sys.stdin))) or 'no buckets'}")
        return 0
    if len(argv) == 5 and argv[0] == "list-objects":
        s3 = s3_client(argv[1], argv[2])
        listed = [
            {"Key": item["Key"], "Size": item["Size"], "LastModified": item["LastModified"].timestamp()}
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=argv[3], Prefix=argv[4])
            for item in page.get("Contents", [])
        ]
        print(json.dumps(listed))
        return 0
    if len(argv) == 5 and argv[0] in ("get-object", "put-object"):
        s3 = s3_client(argv[1], argv[2])
        if argv[0] == "get-object":
            sys.stdout.buffer.write(s3.get_object(Bucket=argv[3], Key=argv[4])["Body"].read())
        else:
            s3.put_object(Bucket=argv[3], Key=argv[4], Body=sys.stdin.buffer.read())
        return 0
    if len(argv) == 7 and argv[0] == "copy-object":
        s3 = s3_client(argv[1], argv[2])
        s3.copy({"Bucket": argv[3], "Key": argv[4]}, argv[5], argv[6])
        return 0
    if len(argv) == 5 and argv[0] == "export-bucket":
        print(f"{argv[3]}: {export_bucket(s3_client(argv[1], argv[2]), argv[3], pathlib.Path(argv[4]))} objects kept")
        return 0
    if len(argv) == 4 and argv[0] == "import-bucket":
        print(import_bucket(s3_client(argv[1], argv[2]), argv[2], pathlib.Path(argv[3])))
        return 0
    if len(argv) == 4 and argv[0] == "eip-holder":
        print(elastic_ip_holder(aws_client("ec2", argv[1], argv[2]), argv[3]))
        return 0
    if len(argv) == 5 and argv[0] == "associate":  # as a stray `pulumi up` or a person would
        aws_client("ec2", argv[1], argv[2]).associate_address(
            AllocationId=argv[3], InstanceId=argv[4], AllowReassociation=True
        )
        return 0
    if len(argv) == 5 and argv[0] == "disassociate":
        # Pulumi deleting the association it made: DisassociateAddress by that association's id, which is
        # gone (InvalidAssociationID.NotFound, which the provider ignores) once anything re-associated the
        # address; here: only while the address is still on that instance.
        ec2 = aws_client("ec2", argv[1], argv[2])
        (address,) = ec2.describe_addresses(AllocationIds=[argv[3]])["Addresses"]
        if address.get("InstanceId") == argv[4]:
            ec2.disassociate_address(AssociationId=address["AssociationId"])
            print("disassociated")
        else:
            print(f"not on {argv[4]} any more: the association is gone already")
        return 0
    if len(argv) == 4 and argv[0] == "metrics":
        cloudwatch = boto3.client(
            "cloudwatch",
            endpoint_url=argv[1],
            region_name=argv[2],
            aws_access_key_id="lab",
            aws_secret_access_key="lab",
        )
        print(json.dumps(latest_metrics(cloudwatch, argv[3])))
        return 0
    if len(argv) == 4 and argv[0] == "put-parameter":
        version = ssm_client(argv[1], argv[2]).put_parameter(
            Name=argv[3], Type="SecureString", Value=sys.stdin.read(), Overwrite=True
        )
        print(f"{argv[3]}: version {version['Version']}")
        return 0
    if len(argv) == 4 and argv[0] == "get-parameter":
        print(
            ssm_client(argv[1], argv[2]).get_parameter(Name=argv[3], WithDecryption=True)["Parameter"]["Value"], end=""
        )
        return 0
    if len(argv) != 3 or argv[0] != "load":
        print(
            "usage: python -m lab.aws_api load ENDPOINT REGION  < parameters.json\n"
            "       python -m lab.aws_api seed-ec2 ENDPOINT REGION  < instances.json\n"
            "       python -m lab.aws_api run-instances ENDPOINT REGION  < instances.json\n"
            "       python -m lab.aws_api terminate-instances ENDPOINT REGION INSTANCE_ID...\n"
            "       python -m lab.aws_api delete-parameters ENDPOINT REGION  < names.json\n"
            "       python -m lab.aws_api create-buckets ENDPOINT REGION  < buckets.json\n"
            "       python -m lab.aws_api list-objects ENDPOINT REGION BUCKET PREFIX\n"
            "       python -m lab.aws_api get-object|put-object ENDPOINT REGION BUCKET KEY  (the body: stdout|stdin)\n"
            "       python -m lab.aws_api copy-object ENDPOINT REGION BUCKET KEY TO_BUCKET TO_KEY\n"
            "       python -m lab.aws_api export-bucket ENDPOINT REGION BUCKET DIRECTORY\n"
            "       python -m lab.aws_api import-bucket ENDPOINT REGION DIRECTORY  (what export-bucket kept)\n"
            "       python -m lab.aws_api eip-holder ENDPOINT REGION ALLOCATION_ID\n"
            "       python -m lab.aws_api associate ENDPOINT REGION ALLOCATION_ID INSTANCE_ID\n"
            "       python -m lab.aws_api metrics ENDPOINT REGION NAMESPACE\n"
            "       python -m lab.aws_api put-parameter ENDPOINT REGION NAME  < value\n"
            "       python -m lab.aws_api get-parameter ENDPOINT REGION NAME",
            file=sys.stderr,
        )
        return 2
    client = ssm_client(argv[1], argv[2])
    wait_until_serving(client)
    names = load_parameters(client, {k: tuple(v) for k, v in json.load(sys.stdin).items()})
    print(f"loaded {len(names)} parameters: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
