"""Is the lab as a fresh `lab up` leaves it? What a disruptive test checks before it starts, so that one
test's failure (a host left down, cut off, or out of the rotation) is named and repaired, not inherited
by the next test as a failure of its own."""

from __future__ import annotations

import json

from tests.lab.helpers import guest, lab


def lab_status() -> dict:
    return json.loads(lab("status", "--json").stdout)


def _backend_states(lb: str) -> dict[str, str]:
    """HAProxy's view from one load balancer: web server → its state (UP, DOWN, ...)."""
    metrics = guest(lb, "curl", "-fsS", "-m", "5", "http://127.0.0.1:8404/metrics", timeout=15).stdout
    states = {}
    for line in metrics.splitlines():
        if line.startswith("haproxy_server_status{") and 'proxy="web"' in line and line.endswith(" 1"):
            server = line.split('server="', 1)[1].split('"', 1)[0]
            states[server] = line.split('state="', 1)[1].split('"', 1)[0]
    return states


def problems(status: dict) -> list[str]:
    """What differs from a healthy lab, in words; empty when healthy."""
    found = []
    if not status["security_groups"]:
        found.append("security groups not enforced")
    webs = [h["name"] for h in status["hosts"] if h["role"] == "web"]
    for host in status["hosts"]:
        name = host["name"]
        if not host["running"]:
            found.append(f"{name} not running")
            continue
        if host.get("blackholed"):
            found.append(f"{name} black-holed")
        if host["role"] == "web":
            health = guest(name, "curl", "-sS", "-m", "3", "http://127.0.0.1/health", timeout=15).stdout
            if '"healthy":true' not in health:
                found.append(f"{name} unhealthy: {health.strip()[:200] or 'no answer'}")
        else:
            states = _backend_states(name)
            down = {web: states.get(web, "absent") for web in webs if states.get(web) != "UP"}
            if down:
                found.append(f"{name}'s HAProxy: {down}")
    lbs = [h for h in status["hosts"] if h["role"] == "lb"]
    if len(lbs) == 2:
        holder = status["floating_address_holder"]
        if not holder or status["elastic_ip_holder"] != holder:
            found.append(
                f"load balancer pair: floating address on {holder}, Elastic IP on {status['elastic_ip_holder']}"
            )
    return found


def repair(status: dict) -> list[str]:
    """The cheap repairs: start stopped hosts, heal black-holed ones, enforce the security groups.
    Returns what was done."""
    done = []
    if not status["security_groups"]:
        lab("sg", "on")
        done.append("security groups enforced again")
    for host in status["hosts"]:
        if not host["running"]:
            lab("start", host["name"])
            done.append(f"{host['name']} started")
        elif host.get("blackholed"):
            lab("heal", host["name"])
            done.append(f"{host['name']} healed")
    return done
