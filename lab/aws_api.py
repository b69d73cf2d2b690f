"""The lab's stand-in for the AWS APIs the hosts call: a moto server, holding the SSM parameters
the program declared (as SecureStrings, as on AWS), and receiving the hosts' CloudWatch metrics.

`python -m lab.aws_api load ENDPOINT REGION` reads {name: [type, value]} as JSON on standard input
(never on the command line) and stores them; the lab runs it inside its cloud namespace.
"""
from __future__ import annotations

import json
import sys
import time

import boto3
from botocore.config import Config


def ssm_client(endpoint: str, region: str):
    return boto3.client(
        "ssm",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="lab",
        aws_secret_access_key="lab",
        config=Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=5),
    )


def wait_until_serving(client, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            client.describe_parameters(MaxResults=1)
            return
        except Exception:  # noqa: BLE001 - not up yet; bounded by the deadline
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def load_parameters(client, parameters: dict[str, tuple[str, str]]) -> list[str]:
    for name, (kind, value) in sorted(parameters.items()):
        client.put_parameter(Name=name, Type=kind, Value=value, Overwrite=True)
    return sorted(parameters)


def latest_metrics(client, namespace: str, minutes: int = 15) -> dict[str, float]:
    """The latest value of every metric the hosts published: {"MetricName/Host": value}."""
    import datetime

    now = datetime.datetime.now(datetime.timezone.utc)
    found = {}
    for metric in client.list_metrics(Namespace=namespace)["Metrics"]:
        points = client.get_metric_statistics(
            Namespace=namespace, MetricName=metric["MetricName"], Dimensions=metric["Dimensions"],
            StartTime=now - datetime.timedelta(minutes=minutes), EndTime=now + datetime.timedelta(minutes=1),
            Period=60, Statistics=["Maximum"],
        )["Datapoints"]
        if points:
            latest = max(points, key=lambda p: p["Timestamp"])
            host = next((d["Value"] for d in metric["Dimensions"] if d["Name"] == "Host"), "")
            found[f"{metric['MetricName']}/{host}"] = latest["Maximum"]
    return found


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "metrics":
        client = boto3.client("cloudwatch", endpoint_url=argv[1], region_name=argv[2], aws_access_key_id="lab",
                              aws_secret_access_key="lab")
        print(json.dumps(latest_metrics(client, argv[3])))
        return 0
    if len(argv) != 3 or argv[0] != "load":
        print("usage: python -m lab.aws_api load ENDPOINT REGION  < parameters.json\n"
              "       python -m lab.aws_api metrics ENDPOINT REGION NAMESPACE", file=sys.stderr)
        return 2
    client = ssm_client(argv[1], argv[2])
    wait_until_serving(client)
    names = load_parameters(client, {k: tuple(v) for k, v in json.load(sys.stdin).items()})
    print(f"loaded {len(names)} parameters: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
