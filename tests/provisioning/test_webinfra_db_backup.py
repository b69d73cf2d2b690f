"""webinfra-db-backup, the shipped program, run as its unit runs it (the declared environment file) against
real MariaDB servers (a primary and its replicas, tests/failover's cluster) and S3 served by moto, with
Debian's mariadb-backup, zstd and aws: a replica streams a full backup and its manifest to the stack's
prefix; that backup, downloaded and prepared as a restore would, starts a server holding every row written
before it; the primary and a second turn the same day take none."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import subprocess
import urllib.request
from typing import Final

import boto3
import pytest
from moto.server import ThreadedMotoServer

from provisioning import render
from tests.app.helpers import (
    BACKUP_BUCKET,
    FACTS,
    MariaDB,
    declared_environment,
    declared_web_files,
    free_port,
    wait_for,
)
from tests.failover.test_webinfra_failover import cluster, write  # noqa: F401 (cluster: the fixture)
from tests.helpers import require_tool

REGION: Final = "eu-west-1"
DEBIAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's aws, as on the hosts (not a developer's own)


@pytest.fixture
def s3_endpoint():
    """moto serving S3 on loopback, with the stack's bucket (versioned, as the program declares it)."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        # moto's state is one per process, whichever server serves it: start from nothing
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
        s3 = boto3.client(
            "s3", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test"
        )
        s3.create_bucket(Bucket=BACKUP_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket=BACKUP_BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield endpoint, s3
    finally:
        server.stop()


def run_backup(
    server: MariaDB, endpoint: str, tmp_path: pathlib.Path, path: str = DEBIAN_PATH
) -> subprocess.CompletedProcess:
    """The program as webinfra-config-sync installs it, with the declared environment file's values and
    the test's server socket and endpoint in place of the host's."""
    for tool in ("mariadb-backup", "zstd", "/usr/bin/aws"):
        require_tool(tool)
    files = declared_web_files(server.name)
    unit = files["/etc/systemd/system/webinfra-db-backup.service"]
    assert "EnvironmentFile=/etc/webinfra/webinfra.env" in unit
    assert "ExecStart=/usr/local/sbin/webinfra-db-backup" in unit
    source, installed_at = render.HOST_PROGRAMS["webinfra-db-backup"]
    assert installed_at == "/usr/local/sbin/webinfra-db-backup"
    program = tmp_path / "webinfra-db-backup"
    program.write_text(render.shipped_program(source))
    program.chmod(0o755)
    environment = declared_environment(files)
    environment.update(
        WEBINFRA_DB_LOCAL_SOCKET=server.socket,
        WEBINFRA_AWS_ENDPOINT_URL=endpoint,
        WEBINFRA_AWS_REGION=REGION,
        PATH=path,
        HOME=str(tmp_path),
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        TMPDIR=str(server.directory / "tmp"),
    )
    return subprocess.run([str(program)], env=environment, capture_output=True, text=True, timeout=300)


def reported_failures(endpoint: str) -> float:
    """The BackupRunFailed data points the stack's backup-failed alarm watches (moto's CloudWatch)."""
    cloudwatch = boto3.client(
        "cloudwatch", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="t", aws_secret_access_key="t"
    )
    now = datetime.datetime.now(datetime.UTC)
    points = cloudwatch.get_metric_statistics(
        Namespace=f"webinfra/{FACTS.stack}",
        MetricName="BackupRunFailed",
        StartTime=now - datetime.timedelta(minutes=10),
        EndTime=now + datetime.timedelta(minutes=1),
        Period=600,
        Statistics=["Sum"],
    )["Datapoints"]
    return sum(p["Sum"] for p in points)


def objects(s3) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BACKUP_BUCKET).get("Contents", []))


def restored_rows(s3, key: str, base: pathlib.Path) -> int:
    """Download the backup, unpack and prepare it as a restore does, start a server on it, count."""
    data = base / "restored"
    data.mkdir()
    stream = s3.get_object(Bucket=BACKUP_BUCKET, Key=key)["Body"].read()
    unpacked = subprocess.run(
        f"zstd -d | mbstream -x -C {data}", shell=True, input=stream, capture_output=True, timeout=120
    )
    assert unpacked.returncode == 0, unpacked.stderr
    prepared = subprocess.run(
        ["mariadb-backup", "--prepare", f"--target-dir={data}"], capture_output=True, text=True, timeout=120
    )
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    socket = base / "restored.sock"
    as_root = ["--user=root"] if os.geteuid() == 0 else []
    server = subprocess.Popen(
        ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={socket}", "--skip-networking", *as_root],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        count = lambda: subprocess.run(  # noqa: E731
            ["mariadb", f"--socket={socket}", "-N", "-B", "-e", "SELECT COUNT(*) FROM webinfra.messages"],
            capture_output=True,
            text=True,
        )
        wait_for("the restored server", lambda: count().returncode == 0, seconds=60)
        return int(count().stdout)
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(30)


def test_a_replica_backs_up_to_the_stacks_prefix_and_the_backup_restores_every_row(cluster, s3_endpoint, tmp_path):  # noqa: F811
    endpoint, s3 = s3_endpoint
    primary, replica = cluster.servers["web-01"], cluster.servers["web-02"]
    for n in range(300):
        write(primary, f"before the backup {n}")
    wait_for("the replica has them", lambda: replica.sql("SELECT COUNT(*) AS n FROM webinfra.messages")[0]["n"] >= 300)
    expected = replica.sql("SELECT COUNT(*) AS n FROM webinfra.messages")[0]["n"]
    gtid = replica.sql("SELECT @@global.gtid_binlog_pos AS p")[0]["p"]

    on_primary = run_backup(primary, endpoint, tmp_path)
    assert on_primary.returncode == 0, on_primary.stdout + on_primary.stderr
    assert "this server is the primary: a replica takes the backup" in on_primary.stdout
    assert objects(s3) == []

    taken = run_backup(replica, endpoint, tmp_path)
    assert taken.returncode == 0, taken.stdout + taken.stderr
    keys = objects(s3)
    assert [k.rsplit(".", 1)[-1] for k in keys] == ["json", "started", "zst"], keys  # manifest, claim, backup
    assert all(k.startswith(f"{FACTS.stack}/full/") for k in keys), keys
    backup = next(k for k in keys if k.endswith(".xbstream.zst"))
    manifest = json.loads(
        s3.get_object(Bucket=BACKUP_BUCKET, Key=backup.replace(".xbstream.zst", ".manifest.json"))["Body"].read()
    )
    assert manifest["backup"] == backup.rsplit("/", 1)[1] and manifest["host"]
    assert manifest["gtid"] == gtid, (manifest, gtid)
    assert manifest["bytes"] == s3.head_object(Bucket=BACKUP_BUCKET, Key=backup)["ContentLength"] > 0
    assert manifest["finished"] >= manifest["started"] and "MariaDB" in manifest["server"]
    print(
        f"full backup: {manifest['bytes']} bytes in {manifest['finished'] - manifest['started']} s; "
        f"{taken.stdout.strip()}"
    )

    again = run_backup(replica, endpoint, tmp_path)  # another replica's turn, the same day
    assert again.returncode == 0 and "recent enough: none now" in again.stdout, again.stdout + again.stderr
    assert objects(s3) == keys

    write(primary, "after the backup")
    assert restored_rows(s3, backup, tmp_path) == expected
    assert reported_failures(endpoint) == 0  # the primary's pass and the second turn are no failures


def test_a_backup_that_fails_midway_leaves_no_object_and_no_manifest(cluster, s3_endpoint, tmp_path):  # noqa: F811
    """mariadb-backup ends in an error after streaming part of the copy (a disk error, the server
    restarting): the upload is killed before it could complete a clean-looking truncated object."""
    endpoint, s3 = s3_endpoint
    failing = tmp_path / "bin"
    failing.mkdir()
    (failing / "mariadb-backup").write_text("#!/bin/sh\nhead -c 3000000 /dev/urandom\necho 'disk error' >&2\nexit 1\n")
    (failing / "mariadb-backup").chmod(0o755)
    failed = run_backup(cluster.servers["web-02"], endpoint, tmp_path, path=f"{failing}:{DEBIAN_PATH}")
    assert failed.returncode == 1 and "FAILED: no manifest written" in failed.stdout, failed.stdout + failed.stderr
    assert "disk error" in failed.stdout
    assert [k.rsplit(".", 1)[-1] for k in objects(s3)] == ["started"]  # only the claim, which expires in an hour
    assert reported_failures(endpoint) == 1


def test_a_replica_that_does_not_replicate_takes_no_backup(cluster, s3_endpoint, tmp_path):  # noqa: F811
    """A stalled replica (its primary gone or its binary logs purged) would upload old data every day, and
    every other replica would then skip: it takes none, and says why (the unit fails)."""
    endpoint, s3 = s3_endpoint
    replica = cluster.servers["web-02"]
    replica.sql("STOP SLAVE IO_THREAD")
    stalled = run_backup(replica, endpoint, tmp_path)
    assert stalled.returncode == 1 and "is not replicating and caught up" in stalled.stdout, stalled.stdout
    assert objects(s3) == []
    assert reported_failures(endpoint) == 1
