"""The web servers' application: a small message board that shows which host and database served it.

Runs under gunicorn with Debian 12's python3-flask and python3-pymysql, so servers need no pip.
Reads come from the local database (primary or replica); writes go to the primary. Configuration
comes from the environment (systemd EnvironmentFile):

  WEBINFRA_ROLE            primary | replica at the first boot (the database says what it is now)
  WEBINFRA_DB_NAME         database name
  WEBINFRA_DB_USER         application user
  WEBINFRA_DB_PASSWORD     its password (from SSM Parameter Store, never in user-data)
  WEBINFRA_DB_LOCAL_SOCKET unix socket of the local server (reads)      [or WEBINFRA_DB_LOCAL_HOST/PORT]
  WEBINFRA_DB_TLS_CA       the stack's database CA: network connections verify the primary with it
  WEBINFRA_MAX_LAG         seconds of replication lag still reported healthy
  WEBINFRA_ORPHAN_READS_SECONDS  how long a replica whose primary is out of reach serves reads
  WEBINFRA_WRITES_AT_ONCE  writes one worker serves at once (the rest of its threads are for reads)
  RUNTIME_DIRECTORY        set by systemd (RuntimeDirectory=): state the workers share

Where writes go is asked of the local database on every request: this server if it is writable, else
the primary it replicates from (SHOW SLAVE STATUS). The failover controller and scripts/promote
change both while the app runs; the app follows at its next request, with no restart.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import socket
import ssl
import threading
import time
from typing import Any

import pymysql
from flask import Flask, abort, jsonify, request
from werkzeug.exceptions import HTTPException

MAX_TEXT_LENGTH = 280
LIST_LIMIT = 50
CONNECT_TIMEOUT_SECONDS = 2
# Below the primary's own fallback to asynchronous replication (mariadb.semi_sync_timeout_ms, 4 s): a
# commit that ends only by that fallback (its replicas cut off, no controller able to disarm first) may be
# lost to a failover, so it must never reach the client as stored.
QUERY_TIMEOUT_SECONDS = 3
# A replica's /health compares its relay log with the primary's position, which a thread of each
# worker keeps (one connection, one query every POSITION_POLL_SECONDS: a check opens no connection).
# A check waits FIRST_POSITION_WAIT_SECONDS at most for the thread's first answer and
# CATCH_UP_WAIT_SECONDS at most for its relay log to get there: both well inside HAProxy's check
# timeout (server-defaults.yaml, haproxy_health_check.timeout: 500ms).
POSITION_POLL_SECONDS = 0.25
POSITION_QUERY_TIMEOUT_SECONDS = 1.0
POSITION_MAX_AGE_SECONDS = 2.0  # a poll plus a query's timeout: older means the thread is stuck
# Writes are refused at once only once the primary has been out of reach this long: one missed poll
# (a primary stalled a second) must not fail writes that would have waited and succeeded.
WRITES_REFUSED_AFTER_SECONDS = 1.0
FIRST_POSITION_WAIT_SECONDS = 0.1
CATCH_UP_WAIT_SECONDS = 0.15
CATCH_UP_POLL_SECONDS = 0.02
# Server errors by which the primary refuses this replica's credentials (access denied); a refused
# certificate is told by its ssl.SSLCertVerificationError.
REFUSED_ERRORS = {1044, 1045}

MAX_BODY_BYTES = 8 * 1024  # nginx limits bodies too (16k); this keeps the app safe on its own
# Writes this worker serves at once (its other threads stay free for reads and /health): writes waiting
# on the primary must not take the server out of the rotation for reads too (issue 13).
WRITE_SLOTS = threading.BoundedSemaphore(int(os.environ.get("WEBINFRA_WRITES_AT_ONCE", "4")))

app = Flask(__name__)
app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise RuntimeError(f"{name} is not set")
    return value


class NoPrimary(pymysql.err.OperationalError):
    """This server is read-only and replicates from nobody: it knows no primary to send a write to."""


def _local_state(cur) -> tuple[bool, dict | None]:
    """(read_only, SHOW SLAVE STATUS): the database itself says what this server is and where its
    primary is. The failover controller and scripts/promote change both while the app runs, so the app
    asks on every request (two local queries) instead of keeping a copy that could be stale."""
    cur.execute("SELECT @@global.read_only AS read_only")
    read_only = bool(int(cur.fetchone()["read_only"]))
    cur.execute("SHOW SLAVE STATUS")
    return read_only, cur.fetchone()


def role() -> str:
    with local_db() as conn, conn.cursor() as cur:
        read_only, _ = _local_state(cur)
    return "replica" if read_only else "primary"


def _connect(
    *, socket_path: str | None, host: str | None, port: int, timeout: float | None = None
) -> pymysql.connections.Connection[pymysql.cursors.DictCursor]:
    # Over the network (writes to the primary), TLS verified against the stack's database CA.
    tls: dict[str, Any] = (
        {}
        if socket_path
        else {"ssl_ca": _env("WEBINFRA_DB_TLS_CA"), "ssl_verify_cert": True, "ssl_verify_identity": True}
    )
    return pymysql.connect(
        **tls,
        unix_socket=socket_path,
        host=host or "localhost",
        port=port,
        user=_env("WEBINFRA_DB_USER"),
        password=_env("WEBINFRA_DB_PASSWORD"),
        database=_env("WEBINFRA_DB_NAME"),
        connect_timeout=timeout or CONNECT_TIMEOUT_SECONDS,
        read_timeout=timeout or QUERY_TIMEOUT_SECONDS,
        write_timeout=timeout or QUERY_TIMEOUT_SECONDS,
        charset="utf8mb4",
        cursorclass=pymysql.cursors.DictCursor,
        autocommit=True,
        init_command="SET time_zone = '+00:00'",
    )


def local_db() -> pymysql.connections.Connection[pymysql.cursors.DictCursor]:
    socket_path = os.environ.get("WEBINFRA_DB_LOCAL_SOCKET")
    return _connect(
        socket_path=socket_path or None,
        host=None if socket_path else _env("WEBINFRA_DB_LOCAL_HOST", "127.0.0.1"),
        port=int(_env("WEBINFRA_DB_LOCAL_PORT", "3306")),
    )


def write_target() -> tuple[str, int] | None:
    """Where writes go: None for this server (writable: the primary), else its primary's (host, port)."""
    with local_db() as conn, conn.cursor() as cur:
        read_only, status = _local_state(cur)
    if not read_only:
        return None
    if not status or not status["Master_Host"]:
        raise NoPrimary(2003, "this server is read-only and replicates from no primary")
    return status["Master_Host"], int(status["Master_Port"])


def primary_db(
    timeout: float | None = None, target: tuple[str, int] | bool | None = False
) -> pymysql.connections.Connection[pymysql.cursors.DictCursor]:
    where = write_target() if target is False else target
    if where is None:
        return local_db()
    host, port = where  # type: ignore[misc]
    return _connect(socket_path=None, host=host, port=port, timeout=timeout)


def _row(row: dict[str, Any] | None) -> dict[str, Any]:
    if row is None:  # read back right after it was written, in the same transaction
        raise LookupError("the message just stored was not found")
    return {
        "id": row["id"],
        "text": row["text"],
        "host": row["host"],
        "created_at": row["created_at"].isoformat() + "Z",
    }


def latest_messages(limit: int) -> list[dict]:
    with local_db() as conn, conn.cursor() as cur:
        cur.execute("SELECT id, text, host, created_at FROM messages ORDER BY id DESC LIMIT %s", (limit,))
        return [_row(r) for r in cur.fetchall()]


def error(status: int, message: str):
    response = jsonify(error=message, status=status)
    response.status_code = status
    return response


@app.before_request
def refuse_large_bodies():
    # Flask 2.2 (Debian 12) enforces MAX_CONTENT_LENGTH only for form data; JSON needs this check.
    if (request.content_length or 0) > MAX_BODY_BYTES:
        abort(413)


@app.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    # Every error is JSON, including 404/405/413 raised by Flask itself.
    return error(exc.code or 500, exc.description or exc.name)


@app.errorhandler(pymysql.MySQLError)
def database_error(exc: pymysql.MySQLError):
    app.logger.error("database error: %s", exc)
    return error(503, "database unavailable")


@app.get("/")
def index():
    messages = latest_messages(20)
    items = "\n".join(
        f"<li>{html.escape(m['text'])} <small>({html.escape(m['host'])}, {m['created_at']})</small></li>"
        for m in messages
    )
    host, db_role = html.escape(socket.gethostname()), html.escape(role())
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>webinfra on {host}</title></head>
<body>
<h1>Served by {host}</h1>
<p>Database role: <strong>{db_role}</strong></p>
<h2>Latest messages</h2>
<ul>
{items or "<li>No messages yet.</li>"}
</ul>
</body></html>
"""
    return page, 200, {"Content-Type": "text/html; charset=utf-8"}


@app.get("/api/messages")
def list_messages():
    limit = request.args.get("limit", str(LIST_LIMIT))
    if not limit.isdigit() or not 1 <= int(limit) <= LIST_LIMIT:
        return error(400, f"limit must be a whole number from 1 to {LIST_LIMIT}")
    return jsonify(messages=latest_messages(int(limit)))


@app.post("/api/messages")
def create_message():
    if not request.is_json:
        return error(415, "send JSON with Content-Type: application/json")
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict):
        return error(400, 'body must be a JSON object like {"text": "hello"}')
    text = payload.get("text")
    if not isinstance(text, str) or not text.strip():
        return error(400, "text is required: a non-empty string")
    if len(text) > MAX_TEXT_LENGTH:
        return error(400, f"text must be at most {MAX_TEXT_LENGTH} characters, got {len(text)}")
    if not WRITE_SLOTS.acquire(blocking=False):  # waiting for a slot would hold a thread reads need
        return error(503, "too many writes in progress here: try again shortly"), {"Retry-After": "1"}
    try:
        target = write_target()
        if target is not None and _primary_known_unreachable(target):
            return error(503, "the primary database is unreachable: try again shortly"), {"Retry-After": "2"}
        with primary_db(target=target) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO messages (text, host) VALUES (%s, %s)", (text, socket.gethostname()))
            cur.execute("SELECT id, text, host, created_at FROM messages WHERE id = %s", (cur.lastrowid,))
            stored = cur.fetchone()
    finally:
        WRITE_SLOTS.release()
    return jsonify(_row(stored)), 201


def _primary_known_unreachable(target: tuple[str, int]) -> bool:
    """This worker's position thread has just failed to reach `target` (the primary writes go to). A
    write then fails at once instead of holding a worker for a connection's or a query's timeout: in
    the lab, a frozen primary's writes held all 3 workers of a replica, whose health check then timed
    out, and HAProxy had no server left for reads either (issue 13)."""
    latest = PRIMARY_POSITION.latest(target)
    return (
        latest is not None
        and latest[0] == "unreachable"
        and latest[2] <= POSITION_MAX_AGE_SECONDS
        and PRIMARY_POSITION.unreachable_for() >= WRITES_REFUSED_AFTER_SECONDS
    )


@app.get("/health")
def health():
    report: dict = {"host": socket.gethostname(), "role": "unknown", "database": "unreachable"}
    healthy = False
    try:
        with local_db() as conn, conn.cursor() as cur:
            read_only, status = _local_state(cur)
            report["database"] = "ok"
            report["role"] = "replica" if read_only else "primary"
            healthy = not read_only or _replication_health(cur, report, status)
    except pymysql.MySQLError as exc:
        report["error"] = str(exc.args[-1]) if exc.args else exc.__class__.__name__
    report["healthy"] = healthy
    response = jsonify(report)
    response.status_code = 200 if healthy else 503
    return response


def _replication_health(cur, report: dict, status: dict | None) -> bool:
    if not status:
        report["replication"] = {"running": False, "reason": "not configured"}
        return False
    io_ok, sql_ok = status["Slave_IO_Running"] == "Yes", status["Slave_SQL_Running"] == "Yes"
    lag = status["Seconds_Behind_Master"]
    max_lag = int(_env("WEBINFRA_MAX_LAG", "30"))
    replication = report["replication"] = {
        "running": io_ok and sql_ok,
        "io_running": status["Slave_IO_Running"],
        "sql_running": status["Slave_SQL_Running"],
        "seconds_behind": lag,
        "primary": status["Master_Host"],
        "gtid_position": status.get("Gtid_IO_Pos"),
        "sql_state": status.get("Slave_SQL_Running_State"),
    }
    target = (status["Master_Host"], int(status["Master_Port"]))
    if status.get("Last_Error"):
        replication["last_error"] = status["Last_Error"]
    if status.get("Last_SQL_Errno"):
        replication["reason"] = "applying replicated writes failed"
        return False
    if io_ok and sql_ok and lag is not None and lag <= max_lag:
        return _received_what_the_primary_has(cur, replication, target)
    if status["Slave_IO_Running"] == "Connecting" and sql_ok:
        return _reconnecting_with_everything(cur, replication, target)
    return _serving_without_primary(cur, replication, target)


def _applied_position(cur) -> str:
    """The GTID position this replica's SQL thread has applied."""
    cur.execute("SELECT @@global.gtid_slave_pos AS applied")
    return cur.fetchone()["applied"] or ""


def _reconnecting_with_everything(cur, replication: dict, target: tuple[str, int]) -> bool:
    """The I/O thread is reconnecting (it lost the primary; it tries again every few seconds). The
    primary may be gone (then: _serving_without_primary) or back already: a primary whose MariaDB
    restarted comes back read-only with nothing new, yet every replica turned 503 until its next
    attempt, and with the old primary out too the site had no server for reads (the fault matrix:
    36 failed reads). A primary that answers, whose position this replica has received and applied,
    leaves it complete: it serves."""
    latest = PRIMARY_POSITION.latest(target)
    if latest is None or latest[0] != "position" or latest[2] > POSITION_MAX_AGE_SECONDS:
        return _serving_without_primary(cur, replication, target)
    wanted = replication["primary_position"] = latest[1]
    applied = _applied_position(cur)
    if not (gtid_reached(replication["gtid_position"] or "", wanted) and gtid_reached(applied, wanted)):
        replication["reason"] = "reconnecting to the primary, and behind it"
        return False
    replication["serving"] = f"reconnecting to the primary; has everything it has ({wanted or 'nothing'})"
    return True


def _serving_without_primary(cur, replication: dict, target: tuple[str, int] | None = None) -> bool:
    """Replication is not receiving. If that is because the primary is gone (this server cannot reach
    it), serve reads of everything received, for ORPHAN_READS_SECONDS at most: with every replica
    turning 503 the moment its primary died, the whole site went down, reads included, until a
    promotion (issue 13). A reachable primary that this server does not replicate from, or a relay log
    not yet applied, fails the check."""
    latest = PRIMARY_POSITION.latest(target)
    if latest is None or latest[0] != "unreachable":
        replication["reason"] = "replication is not running"
        return False
    gone = PRIMARY_POSITION.unreachable_for()
    bound = float(_env("WEBINFRA_ORPHAN_READS_SECONDS", "600"))
    if gone > bound:
        replication["reason"] = f"the primary has been unreachable for {gone:.0f} s, over {bound:.0f} s"
        return False
    applied = _applied_position(cur)
    received = replication["gtid_position"] or ""
    # A relay log that ends with part of a transaction (the stream cut mid-transaction) leaves the SQL
    # thread at its end waiting for the rest: everything complete is applied (the part was never
    # acknowledged to anyone).
    waiting_at_the_end = "read all relay log" in (replication.get("sql_state") or "")
    if not (gtid_reached(applied, received) or waiting_at_the_end):
        replication["reason"] = f"the primary is unreachable and what was received is not applied yet ({applied})"
        return False
    replication["serving"] = (
        f"reads only: the primary has been unreachable for {gone:.0f} s (at most {bound:.0f} s); "
        f"data complete up to {applied or 'nothing'}, everything received"
    )
    return True


class UnreachableClock:
    """Since when this server's primary has been out of reach, shared by every gunicorn worker through a
    file in the app's runtime directory (systemd's RuntimeDirectory=, $RUNTIME_DIRECTORY). Each worker
    used to keep its own clock, started at its own poll: near ORPHAN_READS_SECONDS one worker said 503
    and the next 200 (CI saw it), so HAProxy's checks of one server disagreed. The first worker to see
    the primary gone writes the time; the others adopt it at their next poll; any worker that reaches
    the primary clears it. CLOCK_MONOTONIC is one clock for every process of a boot, and /run does not
    outlive a boot. Without a runtime directory, each worker keeps its own clock as before."""

    NAME = "primary-unreachable-since.json"

    def __init__(self, directory: str | None) -> None:
        self.path = os.path.join(directory, self.NAME) if directory else None

    def _read(self) -> tuple[list, float] | None:
        """(the primary it is about, since when), or None when there is no valid record."""
        if self.path is None:
            return None
        try:
            with open(self.path, encoding="utf-8") as file:
                recorded = json.load(file)
            return list(recorded["primary"]), float(recorded["since"])
        except (OSError, ValueError, KeyError, TypeError):  # none, or torn by hand: as if none
            return None

    def since(self, target: tuple[str, int] | None, mine: float | None, now: float) -> float:
        """The shared start of the outage of `target`; `now` (recorded) when none is: another worker
        that reached the primary since this one's last poll cleared it, ending this worker's outage too.
        Without a runtime directory, or when it cannot be written: `mine` (this worker's own start), or `now`."""
        if self.path is None:
            return mine or now
        recorded = self._read()
        if recorded is not None and recorded[0] == list(target or ()):
            return recorded[1]
        temporary = f"{self.path}.{os.getpid()}"
        try:
            with open(temporary, "w", encoding="utf-8") as file:
                json.dump({"primary": list(target or ()), "since": now}, file)
            os.replace(temporary, self.path)
        except OSError as error:
            app.logger.warning("cannot record the primary's outage in %s: %s", self.path, error)
            return mine or now
        return now

    def forget(self) -> None:
        """The primary answered: no outage is going on (a record about an earlier primary is stale too)."""
        if self.path is not None and os.path.exists(self.path):
            with contextlib.suppress(OSError):
                os.remove(self.path)


UNREACHABLE_CLOCK = UnreachableClock(os.environ.get("RUNTIME_DIRECTORY"))


class PrimaryPosition:
    """The primary's GTID position (@@gtid_binlog_pos) as last read by a thread of this worker, or why
    it could not be read. The thread follows promotions: it asks the local database for its primary each time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        # (position|unreachable|refused, value, when, the primary it is about)
        self._state: tuple[str, str, float, tuple[str, int] | None] | None = None
        self._unreachable_since: float | None = None

    def start(self) -> None:
        """Start the thread, or start it again if it died (it should not: it catches everything)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._poll, name="primary-position", daemon=True)
                self._thread.start()

    def latest(self, target: tuple[str, int] | None = None) -> tuple[str, str, float] | None:
        """(kind, value, age in seconds) about `target` (the primary this server replicates from now), or
        None before the thread's first answer about it (waited for briefly: the thread follows a change
        of primary at its next poll)."""
        self.start()
        deadline = time.monotonic() + FIRST_POSITION_WAIT_SECONDS
        while True:
            with self._lock:
                state = self._state
            if state is not None and (target is None or state[3] == target):
                kind, value, when, _ = state
                return kind, value, time.monotonic() - when
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)

    def unreachable_for(self) -> float:
        """Seconds the primary has been out of reach without a break (0 when it answers)."""
        with self._lock:
            since = self._unreachable_since
        return 0.0 if since is None else time.monotonic() - since

    def _record(self, state: tuple[str, str] | None, target: tuple[str, int] | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            same_primary = self._state is not None and self._state[3] == target
            mine = self._unreachable_since if same_primary else None
        if state is not None and state[0] == "unreachable":
            since: float | None = UNREACHABLE_CLOCK.since(target, mine, now)
        else:
            since = None
            UNREACHABLE_CLOCK.forget()
        with self._lock:
            self._unreachable_since = since
            self._state = None if state is None else (*state, now, target)

    def _poll(self) -> None:
        conn, connected_to = None, None
        while True:
            host = None
            try:
                host = write_target()
                if host is None:
                    raise LookupError("not a replica")
                if conn is None or host != connected_to:
                    if conn is not None:
                        conn.close()
                    conn, connected_to = primary_db(POSITION_QUERY_TIMEOUT_SECONDS, host), host
                with conn.cursor() as cur:
                    cur.execute("SELECT @@gtid_binlog_pos AS position")
                    row = cur.fetchone()
                self._record(("position", row["position"] if row else ""), host)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive anything; /health shows it
                if isinstance(exc, LookupError):
                    self._record(None)  # a primary now: nothing to compare with
                elif isinstance(exc, pymysql.MySQLError):
                    self._record(_primary_error(exc), host)
                else:
                    self._record(("refused", f"{exc.__class__.__name__}: {exc}"), host)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn, connected_to = None, None
            time.sleep(POSITION_POLL_SECONDS)


def _primary_error(exc: pymysql.MySQLError) -> tuple[str, str]:
    """Refused: the primary (or whoever answers at its address) fails our certificate check or our
    credentials; this replica cannot know what it has. Anything else (can't connect, lost connection,
    too many connections, shutting down...) is a primary out of reach for now: it must not take every
    replica out of the rotation at once."""
    code = exc.args[0] if exc.args else None
    message = str(exc.args[-1]) if exc.args else exc.__class__.__name__
    cause = getattr(exc, "original_exception", None) or exc.__context__
    refused = isinstance(cause, ssl.SSLCertVerificationError) or code in REFUSED_ERRORS
    return ("refused" if refused else "unreachable", message)


PRIMARY_POSITION = PrimaryPosition()
if "WEBINFRA_ROLE" in os.environ:  # a server's worker (gunicorn imports the app in each, after fork)
    PRIMARY_POSITION.start()


def _received_what_the_primary_has(cur, replication: dict, target: tuple[str, int] | None = None) -> bool:
    """Seconds_Behind_Master only measures what this replica has received and not yet applied: a
    replica whose stream has stalled (its I/O thread connected, the primary sending nothing) reads 0
    while missing every write since. Seen in the lab after a replica's hard restart: the primary's
    dump thread for its old, dead connection blocked the new one for 18 s, and the replica served
    reads 300 writes behind (issue 12). So require this replica's I/O thread to have reached the
    primary's position, waiting CATCH_UP_WAIT_SECONDS at most. A primary out of reach leaves the
    verdict to the replication threads (it fails writes anyway; a replica that keeps serving reads
    is what the stack has left); one that refuses us, or no answer yet, fails the check."""
    latest = PRIMARY_POSITION.latest(target)
    if latest is None:
        replication["primary_position"] = "not yet known"
        replication["reason"] = "the primary's position is not known yet"
        return False
    kind, wanted, age = latest
    replication["primary_position"] = wanted if kind == "position" else kind
    if age > POSITION_MAX_AGE_SECONDS:  # the thread is stuck: whatever it said last is no longer true
        replication["reason"] = f"the primary's position is {age:.1f} s old"
        return False
    if kind == "unreachable":
        replication["primary_error"] = wanted
        return True
    if kind == "refused":
        replication["reason"] = f"the primary refused this replica's query: {wanted}"
        return False
    deadline = time.monotonic() + CATCH_UP_WAIT_SECONDS
    while True:
        received = replication["gtid_position"] or ""
        if gtid_reached(received, wanted):
            return True
        if time.monotonic() >= deadline:
            replication["reason"] = "behind the primary: its position is not in this replica's relay log"
            return False
        time.sleep(CATCH_UP_POLL_SECONDS)
        cur.execute("SHOW SLAVE STATUS")
        replication["gtid_position"] = (cur.fetchone() or {}).get("Gtid_IO_Pos")


def gtid_reached(position: str, wanted: str) -> bool:
    """Whether GTID position `position` ("0-1-35,1-2-7": domain-server-sequence per domain) has
    everything of `wanted`: in each domain of `wanted`, a sequence number at least as high."""

    def by_domain(pos: str) -> dict[int, int]:
        result: dict[int, int] = {}
        for gtid in filter(None, (part.strip() for part in pos.split(","))):
            domain, _server, sequence = (int(field) for field in gtid.split("-"))
            result[domain] = max(result.get(domain, 0), sequence)
        return result

    have = by_domain(position)
    return all(have.get(domain, -1) >= sequence for domain, sequence in by_domain(wanted).items())
