#!/usr/bin/python3
"""webinfra-failover: the database primary's automatic failover, run on the load balancers.

    webinfra-failover [--config /etc/webinfra/failover.json]

Every load balancer runs it; only the active one acts (keepalived's state, /run/webinfra/lb-state, with
EC2 saying the stack's Elastic IP points there; a lone load balancer acts unless EC2 says the address
points at another instance: a second load balancer joining it). The standby watches all the same, so it
knows the last state of the primary when it takes over. Each poll (every `interval` seconds) reads,
from every database server over verified TLS: read_only, its GTID positions, its replication status
and the semi-synchronous replication status. From that:

* The primary is the one writable server. Two writable servers: every one but the primary of record
  is made read-only at once (and an alarm says so).
* No writable server, and the primary of record answers (it restarted: every server boots
  read-only; or it fenced itself): made writable again if it has everything every other server has.
* A read-only server that replicates from no primary (a returning old primary, a replica pointed
  elsewhere) is pointed at the primary, when it holds nothing the primary lacks; otherwise it stays
  out of the rotation (its /health fails) and an alarm says it holds writes no one else has.
* The primary of record does not answer for `failure_after` seconds: it has failed only if every
  replica that answers agrees (its replication I/O thread is down, or it has received nothing, not
  even the heartbeat sent every second, for `silence_after` seconds): MaxScale mariadbmon's check.
  Then, only while armed, it fails over: stop every replica's I/O thread, let it apply what it
  received, promote the most advanced (it must hold the primary's last position seen here), point
  the others at it. Armed = the primary's last answer had semi-synchronous replication ON with a
  replica acknowledging: every acknowledged write is then on a replica (Patroni's rule). Asynchronous
  (no replica acknowledging) = disarmed: no automatic failover, the reason in the log and an alarm;
  `scripts/promote --force` is the person's decision.

Fencing: a primary cut off from the controllers fences itself (the `webinfra_self_fence` event on
every server: read-only once no controller session has spoken to it for 3 s), so by the time a
failover happens (`failure_after` > 3 s) the old primary refuses writes even if it is alive.

Alarms: it publishes CloudWatch metrics (namespace webinfra/<stack>) that the stack's alarms watch:
BecamePrimary (per server: it was promoted), FailoverArmed (0 or 1, every minute: no data means no
active controller), DatabaseAttention (something a person must look at: a refused failover, a server
holding writes no one else has, a second writable server fenced). The log says the details.

Standard library and python3-pymysql (Debian), plus boto3 (python3-boto3) for the metrics.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import ipaddress
import json
import pathlib
import queue
import re
import sys
import threading
import time
from collections.abc import Callable

import pymysql

CONFIG = "/etc/webinfra/failover.json"
LOCK = "webinfra_failover"  # GET_LOCK on the replicas while one controller fails over
ASYNCHRONOUS = "the primary replicates asynchronously (no replica acknowledges): a failover could lose writes"


@dataclasses.dataclass(frozen=True)
class Settings:
    servers: tuple[tuple[str, str, int], ...]  # (name, address, port), the first the stack's initial primary
    user: str
    password: str
    tls_ca: str
    interval: float = 0.5
    connect_timeout: float = 1.0
    failure_after: float = 5.0  # above the self-fence's 3 s: a live but cut-off primary is read-only by then
    silence_after: float = 3.0  # replicas get a heartbeat every heartbeat_period
    heartbeat_period: float = 1.0
    drain_timeout: float = 10.0
    fallback_after: float = 3.0  # commits waiting this long for an acknowledgement: disarm, then asynchronous
    active_file: str | None = None  # keepalived's state; None: a lone load balancer (no keepalived)
    # The arbiter: which instance the stack's Elastic IP points at (EC2's answer, one at a time); a lone
    # load balancer heeds only an answer naming another instance.
    # {"filters": DescribeAddresses filters, "instance_id_file": this instance's id}; None: keepalived alone.
    elastic_ip: dict | None = None
    arbiter_interval: float = 1.0  # how often a MASTER asks EC2 who holds the address
    arbiter_call_timeout: float = 0.5  # each call's connect and read timeouts (one attempt)
    arbiter_valid_for: float = 3.0  # an answer counts this long, from when it was asked
    takeover_after: float = 3.5  # a new holder waits this long (> arbiter_valid_for) before it acts
    state_file: str | None = None  # what `scripts/lab status` and people read
    stack: str | None = None  # the metrics' namespace is webinfra/<stack>; None: no metrics
    region: str | None = None
    endpoint_url: str | None = None

    @classmethod
    def load(cls, path: str, servers_path: str | None = None) -> Settings:
        """The configuration at `path` (from user-data), with the database servers from `servers_file` (or
        `servers_path`): the one part a running stack changes (webinfra-config-sync brings it from SSM),
        so it holds data only, checked here: names web-NN, IPv4 addresses, each once."""
        raw = json.loads(pathlib.Path(path).read_text())
        password = pathlib.Path(raw.pop("password_file")).read_text().strip()
        password = password.split("=", 1)[1] if "=" in password else password  # KEY=value env file
        servers_file = servers_path or raw.pop("servers_file", None)
        raw.pop("servers_file", None)
        if servers_file:
            raw["servers"] = load_servers(servers_file)
        else:
            raw["servers"] = tuple((s["name"], s["address"], int(s.get("port", 3306))) for s in raw["servers"])
        return cls(password=password, **raw)


SERVER_NAME = re.compile(r"web-[0-9]{2}")


def load_servers(path: str) -> tuple[tuple[str, str, int], ...]:
    """The database servers file: {"servers": [{"name": "web-01", "address": "10.0.0.11"}, ...]}, nothing else."""
    raw = json.loads(pathlib.Path(path).read_text())
    if not isinstance(raw, dict) or set(raw) != {"servers"} or not isinstance(raw["servers"], list):
        raise ValueError(f'{path}: wants exactly {{"servers": [...]}}')
    servers = []
    for item in raw["servers"]:
        if not isinstance(item, dict) or set(item) != {"name", "address"}:
            raise ValueError(f'{path}: each server is {{"name", "address"}}, got {item!r}')
        if not SERVER_NAME.fullmatch(str(item["name"])):
            raise ValueError(f"{path}: {item['name']!r} is not a web server's name")
        address = ipaddress.IPv4Address(item["address"])  # ValueError unless an IPv4 address
        servers.append((item["name"], str(address), 3306))
    names = [name for name, _, _ in servers]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{path}: servers must be named once each, got {names}")
    return tuple(servers)


@dataclasses.dataclass
class Observation:
    """One server as one poll saw it."""

    name: str
    address: str
    port: int
    at: float
    reachable: bool = False
    error: str = ""
    read_only: bool = True
    binlog_pos: str = ""
    current_pos: str = ""
    binlog_state: str = ""  # the last GTID of each (domain, server) in its binary log
    master_host: str | None = None  # None: no replication configured
    master_port: int = 0
    io_running: str = ""
    sql_running: str = ""
    io_pos: str = ""
    sql_state: str = ""
    last_io_errno: int = 0
    last_sql_errno: int = 0
    progress: tuple = ()  # what changes while a replica receives anything: events or heartbeats
    semi_sync_on: bool = False
    semi_sync_enabled: bool = False  # the primary side switched on (on a replica: a mistake, see _decide)
    semi_sync_clients: int = 0
    semi_sync_waiting: int = 0  # sessions waiting for an acknowledgement now
    semi_sync_acknowledged: int = 0  # commits acknowledged so far (a counter)

    @property
    def source(self) -> tuple[str, int] | None:
        """Where its replication settings point (itself, for a primary's stored settings)."""
        return None if self.master_host is None else (self.master_host, self.master_port)

    @property
    def endpoint(self) -> tuple[str, int]:
        return (self.address, self.port)

    @property
    def replicating(self) -> bool:
        return self.master_host is not None and self.io_running in ("Yes", "Connecting")


def highest(position: str, by_server: bool = False) -> dict:
    """A GTID list ("0-1-35,1-2-7") as {domain: highest sequence}, or {(domain, server): highest sequence}."""
    result: dict = {}
    for gtid in filter(None, (part.strip() for part in position.split(","))):
        domain, server, number = (int(field) for field in gtid.split("-"))
        key = (domain, server) if by_server else domain
        result[key] = max(result.get(key, 0), number)
    return result


def sequences(position: str) -> dict[int, int]:
    """A GTID position ("0-1-35,1-2-7") as {domain: highest sequence}."""
    return highest(position)


def gtid_reached(position: str, wanted: str) -> bool:
    """Whether `position` has, in every domain of `wanted`, a sequence at least as high."""
    have = sequences(position)
    return all(have.get(domain, -1) >= sequence for domain, sequence in sequences(wanted).items())


def applied_all(seen: Observation) -> bool:
    """Applied everything complete it received. Its relay log may end with part of a transaction (the
    stream was cut mid-transaction): the SQL thread then waits at the end of the relay log for the
    rest, which never comes. That part was never acknowledged (a replica acknowledges whole
    transactions), so it is nobody's write: the replica counts as drained."""
    return gtid_reached(seen.current_pos, seen.io_pos) or (
        seen.sql_running == "Yes" and "read all relay log" in seen.sql_state
    )


def writes_not_in(state: str, primary_state: str) -> list[str]:
    """The GTIDs of `state` (a @@gtid_binlog_state: the last GTID of each domain and server) beyond what
    `primary_state` has from the same domain and server: transactions only that server has. Comparing
    sequence numbers alone is not enough: MariaDB let a returning primary holding 0-2-85 replicate from
    one whose domain 0 had reached 0-1-85, and both rows diverged silently (lab, issue 13)."""

    have = highest(primary_state, by_server=True)
    return [
        f"{domain}-{server}-{number}"
        for (domain, server), number in sorted(highest(state, by_server=True).items())
        if number > have.get((domain, server), 0)
    ]


def sequence(position: str) -> int:
    return sequences(position).get(0, 0)


# --- talking to the servers --------------------------------------------------------------------------------------


class Link:
    """One connection to a server, opened when needed and reopened after any error. Not shared between
    threads: a server has one for its watcher and one for the controller's actions."""

    def __init__(self, address: str, port: int, settings: Settings):
        self.address, self.port, self.settings = address, port, settings
        self._conn: pymysql.connections.Connection | None = None

    def _connection(self) -> pymysql.connections.Connection:
        if self._conn is None:
            self._conn = pymysql.connect(
                host=self.address,
                port=self.port,
                user=self.settings.user,
                password=self.settings.password,
                ssl_ca=self.settings.tls_ca,
                ssl_verify_cert=True,
                ssl_verify_identity=True,
                connect_timeout=self.settings.connect_timeout,
                read_timeout=max(2.0, self.settings.connect_timeout * 2),
                write_timeout=max(2.0, self.settings.connect_timeout * 2),
                autocommit=True,
                cursorclass=pymysql.cursors.DictCursor,
            )
        return self._conn

    def query(self, statement: str, timeout: float | None = None) -> list[dict]:
        try:
            conn = self._connection()
            default = conn._read_timeout  # type: ignore[attr-defined]  # PyMySQL's, per read
            if timeout is not None:
                conn._read_timeout = timeout  # type: ignore[attr-defined]  # a statement known to wait
            try:
                with conn.cursor() as cur:
                    cur.execute(statement)
                    return [dict(row) for row in cur.fetchall()]
            finally:
                conn._read_timeout = default  # type: ignore[attr-defined]
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


class Server:
    """One database server. A thread of its own watches it every `interval` over its own connection, so
    a server that does not answer never delays what the controller sees of the others, nor the queries
    that are the primary's lease (the self-fence event counts a controller's session fresh while it
    speaks). The controller's actions use a second connection."""

    def __init__(self, name: str, address: str, port: int, settings: Settings, clock: Callable[[], float]):
        self.name, self.address, self.port, self.settings, self.clock = name, address, port, settings, clock
        self.act = Link(address, port, settings)
        self._watch = Link(address, port, settings)
        self._latest: Observation | None = None
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None
        self._first = threading.Event()

    def query(self, statement: str, timeout: float | None = None) -> list[dict]:
        return self.act.query(statement, timeout)

    def watch(self) -> None:
        """Start the watcher (again, if it was stopped)."""
        if self._stop is not None:
            return
        stop = self._stop = threading.Event()
        self._first.clear()
        threading.Thread(target=self._watching, args=(stop,), name=f"watch-{self.name}", daemon=True).start()

    def unwatch(self) -> None:
        """Stop the watcher; it closes its connection itself (a standby holds no lease)."""
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        with self._lock:
            self._latest = None
        self.act.close()

    def _watching(self, stop: threading.Event) -> None:
        while not stop.is_set():
            began = self.clock()
            seen = self.observe(began, self._watch)
            with self._lock:
                if not stop.is_set():
                    self._latest = seen
            self._first.set()
            stop.wait(max(0.0, self.settings.interval - (self.clock() - began)))
        self._watch.close()

    def latest(self) -> Observation:
        """Its newest observation; one older than a poll and a query's timeouts (its watcher waits on a
        server that does not answer) counts as no answer."""
        self._first.wait(self.settings.connect_timeout + 2 * max(2.0, self.settings.connect_timeout * 2))
        now = self.clock()
        with self._lock:
            seen = self._latest
        if seen is None:
            return Observation(self.name, self.address, self.port, now, error="not watched yet")
        stale_after = self.settings.interval + self.settings.connect_timeout + 0.5
        if now - seen.at > stale_after:
            return Observation(self.name, self.address, self.port, now, error=f"no answer for {now - seen.at:.1f} s")
        return seen

    def close(self) -> None:
        self.unwatch()

    def observe(self, now: float, link: Link | None = None) -> Observation:
        query = (link or self.act).query
        seen = Observation(self.name, self.address, self.port, now)
        try:
            row = query(
                "SELECT @@global.read_only AS read_only, @@global.gtid_binlog_pos AS binlog_pos, "
                "@@global.gtid_current_pos AS current_pos, @@global.gtid_binlog_state AS binlog_state, "
                "@@global.rpl_semi_sync_master_enabled AS semi_sync_enabled"
            )[0]
            # ALL: the only form that shows Slave_received_heartbeats (an idle primary's sign of life).
            slave = query("SHOW ALL SLAVES STATUS")
            semi = {r["Variable_name"]: r["Value"] for r in query("SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_%'")}
        except Exception as error:  # noqa: BLE001 - an unanswered poll is an answer
            seen.error = f"{type(error).__name__}: {error}"[:200]
            return seen
        seen.reachable = True
        seen.read_only = bool(int(row["read_only"]))
        seen.binlog_pos, seen.current_pos = row["binlog_pos"] or "", row["current_pos"] or ""
        seen.semi_sync_enabled = bool(int(row["semi_sync_enabled"]))
        seen.binlog_state = row["binlog_state"] or ""
        if slave:
            s = slave[0]
            seen.master_host, seen.master_port = s["Master_Host"], int(s["Master_Port"])
            seen.io_running, seen.sql_running = s["Slave_IO_Running"], s["Slave_SQL_Running"]
            seen.io_pos = s.get("Gtid_IO_Pos") or ""
            seen.sql_state = s.get("Slave_SQL_Running_State") or ""
            seen.last_io_errno, seen.last_sql_errno = int(s["Last_IO_Errno"] or 0), int(s["Last_SQL_Errno"] or 0)
            seen.progress = (
                seen.io_pos,
                s["Master_Log_File"],
                s["Read_Master_Log_Pos"],
                s["Slave_received_heartbeats"],
            )
        seen.semi_sync_on = semi.get("Rpl_semi_sync_master_status") == "ON"
        seen.semi_sync_clients = int(semi.get("Rpl_semi_sync_master_clients") or 0)
        seen.semi_sync_waiting = int(semi.get("Rpl_semi_sync_master_wait_sessions") or 0)
        seen.semi_sync_acknowledged = int(semi.get("Rpl_semi_sync_master_yes_tx") or 0)
        return seen


# --- who decides, on a pair of load balancers ------------------------------------------------------------------


class ElasticIpArbiter:
    """Which load balancer of a pair may act: the one the stack's Elastic IP points at, as EC2 says.

    keepalived alone cannot decide: cut off from each other (one availability zone from the other),
    both load balancers are MASTER, and two deciding controllers could each keep a different server
    writable (one promotes the replica it still sees; the other keeps the primary it still sees writable
    and switches it to asynchronous replication). An Elastic IP points at one instance at a time, only
    EC2's API moves it, and it is where the site's traffic goes: it names the decider. EC2's API is
    eventually consistent (its documentation: a change "might not be immediately visible to all
    subsequent commands"), so this makes two deciders rare and brief, not impossible; what keeps a brief
    overlap harmless is the controller's own rules: a new decider starts disarmed (it fails over only
    after it has itself seen the primary semi-synchronous with a replica holding everything), it makes no
    read-only primary writable while some server does not answer, and a primary nobody decides for
    fences itself. The answers are time-bounded, like a lease:

    * An answer counts for `arbiter_valid_for` seconds from when it was asked, not answered: a holder
      that can no longer ask (EC2 out of reach) stops acting then, and closes its sessions.
    * A load balancer that finds the address newly on itself waits `takeover_after` (longer than an
      answer counts) before it acts: by then the previous holder has stopped acting.
    * Promoting a replica and making a read-only primary writable again ask EC2 again right before
      (`confirm`, two attempts at most): an answer naming another holder ends this one's tenure; no
      answer only postpones the action to a later poll.
    * An answer that no longer counts (two asks in a row unanswered) makes the next one a takeover
      again: the wait, then only what is seen afterwards (the controller starts disarmed).

    One DescribeAddresses call (one attempt: botocore's total_max_attempts, timeouts of
    `arbiter_call_timeout`) every `arbiter_interval` while this load balancer is keepalived's MASTER (the
    BACKUP never acts, and asks nothing)."""

    def __init__(self, settings: Settings, clock: Callable[[], float], client: object | None = None):
        assert settings.elastic_ip is not None
        self.settings, self.clock = settings, clock
        self.filters = settings.elastic_ip["filters"]
        self.instance_id = pathlib.Path(settings.elastic_ip["instance_id_file"]).read_text().strip()
        self._client = client
        self._client_lock = threading.Lock()  # boto3 clients are thread-safe once made; making one is not
        self._lock = threading.Lock()
        self._answer: tuple[float, str | None] | None = None  # (asked at, the instance holding the address)
        self.error = ""
        self._thread: threading.Thread | None = None

    def client(self):  # boto3 makes the client class at run time: no annotation
        with self._client_lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                timeout = self.settings.arbiter_call_timeout
                self._client = boto3.session.Session().client(
                    "ec2",
                    region_name=self.settings.region,
                    endpoint_url=self.settings.endpoint_url,
                    config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"total_max_attempts": 1}),
                )
            return self._client

    def ask(self) -> tuple[bool, str | None]:
        """Asks EC2 now: (answered, the instance holding the address; None: it points nowhere)."""
        from botocore.exceptions import NoCredentialsError, PartialCredentialsError

        asked = self.clock()
        try:
            addresses = self.client().describe_addresses(Filters=self.filters)["Addresses"]
        except (NoCredentialsError, PartialCredentialsError) as error:
            self.error = f"{type(error).__name__}: {error}"[:200]
            with self._client_lock:
                self._client = None  # made again next time: the instance role's credentials may come later
            return False, None
        except Exception as error:  # noqa: BLE001 - no answer: the last one ages out
            self.error = f"{type(error).__name__}: {error}"[:200]
            return False, None
        if len(addresses) > 1:
            self.error = f"{len(addresses)} addresses carry the stack's tags: which one decides is unclear"
            return False, None
        holder = addresses[0].get("InstanceId") if addresses else None
        with self._lock:
            if self._answer is None or self._answer[0] <= asked:
                self._answer, self.error = (asked, holder), ""
        return True, holder

    def holds(self) -> bool:
        """This instance held the address at an answer that still counts."""
        with self._lock:
            answer = self._answer
        return (
            answer is not None
            and answer[1] == self.instance_id
            and self.clock() - answer[0] < self.settings.arbiter_valid_for
        )

    def last_holder(self) -> str | None:
        """The holder at the last answer, however old (None: never answered)."""
        with self._lock:
            return None if self._answer is None else self._answer[1]

    def confirm(self) -> tuple[bool, str | None]:
        """Asked again, now, right before something that cannot be undone: a second attempt if the first
        gets no answer (this is the one call whose answer matters at once)."""
        answered, holder = self.ask()
        return (answered, holder) if answered else self.ask()

    def keep_asking(self, wanted: Callable[[], bool]) -> None:
        """Ask every arbiter_interval, in a thread of its own (a slow EC2 never holds the control loop),
        while `wanted` (this load balancer is keepalived's MASTER, or alone)."""
        if self._thread is not None:
            return

        def loop() -> None:
            while True:
                began = self.clock()
                if wanted():
                    self.ask()
                time.sleep(max(0.05, self.settings.arbiter_interval - (self.clock() - began)))

        self._thread = threading.Thread(target=loop, name="arbiter", daemon=True)
        self._thread.start()


# --- the controller ---------------------------------------------------------------------------------------------


class Controller:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        say: Callable[[str], None] = lambda message: print(f"webinfra-failover: {message}", flush=True),
        metric: Callable[[str, float, str | None], None] | None = None,
        arbiter: ElasticIpArbiter | None = None,
    ):
        self.settings, self.clock, self.say = settings, clock, say
        if arbiter is None and settings.elastic_ip:
            arbiter = ElasticIpArbiter(settings, clock)
        self.arbiter = arbiter
        self.holder_since: float | None = None  # since when the arbiter has said this instance holds the address
        self.standby_reason = "standby: the active load balancer decides"
        self.metric = metric or self._cloudwatch_metric
        self._metrics: queue.Queue | None = None
        self.armed_published: tuple[bool, float] | None = None
        self.servers = [Server(name, address, port, settings, clock) for name, address, port in settings.servers]
        self.by_endpoint = {(s.address, s.port): s.name for s in self.servers}
        self.primary: str | None = None  # of record
        self.armed, self.arming = False, "no primary seen yet"
        self.primary_position = ""  # the primary's last position seen here
        self.previous_primary_position = ""  # ...and the one before
        self.armed_from: str | None = None  # the primary's position when semi-sync was first seen on
        self.stuck: tuple[int, float] | None = None  # (acknowledged count, since) while commits wait
        self.lost_since: float | None = None
        # When this controller last changed which server is primary: observations older than that
        # show the cluster before the change (the new primary still read-only) and are not acted on.
        self.changed_at = float("-inf")
        self.semi_sync_on_at = float("-inf")  # when this controller last switched semi-sync on
        self.last_progress: dict[str, tuple[tuple, float]] = {}
        self.last_answered: dict[str, float] = {}  # server → when its last answered poll began
        self.said: set[str] = set()  # conditions already reported (each once, until it clears)
        self.observations: dict[str, Observation] = {}
        self.events: list[str] = []  # what this controller did, newest last (for the state file)

    # -- reporting ---------------------------------------------------------------------------------------

    def _once(self, key: str, message: str, alarm: bool = False) -> None:
        if key not in self.said:
            self.said.add(key)
            self.say(message)
            if alarm:
                self.metric("DatabaseAttention", 1, None)

    def _clear(self, prefix: str) -> None:
        self.said = {key for key in self.said if not key.startswith(prefix)}

    def _did(self, message: str, metric: tuple[str, str | None] | None = None) -> None:
        self.say(message)
        self.events = [*self.events[-19:], f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {message}"]
        if metric:
            self.metric(metric[0], 1, metric[1])

    def _cloudwatch_metric(self, name: str, value: float, host: str | None) -> None:
        """Queued for a thread of its own: a slow CloudWatch call (up to ~14 s with retries) must never
        hold the control loop, whose queries are the primary's lease."""
        if not self.settings.stack:
            return
        if self._metrics is None:
            self._metrics = queue.Queue(maxsize=1000)
            threading.Thread(target=self._publish_metrics, name="metrics", daemon=True).start()
        with contextlib.suppress(queue.Full):
            self._metrics.put_nowait((name, value, host))

    def _publish_metrics(self) -> None:
        import boto3
        from botocore.config import Config

        assert self._metrics is not None
        client = boto3.client(
            "cloudwatch",
            region_name=self.settings.region,
            endpoint_url=self.settings.endpoint_url,
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2}),
        )
        while True:
            name, value, host = self._metrics.get()
            try:
                client.put_metric_data(
                    Namespace=f"webinfra/{self.settings.stack}",
                    MetricData=[
                        {
                            "MetricName": name,
                            "Value": value,
                            "Unit": "Count",
                            "Dimensions": [{"Name": "Host", "Value": host}] if host else [],
                        }
                    ],
                )
            except Exception as error:  # noqa: BLE001 - a metric that cannot be sent must not stop anything
                self.say(f"could not publish {name} ({type(error).__name__}: {error})")

    def _publish_arming(self, acting: bool) -> None:
        """FailoverArmed from the active controller: on every change, and every minute."""
        if not acting:
            self.armed_published = None
            return
        now = self.clock()
        last = self.armed_published
        if last is None or last[0] != self.armed or now - last[1] >= 60:
            self.armed_published = (self.armed, now)
            self.metric("FailoverArmed", 1 if self.armed else 0, None)

    def _keepalived_master(self) -> bool:
        if not self.settings.active_file:
            return True  # a lone load balancer: no keepalived, always its own MASTER
        try:
            return pathlib.Path(self.settings.active_file).read_text().strip() == "MASTER"
        except OSError:
            return False

    def active(self) -> bool:
        """One of a pair while keepalived says MASTER and, with an arbiter, EC2 says the stack's Elastic IP
        points here (for takeover_after already: see ElasticIpArbiter). A lone load balancer unless EC2
        has answered that the address points at another instance (a second load balancer joining it,
        lbCount 1 -> 2, took it: from then on only that one decides); no answer keeps it deciding.
        An answer that no longer counts (two asks in a row unanswered) is a takeover again when answers
        return: wait, and start from what is seen then (a decider elsewhere may have acted meanwhile, and
        the primary may have fallen back to asynchronous replication unseen)."""
        if not self.settings.active_file:
            if self.arbiter is None:
                return True
            self.arbiter.keep_asking(lambda: True)
            elsewhere = self._lone_and_elsewhere()
            if elsewhere:
                self.standby_reason = f"standby: the Elastic IP points at {elsewhere} (a joining load balancer decides)"
            return not elsewhere
        if not self._keepalived_master():
            self.holder_since = None
            self.standby_reason = "standby: the active load balancer decides"
            return False
        if self.arbiter is None:
            return True
        self.arbiter.keep_asking(self._keepalived_master)
        if not self.arbiter.holds():
            self.holder_since = None
            if self.arbiter.last_holder() == self.arbiter.instance_id:
                why = self.arbiter.error or "no answer"
                self.standby_reason = f"standby: EC2 has not confirmed the Elastic IP is here lately ({why})"
            else:
                why = f" (EC2 does not answer: {self.arbiter.error})" if self.arbiter.error else ""
                self.standby_reason = f"standby: keepalived's MASTER, but the Elastic IP is not here{why}"
            return False
        now = self.clock()
        if self.holder_since is None:
            self.holder_since = now
            self.say("the Elastic IP points here: taking over the decisions")
        if now - self.holder_since < self.settings.takeover_after:
            self.standby_reason = "standby: taking over (the previous holder of the Elastic IP stops acting first)"
            return False
        return True

    def _lone_and_elsewhere(self) -> str:
        """A lone load balancer: the instance EC2 last answered holds the stack's Elastic IP, when that is
        another one (a second load balancer joining it took it over); "" otherwise, no answer included:
        EC2 out of reach does not stop a lone load balancer's decisions, only an answer naming another does."""
        assert self.arbiter is not None
        holder = self.arbiter.last_holder()
        return holder if holder and holder != self.arbiter.instance_id else ""

    def _still_the_decider(self, what: str) -> bool:
        """Asked again right before `what`, which cannot be undone: still keepalived's MASTER, and EC2
        says the address is still here. False: not done now (said so). Only an answer naming another
        holder ends this controller's tenure; no answer just means not now (the next poll asks again)."""
        if not self.settings.active_file:
            if self.arbiter is None:
                return True
            answered, holder = self.arbiter.confirm()
            if answered and holder and holder != self.arbiter.instance_id:
                self.say(f"not {what}: the Elastic IP points at {holder} now (a joining load balancer decides)")
                return False
            return True  # no answer: a lone load balancer goes on deciding (EC2 is no condition for it)
        if not self._keepalived_master():
            self.say(f"not {what}: this load balancer is no longer keepalived's MASTER")
            return False
        if self.arbiter is None:
            return True
        answered, holder = self.arbiter.confirm()
        if answered and holder == self.arbiter.instance_id:
            return True
        if answered:
            self.holder_since = None
            self.say(f"not {what}: the Elastic IP is no longer here ({holder})")
        else:
            self.say(f"not {what} now: EC2 did not confirm the Elastic IP is here ({self.arbiter.error})")
        return False

    # -- one poll ----------------------------------------------------------------------------------------

    def observe(self) -> dict[str, Observation]:
        for server in self.servers:
            server.watch()
        seen = {server.name: server.latest() for server in self.servers}
        for name, observation in seen.items():
            if observation.reachable:
                self.last_answered[name] = observation.at
            previous = self.last_progress.get(name)
            if observation.reachable and (previous is None or previous[0] != observation.progress):
                self.last_progress[name] = (observation.progress, observation.at)
        self.observations = seen
        return seen

    def step(self) -> str:
        """Observe and act, if active. Returns what it decided, in words (tests and the log read it)."""
        acting = self.active()
        if not acting:
            # The standby holds no connection: a controller's session is the primary's lease, and only
            # the one that can act may hold it (else a primary cut off from the active controller but
            # not from the standby would stay writable). It starts from nothing when it takes over:
            # armed only once it has seen the primary with a replica acknowledging.
            for server in self.servers:
                server.unwatch()
            self.primary, self.armed, self.armed_from, self.lost_since, self.stuck = None, False, None, None, None
            self.arming, self.observations, self.last_progress, self.last_answered = "standby", {}, {}, {}
            verdict = self.standby_reason
            self._publish_arming(False)
            self._write_state(False, verdict)
            return verdict
        seen = self.observe()
        verdict = self._decide(seen, acting)
        self._publish_arming(acting)
        self._write_state(acting, verdict)
        return verdict

    def _decide(self, seen: dict[str, Observation], acting: bool) -> str:
        now = self.clock()
        stale = [o.name for o in seen.values() if o.reachable and o.at < self.changed_at]
        if stale:  # seen before this controller's last change: acting on it would undo or repeat it
            return f"waiting for observations made after the last change ({', '.join(stale)})"
        writable = [o for o in seen.values() if o.reachable and not o.read_only]
        if len(writable) > 1:
            keep = next((o for o in writable if o.name == self.primary), None)
            if keep is None:
                return self._refuse("two-writable", f"{', '.join(o.name for o in writable)} are all writable")
            for other in writable:
                if other is not keep and acting:
                    self._fence(other, f"{keep.name} is the primary")
            writable = [keep]
        if writable:
            primary = writable[0]
            if self.primary != primary.name:
                self.say(f"{primary.name} is the primary")
            self.primary, self.lost_since = primary.name, None
            self._clear("primary-lost")
            self._note_arming(primary, seen)
            if acting:
                self._manage_semi_sync(primary, seen)
                for other in seen.values():
                    if other is primary or not other.reachable:
                        continue
                    if other.semi_sync_enabled:
                        self._semi_sync_off(other)
                    if not self._follows(other, primary):
                        self._rejoin(other, primary)
            return f"primary {primary.name}"

        record = self._primary_of_record(seen)
        if record is None:
            return "no primary known"
        if record.reachable:
            return self._restore(record, seen, acting)
        if self.lost_since is None:
            # Since its last answer (the start of the last poll it answered): a poll that waited for it
            # in vain must not count as time it was alive. The self-fence counts from there too.
            self.lost_since = self.last_answered.get(record.name, record.at)
            self.say(f"the primary {record.name} does not answer ({record.error})")
        if now - self.lost_since < self.settings.failure_after:
            return f"primary {record.name} unanswered for {now - self.lost_since:.1f} s"
        replicas = [o for o in seen.values() if o.reachable and o is not record and o.source == record.endpoint]
        if not replicas:
            return self._refuse("no-replica", f"the primary {record.name} is down and no replica of it answers")
        # Silence as of each replica's own observation: a poll that waited for an unanswering primary
        # must not make a replica that was receiving at the poll's start look silent.
        hearing = [
            o.name
            for o in replicas
            if o.io_running == "Yes"
            and o.at - self.last_progress.get(o.name, ((), o.at))[1] < self.settings.silence_after
        ]
        if hearing:
            return f"primary {record.name} unanswered here, but {', '.join(hearing)} still receive from it"
        if not self.armed:
            return self._refuse(
                "disarmed", f"the primary {record.name} is down; no automatic failover: {self.arming}", alarm=True
            )
        if not acting:
            return f"primary {record.name} is down; the active load balancer fails over"
        return self._failover(record, replicas)

    def _refuse(self, key: str, message: str, alarm: bool = False) -> str:
        self._once(f"{key}:{message}", message, alarm)
        return message

    def _note_arming(self, primary: Observation, seen: dict[str, Observation]) -> None:
        """Armed (automatic failover allowed) while every commit of the primary waits for a replica's
        acknowledgement (semi-sync on: it never falls back by itself before this controller disarms),
        and a replica has received everything the primary had when that began."""
        previous = self.previous_primary_position = self.primary_position
        self.primary_position = primary.binlog_pos
        if not primary.semi_sync_on:
            self.armed_from = None
            armed = False
            reason = ASYNCHRONOUS
        else:
            if self.armed_from is None:
                self.armed_from = previous or primary.binlog_pos
            followers = [o for o in seen.values() if o is not primary and self._follows(o, primary)]
            armed = any(gtid_reached(o.io_pos, self.armed_from) for o in followers)
            reason = (
                "semi-synchronous replication is on and a replica has everything"
                if armed
                else "semi-synchronous replication is on; no replica has caught up yet"
            )
        if armed != self.armed:
            self.say(("armed: " if armed else "disarmed: ") + reason)
        self.armed, self.arming = armed, reason

    def _manage_semi_sync(self, primary: Observation, seen: dict[str, Observation]) -> None:
        """Patroni's rule: off (asynchronous) only after disarming; on again once a replica caught up."""
        server = self._server(primary.name)
        if primary.semi_sync_on:
            if primary.semi_sync_waiting == 0:
                self.stuck = None
                return
            if self.stuck is None or self.stuck[0] != primary.semi_sync_acknowledged:
                self.stuck = (primary.semi_sync_acknowledged, primary.at)
                return
            # Measured between the primary's own answers: a primary that has stopped answering (dead, under
            # 8 writers) is still "seen" with commits waiting until its poll times out, and that is no
            # replica failing to acknowledge (CI: disarmed 1.5 s after the kill, so no failover at all).
            waited = primary.at - self.stuck[1]
            if waited < self.settings.fallback_after:
                return
            # The answer at hand, not a new call to EC2: the waiting writes must not wait for it too.
            if not self.settings.active_file and self.arbiter and self._lone_and_elsewhere():
                return
            if self.settings.active_file and not (
                self._keepalived_master() and (self.arbiter is None or self.arbiter.holds())
            ):
                return
            # Disarmed first (and said so), then asynchronous: a commit acknowledged without a replica's
            # copy from here on can no longer be lost to an automatic failover.
            self.armed, self.armed_from, self.arming = False, None, ASYNCHRONOUS
            self._write_state(True, "disarmed")
            self._did(
                f"no replica acknowledged {primary.name}'s writes for {waited:.1f} s: automatic failover "
                "disarmed; switching to asynchronous replication (writes go on)"
            )
            self._publish_arming(True)
            self.stuck = None
            try:
                server.query("SET GLOBAL rpl_semi_sync_master_enabled = OFF", timeout=10)
            except Exception as error:  # noqa: BLE001 - seen at the next poll, and done again if needed
                self.say(f"switching {primary.name} to asynchronous replication: {error}")
            return
        # Caught up with where the primary was at the previous poll: under steady writes a replica is
        # always a few transactions behind the very same poll's position.
        caught_up = [
            o.name
            for o in seen.values()
            if o is not primary
            and self._follows(o, primary)
            and o.io_running == "Yes"
            and gtid_reached(o.io_pos, self.previous_primary_position or primary.binlog_pos)
        ]
        if caught_up and primary.at >= self.semi_sync_on_at:  # not an observation from before the last switch
            try:
                server.query("SET GLOBAL rpl_semi_sync_master_enabled = ON")
            except Exception as error:  # noqa: BLE001 - tried again at the next poll
                self.say(f"could not switch {primary.name} to semi-synchronous replication: {error}")
                return
            self.semi_sync_on_at = self.clock()
            self._did(f"semi-synchronous replication on for {primary.name} ({', '.join(caught_up)} caught up)")

    def _follows(self, other: Observation, primary: Observation) -> bool:
        """Replicates from the primary (or is reconnecting to it), without a replication error."""
        return other.source == primary.endpoint and other.replicating and not other.last_sql_errno

    def _primary_of_record(self, seen: dict[str, Observation]) -> Observation | None:
        if self.primary:
            return seen[self.primary]
        followed = [
            name
            for o in seen.values()
            if o.replicating and o.source and (name := self.by_endpoint.get(o.source)) is not None
        ]
        name = max(set(followed), key=followed.count) if followed else self.servers[0].name
        return seen[name]

    # -- actions -----------------------------------------------------------------------------------------

    def _server(self, name: str) -> Server:
        return next(s for s in self.servers if s.name == name)

    def _fence(self, target: Observation, why: str) -> None:
        try:
            self._server(target.name).query("SET GLOBAL read_only = ON")
            self._did(f"fenced {target.name} (read-only): {why}", ("DatabaseAttention", None))
        except Exception as error:  # noqa: BLE001 - tried again at the next poll
            self.say(f"could not fence {target.name}: {error}")

    def _restore(self, record: Observation, seen: dict[str, Observation], acting: bool) -> str:
        """The primary of record answers but is read-only (it restarted, or fenced itself)."""
        self.lost_since = None
        ahead = [
            o.name
            for o in seen.values()
            if o.reachable and o is not record and not gtid_reached(record.current_pos, o.current_pos)
        ]
        if ahead:
            return self._refuse(
                "restore-behind",
                f"{record.name} is read-only and {', '.join(ahead)} have writes it lacks: not making it writable",
                alarm=True,
            )
        if record.source not in (None, record.endpoint) and record.io_running == "Yes":
            return f"{record.name} replicates from {record.master_host}: not the primary"
        unseen = [o.name for o in seen.values() if o is not record and not o.reachable]
        if unseen and self.primary is None:
            # This controller has not seen a primary since it began to decide: one it cannot see may
            # have been promoted before (by the load balancer that decided then).
            return self._refuse(
                "restore-unseen",
                f"{record.name} is read-only and {', '.join(unseen)} do not answer: not making it writable "
                "before this controller has seen every server",
                alarm=True,
            )
        if not acting:
            return f"{record.name} is read-only; the active load balancer restores it"
        if not self._still_the_decider(f"making {record.name} writable"):
            return f"{record.name} is read-only; no longer the active load balancer"
        try:
            self._server(record.name).query("SET GLOBAL read_only = OFF")
        except Exception as error:  # noqa: BLE001 - tried again at the next poll
            return f"could not make {record.name} writable: {error}"
        self._did(f"{record.name} is writable again (the primary, back with everything)")
        return f"restored {record.name}"

    def _semi_sync_off(self, other: Observation) -> None:
        """The primary side of semi-sync belongs on the primary only. A replica (a former primary) with it
        on waits, for every transaction it applies and binlogs, for an acknowledgement no one sends:
        for rpl_semi_sync_master_timeout each (seen in the lab: 190 transactions behind, issue 13)."""
        try:
            server = self._server(other.name)
            self._end_dump_threads(server)  # first: see _end_dump_threads
            server.query("SET GLOBAL rpl_semi_sync_master_enabled = OFF")
            self.say(f"semi-synchronous replication's primary side off on {other.name} (a replica)")
        except Exception as error:  # noqa: BLE001 - tried again at the next poll
            self.say(f"could not switch semi-sync's primary side off on {other.name}: {error}")

    def _end_dump_threads(self, server: Server) -> None:
        """A server made a replica, or promoted, serves no replica at that moment: every binary-log dump
        thread on it is left from an earlier time as primary (its replica cut off, since reconnected
        elsewhere). Ended, and waited for, before semi-sync's primary side is switched around it: in the
        lab one ended later by its replica's reconnection, after semi-sync had been switched off and on,
        hung MariaDB 10.11.19 for good (issue 13). Through mysql.webinfra_end_dump_threads, the one
        thing this user may EXECUTE (webinfra-db-end-dump-threads.sql); raises if some remain."""
        (row,) = server.query("CALL mysql.webinfra_end_dump_threads()")
        if row["ended"]:
            self.say(f"ended {row['ended']} binary-log dump thread(s) left on {server.name}")
        if row["remaining"]:
            raise RuntimeError(f"{row['remaining']} binary-log dump thread(s) on {server.name} did not end")

    def _rejoin(self, other: Observation, primary: Observation) -> None:
        """Point a read-only server that follows no primary at the primary, if it has nothing extra."""
        key = f"diverged:{other.name}"
        if other.last_sql_errno or (other.source == primary.endpoint and other.last_io_errno == 1236):
            errno = other.last_sql_errno or other.last_io_errno
            self._once(key, f"{other.name} cannot replicate from {primary.name} (error {errno}): left out", True)
            return
        extra = writes_not_in(other.binlog_state, primary.binlog_state)
        if extra:
            self._once(
                key,
                f"{other.name} holds writes the primary {primary.name} has not ({', '.join(extra)}): left out "
                "of the rotation, read-only; see the README to resolve",
                alarm=True,
            )
            return
        if other.source == primary.endpoint:
            return  # replicating from the primary, stopped: someone's decision (it is out of the rotation)
        # Only the address changes: the user, password and TLS settings stored with the old replication
        # settings stay (CHANGE MASTER keeps what it is not given). An old primary (pointing at itself)
        # continues from its own history; a replica of another server, from what it applied.
        mode = "slave_pos" if other.source not in (None, other.endpoint) else "current_pos"
        statements = [
            "SET GLOBAL rpl_semi_sync_master_enabled = OFF",
            f"CHANGE MASTER TO MASTER_HOST = '{primary.address}', MASTER_PORT = {primary.port}, "
            f"MASTER_USE_GTID = {mode}, MASTER_HEARTBEAT_PERIOD = {self.settings.heartbeat_period}",
            "START SLAVE",
        ]
        try:
            server = self._server(other.name)
            server.query("STOP SLAVE")
            self._end_dump_threads(server)
            for statement in statements:
                server.query(statement)
        except Exception as error:  # noqa: BLE001 - tried again at the next poll
            self.say(f"could not point {other.name} at {primary.name}: {error}")
            return
        self._clear(key)
        self.changed_at = self.clock()
        self._did(f"{other.name} now replicates from {primary.name}")

    def _failover(self, old: Observation, replicas: list[Observation]) -> str:
        unseen = [o.name for o in self.observations.values() if o is not old and not o.reachable]
        if unseen:
            # A write acknowledged by the one replica that does not answer would be lost.
            return self._refuse(
                "unseen",
                f"the primary {old.name} is down, but {', '.join(unseen)} do not answer either: "
                "no automatic failover (one of them may hold the only copy of a write)",
                alarm=True,
            )
        started = self.clock()
        unanswered = started - (self.lost_since if self.lost_since is not None else started)
        self.say(
            f"the primary {old.name} is down ({old.error}), unanswered for {unanswered:.1f} s; every replica "
            "agrees; failing over"
        )
        locked: list[Server] = []
        promoted = False
        try:
            for replica in sorted(replicas, key=lambda o: o.name):
                server = self._server(replica.name)
                if not server.query(f"SELECT GET_LOCK('{LOCK}', 0) AS got")[0]["got"]:
                    return f"another controller is failing over ({replica.name} is locked)"
                locked.append(server)
            # Every replica at once: an I/O thread may be blocked on the dead primary's socket, and stopping
            # it can take seconds (two, in the lab), each.
            with concurrent.futures.ThreadPoolExecutor(len(locked)) as pool:
                drained = list(pool.map(self._stop_and_drain, locked))
            usable = [o for o in drained if o is not None]
            if len(usable) < len(drained):
                return self._refuse(
                    "drain", "a replica did not finish applying what it received: no automatic failover", alarm=True
                )
            order = {name: index for index, (name, _, _) in enumerate(self.settings.servers)}
            candidate = max(usable, key=lambda o: (sequence(o.current_pos), -order[o.name]))
            if not gtid_reached(candidate.current_pos, self.primary_position):
                return self._refuse(
                    "behind",
                    f"the most advanced replica {candidate.name} ({candidate.current_pos}) lacks the primary's "
                    f"last position seen here ({self.primary_position}): no automatic failover",
                    alarm=True,
                )
            for server in locked:  # every one is about to be a replica or the new primary
                self._end_dump_threads(server)
            if not self._still_the_decider(f"promoting {candidate.name}"):
                return "not failing over: not confirmed as the load balancer that decides"
            promoted = True  # from here on, the replicas are pointed at the candidate
            new = self._server(candidate.name)
            # Not replicating any more, yet the stored replication settings (user, password, TLS) stay,
            # pointed at itself, for the day it is made a replica again.
            new.query("STOP SLAVE")
            new.query(
                f"CHANGE MASTER TO MASTER_HOST = '{candidate.address}', MASTER_PORT = {candidate.port}, "
                "MASTER_USE_GTID = current_pos"
            )
            if len(locked) > 1:  # replicas will follow it: every commit waits for one (armed again once caught up)
                new.query("SET GLOBAL rpl_semi_sync_master_enabled = ON")
            new.query("SET GLOBAL read_only = OFF")
            for other in locked:
                if other is new:
                    continue
                other.query("STOP SLAVE")
                other.query("SET GLOBAL rpl_semi_sync_master_enabled = OFF")
                other.query(
                    f"CHANGE MASTER TO MASTER_HOST = '{candidate.address}', MASTER_PORT = {candidate.port}, "
                    f"MASTER_USE_GTID = slave_pos, MASTER_HEARTBEAT_PERIOD = {self.settings.heartbeat_period}"
                )
                other.query("START SLAVE")
        finally:
            if promoted:  # observations made before this are of the cluster before the change
                self.changed_at = self.clock()
            for server in locked:
                with contextlib.suppress(Exception):
                    if not promoted:  # refused or failed before promoting: as they were
                        server.query("START SLAVE IO_THREAD")
                    server.query(f"SELECT RELEASE_LOCK('{LOCK}')")
        self.primary, self.lost_since, self.armed, self.armed_from = candidate.name, None, False, None
        self.changed_at = self.clock()
        self.arming = "the new primary has not been seen with an acknowledging replica yet"
        self._did(
            f"failed over from {old.name} to {candidate.name} at {candidate.current_pos} in "
            f"{self.clock() - started:.1f} s (the old primary stopped answering: {old.error})",
            ("BecamePrimary", candidate.name),
        )
        return f"failed over to {candidate.name}"

    def _stop_and_drain(self, server: Server) -> Observation | None:
        server.query("STOP SLAVE IO_THREAD", timeout=self.settings.drain_timeout)
        return self._drain(server)

    def _drain(self, server: Server) -> Observation | None:
        deadline = self.clock() + self.settings.drain_timeout
        while True:
            seen = server.observe(self.clock())
            if seen.last_sql_errno or (seen.sql_running != "Yes" and not applied_all(seen)):
                self.say(f"{server.name} cannot apply its relay log (error {seen.last_sql_errno}): not a candidate")
                return None
            if seen.reachable and applied_all(seen):
                return seen
            if self.clock() > deadline:
                self.say(
                    f"{server.name} did not apply its relay log within {self.settings.drain_timeout:.0f} s "
                    f"(reachable {seen.reachable} {seen.error}; SQL thread {seen.sql_running} {seen.sql_state!r}; "
                    f"applied {seen.current_pos}, received {seen.io_pos}; I/O thread {seen.io_running})"
                )
                return None
            time.sleep(0.05)

    # -- state file --------------------------------------------------------------------------------------

    def _write_state(self, acting: bool, verdict: str) -> None:
        if not self.settings.state_file:
            return
        state = {
            "active": acting,
            "primary": self.primary,
            "armed": self.armed,
            "arming": self.arming,
            "verdict": verdict,
            "servers": {
                name: {
                    "reachable": o.reachable,
                    "read_only": o.read_only,
                    "gtid": o.current_pos,
                    "replicates_from": self.by_endpoint.get(o.source, o.master_host) if o.source else None,
                    "io": o.io_running,
                    **({"error": o.error} if o.error else {}),
                }
                for name, o in self.observations.items()
            },
            "events": self.events,
        }
        path = pathlib.Path(self.settings.state_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = path.with_suffix(".new")
        candidate.write_text(json.dumps(state, indent=1) + "\n")
        candidate.replace(path)

    def stop(self) -> None:
        """Stop watching and close every connection (tests; a controller going away)."""
        for server in self.servers:
            server.close()

    def run(self) -> None:
        self.say(f"watching {', '.join(name for name, _, _ in self.settings.servers)}")
        while True:
            started = self.clock()
            try:
                verdict = self.step()
                self._once(f"verdict:{verdict}", verdict)
                self.said = {k for k in self.said if not k.startswith("verdict:") or k == f"verdict:{verdict}"}
            except Exception as error:  # noqa: BLE001 - the controller must outlive anything; logged
                self.say(f"poll failed: {type(error).__name__}: {error}")
            time.sleep(max(0.0, self.settings.interval - (self.clock() - started)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--servers", help="with --check-config: this servers file in place of the configured one")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="read the configuration, say what it holds and exit (webinfra-config-sync runs this on a new one)",
    )
    args = parser.parse_args(argv)
    if args.check_config:
        checked = args.config + (f" with the servers in {args.servers}" if args.servers else "")
        try:
            settings = Settings.load(args.config, args.servers)
            names = [name for name, _, _ in settings.servers]
            if not names or len(set(names)) != len(names):
                raise ValueError(f"servers must be named once each, got {names}")
        except (OSError, ValueError, TypeError, KeyError) as error:
            print(f"webinfra-failover: {checked}: {type(error).__name__}: {error}", file=sys.stderr)
            return 2
        print(f"webinfra-failover: {checked}: {len(names)} servers ({', '.join(names)})")
        return 0
    Controller(Settings.load(args.config)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
