"""A real MariaDB primary and replica (Debian's mariadbd), set up with the stack's own files, and the
app served by Debian's gunicorn and python3-flask/pymysql: the same packages the web servers run.

The servers use the rendered 60-webinfra.cnf (server_id, binlog, GTID strict mode, read_only on the
replica), the app's schema.sql and the rendered db-users.sql; only paths and the loopback address
are local. Everything listens on 127.0.0.1 or unix sockets under pytest's tmp dir.
"""

from __future__ import annotations

import contextlib
import getpass
import itertools
import json
import os
import pathlib
import secrets
import signal
import socket
import string
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import pymysql
import yaml

from provisioning import render
from provisioning.defaults import SERVER_DEFAULTS
from tests.helpers import require_tool

FACTS = render.StackFacts(
    stack="test",
    region="eu-west-1",
    vpc_cidr="10.0.0.0/16",
    ssm_prefix="/webinfra/test",
    max_replication_lag_seconds=30,
    rate_limit_per_10s=200,
    lb_addresses=("10.0.0.5",),
    web_addresses=("10.0.0.11", "10.0.1.12", "10.0.2.13"),
)
LOOPBACK_HOSTS = ["localhost", render.mariadb_host_pattern("127.0.0.0/8")]


# The ports of the tests' own servers (MariaDB, the app, moto). Not "bind port 0 and hand the port over":
# between the probe and the server's own bind, an outgoing connection may take that port as its local one
# (the kernel takes both from the ephemeral range), or another worker may probe the same; seen: MariaDB's
# "Bind on TCP/IP port ... Address already in use" while apt downloaded beside the tests. So: ports below
# the ephemeral range, a block of its own for each pytest-xdist worker, handed out one after the other.
PORT_BLOCK = 1000
_next_port = itertools.count()
_ports_lock = threading.Lock()


def _port_range_start() -> int:
    try:
        ephemeral = int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    return max(1024, ephemeral - 12 * PORT_BLOCK)


def free_port() -> int:
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    first = _port_range_start() + worker % 12 * PORT_BLOCK
    with _ports_lock:
        for _ in range(PORT_BLOCK):
            port = first + next(_next_port) % PORT_BLOCK
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    continue  # something of this machine's listens there
                return port
    raise RuntimeError(f"no free port in {first}-{first + PORT_BLOCK - 1}")


def password() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))


def wait_for(what: str, check, seconds: float = 30.0, interval: float = 0.2, gone=lambda: ""):
    """`check()` until it answers, at most `seconds`; `gone()` says why waiting is pointless (a process
    that exited), at once."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        if reason := gone():
            raise RuntimeError(f"{what}: {reason}")
        try:
            result = check()
            if result:
                return result
        except Exception as error:  # noqa: BLE001 - reported below if it never succeeds
            last = error
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {seconds} s (last error: {last})")


# The server's administrator over its local socket: root, or (the fast tier without root) the user running
# the tests, whom mariadb-install-db makes a second all-privileged socket account.
BACKUP_BUCKET = "webinfra-test-backups"  # the moto server's (tests/app/test_backup.py creates it)
ADMIN = "root" if os.geteuid() == 0 else getpass.getuser()


@dataclass
class MariaDB:
    name: str
    directory: pathlib.Path
    port: int
    process: subprocess.Popen

    @property
    def socket(self) -> str:
        return str(self.directory / "mysqld.sock")

    def root(self) -> pymysql.connections.Connection:
        return pymysql.connect(
            unix_socket=self.socket, user=ADMIN, autocommit=True, cursorclass=pymysql.cursors.DictCursor
        )

    def sql(self, statement: str, args=None):
        with self.root() as conn, conn.cursor() as cur:
            cur.execute(statement, args)
            return cur.fetchall()

    def client(self, stdin: str) -> None:
        """Feed SQL to the real `mariadb` client as root, as the hosts' boot scripts do."""
        subprocess.run(
            ["mariadb", f"--socket={self.socket}", "-u", ADMIN], input=stdin, text=True, check=True, timeout=60
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)


def make_tls(base: pathlib.Path) -> pathlib.Path:
    """The stack's database PKI in miniature: a CA, and a server certificate for 127.0.0.1."""
    from lab import mock_tls

    ca_key = mock_tls.private_key({"algorithm": "ECDSA", "ecdsaCurve": "P256"})["privateKeyPem"]
    ca = mock_tls.self_signed_cert(
        {
            "privateKeyPem": ca_key,
            "subject": {"commonName": "test database CA"},
            "isCaCertificate": True,
            "validityPeriodHours": 24,
            "allowedUses": ["cert_signing"],
        }
    )["certPem"]
    key = mock_tls.private_key({"algorithm": "ECDSA", "ecdsaCurve": "P256"})["privateKeyPem"]
    request = mock_tls.cert_request(
        {"privateKeyPem": key, "subject": {"commonName": "web"}, "ipAddresses": ["127.0.0.1"]}
    )
    cert = mock_tls.locally_signed_cert(
        {
            **request,
            "caCertPem": ca,
            "caPrivateKeyPem": ca_key,
            "validityPeriodHours": 24,
            "allowedUses": ["server_auth", "client_auth", "digital_signature"],
        }
    )["certPem"]
    tls = base / "tls"
    tls.mkdir()
    for name, pem in (("ca.pem", ca), ("server.pem", cert), ("server-key.pem", key)):
        (tls / name).write_text(pem)
    return tls


def declared_web_files(hostname: str, role: str = "replica", db_ca: str = "(test)") -> dict[str, str]:
    """The files the stack's user-data writes on a web server of FACTS (a replica's primary on loopback), by path."""
    declared = yaml.safe_load(
        render.web_cloud_config(
            FACTS,
            hostname,
            role,
            "127.0.0.1" if role == "replica" else None,
            db_ca=db_ca,
            backup_bucket=BACKUP_BUCKET,
        )
    )
    return {f["path"]: f["content"] for f in declared["write_files"]}


def declared_environment(files: dict[str, str]) -> dict[str, str]:
    """The values of the declared /etc/webinfra/webinfra.env, as a unit's EnvironmentFile reads them."""
    return dict(
        line.split("=", 1)
        for line in files["/etc/webinfra/webinfra.env"].splitlines()
        if "=" in line and line[0] != "#"
    )


def start_mariadb(base: pathlib.Path, hostname: str, role: str, tls: pathlib.Path) -> MariaDB:
    require_tool("mariadbd")
    directory = base / hostname
    directory.mkdir()
    as_root = ["--user=root"] if os.geteuid() == 0 else []
    # A temporary directory of its own: MariaDB names its on-disk temporary tables alike in every server,
    # and two bootstraps sharing /tmp (scripts/test runs tests side by side) removed each other's.
    (directory / "tmp").mkdir()
    installed = subprocess.run(
        [
            "mariadb-install-db",
            f"--datadir={directory / 'data'}",
            "--auth-root-authentication-method=socket",
            f"--auth-root-socket-user={ADMIN}",
            "--skip-test-db",
            *as_root,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TMPDIR": str(directory / "tmp")},
    )
    if installed.returncode != 0:
        raise RuntimeError(f"mariadb-install-db for {hostname} failed:\n{installed.stdout}{installed.stderr}")
    files = declared_web_files(hostname, role, db_ca=(tls / "ca.pem").read_text())
    stack_cnf = next(content for path, content in files.items() if path.endswith("60-webinfra.cnf"))
    port = free_port()
    # The stack's settings first, then only what must differ on a test machine (later lines win).
    (directory / "my.cnf").write_text(
        stack_cnf
        + f"""
[mariadb]
datadir = {directory / "data"}
socket = {directory / "mysqld.sock"}
pid-file = {directory / "mysqld.pid"}
tmpdir = {directory / "tmp"}
log-error = {directory / "error.log"}
port = {port}
bind-address = 127.0.0.1
innodb_buffer_pool_size = 32M
ssl_ca = {tls / "ca.pem"}
ssl_cert = {tls / "server.pem"}
ssl_key = {tls / "server-key.pem"}
"""
    )
    process = subprocess.Popen(["mariadbd", f"--defaults-file={directory / 'my.cnf'}", *as_root])
    server = MariaDB(hostname, directory, port, process)

    def exited() -> str:
        if process.poll() is None:
            return ""
        log = (directory / "error.log").read_text(errors="replace") if (directory / "error.log").exists() else ""
        return f"mariadbd exited ({process.returncode}); its log ends:\n" + "\n".join(log.splitlines()[-8:])

    wait_for(f"MariaDB {hostname}", lambda: server.sql("SELECT 1"), seconds=60, gone=exited)
    # What webinfra-db-setup applies on every server before anything replicates (the declared file).
    server.client(files["/etc/webinfra/db-end-dump-threads.sql"])
    return server


@dataclass
class Stack:
    primary: MariaDB
    replica: MariaDB
    app_password: str
    replication_password: str
    tls: pathlib.Path
    failover_password: str = ""


@dataclass
class App:
    url: str
    process: subprocess.Popen

    def request(self, method: str, path: str, body: bytes | str | None = None, headers: dict | None = None):
        data = body.encode() if isinstance(body, str) else body
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode()

    def json(self, method: str, path: str, payload=None):
        body = None if payload is None else json.dumps(payload)
        status, headers, text = self.request(method, path, body, {"Content-Type": "application/json"} if body else {})
        return status, json.loads(text) if headers.get("Content-Type", "").startswith("application/json") else text


def start_app(tmp_path: pathlib.Path, env: dict[str, str]) -> App:
    gunicorn = require_tool("gunicorn")
    port = free_port()
    # What systemd's RuntimeDirectory= gives the service on a server: the workers share state there.
    runtime = tmp_path / f"run-{port}"
    runtime.mkdir()
    full_env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "RUNTIME_DIRECTORY": str(runtime), **env}
    process = subprocess.Popen(
        [
            *(gunicorn, "--workers", "2", "--threads", str(SERVER_DEFAULTS.gunicorn.threads)),
            *("--worker-connections", str(SERVER_DEFAULTS.gunicorn.threads)),
            *("--bind", f"127.0.0.1:{port}", "--chdir", str(render.APP_DIR), "webinfra_app:app"),
        ],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / f"gunicorn-{port}.log", "w"),  # noqa: SIM115 - gunicorn's, for its lifetime
    )
    app = App(f"http://127.0.0.1:{port}", process)
    wait_for("the app", lambda: app.request("GET", "/health")[0] in (200, 503), seconds=30)
    return app


def users_script(stack: Stack) -> str:
    """db-users.sql as the primary's boot feeds it to the client: the passwords as session variables first."""
    users_sql = render.render_template(
        "db-users.sql.j2",
        db_name=render.DB_NAME,
        app_user=render.DB_APP_USER,
        replication_user=render.DB_REPLICATION_USER,
        failover_user=render.DB_FAILOVER_USER,
        app_client_hosts=LOOPBACK_HOSTS,
        replication_client_hosts=LOOPBACK_HOSTS[1:],
        failover_client_hosts=LOOPBACK_HOSTS[1:],
    )
    return (
        f"SET @app_password='{stack.app_password}', @replication_password='{stack.replication_password}', "
        f"@failover_password='{stack.failover_password}';\n" + users_sql
    )


def app_env(stack: Stack, server: MariaDB, role: str, **overrides) -> dict[str, str]:
    env = {
        "WEBINFRA_ROLE": role,
        "WEBINFRA_DB_NAME": render.DB_NAME,
        "WEBINFRA_DB_USER": render.DB_APP_USER,
        "WEBINFRA_DB_PASSWORD": stack.app_password,
        "WEBINFRA_DB_LOCAL_SOCKET": server.socket,
        "WEBINFRA_MAX_LAG": "30",
        "WEBINFRA_DB_TLS_CA": str(stack.tls / "ca.pem"),
    }
    return {**env, **overrides}


class PausableRelay:
    """A TCP relay on 127.0.0.1 to `port` that can stop passing bytes while keeping every connection
    open: a replication stream that has stalled, the replica's I/O thread still connected. Connections
    are numbered as they come; `pause(spare=N)` leaves the first N flowing (the app's own connections
    to the primary, which only the stream's stall must not touch) and every later one."""

    def __init__(self, port: int):
        self.target = port
        self.flows: list[threading.Event] = []
        self.hold_new = False  # new connections start paused too
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def connections(self) -> int:
        return len(self.flows)

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # the server behind it is gone (a test tearing down): refuse this one
                client.close()
                continue
            flowing = threading.Event()
            if not self.hold_new:
                flowing.set()
            self.flows.append(flowing)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink, flowing), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, flowing: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while flowing.wait() and not self.closed:
                data = source.recv(65536)
                if not data:
                    break
                flowing.wait()
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def pause(self, spare: int = 0, hold_new: bool = False) -> None:
        self.hold_new = hold_new
        for flowing in self.flows[spare:]:
            flowing.clear()

    def resume(self) -> None:
        self.hold_new = False
        for flowing in self.flows:
            flowing.set()

    def close(self) -> None:
        self.closed = True
        self.resume()
        self.listener.close()
