#!/usr/bin/python3
"""webinfra-db-ship-binlogs: ship the primary's binary logs to the stack's S3 bucket, so that a restore
reaches any second of the backup window, not only the last daily full backup.

    webinfra-db-ship-binlogs            (webinfra-db-ship-binlogs.service, on every web server)
    webinfra-db-ship-binlogs --once     one pass now (before a planned teardown: ship what is written)
    webinfra-db-ship-binlogs --once --fenced
                                        one pass of a primary scripts/restore has just made read-only:
                                        its last writes too

Every `WEBINFRA_BINLOG_SHIP_SECONDS` the server that is the primary (writable) closes its binary log when
it holds a transaction not yet in S3 (`FLUSH LOCAL BINARY LOGS`) and uploads, zstd-compressed, every
closed file that holds one, oldest first. A closed file never changes, so each object is written once
(its key names the file and the host; an existing key is never written again, and S3 refuses it with
If-None-Match). So what a whole-stack loss costs is at most one interval of writes plus an upload.

Each key carries the file's GTID range in domain 0, read from the binary logs themselves: a file's
Gtid_list event is the position before its first transaction, and the next file's is the position after
its last. And when the file was closed (its mtime, at or after its last event):

    <stack>/binlog/<last seq, 20 digits>-<first seq, 20 digits>-<closed, %Y%m%dT%H%M%SZ>.<host>.<file>.zst

so a listing sorted by key is sorted by position, and a restore finds what follows a full backup by
listing from its position (`StartAfter`), without reading any object. A replica ships nothing; one that is
promoted learns from the bucket how far the stack's binary logs reach and ships its own files beyond that
(its binary log holds every transaction it replicated, with the original GTIDs: log_slave_updates), so
what the old primary had not shipped when it died is shipped by the new one.

Once a minute the primary also publishes, to CloudWatch (namespace webinfra/<stack>, no host dimension:
the stack's primary, whichever server it is), what the stack's backup alarms watch:
  BinlogShippingBehindSeconds  since the last moment everything written before it was in S3;
  FullBackupAgeSeconds         since the newest finished full backup (its manifest), or, before the
                               first one, since the app's tables were created.

Standard library and boto3 only (python3-boto3 from Debian); MariaDB through its client on the local
socket, as root.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, NamedTuple

STATE_FILE = "binlog-shipping.json"  # in the unit's StateDirectory (systemd sets STATE_DIRECTORY)
SEQ_DIGITS = 20  # a GTID sequence number is 64-bit: at most 20 digits
DOMAIN = 0  # gtid_domain_id of every server (mariadb.cnf.j2)
METRICS_EVERY_SECONDS = 60
COMMAND_TIMEOUT = 120
FIRST_EVENTS = 100  # a file's first transaction comes after its Format_description, Gtid_list and checkpoints
_KEY = re.compile(r"^(\d{20})-(\d{20})-(\d{8}T\d{6}Z)\.([^.]+)\.(.+)\.zst$")


class BinlogObject(NamedTuple):
    key: str
    last: int  # the GTID sequence number (domain 0) of the file's last transaction
    first: int  # ... of its first
    closed: datetime.datetime  # UTC: no event in the file is later
    host: str
    file: str


def binlog_prefix(stack: str) -> str:
    return f"{stack}/binlog/"


def binlog_key(stack: str, last: int, first: int, closed: float, host: str, file: str) -> str:
    stamp = datetime.datetime.fromtimestamp(closed, datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{binlog_prefix(stack)}{last:0{SEQ_DIGITS}d}-{first:0{SEQ_DIGITS}d}-{stamp}.{host}.{file}.zst"


def parse_binlog_key(key: str) -> BinlogObject | None:
    """The object a key names, or None for a key that is not a shipped binary log."""
    match = _KEY.match(key.rsplit("/", 1)[-1])
    if not match:
        return None
    last, first, stamp, host, file = match.groups()
    closed = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    return BinlogObject(key, int(last), int(first), closed, host, file)


def domain_sequence(gtid_list: str, domain: int = DOMAIN) -> int:
    """The highest sequence number of `domain` in a GTID list ("0-1-5,0-2-9" or "[0-1-5]"), 0 for none:
    with gtid_strict_mode, sequence numbers grow in a domain whichever server wrote them."""
    found = [int(s) for d, _server, s in re.findall(r"(\d+)-(\d+)-(\d+)", gtid_list) if int(d) == domain]
    return max(found, default=0)


class Database:
    """The local MariaDB server, through its client (root over the socket)."""

    def __init__(self, socket_path: str):
        self.socket_path = socket_path

    def rows(self, statement: str) -> list[list[str]]:
        result = subprocess.run(
            ["mariadb", f"--socket={self.socket_path}", "-N", "-B", "-e", statement],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        if result.returncode != 0:
            raise RuntimeError(f"mariadb: {result.stderr.strip()}")
        return [line.split("\t") for line in result.stdout.splitlines()]

    def value(self, statement: str) -> str:
        rows = self.rows(statement)
        return rows[0][0] if rows and rows[0] else ""

    def binlog_start(self, file: str) -> int:
        """The domain's position before the file's first transaction (its Gtid_list event): what the
        server had written before the file was opened; the file's last transaction, for the one before."""
        for row in self.rows(f"SHOW BINLOG EVENTS IN '{file}' LIMIT 4"):
            if len(row) > 5 and row[2] == "Gtid_list":
                return domain_sequence(row[5])
        raise RuntimeError(f"{file} has no Gtid_list event among its first")

    def first_transaction(self, file: str) -> int | None:
        """The sequence number of the file's first transaction (its first Gtid event), None for none. Not
        the Gtid_list's position + 1: a server whose binary log began with RESET MASTER (a replica seeded
        from a copy) lists nothing before a first transaction that may be far along."""
        for row in self.rows(f"SHOW BINLOG EVENTS IN '{file}' LIMIT {FIRST_EVENTS}"):
            if len(row) > 5 and row[2] == "Gtid":
                return domain_sequence(row[5])
        return None


class Shipper:
    def __init__(
        self,
        env: dict[str, str],
        database: Database,
        s3: Any,
        cloudwatch: Any,
        state: pathlib.Path,
        now: Callable[[], float] = time.time,
        say: Callable[[str], None] = print,
    ):
        self.stack = env["WEBINFRA_STACK"]
        self.bucket = env["WEBINFRA_BACKUP_BUCKET"]
        self.db_name = env["WEBINFRA_DB_NAME"]
        self.host = socket.gethostname()
        self.database = database
        self.s3 = s3
        self.cloudwatch = cloudwatch
        self.state = state
        self.now = now
        self.say = say
        self.primary = False
        self.caught_up_at: float | None = None
        self.metrics_at = 0.0
        try:
            self.shipped_to = int(json.loads(state.read_text())["shipped_to"])
        except (OSError, ValueError, KeyError, TypeError):
            self.shipped_to = 0

    # -- one pass --------------------------------------------------------------------------------------
    def step(self, fenced: bool = False) -> None:
        started = self.now()
        if not fenced and self.database.value("SELECT @@global.read_only") != "0":
            if self.primary:
                self.say("this server is no longer the primary: shipping stops")
            self.primary = False
            self.caught_up_at = None
            return
        if not self.primary:
            # Newly the primary (or just started): how far the stack's binary logs in S3 reach.
            self.shipped_to = max(self.shipped_to, self.bucket_reach())
            self.say(f"this server is the primary: shipping its binary logs beyond GTID sequence {self.shipped_to}")
            self.primary = True
        position = domain_sequence(self.database.value("SELECT @@global.gtid_binlog_pos"))
        files = self.binlog_files()
        if position > self.shipped_to and position > self.database.binlog_start(files[-1]):
            self.database.rows("FLUSH LOCAL BINARY LOGS")
            files = self.binlog_files()
        open_start = self.ship_closed(files)
        # Caught up: every transaction written is in S3, or in no closed file (the open one has none:
        # after a restore, the position is a marker no transaction carries).
        if self.shipped_to >= position or open_start >= position:
            self.caught_up_at = started

    def binlog_files(self) -> list[str]:
        """The server's binary logs, oldest first (the last is open)."""
        names = [row[0] for row in self.database.rows("SHOW BINARY LOGS")]
        if not names:
            raise RuntimeError("the server keeps no binary log")
        return names

    def ship_closed(self, files: list[str]) -> int:
        """Ship every closed file holding a transaction not in S3; the open file's start position."""
        # Newest first, back to the file that starts at or before what S3 holds: only those can hold
        # a transaction not shipped (a busy primary keeps thousands of files for the replicas).
        starts: dict[str, int] = {files[-1]: self.database.binlog_start(files[-1])}
        index = len(files) - 1
        while index > 0 and starts[files[index]] > self.shipped_to:
            index -= 1
            starts[files[index]] = self.database.binlog_start(files[index])
        directory = pathlib.Path(self.database.value("SELECT @@global.log_bin_basename")).parent
        for file, successor in zip(files[index:-1], files[index + 1 :], strict=False):
            last = starts[successor]
            if last <= self.shipped_to or last <= starts[file]:
                continue  # shipped already, or no transaction in it (a restart's empty file)
            first = self.database.first_transaction(file)
            if first is None:
                continue
            path = directory / file
            key = binlog_key(self.stack, last, first, path.stat().st_mtime, self.host, file)
            size = self.upload(path, key)
            self.shipped_to = last
            self.state.parent.mkdir(parents=True, exist_ok=True)
            self.state.write_text(json.dumps({"shipped_to": last, "key": key}) + "\n")
            self.say(f"shipped {file}: GTID sequence {first}-{last}, {size} bytes compressed")
        return starts[files[-1]]

    def upload(self, path: pathlib.Path, key: str) -> int:
        with tempfile.TemporaryFile() as compressed:
            subprocess.run(
                ["zstd", "-q", "-3", "-c", str(path)], stdout=compressed, check=True, timeout=COMMAND_TIMEOUT
            )
            size = compressed.tell()
            compressed.seek(0)
            try:
                # Written once: S3 refuses a key that exists (If-None-Match, added to the request by
                # create_only below), as with a retry after an upload whose answer was lost.
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=compressed, ContentLength=size)
            except self.s3.exceptions.ClientError as error:
                if error.response.get("Error", {}).get("Code") not in ("PreconditionFailed", "412"):
                    raise
                self.say(f"{key} is in S3 already")
        return size

    def bucket_reach(self) -> int:
        """The highest GTID sequence number any shipped binary log of the stack holds."""
        reach = self.shipped_to
        start_after = f"{binlog_prefix(self.stack)}{self.shipped_to:0{SEQ_DIGITS}d}"
        for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=binlog_prefix(self.stack), StartAfter=start_after
        ):
            for item in page.get("Contents", []):
                shipped = parse_binlog_key(item["Key"])
                if shipped:
                    reach = max(reach, shipped.last)
        return reach

    # -- what the alarms watch ---------------------------------------------------------------------------
    def publish(self) -> None:
        now = self.now()
        if not self.primary or now - self.metrics_at < METRICS_EVERY_SECONDS:
            return
        self.metrics_at = now
        data = [{"MetricName": "FullBackupAgeSeconds", "Value": now - self.newest_full_backup(), "Unit": "Seconds"}]
        if self.caught_up_at is not None:
            behind = now - self.caught_up_at
            data.append({"MetricName": "BinlogShippingBehindSeconds", "Value": behind, "Unit": "Seconds"})
        self.cloudwatch.put_metric_data(Namespace=f"webinfra/{self.stack}", MetricData=data)

    def newest_full_backup(self) -> float:
        newest = None
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.stack}/full/"):
            for item in page.get("Contents", []):
                if item["Key"].endswith(".manifest.json"):
                    stamp = item["LastModified"].timestamp()
                    newest = stamp if newest is None else max(newest, stamp)
        if newest is not None:
            return newest
        # No full backup yet (a new stack's first comes at the next turn): the data's age stands in.
        created = self.database.value(
            "SELECT UNIX_TIMESTAMP(MIN(CREATE_TIME)) FROM information_schema.TABLES"
            f" WHERE TABLE_SCHEMA = '{self.db_name}'"
        )
        return float(created) if created not in ("", "NULL") else self.now()


def create_only(params: dict, **_: Any) -> None:
    params["headers"]["If-None-Match"] = "*"


def clients(env: dict[str, str]) -> tuple[Any, Any]:
    import boto3  # on the host: python3-boto3
    import botocore.config

    options: dict[str, Any] = {
        "region_name": env["WEBINFRA_AWS_REGION"],
        "config": botocore.config.Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3}),
    }
    if env.get("WEBINFRA_AWS_ENDPOINT_URL"):
        options["endpoint_url"] = env["WEBINFRA_AWS_ENDPOINT_URL"]
    s3 = boto3.client("s3", **options)
    s3.meta.events.register("before-call.s3.PutObject", create_only)
    return s3, boto3.client("cloudwatch", **options)


def main() -> int:
    env = dict(os.environ)
    interval = float(env["WEBINFRA_BINLOG_SHIP_SECONDS"])
    s3, cloudwatch = clients(env)
    state = pathlib.Path(env["STATE_DIRECTORY"]) / STATE_FILE
    shipper = Shipper(env, Database(env["WEBINFRA_DB_LOCAL_SOCKET"]), s3, cloudwatch, state)
    once = "--once" in sys.argv[1:]
    fenced = once and "--fenced" in sys.argv[1:]
    while True:
        started = time.monotonic()
        try:
            shipper.step(fenced)
            shipper.publish()
        except Exception as error:  # noqa: BLE001 (the next pass tries again; the alarm watches the delay)
            print(f"webinfra-db-ship-binlogs: {type(error).__name__}: {error}", file=sys.stderr)
            if once:
                return 1
        if once:
            return 0
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


if __name__ == "__main__":
    sys.exit(main())
