"""What a failed lab test keeps (tests/lab/diagnostics.py), with the hosts stood in for: no root, no lab."""

import json
import subprocess

from lab.cli import LabError
from lab.topology import Host, LabPlan
from tests.lab import diagnostics


def host(name: str, role: str, db_role: str | None = None) -> Host:
    return Host(name, role, db_role, "10.0.0.1", "198.51.100.1", (), b"", f"i-{name}")


def test_without_a_lab_it_says_so(tmp_path, monkeypatch):
    def no_lab():
        raise LabError("no lab is up (run: scripts/lab up)")

    monkeypatch.setattr(diagnostics, "load_state", no_lab)
    where = diagnostics.collect(tmp_path / "kept")
    assert (where / "NO-LAB").read_text() == "no lab is up (run: scripts/lab up)\n"


def test_every_host_is_collected_by_its_role_and_a_stopped_one_keeps_its_console(tmp_path, monkeypatch):
    plan = LabPlan(
        "lab",
        "us-east-1",
        "10.0.0.0/16",
        (host("lb-01", "lb"), host("web-01", "web", "primary"), host("web-02", "web", "replica")),
        (),
    )
    state = tmp_path / "state.json"
    state.write_text("{}")
    consoles = tmp_path / "hosts"
    (consoles / "web-02").mkdir(parents=True)
    (consoles / "web-02" / "console.log").write_text("boot-host: web-02 rebooting\n")
    ran: dict[str, list[list[str]]] = {}

    def guest_command(h, command, timeout=None):
        ran.setdefault(h.name, []).append(command)
        if command[0] == "mariadb" and "SHOW SLAVE STATUS" in command[-1]:
            return subprocess.CompletedProcess(command, 0, "Slave_IO_Running: Yes\n", "")
        if command[:2] == ["journalctl", "--no-pager"] and h.name == "lb-01":
            raise subprocess.TimeoutExpired(command, timeout)
        return subprocess.CompletedProcess(command, 1, "", "no such thing")

    monkeypatch.setattr(diagnostics, "load_state", lambda: plan)
    monkeypatch.setattr(diagnostics, "status", lambda as_json: print(json.dumps({"hosts": []})))
    monkeypatch.setattr(diagnostics, "STATE_FILE", state)
    monkeypatch.setattr(diagnostics, "LOGS", tmp_path / "no-logs")
    monkeypatch.setattr(diagnostics.network, "ip", lambda *a, check: subprocess.CompletedProcess(a, 0, "links\n", ""))
    monkeypatch.setattr(diagnostics.lab_hosts, "host_dir", lambda name: consoles / name)
    monkeypatch.setattr(diagnostics.lab_hosts, "is_running", lambda h: h.name != "web-02")
    monkeypatch.setattr(diagnostics.lab_hosts, "guest_command", guest_command)

    where = diagnostics.collect(tmp_path / "kept")

    assert json.loads((where / "lab-status.json").read_text()) == {"hosts": []}
    assert (where / "lab-state.json").read_text() == "{}"
    # a stopped host: its console, and the note that nothing else could be asked
    assert (where / "web-02" / "console.log").read_text() == "boot-host: web-02 rebooting\n"
    assert (where / "web-02" / "NOT-RUNNING").exists() and "web-02" not in ran
    # a database: replication and semi-sync status, next to what every host gives
    web = {p.name for p in (where / "web-01").iterdir()}
    assert {
        "journal.txt",
        "cloud-init.log",
        "cloud-init-output.log",
        "systemctl-failed.txt",
        "tcp.txt",
        "slave-status.txt",
        "master-status.txt",
        "semi-sync.txt",
        "gtid.txt",
        "health.txt",
    } <= web
    assert (where / "web-01" / "slave-status.txt").read_text() == "Slave_IO_Running: Yes\n"
    # a load balancer: HAProxy's and keepalived's state, and no database queries
    lb = {p.name for p in (where / "lb-01").iterdir()}
    assert {"haproxy-servers.txt", "haproxy-stat.txt", "keepalived-state.txt", "journal.txt"} <= lb
    assert not any(c[0] == "mariadb" for c in ran["lb-01"])
    # a command that failed or hung is recorded as such, and the collection went on
    assert "(exit status 1)" in (where / "web-01" / "cloud-init.log").read_text()
    assert "timed out after" in (where / "lb-01" / "journal.txt").read_text()
