"""Helpers the lab tests share: the lab's CLI, commands inside its hosts and its client, bounded load."""

from __future__ import annotations

import itertools
import json
import pathlib
import subprocess
import sys
import time

import pytest

from lab import loadgen

REPO = pathlib.Path(__file__).resolve().parents[2]


def lab(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "lab.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        pytest.fail(f"scripts/lab {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def guest(host: str, *command: str, timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess:
    return lab("exec", host, "--", *command, timeout=timeout, check=check)


def sql(host: str, statement: str) -> str:
    result = guest(host, "mariadb", "-N", "-B", "-e", statement)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def client(*command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["ip", "netns", "exec", "wi-client", *command], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def load(
    url: str,
    requests: int,
    *,
    rate: float | None = None,
    duration: float = 60,
    timeout: float = 5,
    cacert: str | None = None,
    concurrency: int = 1,
) -> dict:
    """Bounded GETs from the lab's internet (lab/loadgen.py); returns its JSON report."""
    args = loadgen.command(
        url, requests, rate=rate, duration=duration, timeout=timeout, concurrency=concurrency, cacert=cacert
    )
    result = client(*args, timeout=duration + timeout + 30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def wait_until(what: str, check, seconds: float, interval: float = 0.5):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"{what}: not within {seconds} s")


LOADGEN_RECORDS = REPO / ".lab" / "loadgen"  # ignored by git (/.lab/); kept with a failure's diagnostics


def keep_loadgen_report(label: str, report: dict) -> dict:
    """Keep a load generator's report (every request's record) where a failure's diagnostics will find it."""
    LOADGEN_RECORDS.mkdir(parents=True, exist_ok=True)
    (LOADGEN_RECORDS / f"{label}.json").write_text(json.dumps(report, indent=1))
    return report


class WritableSampler:
    """Every web server's read_only, sampled in rounds about every 0.2 s from inside each host (its
    local socket), in a thread, until stopped: a round with two writable servers is a split brain. A
    host that is down or whose database does not answer within 1 s counts as not writable."""

    def __init__(self, hosts: list[str], interval: float = 0.2):
        import threading

        from lab import cli

        plan = cli.load_state()
        self.targets = [plan.host(name) for name in hosts]
        self.interval = interval
        self.rounds: list[tuple[float, dict[str, bool | None]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self, host) -> bool | None:
        from lab import hosts

        try:
            result = hosts.guest_command(
                host, ["mariadb", "-N", "-B", "--connect-timeout=1", "-e", "SELECT @@global.read_only"], timeout=1.5
            )
        except Exception:  # noqa: BLE001 - not running, or no answer: not writable
            return None
        return result.stdout.strip() == "0" if result.returncode == 0 else None

    def _run(self) -> None:
        import concurrent.futures
        import time

        with concurrent.futures.ThreadPoolExecutor(len(self.targets)) as pool:
            while not self._stop.is_set():
                began = time.monotonic()
                writable = dict(zip([t.name for t in self.targets], pool.map(self._one, self.targets), strict=True))
                self.rounds.append((began, writable))
                time.sleep(max(0.0, self.interval - (time.monotonic() - began)))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def split_brains(self) -> list:
        return [(t, w) for t, w in self.rounds if sum(1 for v in w.values() if v) > 1]

    def spacing(self) -> float:
        """The longest gap between two rounds (the sampling's own resolution, for the record)."""
        times = [t for t, _ in self.rounds]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)
