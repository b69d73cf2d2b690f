"""scripts/restore's plan, from a bucket's keys alone: which full backup, which shipped binary logs, where each
resumes; and the refusals (a time outside the window, no backup, a wrong stack, the future). The keys are
made by the shipper's own key function (backups/webinfra_db_ship_binlogs.py), so the planner reads what the
hosts write. The restore itself runs in the lab (tests/lab: the restore drills)."""

from __future__ import annotations

import datetime
import json

import pytest
from moto import mock_aws

from backups.webinfra_db_ship_binlogs import binlog_key, parse_binlog_key
from ops.restore import FullBackup, RestoreRecord, RestoreRefused, main, parse_time, plan_restore, read_backups

DAY = datetime.datetime(2026, 11, 27, tzinfo=datetime.UTC)


def at(hours: float) -> float:
    return (DAY + datetime.timedelta(hours=hours)).timestamp()


def shipped(last: int, first: int, closed_hours: float, host: str = "web-01"):
    key = binlog_key("dev", last, first, at(closed_hours), host, f"webinfra-bin.{last:06d}")
    parsed = parse_binlog_key(key)
    assert parsed is not None
    return parsed


def backup(sequence: int, finished_hours: float) -> FullBackup:
    return FullBackup(f"dev/full/{sequence}.xbstream.zst", 1000, f"0-2-{sequence}", at(finished_hours), "web-02")


BACKUPS = [backup(100, 3), backup(500, 27)]
BINLOGS = [
    shipped(90, 1, 2.5),
    shipped(150, 91, 3.5),
    shipped(300, 151, 10),
    shipped(520, 301, 27.5),
    shipped(600, 521, 30),
]


def test_a_time_is_restored_from_the_newest_backup_before_it_and_the_logs_that_follow_it():
    plan = plan_restore("dev", BACKUPS, BINLOGS, [], DAY + datetime.timedelta(hours=9), now=at(31))
    assert plan.backup == BACKUPS[0]
    # from the backup's position (100) on, up to the first file closed after 09:00
    assert [(b.last, after) for b, after in plan.binlogs] == [(150, 100), (300, 150)]
    assert plan.to_json()["stop_datetime"] == "2026-11-27 09:00:00"
    assert plan.marker == 601 and plan.warnings == []
    later = plan_restore("dev", BACKUPS, BINLOGS, [], DAY + datetime.timedelta(hours=29), now=at(31))
    assert later.backup == BACKUPS[1] and [(b.last, after) for b, after in later.binlogs] == [(520, 500), (600, 520)]


def test_the_latest_takes_every_shipped_log_and_no_stop_time():
    plan = plan_restore("dev", BACKUPS, BINLOGS, [], None, now=at(31))
    assert plan.backup == BACKUPS[1] and plan.binlogs[-1][0].last == 600
    assert plan.to_json()["stop_datetime"] is None


def test_overlapping_logs_from_a_promoted_server_resume_where_the_chain_is():
    """A replica promoted after the primary died ships its own file, which began long before."""
    promoted = shipped(700, 200, 31, host="web-02")
    plan = plan_restore("dev", BACKUPS, [*BINLOGS[:3], promoted], [], None, now=at(32))
    assert plan.backup == BACKUPS[1]
    assert [(b.host, b.last, after) for b, after in plan.binlogs] == [("web-02", 700, 500)]


def test_a_gap_in_the_shipped_logs_stops_the_restore_before_it_and_says_so():
    plan = plan_restore("dev", BACKUPS[:1], [BINLOGS[1], BINLOGS[3]], [], None, now=at(31))
    assert [b.last for b, _ in plan.binlogs] == [150]
    assert any("151 to 300 is in no shipped binary log" in w for w in plan.warnings), plan.warnings


def test_a_time_after_a_restore_starts_from_the_history_after_it():
    """Restored at 28:00 to 09:00, with its marker at 601: a later time must not replay the undone history."""
    record = RestoreRecord(restored_at=at(28), marker=601)
    after = [backup(601, 28.5), *BACKUPS]
    new = [shipped(650, 602, 29)]
    plan = plan_restore("dev", after, BINLOGS + new, [record], DAY + datetime.timedelta(hours=28.8), now=at(30))
    assert plan.backup.sequence == 601 and [b.last for b, _ in plan.binlogs] == [650]
    # and a time before it still reads the history as it was then
    before = plan_restore("dev", after, BINLOGS + new, [record], DAY + datetime.timedelta(hours=20), now=at(30))
    assert before.backup == BACKUPS[0] and [b.last for b, _ in before.binlogs][-1] == 520
    with pytest.raises(RestoreRefused, match="no full backup finished since the last restore"):
        plan_restore("dev", BACKUPS, BINLOGS, [RestoreRecord(at(30.5), 601)], None, now=at(31))


@pytest.mark.parametrize(
    ("backups", "target", "message"),
    [
        ([], 9, "no full backup of stack 'dev' yet"),
        (BACKUPS, 1, "is before the window: the oldest full backup it could start from finished at 2026-11-27 03:00"),
        (BACKUPS, 40, "is in the future"),
    ],
)
def test_refusals_say_what_is_there(backups, target, message):
    with pytest.raises(RestoreRefused, match=message):
        plan_restore("dev", backups, BINLOGS, [], DAY + datetime.timedelta(hours=target), now=at(31))


class FakeStore:
    def __init__(self, objects: dict[str, bytes]):
        self.bucket, self.objects = "webinfra-dev-backups-x", objects

    def list(self, prefix):
        return [
            {"Key": k, "Size": len(v), "LastModified": 0.0}
            for k, v in sorted(self.objects.items())
            if k.startswith(prefix)
        ]

    def read(self, key):
        return self.objects[key]

    def write(self, key, body):
        self.objects[key] = body

    def copy_in(self, source, key, new_key):
        self.objects[new_key] = source.objects[key]


def test_the_bucket_is_read_as_the_hosts_write_it_and_a_wrong_stack_is_refused():
    manifest = {"backup": "b.xbstream.zst", "host": "web-02", "gtid": "0-1-100", "bytes": 9, "finished": at(3)}
    store = FakeStore(
        {
            "dev/full/b.xbstream.zst": b"x" * 9,
            "dev/full/b.manifest.json": json.dumps(manifest).encode(),
            "dev/full/orphan.manifest.json": json.dumps({**manifest, "backup": "gone.xbstream.zst"}).encode(),
            BINLOGS[1].key: b"",
            "dev/restores/r.done.json": json.dumps({"restored_at": at(4), "marker": 700}).encode(),
        }
    )
    backups, binlogs, records, sizes = read_backups(store, "dev")
    assert backups == [FullBackup("dev/full/b.xbstream.zst", 9, "0-1-100", at(3), "web-02")]  # not the orphan
    assert binlogs == [BINLOGS[1]] and records == [RestoreRecord(at(4), 700)]
    assert sizes["dev/full/b.xbstream.zst"] == 9
    with pytest.raises(RestoreRefused, match=r"holds no backup of stack 'prod' \(it holds: dev\)"):
        read_backups(store, "prod")


def test_times_are_utc_and_a_bad_one_is_refused_with_the_expected_form(capsys):
    assert (
        parse_time("2026-11-27T09:15:00Z")
        == parse_time("2026-11-27 09:15:00")
        == DAY + datetime.timedelta(hours=9, minutes=15)
    )
    with pytest.raises(RestoreRefused, match="written 2026-11-27T09:15:00Z"):
        parse_time("yesterday")
    with pytest.raises(SystemExit):
        main(["--stack", "dev"])  # neither --to nor --latest
    assert "one of the arguments --to --latest is required" in capsys.readouterr().err


class ScriptedRunner:
    """A stack of two web servers and two load balancers that answer as told: run_restore's decisions
    (what it undoes, what it keeps held) on each outcome of the host program. The host program itself
    runs in the lab (the restore drill)."""

    def __init__(self, restore_status: int, held_on: tuple[str, ...] = ("lb-01", "lb-02")):
        self.restore_status, self.held_on = restore_status, held_on
        self.ran: list[tuple[str, str]] = []

    def servers(self):
        from ops.promote import Server

        return [Server("web-01", "10.0.0.11"), Server("web-02", "10.0.1.12")]

    def balancers(self):
        return ["lb-01", "lb-02"]

    def run(self, host, script, timeout=60):
        self.ran.append((host, script))
        if "systemctl stop webinfra-failover" in script:
            return (0, "") if host in self.held_on else (1, "unit not found")
        if "@@gtid_current_pos" in script:
            return 0, ("primary" if host == "web-01" else "replica") + "\t0-1-150\n"
        if "WEBINFRA_BACKUP_BUCKET" in script:
            return 0, "webinfra-dev-backups-x\n"
        if "SHOW SLAVE STATUS" in script:
            return 0, "Slave_IO_Running: Yes\n"
        if "webinfra-db-restore" in script:
            self.restored_from = script.rsplit(" ", 1)[-1]
            return self.restore_status, 'webinfra-db-restore: ...\n{"sequence": 151, "time": "2026-11-27 03:30:00"}\n'
        return 0, ""


def restorable_store(stack: str = "dev") -> FakeStore:
    manifest = {"backup": "b.xbstream.zst", "host": "web-02", "gtid": "0-1-100", "bytes": 9, "finished": at(3)}
    return FakeStore(
        {
            f"{stack}/full/b.xbstream.zst": b"x" * 9,
            f"{stack}/full/b.manifest.json": json.dumps(manifest).encode(),
            BINLOGS[1].key.replace("dev/", f"{stack}/", 1): b"binary log",
        }
    )


@pytest.mark.parametrize(("status", "undone"), [(3, True), (4, True), (1, False), (255, False)])
def test_a_failed_restore_undoes_the_fence_only_when_the_data_is_known_untouched(status, undone):
    from ops.restore import run_restore

    runner = ScriptedRunner(status)
    with pytest.raises(RuntimeError):
        run_restore(runner, restorable_store(), "dev", None, say=lambda _: None, now=lambda: at(5))
    ran = [(host, script) for host, script in runner.ran]
    writable_again = ("web-01", "mariadb -N -B -e 'SET GLOBAL read_only = OFF'") in ran
    restarted = any(host.startswith("lb-") and "systemctl start webinfra-failover" in s for host, s in ran)
    assert writable_again == undone and restarted == undone, ran
    assert (("web-02", "mariadb -N -B -e 'START SLAVE'") in ran) == undone
    # the primary's last writes were shipped before the plan the host ran
    ship = next(i for i, (_, s) in enumerate(ran) if "--fenced" in s)
    assert ship < next(i for i, (_, s) in enumerate(ran) if "webinfra-db-restore" in s)


def test_a_restore_is_refused_when_a_controller_cannot_be_held():
    from ops.restore import run_restore

    runner = ScriptedRunner(0, held_on=("lb-01",))
    with pytest.raises(RestoreRefused, match="could not be held on lb-02"):
        run_restore(runner, restorable_store(), "dev", None, say=lambda _: None, now=lambda: at(5))
    assert ("lb-01", "systemctl start webinfra-failover") in runner.ran
    assert not any("read_only = ON" in s for _, s in runner.ran)  # nothing fenced


@pytest.mark.parametrize("kept_stack", ["dev", "old"])  # a new stack of the same name, or of another
def test_a_kept_buckets_backups_are_copied_into_the_stacks_own_and_the_host_restores_the_copies(
    kept_stack, monkeypatch
):
    """A destroyed stack's kept bucket: the new stack's servers may read only their own bucket's prefix, so
    what the plan needs is copied in (under <stack>/imported/<id>/) and the plan the host runs names the
    copies; the new history begins beyond both stacks' and the copies stay out of the stack's own planning."""
    from ops.restore import Source, run_restore

    kept = restorable_store(kept_stack)
    kept.bucket = "webinfra-dev-backups-kept"
    own = FakeStore(
        {BINLOGS[3].key: b"", "dev/restores/r.done.json": json.dumps({"restored_at": at(1), "marker": 700}).encode()}
    )
    runner = ScriptedRunner(0)
    said: list[str] = []
    with pytest.raises(RestoreRefused, match="holds no backup of stack 'nope'"):
        run_restore(runner, own, "dev", None, source=Source(kept, "nope"), say=said.append, now=lambda: at(5))
    with pytest.raises(RestoreRefused, match="is this stack's own bucket"):
        run_restore(runner, own, "dev", None, source=Source(own, "dev"), say=said.append, now=lambda: at(5))
    copies_while_fenced = []
    copy_in = own.copy_in

    def recording_copy(source, key, new_key):  # the fence: the primary made read-only
        copies_while_fenced.append(any("read_only = ON" in script for _, script in runner.ran))
        copy_in(source, key, new_key)

    monkeypatch.setattr(own, "copy_in", recording_copy)
    ids = iter(f"2026112{n}T000000Z" for n in range(10))  # each plan a second after the one before
    monkeypatch.setattr("ops.restore.time.strftime", lambda *_: next(ids))
    run_restore(runner, own, "dev", None, source=Source(kept, kept_stack), say=said.append, now=lambda: at(5))
    assert copies_while_fenced == [False, False], "copied while the stack was fenced"  # and never twice
    plan = json.loads(own.objects[runner.restored_from])
    into = f"dev/imported/{plan['id']}/"
    assert plan["backup"]["key"] == f"{into}{kept_stack}/full/b.xbstream.zst"
    assert [b["key"] for b in plan["binlogs"]] == [into + BINLOGS[1].key.replace("dev/", f"{kept_stack}/", 1)]
    assert plan["binlogs"][0]["bytes"] == len(b"binary log")
    for key in [plan["backup"]["key"], *(b["key"] for b in plan["binlogs"])]:
        assert own.objects[key] == kept.objects[key.removeprefix(into)]
    # beyond the kept history (150), the servers' (150) and this stack's own (520, a restore marked 700)
    assert plan["marker"] == 701
    assert any(f"from bucket {kept.bucket} (stack {kept_stack}'s backups)" in line for line in said), said
    assert any(line.startswith("copied 2 objects") for line in said), said
    backups, binlogs, _, _ = read_backups(own, "dev")
    assert backups == [] and [b.last for b in binlogs] == [520]  # the copies are not the stack's own


def test_a_kept_bucket_without_a_full_backup_is_refused_saying_so():
    from ops.restore import Source, run_restore

    kept = FakeStore({BINLOGS[1].key: b""})
    kept.bucket = "webinfra-dev-backups-kept"
    with pytest.raises(RestoreRefused, match="holds no full backup of stack 'dev': nothing to restore from"):
        run_restore(ScriptedRunner(0), FakeStore({}), "dev", None, source=Source(kept, "dev"), now=lambda: at(5))


@mock_aws
def test_s3_copies_a_large_object_in_parts_across_regions_and_a_missing_bucket_is_a_refusal(monkeypatch):
    """S3Store as scripts/restore uses it on AWS (moto): above 8 MB boto3 copies in parts (UploadPartCopy;
    a single CopyObject stops at 5 GB), the kept bucket read through a client of its own region."""
    import boto3

    from ops.restore import S3Store, bucket_region

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    here, there = boto3.client("s3", region_name="eu-west-1"), boto3.client("s3", region_name="us-west-2")
    here.create_bucket(Bucket="own", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    there.create_bucket(Bucket="kept", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    body = bytes(range(256)) * (20 * 4096)  # 20 MiB
    there.put_object(Bucket="kept", Key="dev/full/b.xbstream.zst", Body=body)
    assert bucket_region(here, "kept") == "us-west-2"
    kept, own = S3Store("kept", there), S3Store("own", here)
    calls = []
    here.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
    own.copy_in(kept, "dev/full/b.xbstream.zst", "dev/imported/x/dev/full/b.xbstream.zst")
    assert here.get_object(Bucket="own", Key="dev/imported/x/dev/full/b.xbstream.zst")["Body"].read() == body
    assert "UploadPartCopy" in calls and "CopyObject" not in calls, calls
    with pytest.raises(RestoreRefused, match=r"S3 refused listing .* in bucket typo: NoSuchBucket"):
        S3Store("typo", here).list("dev/")
