"""scripts/wait-healthy: wait until a host has reported itself healthy since it was launched.

    scripts/wait-healthy --stack NAME --region R --host lb-01 --instance-id i-… [--metric HealthyBackends]
                         [--at-least 1] [--within-minutes 5] [--timeout 900] [--interval 15]
                         [--elastic-ip ALLOCATION_ID]

Every host publishes its health each minute to CloudWatch (`webinfra/<stack>`, dimension Host; see
webinfra-metrics.sh): a load balancer the number of web servers in its rotation, once HAProxy serves.
A datapoint at or above `--at-least`, from after the instance's launch (an older one belongs to the
instance it replaced) and from the last `--within-minutes` (it serves now, not only once), means this
very instance serves. Exit 0 then; exit 1 when the timeout runs out, naming what was missing, or at
once when the credentials are refused (waiting would not help).

`pulumi up` runs it between the two load balancers of a pair (LoadBalancer's readiness gate), so a
change that replaces both never takes the second down before the first serves again. With
`--elastic-ip ALLOCATION_ID` it also waits until that address is on a member of the pair, not on a
single load balancer (an instance tagged LbPair=no): when a second load balancer joins a single one
(lbCount 1 -> 2), the single one is replaced only once the new one has taken the address over.
Credentials and endpoint: boto3's usual chain (AWS_PROFILE, AWS_ENDPOINT_URL, ...).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, TextIO, overload

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

if TYPE_CHECKING:  # the stubs (boto3-stubs) are a test tool, not a runtime dependency
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_ec2 import EC2Client


class ClientFactory(Protocol):
    """service -> that service's boto3 client, typed per service."""

    @overload
    def __call__(self, service: Literal["ec2"]) -> EC2Client: ...
    @overload
    def __call__(self, service: Literal["cloudwatch"]) -> CloudWatchClient: ...


def launch_time(ec2: EC2Client, instance_id: str) -> datetime.datetime:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservations[0]["Instances"][0]["LaunchTime"]


def healthy_since(
    cloudwatch: CloudWatchClient,
    *,
    stack: str,
    host: str,
    metric: str,
    since: datetime.datetime,
    at_least: float,
    now: datetime.datetime | None = None,
) -> float | None:
    """The best value `host` reported for `metric` since `since`, when it is at least `at_least`."""
    now = now or datetime.datetime.now(datetime.UTC)
    points = cloudwatch.get_metric_statistics(
        Namespace=f"webinfra/{stack}",
        MetricName=metric,
        Dimensions=[{"Name": "Host", "Value": host}],
        StartTime=since,
        EndTime=now + datetime.timedelta(minutes=5),
        Period=60,
        Statistics=["Maximum"],
    )["Datapoints"]
    # Datapoints are per minute: one stamped with the launch minute may hold what the replaced instance
    # said in its last seconds. Only whole minutes after the launch count.
    first_minute = since.replace(second=0, microsecond=0)
    if first_minute < since:
        first_minute += datetime.timedelta(minutes=1)
    best = max((p["Maximum"] for p in points if p["Timestamp"] >= first_minute), default=None)
    return best if best is not None and best >= at_least else None


def elastic_ip_on_the_pair(ec2: EC2Client, allocation_id: str) -> str:
    """ "" when the address is associated with an instance that is no single load balancer; else what it
    waits for."""
    (address,) = ec2.describe_addresses(AllocationIds=[allocation_id])["Addresses"]
    holder = address.get("InstanceId")
    if not holder:
        return f"the Elastic IP {address.get('PublicIp', allocation_id)} is associated with no instance"
    instance = ec2.describe_instances(InstanceIds=[holder])["Reservations"][0]["Instances"][0]
    tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
    if tags.get("LbPair") == "no":
        return f"the Elastic IP is still on the single load balancer {tags.get('Name', holder)} ({holder})"
    return ""


# Errors that no amount of waiting mends: the credentials or their rights.
REFUSED = {
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthFailure",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
}


def wait(
    clients: ClientFactory,
    *,
    stack: str,
    host: str,
    instance_id: str,
    metric: str = "HealthyBackends",
    at_least: float = 1,
    within_minutes: float | None = None,
    timeout: float = 900,
    interval: float = 15,
    elastic_ip: str | None = None,
    out: TextIO = sys.stdout,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
) -> int:
    deadline = clock() + timeout
    ec2, cloudwatch = clients("ec2"), clients("cloudwatch")
    attempt, last = 0, ""
    while True:
        attempt += 1
        try:
            launched = launch_time(ec2, instance_id)
            since, what = launched, f"since its launch at {launched:%H:%M:%S}Z"
            if within_minutes is not None and now() - datetime.timedelta(minutes=within_minutes) > launched:
                since, what = (
                    now() - datetime.timedelta(minutes=within_minutes),
                    f"in the last {within_minutes:g} minutes",
                )
            value = healthy_since(
                cloudwatch, stack=stack, host=host, metric=metric, since=since, at_least=at_least, now=now()
            )
            away = elastic_ip_on_the_pair(ec2, elastic_ip) if value is not None and elastic_ip else ""
            if value is not None and not away:
                print(f"✓ {host} ({instance_id}) healthy: {metric} {value:g} {what}", file=out, flush=True)
                return 0
            last = away or f"no {metric} ≥ {at_least:g} from {host} {what} yet"
        except NoCredentialsError as error:
            print(
                f"✗ {host}: {error} "
                "(the gate uses the credentials `pulumi up` runs with: AWS_PROFILE, environment, ...)",
                file=out,
                flush=True,
            )
            return 1
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in REFUSED:
                print(
                    f"✗ {host}: AWS refused the gate's credentials or rights ({code}): "
                    "it needs ec2:DescribeInstances, ec2:DescribeAddresses and cloudwatch:GetMetricStatistics. "
                    f"{error}",
                    file=out,
                    flush=True,
                )
                return 1
            last = f"asking AWS failed: {error}"
        except (BotoCoreError, IndexError, KeyError) as error:
            last = f"asking AWS failed: {error}"
        if clock() + interval > deadline:
            print(f"✗ {host} ({instance_id}) not healthy within {timeout:g} s: {last}", file=out, flush=True)
            return 1
        print(f"… waiting ({attempt}): {last}", file=out, flush=True)
        sleep(interval)


def client_factory(region: str) -> ClientFactory:
    def make(service: Literal["ec2", "cloudwatch"]) -> Any:
        return boto3.client(service, region_name=region)

    return make


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/wait-healthy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--host", required=True, help="hostname, as in the metrics' Host dimension (lb-01)")
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--metric", default="HealthyBackends")
    parser.add_argument("--at-least", type=float, default=1)
    parser.add_argument("--within-minutes", type=float, help="the datapoint must also be this recent (it serves now)")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--interval", type=float, default=15)
    parser.add_argument(
        "--elastic-ip", metavar="ALLOCATION_ID", help="and wait until this address is on no single load balancer"
    )
    args = parser.parse_args(argv)
    if args.timeout <= 0 or args.interval <= 0:
        parser.error("--timeout and --interval must be positive")
    return wait(
        client_factory(args.region),
        stack=args.stack,
        host=args.host,
        instance_id=args.instance_id,
        metric=args.metric,
        at_least=args.at_least,
        within_minutes=args.within_minutes,
        timeout=args.timeout,
        interval=args.interval,
        elastic_ip=args.elastic_ip,
    )


if __name__ == "__main__":
    sys.exit(main())
