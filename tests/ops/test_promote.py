"""scripts/promote's decisions, with a scripted runner; its SSM runner against moto. The lab test
(tests/lab/test_lab.py) runs the real thing on real MariaDB servers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
import pytest
from moto import mock_aws

from ops import promote
from ops.promote import PromotionRefused, Server

if TYPE_CHECKING:  # the stubs (boto3-stubs) are a test tool, not a runtime dependency
    from mypy_boto3_ec2.type_defs import TagTypeDef


class FakeHosts:
    """Answers the commands promote sends, from a table of servers: role, applied GTID, reachable."""

    def __init__(self, servers: dict[str, dict]):
        self.state = servers
        self.log: list[tuple[str, str]] = []

    def balancers(self):
        return ["lb-01", "lb-02"]

    def run(self, host, script, timeout=60):
        self.log.append((host, script))
        if host.startswith("lb-"):
            return 0, ""
        server = self.state[host]
        if not server["up"]:
            return 255, "unreachable"
        if '@@global.read_only, "replica", "primary"' in script:
            return 0, f"{server['role']}\t{server['gtid']}\n"
        if "gtid_binlog_pos" in script or "gtid_slave_pos" in script:
            return 0, server["gtid"] + "\n"
        if "SHOW SLAVE STATUS" in script:
            receiving = "Slave_IO_Running: Yes\n" if server.get("receiving", True) else "Slave_IO_Running: No\n"
            return (
                0,
                f"{receiving}Gtid_IO_Pos: {server['gtid']}\nSlave_SQL_Running_State: Slave has read all relay log\n",
            )
        return 0, ""


def servers():
    return [Server("web-01", "10.0.0.11"), Server("web-02", "10.0.1.12"), Server("web-03", "10.0.0.13")]


def test_sequence_is_read_from_domain_zero():
    assert Server("a", "x", gtid="0-1-42").sequence == 42
    assert Server("a", "x", gtid="1-2-7,0-3-9").sequence == 9
    assert Server("a", "x", gtid="").sequence == 0


def test_the_most_advanced_replica_is_promoted_and_the_others_follow_it():
    hosts = FakeHosts(
        {
            "web-01": {"up": False, "role": "primary", "gtid": "0-1-30"},
            "web-02": {"up": True, "role": "replica", "gtid": "0-1-28"},
            "web-03": {"up": True, "role": "replica", "gtid": "0-1-29"},
        }
    )
    chosen = promote.run_promotion(hosts, servers(), say=lambda *_: None)
    assert chosen.name == "web-03"
    promoted = [s for h, s in hosts.log if h == "web-03" and "read_only = OFF" in s]
    assert promoted and promote.shell_quote("MASTER_HOST = '10.0.0.13'")[1:-1] in promoted[0], promoted
    assert "rpl_semi_sync_master_enabled = ON" in promoted[0]  # web-02 follows it: every commit waits for it
    # Dump threads left from an earlier time as primary are ended before semi-sync is switched on.
    kill = promoted[0].index("CALL mysql.webinfra_end_dump_threads()")
    assert kill < promoted[0].index("rpl_semi_sync_master_enabled = ON"), promoted[0]
    # The held controllers' sessions still open on it are dead ones, ended before it is made writable:
    # left, the self-fence would count them as a lease that stopped speaking.
    stale = promoted[0].index(promote.shell_quote("KILL CONNECTION USER 'webinfra_failover'")[1:-1])
    assert stale < promoted[0].index("SET GLOBAL read_only = OFF"), promoted[0]
    # The automatic failover held on both load balancers meanwhile, and started again after.
    balancers = [(h, s) for h, s in hosts.log if h.startswith("lb-")]
    assert balancers[:2] == [
        ("lb-01", "systemctl stop webinfra-failover"),
        ("lb-02", "systemctl stop webinfra-failover"),
    ]
    assert balancers[2:] == [
        ("lb-01", "systemctl start webinfra-failover"),
        ("lb-02", "systemctl start webinfra-failover"),
    ]
    repointed = [s for h, s in hosts.log if h == "web-02" and "webinfra-db-follow" in s]
    assert repointed == ["webinfra-db-follow 10.0.0.13 slave_pos"]  # credentials and TLS stay on the host


def test_refuses_when_the_reachable_old_primary_is_ahead_and_puts_things_back():
    hosts = FakeHosts(
        {
            "web-01": {"up": True, "role": "primary", "gtid": "0-1-31"},
            "web-02": {"up": True, "role": "replica", "gtid": "0-1-30"},
            "web-03": {"up": True, "role": "replica", "gtid": "0-1-29", "receiving": False},
        }
    )
    with pytest.raises(PromotionRefused, match="web-01 has transactions up to 0-1-31 that no replica has"):
        promote.run_promotion(hosts, servers(), say=lambda *_: None)
    assert not [s for h, s in hosts.log if h != "web-01" and "read_only = OFF" in s]
    assert ("web-01", "mariadb -N -B -e 'SET GLOBAL read_only = OFF'") in hosts.log  # put back
    assert ("lb-01", "systemctl start webinfra-failover") in hosts.log  # released though refused
    # Put back as it was: web-02's replication started again; web-03's had been stopped by someone, and stays so.
    assert ("web-02", "mariadb -N -B -e 'START SLAVE'") in hosts.log
    assert ("web-03", "mariadb -N -B -e 'START SLAVE'") not in hosts.log
    # --force accepts the loss, and fences the old primary as a replica of the new one
    chosen = promote.run_promotion(hosts, servers(), force=True, say=lambda *_: None)
    assert chosen.name == "web-02"
    assert ("web-01", "webinfra-db-follow 10.0.1.12 current_pos") in hosts.log


def test_refuses_when_no_replica_answers():
    hosts = FakeHosts(
        {
            "web-01": {"up": False, "role": "primary", "gtid": ""},
            "web-02": {"up": False, "role": "replica", "gtid": ""},
            "web-03": {"up": False, "role": "replica", "gtid": ""},
        }
    )
    with pytest.raises(PromotionRefused, match="no replica answers"):
        promote.run_promotion(hosts, servers(), say=lambda *_: None)


def test_dry_run_changes_nothing():
    hosts = FakeHosts(
        {
            "web-01": {"up": True, "role": "primary", "gtid": "0-1-5"},
            "web-02": {"up": True, "role": "replica", "gtid": "0-1-5"},
            "web-03": {"up": True, "role": "replica", "gtid": "0-1-5"},
        }
    )
    said: list[str] = []
    promote.run_promotion(hosts, servers(), dry_run=True, say=said.append)
    assert said[-1] == "dry run: would promote web-02"
    assert all("SELECT IF(@@global.read_only" in script for _, script in hosts.log)  # a survey, nothing else


@mock_aws
def test_ssm_runner_finds_the_stacks_web_servers_by_tag_and_runs_through_run_command(monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    ec2 = boto3.client("ec2", region_name="eu-west-1")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    def launch(name, stack, role):
        tags: list[TagTypeDef] = [
            {"Key": "Project", "Value": "webinfra"},
            {"Key": "Stack", "Value": stack},
            {"Key": "Role", "Value": role},
            {"Key": "Name", "Value": name},
        ]
        ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}]
        )

    launch("web-02", "dev", "web")
    launch("web-01", "dev", "web")
    launch("lb-01", "dev", "lb")
    launch("web-01", "staging", "web")
    runner = promote.SsmRunner("dev", "eu-west-1")
    assert [s.name for s in runner.servers()] == ["web-01", "web-02"]
    status, _ = runner.run("web-01", "true", timeout=10)
    assert status == 0
    (command,) = runner.ssm.list_commands()["Commands"]
    assert command["DocumentName"] == "AWS-RunShellScript" and command["Parameters"]["commands"] == ["true"]
    assert runner.instances["web-01"] in command["InstanceIds"]
    # the script may run as long as the caller waits (AWS-RunShellScript's default would cut it at an hour)
    assert command["Parameters"]["executionTimeout"] == ["30"]
    assert command["Comment"] == "webinfra dev: scripts/promote"


def test_main_needs_a_target(capsys):
    with pytest.raises(SystemExit):
        promote.main([])
