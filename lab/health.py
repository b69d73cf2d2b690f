"""Is the lab as a fresh `lab up` leaves it? Checked before a disruptive test or a benchmarked fault,
and after one until it has healed: one fault's leftovers (a host left down, cut off, or out of the
rotation) are named and repaired, not inherited by the next as a failure of its own."""

from __future__ import annotations

import concurrent.futures
import subprocess
import time

from lab import cli, network
from lab import hosts as lab_hosts


def _guest(name: str, *command: str) -> str:
    try:
        return lab_hosts.guest_command(cli.load_state().host(name), list(command), timeout=15).stdout
    except (RuntimeError, subprocess.TimeoutExpired) as error:  # stopped or stuck meanwhile
        return f"({error})"


def backend_states(lb: str) -> dict[str, str]:
    """HAProxy's view from one load balancer: web server → its state (UP, DOWN, ...)."""
    metrics = _guest(lb, "curl", "-fsS", "-m", "5", "http://127.0.0.1:8404/metrics")
    states = {}
    for line in metrics.splitlines():
        if line.startswith("haproxy_server_status{") and 'proxy="web"' in line and line.endswith(" 1"):
            server = line.split('server="', 1)[1].split('"', 1)[0]
            states[server] = line.split('state="', 1)[1].split('"', 1)[0]
    return states


def site_answers(url: str, ca_file: str) -> bool:
    """GET /health through the Elastic IP from the lab's internet, as a visitor: 200 within 2 s."""
    curl = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "2", "--cacert", ca_file]
    try:
        result = subprocess.run(
            ["ip", "netns", "exec", network.CLIENT_NS, *curl, url.rstrip("/") + "/health"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        return False  # no answer is an answer here: the lab is not healthy yet
    return result.stdout.strip() == "200"


def _host_problems(host: dict, webs: list[str]) -> list[str]:
    name, found = host["name"], []
    if not host["running"]:
        return [f"{name} not running"]
    if host["blackholed"]:
        found.append(f"{name} black-holed")
    if host["split_off"]:
        found.append(f"{name} split off from the other hosts")
    failed = _guest(name, "systemctl", "--failed", "--no-legend", "--plain").split()
    if failed:
        found.append(f"{name} failed units: {' '.join(u for u in failed if '.' in u)}")
    if host["role"] == "web":
        health = _guest(name, "curl", "-sS", "-m", "3", "http://127.0.0.1/health")
        if '"healthy":true' not in health:
            found.append(f"{name} unhealthy: {health.strip()[:200] or 'no answer'}")
    else:
        states = backend_states(name)
        down = {web: states.get(web, "absent") for web in webs if states.get(web) != "UP"}
        if down:
            found.append(f"{name}'s HAProxy: {down}")
    return found


def problems(status: dict | None = None) -> list[str]:
    """What differs from a healthy lab, in words; empty when healthy. The hosts are asked at once (each
    question is a process entering a namespace: one after the other, they took 2 s before every test)."""
    status = status or cli.status_report()
    found = []
    if not status["security_groups"]:
        found.append("security groups not enforced")
    webs = [h["name"] for h in status["hosts"] if h["role"] == "web"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for host_found in pool.map(lambda host: _host_problems(host, webs), status["hosts"]):
            found += host_found
    if not site_answers(status["url"], status["ca_file"]):
        # e.g. the lab's gateway still sends the Elastic IP's traffic to the load balancer that held the
        # floating address before a split healed (its neighbour entry goes stale within seconds)
        found.append("the site does not answer from the lab's internet")
    if len([h for h in status["hosts"] if h["role"] == "lb"]) == 2:
        holder = status["floating_address_holder"]
        if not holder or status["elastic_ip_holder"] != holder:
            found.append(
                f"load balancer pair: floating address on {holder}, Elastic IP on {status['elastic_ip_holder']}"
            )
    return found


def repair(status: dict | None = None) -> list[str]:
    """The cheap repairs: start stopped hosts, heal black-holed ones and a split, enforce the security groups.
    Returns what was done."""
    status = status or cli.status_report()
    done = []
    if not status["security_groups"]:
        network.set_security_groups(cli.load_state(), enabled=True)
        done.append("security groups enforced again")
    if any(host["split_off"] for host in status["hosts"]):
        cli.split([], heal=True)
        done.append("split healed")
    for host in status["hosts"]:
        if not host["running"]:
            cli.start(host["name"])
            done.append(f"{host['name']} started")
        elif host["blackholed"]:
            cli.blackhole(host["name"], on=False)
            done.append(f"{host['name']} healed")
    return done


def stranded_replicas(found: list[str]) -> list[str]:
    """The web servers that are read-only and do not replicate, when nothing else is wrong but their
    absence from the rotation: an old primary holding a write no one else has (committed, acknowledged
    to no client, when its network was cut) waits for a person, who re-seeds it (scripts/reseed)."""
    stranded = sorted(
        {line.split()[0] for line in found if " unhealthy: " in line and "replication is not running" in line}
    )
    others = [
        line
        for line in found
        if line.split()[0] not in stranded and not (" HAProxy: " in line and set(_named(line)) <= set(stranded))
    ]
    return stranded if stranded and not others else []


def _named(line: str) -> list[str]:
    return [word.strip("{}':,") for word in line.split() if word.strip("{}':,").startswith("web-")]


def wait_healthy(seconds: float, every: float = 1.0) -> tuple[float, list[str]]:
    """Wait until the lab is healthy, at most `seconds`: (seconds it took, what is still wrong)."""
    began = time.monotonic()
    while (found := problems()) and time.monotonic() - began < seconds:
        time.sleep(every)
    return time.monotonic() - began, found
