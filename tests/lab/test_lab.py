"""The infrastructure, proven on the lab: the stack's exact user-data booted on Debian 12 hosts.

Tests run in file order: the disruptive ones (a host killed, the primary rebooted) come last.
Figures (failed requests, recovery gap, replication delay) are printed for the record and bounded
loosely, not timed tightly: machines here are shared.
"""

import concurrent.futures
import contextlib
import ipaddress
import itertools
import json
import pathlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from lab import health
from lab.aws_downloads import CTL_CALLS
from lab.cli import DOWNLOADS, aws_api, load_state
from lab.hosts import logged_at
from lab.loadgen import disruption, longest_outage
from lab.loadgen import stream_from_client as stream
from provisioning.render import backup_turn
from settings import MAX_AZ_COUNT, subnet_cidrs
from tests.lab.helpers import (
    REPO,
    WritableSampler,
    client,
    guest,
    keep_loadgen_report,
    lab,
    load,
    sql,
    wait_until,
)

pytestmark = pytest.mark.lab  # boots the local lab: root, systemd-nspawn

SERVICES = {"lb": ["haproxy", "webinfra-failover"], "web": ["mariadb", "webinfra-app", "nginx"]}


def hosts(status, role=None):
    return [h for h in status["hosts"] if role is None or h["role"] == role]


def web_names(status):
    return [h["name"] for h in hosts(status, "web")]


CA = "/var/lib/webinfra-lab/lb-certificate.pem"  # the certificate the program exported


def post_message(url: str, text: str) -> dict:
    result = client(
        "curl",
        "-sS",
        "-m",
        "10",
        "--cacert",
        CA,
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        json.dumps({"text": text}),
        "-w",
        "\n%{http_code}",
        url + "api/messages",
    )
    body, _, code = result.stdout.rpartition("\n")
    assert code == "201", f"POST answered {code}: {body} {result.stderr}"
    return json.loads(body)


def reachable(host: str, address: str, port: int) -> bool:
    """A TCP connection from inside `host` (3 s bound; a dropped SYN just times out)."""
    result = guest(host, "timeout", "3", "bash", "-c", f"exec 3<>/dev/tcp/{address}/{port}")
    return result.returncode == 0


def client_reachable(address: str, port: int) -> bool:
    result = client("timeout", "3", "bash", "-c", f"exec 3<>/dev/tcp/{address}/{port}")
    return result.returncode == 0


# 1 -------------------------------------------------------------------------------------------------------


def test_cloud_init_done_without_errors_and_services_enabled(running_lab):
    print(f"lab up to healthy: {running_lab['up_seconds']} s")
    for host in hosts(running_lab):
        assert host["running"] and host["cloud_init"] == "done", host
        result = json.loads(guest(host["name"], "cat", "/run/cloud-init/result.json").stdout)
        assert result["v1"]["errors"] == [], (host["name"], result)
        pair = host["role"] == "lb" and running_lab["floating_address"]
        for service in SERVICES[host["role"]] + (["keepalived"] if pair else []):
            assert guest(host["name"], "systemctl", "is-enabled", service).stdout.strip() == "enabled", (
                host["name"],
                service,
            )
            assert guest(host["name"], "systemctl", "is-active", service).stdout.strip() == "active", (
                host["name"],
                service,
            )
    # the hosts' secrets arrived through the SSM stand-in, root-only
    for name in web_names(running_lab):
        mode = guest(name, "stat", "-c", "%a %U", "/etc/webinfra/secrets/db-app.env").stdout.strip()
        assert mode == "600 root", (name, mode)


def test_a_replica_backs_up_to_the_stacks_bucket_and_the_primary_passes_its_turn(running_lab):
    """Issue 15: webinfra-db-backup as its unit runs it, on hosts booted from the user-data (the program
    from SSM through webinfra-config-sync, Debian's mariadb-backup, zstd and aws, the bucket `lab up`
    made as declared, in the S3 stand-in): the primary passes its turn, a replica streams a full backup
    and its manifest, and a later turn the same day takes none. Each server's timer is at its turn."""
    names = web_names(running_lab)
    primary = primary_of(names)
    replica = next(name for name in names if name != primary)

    def run(host: str) -> str:
        started = guest(host, "systemctl", "start", "webinfra-db-backup.service", timeout=300)
        assert started.returncode == 0, (host, started.stderr)
        return guest(host, "journalctl", "-b", "--no-pager", "-o", "cat", "-u", "webinfra-db-backup").stdout

    assert "this server is the primary: a replica takes the backup" in run(primary)
    journal = run(replica)
    done = [line for line in journal.splitlines() if line.startswith("webinfra-db-backup: done: ")]
    assert len(done) == 1 and " GTID 0-" in done[0], journal[-2000:]
    assert "is recent enough: none now" in run(replica).rsplit(done[0], 1)[1]
    print(done[0])
    for host in names:
        calendar = guest(host, "systemctl", "show", "-p", "TimersCalendar", "webinfra-db-backup.timer").stdout
        assert f"{backup_turn(host)}:00 UTC" in calendar, (host, calendar)


def backup_bucket(host: str) -> str:
    """The bucket a web server backs up to (its environment file)."""
    environment = guest(host, "cat", "/etc/webinfra/webinfra.env").stdout
    return re.findall(r"^WEBINFRA_BACKUP_BUCKET=(.+)$", environment, re.M)[0]


def shipped_binlogs(bucket: str) -> list:
    """The lab stack's shipped binary logs in the S3 stand-in, as the shipper's keys name them."""
    from backups.webinfra_db_ship_binlogs import parse_binlog_key

    listed = aws_api(load_state(), "list-objects", bucket, "lab/binlog/")
    assert listed.returncode == 0, listed.stderr
    return [o for o in (parse_binlog_key(item["Key"]) for item in json.loads(listed.stdout)) if o]


def test_the_primary_ships_its_binary_logs_within_a_minute_and_reports_what_the_backup_alarms_watch(running_lab):
    """Issue 15: webinfra-db-ship-binlogs (from SSM, as its unit runs it) on every web server; the primary's
    binary logs reach the stack's bucket in the S3 stand-in, as GTID ranges with no gap, within
    binlog_ship_interval (30 s) and an upload of a write; the primary publishes the shipping delay and the
    full backup's age to the stand-in's CloudWatch."""
    names = web_names(running_lab)
    primary = primary_of(names)
    for host in names:
        active = guest(host, "systemctl", "is-active", "webinfra-db-ship-binlogs").stdout.strip()
        assert active == "active", (host, active)
    bucket = backup_bucket(primary)

    def reach() -> tuple[int, list]:
        objects = shipped_binlogs(bucket)
        return max((o.last for o in objects), default=0), objects

    stored = post_message(running_lab["url"], "shipped to S3 within a minute")
    written = time.monotonic()
    position = int(sql(primary, "SELECT @@global.gtid_binlog_pos").rsplit("-", 1)[1])
    wait_until(f"GTID sequence {position} in S3", lambda: reach()[0] >= position, 75, 1)
    shipped_after = time.monotonic() - written
    _, objects = reach()
    assert objects[0].first == 1 and all(b.first <= a.last + 1 for a, b in itertools.pairwise(objects)), objects
    print(f"write {stored['id']} (GTID sequence {position}) in S3 {shipped_after:.1f} s after it was acknowledged")

    def reported():
        metrics = metrics_in_the_aws_stand_in(running_lab)
        wanted = ("BinlogShippingBehindSeconds/", "FullBackupAgeSeconds/")
        return metrics if all(k in metrics for k in wanted) else None

    metrics = wait_until("the backup metrics in CloudWatch (the stand-in)", reported, 90, 5)
    print(f"backup metrics: {metrics}")
    assert metrics["BinlogShippingBehindSeconds/"] < 120


def full_backup_now(replica: str) -> str:
    """A full backup now, on a replica, as scripts/restore starts one (an earlier test took today's)."""
    from ops.restore import _host_env_command

    backup = guest(
        replica,
        "bash",
        "-c",
        _host_env_command("WEBINFRA_BACKUP_FRESH_SECONDS=0 /usr/local/sbin/webinfra-db-backup"),
        timeout=300,
    )
    assert backup.returncode == 0 and "done:" in backup.stdout, backup.stdout + backup.stderr
    return backup.stdout.strip().splitlines()[-1]


def test_restore_drill_a_dropped_table_is_restored_to_the_second_before_it(healthy_lab):
    """Issue 15's first drill: 5,000 rows, a full backup, 1,000 rows more, the time noted, a row after it,
    the table dropped; `scripts/restore --lab --to` that time: every row written before it is back and none
    after, the replicas agree with the primary, the site serves and takes writes."""

    url, names = healthy_lab["url"], web_names(healthy_lab)
    primary = primary_of(names)
    replica = next(name for name in names if name != primary)

    def insert(label: str, count: int) -> None:
        sql(
            primary,
            "USE webinfra; INSERT INTO messages (text, host) "
            f"SELECT CONCAT('{label} ', seq), 'drill' FROM seq_1_to_{count}",
        )

    insert("drill before the backup", 5000)
    wait_until(
        f"the 5,000 rows on {replica}",
        lambda: (
            sql(replica, "SELECT COUNT(*) FROM webinfra.messages WHERE text LIKE 'drill before the backup %'") == "5000"
        ),
        60,
    )
    print(full_backup_now(replica))
    insert("drill after the backup", 1000)
    expected = sql(primary, "SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT(id, text))), 0) FROM webinfra.messages")
    # The time to restore to: the next whole second (binary-log times are whole seconds), then a row after it.
    target = time.time() // 1 + 1
    time.sleep(max(0.0, target + 1 - time.time()))
    sql(primary, "INSERT INTO webinfra.messages (text, host) VALUES ('drill after the noted time', 'drill')")
    sql(primary, "DROP TABLE webinfra.messages")
    # Not waiting for the shipper's turn (the shipping test measures it): scripts/restore ships what the
    # fenced primary has not shipped yet itself, and this drill needs it to.
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(target))
    dry = subprocess.run(
        ["scripts/restore", "--lab", "--to", moment, "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert dry.returncode == 0 and "dry run: nothing changed" in dry.stdout, dry.stdout + dry.stderr
    assert sql(primary, "SHOW TABLES FROM webinfra LIKE 'messages'") == ""  # still dropped
    started = time.monotonic()
    restored = subprocess.run(
        ["scripts/restore", "--lab", "--to", moment], cwd=REPO, capture_output=True, text=True, timeout=1800
    )
    took = time.monotonic() - started
    print(restored.stdout[-3000:])
    assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-3000:]
    check = "SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT(id, text))), 0) FROM webinfra.messages"
    assert sql(primary, check) == expected, "every row written before the time, and none after"
    for name in names:
        wait_until(f"{name} agrees with the primary", lambda n=name: sql(n, check) == expected, 60, 1)
    assert sql(primary, "SELECT COUNT(*) FROM webinfra.messages WHERE text = 'drill after the noted time'") == "0"
    stored = post_message(url, "after the restore")
    wait_until(
        f"the new write on {replica}",
        lambda: sql(replica, f"SELECT COUNT(*) FROM webinfra.messages WHERE id = {stored['id']}") == "1",
        30,
    )
    print(f"restore drill: {expected.split()[0]} rows restored to {moment}; scripts/restore took {took:.0f} s")
    # scripts/reseed, the way out for a server stranded with a write no one else has: refused for the
    # primary; a replica is dropped and seeded again, and agrees with the primary.
    refused = subprocess.run(
        ["scripts/reseed", "--lab", primary], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2 and "is the primary" in refused.stderr, refused.stdout + refused.stderr
    reseeded = subprocess.run(
        ["scripts/reseed", "--lab", replica], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert reseeded.returncode == 0 and "replica ready" in reseeded.stdout, reseeded.stdout + reseeded.stderr
    everything = sql(primary, check)
    wait_until(f"{replica} re-seeded agrees", lambda: sql(replica, check) == everything, 60, 1)


# AWS's download locations for the lab stack's region (us-east-1), written out as AWS documents them.
AGENT_URLS = {
    "amazon-ssm-agent": "https://s3.us-east-1.amazonaws.com/amazon-ssm-us-east-1/latest/debian_{arch}/amazon-ssm-agent.deb",
    "amazon-cloudwatch-agent": "https://amazoncloudwatch-agent-us-east-1.s3.us-east-1.amazonaws.com/debian/{arch}/latest/amazon-cloudwatch-agent.deb",
}


def agent_installed(host: str, package: str) -> bool:
    return guest(host, "dpkg-query", "-W", "-f", "${Status}", package).stdout == "install ok installed"


def test_every_host_runs_in_a_cgroup_of_its_own(running_lab):
    # Hosts sharing one cgroup tree had their systemd start a unit in a cgroup another host's systemd
    # was removing ("Failed at step CGROUP"): a unit failed at random, on any host, at boot or later.
    from lab.hosts import init_pid

    for host in load_state().hosts:
        pid = init_pid(host)
        assert pid is not None, host.name
        cgroups = pathlib.Path(f"/proc/{pid}/cgroup").read_text()
        assert f"/webinfra-lab/{host.name}/" in cgroups, (host.name, cgroups)
        failed = guest(host.name, "systemctl", "--failed", "--no-legend", "--plain").stdout.strip()
        assert not failed, (host.name, failed)


def test_every_host_installed_the_agents_from_aws_download_paths(running_lab):
    """The lab boots EC2's install path: the agents come from AWS's URLs (served by the lab's stand-in)."""
    log = (DOWNLOADS / "access.log").read_text().splitlines()
    for host in hosts(running_lab):
        name = host["name"]
        arch = guest(name, "dpkg", "--print-architecture").stdout.strip()
        for package, url in AGENT_URLS.items():
            assert agent_installed(name, package), (name, package)
            assert f"{host['address']} GET {url.format(arch=arch)} 200" in log, (name, url, log)
        assert guest(name, "systemctl", "is-enabled", "amazon-ssm-agent").stdout.strip() == "enabled", name
        assert guest(name, "systemctl", "is-active", "amazon-ssm-agent").stdout.strip() == "active", name
        calls = guest(name, "cat", CTL_CALLS).stdout.splitlines()
        assert calls == ["-a fetch-config -m ec2 -s -c file:/etc/webinfra/cloudwatch-agent.json"], (name, calls)
        assert guest(name, "test", "-e", "/var/lib/webinfra/agents-missing").returncode == 1, name
    print(f"{len(log)} downloads from the stand-in of AWS's buckets, each 200")


# dpkg's locks, taken as apt and unattended-upgrades take them (fcntl write locks on the whole file,
# the frontend lock first), held for at most argv[1] seconds or until stdin closes.
HOLD_PACKAGE_LOCK = """
import fcntl, select, sys, time
handles = [open(path, "a") for path in ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock")]
for handle in handles:
    fcntl.lockf(handle, fcntl.LOCK_EX)
print("locked", time.time(), flush=True)
select.select([sys.stdin], [], [], float(sys.argv[1]))
print("releasing", time.time(), flush=True)
for handle in handles:
    fcntl.lockf(handle, fcntl.LOCK_UN)
"""


@contextlib.contextmanager
def package_lock_held(host: str, at_most: float):
    """Hold `host`'s dpkg lock from another process for `at_most` seconds (less if the block ends first);
    yields a dict that gets the epoch times it was taken ("locked") and released ("releasing")."""
    holder = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", "exec", host, "--", "python3", "-c", HOLD_PACKAGE_LOCK, str(at_most)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    times: dict = {"holder": holder}
    try:
        assert holder.stdout is not None  # stdout=PIPE
        word, at = holder.stdout.readline().split()
        assert word == "locked", word
        times["locked"] = float(at)
        yield times
    finally:
        out, _ = holder.communicate(timeout=at_most + 60)  # closes stdin: released now, if not already
    word, at = out.split()
    times["releasing"] = float(at)


def test_agent_install_waits_for_the_package_lock_and_gives_up_loudly_after_its_bound(running_lab):
    host, package = web_names(running_lab)[-1], "amazon-cloudwatch-agent"
    # held for 8 s while the real installer runs: it waits, then installs
    assert guest(host, "dpkg", "--purge", package).returncode == 0 and not agent_installed(host, package)
    with package_lock_held(host, 8) as lock:
        began = time.time()
        result = guest(host, "webinfra-install-cloudwatch-agent", timeout=120)
        ended = time.time()
    output = result.stdout + result.stderr
    assert result.returncode == 0 and agent_installed(host, package), output
    unpacked_at = int(
        guest(host, "stat", "-c", "%Z", "/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl").stdout
    )
    assert unpacked_at >= int(lock["releasing"]), (unpacked_at, lock)  # installed once the lock was free, not before
    print(
        f"lock held {lock['releasing'] - lock['locked']:.1f} s; "
        f"the installer started {began - lock['locked']:.1f} s after it was taken "
        f"and finished {ended - lock['releasing']:.1f} s after it was released ({ended - began:.1f} s in all)"
    )

    # held past the bound (3 s here, 300 s at boot): a clear message and a failure; first boot's
    # agents step goes on without the agent, loudly
    assert guest(host, "dpkg", "--purge", package).returncode == 0
    with package_lock_held(host, 90) as lock:
        began = time.time()
        timed_out = guest(
            host, "env", "WEBINFRA_PACKAGE_LOCK_TIMEOUT=3", "webinfra-install-cloudwatch-agent", timeout=120
        )
        failed_after = time.time() - began
        agents = guest(host, "env", "WEBINFRA_PACKAGE_LOCK_TIMEOUT=3", "webinfra-install-agents", timeout=120)
        assert lock["holder"].poll() is None, "the lock was released before the installers ran"
    output = timed_out.stdout + timed_out.stderr
    assert timed_out.returncode != 0 and not agent_installed(host, package), output
    assert f"{package}: NOT INSTALLED: the package lock was still held after 3s" in timed_out.stderr, output
    assert (
        "Could not get lock /var/lib/dpkg/lock-frontend. It is held by process" in output and "(python3)" in output
    ), output
    assert agents.returncode == 0, agents.stdout + agents.stderr
    assert f"NOT INSTALLED: {package}; this host goes on without them" in agents.stderr, agents.stderr
    assert guest(host, "cat", "/var/lib/webinfra/agents-missing").stdout == f"{package}\n"
    print(
        f"with the lock held past a 3 s bound, the installer failed after {failed_after:.1f} s:\n"
        + "\n".join(line for line in output.splitlines() if "lock" in line)
    )

    # released: the retry the message names installs it and clears the marker
    again = guest(host, "webinfra-install-agents", timeout=120)
    assert again.returncode == 0 and agent_installed(host, package), again.stdout + again.stderr
    assert guest(host, "test", "-e", "/var/lib/webinfra/agents-missing").returncode == 1


def lab_status() -> dict:
    return json.loads(lab("status", "--json").stdout)


def test_one_load_balancer_of_the_pair_is_active_and_holds_the_elastic_ip(running_lab):
    assert running_lab["floating_address"], "the lab stack runs a load-balancer pair (Pulumi.lab.yaml: lbCount 2)"
    status = wait_until(
        "one active load balancer, holding the Elastic IP in the EC2 API",
        lambda: (
            (s := lab_status())["floating_address_holder"]
            and s["elastic_ip_holder"] == s["floating_address_holder"]
            and s
        ),
        30,
    )
    active = status["floating_address_holder"]
    (standby,) = [h["name"] for h in hosts(status, "lb") if h["name"] != active]
    assert guest(active, "cat", "/run/webinfra/lb-state").stdout.strip() == "MASTER"
    assert guest(standby, "cat", "/run/webinfra/lb-state").stdout.strip() == "BACKUP"
    # VRRP adverts pass the security groups and both host firewalls: the standby hears the active one
    # (were they dropped, it would take over too and both would claim the address).
    assert (
        guest(standby, "ip", "-4", "-o", "addr", "show", "to", f"{status['floating_address']}/32").stdout.strip() == ""
    )
    print(
        f"active load balancer {active} "
        f"(floating address {status['floating_address']}, Elastic IP {status['elastic_ip']}); standby {standby}"
    )


def test_the_active_load_balancer_takes_back_an_elastic_ip_moved_away_from_it(running_lab):
    # `pulumi up` declares no association for a pair (lab up seeds none: the active load balancer
    # associated the address itself, above). Whatever moves it (an older program's `pulumi up` after a
    # refresh, a person), the active one puts it back within a minute (webinfra-lb-eip.timer).
    status = lab_status()
    active = status["floating_address_holder"]
    (standby,) = [h for h in load_state().load_balancers if h.name != active]
    plan = load_state()
    began = time.monotonic()
    moved = aws_api(plan, "associate", plan.elastic_ip_allocation, standby.instance_id)
    assert moved.returncode == 0, moved.stderr
    # (Not read back here: the active one's 30 s timer may already have taken it back by then, as it did
    # once in CI, 1.6 s after the move; the takeover's journal line below names the standby it took it from.)
    wait_until(
        f"the Elastic IP back on the active {active}", lambda: lab_status()["elastic_ip_holder"] == active, 90, 2
    )
    taken_back = time.monotonic() - began
    log = guest(active, "journalctl", "-t", "webinfra-lb-takeover", "--no-pager", "-o", "cat").stdout
    assert f"(was: {standby.instance_id};" in log, log
    assert guest(standby.name, "cat", "/run/webinfra/lb-state").stdout.strip() == "BACKUP"
    print(f"Elastic IP moved to the standby {standby.name}: back on {active} after {taken_back:.1f} s")


def test_the_pairs_declared_readiness_gate_passes_on_the_lab(running_lab):
    # exactly the command lb-01's replacement waits for (scripts/wait-healthy, as declared), against the
    # AWS API stand-in where the load balancers publish their health
    result = lab("ready", timeout=1100)
    assert "lb-02-ready: $ scripts/wait-healthy --stack lab --region us-east-1 --host lb-02" in result.stdout, (
        result.stdout
    )
    assert "✓ lb-02 (" in result.stdout and "HealthyBackends 2" in result.stdout, result.stdout
    print(result.stdout)


def smoke(url: str, backends: list[str], timeout: int = 0) -> subprocess.CompletedProcess:
    """scripts/smoke from the lab's internet with the exported certificate and a short timeout, for checks that
    must fail fast (the declared command, run by `lab smoke`, waits up to 900 s)."""
    return client(
        str(REPO / "scripts/smoke"),
        url,
        "--cacert",
        CA,
        "--backends",
        ",".join(backends),
        "--timeout",
        str(timeout),
        "--interval",
        "1",
        timeout=timeout + 120,
    )


def test_the_programs_declared_smoke_test_passes_every_check_on_the_lab(running_lab):
    # exactly the SmokeTest command the program declares (create string, environment, project directory,
    # /bin/sh -c), from the lab's internet: what `pulumi up` runs last
    result = lab("smoke", timeout=1100)
    assert "$ scripts/smoke https://" in result.stdout, result.stdout
    for check in ("health", "rotation", "write", "https"):
        assert f"✓ {check}" in result.stdout, result.stdout
    print(result.stdout)


# 2 -------------------------------------------------------------------------------------------------------


def test_round_robin_over_every_web_server(running_lab):
    report = load(running_lab["url"], 200, cacert=running_lab["ca_file"])
    assert report["sent"] == 200 and report["statuses"] == {"200": 200}, report["statuses"]
    assert all(r["server"] for r in report["records"]), "a response without X-Served-By"
    servers = report["servers"]
    print(f"200 GETs through the LB: {servers}")
    assert set(servers) == set(web_names(running_lab))
    share = 1 / len(servers)
    for name, count in servers.items():
        assert 0.8 * share <= count / 200 <= 1.2 * share, f"{name} served {count}/200"  # 40-60 % with two


# 3 -------------------------------------------------------------------------------------------------------


def test_a_write_reaches_every_database_within_2_seconds(running_lab):
    text = f"replicated {time.time()}"
    stored = post_message(running_lab["url"], text)
    began = time.monotonic()
    delays = {}
    for name in web_names(running_lab):
        wait_until(
            f"message on {name}",
            lambda: sql(name, f"SELECT COUNT(*) FROM webinfra.messages WHERE id={stored['id']}") == "1",  # noqa: B023 (called at once)
            2.0,
            0.05,
        )
        delays[name] = round(time.monotonic() - began, 2)
    print(f"message {stored['id']} visible on every server; seen after {delays} s")


def test_a_direct_write_to_a_replica_is_refused(running_lab):
    replica = web_names(running_lab)[1]
    result = guest(
        replica,
        "bash",
        "-c",
        '. /etc/webinfra/secrets/db-app.env; mariadb -u webinfra_app -p"$WEBINFRA_DB_PASSWORD" webinfra '
        "-e \"INSERT INTO messages (text, host) VALUES ('sneaky', 'test')\"",
    )
    assert result.returncode != 0 and "read-only" in result.stderr, result.stderr
    assert sql(replica, "SELECT COUNT(*) FROM webinfra.messages WHERE text='sneaky'") == "0"


def test_database_traffic_is_tls_and_replicas_verify_the_primary(running_lab):
    primary, replica = hosts(running_lab, "web")[:2]
    status = guest(replica["name"], "mariadb", "-e", "SHOW SLAVE STATUS\\G").stdout
    assert "Master_SSL_Allowed: Yes" in status and "Master_SSL_Verify_Server_Cert: Yes" in status, status
    assert "Slave_IO_Running: Yes" in status
    credentials = ". /etc/webinfra/secrets/db-app.env; export MYSQL_PWD=$WEBINFRA_DB_PASSWORD; "
    plain = guest(
        replica["name"],
        "bash",
        "-c",
        credentials + f"mariadb -h {primary['address']} -u webinfra_app --skip-ssl -e 'SELECT 1'",
    )
    assert plain.returncode != 0, "a plain-text connection to the primary was accepted"
    verified = guest(
        replica["name"],
        "bash",
        "-c",
        credentials + f"mariadb -h {primary['address']} -u webinfra_app "
        "--ssl-ca=/etc/mysql/webinfra-tls/ca.pem --ssl-verify-server-cert -N -e \"SHOW STATUS LIKE 'Ssl_version'\"",
    )
    assert verified.returncode == 0 and "TLSv1." in verified.stdout, verified.stderr


# 6 -------------------------------------------------------------------------------------------------------


def flows(probes: list[tuple[str, bool, Callable[[], bool]]]) -> None:
    """Each probe (what it is, whether the connection should be made, the probe), all probed at once: a
    dropped SYN takes the whole 3 s bound, and one after the other they took most of these tests' time."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(probes)) as pool:
        futures = {name: pool.submit(probe) for name, _, probe in probes}
        seen = {name: future.result() for name, future in futures.items()}
    assert seen == {name: expected for name, expected, _ in probes}


def test_security_groups_drop_forbidden_flows_and_pass_allowed_ones(running_lab):
    lb = hosts(running_lab, "lb")[0]
    primary, replica = hosts(running_lab, "web")[:2]
    flows(
        [
            # forbidden, as AWS would drop them
            ("the internet to a web server's :80", False, lambda: client_reachable(replica["public_address"], 80)),
            ("the internet to MySQL", False, lambda: client_reachable(primary["public_address"], 3306)),
            ("the internet to :3306 on the LB", False, lambda: client_reachable(lb["public_address"], 3306)),
            ("the LB to SSH on a web server", False, lambda: reachable(lb["name"], primary["address"], 22)),
            ("web to web :80 (no declared flow)", False, lambda: reachable(primary["name"], replica["address"], 80)),
            # allowed
            ("the internet to the LB's :80", True, lambda: client_reachable(lb["public_address"], 80)),
            ("the LB to a web server's :80", True, lambda: reachable(lb["name"], replica["address"], 80)),
            ("a replica to the primary's MySQL", True, lambda: reachable(replica["name"], primary["address"], 3306)),
            ("the failover controller to MySQL", True, lambda: reachable(lb["name"], primary["address"], 3306)),
            # and nothing leads out of the lab
            ("a web server to outside the lab", False, lambda: reachable(primary["name"], "192.0.2.1", 80)),
        ]
    )


def test_host_firewalls_drop_forbidden_flows_even_without_security_groups(running_lab):
    lb = hosts(running_lab, "lb")[0]
    primary, replica = hosts(running_lab, "web")[:2]
    lab("sg", "off")
    try:
        flows(
            [
                ("the internet to a web server's :80", False, lambda: client_reachable(replica["public_address"], 80)),
                ("the internet to :3306 on the LB", False, lambda: client_reachable(lb["public_address"], 3306)),
                ("the LB to SSH on a web server", False, lambda: reachable(lb["name"], primary["address"], 22)),
                ("the failover controller to MySQL", True, lambda: reachable(lb["name"], primary["address"], 3306)),
                ("web to web :80", False, lambda: reachable(primary["name"], replica["address"], 80)),
                ("the internet to the LB's :443", True, lambda: client_reachable(lb["public_address"], 443)),
                (
                    "a replica to the primary's MySQL",
                    True,
                    lambda: reachable(replica["name"], primary["address"], 3306),
                ),
            ]
        )
        # and it is the host firewall doing it: without it, the same flow passes
        assert guest(replica["name"], "nft", "flush", "ruleset").returncode == 0
        assert client_reachable(replica["public_address"], 80), "the flow is dropped elsewhere: the test proves nothing"
    finally:
        guest(replica["name"], "systemctl", "restart", "nftables")
        lab("sg", "on")
    assert not client_reachable(replica["public_address"], 80)


# HTTPS ---------------------------------------------------------------------------------------------------


def test_https_with_the_exported_certificate_and_http_redirects(running_lab):
    url = running_lab["url"]
    assert url.startswith("https://")
    ok = client("curl", "-sS", "-o", "/dev/null", "-D", "-", "--cacert", running_lab["ca_file"], url + "health")
    assert ok.returncode == 0, ok.stderr
    headers = ok.stdout.lower()
    assert "strict-transport-security: max-age=63072000" in headers and "server:" not in headers, headers
    untrusted = client("curl", "-sS", "-o", "/dev/null", url)
    assert untrusted.returncode != 0, "a client that does not trust the certificate must refuse it"
    plain = client(
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        url.replace("https://", "http://") + "api/messages",
    )
    assert plain.stdout == f"301 {url}api/messages", plain.stdout
    old = client("curl", "-sS", "-o", "/dev/null", "--tls-max", "1.1", "--cacert", running_lab["ca_file"], url)
    assert old.returncode != 0, "TLS 1.1 accepted"
    h2 = client(
        "curl",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        "--http2",
        "--cacert",
        running_lab["ca_file"],
        url + "health",
    )
    assert h2.stdout == "2"


def test_testssl_finds_no_weak_protocol_or_cipher(running_lab, tmp_path):
    report = tmp_path / "testssl.json"
    result = client(
        "testssl",
        "--quiet",
        "--color",
        "0",
        "--warnings",
        "off",
        "-p",
        "-s",
        "-f",
        "-h",
        "--jsonfile",
        str(report),
        running_lab["url"],
        timeout=300,
    )
    findings = {f["id"]: f for f in json.loads(report.read_text())}
    summary = {
        key: findings[key]["finding"] for key in ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3", "HSTS_time")
    }
    severities = ("OK", "INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL")
    by_severity = {s: sum(1 for f in findings.values() if f["severity"] == s) for s in severities}
    print(f"testssl.sh: {summary}; findings by severity: {by_severity}")
    for protocol in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert findings[protocol]["finding"] == "not offered", findings[protocol]
    assert findings["TLS1_2"]["finding"] == "offered" and findings["TLS1_3"]["finding"].startswith("offered")
    for weak in (
        "cipherlist_NULL",
        "cipherlist_aNULL",
        "cipherlist_EXPORT",
        "cipherlist_LOW",
        "cipherlist_3DES_IDEA",
        "cipherlist_AVERAGE",
    ):
        assert findings[weak]["finding"] == "not offered", findings[weak]
    assert findings["HSTS_time"]["severity"] == "OK"
    bad = [f for f in findings.values() if f["severity"] in ("LOW", "MEDIUM", "HIGH", "CRITICAL")]
    assert not bad, bad
    assert result.returncode in (0, 1) or findings  # testssl's exit code counts findings; the report is the verdict


def test_sslyze_finds_the_public_listener_compliant_with_mozillas_intermediate_profile(running_lab):
    # An independent scanner with Mozilla's published profile built in (Server Side TLS 5.7): versions,
    # ciphers, curves (X448 and secp521r1, which OpenSSL offers by default, fail it), the certificate's
    # type, curve, signature and lifespan, and the TLS vulnerabilities it knows. One check cannot pass
    # here by design: without a domain the stack serves a self-signed certificate (clients trust the
    # exported one), which no public trust store holds; with a domain, ACME's chain is what is served.
    host = running_lab["url"].removeprefix("https://").rstrip("/")
    sslyze = [sys.executable, "-m", "sslyze", "--mozilla_config=intermediate"]
    result = client(*sslyze, f"--certinfo_ca_file={running_lab['ca_file']}", f"{host}:443", timeout=300)
    compliance = result.stdout.split("COMPLIANCE AGAINST TLS CONFIGURATION", 1)[-1]
    issues = re.findall(r"^\s+\* (\w+): (.*)$", compliance, re.M)
    print(f"sslyze {host}:443 against Mozilla intermediate: {issues or 'compliant'}")
    assert 'Checking results against Mozilla\'s "intermediate" configuration' in compliance, result.stdout[-3000:]
    assert [name for name, _ in issues] in ([], ["certificate_path_validation"]), issues
    assert "Supported curves:                  X25519, secp256r1, secp384r1\n" in result.stdout
    assert "OK - Supported" in result.stdout.split("TLS Extended Master Secret Extension", 1)[1][:200]
    # the one left: the certificate is valid for the clients that trust the exported one
    verified = client("openssl", "verify", "-CAfile", running_lab["ca_file"], running_lab["ca_file"])
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_slow_headers_client_is_cut_off_after_the_timeout(running_lab):
    script = f"""
import socket, time
s = socket.create_connection(("{hosts(running_lab, "lb")[0]["public_address"]}", 80), timeout=30)
s.sendall(b"GET / HTTP/1.1\\r\\nHost: slow\\r\\n")
start, answer = time.monotonic(), b""
for n in range(25):  # one header line a second, never the blank line that ends the head
    try:
        s.sendall(b"X-Slow-%d: y\\r\\n" % n)
        s.settimeout(1)
        chunk = s.recv(4096)
        if not chunk:
            break
        answer += chunk
    except socket.timeout:
        continue
    except OSError:
        break
print(round(time.monotonic() - start, 1), answer.split(b"\\r\\n")[0].decode())
"""
    result = client(sys.executable, "-c", script, timeout=60)
    seconds, _, status = result.stdout.strip().partition(" ")
    print(f"slow-headers client cut off after {seconds} s with {status!r}")
    assert 8 <= float(seconds) <= 16 and " 408 " in status + " ", result.stdout + result.stderr


# runtime configuration: a re-minted certificate reaches the running hosts ------------------------------------


def parameter(running_lab, command: str, name: str, value: str | None = None) -> str:
    """get-parameter / put-parameter in the AWS API stand-in (the value on standard input, never argv)."""
    result = aws_api(load_state(), command, name, input=value)
    assert result.returncode == 0, result.stderr
    return result.stdout


def served_fingerprint(address: str) -> str:
    """The certificate a load balancer serves now, seen from the lab's internet."""
    result = client(
        "sh",
        "-c",
        f"openssl s_client -connect {address}:443 </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
    )
    return result.stdout.strip()


def fingerprint(pem: str) -> str:
    result = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256"], input=pem, capture_output=True, text=True
    )
    return result.stdout.strip()


def sync_manifest(host: str) -> dict:
    return {e["name"]: e for e in json.loads(guest(host, "cat", "/etc/webinfra/config-sync.json").stdout)["entries"]}


def test_day_two_a_rotated_certificate_reaches_every_load_balancer_without_a_failed_request(healthy_lab, tmp_path):
    """Issue 14: `scripts/lab update --replace lb-tls-cert`, what `pulumi up --replace <its URN>` does, and what
    `pulumi up` does by itself in the certificate's last 30 days (early_renewal_hours): a new certificate for
    the same key. Under 20 reads/s and 5 writes/s (3 s timeout) whose clients pin the load balancers' public
    key (nobody can trust a self-signed certificate before it is made): the new certificate reaches both load
    balancers through SSM, installed after HAProxy checked it and reloaded gracefully (the same master), and
    the declared smoke test, run again with it, passes only once it is served."""
    url, names = healthy_lab["url"], web_names(healthy_lab)
    lbs = {lb["name"]: lb["public_address"] for lb in hosts(healthy_lab, "lb")}
    exported = pathlib.Path(CA).read_text()
    pinned = tmp_path / "pinned.pem"
    pinned.write_text(exported)
    ids = {h.name: h.instance_id for h in load_state().hosts}
    masters = {lb: guest(lb, "systemctl", "show", "-p", "MainPID", "--value", "haproxy").stdout.strip() for lb in lbs}

    out, seconds, output = update_under_load(
        url, names, "day-two-certificate", duration=150, replace=("lb-tls-cert",), pin_key_of=str(pinned)
    )
    print(output)
    rotated = pathlib.Path(CA).read_text()  # the new exported certificate
    assert fingerprint(rotated) != fingerprint(exported)
    assert "+- SelfSignedCert" in output and "[--replace]" in output and "+- Instance" not in output, output
    assert "smoke-test-run" in output and "secrets-lb-certificate-parameter" in output, output
    # The update waits (its smoke test) for the load balancer that serves the site; the other one takes the
    # new certificate at its next webinfra-config-sync run, within its 30 s timer (CI's run of stop 23 read
    # it 20 s after the update: still the old one, valid, with the same key).
    updated_at = time.monotonic()

    def served_everywhere() -> dict | None:
        served = {lb: served_fingerprint(address) for lb, address in lbs.items()}
        return served if set(served.values()) == {fingerprint(rotated)} else None

    served = wait_until("the new certificate served by every load balancer", served_everywhere, 75, 2)
    print(
        f"certificate rotated (--replace lb-tls-cert): update {seconds:.0f} s, smoke test passed with the new one; "
        f"every load balancer served it {time.monotonic() - updated_at:.0f} s after the update; "
        f"{len(out['failed_reads'])}/{out['reads']} reads failed, {len(out['acknowledged'])} writes acknowledged, "
        f"{len(out['missing'])} missing; served: {served}"
    )
    assert out["failed_reads"] == [] and out["missing"] == [] and out["split_brains"] == [], out["failed_reads"][:5]
    assert {h.name: h.instance_id for h in load_state().hosts} == ids, "a host was replaced"
    for lb in lbs:
        # a graceful reload: the same HAProxy master, and the journal says what happened (no key in it)
        assert guest(lb, "systemctl", "show", "-p", "MainPID", "--value", "haproxy").stdout.strip() == masters[lb]
        journal = guest(lb, "journalctl", "-u", "webinfra-config-sync", "--no-pager", "-o", "cat").stdout
        assert "lb-certificate: installed" in journal and "PRIVATE KEY" not in journal, journal[-2000:]
    assert smoke(url, web_names(healthy_lab)).returncode == 0  # with the exported certificate, as clients now


def test_a_database_certificate_the_replicas_would_refuse_is_not_installed(running_lab):
    from lab.mock_tls import cert_request, locally_signed_cert, private_key, self_signed_cert

    primary, replica = web_names(running_lab)[:2]
    name = sync_manifest(primary)["db-tls"]["parameter"]
    original = parameter(running_lab, "get-parameter", name)
    served = lambda: guest(  # noqa: E731
        replica,
        "sh",
        "-c",
        f"openssl s_client -starttls mysql -connect {hosts(running_lab, 'web')[0]['address']}:3306 "
        "</dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256",
    ).stdout.strip()
    before = served()
    assert before == fingerprint(original)
    # a certificate for the same address, signed by a CA that is not the stack's
    ca_key = private_key({"algorithm": "ECDSA", "ecdsaCurve": "P256"})["privateKeyPem"]
    ca_cert = self_signed_cert(
        {
            "privateKeyPem": ca_key,
            "subject": {"commonName": "not the stack's CA"},
            "isCaCertificate": True,
            "validityPeriodHours": 24,
            "allowedUses": ["cert_signing"],
        }
    )["certPem"]
    key = private_key({"algorithm": "ECDSA", "ecdsaCurve": "P256"})["privateKeyPem"]
    address = hosts(running_lab, "web")[0]["address"]
    request = cert_request({"privateKeyPem": key, "subject": {"commonName": address}, "ipAddresses": [address]})[
        "certRequestPem"
    ]
    stranger = (
        locally_signed_cert(
            {
                "certRequestPem": request,
                "caCertPem": ca_cert,
                "caPrivateKeyPem": ca_key,
                "validityPeriodHours": 24,
                "allowedUses": ["server_auth"],
            }
        )["certPem"]
        + key
    )
    parameter(running_lab, "put-parameter", name, stranger)
    try:
        refused = guest(primary, "systemctl", "start", "webinfra-config-sync.service", timeout=120)
        journal = guest(
            primary, "journalctl", "-u", "webinfra-config-sync", "--no-pager", "-o", "cat", "-n", "20"
        ).stdout
    finally:
        parameter(running_lab, "put-parameter", name, original)
    assert refused.returncode != 0 and "db-tls: REFUSED, the installed one stays" in journal, journal
    assert served() == before
    assert guest(primary, "systemctl", "start", "webinfra-config-sync.service", timeout=120).returncode == 0
    # replication over TLS still works: a new connection from the replica verifies the primary
    sql(replica, "STOP SLAVE; START SLAVE")
    stored = post_message(running_lab["url"], "after the refused certificate")
    wait_until(
        f"the write on {replica}",
        lambda: sql(replica, f"SELECT COUNT(*) FROM webinfra.messages WHERE id={stored['id']}") == "1",
        30,
    )


# monitoring ----------------------------------------------------------------------------------------------


def metrics_in_the_aws_stand_in(running_lab) -> dict:
    result = aws_api(load_state(), "metrics", "webinfra/lab")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_hosts_publish_health_metrics_every_minute(running_lab):
    count = len(web_names(running_lab))
    replicas = web_names(running_lab)[1:]

    def published():
        metrics = metrics_in_the_aws_stand_in(running_lab)
        wanted = {"HealthyBackends/lb-01": count, **{f"ReplicationRunning/{r}": 1 for r in replicas}}
        return metrics if all(metrics.get(k) == v for k, v in wanted.items()) else None

    metrics = wait_until("health metrics in CloudWatch (the stand-in)", published, 150, 5)
    print(f"metrics published by the hosts: {metrics}")
    for replica in replicas:
        assert metrics[f"ReplicationLagSeconds/{replica}"] <= 5


def haproxy_server_state(server: str) -> str:
    """The server's state in lb-01's HAProxy (UP, DOWN, ...), as lab/health.py reads it."""
    return health.backend_states("lb-01").get(server, "unknown")


# 4 -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["kill", "blackhole"])
def test_a_web_server_lost_under_load_costs_no_read_and_rejoins_with_every_write(healthy_lab, fault):
    """`kill`: the host powers off (its port goes quiet). `blackhole`: it keeps running, but every packet
    to or from it vanishes (no RST, no ICMP), as an instance whose network died. Readers (a 3 s client
    timeout) must see no failure and no read slower than 2 s; a write may fail only if it was in flight
    to the lost server; every acknowledged write reaches every database once the server is back."""
    running_lab = healthy_lab
    url, victim = running_lab["url"], web_names(running_lab)[-1]
    rate, duration = 20, 25
    reads_began = time.monotonic()
    reads = stream(url, rate, duration, timeout=3, cacert=CA)
    writes_began = time.monotonic()
    writes = stream(url + "api/messages", 5, duration, timeout=3, cacert=CA, concurrency=2, write=True)
    time.sleep(5)
    lost_at = time.monotonic()
    lab("kill" if fault == "kill" else "blackhole", victim)
    read_report = keep_loadgen_report(f"{fault}-web-reads", json.loads(reads.communicate(timeout=duration + 60)[0]))
    write_report = keep_loadgen_report(f"{fault}-web-writes", json.loads(writes.communicate(timeout=duration + 60)[0]))
    read_records, write_records = read_report["records"], write_report["records"]
    since = lost_at - reads_began
    effect = disruption(read_records, since)
    failed_reads = [r for r in read_records if r["status"] != 200]
    slowest = max(r["latency"] for r in read_records if r["t"] + r["latency"] >= since)
    failed_writes = [r for r in write_records if r["status"] != 201]
    acknowledged = [r["id"] for r in write_records if r["status"] == 201]
    served_after = {r["server"] for r in read_records if r["t"] > since + 3}
    print(
        f"{fault} {victim} under {rate} reads/s (8 concurrent, 3 s timeout) and 5 writes/s: "
        f"{read_report['sent']} reads, {len(failed_reads)} failed, slowest after the fault {slowest:.2f} s, "
        f"{len(effect['disturbed'])} slower than 0.5 s; {write_report['sent']} writes, {len(acknowledged)} "
        f"acknowledged, {len(failed_writes)} failed {[(r['t'], r['status']) for r in failed_writes]}; "
        f"served afterwards by {sorted(served_after)}"
    )
    assert not failed_reads, failed_reads
    assert slowest <= 2.0, effect["disturbed"]
    # A write fails only if it was on its way to the lost server: started before HAProxy took the
    # server out (about 2 s), at most one per writer (2), and none after.
    writes_since = lost_at - writes_began
    assert len(failed_writes) <= 2, failed_writes
    assert all(writes_since - 3.5 <= r["t"] <= writes_since + 2.5 for r in failed_writes), failed_writes
    assert victim not in served_after and served_after
    assert haproxy_server_state(victim) == "DOWN", "HAProxy's metrics do not show the lost server down"
    named = health.problems()
    assert f"{victim} {'not running' if fault == 'kill' else 'black-holed'}" in named, named
    dead = smoke(url, web_names(running_lab))
    assert dead.returncode == 1 and f"rotation: {victim} not in the rotation" in dead.stdout, dead.stdout + dead.stderr

    lab("start" if fault == "kill" else "heal", victim)
    began = time.monotonic()
    wait_until(f"{victim} back in rotation", lambda: victim in load(url, 10, cacert=CA)["servers"], 180, 2)
    rejoined = time.monotonic() - began
    if fault == "kill":
        # Writes were flowing when it died: the primary held a stream to a dead peer. The primary ends it
        # itself within seconds (webinfra-db-end-dead-streams: no TCP acknowledgement for 2 s), long before
        # the replica is back; one still there would be ended by the returning replica's MariaDB before it
        # starts (webinfra-db-release-stream). Either way the replica does not wait for retransmissions.
        address = next(h["address"] for h in hosts(running_lab, "web") if h["name"] == victim)
        primary = primary_of(web_names(running_lab))
        ended = guest(primary, "journalctl", "-b", "--no-pager", "-o", "cat", "-u", "webinfra-db-end-dead-streams")
        released = guest(victim, "journalctl", "-b", "--no-pager", "-u", "mariadb").stdout
        by_primary = any(
            line.startswith("webinfra-db-end-dead-streams: ended binary-log dump thread") and f" to {address}:" in line
            for line in ended.stdout.splitlines()
        )
        assert by_primary or "webinfra-db-release-stream: ended the dead stream" in released, (
            ended.stdout[-2000:] + released[-2000:]
        )
        print(f"the dead stream was ended by {'the primary' if by_primary else 'the returning replica'}")
    wait_until("HAProxy's metrics show it up again", lambda: haproxy_server_state(victim) == "UP", 30, 1)
    ids = ",".join(map(str, acknowledged))
    for host in web_names(running_lab):
        wait_until(
            f"every acknowledged write on {host}",
            lambda: sql(host, f"SELECT COUNT(*) FROM webinfra.messages WHERE id IN ({ids})") == str(len(acknowledged)),  # noqa: B023 (called at once)
            30,
        )
    _, still = health.wait_healthy(60)
    assert not still, still
    print(
        f"{victim} back in rotation {rejoined:.1f} s after `{'start' if fault == 'kill' else 'heal'}`, "
        f"with all {len(acknowledged)} acknowledged writes, as every other database"
    )


# 5 -------------------------------------------------------------------------------------------------------


def test_the_primary_reboots_and_everything_returns_by_itself(healthy_lab):
    """The primary reboots (it comes back read-only, as every server does): either it is back before the
    failover controller gives up on it, which makes it writable again, or a replica was promoted and it
    returns as that one's replica. Either way, with no person: one writable server, every other one
    replicating from it, writes through the load balancer replicated everywhere."""
    running_lab = healthy_lab
    url, names = running_lab["url"], web_names(running_lab)
    primary = names[0]
    address = {h["name"]: h["address"] for h in hosts(running_lab, "web")}
    # /run is a tmpfs of each boot: a marker there is gone once the host has really rebooted
    assert guest(primary, "touch", "/run/before-reboot").returncode == 0
    guest(primary, "systemctl", "reboot")
    began = time.monotonic()

    def back():
        result = guest(primary, "curl", "-fsS", "-m", "2", "http://127.0.0.1/health", timeout=15)
        return result.returncode == 0 and '"healthy":true' in result.stdout

    time.sleep(2)
    wait_until(f"{primary} healthy after reboot", back, 180, 1)
    took = time.monotonic() - began
    assert guest(primary, "test", "-e", "/run/before-reboot").returncode == 1, "the host did not reboot"
    for service in SERVICES["web"]:
        assert guest(primary, "systemctl", "is-active", service).stdout.strip() == "active", service
    stored = wait_until(
        "a write through the LB after the reboot", lambda: _try_post(url, "after the primary's reboot"), 60, 2
    )
    (writable,) = writable_servers(names)
    print(
        f"{primary} rebooted and healthy again after {took:.1f} s; the primary is now {writable}"
        + (" (it was back in time)" if writable == primary else " (a replica was promoted meanwhile)")
    )
    for replica in (h for h in names if h != writable):
        wait_until(
            f"replication to {replica} resumed",
            lambda: sql(replica, f"SELECT COUNT(*) FROM webinfra.messages WHERE id={stored['id']}") == "1",  # noqa: B023 (called at once)
            60,
            1,
        )
        status = guest(replica, "mariadb", "-e", "SHOW SLAVE STATUS\\G").stdout
        assert "Slave_IO_Running: Yes" in status and "Slave_SQL_Running: Yes" in status, status
        assert f"Master_Host: {address[writable]}" in status, status
    if writable != primary:  # back to the lab's first layout for the tests after this one
        restored = promote()
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert writable_servers(names) == [primary], restored.stdout


def _try_post(url, text):
    try:
        return post_message(url, text)
    except AssertionError:
        return None


# rate limit (after the load tests: it counts every request from the client's address) ----------------------


def test_a_burst_over_the_rate_limit_gets_429_and_the_service_stays_up(healthy_lab):
    running_lab = healthy_lab
    url = running_lab["url"]
    time.sleep(11)  # let the 10 s window forget the earlier tests
    burst = load(url + "health", 900, duration=60, cacert=CA, concurrency=16)
    print(f"burst of {burst['sent']} requests in {burst['elapsed']} s from one address: {burst['statuses']}")
    assert burst["statuses"].get("429", 0) > 0 and burst["statuses"].get("200", 0) >= 500, burst["statuses"]
    assert set(burst["statuses"]) <= {"200", "429"}, burst["statuses"]
    # meanwhile the service is up for everyone else (another client address: a host in the VPC)
    lb = hosts(running_lab, "lb")[0]
    other = guest(
        web_names(running_lab)[0],
        "curl",
        "-sk",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        f"https://{lb['address']}/health",
    )
    assert other.stdout == "200", other.stdout + other.stderr
    # and the limited client is served again once its rate has decayed (HAProxy weighs in the
    # previous 10 s period, and denied requests count too: a client that keeps hammering stays out)
    wait_until(
        "the limited client served again", lambda: load(url + "health", 5, cacert=CA)["statuses"] == {"200": 5}, 40, 3
    )


# database failover (its own lab, with three web servers) -------------------------------------------------


def writable_servers(names: list[str]) -> list[str]:
    return [
        h for h in names if guest(h, "mariadb", "-N", "-B", "-e", "SELECT @@global.read_only").stdout.strip() == "0"
    ]


class MixedLoad:
    """20 reads/s and 5 writes/s (two writers at once, unless told otherwise) from the lab's internet for
    `duration` seconds, a 3 s client timeout, every server's read_only sampled throughout: what a
    failover test runs under. (The lab's rate limit is 600 requests per 10 s from one client.)"""

    rate = 20

    def __init__(
        self,
        url: str,
        names: list[str],
        duration: int,
        *,
        write_rate: int = 5,
        writers: int = 2,
        pin_key_of: str | None = None,
    ):
        self.url, self.names, self.duration = url, names, duration
        self.write_rate, self.writers = write_rate, writers
        self.pin_key_of = pin_key_of  # trust the certificate's public key, not the certificate (a rotation)

    def __enter__(self):
        self.sampler = WritableSampler(self.names).__enter__()
        self.reads_began = time.monotonic()
        self.reads = stream(self.url, self.rate, self.duration, timeout=3, cacert=CA, pin_key_of=self.pin_key_of)
        self.writes_began = time.monotonic()
        self.writes = stream(
            self.url + "api/messages",
            self.write_rate,
            self.duration,
            timeout=3,
            cacert=CA,
            concurrency=self.writers,
            write=True,
            pin_key_of=self.pin_key_of,
        )
        return self

    def stop(self) -> None:
        """End both streams now (their requests under way finish): `finish` then has their reports."""
        for process in (self.reads, self.writes):
            process.terminate()

    def finish(self, label: str) -> None:
        """Wait for both streams' reports (kept for a failure's diagnostics)."""
        self.read_report = keep_loadgen_report(
            f"{label}-reads", json.loads(self.reads.communicate(timeout=self.duration + 60)[0])
        )
        self.write_report = keep_loadgen_report(
            f"{label}-writes", json.loads(self.writes.communicate(timeout=self.duration + 60)[0])
        )

    def __exit__(self, *exc):
        self.sampler.__exit__(*exc)
        for process in (self.reads, self.writes):
            if process.poll() is None:
                process.kill()

    def figures(self, fault_at: float, primary: str, failed_reads_since: float | None = None) -> dict:
        """Failed reads (since `failed_reads_since`, or all), the slowest read after the fault, the longest
        time with no write acknowledged around it, and the acknowledged writes missing on `primary` (row
        by row)."""
        reads, writes = self.read_report["records"], self.write_report["records"]
        since_reads, since_writes = fault_at - self.reads_began, fault_at - self.writes_began
        counted = (failed_reads_since or self.reads_began) - self.reads_began
        acknowledged = [r["id"] for r in writes if r["status"] == 201]
        done = sorted(r["t"] + r["latency"] for r in writes if r["status"] == 201)
        around = [t for t in done if t >= since_writes - 1]
        ids = ",".join(map(str, acknowledged))
        present = sql(primary, f"SELECT GROUP_CONCAT(id ORDER BY id) FROM webinfra.messages WHERE id IN ({ids})")
        return {
            "reads": self.read_report["sent"],
            "failed_reads": [r for r in reads if r["status"] != 200 and r["t"] >= counted],
            "slowest_read": max(r["latency"] for r in reads if r["t"] + r["latency"] >= since_reads),
            "writes": self.write_report["sent"],
            "acknowledged": acknowledged,
            "failed_writes": [r for r in writes if r["status"] != 201],
            "writes_back": max((b - a for a, b in itertools.pairwise(around)), default=None),
            # GROUP_CONCAT of no row is NULL: none of them there
            "missing": sorted(set(acknowledged) - {int(i) for i in present.split(",") if i and i != "NULL"}),
        }

    def summary(self, figures: dict) -> str:
        back = figures["writes_back"]
        return (
            f"{figures['reads']} reads, {len(figures['failed_reads'])} failed, slowest after the fault "
            f"{figures['slowest_read']:.2f} s; {figures['writes']} writes, {len(figures['acknowledged'])} "
            f"acknowledged, {len(figures['failed_writes'])} failed, no write acknowledged for "
            f"{back if back is None else round(back, 1)} s at most; acknowledged writes missing on the primary: "
            f"{len(figures['missing'])}; {len(self.sampler.rounds)} samples of every server's read_only (at most "
            f"{self.sampler.spacing():.2f} s apart), split brains: {len(self.sampler.split_brains())}"
        )


# A plain kill under 2 writers was a variant too: the kill under 8 writers is the same fault under more
# writes in flight, so the suite keeps that one (its time: CI's 30 minutes).
@pytest.mark.parametrize("fault", ["blackhole", "kill-under-8-writers"])
def test_the_primary_lost_under_load_fails_over_by_itself_with_no_failed_read_and_no_lost_write(healthy_lab, fault):
    """Issue 13. The primary is cut off (`blackhole`: it runs on, every packet to or from it vanishes)
    under 20 reads/s and 5 writes/s (3 s client timeout), or dies (`kill`: its host powers off) under 8
    concurrent writers (25 writes/s; as many writes in flight as there are writers). With no
    person involved: no read fails; writes are back within 10 s; every acknowledged write is on the
    new primary, row by row; never two writable servers (sampled every ~0.2 s on every server,
    through the return); the old primary comes back read-only and rejoins as a replica by itself."""
    running_lab = healthy_lab
    url, names = running_lab["url"], web_names(running_lab)
    (old,) = writable_servers(names)
    wait_until("automatic failover armed", lambda: failover_state()["armed"], 60, 1)
    writers: dict[str, int] = {"write_rate": 25, "writers": 8} if fault == "kill-under-8-writers" else {}
    killed = fault != "blackhole"
    # 20 s after the loss: writes must be back within 10 s of it
    with MixedLoad(url, names, 25, write_rate=writers.get("write_rate", 5), writers=writers.get("writers", 2)) as mixed:
        time.sleep(5)
        lost_at = time.monotonic()
        lab("kill" if killed else "blackhole", old)
        mixed.finish(f"failover-{fault}")
        (new,) = writable_servers([h for h in names if h != old])
        lab("start" if killed else "heal", old)
        returned_at = time.monotonic()
        # A transaction binary-logged on the old primary but never acknowledged (in flight when it died:
        # seen once in CI under 8 writers, 0-1-744) is a write no one else has: it stays out, read-only,
        # and the controller says so (the issue allows exactly this).
        ending = wait_until(
            f"{old} rejoins as {new}'s replica, or is kept out",
            lambda: rejoined_or_kept_out(running_lab, old, new),
            120,
            1,
        )
        rejoin_took = time.monotonic() - returned_at
        time.sleep(2)  # the sampler sees it settled
    figures = mixed.figures(lost_at, new)
    state = failover_state()
    print(
        f"primary {old} {fault} under {mixed.rate} reads/s + {mixed.write_rate} writes/s ({mixed.writers} writers): "
        f"{mixed.summary(figures)}; "
        f"new primary {new}; {old} {ending} {rejoin_took:.1f} s after "
        f"`{'start' if killed else 'heal'}`; controller: {state['events'][-3:]}"
    )
    assert not figures["failed_reads"], figures["failed_reads"]
    assert figures["writes_back"] is not None and figures["writes_back"] <= 10, figures
    assert not figures["missing"], figures["missing"]
    assert not mixed.sampler.split_brains(), mixed.sampler.split_brains()[:5]
    assert mixed.sampler.spacing() < 2.0  # the sampling itself kept up
    assert ending == "rejoined" or sql(old, "SELECT @@global.read_only") == "1", ending
    if ending == "kept out":
        # The README's way out, as a person would take it: the server's data dropped and seeded again.
        reseeded = subprocess.run(
            ["scripts/reseed", "--lab", old], cwd=REPO, capture_output=True, text=True, timeout=600
        )
        assert reseeded.returncode == 0, reseeded.stdout[-2000:] + reseeded.stderr[-2000:]
        print(
            f"{old} kept out: it held a write never acknowledged; scripts/reseed --lab {old}: "
            f"{reseeded.stdout.strip().splitlines()[-1]}"
        )
    rejoined_with_everything(old, figures["acknowledged"], names)


def rejoined_with_everything(old: str, acknowledged: list[int], names: list[str]) -> None:
    """The old primary, a replica again, has every acknowledged write; the lab is healthy; web-01 the
    primary again for the tests after this one."""
    ids = ",".join(map(str, acknowledged))
    wait_until(
        f"every acknowledged write on {old}",
        lambda: sql(old, f"SELECT COUNT(*) FROM webinfra.messages WHERE id IN ({ids})") == str(len(acknowledged)),
        60,
    )
    _, still = health.wait_healthy(120)
    assert not still, still
    back_to_the_first_layout(names)


def back_to_the_first_layout(names: list[str]) -> None:
    """web-01 the primary again (by hand, scripts/promote), for the tests after this one; with two web
    servers the one replica is the one promoted. Then a write must reach every replica and failover be
    armed again: after a promotion, a replica's stream from a primary that still had a dump thread for
    it from before was seen stalled for about 5 s (its next test then started disarmed)."""
    if writable_servers(names) != [names[0]]:
        restored = promote()
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert writable_servers(names) == [names[0]], restored.stdout
    marker = f"layout check {time.time():.3f}"
    sql(names[0], f"INSERT INTO webinfra.messages (text, host) VALUES ('{marker}', 'test')")
    for replica in names[1:]:
        wait_until(
            f"{replica} receives a write after the promotion",
            lambda replica=replica: (
                sql(replica, f"SELECT COUNT(*) FROM webinfra.messages WHERE text = '{marker}'") == "1"
            ),
            30,
        )
    wait_until("automatic failover armed again", lambda: failover_state()["armed"], 60, 1)


def rejoined_or_kept_out(running_lab: dict, old: str, primary: str) -> str | None:
    """How an old primary ended: "rejoined" (it replicates from `primary`), "kept out" (the deciding
    controller's log says it holds writes the primary has not), or None (neither yet)."""
    if replicates_from(running_lab, old, primary):
        return "rejoined"
    journal = guest(active_balancer(), "journalctl", "-u", "webinfra-failover", "--no-pager").stdout
    return "kept out" if f"{old} holds writes the primary {primary} has not" in journal else None


def replicates_from(running_lab: dict, replica: str, primary: str) -> bool:
    status = guest(replica, "mariadb", "-e", "SHOW SLAVE STATUS\\G").stdout
    address = next(h["address"] for h in hosts(running_lab, "web") if h["name"] == primary)
    return f"Master_Host: {address}" in status and "Slave_IO_Running: Yes" in status


@pytest.mark.parametrize("frozen", [1, 15])
def test_the_primarys_database_frozen_fails_over_only_when_frozen_long_and_takes_no_write_once_it_thaws(
    healthy_lab, frozen
):
    """Issue 13. The primary's mariadbd stopped by SIGSTOP under mixed load (3 s client timeout): alive to
    the kernel (connections are accepted, never answered) but deaf. For 1 s: no failover, the primary
    stays, no read fails. For 15 s: a failover, then SIGCONT: the old primary, back with its sessions
    and queued statements of 15 s ago, must not take a write: never two writable servers, no
    acknowledged write missing on the new primary; it rejoins, or (if a statement queued before the
    freeze committed on it alone, never acknowledged) stays out, read-only, named in the controller's log."""
    running_lab = healthy_lab
    url, names = running_lab["url"], web_names(running_lab)
    (old,) = writable_servers(names)
    wait_until("automatic failover armed", lambda: failover_state()["armed"], 60, 1)
    # 10 s after a 1 s freeze (twice failure_after, 5 s), 15 s after a 15 s one (the old primary thawed)
    with MixedLoad(url, names, duration=(10 if frozen == 1 else 15) + 5 + frozen) as mixed:
        time.sleep(5)
        frozen_at = time.monotonic()
        guest(old, "pkill", "-STOP", "-x", "mariadbd", check=True)
        time.sleep(frozen)
        guest(old, "pkill", "-CONT", "-x", "mariadbd", check=True)
        mixed.finish(f"frozen-{frozen}s")
        now = writable_servers(names)
        time.sleep(2)  # the sampler sees it settled
    assert len(now) == 1, now
    (primary,) = now
    figures = mixed.figures(frozen_at, primary)
    state = failover_state()
    print(
        f"primary {old}'s mariadbd frozen {frozen} s under {mixed.rate} reads/s + {mixed.write_rate} writes/s: "
        f"{mixed.summary(figures)}; primary now {primary}; controller: {state['events'][-3:]}"
    )
    assert not figures["failed_reads"], figures["failed_reads"]
    assert not figures["missing"], figures["missing"]
    assert not mixed.sampler.split_brains(), mixed.sampler.split_brains()[:5]
    assert mixed.sampler.spacing() < 2.0
    if frozen == 1:
        assert primary == old, state  # 1 s is no death: failure_after is 5 s
        assert figures["writes_back"] is not None and figures["writes_back"] <= 5, figures
        return
    assert primary != old, state
    assert figures["writes_back"] is not None and figures["writes_back"] <= 10, figures
    ending = wait_until(f"{old} rejoins or is kept out", lambda: rejoined_or_kept_out(running_lab, old, primary), 60, 1)
    binlogs = {h: sql(h, "SELECT @@global.gtid_binlog_pos") for h in (old, primary)}
    print(f"{old} after SIGCONT: {ending} (binary logs at {binlogs})")
    assert sql(old, "SELECT @@global.read_only") == "1"
    if ending == "kept out":
        return  # a test after this one finds the lab unhealthy and rebuilds it (healthy_lab)
    _, still = health.wait_healthy(120)
    assert not still, still
    back_to_the_first_layout(names)


def test_the_active_load_balancer_killed_then_the_primary_the_other_one_takes_over_both(healthy_lab):
    """Issues 12 and 13. The active load balancer (the one whose controller decides) is killed under mixed
    load: the standby becomes MASTER and moves the Elastic IP to itself in the EC2 API, service resumes
    through it within 15 s (only the requests in flight on the dead one fail, none after), and its
    controller takes over the decision, arming itself only on what it sees itself (semi-sync on and a
    replica with everything). Then the primary dies: it fails over, no read fails, writes are back within
    10 s, no acknowledged write is missing, never two writable servers. Both come back: the old primary
    rejoins, the old active balancer as the standby (nopreempt: no second interruption)."""
    running_lab = healthy_lab
    url, names = running_lab["url"], web_names(running_lab)
    (old,) = writable_servers(names)
    wait_until("automatic failover armed", lambda: failover_state()["armed"], 60, 1)
    before = lab_status()
    deciding = active_balancer()
    (standby,) = [h["name"] for h in hosts(before, "lb") if h["name"] != deciding]
    assert before["floating_address_holder"] == before["elastic_ip_holder"] == deciding, before
    with MixedLoad(url, names, duration=50) as mixed:
        time.sleep(5)
        balancer_killed_at, kill_wall = time.monotonic(), time.time()
        lab("kill", deciding)  # its port goes quiet first, then its processes die

        def taken_over():
            with contextlib.suppress(AssertionError):  # none active yet: the other one is not MASTER
                state = failover_state()
                return state["controller"] != deciding and state["armed"]
            return False

        wait_until("the other load balancer's controller armed", taken_over, 30, 0.5)
        armed_after = time.monotonic() - balancer_killed_at
        time.sleep(3)  # HAProxy on the new active one settles
        moved = lab_status()
        primary_killed_at = time.monotonic()
        lab("kill", old)
        time.sleep(15)  # writes are back within 10 s: the load ends 15 s after the kill
        mixed.stop()
        mixed.finish("failover-after-balancer")
        (new,) = writable_servers([h for h in names if h != old])
        lab("start", old)
        lab("start", deciding)
        wait_until(f"{old} rejoins as {new}'s replica", lambda: replicates_from(running_lab, old, new), 120, 1)
        time.sleep(2)
    # The load balancer's kill, as the readers saw it (times into the read stream)
    reads = mixed.read_report["records"]
    lb_fault, primary_fault = balancer_killed_at - mixed.reads_began, primary_killed_at - mixed.reads_began
    outage, outage_from = longest_outage([r for r in reads if r["t"] < primary_fault], lb_fault)
    in_flight = [r for r in reads if r["status"] != 200 and r["t"] < primary_fault]
    standby_host = load_state().host(standby)
    master_after = logged_at(standby_host, "webinfra-lb-state", "now MASTER") - kill_wall
    eip_after = logged_at(standby_host, "webinfra-lb-takeover", "now points at") - kill_wall
    figures = mixed.figures(primary_killed_at, new, failed_reads_since=primary_killed_at - 1)
    state = failover_state()
    print(
        f"active load balancer {deciding} killed under {mixed.rate} reads/s + {mixed.write_rate} writes/s: "
        f"{standby} MASTER {master_after:.2f} s after the kill began, the Elastic IP moved in the EC2 API at "
        f"{eip_after:.2f} s, {len(in_flight)} reads failed (in flight on the dead one), longest time without a "
        f"successful read {outage:.2f} s (from {outage_from - lb_fault:+.2f} s); {state['controller']}'s "
        f"controller armed {armed_after:.1f} s later; then primary {old} killed: {mixed.summary(figures)} "
        f"(reads counted from 1 s before the primary's kill); new primary {new}; controller: {state['events'][-3:]}"
    )
    assert (moved["floating_address_holder"], moved["elastic_ip_holder"]) == (standby, standby), moved
    assert 0 < master_after < 15 and master_after <= eip_after < 30
    assert outage < 15, "service did not resume through the standby"
    resumed = outage_from + outage
    assert all(r["status"] == 200 for r in reads if resumed <= r["t"] < primary_fault - 1), "failures after it resumed"
    assert len(in_flight) <= 16
    assert state["controller"] == standby
    assert not figures["failed_reads"], figures["failed_reads"]
    assert figures["writes_back"] is not None and figures["writes_back"] <= 10, figures
    assert not figures["missing"], figures["missing"]
    assert not mixed.sampler.split_brains(), mixed.sampler.split_brains()[:5]
    wait_until(
        f"{deciding} back as the standby",
        lambda: guest(deciding, "cat", "/run/webinfra/lb-state").stdout.strip() == "BACKUP",
        120,
        1,
    )
    again = lab_status()
    assert (again["floating_address_holder"], again["elastic_ip_holder"]) == (standby, standby), again
    _, still = health.wait_healthy(120)
    assert not still, still
    back_to_the_first_layout(names)


def test_the_old_primary_returning_cut_off_from_its_peers_stays_read_only_then_rejoins(healthy_lab):
    """Issue 13. The primary dies under mixed load and a replica is promoted; the old primary then boots
    again with its network cut (black-holed: it reaches neither the new primary nor the controllers,
    and nothing reaches it) for 12 s. It must stay read-only all along (it boots so, and nothing may
    make it writable), never two writable servers, no read failing, writes back within 10 s; once its
    network is back it rejoins the new primary as a replica by itself, with every acknowledged write."""
    running_lab = healthy_lab
    url, names = running_lab["url"], web_names(running_lab)
    (old,) = writable_servers(names)
    wait_until("automatic failover armed", lambda: failover_state()["armed"], 60, 1)
    with MixedLoad(url, names, duration=45) as mixed:
        time.sleep(5)
        lost_at = time.monotonic()
        lab("kill", old)
        killed_at = time.monotonic()  # powered off: from here on it must never be writable
        new = wait_until(
            "a new primary", lambda: next(iter(writable_servers([h for h in names if h != old])), None), 30, 0.5
        )
        lab("blackhole", old)  # before it boots: it comes back with no network at all
        lab("start", old)
        booted_at = time.monotonic()
        wait_until(
            f"{old}'s database answers",
            lambda: guest(old, "mariadb", "-N", "-B", "-e", "SELECT 1").stdout.strip() == "1",
            90,
            1,
        )
        answered_after = time.monotonic() - booted_at
        time.sleep(12)
        lab("heal", old)
        healed_at = time.monotonic()
        mixed.finish("old-primary-returns-cut-off")
        wait_until(f"{old} rejoins as {new}'s replica", lambda: replicates_from(running_lab, old, new), 120, 1)
        rejoin_took = time.monotonic() - healed_at
        time.sleep(2)
    figures = mixed.figures(lost_at, new)
    old_writable = [(t, w) for t, w in mixed.sampler.rounds if t >= killed_at and w.get(old)]
    cut_off_rounds = [w for t, w in mixed.sampler.rounds if booted_at + answered_after <= t < healed_at]
    print(
        f"primary {old} killed, {new} promoted; {old} booted black-holed (its database answered "
        f"{answered_after:.1f} s after `start`), {len(cut_off_rounds)} samples of it cut off: writable in "
        f"{sum(1 for w in cut_off_rounds if w.get(old))}; healed: rejoined {new} {rejoin_took:.1f} s later. Under "
        f"{mixed.rate} reads/s + {mixed.write_rate} writes/s: {mixed.summary(figures)}"
    )
    assert cut_off_rounds and all(w.get(old) is False for w in cut_off_rounds), cut_off_rounds[:5]
    assert not old_writable, old_writable[:5]
    assert not mixed.sampler.split_brains(), mixed.sampler.split_brains()[:5]
    assert not figures["failed_reads"], figures["failed_reads"]
    assert figures["writes_back"] is not None and figures["writes_back"] <= 10, figures
    assert not figures["missing"], figures["missing"]
    rejoined_with_everything(old, figures["acknowledged"], names)


def zone_of(running_lab: dict, name: str) -> list[str]:
    """The hosts in the same availability zone (subnet) as `name`: the program's subnets are the VPC's
    first azCount /24s, the same whatever azCount (settings.subnet_cidrs)."""
    address = {h["name"]: ipaddress.ip_address(h["address"]) for h in hosts(running_lab)}
    subnets = [ipaddress.ip_network(cidr) for cidr in subnet_cidrs(load_state().vpc_cidr, MAX_AZ_COUNT)]
    zone = next(net for net in subnets if address[name] in net)
    return [host for host, a in address.items() if a in zone]


def test_the_two_zones_cut_off_from_each_other_never_two_writable_servers_and_no_acknowledged_write_lost(
    healthy_lab,
):
    """Issue 13 (the cold review's AZ split). The load balancer that decides is in one zone, the primary in
    the other; the network between the zones fails for 15 s under mixed load (each side still reaches the
    AWS API and the internet). keepalived makes both load balancers MASTER: two controllers would each
    keep a server writable (one promotes the replica it still sees, the other keeps or restores the
    primary it still sees). Only the holder of the Elastic IP decides: never two writable servers
    (sampled every ~0.2 s on every server, through the heal), no acknowledged write missing on the
    primary after it. Reads and writes during the split are counted, not bounded: this is the case where
    the stack gives up writes (and, on one side, reads) rather than risk two primaries."""
    running_lab = healthy_lab
    url, names = running_lab["url"], web_names(running_lab)
    deciding = active_balancer()
    side = zone_of(running_lab, deciding)
    if primary_of(names) in side:  # the primary must be on the other side: promote the one that is
        moved = promote()
        assert moved.returncode == 0, moved.stdout + moved.stderr
    (old,) = writable_servers(names)
    assert old not in side, (old, side)
    wait_until("automatic failover armed", lambda: failover_state()["armed"], 60, 1)
    with MixedLoad(url, names, duration=40) as mixed:
        time.sleep(5)
        split_at = time.monotonic()
        lab("split", *side)
        time.sleep(15)
        during = {
            "writable": writable_servers(names),
            "lb-state": {lb: guest(lb, "cat", "/run/webinfra/lb-state").stdout.strip() for lb in ("lb-01", "lb-02")},
            "elastic_ip": lab_status()["elastic_ip_holder"],
        }
        lab("split", "--heal")
        mixed.finish("zones-split")

        def settled():
            writable = writable_servers(names)
            if len(writable) != 1:
                return None
            others = [h for h in names if h != writable[0]]
            if all(replicates_from(running_lab, h, writable[0]) for h in others):
                return writable[0]
            return None

        primary = wait_until("one primary, every other server its replica", settled, 120, 1)
        time.sleep(2)  # the sampler sees it settled
    figures = mixed.figures(split_at, primary)
    state = failover_state()
    print(
        f"zones split for 15 s ({' '.join(side)} | the rest; {deciding} decided, {old} the primary) under "
        f"{mixed.rate} reads/s + {mixed.write_rate} writes/s: {mixed.summary(figures)}; during the split: {during}; "
        f"primary after {primary}; controller {state['controller']}: {state['events'][-4:]}"
    )
    assert not mixed.sampler.split_brains(), mixed.sampler.split_brains()[:5]
    assert len(during["writable"]) <= 1, during
    assert not figures["missing"], figures["missing"]
    assert mixed.sampler.spacing() < 2.0
    # The cut-off primary ended its streams to the replicas across the split before they could reconnect
    # (a reconnection over a live dead stream hung MariaDB 10.11.19 for good: webinfra-db-end-dead-streams).
    ended = guest(old, "journalctl", "-b", "--no-pager", "-u", "webinfra-db-end-dead-streams").stdout
    across = [h["address"] for h in hosts(running_lab, "web") if h["name"] in side]  # old is on the other side
    assert any(
        "ended binary-log dump thread" in line and f" to {a}:" in line for line in ended.splitlines() for a in across
    ), ended[-2000:]
    _, still = health.wait_healthy(120)
    assert not still, still
    back_to_the_first_layout(names)


def active_balancer() -> str:
    return failover_state()["controller"]


def failover_state(wait: float = 15) -> dict:
    """The active load balancer's failover controller's state file. None may be active for a few seconds:
    a controller started again (scripts/promote holds them), or one that found the Elastic IP newly on
    its load balancer, waits takeover_after (2.5 s) before it acts."""
    deadline = time.monotonic() + wait
    while True:
        for balancer in ("lb-01", "lb-02"):
            result = guest(balancer, "cat", "/run/webinfra-failover/state.json")
            if result.returncode == 0:
                state = json.loads(result.stdout)
                if state["active"]:
                    return {"controller": balancer, **state}
        if time.monotonic() > deadline:
            raise AssertionError(f"no active failover controller for {wait:.0f} s")
        time.sleep(0.5)


def promote(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ops.promote", "--lab", *args], cwd=REPO, capture_output=True, text=True, timeout=180
    )


def primary_of(names: list[str]) -> str:
    (writable,) = writable_servers(names)
    return writable


def update_under_load(
    url: str,
    names: list[str],
    label: str,
    *settings: str,
    duration: int,
    replace: tuple[str, ...] = (),
    pin_key_of: str | None = None,
) -> tuple[dict, float, str]:
    """`scripts/lab update --set ... [--replace ...]` (the program's plan, carried out as `pulumi up` would)
    while MixedLoad runs for `duration` seconds: (the load's figures, the update's seconds, its output)."""
    arguments = [*(f"--set={s}" for s in settings), *(f"--replace={r}" for r in replace)]
    import threading

    outcome: dict = {}

    def run() -> None:
        began = time.monotonic()
        try:
            outcome["result"] = lab("update", *arguments, timeout=duration, check=False)
        except subprocess.TimeoutExpired as timed_out:
            outcome["timed_out"] = f"{timed_out.stdout!s}"[-3000:]
        outcome["seconds"] = time.monotonic() - began

    with MixedLoad(url, names, duration, pin_key_of=pin_key_of) as load:
        time.sleep(2)
        began = time.monotonic()
        worker = threading.Thread(target=run)
        worker.start()
        worker.join(timeout=duration)
        time.sleep(3)  # and a little after it ended
        load.stop()
        load.finish(label)
        figures = load.figures(began, primary_of(names))
        figures["split_brains"] = load.sampler.split_brains()
    assert "timed_out" not in outcome, f"scripts/lab update did not end within {duration} s:\n{outcome['timed_out']}"
    result = outcome["result"]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return figures, outcome["seconds"], result.stdout


def test_day_two_changes_on_a_running_stack_with_data_under_load(healthy_lab):
    """Issue 14: `scripts/lab update` (the program's plan, with Pulumi's semantics) on the running lab under
    20 reads/s and 5 writes/s from the lab's internet (3 s timeout). First 10,000 rows, and the primary's
    binary logs purged: a replica replaying them from the start could never catch up.
    1. webCount 2 -> 3 and rateLimitPer10s 600 -> 700: web-03 is created and seeded from a consistent copy,
       no host is replaced, the running hosts reload HAProxy's backends, the controller's servers and the
       firewalls' allowlists, and HAProxy's new rate limit (a graceful reload: the same master process);
    2. instanceType on the replicas: stopped and started one at a time, the primary untouched;
    3. webCount 3 -> 2 and the rate limit back to 600: web-03 terminated, the old limit reloaded.
    Each: 0 failed GETs, every acknowledged write on the primary, never two writable servers."""
    url, names = healthy_lab["url"], web_names(healthy_lab)
    primary = primary_of(names)
    before = sql(primary, "SELECT COUNT(*) FROM webinfra.messages")
    sql(
        primary,
        "USE webinfra; INSERT INTO messages (text, host) SELECT CONCAT('day two row ', seq), 'lab' FROM seq_1_to_10000",
    )
    sql(primary, "FLUSH BINARY LOGS")
    current = sql(primary, "SHOW MASTER STATUS").split()[0]

    def purged() -> bool:
        # MariaDB keeps a log a replica's dump thread is still sending (the 10,000 rows): purge again once
        # the replicas have moved on to the new log
        sql(primary, f"PURGE BINARY LOGS TO '{current}'")
        return sql(primary, "SHOW BINARY LOGS").splitlines()[0].split()[0] == current

    wait_until("the primary's older binary logs purged", purged, 60, 1)
    (first_log,) = sql(primary, "SHOW BINARY LOGS").splitlines()[:1]
    # the earliest binary log left starts after the rows: replaying from nothing is no longer possible
    assert sql(primary, f"SELECT BINLOG_GTID_POS('{first_log.split()[0]}', 4)") != ""
    lbs = {lb["name"]: lb for lb in hosts(healthy_lab, "lb")}
    ids = {h.name: h.instance_id for h in load_state().hosts}
    masters = {lb: guest(lb, "systemctl", "show", "-p", "MainPID", "--value", "haproxy").stdout.strip() for lb in lbs}

    try:
        # 1. scale out, and a new rate limit (reloaded, nothing replaced)
        began = time.monotonic()
        out, seconds, output = update_under_load(
            url, names, "day-two-scale-out", "webCount=3", "rateLimitPer10s=700", duration=240
        )
        print(output)
        three = [*names, "web-03"]
        assert "+  Instance" in output and "web-03-instance" in output and "+- Instance" not in output, output
        total = sql(primary, "SELECT COUNT(*), SUM(CRC32(CONCAT(id, text))) FROM webinfra.messages")
        wait_until(
            "web-03 has every row",
            lambda: sql("web-03", "SELECT COUNT(*), SUM(CRC32(CONCAT(id, text))) FROM webinfra.messages") == total,
            60,
        )
        seeded = guest("web-03", "journalctl", "-u", "cloud-final", "--no-pager", "-o", "cat").stdout
        assert "seeding from a consistent copy" in seeded, seeded[-2000:]
        applied = wait_until(
            "both load balancers serving the new rate limit",
            lambda: (
                all("int(700)" in guest(lb, "cat", "/etc/haproxy/webinfra-runtime.cfg").stdout for lb in lbs)
                and time.monotonic() - began
            ),
            60,
        )
        served = load(url, 30, rate=10, cacert=CA)["servers"]
        assert "web-03" in served, served
        # HAProxy names its configuration only to a request that asks for it (the smoke test)
        plain = client("curl", "-sI", "--cacert", CA, url).stdout.lower()
        assert "x-served-by" in plain and "x-webinfra-config" not in plain, plain
        print(
            f"webCount 2 -> 3 and rateLimitPer10s 600 -> 700 with {int(before) + 10000} rows, binary logs purged: "
            f"update {seconds:.0f} s, the new limit on both load balancers {applied:.0f} s after it began; "
            f"{len(out['failed_reads'])}/{out['reads']} reads failed; {len(out['acknowledged'])} writes acknowledged, "
            f"{len(out['missing'])} missing; web-03 has all {total.split()[0]} rows"
        )
        assert out["failed_reads"] == [] and out["missing"] == [] and out["split_brains"] == [], out["failed_reads"][:5]
        assert {h.name: h.instance_id for h in load_state().hosts if h.name != "web-03"} == ids, "a host was replaced"
        for lb in lbs:  # the same HAProxy master: a graceful reload
            assert guest(lb, "systemctl", "show", "-p", "MainPID", "--value", "haproxy").stdout.strip() == masters[lb]

        # 2. a new instance type: the replicas stopped and started one at a time, each back in the rotation
        # before the next stops; the primary untouched
        uptime = int(
            sql(primary, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='UPTIME'")
        )
        began = time.monotonic()
        kind, seconds, output = update_under_load(
            url, three, "day-two-instance-type", "instanceType=t3.small", duration=240
        )
        steps = [
            line.strip()
            for line in output.splitlines()
            if line.startswith("▸ ") and ("in place" in line or "the gate web-" in line)
        ]
        print(
            f"instanceType on the replicas: update {seconds:.0f} s ({'; '.join(steps)}); "
            f"{len(kind['failed_reads'])}/{kind['reads']} reads failed, "
            f"{len(kind['missing'])} acknowledged writes missing"
        )
        assert steps == [
            "▸ update web-02 in place: stop, new instance type, start",
            "▸ update: the gate web-02-ready, as declared",
            "▸ update web-03 in place: stop, new instance type, start",
            "▸ update: the gate web-03-ready, as declared",
        ], output
        assert kind["failed_reads"] == [] and kind["missing"] == [] and kind["split_brains"] == [], kind[
            "failed_reads"
        ][:5]
        uptime_after = sql(
            primary, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='UPTIME'"
        )
        assert int(uptime_after) >= uptime + int(time.monotonic() - began) - 2, "the primary was restarted"

        # 3. scale in, the old rate limit
        back, seconds, output = update_under_load(
            url, three, "day-two-scale-in", "webCount=2", "rateLimitPer10s=600", duration=90
        )
        print(
            f"webCount 3 -> 2 and rateLimitPer10s back to 600: update {seconds:.0f} s; {len(back['failed_reads'])}/"
            f"{back['reads']} reads failed, {len(back['missing'])} acknowledged writes missing"
        )
        assert back["failed_reads"] == [] and back["missing"] == [], back["failed_reads"][:5]
        assert [h.name for h in load_state().hosts if h.role == "web"] == names
        wait_until(
            "both load balancers serving the old rate limit",
            lambda: all("int(600)" in guest(lb, "cat", "/etc/haproxy/webinfra-runtime.cfg").stdout for lb in lbs),
            60,
        )
    finally:
        # the tests after this one expect the lab's two web servers and its rate limit
        if [h.name for h in load_state().hosts if h.role == "web"] != names:
            lab("update", "--set=webCount=2", "--set=rateLimitPer10s=600", timeout=600, check=False)
    _, still = health.wait_healthy(120)
    assert not still, still


def test_restore_drill_the_whole_lab_lost_a_fresh_one_restored_from_the_kept_bucket(healthy_lab):
    """Issue 15's second drill: a full backup, then a write a second for 35 s, and the whole lab taken down at
    once (every server killed) keeping only its bucket (`scripts/lab down --keep-backups`, as `pulumi destroy`
    keeps a stack's); a fresh lab (a new bucket of its own beside the kept one); `scripts/restore --lab
    --from-bucket KEPT --latest`: the writes come back with no hole, those lost are the last seconds only
    (the measured RPO: at most 60 s), every server agrees, the site serves and takes writes."""
    from lab.cli import KEPT_BUCKETS

    names = web_names(healthy_lab)
    primary = primary_of(names)
    replica = next(name for name in names if name != primary)
    kept = backup_bucket(primary)
    print(full_backup_now(replica))
    acknowledged: list[float] = []  # when write N was acknowledged (wall clock)
    for number in range(35):
        sql(primary, f"INSERT INTO webinfra.messages (text, host) VALUES ('drill two {number}', 'drill')")
        acknowledged.append(time.time())
        time.sleep(max(0.0, acknowledged[0] + number + 1 - time.time()))
    rows = "SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT(id, text))), 0) FROM webinfra.messages"
    try:
        down = lab("down", "--keep-backups", timeout=600, check=False)
        lost_at = time.time()
        assert down.returncode == 0 and f"kept: {kept}" in down.stdout, down.stdout + down.stderr
        began = time.monotonic()
        # the fresh lab: with one load balancer, the lab the next test (a second one joining) starts from
        up = lab("up", "--lb-count", "1", timeout=1200, check=False)
        assert up.returncode == 0, up.stdout + up.stderr
        up_seconds = time.monotonic() - began
        healthy_lab.update(json.loads(lab("status", "--json").stdout))
        assert healthy_lab["kept_buckets"] == [kept] and healthy_lab["backup_buckets"] != [kept], healthy_lab
        names = web_names(healthy_lab)
        primary = primary_of(names)
        # a new stack: none of the old one's data (the smoke test's message only)
        assert sql(primary, "SELECT COUNT(*) FROM webinfra.messages WHERE text LIKE 'drill two %'") == "0"
        wrong = subprocess.run(
            ["scripts/restore", "--lab", "--latest", "--dry-run", "--from-bucket", kept, "--from-stack", "prod"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert wrong.returncode == 2 and "holds no backup of stack 'prod' (it holds: lab)" in wrong.stderr, (
            wrong.stdout + wrong.stderr
        )
        started = time.monotonic()
        restored = subprocess.run(
            ["scripts/restore", "--lab", "--latest", "--from-bucket", kept],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        took = time.monotonic() - started
        print(restored.stdout[-3000:])
        assert restored.returncode == 0, restored.stdout[-3000:] + restored.stderr[-3000:]
        assert re.search(rf"copied \d+ objects \([\d,]+ bytes in all\) from bucket {kept} into", restored.stdout), (
            restored.stdout
        )
        back = [
            int(text.rsplit(" ", 1)[1])
            for text in sql(
                primary, "SELECT text FROM webinfra.messages WHERE text LIKE 'drill two %' ORDER BY id"
            ).split("\n")
            if text
        ]
        assert back == list(range(len(back))), f"a hole in the writes restored: {back}"  # a prefix, no hole
        lost = acknowledged[-1] - acknowledged[len(back) - 1] if back else acknowledged[-1] - acknowledged[0]
        print(
            f"drill two: {len(back)} of {len(acknowledged)} writes back (the last {len(acknowledged) - len(back)} "
            f"lost: RPO {lost:.0f} s, the lab lost {lost_at - acknowledged[-1]:.1f} s after the last); a fresh lab "
            f"up in {up_seconds:.0f} s, scripts/restore --from-bucket in {took:.0f} s"
        )
        assert back and lost <= 60, "more than a minute of writes lost"
        expected = sql(primary, rows)
        for name in names:
            wait_until(f"{name} agrees with the primary", lambda n=name: sql(n, rows) == expected, 60, 1)
        stored = post_message(healthy_lab["url"], "after the restore into a new lab")
        replica = next(name for name in names if name != primary)
        wait_until(
            f"the new write on {replica}",
            lambda: sql(replica, f"SELECT COUNT(*) FROM webinfra.messages WHERE id = {stored['id']}") == "1",
            30,
        )
    finally:
        shutil.rmtree(KEPT_BUCKETS / kept, ignore_errors=True)  # the next lab up does not bring it back


def test_day_two_a_second_load_balancer_joins_a_single_one_without_a_failed_request(running_lab):
    """Issue 14, lbCount 1 -> 2, on a lab of its own with one load balancer. Under 20 reads/s and 5 writes/s
    (3 s timeout): lb-02 is created first (the pair's new user-data), its readiness gate waits until it serves,
    keepalived alone makes it active and it associates the Elastic IP with itself (EC2); only then is lb-01
    replaced (its user-data joins it to the pair: delete first), and the association Pulumi made for the
    single load balancer is deleted last (it is gone already: nothing happens). Leaves the lab as a pair with
    the lab's own settings."""
    from lab.mock_cloud import stack_config

    status = json.loads(lab("status", "--json").stdout)
    if [lb["name"] for lb in hosts(status, "lb")] != ["lb-01"] or health.problems(status):
        # (the restore drill before it leaves such a lab, restored)
        up = lab("up", "--lb-count", "1", timeout=1200, check=False)
        assert up.returncode == 0, up.stdout + up.stderr
        status = json.loads(lab("status", "--json").stdout)
    url, names = status["url"], web_names(status)
    assert [lb["name"] for lb in hosts(status, "lb")] == ["lb-01"] and not status["floating_address"]
    virtual_ip = stack_config(REPO / "Pulumi.lab.yaml")[0]["lbVirtualIp"]

    out, seconds, output = update_under_load(
        url, names, "day-two-lb-pair", "lbCount=2", f"lbVirtualIp={virtual_ip}", duration=300
    )
    print(output)
    steps = [
        line.strip()
        for line in output.splitlines()
        if (line.startswith("▸ ") and "lb-0" in line) or "the Elastic IP is associated with" in line
    ]
    print(
        f"lbCount 1 -> 2: update {seconds:.0f} s ({'; '.join(steps)}); {len(out['failed_reads'])}/{out['reads']} "
        f"reads failed, {len(out['acknowledged'])} writes acknowledged, {len(out['missing'])} missing"
    )
    order = [
        next(i for i, step in enumerate(steps) if wanted in step)
        for wanted in (
            "create lb-02: boot it",
            "the gate lb-02-ready",
            "EC2: the Elastic IP is associated with lb-02",
            "replace lb-01 (userDataBase64): delete it first",
            "replace lb-01: boot the new instance",
            "delete the Elastic IP's association with lb-01",
        )
    ]
    assert order == sorted(order), steps
    assert out["failed_reads"] == [] and out["missing"] == [] and out["split_brains"] == [], out["failed_reads"][:5]
    _, still = health.wait_healthy(120)  # a pair: the floating address and the Elastic IP on the same one
    assert not still, still
    after = lab_status()
    assert [lb["name"] for lb in hosts(after, "lb")] == ["lb-01", "lb-02"] and after["floating_address"] == virtual_ip


def test_with_two_web_servers_and_the_replica_lost_first_no_automatic_failover_but_promote_force_works(healthy_lab):
    """Issue 13, webCount 2. The replica is cut off (black-holed) under mixed load: the controller disarms
    automatic failover, then makes replication asynchronous, and writes go on. Then the primary dies
    and the replica's network returns: the replica lacks the writes made meanwhile, so no automatic
    failover (a failover would lose them), with the reason in the controller's state and in
    `scripts/lab status`. `scripts/promote --force` (the person's decision) promotes it, and writes work.
    The old primary, started again with writes the new one lacks, stays read-only and out of the
    rotation. Last before the three-server test: it leaves the lab so, and that test builds its own."""
    running_lab = healthy_lab
    url, names = running_lab["url"], web_names(running_lab)
    (primary,) = writable_servers(names)
    (replica,) = [h for h in names if h != primary]
    wait_until("automatic failover armed", lambda: failover_state()["armed"], 60, 1)
    with MixedLoad(url, names, duration=30) as mixed:
        time.sleep(5)
        lab("blackhole", replica)
        wait_until("failover disarmed", lambda: not failover_state()["armed"], 30, 0.5)
        disarmed = failover_state()
        time.sleep(5)  # writes go on, asynchronously: the replica lacks them
        lab("kill", primary)
        lab("heal", replica)
        killed_at = time.monotonic()
        mixed.finish("replica-lost-first")
    waited = time.monotonic() - killed_at
    state = failover_state()
    report = json.loads(lab("status", "--json").stdout)["failover"]
    figures = mixed.figures(killed_at, replica)  # "missing": the acknowledged writes the replica lacks
    print(
        f"webCount 2, replica {replica} black-holed, then primary {primary} killed: disarmed "
        f"({disarmed['arming']}); {waited:.0f} s after the kill, no failover: {state['verdict']!r}; "
        f"{mixed.summary(figures)} (missing: the acknowledged writes only the dead primary has)"
    )
    assert writable_servers([replica]) == [], state  # no automatic failover
    assert state["armed"] is False and "no automatic failover" in state["verdict"], state
    assert "asynchronous" in state["verdict"], state  # the reason
    assert report and report["verdict"] == state["verdict"], report
    assert figures["missing"], "the scenario needs writes only the primary had"
    assert not mixed.sampler.split_brains(), mixed.sampler.split_brains()[:5]
    forced = promote("--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert writable_servers([replica]) == [replica]
    stored = wait_until("a write on the promoted replica", lambda: _try_post(url, "after --force"), 30, 1)
    assert sql(replica, f"SELECT COUNT(*) FROM webinfra.messages WHERE id = {stored['id']}") == "1"
    lab("start", primary)
    wait_until(
        f"{primary} back, kept out read-only",
        lambda: rejoined_or_kept_out(running_lab, primary, replica) == "kept out",
        120,
        1,
    )
    assert writable_servers(names) == [replica]


def test_with_three_web_servers_a_dead_primary_is_replaced_and_a_disarmed_one_waits_for_a_person(running_lab):
    """webCount 3. (1) The primary dies under a stream of writes: the controller promotes the most
    advanced replica, every acknowledged write is on it, the other replica follows it, and the old
    primary returns as a replica. (2) No replica acknowledging (their replication stopped): the
    controller disarms before the primary goes asynchronous; scripts/promote refuses to lose the
    write only the primary has; the primary then dies: no automatic failover, the reason visible;
    `scripts/promote --force` promotes; the old primary, back with that write, stays out and read-only."""
    up = lab("up", "--web-count", "3", timeout=1200, check=False)
    assert up.returncode == 0, up.stdout + up.stderr
    status = json.loads(lab("status", "--json").stdout)
    url, names = status["url"], web_names(status)
    address = {h["name"]: h["address"] for h in hosts(status, "web")}
    wait_until("automatic failover armed", lambda: failover_state()["armed"], 60, 1)

    # 1. The primary dies under writes.
    acknowledged: list[int] = []
    failed: list[str] = []
    killed_at = back_at = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(acknowledged) < 60:
        began = time.monotonic()
        stored = _try_post(url, f"write {len(acknowledged) + len(failed)}")
        if stored:
            acknowledged.append(stored["id"])
            if killed_at and back_at is None:
                back_at = began
        else:
            failed.append(f"{began - (killed_at or began):.1f}")
        if len(acknowledged) == 20 and killed_at is None:
            lab("kill", "web-01")
            killed_at = time.monotonic()
    new = primary_of(["web-02", "web-03"])
    other = ({"web-02", "web-03"} - {new}).pop()
    ids = ",".join(map(str, acknowledged))
    present = int(sql(new, f"SELECT COUNT(*) FROM webinfra.messages WHERE id IN ({ids})"))
    print(
        f"webCount 3, primary killed under writes: {len(acknowledged)} acknowledged, {len(failed)} refused "
        f"(seconds after the kill: {failed}); writes back {(back_at or 0) - (killed_at or 0):.1f} s after the kill; "
        f"new primary {new}; {present} of {len(acknowledged)} on it"
    )
    assert present == len(acknowledged) and len(acknowledged) == 60 and killed_at and back_at
    assert replicates_from(status, other, new), guest(other, "mariadb", "-e", "SHOW SLAVE STATUS\\G").stdout
    lab("start", "web-01")
    wait_until(
        "web-01 back as a replica of the new primary",
        lambda: f"Master_Host: {address[new]}" in guest("web-01", "mariadb", "-e", "SHOW SLAVE STATUS\\G").stdout,
        120,
        2,
    )
    wait_until(
        "web-01 caught up",
        lambda: sql("web-01", f"SELECT COUNT(*) FROM webinfra.messages WHERE id IN ({ids})") == str(len(acknowledged)),
        60,
        2,
    )
    assert writable_servers(names) == [new]

    # 2. No replica acknowledging: disarmed first, then asynchronous; promote refuses to lose a write.
    wait_until("armed again", lambda: failover_state()["armed"], 60, 1)
    followers = [h for h in names if h != new]
    for replica in followers:
        sql(replica, "STOP SLAVE")
    lonely = post_message(url, "only on the primary")  # waits for the controller's fallback (3 s)
    state = failover_state()
    assert not state["armed"] and "asynchronous" in state["arming"], state
    refused = promote()
    assert refused.returncode == 3 and "no replica has" in refused.stderr and "--force" in refused.stderr, (
        refused.stdout + refused.stderr
    )
    assert writable_servers(names) == [new]
    # scripts/promote held the controllers and started them again: the one that decides takes over
    # (3.5 s) and must have seen the primary itself, disarmed, before it dies (else it refuses for
    # another reason: it restores nothing while a server it never saw does not answer).
    wait_until(
        "the controller decides again, primary and disarmed",
        lambda: (s := failover_state())["primary"] == new and not s["armed"],
        30,
        0.5,
    )
    # ...and the primary dies: no automatic failover, the reason said.
    lab("kill", new)
    time.sleep(12)
    state = failover_state()
    assert "no automatic failover" in state["verdict"] and writable_servers(followers) == [], state
    for replica in followers:
        sql(replica, "START SLAVE")
    forced = promote("--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    forced_primary = primary_of(followers)
    after = post_message(url, "after the forced promotion")
    print(f"disarmed: {state['verdict']}; scripts/promote --force made {forced_primary} the primary")
    # The old primary comes back holding the write no one else has: it stays read-only and out.
    lab("start", new)
    wait_until(f"{new} running", lambda: guest(new, "mariadb", "-e", "SELECT 1").returncode == 0, 120, 2)
    time.sleep(5)
    assert writable_servers(names) == [forced_primary]
    # By text: ids are each server's own AUTO_INCREMENT, and the two histories diverged.
    assert sql(new, f"SELECT COUNT(*) FROM webinfra.messages WHERE text='{lonely['text']}'") == "1"
    assert sql(new, f"SELECT COUNT(*) FROM webinfra.messages WHERE text='{after['text']}'") == "0"
    state = failover_state()
    assert state["servers"][new]["io"] != "Yes" and state["servers"][new]["read_only"], state
    journal = guest(active_balancer(), "journalctl", "-u", "webinfra-failover", "--no-pager").stdout
    assert f"{new} holds writes the primary {forced_primary} has not" in journal, journal[-2000:]


# ACME ------------------------------------------------------------------------------------------------------


def test_acme_certificate_from_pebble_and_a_forced_renewal_drops_nothing(running_lab):
    up = lab("up", "--acme", timeout=1200, check=False)
    assert up.returncode == 0, up.stdout + up.stderr
    root = client("curl", "-fsk", "https://127.0.0.1:15000/roots/0").stdout
    ca = REPO / ".pytest-pebble-root.pem"
    ca.write_text(root)
    try:
        site = "https://www.webinfra.test/"

        def issued():
            return client("curl", "-fsS", "-m", "5", "--cacert", str(ca), site + "health").returncode == 0

        wait_until("a certificate from pebble served by HAProxy", issued, 120, 2)
        # Of the pair, the active load balancer asked for it (it receives the challenges); the
        # standby's certificate service is skipped by its condition.
        active = lab_status()["floating_address_holder"]
        (standby,) = [h["name"] for h in hosts(lab_status(), "lb") if h["name"] != active]
        assert guest(active, "test", "-d", "/etc/letsencrypt/live/webinfra").returncode == 0
        assert guest(standby, "test", "-d", "/etc/letsencrypt/live/webinfra").returncode != 0
        serial = lambda: client(  # noqa: E731
            "sh",
            "-c",
            "openssl s_client -connect www.webinfra.test:443 -servername www.webinfra.test "
            "</dev/null 2>/dev/null | openssl x509 -noout -serial",
        ).stdout.strip()
        first = serial()
        requests = stream(site + "health", 20, 20, timeout=5, cacert=str(ca), concurrency=4)
        time.sleep(3)
        renewal = guest(
            active,
            "certbot",
            "renew",
            "--force-renewal",
            "--no-random-sleep-on-renew",
            "--cert-name",
            "webinfra",
            timeout=120,
        )
        assert renewal.returncode == 0, renewal.stdout + renewal.stderr
        report = json.loads(requests.communicate(timeout=90)[0])
        second = serial()
        print(
            f"ACME: pebble issued {first}, forced renewal issued {second}; "
            f"{report['sent']} requests during the renewal: {report['statuses']}"
        )
        assert first != second and first.startswith("serial=")
        assert report["statuses"] == {"200": report["sent"]} and report["sent"] >= 300
        # The runtime-configuration sync never puts the stack's self-signed certificate back over it.
        synced = guest(active, "systemctl", "start", "webinfra-config-sync.service", timeout=120)
        journal = guest(active, "journalctl", "-u", "webinfra-config-sync", "--no-pager", "-o", "cat").stdout
        assert synced.returncode == 0 and "lb-certificate: skipped: /etc/letsencrypt/live/webinfra exists" in journal, (
            journal
        )
        assert serial() == second
    finally:
        ca.unlink(missing_ok=True)


# teardown --------------------------------------------------------------------------------------------------


def test_down_removes_everything_even_after_a_crash(running_lab, tmp_path):
    # leftovers as a crash would leave them: a stray namespace and an overlay still mounted
    from lab.hosts import HOSTS

    subprocess.run(["ip", "netns", "add", "wi-stray"], check=True)
    stray = HOSTS / "stray"
    for part in ("upper", "work", "root"):
        (stray / part).mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={tmp_path},upperdir={stray / 'upper'},workdir={stray / 'work'}",
            str(stray / "root"),
        ],
        check=True,
    )
    lab("down")
    again = lab("down")  # idempotent
    assert "deleted 0 namespaces" in again.stdout, again.stdout
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "wi-" not in namespaces, namespaces
    mounts = pathlib.Path("/proc/mounts").read_text()
    assert "webinfra-lab" not in mounts
    from lab.hosts import host_cgroups

    assert not host_cgroups(), "the hosts' cgroups are left behind"
