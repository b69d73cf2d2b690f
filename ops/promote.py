"""scripts/promote: make the most advanced replica the database primary, without losing data.

    scripts/promote --lab [--force] [--dry-run]                      the local lab's hosts
    scripts/promote --stack NAME [--region R] [--force] [--dry-run]  the stack's EC2 hosts, through
                                                                     SSM Run Command

0. Hold the automatic failover: its controller stops on every load balancer (and starts again at the
   end, whatever happened), so that one decision is made at a time: this one.
1. Fence the old primary when it answers (read_only, so nothing new lands there).
2. Stop every replica's I/O thread and let its SQL thread drain the relay log (bounded wait).
3. Pick the replica that has applied the most (highest GTID sequence in domain 0).
4. Refuse, unless --force, when that would lose data: the old primary answers and holds
   transactions no replica has, or no replica answers at all. Say why.
5. Promote it (replication off, semi-synchronous replication on if a replica will follow it,
   read_only off), and point every other server, the old primary included when it answers, at it.
   The apps follow at their next request (each asks its database where writes go: no redeploy).
   Every server boots read-only: a promoted server that restarts waits for the failover controller
   to make it writable again (it does once it sees the server has everything).

Semi-synchronous replication means an acknowledged write is on at least one replica, so picking
the most advanced one keeps every acknowledged write even when the old primary is gone.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from typing import TYPE_CHECKING, Any, Protocol

from provisioning.render import DB_FAILOVER_USER

if TYPE_CHECKING:  # the stubs (boto3-stubs) are a test tool, not a runtime dependency
    from mypy_boto3_ec2.type_defs import FilterTypeDef


class PromotionRefused(RuntimeError):
    pass


@dataclasses.dataclass
class Server:
    name: str
    address: str
    reachable: bool = False
    role: str = "unknown"
    gtid: str = ""

    @property
    def sequence(self) -> int:
        """The last applied transaction's sequence number in GTID domain 0 (0 for none)."""
        match = re.search(r"(?:^|,)0-\d+-(\d+)", self.gtid)
        return int(match.group(1)) if match else 0


class Runner(Protocol):
    def run(self, host: str, script: str, timeout: float = 60) -> tuple[int, str]: ...

    def balancers(self) -> list[str]: ...


def sql(statement: str) -> str:
    return f"mariadb -N -B -e {shell_quote(statement)}"


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


class Promotion:
    def __init__(self, runner: Runner, servers: list[Server], say=print):
        self.runner, self.servers, self.say = runner, servers, say

    def _run(self, server: Server, script: str, timeout: float = 60) -> str:
        status, output = self.runner.run(server.name, script, timeout)
        if status != 0:
            raise RuntimeError(f"{server.name}: `{script[:80]}` failed ({status}): {output.strip()[:300]}")
        return output

    def survey(self) -> None:
        for server in self.servers:
            # The database says what it is: writable is the primary.
            status, output = self.runner.run(
                server.name, sql('SELECT IF(@@global.read_only, "replica", "primary"), @@gtid_current_pos'), 20
            )
            server.reachable = status == 0
            if server.reachable:
                fields = output.strip().split("\t")
                server.role, server.gtid = fields[0], fields[1] if len(fields) > 1 else ""
        described = ", ".join(f"{s.name} ({s.role if s.reachable else 'unreachable'})" for s in self.servers)
        self.say(f"servers: {described}")

    def plan(self, force: bool) -> tuple[Server, Server | None]:
        old = next((s for s in self.servers if s.role == "primary" and s.reachable), None)
        if old:
            self.say(f"fencing the old primary {old.name}: read_only")
            self._run(old, sql("SET GLOBAL read_only = ON; FLUSH TABLES"))
            old.gtid = self._run(old, sql("SELECT @@gtid_binlog_pos")).strip()
        replicas = [s for s in self.servers if s.reachable and s is not old and s.role == "replica"]
        if not replicas:
            raise PromotionRefused("no replica answers: there is nothing to promote")
        receiving = []  # the replicas whose replication ran: only these are started again on a refusal
        for replica in replicas:
            if "Slave_IO_Running: Yes" in self._run(replica, "mariadb -e 'SHOW SLAVE STATUS\\G'"):
                receiving.append(replica)
            self._run(replica, sql("STOP SLAVE IO_THREAD"))
            self._drain(replica)
        candidate = max(replicas, key=lambda s: s.sequence)
        self.say(
            "applied: "
            + ", ".join(f"{s.name} {s.gtid or 'nothing'}" for s in replicas)
            + f"; most advanced: {candidate.name}"
        )
        if old and old.sequence > candidate.sequence:
            message = (
                f"the old primary {old.name} has transactions up to {old.gtid} that no replica has "
                f"(most advanced: {candidate.name} at {candidate.gtid}); promoting would lose them"
            )
            if not force:
                for replica in receiving:  # put things back as they were (a stopped one stays stopped)
                    self._run(replica, sql("START SLAVE"))
                self._run(old, sql("SET GLOBAL read_only = OFF"))
                raise PromotionRefused(message + ". Re-run with --force to accept the loss.")
            self.say(f"--force: {message}")
        return candidate, old

    def _drain(self, replica: Server, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while True:
            status = self._run(replica, "mariadb -e 'SHOW SLAVE STATUS\\G'")
            io_pos = re.search(r"Gtid_IO_Pos: (\S*)", status)
            replica.gtid = self._run(replica, sql("SELECT @@gtid_slave_pos")).strip()
            state = re.search(r"Slave_SQL_Running_State: (.*)", status)
            if (io_pos and io_pos.group(1) == replica.gtid) or (state and "read all relay log" in state.group(1)):
                return
            if time.monotonic() > deadline:
                raise PromotionRefused(f"{replica.name} did not finish applying its relay log within {seconds:.0f} s")
            time.sleep(0.5)

    def promote(self, candidate: Server, old: Server | None) -> None:
        self.say(f"promoting {candidate.name}")
        followers = [s for s in self.servers if s is not candidate and s.reachable]
        self._run(
            candidate,
            sql(
                # Its replication settings stay (pointing at itself), credentials and TLS included, for
                # the day it is made a replica again by changing only the address.
                f"STOP SLAVE; CHANGE MASTER TO MASTER_HOST = '{candidate.address}', MASTER_PORT = 3306, "
                "MASTER_USE_GTID = current_pos; "
                # Binary-log dump threads left from an earlier time as primary: its replicas connect
                # afresh (one ended around semi-sync's switch hung MariaDB in the lab: issue 13).
                "CALL mysql.webinfra_end_dump_threads(); "
                + ("SET GLOBAL rpl_semi_sync_master_enabled = ON; " if followers else "")
                # The controllers are held: a session of theirs still open here is a dead one (its
                # load balancer's end lost in a network cut). Left, it is a lease that stopped speaking,
                # and the self-fence makes the new primary read-only again (seen in the lab, until the
                # controller, back after its 3.5 s takeover, restored it).
                + f"KILL CONNECTION USER '{DB_FAILOVER_USER}'; "
                + "SET GLOBAL read_only = OFF"
            ),
        )
        for server in self.servers:
            if server is candidate or not server.reachable:
                continue
            self.say(f"pointing {server.name} at {candidate.name} ({candidate.address})")
            gtid_mode = "current_pos" if server is old else "slave_pos"
            # the host's own script: credentials and TLS settings stay on the host
            self._run(server, f"webinfra-db-follow {candidate.address} {gtid_mode}")


def run_promotion(
    runner: Runner, servers: list[Server], force: bool = False, dry_run: bool = False, say=print
) -> Server:
    started = time.monotonic()
    promotion = Promotion(runner, servers, say)
    promotion.survey()
    if dry_run:
        replicas = [s for s in servers if s.reachable and s.role == "replica"]
        say(
            "dry run: would promote "
            + (max(replicas, key=lambda s: s.sequence).name if replicas else "nothing (no replica answers)")
        )
        return servers[0]
    held = hold_failover(runner, say)
    try:
        promotion.survey()  # again: the controllers may have acted before they stopped
        candidate, old = promotion.plan(force)
        promotion.promote(candidate, old)
    finally:
        release_failover(runner, held, say)
    say(f"{candidate.name} is the primary ({time.monotonic() - started:.1f} s)")
    return candidate


def hold_failover(runner: Runner, say=print, while_: str = "promoting") -> list[str]:
    """Stop the failover controller on every load balancer that answers; returns where it stopped."""
    held = []
    for balancer in runner.balancers():
        status, output = runner.run(balancer, "systemctl stop webinfra-failover", 30)
        if status == 0:
            held.append(balancer)
        else:
            say(f"{balancer}: could not stop the failover controller ({output.strip()[:200]}); going on")
    if held:
        say(f"automatic failover held on {', '.join(held)} while {while_}")
    return held


def release_failover(runner: Runner, held: list[str], say=print) -> None:
    for balancer in held:
        status, output = runner.run(balancer, "systemctl start webinfra-failover", 30)
        if status != 0:
            say(f"{balancer}: could not start the failover controller again: {output.strip()[:200]}")


# --- runners ---------------------------------------------------------------------------------------------


class LabRunner:
    def __init__(self):
        from lab import cli

        self.plan = cli.load_state()

    def servers(self) -> list[Server]:
        return [Server(h.name, h.private_ip) for h in self.plan.hosts if h.role == "web"]

    def balancers(self) -> list[str]:
        return [h.name for h in self.plan.hosts if h.role == "lb"]

    def run(self, host: str, script: str, timeout: float = 60) -> tuple[int, str]:
        from lab import hosts

        target = self.plan.host(host)
        if not hosts.is_running(target):
            return 255, f"{host} is not running"
        try:
            result = hosts.guest_command(target, ["bash", "-c", script], timeout=timeout)
        except Exception as error:  # noqa: BLE001 - an unreachable host is an answer, not a crash
            return 255, str(error)
        return result.returncode, result.stdout + result.stderr


class SsmRunner:
    """Runs each step on an EC2 host through SSM Run Command (AWS-RunShellScript)."""

    def __init__(self, stack: str, region: str | None, ssm=None, ec2=None, purpose: str = "scripts/promote"):
        import boto3

        self.stack, self.purpose = stack, purpose
        self.ssm = ssm or boto3.client("ssm", region_name=region)
        self.ec2 = ec2 or boto3.client("ec2", region_name=region)
        self.instances: dict[str, str] = {}

    def _instances(self, role: str) -> list[tuple[str, Any]]:
        filters: list[FilterTypeDef] = [
            {"Name": "tag:Project", "Values": ["webinfra"]},
            {"Name": "tag:Stack", "Values": [self.stack]},
            {"Name": "tag:Role", "Values": [role]},
            {"Name": "instance-state-name", "Values": ["running", "stopped", "stopping"]},
        ]
        found = []
        for reservation in self.ec2.describe_instances(Filters=filters)["Reservations"]:
            for instance in reservation["Instances"]:
                name = next(t["Value"] for t in instance["Tags"] if t["Key"] == "Name")
                self.instances[name] = instance["InstanceId"]
                found.append((name, instance))
        return sorted(found, key=lambda pair: pair[0])

    def servers(self) -> list[Server]:
        return [Server(name, instance["PrivateIpAddress"]) for name, instance in self._instances("web")]

    def balancers(self) -> list[str]:
        return [name for name, _ in self._instances("lb")]

    def run(self, host: str, script: str, timeout: float = 60) -> tuple[int, str]:
        try:
            command = self.ssm.send_command(
                InstanceIds=[self.instances[host]],
                DocumentName="AWS-RunShellScript",
                # executionTimeout: how long the script may run (AWS-RunShellScript's default is an hour, which
                # a restore can exceed); TimeoutSeconds: how long delivery to the instance may take.
                Parameters={"commands": [script], "executionTimeout": [str(max(30, int(timeout)))]},
                TimeoutSeconds=max(30, min(int(timeout), 2592000)),
                Comment=f"webinfra {self.stack}: {self.purpose}",
            )["Command"]["CommandId"]
        except Exception as error:  # noqa: BLE001 - an instance SSM cannot reach is unreachable
            return 255, str(error)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            time.sleep(1)
            try:
                result = self.ssm.get_command_invocation(CommandId=command, InstanceId=self.instances[host])
            except self.ssm.exceptions.InvocationDoesNotExist:
                continue
            if result["Status"] in ("Success", "Failed", "Cancelled", "TimedOut", "Undeliverable", "Terminated"):
                return (
                    0 if result["Status"] == "Success" else result.get("ResponseCode", 1) or 1,
                    result.get("StandardOutputContent", "") + result.get("StandardErrorContent", ""),
                )
        return 255, f"{host}: no answer through SSM within {timeout:.0f} s"


def stack_command_parser(program: str, doc: str) -> argparse.ArgumentParser:
    """The command line every script acting on a stack's hosts shares: --lab, or --stack [--region] on AWS
    (SSM Run Command); its description and epilog from the module's docstring."""
    parser = argparse.ArgumentParser(
        prog=program,
        description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc.split("\n\n", 1)[1],
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--lab", action="store_true", help="the local lab (scripts/lab up)")
    where.add_argument("--stack", help="the Pulumi stack's name, on AWS (SSM Run Command)")
    parser.add_argument("--region")
    return parser


def main(argv: list[str]) -> int:
    parser = stack_command_parser("scripts/promote", __doc__)
    parser.add_argument("--force", action="store_true", help="promote even when it would lose data")
    parser.add_argument("--dry-run", action="store_true", help="survey and say what would be promoted, change nothing")
    args = parser.parse_args(argv)
    runner = LabRunner() if args.lab else SsmRunner(args.stack, args.region)
    try:
        run_promotion(runner, runner.servers(), force=args.force, dry_run=args.dry_run)
    except PromotionRefused as refusal:
        print(f"scripts/promote: refused: {refusal}", file=sys.stderr)
        return 3
    except RuntimeError as error:
        print(f"scripts/promote: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
