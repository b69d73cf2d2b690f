"""The fixed settings of the servers' software (server-defaults.yaml), loaded and checked once.

One typed section per program. The loader refuses a table with a setting missing, unknown or of the
wrong type, durations or sizes the servers would not read, numbers outside what the server accepts,
and settings that contradict each other, naming each setting; the templates
read the sections as `haproxy.…`, `nginx.…` (provisioning/render.py passes them to every template).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from settings import MAX_WEB_COUNT

DEFAULTS_FILE = pathlib.Path(__file__).resolve().parent / "server-defaults.yaml"

# What HAProxy and nginx both read the same way: a whole number and a unit.
_DURATION = re.compile(r"^[0-9]+(ms|s|m)$")
# gunicorn takes whole seconds (the template writes the number), and 0 would turn its timeout off.
_WHOLE_SECONDS = re.compile(r"^[1-9][0-9]*s$")
_SIZE = re.compile(r"^[0-9]+[km]?$")

# Written out at each field (`field(metadata=DURATION)`), so that type checkers see a field without a default.
DURATION = {"format": ("a duration such as 500ms, 10s or 1m", _DURATION)}
WHOLE_SECONDS = {"format": ("whole seconds, at least 1, such as 30s", _WHOLE_SECONDS)}
SIZE = {"format": ("a size such as 16k", _SIZE)}
PORT = {"range": (1, 65535)}
# The load balancer's other listeners: HTTP, HTTPS and certbot's ACME answerer (render.ACME_PORT).
LB_PORTS_TAKEN = (80, 443, 8888)
# The app's QUERY_TIMEOUT_SECONDS (app/webinfra_app.py, which the hosts run; tests/app checks they agree).
APP_QUERY_TIMEOUT_SECONDS = 3
# How often webinfra-db-end-dead-streams looks for replication streams to replicas that no longer answer.
DEAD_STREAM_CHECK_SECONDS = 0.5


def seconds(duration: str) -> float:
    """500ms → 0.5, 10s → 10.0, 1m → 60.0."""
    if duration.endswith("ms"):
        return float(duration[:-2]) / 1000
    return float(duration[:-1]) * (60 if duration.endswith("m") else 1)


@dataclass(frozen=True)
class HaproxyDefaults:
    global_maxconn: int
    frontend_maxconn: int
    max_connections_per_client: int
    client_table_size: str = field(metadata=SIZE)
    client_table_expire: str = field(metadata=DURATION)
    timeout_connect: str = field(metadata=DURATION)
    timeout_client: str = field(metadata=DURATION)
    timeout_server: str = field(metadata=DURATION)
    timeout_server_read: str = field(metadata=DURATION)
    timeout_http_request: str = field(metadata=DURATION)
    timeout_http_keep_alive: str = field(metadata=DURATION)
    timeout_queue: str = field(metadata=DURATION)
    timeout_stats: str = field(metadata=DURATION)
    retries: int
    hsts_max_age: int
    health_check_host: str
    stats_port: int = field(metadata=PORT)
    stats_refresh: str = field(metadata=DURATION)


_COLON_LIST = re.compile(r"^[A-Za-z0-9_-]+(:[A-Za-z0-9_-]+)*$")
COLON_LIST = {"format": ("a list of names joined by colons", _COLON_LIST)}


@dataclass(frozen=True)
class HaproxyTlsDefaults:
    min_version: str = field(metadata={"format": ("TLSv1.2 or TLSv1.3", re.compile(r"^TLSv1\.[23]$"))})
    ciphers: str = field(metadata=COLON_LIST)
    ciphersuites: str = field(metadata=COLON_LIST)
    curves: str = field(metadata=COLON_LIST)


@dataclass(frozen=True)
class HealthCheck:
    """HAProxy's checks of each web server: a dead server is out of rotation in about `detect_seconds`."""

    inter: str = field(metadata=DURATION)
    fastinter: str = field(metadata=DURATION)
    downinter: str = field(metadata=DURATION)
    timeout: str = field(metadata=DURATION)
    fall: int
    rise: int
    # Passive checks too: connection errors on live traffic switch the server to fastinter at once.
    observe: bool
    error_limit: int

    @classmethod
    def haproxy_defaults(cls) -> HealthCheck:
        """What `check` alone gives (inter 2s, fall 3, rise 2; the check timeout is inter; no
        passive checks, whose error-limit would be 10): for comparison."""
        return cls(
            inter="2s", fastinter="2s", downinter="2s", timeout="2s", fall=3, rise=2, observe=False, error_limit=10
        )

    @property
    def detect_seconds(self) -> float:
        # Worst case: a full interval before the first failing check, then each failing check
        # waits for its timeout, with fastinter between them.
        return round(
            seconds(self.inter) + self.fall * seconds(self.timeout) + (self.fall - 1) * seconds(self.fastinter), 2
        )


@dataclass(frozen=True)
class NginxDefaults:
    client_max_body_size: str = field(metadata=SIZE)
    client_header_timeout: str = field(metadata=DURATION)
    client_body_timeout: str = field(metadata=DURATION)
    proxy_connect_timeout: str = field(metadata=DURATION)
    proxy_read_timeout: str = field(metadata=DURATION)


@dataclass(frozen=True)
class GunicornDefaults:
    workers: int
    threads: int
    writes_at_once: int
    timeout: str = field(metadata=WHOLE_SECONDS)
    graceful_timeout: str = field(metadata=WHOLE_SECONDS)

    @property
    def timeout_seconds(self) -> int:
        return round(seconds(self.timeout))

    @property
    def graceful_timeout_seconds(self) -> int:
        return round(seconds(self.graceful_timeout))


@dataclass(frozen=True)
class MariadbDefaults:
    binlog_expire_seconds: int
    semi_sync_timeout_ms: int
    backup_hour_utc: int = field(metadata={"range": (0, 23)})
    backup_stagger_minutes: int = field(metadata={"range": (1, 60)})
    backup_fresh_hours: int = field(metadata={"range": (1, 23)})
    backup_alarm_after_hours: int = field(metadata={"range": (25, 168)})
    binlog_ship_interval: str = field(metadata=DURATION)


@dataclass(frozen=True)
class FailoverDefaults:
    poll_interval: str = field(metadata=DURATION)
    self_fence_after: str = field(metadata=DURATION)
    failure_after: str = field(metadata=DURATION)
    silence_after: str = field(metadata=DURATION)
    heartbeat_period: str = field(metadata=DURATION)
    replica_net_timeout: str = field(metadata=WHOLE_SECONDS)
    dead_stream_after: str = field(metadata=DURATION)
    fallback_after: str = field(metadata=DURATION)
    drain_timeout: str = field(metadata=DURATION)
    arbiter_interval: str = field(metadata=DURATION)
    arbiter_call_timeout: str = field(metadata=DURATION)
    arbiter_valid_for: str = field(metadata=DURATION)
    takeover_after: str = field(metadata=DURATION)
    orphan_reads: str = field(metadata=DURATION)


@dataclass(frozen=True)
class KeepalivedDefaults:
    advert_interval: int = field(metadata={"range": (1, 255)})  # VRRPv2: whole seconds in one byte
    check_interval: int
    check_timeout: int
    check_request_timeout: int
    check_fall: int
    check_rise: int
    router_id: int = field(metadata={"range": (1, 255)})
    priority_lb_01: int = field(metadata={"range": (1, 254)})  # 255 is the address owner's, which neither is
    priority_lb_02: int = field(metadata={"range": (1, 254)})


@dataclass(frozen=True)
class ServerDefaults:
    haproxy: HaproxyDefaults
    haproxy_tls: HaproxyTlsDefaults
    haproxy_health_check: HealthCheck
    nginx: NginxDefaults
    gunicorn: GunicornDefaults
    mariadb: MariadbDefaults
    failover: FailoverDefaults
    keepalived: KeepalivedDefaults

    def for_templates(self) -> dict[str, object]:
        """The sections by name, as the templates read them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


class ServerDefaultsError(ValueError):
    pass


def _section(cls: type, name: str, raw: object, problems: list[str]) -> Any:
    if not isinstance(raw, dict):
        problems.append(f"{name}: a section of settings is expected")
        return None
    types = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for unknown in sorted(set(raw) - set(known)):
        problems.append(f"{name}.{unknown}: unknown setting (known: {', '.join(known)})")
    values = {}
    for key, spec in known.items():
        setting = f"{name}.{key}"
        entry = raw.get(key)
        if entry is None:
            problems.append(f"{setting}: missing")
            continue
        if not isinstance(entry, dict) or set(entry) != {"value", "why"}:
            problems.append(f"{setting}: write it as `value` and `why`, nothing else")
            continue
        value, why = entry["value"], entry["why"]
        if not isinstance(why, str) or len(why.split()) < 3:
            problems.append(f"{setting}: `why` must say why, in words")
        expected = types[key]
        if type(value) is not expected:  # exact: a bool is no int here, and 10 is no duration
            problems.append(f"{setting}: {value!r} is not a {expected.__name__}")
            continue
        if expected is int and value <= 0:
            problems.append(f"{setting}: {value} must be above 0")
        if "range" in spec.metadata and not spec.metadata["range"][0] <= value <= spec.metadata["range"][1]:
            low, high = spec.metadata["range"]
            problems.append(f"{setting}: {value} is outside {low}-{high}")
        if "format" in spec.metadata:
            description, pattern = spec.metadata["format"]
            if not pattern.match(value):
                problems.append(f"{setting}: {value!r} is not {description}")
        values[key] = value
    return cls(**values) if len(values) == len(known) else None


def load(path: pathlib.Path = DEFAULTS_FILE) -> ServerDefaults:
    """The table, checked: every problem in it is named at once (ServerDefaultsError)."""
    raw = yaml.safe_load(path.read_text())
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ServerDefaultsError(f"{path.name}: a table of sections is expected")
    hints = typing.get_type_hints(ServerDefaults)
    sections = {f.name: hints[f.name] for f in dataclasses.fields(ServerDefaults)}
    for unknown in sorted(set(raw) - set(sections)):
        problems.append(f"{unknown}: unknown section (known: {', '.join(sections)})")
    loaded = {name: _section(cls, name, raw.get(name, {}), problems) for name, cls in sections.items()}
    if not problems:
        problems += _contradictions(ServerDefaults(**loaded))
    if problems:
        raise ServerDefaultsError(f"{path.name}: " + "; ".join(problems))
    return ServerDefaults(**loaded)


def _contradictions(table: ServerDefaults) -> list[str]:
    """Settings that are each valid but wrong together."""
    haproxy, nginx, gunicorn, keepalived = table.haproxy, table.nginx, table.gunicorn, table.keepalived
    failover = table.failover
    rules = [
        (
            seconds(haproxy.client_table_expire) > 10,
            "haproxy.client_table_expire must be over the 10 s the rate limit counts requests in",
        ),
        (
            seconds(haproxy.timeout_server_read) < seconds(haproxy.timeout_server),
            "haproxy.timeout_server_read must be below timeout_server (reads are the ones that can be replayed)",
        ),
        (haproxy.stats_port not in LB_PORTS_TAKEN, f"haproxy.stats_port must not be one of {LB_PORTS_TAKEN}"),
        (
            gunicorn.writes_at_once < gunicorn.threads,
            "gunicorn.writes_at_once must be below gunicorn.threads (writes must leave threads for reads)",
        ),
        (
            seconds(nginx.proxy_read_timeout) >= seconds(gunicorn.timeout),
            "nginx.proxy_read_timeout must be at least gunicorn.timeout (nginx would give up on a live worker)",
        ),
        (
            keepalived.check_request_timeout < keepalived.check_timeout,
            "keepalived.check_request_timeout must be below check_timeout (the request's own verdict comes first)",
        ),
        (
            seconds(failover.failure_after) > seconds(failover.self_fence_after) + 2 * seconds(failover.poll_interval),
            "failover.failure_after must exceed self_fence_after by two polls (a cut-off primary must have "
            "fenced itself before another is promoted)",
        ),
        (
            seconds(failover.heartbeat_period) * 2 <= seconds(failover.silence_after),
            "failover.silence_after must be at least two heartbeat_periods (an idle primary is not a dead one)",
        ),
        (
            seconds(failover.fallback_after) * 1000 < table.mariadb.semi_sync_timeout_ms,
            "failover.fallback_after must be below mariadb.semi_sync_timeout_ms (the controller disarms failover "
            "before the server falls back to asynchronous replication on its own)",
        ),
        (
            table.mariadb.semi_sync_timeout_ms / 1000 < seconds(failover.failure_after),
            "mariadb.semi_sync_timeout_ms must be below failover.failure_after (a cut-off primary's waiting commit, "
            "and so its self-fence, must end before another server is promoted)",
        ),
        (
            seconds(failover.arbiter_valid_for)
            >= 2 * seconds(failover.arbiter_interval) + 2 * seconds(failover.arbiter_call_timeout),
            "failover.arbiter_valid_for must be at least two arbiter_intervals and a call's two timeouts (one "
            "lost answer must not stop the load balancer that decides)",
        ),
        (
            seconds(failover.takeover_after) > seconds(failover.arbiter_valid_for),
            "failover.takeover_after must exceed arbiter_valid_for (the previous holder of the Elastic IP must "
            "have stopped deciding before the next one starts)",
        ),
        (
            seconds(failover.fallback_after) + 2 * seconds(failover.poll_interval) < APP_QUERY_TIMEOUT_SECONDS,
            "failover.fallback_after plus two poll_intervals must be below the app's query timeout "
            f"({APP_QUERY_TIMEOUT_SECONDS} s): a write waiting while a replica is lost must be acknowledged "
            "before the app gives up on it",
        ),
        (
            seconds(failover.heartbeat_period) < seconds(failover.replica_net_timeout),
            "failover.heartbeat_period must be below replica_net_timeout (MariaDB refuses it otherwise)",
        ),
        (
            seconds(failover.heartbeat_period) * 2 <= seconds(failover.dead_stream_after),
            "failover.dead_stream_after must be at least two heartbeat_periods (a live replica's stream is "
            "idle between heartbeats)",
        ),
        (
            seconds(failover.dead_stream_after) + DEAD_STREAM_CHECK_SECONDS + seconds(failover.heartbeat_period)
            < seconds(failover.replica_net_timeout),
            "failover.dead_stream_after plus a heartbeat_period and the check's interval "
            f"({DEAD_STREAM_CHECK_SECONDS:g} s) must be below replica_net_timeout: a replica cut off must find "
            "its dead stream ended when it reconnects",
        ),
        (
            table.mariadb.backup_fresh_hours * 60 + table.mariadb.backup_stagger_minutes * (MAX_WEB_COUNT - 1)
            < 24 * 60,
            "mariadb.backup_fresh_hours plus every server's turn (backup_stagger_minutes apart, up to "
            f"{MAX_WEB_COUNT} servers) must be under a day: the next day's first turn must back up again",
        ),
        (
            table.mariadb.backup_alarm_after_hours * 60
            > 24 * 60 + table.mariadb.backup_stagger_minutes * (MAX_WEB_COUNT - 1),
            "mariadb.backup_alarm_after_hours must exceed a day plus every server's turn (backup_stagger_minutes "
            f"apart, up to {MAX_WEB_COUNT} servers): a backup taken at the last turn is on schedule",
        ),
        (
            1 <= seconds(table.mariadb.binlog_ship_interval) <= 30,
            "mariadb.binlog_ship_interval must be 1 s to 30 s: a whole-stack loss may cost one interval of "
            "writes and an upload, and the stack promises at most a minute",
        ),
        (
            keepalived.priority_lb_01 != keepalived.priority_lb_02,
            "keepalived.priority_lb_01 and priority_lb_02 must differ (the first election needs a winner)",
        ),
    ]
    return [message for holds, message in rules if not holds]


SERVER_DEFAULTS = load()
