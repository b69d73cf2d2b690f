"""The lab, booted once for the lab tests: real hosts, real cloud-init, the stack's exact user-data.

Needs root (namespaces, mounts, systemd-nspawn); .ci/run runs as root. Everything the tests send
stays between the lab's own namespaces.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.lab.helpers import lab

LAB_TIMEOUT = 1200  # a first image build included


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
