"""Helpers the lab tests share: the lab's CLI, commands inside its hosts and its client, bounded load."""

from __future__ import annotations

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
