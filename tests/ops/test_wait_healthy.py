"""scripts/wait-healthy against moto: only health reported by this very instance, after its launch, counts;
the wait is bounded and says what was missing."""

from __future__ import annotations

import datetime
import io
import subprocess
from typing import Any, cast

import pytest

from ops import wait_healthy
from tests.helpers import MOTO_REGION

REGION = MOTO_REGION  # the fixture mocked_aws (tests/conftest.py) sets it
REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.fixture
def aws(mocked_aws):
    return wait_healthy.client_factory(REGION)


def launch(clients) -> tuple[str, datetime.datetime]:
    ec2 = clients("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]
    (instance,) = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro")["Instances"]
    return instance["InstanceId"], instance["LaunchTime"]


def report(clients, value: float, at: datetime.datetime, host: str = "lb-01", stack: str = "dev") -> None:
    clients("cloudwatch").put_metric_data(
        Namespace=f"webinfra/{stack}",
        MetricData=[
            {
                "MetricName": "HealthyBackends",
                "Dimensions": [{"Name": "Host", "Value": host}],
                "Value": value,
                "Timestamp": at,
            }
        ],
    )


def run(clients, instance_id, **kwargs) -> tuple[int, str, list[float]]:
    out = io.StringIO()
    slept: list[float] = []
    code = wait_healthy.wait(
        clients,
        stack="dev",
        host="lb-01",
        instance_id=instance_id,
        out=out,
        sleep=slept.append,
        clock=lambda: sum(slept),
        **{"timeout": 60, "interval": 15, **kwargs},
    )
    return code, out.getvalue(), slept


def test_health_reported_after_the_launch_passes(aws):
    instance_id, launched = launch(aws)
    report(aws, 2, launched + datetime.timedelta(minutes=1, seconds=5))
    code, out, slept = run(aws, instance_id)
    assert code == 0 and slept == [] and "✓ lb-01" in out and "HealthyBackends 2" in out, out


def test_what_the_replaced_instance_said_does_not_count(aws):
    instance_id, launched = launch(aws)
    report(aws, 2, launched - datetime.timedelta(minutes=3))  # the instance this one replaced
    # its last words, a second before the launch: in the launch minute (or, for a launch at second 0,
    # the minute before), reported before this instance existed either way. (At launched.replace(second=0)
    # this datapoint was after the launch whenever EC2 launched at second 0: a failure once in 60 runs.)
    report(aws, 2, launched - datetime.timedelta(seconds=1))
    report(aws, 2, launched + datetime.timedelta(minutes=2), host="lb-02")  # the other load balancer
    report(aws, 2, launched + datetime.timedelta(minutes=2), stack="other")  # another stack's lb-01
    code, out, slept = run(aws, instance_id)
    assert code == 1, out
    assert slept == [15, 15, 15, 15] and out.count("… waiting") == 4  # bounded: 60 s, at 15 s intervals
    assert "✗ lb-01" in out and "not healthy within 60 s: no HealthyBackends ≥ 1 from lb-01 since its launch" in out, (
        out
    )


def test_serving_without_any_backend_is_not_healthy(aws):
    instance_id, launched = launch(aws)
    report(aws, 0, launched + datetime.timedelta(minutes=1, seconds=5))
    assert run(aws, instance_id)[0] == 1
    assert run(aws, instance_id, at_least=0)[0] == 0


def test_an_unknown_instance_is_reported_not_raised(aws):
    code, out, _ = run(aws, "i-0123456789abcdef0", timeout=10)
    assert code == 1 and "asking AWS failed" in out, out


def test_the_command_line_refuses_bad_arguments():
    result = subprocess.run(
        [
            str(REPO / "scripts/wait-healthy"),
            "--stack",
            "dev",
            "--region",
            REGION,
            "--host",
            "lb-01",
            "--instance-id",
            "i-1",
            "--timeout",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--timeout and --interval must be positive" in result.stderr


def test_with_a_freshness_bound_an_old_instance_must_have_reported_lately(aws):
    instance_id, launched = launch(aws)
    later = launched + datetime.timedelta(minutes=30)  # lb-01 long running: lb-02 is about to be replaced
    report(aws, 2, launched + datetime.timedelta(minutes=2))  # healthy once, long ago
    code, out, _ = run(aws, instance_id, within_minutes=5, now=lambda: later)
    assert code == 1 and "from lb-01 in the last 5 minutes" in out, out
    report(aws, 2, later - datetime.timedelta(minutes=2))
    code, out, _ = run(aws, instance_id, within_minutes=5, now=lambda: later)
    assert code == 0 and "HealthyBackends 2 in the last 5 minutes" in out, out


class Refusing:
    """A client whose every call AWS refuses, as it does for credentials without the rights."""

    def __getattr__(self, name):
        from botocore.exceptions import ClientError

        def call(**kwargs):
            raise ClientError({"Error": {"Code": "UnauthorizedOperation", "Message": "not authorized"}}, name)

        return call


def test_refused_credentials_fail_at_once_naming_the_rights_needed():
    out = io.StringIO()
    slept: list[float] = []

    def refusing(service: str) -> Any:  # stands in for either client
        return Refusing()

    code = wait_healthy.wait(
        refusing,
        stack="dev",
        host="lb-01",
        instance_id="i-1",
        out=out,
        sleep=slept.append,
        clock=lambda: sum(slept),
        timeout=60,
        interval=15,
    )
    assert code == 1 and slept == [], out.getvalue()
    assert (
        "UnauthorizedOperation" in out.getvalue()
        and "ec2:DescribeInstances, ec2:DescribeAddresses and cloudwatch:GetMetricStatistics" in out.getvalue()
    )


@pytest.mark.parametrize("launch_second", [0, 1, 59])
def test_only_whole_minutes_after_the_launch_count_whatever_its_second(launch_second):
    # CloudWatch stamps a datapoint with the start of its minute: a minute that began before the launch
    # may hold the replaced instance's words; one that began at or after it may not. (A stand-in for its
    # answer: moto does not align datapoints to the minute as CloudWatch does.)
    class Points:
        def __init__(self, stamps):
            self.stamps = stamps

        def get_metric_statistics(self, **kwargs):
            return {"Datapoints": [{"Timestamp": t, "Maximum": 2.0} for t in self.stamps]}

    launched = datetime.datetime(2026, 11, 26, 6, 50, launch_second, tzinfo=datetime.UTC)
    minute = launched.replace(second=0)

    def best(stamp: datetime.datetime) -> float | None:
        return wait_healthy.healthy_since(
            cast(Any, Points([stamp])),
            stack="dev",
            host="lb-01",
            metric="HealthyBackends",
            since=launched,
            at_least=1,
            now=launched + datetime.timedelta(minutes=5),
        )

    assert (best(minute) is not None) == (launch_second == 0)
    after = best(minute + datetime.timedelta(minutes=1))
    assert after == 2.0


def test_with_an_elastic_ip_it_also_waits_until_no_single_load_balancer_holds_it(aws):
    """lbCount 1 -> 2: lb-02 serving is not enough; the single lb-01 is replaced only once lb-02 has taken the
    address over (keepalived alone makes it active, and it associates the address with itself)."""
    ec2 = aws("ec2")
    image = ec2.describe_images()["Images"][0]["ImageId"]

    def instance(name: str, pair: str) -> tuple[str, datetime.datetime]:
        tags = [{"Key": "Name", "Value": name}, {"Key": "LbPair", "Value": pair}]
        (made,) = ec2.run_instances(
            ImageId=image,
            MinCount=1,
            MaxCount=1,
            InstanceType="t3.micro",
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )["Instances"]
        return made["InstanceId"], made["LaunchTime"]

    single, _ = instance("lb-01", "no")
    new, launched = instance("lb-02", "yes")
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    ec2.associate_address(AllocationId=allocation, InstanceId=single)
    report(aws, 2, launched + datetime.timedelta(minutes=1, seconds=5), host="lb-02")
    out = io.StringIO()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:  # meanwhile lb-02 takes the address over
            ec2.associate_address(AllocationId=allocation, InstanceId=new, AllowReassociation=True)

    code = wait_healthy.wait(
        aws,
        stack="dev",
        host="lb-02",
        instance_id=new,
        elastic_ip=allocation,
        out=out,
        sleep=sleep,
        clock=lambda: sum(slept),
        timeout=120,
        interval=15,
    )
    assert code == 0 and len(slept) == 2, out.getvalue()
    assert "still on the single load balancer lb-01" in out.getvalue() and "✓ lb-02" in out.getvalue()
    # a pair member holding it (a pair's replacement: lb-01 active) passes at once
    assert wait_healthy.elastic_ip_on_the_pair(ec2, allocation) == ""
