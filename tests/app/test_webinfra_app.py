"""The app against a real MariaDB primary and replica: reads, writes, health, and bad input."""

import json
import socket
import ssl
import threading
import time

import pymysql
import pytest

from app import webinfra_app
from app.webinfra_app import gtid_reached
from provisioning import render
from provisioning.defaults import SERVER_DEFAULTS, seconds
from tests.app.helpers import PausableRelay, free_port, make_tls, start_mariadb, users_script

BAD_REQUESTS = [
    # (method, path, body, headers, expected status)
    ("POST", "/api/messages", "text=hello", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ("POST", "/api/messages", "hello", {"Content-Type": "text/plain"}, 415),
    ("POST", "/api/messages", "{not json", {"Content-Type": "application/json"}, 400),
    ("POST", "/api/messages", '["text"]', {"Content-Type": "application/json"}, 400),
    ("POST", "/api/messages", "{}", {"Content-Type": "application/json"}, 400),
    ("POST", "/api/messages", '{"text": ""}', {"Content-Type": "application/json"}, 400),
    ("POST", "/api/messages", '{"text": "   "}', {"Content-Type": "application/json"}, 400),
    ("POST", "/api/messages", '{"text": 42}', {"Content-Type": "application/json"}, 400),
    ("POST", "/api/messages", '{"text": "%s"}' % ("x" * 281), {"Content-Type": "application/json"}, 400),
    ("POST", "/api/messages", '{"text": "%s"}' % ("x" * 20000), {"Content-Type": "application/json"}, 413),
    ("PUT", "/api/messages", '{"text": "hello"}', {"Content-Type": "application/json"}, 405),
    ("DELETE", "/api/messages", None, {}, 405),
    ("POST", "/health", '{"text": "hello"}', {"Content-Type": "application/json"}, 405),
    ("GET", "/api/messages?limit=0", None, {}, 400),
    ("GET", "/api/messages?limit=abc", None, {}, 400),
    ("GET", "/api/messages?limit=51", None, {}, 400),
    ("GET", "/no-such-page", None, {}, 404),
]


def count(server) -> int:
    return server.sql("SELECT COUNT(*) AS n FROM webinfra.messages")[0]["n"]


def wait_until(check, seconds=2.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def test_primary_health(apps):
    status, body = apps["primary"].json("GET", "/health")
    assert status == 200, body
    assert body["role"] == "primary" and body["database"] == "ok" and body["healthy"] is True and body["host"]


def test_replica_health_reports_replication(apps):
    status, body = apps["replica"].json("GET", "/health")
    assert status == 200, body
    assert body["role"] == "replica" and body["replication"]["running"] is True
    assert body["replication"]["seconds_behind"] == 0 and body["replication"]["primary"] == "127.0.0.1"


def test_a_write_through_a_replica_lands_on_the_primary_and_replicates(apps, databases):
    status, stored = apps["replica"].json("POST", "/api/messages", {"text": "hello from the replica's app"})
    assert status == 201, stored
    assert stored["text"] == "hello from the replica's app" and stored["id"] > 0 and stored["created_at"].endswith("Z")
    assert databases.primary.sql("SELECT text FROM webinfra.messages WHERE id=%s", (stored["id"],)) == [
        {"text": stored["text"]}
    ]
    assert wait_until(lambda: databases.replica.sql("SELECT id FROM webinfra.messages WHERE id=%s", (stored["id"],)))
    status, listing = apps["replica"].json("GET", "/api/messages")
    assert status == 200 and listing["messages"][0]["id"] == stored["id"]


def test_messages_are_newest_first_and_bounded(apps):
    ids = [apps["primary"].json("POST", "/api/messages", {"text": f"message {n}"})[1]["id"] for n in range(3)]
    status, listing = apps["primary"].json("GET", "/api/messages?limit=2")
    assert status == 200 and [m["id"] for m in listing["messages"]] == [ids[2], ids[1]]
    for _ in range(50):
        apps["primary"].json("POST", "/api/messages", {"text": "filler"})
    assert len(apps["primary"].json("GET", "/api/messages")[1]["messages"]) == 50


def test_boundaries_and_unicode_are_stored_as_sent(apps, databases):
    for text in ("x" * 280, "é" * 280, "🦆 quack", "'); DROP TABLE messages; --"):
        status, stored = apps["primary"].json("POST", "/api/messages", {"text": text})
        assert status == 201 and stored["text"] == text
    assert count(databases.primary) > 0  # the table survived the injection attempt


def test_index_page_shows_host_role_and_escaped_messages(apps, databases):
    apps["primary"].json("POST", "/api/messages", {"text": "<script>alert(1)</script>"})
    wait_until(lambda: databases.replica.sql("SELECT 1 FROM webinfra.messages WHERE text LIKE '<script>%%'"))
    status, headers, page = apps["replica"].request("GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "Database role: <strong>replica</strong>" in page and "Served by" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page


@pytest.mark.parametrize(
    "method, path, body, headers, expected", BAD_REQUESTS, ids=[f"{r[0]} {r[1]} {r[4]}" for r in BAD_REQUESTS]
)
def test_bad_requests_get_a_json_4xx_and_store_nothing(apps, databases, method, path, body, headers, expected):
    before = count(databases.primary)
    for app in apps.values():
        status, response_headers, text = app.request(method, path, body, headers)
        assert status == expected, text
        assert response_headers["Content-Type"].startswith("application/json") and '"error"' in text, text
    assert count(databases.primary) == before


def test_replica_refuses_direct_writes(databases):
    conn = pymysql.connect(
        unix_socket=databases.replica.socket,
        user=render.DB_APP_USER,
        password=databases.app_password,
        database="webinfra",
    )
    with conn, conn.cursor() as cur, pytest.raises(pymysql.err.OperationalError) as error:
        cur.execute("INSERT INTO messages (text, host) VALUES ('sneaky', 'test')")
    assert error.value.args[0] == 1290  # ER_OPTION_PREVENTS_STATEMENT: --read-only


def test_app_user_has_only_the_privileges_it_needs(databases):
    conn = pymysql.connect(
        unix_socket=databases.primary.socket,
        user=render.DB_APP_USER,
        password=databases.app_password,
        database="webinfra",
    )
    with conn, conn.cursor() as cur:
        for statement in (
            "DELETE FROM messages",
            "DROP TABLE messages",
            "UPDATE messages SET text='x'",
            "CREATE TABLE t (i INT)",
            "SELECT * FROM mysql.user",
        ):
            with pytest.raises(pymysql.err.OperationalError):
                cur.execute(statement)
    users = databases.primary.sql("SELECT User, Host FROM mysql.user WHERE User='root'")
    assert [u["Host"] for u in users] == ["localhost"], "root must not be reachable remotely"


def test_users_replicate_so_a_replica_has_them(databases):
    users = {(u["User"], u["Host"]) for u in databases.replica.sql("SELECT User, Host FROM mysql.user")}
    assert (render.DB_APP_USER, "localhost") in users and (render.DB_REPLICATION_USER, "127.0.0.0/255.0.0.0") in users


def semi_sync_status(server) -> dict[str, str]:
    return {r["Variable_name"]: r["Value"] for r in server.sql("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_%'")}


def test_a_replica_applies_each_write_at_once_without_waiting_for_acknowledgements_of_its_own(databases):
    """A replica binlogs what it applies, and has no replica of its own. It must not hold each
    transaction it applies waiting for an acknowledgement that nobody sends: it would be healthy (its
    threads run) and yet behind, after every start (lab issue 12). Semi-sync's primary side is off on
    every server as it boots; the failover controller turns it on for the primary only."""
    assert semi_sync_status(databases.replica)["Rpl_semi_sync_master_status"] == "OFF"
    databases.primary.sql("INSERT INTO webinfra.messages (text, host) VALUES ('no wait', 'test')")
    assert wait_until(
        lambda: databases.replica.sql("SELECT COUNT(*) AS n FROM webinfra.messages WHERE text='no wait'")[0]["n"],
        seconds=15,
    )
    status = semi_sync_status(databases.replica)
    # Not one transaction that waited, not once switched off by a timeout.
    assert (status["Rpl_semi_sync_master_tx_waits"], status["Rpl_semi_sync_master_no_times"]) == ("0", "0"), status
    # ...while the primary keeps waiting for its replica's acknowledgement.
    primary = semi_sync_status(databases.primary)
    assert (primary["Rpl_semi_sync_master_status"], primary["Rpl_semi_sync_master_clients"]) == ("ON", "1"), primary
    assert int(primary["Rpl_semi_sync_master_yes_tx"]) >= 1, primary


def test_replica_health_is_503_when_replication_stops(apps, databases):
    databases.replica.sql("STOP SLAVE")
    try:
        status, body = apps["replica"].json("GET", "/health")
        assert status == 503 and body["replication"]["running"] is False and body["healthy"] is False
    finally:
        databases.replica.sql("START SLAVE")
    assert wait_until(lambda: apps["replica"].json("GET", "/health")[0] == 200, seconds=15)


def test_a_replica_whose_stream_has_stalled_leaves_the_rotation_until_it_has_caught_up(apps, databases):
    """The issue-12 stall: the replica's I/O thread connected, nothing arriving, Seconds_Behind_Master
    0 (it measures only what was received). /health must see that the primary is further on."""
    relay = PausableRelay(databases.primary.port)
    replica = databases.replica

    def point_replica_at(port: int) -> int:
        """Returns how many connections the app's workers opened before replication's own."""
        replica.sql("STOP SLAVE")
        replica.sql(f"CHANGE MASTER TO MASTER_PORT = {port}")
        # The app's position threads follow the replica's settings within a poll: one connection per worker.
        wait_until(lambda: relay.connections >= 2, seconds=5)
        opened = relay.connections
        replica.sql("START SLAVE")
        return opened

    spare = point_replica_at(relay.port)
    try:
        assert spare == 2  # both workers' threads, and not yet replication
        # Replicating through the relay (healthy alone no longer says so: a replica reconnecting to a
        # primary it has everything of is healthy too).
        assert wait_until(lambda: replica.sql("SHOW SLAVE STATUS")[0]["Slave_IO_Running"] == "Yes", seconds=15)
        assert wait_until(lambda: apps["replica"].json("GET", "/health")[0] == 200, seconds=15)
        relay.pause(spare=spare)
        # No acknowledgement can come: the failover controller would switch the primary to asynchronous.
        databases.primary.sql("SET GLOBAL rpl_semi_sync_master_enabled = OFF")
        databases.primary.sql("INSERT INTO webinfra.messages (text, host) VALUES ('while stalled', 'test')")
        # Each worker's thread reads the primary's new position at its next poll (every 0.25 s).
        time.sleep(2 * webinfra_app.POSITION_POLL_SECONDS + 0.1)
        status, body = apps["replica"].json("GET", "/health")
        replication = body["replication"]
        assert (replication["io_running"], replication["sql_running"], replication["seconds_behind"]) == (
            "Yes",
            "Yes",
            0,
        ), body  # what the old check saw: a healthy replica
        assert status == 503 and body["healthy"] is False, body
        assert replication["reason"].startswith("behind the primary"), body
        assert not gtid_reached(replication["gtid_position"], replication["primary_position"]), body
        relay.resume()
        assert wait_until(lambda: apps["replica"].json("GET", "/health")[0] == 200, seconds=15)
        assert count(replica) == count(databases.primary)
    finally:
        relay.resume()
        point_replica_at(databases.primary.port)
        relay.close()
        databases.primary.sql("SET GLOBAL rpl_semi_sync_master_enabled = ON")
    assert wait_until(lambda: apps["replica"].json("GET", "/health")[0] == 200, seconds=15)


def test_a_replica_whose_primary_is_gone_serves_reads_for_a_bounded_time_and_says_so(start_extra_app, databases):
    """Issue 13: every replica turned 503 once its I/O thread noticed the dead primary, and the whole
    site went down, reads included. A replica that cannot reach its primary serves reads of everything
    it received, for WEBINFRA_ORPHAN_READS_SECONDS, and says so; then it leaves the rotation."""
    replica = databases.replica
    patient = start_extra_app(replica, "replica", WEBINFRA_ORPHAN_READS_SECONDS="600")
    brief = start_extra_app(replica, "replica", WEBINFRA_ORPHAN_READS_SECONDS="3")
    replica.sql("STOP SLAVE")
    replica.sql(f"CHANGE MASTER TO MASTER_PORT = {free_port()}")  # the primary's address answers no more
    replica.sql("START SLAVE")
    try:
        assert wait_until(lambda: patient.json("GET", "/health")[1]["replication"].get("serving"), seconds=10)
        time.sleep(2 * webinfra_app.POSITION_POLL_SECONDS + 0.1)  # every worker's thread has seen it
        status, body = patient.json("GET", "/health")
        assert status == 200 and body["healthy"] is True, body
        assert body["replication"]["io_running"] in ("Connecting", "No"), body
        assert body["replication"]["serving"].startswith("reads only: the primary has been unreachable"), body
        assert patient.json("GET", "/api/messages?limit=1")[0] == 200
        assert patient.json("POST", "/api/messages", {"text": "nowhere to go"})[0] == 503
        assert wait_until(
            lambda: "over 3 s" in brief.json("GET", "/health")[1]["replication"].get("reason", ""), seconds=10
        )
        # Every worker answers the same from then on (each used to keep its own clock: CI saw 503 then 200).
        assert [brief.json("GET", "/health")[0] for _ in range(8)] == [503] * 8
        assert patient.json("GET", "/health")[0] == 200
    finally:
        replica.sql("STOP SLAVE")
        replica.sql(f"CHANGE MASTER TO MASTER_PORT = {databases.primary.port}")
        replica.sql("START SLAVE")
    assert wait_until(
        lambda: (
            patient.json("GET", "/health")[0] == 200
            and "serving" not in patient.json("GET", "/health")[1]["replication"]
        ),
        seconds=15,
    )


def test_a_write_for_a_primary_that_does_not_answer_fails_at_once_and_holds_no_worker(start_extra_app, databases):
    """Issue 13, seen in the lab: a frozen primary (its mariadbd stopped: connections accepted, never
    answered) held each of a replica's workers for a timeout per write; the replica's health check
    then timed out and HAProxy had no server left, for reads too. Once the worker's position thread
    has found the primary silent, a write is refused at once (503, Retry-After) without trying."""
    replica = databases.replica
    silent = socket.create_server(("127.0.0.1", 0), backlog=64)  # accepts, never speaks: a frozen server
    app = start_extra_app(replica, "replica")
    replica.sql("STOP SLAVE")
    replica.sql(f"CHANGE MASTER TO MASTER_PORT = {silent.getsockname()[1]}")
    replica.sql("START SLAVE")
    try:
        assert wait_until(lambda: app.json("GET", "/health")[1]["replication"].get("serving"), seconds=15)
        # Refused at once once out of reach for WRITES_REFUSED_AFTER_SECONDS (one missed poll is not enough).
        time.sleep(webinfra_app.WRITES_REFUSED_AFTER_SECONDS + 2 * webinfra_app.POSITION_POLL_SECONDS)
        status, headers, text = app.request(
            "POST", "/api/messages", json.dumps({"text": "to a frozen primary"}), {"Content-Type": "application/json"}
        )
        assert status == 503 and headers.get("Retry-After") == "2", (status, headers)
        assert "unreachable: try again shortly" in json.loads(text)["error"], text  # not tried: no timeout waited
        assert app.json("GET", "/health")[0] == 200  # reads still served
    finally:
        replica.sql("STOP SLAVE")
        replica.sql(f"CHANGE MASTER TO MASTER_PORT = {databases.primary.port}")
        replica.sql("START SLAVE")
        silent.close()
    assert wait_until(lambda: app.json("POST", "/api/messages", {"text": "back"})[0] == 201, seconds=15)


def test_a_commit_acknowledged_only_by_the_primarys_own_fallback_is_not_reported_stored(start_extra_app, databases):
    """Issue 13 (the zones split): a primary whose replicas are cut off, with no controller that can reach
    it to disarm failover first, acknowledges a waiting commit by itself after
    mariadb.semi_sync_timeout_ms, asynchronously: a failover on the other side may lose it. The app
    gives up on the commit before that, so the client never hears "stored" (503); the row may exist
    on that server alone, which the controller then keeps out of the rotation."""
    primary, replica = databases.primary, databases.replica
    timeout_ms = SERVER_DEFAULTS.mariadb.semi_sync_timeout_ms
    app = start_extra_app(primary, "primary")
    replica.sql("STOP SLAVE")
    primary.sql(f"SET GLOBAL rpl_semi_sync_master_timeout = {timeout_ms}")
    assert wait_until(lambda: semi_sync_clients(primary) == 0, seconds=15)
    try:
        began = time.monotonic()
        status, body = app.json("POST", "/api/messages", {"text": "acknowledged by no replica"})
        took = time.monotonic() - began
        assert status == 503, (status, body)
        assert took < timeout_ms / 1000, took  # the app gave up before the server's fallback
    finally:
        replica.sql("START SLAVE")
        primary.sql("SET GLOBAL rpl_semi_sync_master_enabled = ON")  # the fallback switched it off
    assert wait_until(lambda: app.json("POST", "/api/messages", {"text": "back"})[0] == 201, seconds=15)


def test_the_server_defaults_know_the_apps_query_timeout():
    """provisioning/defaults.py checks failover.fallback_after against it (a write waiting while a replica
    is lost must be acknowledged before the app gives up)."""
    from provisioning.defaults import APP_QUERY_TIMEOUT_SECONDS

    assert webinfra_app.QUERY_TIMEOUT_SECONDS == APP_QUERY_TIMEOUT_SECONDS


def semi_sync_clients(server) -> int:
    status = {
        r["Variable_name"]: r["Value"] for r in server.sql("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'")
    }
    return int(status["Rpl_semi_sync_master_clients"])


def test_writes_waiting_on_the_primary_leave_threads_for_reads_and_the_extra_ones_are_refused(
    start_extra_app, databases
):
    """Issue 13, seen in the lab: 8 writers waiting on a dying primary held every thread of a server, and
    its reads went past HAProxy's 1 s read timeout. Each worker serves WEBINFRA_WRITES_AT_ONCE writes at
    once; one more is refused at once (503, Retry-After) and stores nothing; reads and /health answer
    while the writes wait."""
    primary = databases.primary
    # The replica acknowledges (semi-sync): the held writes complete once released, not after a timeout.
    assert wait_until(lambda: databases.replica.sql("SHOW SLAVE STATUS")[0]["Slave_IO_Running"] == "Yes", 15)
    app = start_extra_app(primary, "primary", WEBINFRA_WRITES_AT_ONCE="1")  # 2 workers: 2 writes at once
    before = count(primary)
    lock = primary.root()
    results: list[tuple[int, str]] = []
    try:
        with lock.cursor() as cur:
            cur.execute("FLUSH TABLES WITH READ LOCK")  # every INSERT waits (until the app's 5 s timeout)

        def post(n: int) -> None:
            status, _, text = app.request(
                "POST", "/api/messages", json.dumps({"text": f"held {n}"}), {"Content-Type": "application/json"}
            )
            results.append((status, text))

        writers = [threading.Thread(target=post, args=(n,)) for n in range(6)]
        for writer in writers:
            writer.start()
        # At most one write per worker is let through (2 workers); which worker takes which is gunicorn's.
        assert wait_until(lambda: sum(1 for status, _ in results if status == 503) >= 4, seconds=4), results
        refused = [json.loads(text)["error"] for status, text in results if status == 503]
        assert all("too many writes in progress" in e for e in refused), refused
        # The held writes wait for the lock; reads and the health check do not.
        assert [app.json("GET", "/api/messages?limit=1")[0] for _ in range(6)] == [200] * 6
        assert app.json("GET", "/health")[0] == 200
        held = len(writers) - len(results)  # still waiting
        assert 1 <= held <= 2, results
    finally:
        with lock.cursor() as cur:
            cur.execute("UNLOCK TABLES")
        lock.close()
    for writer in writers:
        writer.join(timeout=15)
    assert sorted(status for status, _ in results) == [201] * held + [503] * (len(writers) - held), results
    assert count(primary) == before + held


def test_a_replica_reconnecting_to_a_primary_that_answers_serves_while_it_has_everything(apps, databases):
    """The fault matrix: the primary's MariaDB crashed and came back within seconds, read-only and with
    nothing new, yet every replica said 503 until its I/O thread's next attempt, and the site had no
    server for reads. Here the I/O thread keeps reconnecting (its credentials refused) while the primary
    answers the app: complete, it serves; once the primary has a write it lacks, it does not."""
    replica, primary = databases.replica, databases.primary
    wait_until(lambda: count(replica) == count(primary), seconds=10)
    replica.sql("STOP SLAVE")
    replica.sql("CHANGE MASTER TO MASTER_PASSWORD = 'not the password'")
    replica.sql("START SLAVE")
    try:
        assert wait_until(lambda: replica.sql("SHOW SLAVE STATUS")[0]["Slave_IO_Running"] == "Connecting", seconds=10)
        status, body = apps["replica"].json("GET", "/health")
        assert status == 200 and body["replication"]["serving"].startswith("reconnecting to the primary"), body
        primary.sql("SET GLOBAL rpl_semi_sync_master_enabled = OFF")  # no replica can acknowledge it
        primary.sql("INSERT INTO webinfra.messages (text, host) VALUES ('while reconnecting', 'test')")
        # Each worker's thread reads the primary's new position at its next poll (every 0.25 s).
        time.sleep(2 * webinfra_app.POSITION_POLL_SECONDS + 0.1)
        status, body = apps["replica"].json("GET", "/health")
        assert status == 503 and "behind" in body["replication"]["reason"], body
    finally:
        replica.sql("STOP SLAVE")
        replica.sql(f"CHANGE MASTER TO MASTER_PASSWORD = '{databases.replication_password}'")
        replica.sql("START SLAVE")
        primary.sql("SET GLOBAL rpl_semi_sync_master_enabled = ON")
    assert wait_until(lambda: apps["replica"].json("GET", "/health")[0] == 200, seconds=15)


class OneRowCursor:
    def __init__(self, row):
        self.row = row

    def execute(self, statement):
        pass

    def fetchone(self):
        return self.row


def test_a_replica_with_a_relay_log_not_yet_applied_is_not_served_as_complete(monkeypatch):
    monkeypatch.setattr(webinfra_app.PRIMARY_POSITION, "latest", lambda target=None: ("unreachable", "timed out", 0.1))
    monkeypatch.setattr(webinfra_app.PRIMARY_POSITION, "unreachable_for", lambda: 4.0)
    behind = {"gtid_position": "0-1-40"}
    assert not webinfra_app._serving_without_primary(OneRowCursor({"applied": "0-1-39"}), behind)
    assert "not applied yet" in behind["reason"]
    complete = {"gtid_position": "0-1-40"}
    assert webinfra_app._serving_without_primary(OneRowCursor({"applied": "0-1-40"}), complete)
    # Cut mid-transaction: 0-1-40 only begun in the relay log, the SQL thread waiting for its rest at the end.
    cut = {"gtid_position": "0-1-40", "sql_state": "Slave has read all relay log; waiting for more updates"}
    assert webinfra_app._serving_without_primary(OneRowCursor({"applied": "0-1-39"}), cut)
    assert "data complete up to 0-1-40" in complete["serving"]
    monkeypatch.setattr(webinfra_app.PRIMARY_POSITION, "latest", lambda target=None: ("position", "0-1-40", 0.1))
    answering = {"gtid_position": "0-1-40"}  # its primary answers: replication stopped for another reason
    assert not webinfra_app._serving_without_primary(OneRowCursor({"applied": "0-1-40"}), answering)


def test_a_replicas_health_waits_for_the_primary_within_haproxys_check_timeout():
    budget = webinfra_app.FIRST_POSITION_WAIT_SECONDS + webinfra_app.CATCH_UP_WAIT_SECONDS
    # Half the check's timeout at most: the rest is the local queries, gunicorn and nginx.
    assert budget <= seconds(SERVER_DEFAULTS.haproxy_health_check.timeout) / 2
    assert webinfra_app.POSITION_MAX_AGE_SECONDS >= (
        webinfra_app.POSITION_POLL_SECONDS + webinfra_app.POSITION_QUERY_TIMEOUT_SECONDS
    )


def test_a_replica_that_cannot_verify_the_primary_is_unhealthy(start_extra_app, databases, tmp_path):
    other_ca = make_tls(tmp_path) / "ca.pem"
    stranger = start_extra_app(databases.replica, "replica", WEBINFRA_DB_TLS_CA=str(other_ca))
    assert wait_until(lambda: stranger.json("GET", "/health")[1]["replication"]["primary_position"] == "refused")
    status, body = stranger.json("GET", "/health")
    assert status == 503 and "refused" in body["replication"]["reason"], body


@pytest.mark.parametrize(
    ("code", "cause", "kind"),
    [
        (2003, ConnectionRefusedError(), "unreachable"),
        (2003, TimeoutError(), "unreachable"),
        (2013, None, "unreachable"),
        (1040, None, "unreachable"),  # too many connections: the primary's trouble, not this replica's
        (1053, None, "unreachable"),  # shutting down
        (1045, None, "refused"),  # access denied
        (2003, ssl.SSLCertVerificationError("certificate verify failed"), "refused"),
    ],
)
def test_only_a_refusal_by_the_primary_fails_a_replica_not_a_primary_out_of_reach(code, cause, kind):
    error = pymysql.err.OperationalError(code, "message")
    error.original_exception = cause  # type: ignore[attr-defined]  # as PyMySQL sets it when connect() fails
    assert webinfra_app._primary_error(error)[0] == kind


@pytest.mark.parametrize("kind", ["unreachable", "position"])
def test_an_old_answer_fails_the_check_whatever_it_said(monkeypatch, kind):
    class Stuck:
        def latest(self, target=None):
            return kind, "0-1-5", webinfra_app.POSITION_MAX_AGE_SECONDS + 1

    monkeypatch.setattr(webinfra_app, "PRIMARY_POSITION", Stuck())
    replication = {"gtid_position": "0-1-5"}
    assert webinfra_app._received_what_the_primary_has(None, replication) is False
    assert replication["reason"].startswith("the primary's position is"), replication


def test_the_position_thread_is_started_again_if_it_ends():
    runs = []
    position = webinfra_app.PrimaryPosition()
    position._poll = lambda: runs.append(1)  # type: ignore[method-assign]  # ends at once
    position.start()
    position._thread.join(5)  # type: ignore[union-attr]
    position.start()
    position._thread.join(5)  # type: ignore[union-attr]
    assert len(runs) == 2


def test_every_worker_counts_the_primarys_outage_from_the_first_that_saw_it(tmp_path, monkeypatch):
    """Two workers (two PrimaryPosition objects, as after gunicorn's fork) sharing the runtime directory."""
    monkeypatch.setattr(webinfra_app, "UNREACHABLE_CLOCK", webinfra_app.UnreachableClock(str(tmp_path)))
    first, second = webinfra_app.PrimaryPosition(), webinfra_app.PrimaryPosition()
    primary = ("10.0.1.10", 3306)
    first._record(("unreachable", "can't connect"), primary)
    time.sleep(0.3)
    second._record(("unreachable", "can't connect"), primary)
    assert second.unreachable_for() >= 0.3
    assert abs(first.unreachable_for() - second.unreachable_for()) < 0.01
    # Another primary (after a failover) is another outage; an answer from it ends it for every worker.
    first._record(("unreachable", "can't connect"), ("10.0.1.11", 3306))
    assert first.unreachable_for() < 0.1
    time.sleep(0.3)
    second._record(("position", "0-2-5"), ("10.0.1.11", 3306))
    assert second.unreachable_for() == 0.0
    assert not (tmp_path / webinfra_app.UnreachableClock.NAME).exists()
    first._record(("unreachable", "can't connect"), ("10.0.1.11", 3306))  # a new outage, not the old one
    assert first.unreachable_for() < 0.1


def test_the_shared_outage_clock_survives_a_torn_record_and_an_unwritable_directory(tmp_path, monkeypatch):
    clock = webinfra_app.UnreachableClock(str(tmp_path))
    monkeypatch.setattr(webinfra_app, "UNREACHABLE_CLOCK", clock)
    (tmp_path / clock.NAME).write_text('{"primary": ["10.0.1.10", 3306]}')  # no "since": torn
    worker = webinfra_app.PrimaryPosition()
    worker._record(("unreachable", "can't connect"), ("10.0.1.10", 3306))  # must not raise
    assert worker.unreachable_for() < 0.1
    # A directory it cannot write: its own clock, which keeps counting (the orphan-reads bound still ends).
    monkeypatch.setattr(webinfra_app, "UNREACHABLE_CLOCK", webinfra_app.UnreachableClock(str(tmp_path / "gone")))
    worker._record(("unreachable", "can't connect"), ("10.0.1.11", 3306))
    time.sleep(0.3)
    worker._record(("unreachable", "can't connect"), ("10.0.1.11", 3306))
    assert worker.unreachable_for() >= 0.3


@pytest.mark.parametrize(
    ("position", "wanted", "reached"),
    [
        ("0-1-35", "0-1-35", True),
        ("0-1-36", "0-1-35", True),
        ("0-1-35", "0-1-424", False),
        ("0-2-500", "0-1-424", True),  # a promoted replica's sequence continues the domain
        ("0-1-35,1-3-9", "0-1-35,1-3-10", False),
        ("0-1-35", "0-1-35,1-3-1", False),  # a domain it has never seen
        ("", "", True),
        ("", "0-1-1", False),
    ],
)
def test_gtid_reached_compares_every_domain(position, wanted, reached):
    assert gtid_reached(position, wanted) is reached


def test_database_unreachable_means_503_and_no_write(start_extra_app, databases):
    broken = start_extra_app(databases.primary, "primary", WEBINFRA_DB_PASSWORD="wrong-password")
    before = count(databases.primary)
    status, body = broken.json("GET", "/health")
    assert status == 503 and body["database"] == "unreachable" and body["healthy"] is False
    status, body = broken.json("POST", "/api/messages", {"text": "lost?"})
    assert status == 503 and body["error"] == "database unavailable"
    assert count(databases.primary) == before


def test_network_connections_need_tls_and_replication_verifies_the_primary(databases):
    plain = dict(
        host="127.0.0.1",
        port=databases.primary.port,
        user=render.DB_APP_USER,
        password=databases.app_password,
        database="webinfra",
        ssl_disabled=True,
    )
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(**plain)  # require_secure_transport: no plain TCP
    ca = str(databases.tls / "ca.pem")
    verified = {**plain, "ssl_disabled": False, "ssl_ca": ca, "ssl_verify_cert": True, "ssl_verify_identity": True}
    with pymysql.connect(**verified) as conn, conn.cursor() as cur:
        cur.execute("SHOW STATUS LIKE 'Ssl_version'")
        assert cur.fetchone()[1] in ("TLSv1.2", "TLSv1.3")
    status = databases.replica.sql("SHOW SLAVE STATUS")[0]
    assert status["Master_SSL_Allowed"] == "Yes" and status["Master_SSL_Verify_Server_Cert"] == "Yes"


def test_the_database_says_where_writes_go_and_the_app_follows_without_a_restart(start_extra_app, databases, tmp_path):
    """No copy of the role in a file: the failover controller changes the database (read_only, the
    replication settings) and the app's next request follows."""
    server = start_mariadb(tmp_path, "web-02", "primary", databases.tls)  # a third server, on its own
    try:
        server.client((render.APP_DIR / "schema.sql").read_text())
        server.client(users_script(databases))
        app = start_extra_app(server, "primary")
        # Booted read-only (every server does), replicating from nobody: no write lands anywhere.
        status, body = app.json("POST", "/api/messages", {"text": "before any decision"})
        assert status == 503 and count(server) == 0, body
        assert app.json("GET", "/health")[1]["role"] == "replica"
        server.sql("SET GLOBAL read_only = OFF")  # made the primary
        status, body = app.json("POST", "/api/messages", {"text": "to this server"})
        assert status == 201 and count(server) == 1, body
        assert app.json("GET", "/health")[1]["role"] == "primary"
        # Made a replica of the stack's primary (settings only; the app writes where they point).
        server.sql("SET GLOBAL read_only = ON")
        server.sql(f"CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {databases.primary.port}")
        before = count(databases.primary)
        status, body = app.json("POST", "/api/messages", {"text": "to the primary"})
        assert status == 201 and count(databases.primary) == before + 1 and count(server) == 1, body
    finally:
        server.stop()
