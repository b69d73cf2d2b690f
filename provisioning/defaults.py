"""The fixed settings of the servers' software (server-defaults.yaml), loaded and checked once.

One typed section per program. The loader refuses a table with a setting missing, unknown or of the
wrong type, and durations or sizes the servers would not read, naming the setting; the templates
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

DEFAULTS_FILE = pathlib.Path(__file__).resolve().parent / "server-defaults.yaml"

# What HAProxy, nginx and gunicorn's template all read the same way (gunicorn's are turned into
# seconds by the template): a whole number and a unit.
_DURATION = re.compile(r"^[0-9]+(ms|s)$")
_SIZE = re.compile(r"^[0-9]+[km]?$")


# Written out at each field (`field(metadata=DURATION)`), so that type checkers see a field without a default.
DURATION = {"format": ("a duration such as 500ms or 10s", _DURATION)}
SIZE = {"format": ("a size such as 16k", _SIZE)}


def seconds(duration: str) -> float:
    """500ms → 0.5, 10s → 10.0."""
    return float(duration[:-2]) / 1000 if duration.endswith("ms") else float(duration[:-1])


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
    timeout_http_request: str = field(metadata=DURATION)
    timeout_http_keep_alive: str = field(metadata=DURATION)
    timeout_queue: str = field(metadata=DURATION)
    timeout_stats: str = field(metadata=DURATION)
    retries: int
    hsts_max_age: int
    health_check_host: str
    stats_port: int
    stats_refresh: str = field(metadata=DURATION)


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
    timeout: str = field(metadata=DURATION)
    graceful_timeout: str = field(metadata=DURATION)

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


@dataclass(frozen=True)
class KeepalivedDefaults:
    advert_interval: int
    check_interval: int
    check_timeout: int
    check_fall: int
    check_rise: int
    router_id: int
    priority_lb_01: int
    priority_lb_02: int


@dataclass(frozen=True)
class ServerDefaults:
    haproxy: HaproxyDefaults
    haproxy_health_check: HealthCheck
    nginx: NginxDefaults
    gunicorn: GunicornDefaults
    mariadb: MariadbDefaults
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
    if problems:
        raise ServerDefaultsError(f"{path.name}: " + "; ".join(problems))
    return ServerDefaults(**loaded)


SERVER_DEFAULTS = load()
