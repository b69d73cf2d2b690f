"""The fault matrix of scripts/bench: each fault injected into a running lab under a constant load of
readers and writers from the lab's internet, then what clients saw and how long until it healed.

For every fault: the lab is first checked healthy (lab/health.py; repaired if not, and the row says so),
readers (20 GET/s, 8 concurrent) and writers (5 POST/s, 2 concurrent) start, each client with a 3 s
timeout; at 5 s the fault is injected; a fault that needs a person (a host powered off or cut off) is
undone after a set time, a crash must heal by itself. Then: requests sent, failed (a 429 is counted
apart), the slowest read, the time from the fault until the lab is healthy again, and writes lost (an
acknowledged write missing from the primary: must be 0).

Bounded: every load has a fixed duration and count; a fault that has not healed after its bound is
reported as such (and the lab repaired before the next one).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from lab import cli, health, loadgen, network
from lab.loadgen import stream_from_client
from provisioning.defaults import HealthCheck

CA = "/var/lib/webinfra-lab/lb-certificate.pem"
READ_RATE, WRITE_RATE, CLIENT_TIMEOUT = 20, 5, 3
FAULT_AT = 5  # seconds into the load
HEAL_WITHIN = 300  # seconds after the fault (or after it was undone) before it counts as not healed


def _hosts(role: str, db_role: str | None = None) -> list[str]:
    return [
        h["name"]
        for h in cli.status_report()["hosts"]
        if h["role"] == role and (db_role is None or h["db_role"] == db_role)
    ]


def _guest(name: str, *command: str) -> str:
    from lab import hosts as lab_hosts

    result = lab_hosts.guest_command(cli.load_state().host(name), list(command), timeout=60)
    return result.stdout + result.stderr


def _active_lb() -> str:
    report = cli.status_report()
    return report["floating_address_holder"] or _hosts("lb")[0]


def _crash(service: str) -> Callable[[str], None]:
    """SIGKILL to every process of the service (as a crash: no clean shutdown); systemd must restart it."""

    def inject(host: str) -> None:
        _guest(host, "systemctl", "kill", "--signal=SIGKILL", f"{service}.service")

    return inject


def _lab(command: str, name: str) -> None:
    """As `scripts/lab kill|start|blackhole|heal HOST` does it (the CLI's own functions)."""
    if command == "kill":
        cli.kill(name)
    elif command == "start":
        cli.start(name)
    else:
        cli.blackhole(name, on=command == "blackhole")


def _by_lab(command: str) -> Callable[[str], None]:
    return lambda host: _lab(command, host)


@dataclass(frozen=True)
class Fault:
    name: str
    pick: Callable[[], str]  # the host it hits, chosen before the fault's time starts
    inject: Callable[[str], None]
    undo: Callable[[str], None] | None = None  # None: it must heal by itself
    undo_after: float = 10.0  # seconds from the fault
    load_seconds: float = 30.0


def _writable(host: str) -> bool:
    return _guest(host, "mariadb", "-N", "-B", "-e", "SELECT @@global.read_only").strip() == "0"


def _primary() -> str:
    """The database primary now (the writable server): an earlier fault may have failed it over, so the
    first boot's roles (`lab status`'s db column) are not asked."""
    writable = [h for h in _hosts("web") if _writable(h)]
    return writable[0] if writable else _hosts("web", "primary")[0]


def _replica() -> str:
    primary = _primary()
    return [h for h in _hosts("web") if h != primary][-1]


def _freeze_mariadb(host: str) -> None:
    """SIGSTOP to MariaDB's server: alive to the kernel (connections accepted, never answered), deaf."""
    _guest(host, "pkill", "-STOP", "-x", "mariadbd")


def _thaw_mariadb(host: str) -> None:
    _guest(host, "pkill", "-CONT", "-x", "mariadbd")


def _reboot(host: str) -> None:
    _guest(host, "systemctl", "reboot")


def install_haproxy_config(rate_limit_per_10s: int, check: HealthCheck | None = None) -> None:
    """HAProxy with this rate limit (and, given, these health checks), by the program's own renderers. The
    rate limit the way the stack changes it on a running lab: the runtime file's SSM parameter in the AWS
    API stand-in, then the sync unit started on every load balancer (as its timer starts it), which
    validates and reloads gracefully. Health checks are in the configuration a load balancer boots with
    (a change replaces it on AWS): the benchmark writes it in place, checks it and reloads."""
    from lab import hosts as lab_hosts
    from provisioning.render import (
        HAPROXY_CONFIG,
        HAPROXY_RUNTIME,
        Backend,
        encode_config,
        haproxy_config,
        haproxy_runtime_config,
    )

    plan = cli.load_state()
    status = cli.status_report()
    backends = [Backend(h["name"], h["address"]) for h in status["hosts"] if h["role"] == "web"]
    if check is not None:
        for lb in _hosts("lb"):
            host = plan.host(lb)
            lab_hosts.guest_command(host, ["tee", HAPROXY_CONFIG], input=haproxy_config(check=check), check=True)
            lab_hosts.guest_command(
                host, ["haproxy", "-c", "-q", "-f", HAPROXY_CONFIG, "-f", HAPROXY_RUNTIME], check=True
            )
            lab_hosts.guest_command(host, ["systemctl", "reload", "haproxy"], timeout=60, check=True)
    name = f"/webinfra/{plan.stack}/config/haproxy-runtime.cfg"
    runtime = haproxy_runtime_config(backends, rate_limit_per_10s)[0]
    result = cli.aws_api(plan, "put-parameter", name, input=encode_config(runtime))
    if result.returncode != 0:
        raise RuntimeError(f"put-parameter {name} failed: {result.stderr}")
    for lb in _hosts("lb"):
        lab_hosts.guest_command(
            plan.host(lb), ["systemctl", "start", "webinfra-config-sync.service"], timeout=120, check=True
        )
    time.sleep(3)


BENCH_RATE_LIMIT = 100000  # the benchmark's loads all come from one client address


def _client() -> str:
    return "(the client)"


def _burst(_: str) -> None:
    """The stack's default rate limit (Pulumi.yaml) for the time of a burst of 900 requests, 16 at a time,
    from the same client address as the load."""
    from settings import project_defaults

    install_haproxy_config(int(project_defaults()["rateLimitPer10s"]))
    url = cli.status_report()["url"]
    burst = subprocess.run(
        [
            *("ip", "netns", "exec", network.CLIENT_NS),
            *loadgen.command(url + "health", 900, duration=60, timeout=CLIENT_TIMEOUT, concurrency=16, cacert=CA),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    statuses = json.loads(burst.stdout)["statuses"]
    _NOTES.append(
        f"the burst itself: {statuses} (429: over the limit, as meant); the readers and writers share its client "
        "address, so they are limited too while it lasts"
    )


_NOTES: list[str] = []  # what a fault's injection has to say, taken into its row


FAULTS = [
    Fault("web server (replica) killed", _replica, _by_lab("kill"), _by_lab("start")),
    Fault("web server (replica) black-holed", _replica, _by_lab("blackhole"), _by_lab("heal")),
    Fault("nginx crashed (a web server)", _replica, _crash("nginx")),
    Fault("gunicorn crashed (a web server)", _replica, _crash("webinfra-app")),
    Fault("MariaDB crashed (the primary)", _primary, _crash("mariadb")),
    Fault("HAProxy crashed (the active load balancer)", _active_lb, _crash("haproxy")),
    Fault("keepalived crashed (the active load balancer)", _active_lb, _crash("keepalived")),
    Fault(
        "replica stopped 5 minutes under writes",
        _replica,
        _by_lab("kill"),
        _by_lab("start"),
        undo_after=300,
        load_seconds=320,
    ),
    Fault("primary rebooted", _primary, _reboot),
    # Automatic failover (issue 13): the controller promotes the replica; the old primary rejoins.
    Fault("primary killed", _primary, _by_lab("kill"), _by_lab("start")),
    Fault("primary black-holed", _primary, _by_lab("blackhole"), _by_lab("heal")),
    Fault("primary's MariaDB frozen 15 s (SIGSTOP, then SIGCONT)", _primary, _freeze_mariadb, _thaw_mariadb, 15),
    Fault("active load balancer killed", _active_lb, _by_lab("kill"), _by_lab("start")),
    Fault("active load balancer black-holed", _active_lb, _by_lab("blackhole"), _by_lab("heal")),
    Fault(
        "a burst over the rate limit (900 requests, 16 at a time)",
        _client,
        _burst,
        lambda _: install_haproxy_config(BENCH_RATE_LIMIT),
        undo_after=15,
    ),
]


def _lost_writes(acknowledged: list[int]) -> dict[str, int]:
    """Acknowledged writes missing, on every database (a replica that missed some counts too)."""
    if not acknowledged:
        return {}
    ids = ",".join(map(str, acknowledged))
    missing = {}
    for host in _hosts("web"):
        found = _guest(host, "mariadb", "-N", "-B", "-e", f"SELECT COUNT(*) FROM webinfra.messages WHERE id IN ({ids})")
        missing[host] = len(acknowledged) - int(found.split()[0])
    return missing


class _HealthWatch:
    """Samples the lab's health about every second from the fault on, in the background, to tell when it
    was healthy again for good (and after the fault was undone)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                healthy = not health.problems()
            except Exception:  # noqa: BLE001 - a host stopping under the check is an unhealthy sample, not an end
                healthy = False
            # the sample's time is when its answer was complete (a check takes a second or two)
            self.samples.append((time.monotonic(), healthy))
            self._stop.wait(max(0.0, 1.0 - (time.monotonic() - began)))

    def __enter__(self) -> _HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def interval(self) -> float:
        times = [t for t, _ in self.samples]
        return (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.0

    def healed_at(self, not_before: float) -> float | None:
        # healed: the start of the healthy run that lasted to the end (a flap back does not count)
        unhealthy = [t for t, healthy in self.samples if not healthy]
        after = max([not_before, *unhealthy[-1:]])
        return next((t for t, healthy in self.samples if healthy and t > after), None)


def measure(fault: Fault, quick: bool = False) -> dict:
    """One row of the matrix."""
    notes = []
    if found := health.problems():
        notes.append(f"unhealthy before: {'; '.join(found)}; repaired: {', '.join(health.repair())}")
        health.wait_healthy(HEAL_WITHIN, every=2)
    load_seconds = min(fault.load_seconds, 40) if quick else fault.load_seconds
    undo_after = min(fault.undo_after, 20) if quick else fault.undo_after
    url = cli.status_report()["url"]
    began = time.monotonic()
    reads = stream_from_client(url, READ_RATE, int(load_seconds), timeout=CLIENT_TIMEOUT, cacert=CA)
    writes = stream_from_client(
        url + "api/messages",
        WRITE_RATE,
        int(load_seconds),
        timeout=CLIENT_TIMEOUT,
        cacert=CA,
        concurrency=2,
        write=True,
    )
    host = fault.pick()
    time.sleep(max(0.0, began + FAULT_AT - time.monotonic()))
    fault_at = time.monotonic()
    with _HealthWatch() as watch:
        fault.inject(host)
        injected_at = time.monotonic()
        if fault.undo:
            time.sleep(max(0.0, fault_at + undo_after - time.monotonic()))
            fault.undo(host)
        undone_at = time.monotonic()
        read_report = json.loads(reads.communicate(timeout=load_seconds + 60)[0])
        write_report = json.loads(writes.communicate(timeout=load_seconds + 60)[0])
        _, still = health.wait_healthy(HEAL_WITHIN, every=1)
    notes += _NOTES
    _NOTES.clear()
    healed_at = watch.healed_at(not_before=undone_at if fault.undo else injected_at)
    if still:
        notes.append(f"not healthy {HEAL_WITHIN} s after: {'; '.join(still)}; repaired: {', '.join(health.repair())}")
        health.wait_healthy(HEAL_WITHIN, every=2)
    since = fault_at - began
    ok = {200, 201}
    records = read_report["records"] + write_report["records"]
    acknowledged = [r["id"] for r in write_report["records"] if r["status"] == 201]
    lost, primary = _lost_writes(acknowledged), _primary()
    slowest = max((r["latency"] for r in read_report["records"] if r["t"] + r["latency"] >= since), default=0.0)
    return {
        "fault": fault.name,
        "host": host,
        "requests": len(records),
        "failed_reads": sum(1 for r in read_report["records"] if r["status"] not in ok | {429}),
        "failed_writes": sum(1 for r in write_report["records"] if r["status"] not in ok | {429}),
        "rate_limited": sum(1 for r in records if r["status"] == 429),
        "slowest_read_s": round(slowest, 2),
        "healed_after_s": None if still or healed_at is None else round(healed_at - fault_at, 1),
        # a fault that heals between two samples is never seen: say so, rather than "healed after 0 s"
        "seen_unhealthy": any(not healthy for t, healthy in watch.samples if t > injected_at),
        "injection_took_s": round(injected_at - fault_at, 2),
        "health_sampled_every_s": round(watch.interval(), 1),
        # lost: acknowledged yet missing on the primary; a replica missing some when the load ends is behind
        "lost_writes": lost.get(primary, 0),
        "behind_on_replicas": max((n for host, n in lost.items() if host != primary), default=0),
        "lost_writes_by_database": lost,
        "acknowledged_writes": len(acknowledged),
        "undone_after_s": undo_after if fault.undo else None,
        "notes": notes,
    }


def matrix(quick: bool = False, log: Callable[[str], None] = print) -> list[dict]:
    rows = []
    for fault in FAULTS:
        log(f"  fault: {fault.name}")
        rows.append(row := measure(fault, quick))
        log(f"    {row}")
    return rows


def markdown(rows: list[dict]) -> list[str]:
    lines = [
        "## 7. Fault matrix",
        "",
        f"Each fault under a constant load from the lab's internet: readers {READ_RATE} GET/s (8 concurrent) and "
        f"writers {WRITE_RATE} POST/s (2 concurrent), every client with a {CLIENT_TIMEOUT} s timeout; the fault at "
        f"{FAULT_AT} s. A host powered off or cut off is given back after the time shown (a person or EC2 recovery); "
        "a crashed service (SIGKILL to all its processes) must come back by itself. *Healed after*: from the fault "
        "until the lab is healthy again (lab/health.py: every host up, every web server healthy, every backend UP on "
        "every HAProxy, the pair's addresses together). *Lost writes*: acknowledged (201) but missing on the primary. "
        "*Not yet on a replica*: acknowledged writes a replica did not have when the load ended (it may still be "
        "catching up, out of the rotation: a replica's /health fails until its relay log reaches the primary's "
        "position).",
        "",
        "| fault | host | requests | failed reads | failed writes | slowest read | undone after | healed after "
        "| writes acknowledged | lost writes | not yet on a replica |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        undone = f"{r['undone_after_s']:g} s" if r["undone_after_s"] else "by itself"
        lost, behind = r["lost_writes"], r.get("behind_on_replicas", "-")
        if r["healed_after_s"] is None:
            healed = "**not healed**"
        elif not r.get("seen_unhealthy", r["healed_after_s"] > 0):  # 0 s: no unhealthy sample (older rows)
            every = f" (sampled every {r['health_sampled_every_s']} s)" if "health_sampled_every_s" in r else ""
            healed = f"never seen unhealthy{every}"
        else:
            healed = f"{r['healed_after_s']} s"
        lines.append(
            f"| {r['fault']} | {r['host']} | {r['requests']} | {r['failed_reads']} | {r['failed_writes']} | "
            f"{r['slowest_read_s']} s | {undone} | {healed} | {r['acknowledged_writes']} | {lost} | {behind} |"
        )
    notes = [f"- {r['fault']}: {note}" for r in rows for note in r["notes"]]
    return [*lines, "", *(["Notes:", "", *notes, ""] if notes else [])]
