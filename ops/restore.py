"""scripts/restore: restore the stack's database to a time (or the latest) from its backups in S3.

    scripts/restore --lab [--to TIME | --latest] [--dry-run]
    scripts/restore --stack NAME [--region R] [--to TIME | --latest] [--dry-run]
    ... [--from-bucket KEPT [--from-stack OLD]]   from the bucket a destroyed stack kept

TIME is UTC, as `2026-11-27T09:15:00Z` (or `2026-11-27 09:15:00`): every transaction that began before
it is restored, none after. --latest: everything shipped. The stack's web servers must all answer
(through SSM Run Command on AWS); the stack may be the one that made the backups (a table dropped, a bad
migration) or a new one, restored from the bucket a destroyed stack kept (--from-bucket: `pulumi destroy`
keeps it; scripts/sweep lists it), of the same name or another (--from-stack). A stack's servers may read
only their own bucket's prefix: the objects the plan needs are first copied into it, under
`<stack>/imported/<restore id>/`, with the operator's credentials.

0. Plan, from the bucket alone: the newest full backup finished by TIME (webinfra-db-backup's manifests),
   then the shipped binary logs that follow it without a gap up to TIME (webinfra-db-ship-binlogs's keys
   name their GTID ranges and when each was closed). A time outside the window, no backup, a bucket
   holding no backup of this stack: refused, saying what is there. --dry-run stops here and says what
   it would do.
1. Hold the automatic failover (its controllers stop on every load balancer; started again at the end,
   whatever happened) and make the primary read-only.
2. On the primary (the writable server; a new stack's first): webinfra-db-restore (backups/), which
   downloads, prepares and puts the backup in place of the data (kept aside on the server), replays
   the binary logs to TIME, and gives the server a GTID position beyond everything the stack ever
   wrote (so that the history a restore undid is never mixed with what comes after it).
3. Make it writable, and re-seed every replica from it (webinfra-db-setup, as at a replica's first
   boot: its app database dropped, a consistent copy of the primary's, replication from there).
4. Record the restore in the bucket (`<stack>/restores/<id>.done.json`: later restores to a time after
   it start from backups made after it), and take a full backup at once from a replica.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from backups.webinfra_db_restore import FAILED_BEFORE_THE_SWAP, REFUSED
from backups.webinfra_db_ship_binlogs import BinlogObject, binlog_prefix, domain_sequence, parse_binlog_key
from ops.promote import (
    LabRunner,
    Promotion,
    Runner,
    Server,
    SsmRunner,
    hold_failover,
    release_failover,
    sql,
    stack_command_parser,
)
from ops.reseed import RESEED_TIMEOUT, reseed_command

RESTORE_TIMEOUT = 6 * 3600


class RestoreRefused(RuntimeError):
    pass


class Store(Protocol):
    """The stack's backup bucket, as the operator reaches it."""

    bucket: str

    def list(self, prefix: str) -> list[dict]: ...  # [{"Key", "Size", "LastModified": epoch seconds}]
    def read(self, key: str) -> bytes: ...
    def write(self, key: str, body: bytes) -> None: ...
    def copy_in(self, source: Store, key: str, new_key: str) -> None: ...


@dataclasses.dataclass(frozen=True)
class FullBackup:
    key: str
    bytes: int
    gtid: str
    finished: float
    host: str
    data_bytes: int = 0  # the data it holds, unpacked (the manifest's; 0: unknown)

    @property
    def sequence(self) -> int:
        return domain_sequence(self.gtid)


@dataclasses.dataclass(frozen=True)
class RestoreRecord:
    restored_at: float
    marker: int  # every transaction after the restore has a GTID sequence number above this


@dataclasses.dataclass
class Plan:
    stack: str
    backup: FullBackup
    binlogs: list[tuple[BinlogObject, int]]  # each with the sequence number to resume after
    target: datetime.datetime | None
    marker: int
    warnings: list[str]
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)  # of the binary-log objects, by key
    source: str = ""  # another bucket's backups (a destroyed stack's): "bucket B, stack S"
    id: str = dataclasses.field(default_factory=lambda: time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "stack": self.stack,
            "backup": {
                "key": self.backup.key,
                "bytes": self.backup.bytes,
                "gtid": self.backup.gtid,
                **({"data_bytes": self.backup.data_bytes} if self.backup.data_bytes else {}),
            },
            "binlogs": [{"key": b.key, "bytes": self.sizes.get(b.key, 0), "after": after} for b, after in self.binlogs],
            "stop_datetime": self.target.strftime("%Y-%m-%d %H:%M:%S") if self.target else None,
            "marker": self.marker,
        }

    def describe(self) -> str:
        until = f"to {self.target:%Y-%m-%d %H:%M:%S} UTC" if self.target else "to the latest shipped transaction"
        reach = self.binlogs[-1][0].last if self.binlogs else self.backup.sequence
        lines = [
            f"restore of stack {self.stack} {until}:",
            *([f"  from {self.source}, copied into this stack's bucket first"] if self.source else []),
            f"  full backup {self.backup.key} ({self.backup.bytes:,} bytes, from {self.backup.host}, finished "
            f"{_utc(self.backup.finished)}, GTID {self.backup.gtid})",
            f"  then {len(self.binlogs)} shipped binary logs, GTID sequence {self.backup.sequence + 1} to at most "
            f"{reach}" + (f" (closed by {_utc(self.binlogs[-1][0].closed.timestamp())})" if self.binlogs else ""),
            f"  new history from GTID sequence {self.marker + 1}",
            *(f"  note: {w}" for w in self.warnings),
        ]
        return "\n".join(lines)


def _utc(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def parse_time(text: str) -> datetime.datetime:
    cleaned = text.strip().replace("T", " ").removesuffix("Z").removesuffix("+00:00")
    try:
        return datetime.datetime.strptime(cleaned, "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.UTC)
    except ValueError:
        raise RestoreRefused(f"--to {text!r}: a UTC time is written 2026-11-27T09:15:00Z") from None


# --- 0. the plan -------------------------------------------------------------------------------------------
def read_backups(
    store: Store, stack: str
) -> tuple[list[FullBackup], list[BinlogObject], list[RestoreRecord], dict[str, int]]:
    listed = store.list(f"{stack}/")
    if not listed:
        others = sorted({item["Key"].split("/", 1)[0] for item in store.list("")})
        raise RestoreRefused(
            f"bucket {store.bucket} holds no backup of stack {stack!r}"
            + (f" (it holds: {', '.join(others)})" if others else " (it is empty)")
        )
    sizes = {item["Key"]: item["Size"] for item in listed}
    backups, records = [], []
    for item in listed:
        key = item["Key"]
        if key.startswith(f"{stack}/full/") and key.endswith(".manifest.json"):
            manifest = json.loads(store.read(key))
            backup_key = f"{stack}/full/{manifest['backup']}"
            if backup_key in sizes:  # a manifest is written after its backup; never one without
                backups.append(
                    FullBackup(
                        backup_key,
                        manifest["bytes"],
                        manifest["gtid"],
                        manifest["finished"],
                        manifest["host"],
                        int(manifest.get("data_bytes") or 0),
                    )
                )
        elif key.startswith(f"{stack}/restores/") and key.endswith(".done.json"):
            record = json.loads(store.read(key))
            records.append(RestoreRecord(record["restored_at"], record["marker"]))
    binlogs = [
        o for o in (parse_binlog_key(i["Key"]) for i in listed if i["Key"].startswith(binlog_prefix(stack))) if o
    ]
    return backups, binlogs, records, sizes


def plan_restore(
    stack: str,
    backups: list[FullBackup],
    binlogs: list[BinlogObject],
    records: list[RestoreRecord],
    target: datetime.datetime | None,
    now: float,
    server_positions: Sequence[int] = (),
) -> Plan:
    """The newest full backup finished by `target` in the target's history, then the binary logs that
    follow it without a gap, up to the first closed at or after `target` (`None`: every one)."""
    if target is not None and target.timestamp() > now:
        raise RestoreRefused(f"{target:%Y-%m-%d %H:%M:%S} UTC is in the future (now: {_utc(now)})")
    moment = target.timestamp() if target is not None else now
    # A restore starts a new history at its marker: a time after it is restored from what came after it.
    era_start = max((r.marker for r in records if r.restored_at <= moment), default=0)
    era_end = min((r.marker for r in records if r.restored_at > moment), default=None)

    def in_era(sequence: int) -> bool:
        return sequence >= era_start and (era_end is None or sequence < era_end)

    if not backups:
        raise RestoreRefused(
            f"no full backup of stack {stack!r} yet: the first is taken at the first replica's turn "
            "(webinfra-db-backup.timer, daily), or now with `systemctl start webinfra-db-backup` on a replica"
        )
    candidates = [b for b in backups if in_era(b.sequence) and b.finished <= moment]
    if not candidates:
        era = [b for b in backups if in_era(b.sequence)]
        oldest = min(era or backups, key=lambda b: b.finished)
        raise RestoreRefused(
            f"{target:%Y-%m-%d %H:%M:%S} UTC is before the window: the oldest full backup it could start from "
            f"finished at {_utc(oldest.finished)} (backups are kept backupRetentionDays)"
            if target is not None
            else "no full backup finished since the last restore yet"
        )
    backup = max(candidates, key=lambda b: (b.finished, b.sequence))
    following = sorted(
        (o for o in binlogs if o.last > era_start and (era_end is None or o.last < era_end)),
        key=lambda o: (o.last, o.closed),
    )
    chain: list[tuple[BinlogObject, int]] = []
    position = backup.sequence
    while True:
        covering = [o for o in following if o.first <= position + 1 <= o.last]
        if not covering:
            break
        chosen = max(covering, key=lambda o: (o.last, o.closed))
        chain.append((chosen, position))
        position = chosen.last
        if target is not None and chosen.closed >= target:
            break
    warnings = []
    later = [o for o in following if o.first > position + 1]
    if later and (target is None or min(later, key=lambda o: o.first).closed < target):
        gap = min(later, key=lambda o: o.first)
        warnings.append(
            f"GTID sequence {position + 1} to {gap.first - 1} is in no shipped binary log (a gap): the restore "
            f"stops before it, at sequence {position}"
        )
    if target is not None and (not chain or chain[-1][0].closed < target):
        reached = chain[-1][0].closed if chain else None
        warnings.append(
            "the shipped binary logs end "
            + (f"at {reached:%Y-%m-%d %H:%M:%S} UTC" if reached else "at the full backup")
            + f", before {target:%Y-%m-%d %H:%M:%S} UTC: anything written in between was not shipped"
        )
    marker = (
        max(
            [b.sequence for b in backups]
            + [o.last for o in binlogs]
            + [r.marker for r in records]
            + list(server_positions)
            + [0]
        )
        + 1
    )
    return Plan(stack, backup, chain, target, marker, warnings)


# --- 1-4. doing it -------------------------------------------------------------------------------------------
def _host_env_command(command: str) -> str:
    """A host program started as its units start them: with the host's environment file."""
    return f"set -a; . /etc/webinfra/webinfra.env; set +a; {command}"


@dataclasses.dataclass(frozen=True)
class Source:
    """Backups in another bucket than the stack's own: the one a destroyed stack kept."""

    store: Store
    stack: str


def _sequences(store: Store, stack: str) -> list[int]:
    """Every GTID sequence number the stack's own bucket names (backups, logs, restores); none if empty."""
    try:
        backups, binlogs, records, _ = read_backups(store, stack)
    except RestoreRefused:
        return []
    return [b.sequence for b in backups] + [o.last for o in binlogs] + [r.marker for r in records]


def _plan(store: Store, stack: str, target, now: float, servers: list[Server], source: Source | None = None) -> Plan:
    reading, of = (source.store, source.stack) if source else (store, stack)
    backups, binlogs, records, sizes = read_backups(reading, of)
    if source and not backups:
        raise RestoreRefused(f"bucket {reading.bucket} holds no full backup of stack {of!r}: nothing to restore from")
    positions = [domain_sequence(s.gtid) for s in servers]
    if source:  # the new history begins beyond this stack's own too
        positions += _sequences(store, stack)
    plan = plan_restore(of, backups, binlogs, records, target, now, positions)
    plan.stack, plan.sizes = stack, sizes
    if source:
        plan.source = f"bucket {source.store.bucket} (stack {source.stack}'s backups)"
    return plan


def import_objects(
    store: Store, source: Source, plan: Plan, say: Callable[[str], None], copied: set[str] | None = None
) -> Plan:
    """The plan's objects copied from the kept bucket into the stack's own, under `<stack>/imported/<id>/`
    (its servers may read nothing else); the plan then names the copies. Those in `copied` are there
    already (a kept bucket's objects are written once: the plan before the fence copied them). Out of the
    paths the stack's own planning reads (full/, binlog/): a later restore of this stack starts from its own
    backups."""
    copied = set() if copied is None else copied
    into = f"{plan.stack}/imported/{plan.id}/"
    wanted = [plan.backup.key, *(o.key for o, _ in plan.binlogs)]
    missing = [key for key in wanted if key not in copied]
    # a day of binary logs is up to 2,880 objects: several copies at once (each is S3 copying inside S3)

    def copy(key: str) -> str:
        store.copy_in(source.store, key, into + key)
        return key

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        copied.update(pool.map(copy, missing))
    total = plan.backup.bytes + sum(plan.sizes.get(o.key, 0) for o, _ in plan.binlogs)
    if missing:
        say(
            f"copied {len(missing)} objects ({total:,} bytes in all) from bucket {source.store.bucket} into "
            f"{store.bucket}/{into}"
        )
    backup = dataclasses.replace(plan.backup, key=into + plan.backup.key)
    binlogs = [(o._replace(key=into + o.key), after) for o, after in plan.binlogs]
    sizes = {into + key: size for key, size in plan.sizes.items()}
    return dataclasses.replace(plan, backup=backup, binlogs=binlogs, sizes=sizes)


def _restored(output: str) -> dict:
    """webinfra-db-restore's last word: one line of JSON on its standard output."""
    for line in reversed(output.strip().splitlines()):
        if line.startswith('{"sequence"'):
            return json.loads(line)
    raise RuntimeError("webinfra-db-restore said nothing of what it restored")


def hold_every_controller(runner: Any, say: Callable[[str], None], doing: str) -> list[str]:
    """The failover controllers stopped on every load balancer, or none (a live one could make a fenced
    primary writable, or point a half-seeded server elsewhere): refused then."""
    held = hold_failover(runner, say, doing)
    missing = sorted(set(runner.balancers()) - set(held))
    if missing:
        release_failover(runner, held, say)
        raise RestoreRefused(f"the failover controller could not be held on {', '.join(missing)}")
    return held


SHIP_LAST_WRITES = "STATE_DIRECTORY=/var/lib/webinfra/binlogs /usr/local/sbin/webinfra-db-ship-binlogs --once --fenced"


def run_restore(
    runner: Runner,
    store: Store,
    stack: str,
    target: datetime.datetime | None,
    *,
    dry_run: bool = False,
    source: Source | None = None,
    say: Callable[[str], None] = print,
    now: Callable[[], float] = time.time,
) -> dict:
    servers: list[Server] = runner.servers()  # type: ignore[attr-defined]
    promotion = Promotion(runner, servers, say)
    promotion.survey()
    missing = [s.name for s in servers if not s.reachable]
    if missing:
        raise RestoreRefused(f"every web server must answer for a restore; {', '.join(missing)} do not")
    reads = promotion._run(servers[0], HOSTS_BUCKET).strip()
    if reads != store.bucket:
        raise RestoreRefused(
            f"the stack's servers read their backups from {reads or 'no bucket'}, not {store.bucket} "
            "(another bucket's backups, a kept one's: --from-bucket)"
        )
    if source and source.store.bucket == store.bucket:
        raise RestoreRefused(
            f"{store.bucket} is this stack's own bucket (its servers back up to it): --from-bucket names "
            "another, the one a destroyed stack kept (scripts/sweep lists both when they share a stack name)"
        )
    plan = _plan(store, stack, target, now(), servers, source)
    say(plan.describe())
    if dry_run:
        say("dry run: nothing changed")
        return {"plan": plan.to_json()}
    copied: set[str] = set()
    if source:  # while the stack still serves: after the fence, only what the second plan adds
        import_objects(store, source, plan, say, copied)
    primary = next((s for s in servers if s.role == "primary"), servers[0])
    replicas = [s for s in servers if s is not primary]
    held = hold_every_controller(runner, say, "restoring")
    # What is known of the primary's data: "as it was" (undo the fence), "replaced" (keep everything held
    # for a person), or "unknown" (an answer lost while the host program may still run: keep it all too).
    outcome = "as it was"
    receiving: list[Server] = []
    started = time.monotonic()
    try:
        roles = {s.name: s.role for s in servers}
        promotion.survey()
        if {s.name: s.role for s in servers} != roles:
            raise RestoreRefused("the servers' roles changed while the failover was being held: plan again")
        say(f"{primary.name}: read-only, its last writes shipped, then restored")
        promotion._run(primary, sql("SET GLOBAL read_only = ON"))
        for replica in replicas:
            if "Slave_IO_Running: Yes" in promotion._run(replica, "mariadb -e 'SHOW SLAVE STATUS\\G'"):
                receiving.append(replica)
            promotion._run(replica, sql("STOP SLAVE"))
        status, output = runner.run(primary.name, _host_env_command(SHIP_LAST_WRITES), 600)
        if status != 0:
            raise RuntimeError(f"{primary.name}: shipping its last binary log failed ({status}): {output[-500:]}")
        # Planned again now that nothing writes: the new history's first GTID must lie beyond everything
        # written and shipped, the last seconds before the fence included.
        promotion.survey()
        # the same restore: the same id (its plan, its record, where the kept bucket's objects were copied)
        plan = dataclasses.replace(_plan(store, stack, target, now(), servers, source), id=plan.id)
        if source:
            plan = import_objects(store, source, plan, say, copied)
        plan_key = f"{stack}/restores/{plan.id}.plan.json"
        store.write(plan_key, json.dumps(plan.to_json()).encode())
        outcome = "unknown"
        status, output = runner.run(
            primary.name, _host_env_command(f"/usr/local/sbin/webinfra-db-restore {plan_key}"), RESTORE_TIMEOUT
        )
        say(output.strip())
        if status in (REFUSED, FAILED_BEFORE_THE_SWAP):
            outcome = "as it was"
            raise RuntimeError(f"{primary.name}: webinfra-db-restore did not restore ({status}): nothing was changed")
        if status != 0:
            outcome = "replaced" if status != 255 else "unknown"
            raise RuntimeError(f"{primary.name}: webinfra-db-restore failed ({status})")
        outcome = "replaced"
        restored = _restored(output)
        restored_in = time.monotonic() - started
        # Recorded before the new history begins (a later restore to a time after this starts there).
        record = {"restored_at": now(), "marker": plan.marker, "plan": plan.id, **restored}
        store.write(f"{stack}/restores/{plan.id}.done.json", json.dumps(record).encode())
        promotion._run(primary, sql("SET GLOBAL read_only = OFF"))
        for replica in replicas:
            say(f"{replica.name}: re-seeded from {primary.name}")
            status, output = runner.run(replica.name, reseed_command(), RESEED_TIMEOUT)
            if status != 0:
                raise RuntimeError(f"{replica.name}: re-seeding failed ({status}): {output.strip()[-500:]}")
        outcome = "done"
    except BaseException:
        if outcome == "as it was":
            for server, statement in [(primary, "SET GLOBAL read_only = OFF")] + [
                (r, "START SLAVE") for r in receiving
            ]:
                status, output = runner.run(server.name, sql(statement), 60)
                if status != 0:
                    say(f"{server.name}: undoing the fence failed ({status}): {output.strip()[-300:]}")
            release_failover(runner, held, say)
        else:
            say(
                f"the automatic failover stays held (its data {outcome}): look at {primary.name} (journalctl; its "
                "own data is kept beside /var/lib/mysql), then `systemctl start webinfra-failover` on the load "
                "balancers"
            )
        raise
    release_failover(runner, held, say)
    if replicas:
        # The first backup of the new history, now (a time after the restore needs one).
        status, output = runner.run(
            replicas[0].name,
            _host_env_command("WEBINFRA_BACKUP_FRESH_SECONDS=0 /usr/local/sbin/webinfra-db-backup"),
            RESTORE_TIMEOUT,
        )
        say(output.strip().splitlines()[-1] if output.strip() else f"{replicas[0].name}: backup ({status})")
    say(
        f"restored {stack} to GTID sequence {restored['sequence']} (last transaction {restored['time'] or 'the backup'}"
        f") in {restored_in:.0f} s; replicas re-seeded"
    )
    return {"plan": plan.to_json(), "restored": restored, "restore_seconds": restored_in}


# --- stores -------------------------------------------------------------------------------------------
class S3Store:
    def __init__(self, bucket: str, s3: Any):
        self.bucket, self.s3 = bucket, s3

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        """S3's refusals in words: a bucket that is not there or not allowed is a refusal, naming it."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket", "AccessDenied", "403", "404", "PermanentRedirect", "AllAccessDisabled"):
                raise RestoreRefused(f"S3 refused {what} in bucket {self.bucket}: {code} ({error})") from error
            raise RuntimeError(f"S3: {what} in bucket {self.bucket} failed: {error}") from error
        except BotoCoreError as error:
            raise RuntimeError(f"S3: {what} in bucket {self.bucket} failed: {error}") from error

    def list(self, prefix: str) -> list[dict]:
        return self._call(
            f"listing {prefix or 'everything'} (s3:ListBucket)",
            lambda: [
                {"Key": item["Key"], "Size": item["Size"], "LastModified": item["LastModified"].timestamp()}
                for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
                for item in page.get("Contents", [])
            ],
        )

    def read(self, key: str) -> bytes:
        return self._call(
            f"reading {key} (s3:GetObject)", lambda: self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        )

    def write(self, key: str, body: bytes) -> None:
        self._call(f"writing {key} (s3:PutObject)", lambda: self.s3.put_object(Bucket=self.bucket, Key=key, Body=body))

    def copy_in(self, source: Store, key: str, new_key: str) -> None:
        # S3 copies inside S3 (in parts above 8 MB: a single CopyObject stops at 5 GB); the bucket's default
        # encryption applies to the copy. The source is read through a client of its own region.
        self._call(
            f"copying {source.bucket}/{key} to {new_key} (s3:GetObject on the source, s3:PutObject here)",
            lambda: self.s3.copy(
                {"Bucket": source.bucket, "Key": key}, self.bucket, new_key, SourceClient=getattr(source, "s3", None)
            ),
        )


def bucket_region(s3: Any, bucket: str) -> str:
    """The region a bucket is in (a kept one may be in another than the stack's)."""
    store = S3Store(bucket, s3)
    location = store._call("asking its region (s3:GetBucketLocation)", lambda: s3.get_bucket_location(Bucket=bucket))
    return location.get("LocationConstraint") or "us-east-1"


class LabStore:
    """The lab's S3 stand-in, reached from the namespace it listens in (lab/aws_api.py)."""

    def __init__(self, bucket: str):
        from lab import cli

        self.plan = cli.load_state()
        self.bucket = bucket

    def _call(self, command: str, *args: str, input: bytes | None = None) -> bytes:
        from lab import cli, network

        result = subprocess.run(
            [
                *("ip", "netns", "exec", network.CLOUD_NS, sys.executable, "-m", "lab.aws_api", command),
                *(self.plan.aws_endpoint_url, self.plan.region, *args),
            ],
            input=input,
            cwd=cli.REPO,
            capture_output=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"the lab's S3: {command} failed: {result.stderr!r}")
        return result.stdout

    def list(self, prefix: str) -> list[dict]:
        return json.loads(self._call("list-objects", self.bucket, prefix))

    def read(self, key: str) -> bytes:
        return self._call("get-object", self.bucket, key)

    def write(self, key: str, body: bytes) -> None:
        self._call("put-object", self.bucket, key, input=body)

    def copy_in(self, source: Store, key: str, new_key: str) -> None:
        self._call("copy-object", source.bucket, key, self.bucket, new_key)


HOSTS_BUCKET = "sed -n 's/^WEBINFRA_BACKUP_BUCKET=//p' /etc/webinfra/webinfra.env"


def hosts_bucket(runner: Any) -> str:
    """The bucket the stack's servers back up to (their environment file), asked of the first that answers."""
    for server in runner.servers():
        status, output = runner.run(server.name, HOSTS_BUCKET, 60)
        if status == 0 and output.strip():
            return output.strip()
    raise RestoreRefused("no web server of the stack answers: which bucket its backups are in is unknown")


def main(argv: list[str]) -> int:
    parser = stack_command_parser("scripts/restore", __doc__)
    parser.add_argument(
        "--from-bucket", metavar="KEPT", help="restore another bucket's backups: the one a destroyed stack kept"
    )
    parser.add_argument("--from-stack", metavar="OLD", help="with --from-bucket: that stack's (default: this one's)")
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--to", help="a UTC time: 2026-11-27T09:15:00Z")
    when.add_argument("--latest", action="store_true", help="everything shipped")
    parser.add_argument("--dry-run", action="store_true", help="plan and say what would be done, change nothing")
    from botocore.exceptions import BotoCoreError, ClientError  # an AWS API's refusal, said as one

    args = parser.parse_args(argv)
    if args.from_stack and not args.from_bucket:
        parser.error("--from-stack needs --from-bucket (the bucket that stack kept)")
    try:
        target = parse_time(args.to) if args.to else None
        kept: Store | None = None
        if args.lab:
            runner: Any = LabRunner()
            store: Store = LabStore(hosts_bucket(runner))
            stack = runner.plan.stack
            kept = LabStore(args.from_bucket) if args.from_bucket else None
        else:
            import boto3

            runner = SsmRunner(args.stack, args.region, purpose="scripts/restore")
            s3 = boto3.client("s3", region_name=args.region)
            store = S3Store(hosts_bucket(runner), s3)
            stack = args.stack
            if args.from_bucket:
                region = bucket_region(s3, args.from_bucket)
                kept = S3Store(args.from_bucket, boto3.client("s3", region_name=region))
        source = Source(kept, args.from_stack or stack) if kept else None
        run_restore(runner, store, stack, target, dry_run=args.dry_run, source=source)
    except RestoreRefused as refusal:
        print(f"scripts/restore: refused: {refusal}", file=sys.stderr)
        return 2
    except (RuntimeError, subprocess.SubprocessError, BotoCoreError, ClientError) as error:
        print(f"scripts/restore: failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
