"""scripts/wait-healthy: wait until a host has reported itself healthy since it was launched.

    scripts/wait-healthy --stack NAME --region R --host lb-01 --instance-id i-… [--metric HealthyBackends]
                         [--at-least 1] [--timeout 900] [--interval 15]

Every host publishes its health each minute to CloudWatch (`webinfra/<stack>`, dimension Host; see
webinfra-metrics.sh): a load balancer the number of web servers in its rotation, once HAProxy serves.
A datapoint from after the instance's launch, at or above `--at-least`, means this very instance booted
and serves; an older one belongs to the instance it replaced. Exit 0 then; exit 1 when the timeout runs
out, naming what was missing.

`pulumi up` runs it between the two load balancers of a pair (LoadBalancer's readiness gate), so a
change that replaces both never takes the second down before the first serves again.
Credentials and endpoint: boto3's usual chain (AWS_PROFILE, AWS_ENDPOINT_URL, ...).
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from typing import Callable, TextIO

import boto3
from botocore.exceptions import BotoCoreError, ClientError

ClientFactory = Callable[[str], object]  # service -> boto3 client


def launch_time(ec2, instance_id: str) -> datetime.datetime:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return reservations[0]["Instances"][0]["LaunchTime"]


def healthy_since(cloudwatch, *, stack: str, host: str, metric: str, since: datetime.datetime, at_least: float) -> float | None:
    """The best value `host` reported for `metric` since `since`, when it is at least `at_least`."""
    now = datetime.datetime.now(datetime.timezone.utc)
    points = cloudwatch.get_metric_statistics(
        Namespace=f"webinfra/{stack}", MetricName=metric, Dimensions=[{"Name": "Host", "Value": host}],
        StartTime=since, EndTime=now + datetime.timedelta(minutes=5), Period=60, Statistics=["Maximum"],
    )["Datapoints"]
    # Datapoints are per minute: one stamped with the launch minute may hold what the replaced instance
    # said in its last seconds. Only whole minutes after the launch count.
    first_minute = since.replace(second=0, microsecond=0)
    if first_minute < since:
        first_minute += datetime.timedelta(minutes=1)
    best = max((p["Maximum"] for p in points if p["Timestamp"] >= first_minute), default=None)
    return best if best is not None and best >= at_least else None


def wait(clients: ClientFactory, *, stack: str, host: str, instance_id: str, metric: str = "HealthyBackends",
         at_least: float = 1, timeout: float = 900, interval: float = 15, out: TextIO = sys.stdout,
         sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> int:
    deadline = clock() + timeout
    ec2, cloudwatch = clients("ec2"), clients("cloudwatch")
    attempt, last = 0, ""
    while True:
        attempt += 1
        try:
            since = launch_time(ec2, instance_id)
            value = healthy_since(cloudwatch, stack=stack, host=host, metric=metric, since=since, at_least=at_least)
            if value is not None:
                print(f"✓ {host} ({instance_id}) healthy: {metric} {value:g} since its launch at {since:%H:%M:%S}Z", file=out, flush=True)
                return 0
            last = f"no {metric} ≥ {at_least:g} from {host} since its launch at {since:%H:%M:%S}Z yet"
        except (BotoCoreError, ClientError, IndexError, KeyError) as error:
            last = f"asking AWS failed: {error}"
        if clock() + interval > deadline:
            print(f"✗ {host} ({instance_id}) not healthy within {timeout:g} s: {last}", file=out, flush=True)
            return 1
        print(f"… waiting ({attempt}): {last}", file=out, flush=True)
        sleep(interval)


def client_factory(region: str) -> ClientFactory:
    return lambda service: boto3.client(service, region_name=region)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/wait-healthy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--host", required=True, help="hostname, as in the metrics' Host dimension (lb-01)")
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--metric", default="HealthyBackends")
    parser.add_argument("--at-least", type=float, default=1)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--interval", type=float, default=15)
    args = parser.parse_args(argv)
    if args.timeout <= 0 or args.interval <= 0:
        parser.error("--timeout and --interval must be positive")
    return wait(client_factory(args.region), stack=args.stack, host=args.host, instance_id=args.instance_id, metric=args.metric,
                at_least=args.at_least, timeout=args.timeout, interval=args.interval)


if __name__ == "__main__":
    sys.exit(main())
