"""Everything needed to diagnose a failed lab test, kept in one directory before the lab goes down.

    python -m tests.lab.diagnostics [DIRECTORY]      (as root, while the lab is up)

For every host: its journal (every boot: the journal is persistent), its cloud-init logs, its failed
units, its TCP connections, and its console (also of a stopped host). For every database:
SHOW SLAVE STATUS, SHOW MASTER STATUS, the GTID positions, the semi-synchronous replication status
and the server's threads. For every load balancer: HAProxy's server states and keepalived's state.
For the lab: its status and its own logs (the AWS API stand-in's, the image builds'), and the load
generators' records of the run (every request: when, status, server, latency). Nothing here
changes the lab; a command that fails or hangs is recorded as such and the rest is still collected.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import shutil
import subprocess
import sys

from lab import hosts as lab_hosts
from lab import network
from lab.cli import LOGS, STATE_FILE, LabError, load_state, status
from lab.topology import Host

REPO = pathlib.Path(__file__).resolve().parents[2]
DIAGNOSTICS = REPO / ".lab" / "diagnostics"  # ignored by git (/.lab/)
COMMAND_TIMEOUT = 60

EVERY_HOST = {
    "journal.txt": ["journalctl", "--no-pager", "-o", "short-precise"],
    "journal-boots.txt": ["journalctl", "--no-pager", "--list-boots"],
    "cloud-init-status.txt": ["cloud-init", "status", "--long"],
    "cloud-init.log": ["cat", "/var/log/cloud-init.log"],
    "cloud-init-output.log": ["cat", "/var/log/cloud-init-output.log"],
    "systemctl-failed.txt": ["systemctl", "--failed", "--no-pager"],
    "systemctl-units.txt": ["systemctl", "list-units", "--no-pager", "--all", "--type=service,timer"],
    "tcp.txt": ["ss", "-tanpoi"],
    "addresses.txt": ["ip", "addr"],
    "nftables.txt": ["nft", "list", "ruleset"],
}
# Through the local socket as root: works on a replica and on a primary alike.
DATABASE = {
    "slave-status.txt": "SHOW SLAVE STATUS\\G",
    "master-status.txt": "SHOW MASTER STATUS\\G SHOW BINARY LOGS",
    "gtid.txt": "SELECT @@server_id, @@read_only, @@gtid_binlog_pos, @@gtid_current_pos, @@gtid_slave_pos, "
    "@@gtid_binlog_state\\G",
    "semi-sync.txt": "SHOW GLOBAL STATUS LIKE 'Rpl_semi%'; SHOW GLOBAL VARIABLES LIKE 'rpl_semi%'",
    "replication-variables.txt": "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('slave_net_timeout', "
    "'net_read_timeout', 'net_write_timeout', 'relay_log_recovery', 'skip_slave_start', 'master_retry_count', "
    "'read_only', 'gtid_strict_mode', 'sync_binlog', 'event_scheduler')",
    "processlist.txt": "SHOW FULL PROCESSLIST",
    "slave-hosts.txt": "SHOW SLAVE HOSTS",
    "messages.txt": "SELECT COUNT(*), MAX(id) FROM webinfra.messages",
}
WEB_FILES = {
    "self-fence-event.txt": ["mariadb", "-e", "SHOW CREATE EVENT mysql.webinfra_self_fence\\G"],
    "health.txt": ["curl", "-sS", "-m", "5", "http://127.0.0.1/health"],
}
# HAProxy's runtime API over its admin socket (python3: the image has no socat), then its metrics.
HAPROXY_ASK = (
    "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect('/run/haproxy/admin.sock'); "
    "s.sendall(sys.argv[1].encode()+b'\\n'); print(b''.join(iter(lambda: s.recv(65536), b'')).decode())"
)
LOAD_BALANCER = {
    "haproxy-servers.txt": ["python3", "-c", HAPROXY_ASK, "show servers state"],
    "haproxy-stat.txt": ["python3", "-c", HAPROXY_ASK, "show stat"],
    "haproxy-metrics.txt": ["sh", "-c", "curl -fsS -m 5 http://127.0.0.1:8404/metrics | grep '^haproxy_server_'"],
    "keepalived-state.txt": ["sh", "-c", "cat /run/webinfra/lb-state; systemctl status --no-pager keepalived"],
    "failover-state.json": ["cat", "/run/webinfra-failover/state.json"],
}


def _run(host: Host, command: list[str]) -> str:
    try:
        result = lab_hosts.guest_command(host, command, timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"(timed out after {COMMAND_TIMEOUT} s: {' '.join(command)})\n"
    except RuntimeError as error:  # the host stopped meanwhile
        return f"({error})\n"
    footer = f"\n(exit status {result.returncode})\n" if result.returncode else ""
    return result.stdout + (result.stderr and f"\n--- stderr ---\n{result.stderr}") + footer


def collect_host(host: Host, directory: pathlib.Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    console = lab_hosts.host_dir(host.name) / "console.log"
    if console.exists():
        shutil.copy(console, directory / "console.log")
    if not lab_hosts.is_running(host):
        (directory / "NOT-RUNNING").write_text(f"{host.name} was not running when the diagnostics were taken\n")
        return
    commands = dict(EVERY_HOST)
    if host.role == "web":
        commands.update(WEB_FILES)
        commands.update({name: ["mariadb", "-e", statement] for name, statement in DATABASE.items()})
    if host.role == "lb":
        commands.update(LOAD_BALANCER)
    for name, command in commands.items():
        (directory / name).write_text(_run(host, command))


def collect(directory: pathlib.Path | None = None, label: str = "manual") -> pathlib.Path:
    """Collect everything into `directory` (default: .lab/diagnostics/TIME-LABEL); returns it."""
    if directory is None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        directory = DIAGNOSTICS / f"{stamp}-{label}"
    directory.mkdir(parents=True, exist_ok=True)
    try:
        plan = load_state()
    except LabError as error:
        (directory / "NO-LAB").write_text(f"{error}\n")
        return directory
    with open(directory / "lab-status.json", "w") as out:
        stdout = sys.stdout
        sys.stdout = out
        try:
            status(as_json=True)
        except Exception as error:  # noqa: BLE001 - a diagnostic must not stop the collection
            print(json.dumps({"error": repr(error)}))
        finally:
            sys.stdout = stdout
    shutil.copy(STATE_FILE, directory / "lab-state.json")
    if LOGS.exists():
        shutil.copytree(
            LOGS, directory / "lab-logs", dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.deb", "*.tar*")
        )
    loadgen = REPO / ".lab" / "loadgen"  # the load generators' records of this run (tests/lab/helpers.py)
    if loadgen.exists():
        shutil.copytree(loadgen, directory / "loadgen", dirs_exist_ok=True)
    links = network.ip("-n", network.CLOUD_NS, "-br", "link", check=False)
    (directory / "cloud-links.txt").write_text(links.stdout + links.stderr)
    for host in plan.hosts:
        collect_host(host, directory / host.name)
    return directory


if __name__ == "__main__":
    where = collect(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else None)
    print(f"lab diagnostics kept in {where}")
