"""The lab, booted once for the lab tests: real hosts, real cloud-init, the stack's exact user-data.

Needs root (namespaces, mounts, systemd-nspawn); .ci/run runs as root. Everything the tests send
stays between the lab's own namespaces.

When a test that uses the lab fails, everything needed to diagnose it (tests/lab/diagnostics.py) is
kept under .lab/diagnostics/ before the next test or the teardown changes the lab; the failure's
report and the run's summary say where. WEBINFRA_LAB_KEEP_ON_FAILURE=1 also leaves the lab up.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from tests.lab.helpers import LOADGEN_RECORDS, lab

LAB_TIMEOUT = 1200  # a first image build included
KEPT = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def running_lab(request):
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (sudo scripts/test); CI runs them as root")
    shutil.rmtree(LOADGEN_RECORDS, ignore_errors=True)  # an earlier run's records are not this run's
    began = time.monotonic()
    up = lab("up", timeout=LAB_TIMEOUT, check=False)
    print(up.stdout)
    if up.returncode != 0:
        keep_diagnostics(request.config, "lab-up")
        lab("down", check=False)
        pytest.fail(f"scripts/lab up failed:\n{up.stdout}\n{up.stderr}")
    status = json.loads(lab("status", "--json").stdout)
    status["up_seconds"] = round(time.monotonic() - began, 1)
    yield status
    if os.environ.get("WEBINFRA_LAB_KEEP_ON_FAILURE") and request.session.testsfailed:
        print("WEBINFRA_LAB_KEEP_ON_FAILURE: a test failed, the lab stays up (remove it with scripts/lab down)")
        return
    lab("down", check=False)


@pytest.fixture
def healthy_lab(request, running_lab):
    """The lab for a disruptive test: checked healthy before it starts (lab/health.py). Found unhealthy
    (a test before it failed), it is repaired (hosts started or healed; an old primary stranded with a write
    no one else has re-seeded, as a person would), and if that is not enough within 3 minutes, rebuilt
    (down, up); the output says which, and why."""
    from lab import health

    found = health.problems()
    if found:
        print(f"\nlab unhealthy before {request.node.name}: {'; '.join(found)}")
        keep_diagnostics(request.config, f"unhealthy-before-{request.node.name}")
        print(f"repaired: {', '.join(health.repair()) or 'nothing to start or heal'}; waiting for health")
        _, found = health.wait_healthy(60 if health.stranded_replicas(found) else 180, every=5)
        if stranded := health.stranded_replicas(found):
            # waiting does not help these: the person's tool does (README: a server holding writes no one else has)
            from ops.promote import LabRunner
            from ops.reseed import reseed

            try:
                for name in stranded:
                    reseed(LabRunner(), name)
                print(f"re-seeded {', '.join(stranded)} (scripts/reseed); waiting for health")
                _, found = health.wait_healthy(120, every=5)
            except Exception as error:  # noqa: BLE001 (said; the rebuild below is the answer)
                print(f"re-seeding {', '.join(stranded)} failed: {error}")
        if found:
            print(f"still unhealthy ({'; '.join(found)}): rebuilding the lab (down, up)")
            lab("down", check=False)
            up = lab("up", timeout=LAB_TIMEOUT, check=False)
            if up.returncode != 0:
                pytest.fail(f"rebuilding the lab failed:\n{up.stdout}\n{up.stderr}")
            running_lab.update(json.loads(lab("status", "--json").stdout))
            if found := health.problems():
                pytest.fail(f"a rebuilt lab is unhealthy: {found}")
        print("lab healthy again")
    return running_lab


def keep_diagnostics(config: pytest.Config, label: str) -> str:
    from tests.lab.diagnostics import collect  # imports the lab's CLI: only when a lab test failed

    try:
        where = str(collect(label=label))
    except Exception as error:  # noqa: BLE001 - the test's own failure is what the report is about
        where = f"(collecting the lab diagnostics failed: {error!r})"
    config.stash.setdefault(KEPT, []).append((label, where))
    return where


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and "running_lab" in getattr(item, "fixturenames", ()) and call.when == "call":
        where = keep_diagnostics(item.config, item.name)
        report.sections.append(("lab diagnostics", f"kept in {where}"))


def pytest_terminal_summary(terminalreporter, config):
    kept = config.stash.get(KEPT, [])
    if kept:
        terminalreporter.section("lab diagnostics of the failures")
        for label, where in kept:
            terminalreporter.write_line(f"{label}: {where}")
