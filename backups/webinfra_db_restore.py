#!/usr/bin/python3
"""webinfra-db-restore: restore this server's database from the stack's backups in S3, as a restore plan
says (scripts/restore writes the plan, then runs this on the server that will be the primary).

    webinfra-db-restore PLAN_KEY       the plan: a JSON object in the stack's bucket

The plan names a full backup (webinfra-db-backup's, with the GTID position it is consistent at), the
shipped binary logs that follow it (webinfra-db-ship-binlogs's, each with the position to resume after)
and the time to stop at, or none for everything shipped. This program:

  1. checks the disk has room for the backup, unpacked, beside the data it replaces;
  2. downloads the backup into a directory beside the data directory, unpacks (zstd, mbstream) and
     prepares it (mariadb-backup --prepare): a consistent data directory;
  3. stops MariaDB, moves the data directory aside (kept: <datadir>.before-restore-<id>, to delete once
     the restore is checked), puts the prepared one in its place, starts MariaDB (read-only, as every
     server boots);
  4. replays the binary logs from the backup's position up to the time (mariadb-binlog --start-position,
     --stop-datetime), without binary logging: the restored history is not shipped again;
  5. makes the server this stack's again: its users with this stack's passwords, its self-fence event
     and dump-thread procedure, its stored replication settings, and a GTID position beyond anything
     the stack ever shipped (the plan's `marker`), so that the binary logs it writes from now on are
     told apart from the history the restore undid.

It leaves the server read-only: scripts/restore makes it writable and re-seeds the replicas from it.
Prints, last, one line of JSON: the GTID sequence and time of the last transaction replayed. Exit status
3: refused, 4: failed before the data was replaced (in both, the server's data is as it was); any other
failure: after it was replaced (the server's own data is kept beside the data directory).

Standard library and boto3 only (python3-boto3 from Debian); MariaDB's own tools.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
from typing import Any

ENV = "/etc/webinfra/webinfra.env"
SECRETS = "/etc/webinfra/secrets"
STEP_TIMEOUT = 6 * 3600
# mariadb-binlog's own statement, at the start of a line (never a row's text: annotations are left out too)
_GTID_SEQ = re.compile(rb"^/\*M?!100001 SET @@session\.gtid_seq_no=(\d+)\*/")
_EVENT_TIME = re.compile(rb"^#(\d{6}\s+\d{1,2}:\d{2}:\d{2}) server id")


def say(message: str) -> None:
    print(f"webinfra-db-restore: {message}", flush=True)


class Refused(Exception):
    """The restore cannot go on; nothing on this server was changed."""


class SwapUndone(Exception):
    """Putting the restored data in place failed, and the server's own data was put back."""


# Exit statuses scripts/restore tells apart: with these two the server's data is as it was.
REFUSED, FAILED_BEFORE_THE_SWAP = 3, 4


def environment(path: str) -> dict[str, str]:
    values = {}
    for line in pathlib.Path(path).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def run(command: list[str], **options: Any) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=STEP_TIMEOUT, **options)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({result.returncode}): {(result.stderr or result.stdout)[-1500:]}")
    return result


class Restore:
    def __init__(self, env: dict[str, str], s3: Any, plan: dict):
        self.env, self.s3, self.plan = env, s3, plan
        self.bucket = env["WEBINFRA_BACKUP_BUCKET"]
        self.socket = env["WEBINFRA_DB_LOCAL_SOCKET"]
        self.id = plan["id"]

    def sql(self, statement: str, database_input: str | None = None) -> str:
        return run(["mariadb", f"--socket={self.socket}", "-N", "-B", "-e", statement], input=database_input).stdout

    def wait_for_server(self, seconds: float = 300) -> None:
        deadline = time.monotonic() + seconds
        while True:
            if (
                subprocess.run(["mariadb", f"--socket={self.socket}", "-e", "SELECT 1"], capture_output=True).returncode
                == 0
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"MariaDB did not start within {seconds:.0f} s (journalctl -u mariadb)")
            time.sleep(1)

    # -- 1, 2 ---------------------------------------------------------------------------------------------
    def prepare(self, datadir: pathlib.Path, work: pathlib.Path) -> pathlib.Path:
        backup = self.plan["backup"]
        free = shutil.disk_usage(datadir.parent).free
        # The data unpacked (the manifest says how large it was), the stream while it unpacks, the logs.
        unpacked = int(backup.get("data_bytes") or 8 * int(backup["bytes"]))
        wanted = unpacked + int(backup["bytes"]) + sum(int(b["bytes"]) for b in self.plan["binlogs"]) * 5
        if free < wanted:
            raise Refused(
                f"{free // 2**20} MiB free beside {datadir}, and this restore needs about {wanted // 2**20} MiB "
                "(the backup unpacked and prepared, the binary logs): grow the disk first"
            )
        work.mkdir(mode=0o700)
        data = work / "data"
        data.mkdir()
        say(f"downloading and unpacking {backup['key']} ({backup['bytes']} bytes, GTID {backup['gtid']})")
        body = self.s3.get_object(Bucket=self.bucket, Key=backup["key"])["Body"]
        unpack = subprocess.Popen(f"zstd -q -d | mbstream -x -C '{data}'", shell=True, stdin=subprocess.PIPE)
        assert unpack.stdin is not None
        for chunk in iter(lambda: body.read(1 << 20), b""):
            unpack.stdin.write(chunk)
        unpack.stdin.close()
        if unpack.wait(timeout=STEP_TIMEOUT) != 0:
            raise RuntimeError("unpacking the backup failed (zstd | mbstream)")
        run(["mariadb-backup", "--prepare", f"--target-dir={data}"])
        binlogs = work / "binlogs"
        binlogs.mkdir()
        for index, item in enumerate(self.plan["binlogs"]):
            compressed = self.s3.get_object(Bucket=self.bucket, Key=item["key"])["Body"].read()
            path = binlogs / f"{index:06d}.bin"
            with path.open("wb") as out:
                subprocess.run(["zstd", "-q", "-d", "-c"], input=compressed, stdout=out, check=True)
        say(f"prepared; {len(self.plan['binlogs'])} binary logs downloaded")
        return data

    # -- 3 ------------------------------------------------------------------------------------------------
    def swap(self, datadir: pathlib.Path, prepared: pathlib.Path) -> pathlib.Path:
        """The prepared data in place of the server's, which is kept beside it. Entry by entry (the data
        directory itself may be a mount point, and overlay file systems refuse to rename a directory of
        a lower layer): shutil.move renames where it can and copies where it cannot. A failure midway puts
        the server's own data back and starts it again (SwapUndone: nothing changed)."""
        kept = datadir.with_name(f"{datadir.name}.before-restore-{self.id}")
        run(["systemctl", "stop", "mariadb"])
        kept.mkdir(mode=0o700)
        moved_out: list[str] = []  # the server's own entries, now in `kept`
        moved_in: list[str] = []  # the restored entries, now in the data directory
        try:
            for entry in sorted(p.name for p in datadir.iterdir()):
                shutil.move(str(datadir / entry), str(kept / entry))
                moved_out.append(entry)
            for entry in sorted(p.name for p in prepared.iterdir()):
                shutil.move(str(prepared / entry), str(datadir / entry))
                moved_in.append(entry)
        except Exception as error:
            try:  # only what this moved: the restored entries out, the server's own back
                for entry in moved_in:
                    target = datadir / entry
                    shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
                for entry in moved_out:
                    shutil.move(str(kept / entry), str(datadir / entry))
                kept.rmdir()
            except Exception as undoing:  # noqa: BLE001 (said, with where the data is)
                raise RuntimeError(
                    f"{type(error).__name__}: {error}; putting the server's own data back failed too "
                    f"({type(undoing).__name__}: {undoing}): what was moved is in {kept}"
                ) from error
            run(["systemctl", "start", "mariadb"])
            raise SwapUndone(f"{type(error).__name__}: {error}") from error
        run(["chown", "-R", "mysql:mysql", str(datadir)])
        run(["systemctl", "start", "mariadb"])
        self.wait_for_server()
        say(f"MariaDB runs on the restored data (the data it had is kept in {kept})")
        return kept

    # -- 4 ------------------------------------------------------------------------------------------------
    def replay(self, work: pathlib.Path) -> tuple[int, str]:
        """Every binary log after its resume position, up to the plan's time, into the server without
        binary logging; the last transaction's (sequence, time) as mariadb-binlog printed them."""
        last_sequence, last_time = int(self.plan["backup"]["gtid"].rsplit("-", 1)[1]), ""
        stopped = False
        client = subprocess.Popen(
            ["mariadb", f"--socket={self.socket}", "--binary-mode"], stdin=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert client.stdin is not None
        client.stdin.write(b"SET SESSION sql_log_bin = 0;\n")
        stop = ["--stop-datetime", self.plan["stop_datetime"]] if self.plan.get("stop_datetime") else []
        for index, item in enumerate(self.plan["binlogs"]):
            command = [
                "mariadb-binlog",
                "--skip-annotate-row-events",
                f"--start-position=0-0-{item['after']}",
                *stop,
                str(work / "binlogs" / f"{index:06d}.bin"),
            ]
            # The time of --stop-datetime is the local time zone's: UTC, as the plan's.
            decoder = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "TZ": "UTC"}
            )
            assert decoder.stdout is not None and decoder.stderr is not None
            event_time = b""
            for line in decoder.stdout:
                found = _EVENT_TIME.match(line)
                if found:
                    event_time = found.group(1)
                sequence = _GTID_SEQ.search(line)
                if sequence:
                    number = int(sequence.group(1))
                    if number > last_sequence + 1:  # the keys promised no gap: never replay past one
                        raise RuntimeError(
                            f"{item['key']} goes on at GTID sequence {number}, after {last_sequence}: a gap"
                        )
                    last_sequence, last_time = number, _iso(event_time)
                client.stdin.write(line)
            problem = decoder.stderr.read().decode()
            if decoder.wait(timeout=STEP_TIMEOUT) != 0:
                # With a stop time before this file's first event, mariadb-binlog never reaches the start
                # position and says so: nothing in it (or after it) is before the time.
                if stop and "never reached expected GTID state" in problem:
                    stopped = True
                else:
                    raise RuntimeError(f"mariadb-binlog failed on {item['key']}: {problem[-500:]}")
            if stopped:
                break
        client.stdin.close()
        error = client.stderr.read().decode() if client.stderr else ""
        if client.wait(timeout=STEP_TIMEOUT) != 0:
            raise RuntimeError(f"replaying the binary logs failed: {error[-1500:]}")
        return last_sequence, last_time

    # -- 5 ------------------------------------------------------------------------------------------------
    def make_ours(self) -> None:
        secrets = {}
        for name in ("db-app", "db-replication", "db-failover"):
            secrets.update(environment(f"{SECRETS}/{name}.env"))
        self.sql("SOURCE /etc/webinfra/db-self-fence.sql")
        self.sql("SOURCE /etc/webinfra/db-end-dump-threads.sql")
        users = pathlib.Path("/etc/webinfra/db-users.sql").read_text()
        self.sql(
            "SET SESSION sql_log_bin = 0; "
            f"SET @app_password='{secrets['WEBINFRA_DB_PASSWORD']}', "
            f"@replication_password='{secrets['WEBINFRA_DB_REPLICATION_PASSWORD']}', "
            f"@failover_password='{secrets['WEBINFRA_DB_FAILOVER_PASSWORD']}';\n" + users
        )
        server_id = self.sql("SELECT @@global.server_id").strip()
        marker = f"0-{server_id}-{int(self.plan['marker'])}"
        self.sql(
            "STOP SLAVE; RESET SLAVE ALL; RESET MASTER; "
            f"SET GLOBAL gtid_binlog_state = '{marker}'; SET GLOBAL gtid_slave_pos = '{marker}'"
        )
        run(["webinfra-db-follow", self.env["WEBINFRA_PRIVATE_ADDRESS"], "current_pos", "--stored"])
        say(f"this stack's users and settings in place; its GTID position is {marker}")


def _iso(stamp: bytes) -> str:
    """mariadb-binlog's event time (`261127  9:01:07`, UTC here) as 2026-11-27T09:01:07Z."""
    if not stamp:
        return ""
    parsed = time.strptime(" ".join(stamp.decode().split()), "%y%m%d %H:%M:%S")
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", parsed)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    import boto3  # on the host: python3-boto3

    env = {**environment(ENV), **{k: v for k, v in os.environ.items() if k.startswith("WEBINFRA_")}}
    options: dict[str, Any] = {"region_name": env["WEBINFRA_AWS_REGION"]}
    if env.get("WEBINFRA_AWS_ENDPOINT_URL"):
        options["endpoint_url"] = env["WEBINFRA_AWS_ENDPOINT_URL"]
    s3 = boto3.client("s3", **options)
    work: pathlib.Path | None = None
    try:
        try:
            plan = json.loads(s3.get_object(Bucket=env["WEBINFRA_BACKUP_BUCKET"], Key=argv[0])["Body"].read())
            restore = Restore(env, s3, plan)
            datadir = pathlib.Path(restore.sql("SELECT @@global.datadir").strip())
            work = datadir.with_name(f"webinfra-restore-{plan['id']}")
            prepared = restore.prepare(datadir, work)
        except Refused as refusal:
            say(f"refused: {refusal}")
            return REFUSED
        except Exception as error:  # noqa: BLE001 (nothing changed yet: said, and scripts/restore undoes its fence)
            say(f"failed before the data was replaced: {type(error).__name__}: {error}")
            return FAILED_BEFORE_THE_SWAP
        try:
            restore.swap(datadir, prepared)
        except SwapUndone as undone:
            say(f"failed to put the restored data in place, and put the server's own back: {undone}")
            return FAILED_BEFORE_THE_SWAP
        sequence, at = restore.replay(work)
        restore.make_ours()
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    say(f"restored to GTID sequence {sequence} (its last transaction at {at or 'the backup'})")
    print(json.dumps({"sequence": sequence, "time": at}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
