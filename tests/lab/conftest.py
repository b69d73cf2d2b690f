"""The lab, booted once for the lab tests: real hosts, real cloud-init, the stack's exact user-data.

Needs root (namespaces, mounts, systemd-nspawn); .ci/run runs as root. Everything the tests send
stays between the lab's own namespaces.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

from lab.loadgen import stream_from_client as stream  # noqa: F401  (the lab tests' background load)

REPO = pathlib.Path(__file__).resolve().parents[2]
LAB_TIMEOUT = 1200  # a first image build included


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


def load(url: str, requests: int, *, rate: float | None = None, duration: float = 60, timeout: float = 5,
         cacert: str | None = None, concurrency: int = 1) -> dict:
    """Bounded GETs from the lab's internet (lab/loadgen.py); returns its JSON report."""
    args = [sys.executable, "-m", "lab.loadgen", url, "--requests", str(requests), "--duration", str(duration),
            "--timeout", str(timeout), "--concurrency", str(concurrency)]
    if cacert:
        args += ["--cacert", cacert]
    if rate:
        args += ["--rate", str(rate)]
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


@pytest.fixture(scope="session")
def running_lab():
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (sudo scripts/test); CI runs them as root")
    began = time.monotonic()
    up = lab("up", timeout=LAB_TIMEOUT, check=False)
    print(up.stdout)
    if up.returncode != 0:
        lab("down", check=False)
        pytest.fail(f"scripts/lab up failed:\n{up.stdout}\n{up.stderr}")
    status = json.loads(lab("status", "--json").stdout)
    status["up_seconds"] = round(time.monotonic() - began, 1)
    yield status
    lab("down", check=False)
