"""webinfra-db-ship-binlogs, the shipped program, run as its unit runs it (the declared environment file and
state directory, Debian's python3 and python3-boto3) against real MariaDB servers (tests/failover's cluster:
a primary and two replicas) and S3 and CloudWatch served by moto: the primary's binary logs reach S3 as
contiguous GTID ranges, byte for byte; a replica ships nothing; a promoted replica ships what the dead
primary had not."""

from __future__ import annotations

import datetime
import itertools
import pathlib
import subprocess

import boto3
import pytest

from backups.webinfra_db_ship_binlogs import parse_binlog_key
from provisioning import render
from tests.app.helpers import BACKUP_BUCKET, FACTS, MariaDB, declared_environment, declared_web_files, wait_for
from tests.failover.test_webinfra_failover import cluster, write  # noqa: F401 (cluster: the fixture)
from tests.helpers import require_tool
from tests.provisioning.test_webinfra_db_backup import DEBIAN_PATH, REGION, s3_endpoint  # noqa: F401 (fixture)

PROGRAM = "webinfra-db-ship-binlogs"


def run_shipper(server: MariaDB, endpoint: str, tmp_path: pathlib.Path) -> subprocess.CompletedProcess:
    """One pass (--once) of the program as webinfra-config-sync installs it, started as its unit starts it:
    the declared environment file (the test's socket and endpoint in place of the host's) and a state
    directory of the server's own, as systemd gives it (StateDirectory)."""
    for tool in ("zstd", "mariadb"):
        require_tool(tool)
    files = declared_web_files(server.name)
    unit = files[f"/etc/systemd/system/{PROGRAM}.service"]
    assert "EnvironmentFile=/etc/webinfra/webinfra.env" in unit
    assert f"ExecStart=/usr/local/sbin/{PROGRAM}\n" in unit and "StateDirectory=webinfra/binlogs" in unit
    source, installed_at = render.HOST_PROGRAMS[PROGRAM]
    assert installed_at == f"/usr/local/sbin/{PROGRAM}"
    program = tmp_path / PROGRAM
    program.write_text(render.shipped_program(source))
    program.chmod(0o755)
    state = server.directory / "state"
    state.mkdir(exist_ok=True)
    environment = declared_environment(files)
    environment.update(
        WEBINFRA_DB_LOCAL_SOCKET=server.socket,
        WEBINFRA_AWS_ENDPOINT_URL=endpoint,
        WEBINFRA_AWS_REGION=REGION,
        STATE_DIRECTORY=str(state),
        PATH=DEBIAN_PATH,
        HOME=str(tmp_path),
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        TMPDIR=str(server.directory / "tmp"),
    )
    # the hostname names the shipping host in each key; here every server is this machine
    return subprocess.run(
        ["/usr/bin/python3", str(program), "--once"], env=environment, capture_output=True, text=True, timeout=120
    )


def shipped(s3) -> list:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BACKUP_BUCKET).get("Contents", [])]
    return sorted((parse_binlog_key(k) for k in keys if "/binlog/" in k), key=lambda o: o.key)


def sequence(server: MariaDB) -> int:
    return int(server.sql("SELECT @@global.gtid_binlog_pos AS p")[0]["p"].rsplit("-", 1)[1])


def binlogs(server: MariaDB) -> list[str]:
    return [r["Log_name"] for r in server.sql("SHOW BINARY LOGS")]


def assert_contiguous(objects: list, up_to: int, overlap: bool = False) -> None:
    """Every transaction from the first to `up_to` in an object, in key order: each object begins where
    the one before ended (or, from a promoted server's binary log, before that: `overlap`)."""
    assert objects, "nothing shipped"
    assert objects[0].first == 1, objects
    for before, after in itertools.pairwise(objects):
        assert after.first <= before.last + 1 if overlap else after.first == before.last + 1, (before, after)
        assert after.last > before.last, (before, after)
    assert objects[-1].last == up_to, (objects[-1], up_to)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def python3_boto3():
    require_tool("/usr/bin/python3")
    found = subprocess.run(["/usr/bin/python3", "-c", "import boto3"], capture_output=True)
    assert found.returncode == 0, "python3-boto3 (Debian's, as on the hosts) is missing: scripts/setup test"


def test_the_primary_ships_each_closed_binary_log_once_as_a_contiguous_gtid_range(
    cluster,  # noqa: F811
    s3_endpoint,  # noqa: F811
    tmp_path,
    python3_boto3,
):
    endpoint, s3 = s3_endpoint
    primary = cluster.servers["web-01"]
    for n in range(50):
        write(primary, f"first {n}")
    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    print(ok(run_shipper(primary, endpoint, tmp_path)))
    first_pass = shipped(s3)
    assert_contiguous(first_pass, sequence(primary))
    assert {o.host for o in first_pass} == {subprocess.check_output(["hostname"], text=True).strip()}
    assert all(o.closed >= before - datetime.timedelta(seconds=1) for o in first_pass[-1:]), first_pass
    # byte for byte what the server wrote (a closed binary log never changes)
    directory = pathlib.Path(primary.sql("SELECT @@global.log_bin_basename AS b")[0]["b"]).parent
    for item in first_pass:
        body = s3.get_object(Bucket=BACKUP_BUCKET, Key=item.key)["Body"].read()
        assert (
            subprocess.run(["zstd", "-d", "-c"], input=body, capture_output=True, check=True).stdout
            == (directory / item.file).read_bytes()
        )

    # Nothing new written: no new file, nothing shipped.
    files = binlogs(primary)
    ok(run_shipper(primary, endpoint, tmp_path))
    assert binlogs(primary) == files and shipped(s3) == first_pass

    # New writes: one more object, from where the last one ended.
    for n in range(20):
        write(primary, f"second {n}")
    ok(run_shipper(primary, endpoint, tmp_path))
    assert_contiguous(shipped(s3), sequence(primary))
    assert len(shipped(s3)) == len(first_pass) + 1

    # The state lost (a new disk): what the bucket holds is not shipped again.
    (primary.directory / "state" / "binlog-shipping.json").unlink()
    write(primary, "third")
    ok(run_shipper(primary, endpoint, tmp_path))
    assert_contiguous(shipped(s3), sequence(primary))

    # What the alarms watch: one pass was just caught up; no full backup yet, so the tables' age.
    statistics = boto3.client(
        "cloudwatch", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="t", aws_secret_access_key="t"
    )
    now = datetime.datetime.now(datetime.UTC)
    for metric, most in (("BinlogShippingBehindSeconds", 60), ("FullBackupAgeSeconds", 600)):
        points = statistics.get_metric_statistics(
            Namespace=f"webinfra/{FACTS.stack}",
            MetricName=metric,
            StartTime=now - datetime.timedelta(minutes=10),
            EndTime=now + datetime.timedelta(minutes=1),
            Period=60,
            Statistics=["Maximum"],
        )["Datapoints"]
        assert points and 0 <= max(p["Maximum"] for p in points) < most, (metric, points)


def test_a_replica_ships_nothing_and_a_promoted_one_ships_what_the_dead_primary_had_not(
    cluster,  # noqa: F811
    s3_endpoint,  # noqa: F811
    tmp_path,
    python3_boto3,
):
    endpoint, s3 = s3_endpoint
    primary, replica = cluster.servers["web-01"], cluster.servers["web-02"]
    write(primary, "shipped by the primary")
    ok(run_shipper(primary, endpoint, tmp_path))
    shipped_by_primary = shipped(s3)
    # The replica's binary log begins here, empty, as one seeded from a copy (webinfra-db-setup): its first
    # file lists no GTID before it, yet its first transaction is far along.
    wait_for("the replica has it", lambda: sequence(replica) >= shipped_by_primary[-1].last)
    replica.sql("STOP SLAVE")
    replica.sql("RESET MASTER")
    replica.sql("START SLAVE")
    for n in range(30):
        write(primary, f"never shipped by the primary {n}")
    target = sequence(primary)
    wait_for("the replica has every write", lambda: sequence(replica) >= target)
    assert ok(run_shipper(replica, endpoint, tmp_path)) == ""  # a replica: nothing to say, nothing shipped
    assert shipped(s3) == shipped_by_primary

    primary.stop()  # dies before its next pass
    replica.sql("STOP SLAVE")
    replica.sql("SET GLOBAL read_only = OFF")  # promoted (the failover controller's last step)
    out = ok(run_shipper(replica, endpoint, tmp_path))
    assert f"beyond GTID sequence {shipped_by_primary[-1].last}" in out, out
    objects = shipped(s3)
    assert_contiguous(objects, target)  # from exactly where the primary's end: the file's first transaction
    assert objects[: len(shipped_by_primary)] == shipped_by_primary
    print(out)
