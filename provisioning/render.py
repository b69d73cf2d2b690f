"""Pure rendering of each host's cloud-init user-data (no Pulumi here).

The Pulumi components, the tests and the local lab all call these functions, so what the lab boots
is byte-for-byte what EC2 receives. Config files come from the Jinja2 templates beside this module
(StrictUndefined: a missing value is an error, never an empty string), which read every fixed server
setting from one table (server-defaults.yaml, through provisioning/defaults.py); files the hosts get
as they are come from files/ beside them. The cloud-config itself is built as data and dumped with PyYAML.
"""

from __future__ import annotations

import ast
import base64
import functools
import gzip
import hashlib
import ipaddress
import json
import pathlib
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import jinja2
import yaml

from provisioning import defaults
from provisioning.defaults import HealthCheck
from settings import PROJECT

TEMPLATES = pathlib.Path(__file__).resolve().parent / "templates"
FILES = pathlib.Path(__file__).resolve().parent / "files"
APP_DIR = pathlib.Path(__file__).resolve().parent.parent / "app"
BACKUPS_DIR = pathlib.Path(__file__).resolve().parent.parent / "backups"
CONFIG_SYNC_PROGRAM = pathlib.Path(__file__).resolve().parent.parent / "configsync" / "webinfra_config_sync.py"
FAILOVER_PROGRAM = pathlib.Path(__file__).resolve().parent.parent / "failover" / "webinfra_failover.py"

# EC2 refuses user-data over 16 KB (before base64). We send gzip, and keep a margin below it.
USER_DATA_LIMIT_BYTES = 16 * 1024

DB_NAME = "webinfra"
DB_APP_USER = "webinfra_app"
DB_REPLICATION_USER = "webinfra_repl"
DB_FAILOVER_USER = "webinfra_failover"
FAILOVER_CONFIG = "/etc/webinfra/failover.json"
FAILOVER_SERVERS = "/etc/webinfra/failover-servers.json"
HAPROXY_CONFIG = "/etc/haproxy/haproxy.cfg"
HAPROXY_RUNTIME = "/etc/haproxy/webinfra-runtime.cfg"  # loaded after HAPROXY_CONFIG (haproxy-runtime.conf)
FIREWALL_PEERS = "/etc/webinfra/firewall-peers.nft"
# A standard SSM parameter holds 4 KB (free); runtime configuration travels gzipped to fit one.
CONFIG_PARAMETER_LIMIT = 4 * 1024
HAPROXY_STATS_PORT = defaults.SERVER_DEFAULTS.haproxy.stats_port

WEB_PACKAGES = (
    "nginx",
    "default-mysql-server",  # MariaDB 10.11 on Debian 12
    "mariadb-backup",  # the daily full backup (webinfra-db-backup)
    "zstd",
    "python3-flask",
    "python3-pymysql",
    "gunicorn",
    "awscli",
    "curl",
    "ca-certificates",
    "nftables",
    "openssl",
    "python3-boto3",  # webinfra-config-sync
)
LB_PACKAGES = (
    "haproxy",
    "awscli",
    "curl",
    "ca-certificates",
    "nftables",
    "certbot",
    "openssl",
    "python3-boto3",
    "python3-pymysql",  # webinfra-failover
)
LB_PAIR_PACKAGES = ("keepalived",)
VRRP_MARKER_ADDRESS = f"169.254.{defaults.SERVER_DEFAULTS.keepalived.router_id}.1"  # on lo of the active LB (AWS)
CERTIFICATE_PATH = "/etc/haproxy/certs/site.pem"
ACME_LINEAGE = "/etc/letsencrypt/live/webinfra"  # certbot's --cert-name webinfra (webinfra-acme.sh.j2)
CONFIG_SYNC_MANIFEST = "/etc/webinfra/config-sync.json"
ACME_PORT = 8888
# AWS publishes its agents for Debian in its own regional buckets (Debian does not package them).
# The host fills in {region} and {arch} (webinfra-install-aws-package). The lab serves stand-ins at
# exactly these URLs (lab/aws_downloads.py), so it boots the same install path as EC2.
AWS_AGENT_URLS = {
    "amazon-ssm-agent": "https://s3.{region}.amazonaws.com/amazon-ssm-{region}/latest/debian_{arch}/amazon-ssm-agent.deb",
    "amazon-cloudwatch-agent": "https://amazoncloudwatch-agent-{region}.s3.{region}.amazonaws.com/debian/{arch}/latest/amazon-cloudwatch-agent.deb",
}

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)
_env.filters["seconds"] = defaults.seconds  # "3s" | seconds → 3.0


@dataclass(frozen=True)
class StackFacts:
    """What every host needs to know about its stack. Nothing secret."""

    stack: str
    region: str
    vpc_cidr: str
    ssm_prefix: str
    # Per-stack settings (Pulumi.yaml declares their defaults; the settings are read in settings.py).
    max_replication_lag_seconds: int
    rate_limit_per_10s: int
    lb_addresses: tuple[str, ...] = ()
    web_addresses: tuple[str, ...] = ()
    aws_endpoint_url: str | None = None
    ssh_cidr: str | None = None  # the admin network, when SSH is enabled
    admin_cidr: str | None = None  # the admin network: HAProxy's stats and metrics port is open to it
    domain: str | None = None
    acme_email: str | None = None
    acme_server: str | None = None
    # Only where an address can move by ARP (the local lab): the address keepalived holds on the
    # active load balancer of a pair. On AWS the Elastic IP moves instead.
    lb_virtual_address: str | None = None

    @property
    def lb_pair(self) -> bool:
        """Two load balancers: keepalived decides which one is active and holds the Elastic IP."""
        return len(self.lb_addresses) == 2

    @property
    def acme(self) -> bool:
        return bool(self.domain and self.acme_email and self.acme_server)

    @property
    def ssm_lb_certificate(self) -> str:
        return f"{self.ssm_prefix}/tls/lb-certificate"

    def ssm_db_tls(self, hostname: str) -> str:
        return f"{self.ssm_prefix}/tls/{hostname}"

    @property
    def ssm_db_app_password(self) -> str:
        return f"{self.ssm_prefix}/db/app-password"

    @property
    def ssm_db_replication_password(self) -> str:
        return f"{self.ssm_prefix}/db/replication-password"

    @property
    def ssm_db_failover_password(self) -> str:
        return f"{self.ssm_prefix}/db/failover-password"

    def ssm_program(self, name: str) -> str:
        return f"{self.ssm_prefix}/programs/{name}"

    def ssm_config(self, name: str) -> str:
        return f"{self.ssm_prefix}/config/{name}"


@dataclass(frozen=True)
class FirewallRule:
    match: str
    why: str


@dataclass(frozen=True)
class Backend:
    name: str
    address: str


def render_template(name: str, **values) -> str:
    """A template of templates/, with the server defaults' sections (`haproxy`, `nginx`, ...) besides `values`."""
    return _env.get_template(name).render(**defaults.SERVER_DEFAULTS.for_templates(), **values)


def read_file(name: str) -> str:
    """A file of files/, which a host gets as it is."""
    return (FILES / name).read_text()


def server_id_of(hostname: str) -> int:
    """web-01 → 1: a stable, unique MariaDB server_id per web server."""
    return int(hostname.rsplit("-", 1)[1])


def mariadb_host_pattern(cidr: str) -> str:
    """MariaDB account host for a network: 10.0.0.0/16 → 10.0.0.0/255.255.0.0."""
    network = ipaddress.IPv4Network(cidr)
    return f"{network.network_address}/{network.netmask}"


class _CloudConfigDumper(yaml.SafeDumper):
    """Dumps multi-line file contents as literal blocks, so user-data reads like the files it writes."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_CloudConfigDumper.add_representer(str, _represent_str)


def _file(path: str, content: str, permissions: str = "0644", owner: str = "root:root") -> dict:
    return {"path": path, "content": content, "permissions": permissions, "owner": owner}


_COMMENT_LINE = re.compile(r"^[ \t]*#(?!!).*\n?", re.M)


def without_comment_lines(content: str) -> str:
    """A config file or script as it goes into user-data: without its whole-line `#` comments (EC2's
    16 KB limit; the templates in the repository keep them, and tests validate what is shipped). A `#!`
    line stays, and so does every line with code on it. Python (already shipped without comments,
    `shipped_python`) and files whose `#` is not a comment are passed through."""
    if content.startswith("#!/usr/bin/python3") or not content or "-----BEGIN" in content:
        return content
    return _COMMENT_LINE.sub("", content)


def _cloud_config(hostname: str, packages: Sequence[str], files: list[dict]) -> str:
    files = [{**f, "content": without_comment_lines(f["content"])} for f in files]
    document = {
        "hostname": hostname,
        "preserve_hostname": False,
        "manage_etc_hosts": True,
        "package_update": True,
        "packages": list(packages),
        "write_files": files,
        # One script with `set -e`: runcmd alone would carry on past a failed command.
        "runcmd": [["/usr/local/sbin/webinfra-bootstrap"]],
    }
    # cloud-init runs a document only when its very first line is this header.
    return "#cloud-config\n" + yaml.dump(
        document, Dumper=_CloudConfigDumper, sort_keys=False, width=1000, default_flow_style=False
    )


def _env_file(facts: StackFacts, **values: str) -> dict:
    env = {
        "WEBINFRA_STACK": facts.stack,
        "WEBINFRA_AWS_REGION": facts.region,
        "WEBINFRA_AWS_ENDPOINT_URL": facts.aws_endpoint_url or "",
        **values,
    }
    return _file("/etc/webinfra/webinfra.env", render_template("webinfra.env.j2", env=env))


def host_firewall(facts: StackFacts, hostname: str, role: str) -> str:
    """nftables for one host: default drop inbound, only its role's flows from the peers that need them."""
    rules = []
    if role == "lb":
        rules.append(FirewallRule("tcp dport { 80, 443 }", "HTTP and HTTPS from anywhere"))
        # The load balancer has an IPv6 address, leased by DHCPv6: the server's reply to a request sent
        # to a multicast group is no reply conntrack recognises, so it needs a rule, or the lease
        # cannot renew and the address goes.
        rules.append(
            FirewallRule("ip6 saddr fe80::/10 udp sport 547 udp dport 546", "DHCPv6 replies from the VPC's router")
        )
        if facts.lb_pair:
            rules.append(
                FirewallRule(
                    f"ip saddr {lb_peer(facts, hostname)} ip protocol vrrp", "VRRP from the other load balancer"
                )
            )
        if facts.admin_cidr:
            rules.append(
                FirewallRule(
                    f"ip saddr {facts.admin_cidr} tcp dport {HAPROXY_STATS_PORT}",
                    "HAProxy stats and metrics from the admin network",
                )
            )
    else:
        # The peers are named sets, filled from SSM (firewall_peers): a web server added to or removed
        # from a running stack changes them on every host, with no new user-data (no replacement).
        rules.append(FirewallRule("ip saddr @load_balancers tcp dport 80", "HTTP from the load balancers"))
        rules.append(FirewallRule("ip saddr @web_servers tcp dport 3306", "MySQL from the web servers"))
        rules.append(
            FirewallRule(
                "ip saddr @load_balancers tcp dport 3306", "MySQL from the failover controllers on the load balancers"
            )
        )
    if facts.ssh_cidr:
        rules.append(FirewallRule(f"ip saddr {facts.ssh_cidr} tcp dport 22", "SSH from the admin network"))
    return render_template("host-firewall.nft.j2", hostname=hostname, role=role, rules=rules, peers_file=FIREWALL_PEERS)


def firewall_peers(facts: StackFacts) -> str:
    """The web servers' allowlists (nft commands on host-firewall.nft.j2's named sets): the stack's web
    servers and load balancers as the program declares them now. One transaction: `nft -f` swaps them."""
    if not facts.lb_addresses or not facts.web_addresses:
        raise ValueError("a web server's firewall needs the load balancers' and the web servers' addresses")
    return render_template("firewall-peers.nft.j2", web_servers=facts.web_addresses, load_balancers=facts.lb_addresses)


ROLE_PROCESSES = {"lb": ["haproxy"], "web": ["nginx", "gunicorn", "mariadbd"]}


def role_processes(role: str, *, lb_pair: bool = False) -> list[str]:
    """The processes a host of this role must run (the CloudWatch agent watches them)."""
    return ROLE_PROCESSES[role] + (["keepalived"] if role == "lb" and lb_pair else [])


def lb_address(facts: StackFacts, hostname: str) -> str:
    return facts.lb_addresses[server_id_of(hostname) - 1]


def lb_peer(facts: StackFacts, hostname: str) -> str:
    """The other load balancer of a pair."""
    (peer,) = [address for address in facts.lb_addresses if address != lb_address(facts, hostname)]
    return peer


def vrrp_priority(hostname: str) -> int:
    """lb-01 → keepalived.priority_lb_01 of the server defaults."""
    return int(getattr(defaults.SERVER_DEFAULTS.keepalived, f"priority_{hostname.replace('-', '_')}"))


def keepalived_config(facts: StackFacts, hostname: str) -> str:
    if not facts.lb_pair:
        raise ValueError("keepalived runs only on a load-balancer pair")
    return render_template(
        "keepalived.conf.j2",
        hostname=hostname,
        address=lb_address(facts, hostname),
        peer=lb_peer(facts, hostname),
        priority=vrrp_priority(hostname),
        virtual_address=facts.lb_virtual_address,
        marker_address=VRRP_MARKER_ADDRESS,
    )


# CPython's ast module keeps its recursion state per interpreter, not per thread: two threads parsing at
# once (the program's rendering runs in Pulumi's apply callbacks, concurrently) fail now and then with
# "SystemError: AST constructor recursion depth mismatch". One at a time, and each source once.
_AST_LOCK = threading.Lock()


def shipped_python(path: pathlib.Path) -> str:
    """A host program as it goes into user-data: the same code, without its comments and with each
    docstring cut to its first line (EC2's 16 KB limit; the source beside app/ keeps them)."""
    source = path.read_text()
    with _AST_LOCK:
        return _shipped_python(path.parent.name, path.name, source)


@functools.lru_cache(maxsize=16)
def _shipped_python(directory: str, name: str, source: str) -> str:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body[0].value.value = body[0].value.value.strip().splitlines()[0]
    return f"#!/usr/bin/python3\n# {directory}/{name}, comments and docstrings left out\n{ast.unparse(tree)}\n"


# Programs too large for EC2's 16 KB of user-data travel through SSM Parameter Store (advanced
# parameters hold 8 KB), gzipped, and webinfra-config-sync installs them at boot; the user-data
# carries each one's SHA-256, so a host runs exactly the code declared, and a changed program still
# changes the user-data (the hosts are replaced, as when the program was in it).
PROGRAM_PARAMETER_LIMIT = 8 * 1024
HOST_PROGRAMS = {
    # name: (source, where it is installed)
    "webinfra-app": (APP_DIR / "webinfra_app.py", "/opt/webinfra/app/webinfra_app.py"),
    "webinfra-failover": (FAILOVER_PROGRAM, "/usr/local/sbin/webinfra-failover"),
    "webinfra-db-backup": (FILES / "webinfra-db-backup.sh", "/usr/local/sbin/webinfra-db-backup"),
    "webinfra-db-ship-binlogs": (
        BACKUPS_DIR / "webinfra_db_ship_binlogs.py",
        "/usr/local/sbin/webinfra-db-ship-binlogs",
    ),
    "webinfra-db-restore": (BACKUPS_DIR / "webinfra_db_restore.py", "/usr/local/sbin/webinfra-db-restore"),
}


def shipped_program(path: pathlib.Path) -> str:
    """A host program as it is shipped: Python without comments and long docstrings, a shell script
    without its comment lines."""
    return shipped_python(path) if path.suffix == ".py" else without_comment_lines(path.read_text())


def encode_program(text: str) -> tuple[str, str]:
    """(gzip in base64, SHA-256 of the text): the parameters' value and what the host checks."""
    encoded = base64.b64encode(gzip.compress(text.encode(), compresslevel=9, mtime=0)).decode()
    return encoded, hashlib.sha256(text.encode()).hexdigest()


def _program_chunks(name: str) -> list[str]:
    """The encoded program cut into pieces an SSM parameter holds, in order."""
    encoded = encode_program(shipped_program(HOST_PROGRAMS[name][0]))[0]
    return [encoded[i : i + PROGRAM_PARAMETER_LIMIT] for i in range(0, len(encoded), PROGRAM_PARAMETER_LIMIT)]


def program_parameters(facts: StackFacts) -> dict[str, str]:
    """SSM parameter name → value, for every host program's pieces (components/host_programs.py declares them)."""
    return {
        f"{facts.ssm_program(name)}/{index}": chunk
        for name in HOST_PROGRAMS
        for index, chunk in enumerate(_program_chunks(name))
    }


def program_sync(facts: StackFacts, name: str) -> dict:
    source, path = HOST_PROGRAMS[name]
    return {
        "name": name,
        "parameter": [f"{facts.ssm_program(name)}/{index}" for index in range(len(_program_chunks(name)))],
        "format": "gzip-base64",
        "sha256": encode_program(shipped_program(source))[1],
        "files": [{"path": path, "mode": "0755", "owner": "root:root"}],
        "validate": [
            ["python3", "-c", "import ast, sys; ast.parse(open(sys.argv[1]).read())", "{files[0]}"]
            if source.suffix == ".py"
            else ["bash", "-n", "{files[0]}"]
        ],
    }


def config_sync_manifest(entries: Sequence[dict]) -> str:
    """What webinfra-config-sync keeps in step with SSM on a host (configsync/webinfra_config_sync.py
    documents the keys). Checked here by the program's own reader, so a wrong entry fails at render
    time, not on a running host."""
    from configsync.webinfra_config_sync import check_entry

    for entry in entries:
        check_entry(entry)
    return json.dumps({"entries": list(entries)}, separators=(",", ":")) + "\n"


def lb_certificate_sync(facts: StackFacts) -> dict:
    """The load balancer's certificate: checked by HAProxy itself before it replaces the served one,
    then a graceful reload (the listening sockets pass to the new process: no connection dropped).
    With ACME, certbot's certificate, once issued, owns the file: the stack's self-signed one never
    replaces it."""
    return {
        "name": "lb-certificate",
        "parameter": facts.ssm_lb_certificate,
        "format": "pem-certificate-and-key",
        "files": [{"path": CERTIFICATE_PATH, "part": "value", "mode": "0600", "owner": "root:root"}],
        "validate": [
            [
                "/usr/local/sbin/webinfra-check-haproxy-certificate",
                HAPROXY_CONFIG,
                HAPROXY_RUNTIME,
                CERTIFICATE_PATH,
                "{files[0]}",
            ]
        ],
        "service": "haproxy",
        "reload": [["systemctl", "reload", "haproxy"]],
        "skip_if_exists": [ACME_LINEAGE] if facts.acme else [],
    }


def db_tls_sync(facts: StackFacts, hostname: str) -> dict:
    """A web server's database certificate: it must chain to the stack's CA (the replicas verify it);
    FLUSH SSL makes MariaDB read it for new connections without a restart."""
    return {
        "name": "db-tls",
        "parameter": facts.ssm_db_tls(hostname),
        "format": "pem-certificate-and-key",
        "files": [
            {"path": f"{DB_TLS_DIR}/server.pem", "part": "certificates", "mode": "0644", "owner": "root:root"},
            {"path": f"{DB_TLS_DIR}/server-key.pem", "part": "key", "mode": "0600", "owner": "mysql:mysql"},
        ],
        "validate": [["openssl", "verify", "-CAfile", f"{DB_TLS_DIR}/ca.pem", "{files[0]}"]],
        "service": "mariadb",
        "reload": [["mariadb", "--connect-timeout=10", "-e", "FLUSH SSL"]],
        "skip_if_exists": [],
    }


def password_sync(name: str, parameter: str, env_key: str) -> dict:
    """A generated database password, into a root-only environment file, once: the databases know
    it from the first boot on, so a changed value must not reach a running host this way."""
    return {
        "name": name,
        "parameter": parameter,
        "format": "text",
        "files": [
            {"path": f"/etc/webinfra/secrets/{name}.env", "mode": "0600", "owner": "root:root", "prefix": f"{env_key}="}
        ],
        # Generated passwords are alphanumeric; anything else means a wrong or tampered value.
        "validate": [["grep", "-Eqx", f"{env_key}=[A-Za-z0-9]{{16,128}}", "{files[0]}"]],
        "once": True,
    }


def encode_config(text: str) -> str:
    """Runtime configuration as its SSM parameter holds it: gzip in base64 (format gzip-base64-text)."""
    encoded = base64.b64encode(gzip.compress(text.encode(), compresslevel=9, mtime=0)).decode()
    if len(encoded) > CONFIG_PARAMETER_LIMIT:
        raise ValueError(f"a runtime configuration is {len(encoded)} bytes encoded, over {CONFIG_PARAMETER_LIMIT}")
    return encoded


def runtime_config(facts: StackFacts, backends: Sequence[Backend]) -> dict[str, str]:
    """What a running stack's hosts reload, not what replaces them: SSM parameter name → value. A new
    web server, a new rate limit or a second load balancer changes these, never a host's user-data."""
    return {
        facts.ssm_config("haproxy-runtime.cfg"): encode_config(stack_haproxy_config(facts, backends)[0]),
        facts.ssm_config("failover-servers.json"): encode_config(failover_servers(backends)),
        facts.ssm_config("firewall-peers.nft"): encode_config(firewall_peers(facts)),
    }


_ANY_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"


def address_pattern(cidr: str) -> str:
    """An extended regular expression for the IPv4 addresses of `cidr`, written as a host writes them: what
    a runtime value may name is the stack's VPC, not anywhere on the internet."""
    network = ipaddress.IPv4Network(cidr)
    octets = []
    for index, byte in enumerate(network.network_address.packed):
        bits = min(8, max(0, network.prefixlen - 8 * index))  # this octet's fixed bits
        low, high = byte, byte | (0xFF >> bits)
        if bits == 0:
            octets.append(_ANY_OCTET)
        else:
            octets.append(str(low) if low == high else "(" + "|".join(str(n) for n in range(low, high + 1)) + ")")
    return r"\.".join(octets)


def _lines_only(line_pattern: str, *once: str) -> list[str]:
    """A validate command: every line of the file matches `line_pattern` (grep finding none that does not:
    status 1; grep's own failure, 2, refuses too), and each of `once` matches exactly one line."""
    # -a: a NUL byte is a character of its line (which then matches nothing), not a line break
    script = 'file=$1; shift; grep -aEvqx "$1" "$file"; [ $? -eq 1 ] || exit 1; shift\n'
    script += 'for line in "$@"; do [ "$(grep -aEcx "$line" "$file")" = 1 ] || exit 1; done'
    return ["sh", "-c", script, "sh", "{files[0]}", line_pattern, *once]


# A line of haproxy-runtime.cfg.j2: a comment, a blank line, a section this file may hold, the rate limit and
# version as process variables (each exactly once: without them HAProxy would run with no rate limit), a web
# server (a name web-NN and an address in the stack's VPC). Nothing else reaches HAProxy from SSM: no
# directive, no quoting, no second value on a line (HAProxy's master process runs as root).
HAPROXY_RATE_LIMIT_LINE = r"    set-var proc\.webinfra_rate_limit int\([1-9][0-9]{0,8}\)"
HAPROXY_VERSION_LINE = r"    set-var proc\.webinfra_config str\([0-9a-f]{12}\)"


def haproxy_runtime_line(vpc_cidr: str) -> str:
    server = rf"server web-[0-9]{{2}} {address_pattern(vpc_cidr)}:80"
    return (
        r"(#.*|"
        r"|global|backend web from webinfra_reads|backend web_write from webinfra_writes"
        rf"|{HAPROXY_RATE_LIMIT_LINE}|{HAPROXY_VERSION_LINE}"
        rf"|    {server}|    {server} track web/web-[0-9]{{2}})"
    )


def haproxy_config_sync(facts: StackFacts) -> dict:
    """HAProxy's runtime file (web servers, rate limit): data lines only, then checked by HAProxy with the
    load balancer's configuration, then a graceful reload (the listening sockets pass to the new process:
    no connection dropped)."""
    return {
        "name": "haproxy-runtime",
        "parameter": facts.ssm_config("haproxy-runtime.cfg"),
        "format": "gzip-base64-text",
        "files": [{"path": HAPROXY_RUNTIME, "mode": "0644", "owner": "root:root"}],
        "validate": [
            _lines_only(haproxy_runtime_line(facts.vpc_cidr), HAPROXY_RATE_LIMIT_LINE, HAPROXY_VERSION_LINE),
            ["haproxy", "-c", "-q", "-f", HAPROXY_CONFIG, "-f", "{files[0]}"],
        ],
        "service": "haproxy",
        "reload": [["systemctl", "reload", "haproxy"]],
    }


def failover_servers_sync(facts: StackFacts) -> dict:
    """The failover controller's database servers (data only: names and IPv4 addresses), checked by the
    controller itself with the rest of its configuration before they are installed; a restart picks them
    up (a takeover wait, then it decides again)."""
    return {
        "name": "failover-servers",
        "parameter": facts.ssm_config("failover-servers.json"),
        "format": "gzip-base64-text",
        "files": [{"path": FAILOVER_SERVERS, "mode": "0644", "owner": "root:root"}],
        "validate": [
            [
                "/usr/local/sbin/webinfra-failover",
                "--check-config",
                "--config",
                FAILOVER_CONFIG,
                "--servers",
                "{files[0]}",
            ]
        ],
        "service": "webinfra-failover",
        "reload": [["systemctl", "try-restart", "webinfra-failover"]],
    }


# A line of firewall-peers.nft.j2: a comment, or a flush or fill of one of the two sets with addresses of
# the stack's VPC.
def firewall_peers_line(vpc_cidr: str) -> str:
    address = address_pattern(vpc_cidr)
    return (
        r"(#.*|flush set inet webinfra_host (web_servers|load_balancers)"
        rf"|add element inet webinfra_host (web_servers|load_balancers) \{{ {address}(, {address})* \}})"
    )


def firewall_peers_sync(facts: StackFacts) -> dict:
    """A web server's allowlists: checked by nft against the loaded firewall, applied in one transaction."""
    return {
        "name": "firewall-peers",
        "parameter": facts.ssm_config("firewall-peers.nft"),
        "format": "gzip-base64-text",
        "files": [{"path": FIREWALL_PEERS, "mode": "0644", "owner": "root:root"}],
        # Only these sets' members, each an IPv4 address: the value must not carry any other nft command
        # (it is applied as root). Then nft checks it against the loaded firewall.
        "validate": [
            # each set filled exactly once: a file of flushes alone would empty them (no load balancer,
            # no replica could reach the server)
            _lines_only(
                firewall_peers_line(facts.vpc_cidr),
                r"add element inet webinfra_host web_servers \{ .*",
                r"add element inet webinfra_host load_balancers \{ .*",
            ),
            ["nft", "-c", "-f", "{files[0]}"],
        ],
        "service": "nftables",
        "reload": [["nft", "-f", FIREWALL_PEERS]],
    }


def restart_drop_in(service: str, content: str) -> dict:
    """A systemd drop-in so that this service, crashed, comes back by itself (HAProxy's and the app's
    own units already do)."""
    return _file(f"/etc/systemd/system/{service}.service.d/webinfra-restart.conf", content)


def _common_files(facts: StackFacts, hostname: str, role: str, sync_entries: Sequence[dict]) -> list[dict]:
    return [
        _file("/usr/local/sbin/webinfra-config-sync", shipped_python(CONFIG_SYNC_PROGRAM), "0755"),
        _file(CONFIG_SYNC_MANIFEST, config_sync_manifest(sync_entries)),
        _file("/etc/systemd/system/webinfra-config-sync.service", read_file("webinfra-config-sync.service")),
        _file("/etc/systemd/system/webinfra-config-sync.timer", read_file("webinfra-config-sync.timer")),
        _file("/usr/local/sbin/webinfra-metrics", read_file("webinfra-metrics.sh"), "0755"),
        _file("/etc/systemd/system/webinfra-metrics.service", read_file("webinfra-metrics.service")),
        _file("/etc/systemd/system/webinfra-metrics.timer", read_file("webinfra-metrics.timer")),
        _file("/usr/local/sbin/webinfra-install-agents", read_file("webinfra-install-agents.sh"), "0755"),
        _file(
            "/usr/local/sbin/webinfra-install-cloudwatch-agent",
            render_template("webinfra-install-cloudwatch-agent.sh.j2", url=AWS_AGENT_URLS["amazon-cloudwatch-agent"]),
            "0755",
        ),
        _file("/usr/local/sbin/webinfra-install-aws-package", read_file("webinfra-install-aws-package.sh"), "0755"),
        _file(
            "/etc/webinfra/cloudwatch-agent.json",
            render_template("cloudwatch-agent.json.j2", processes=role_processes(role, lb_pair=facts.lb_pair)),
        ),
        _file("/etc/webinfra/nftables.conf", host_firewall(facts, hostname, role), "0600"),
        _file("/usr/local/sbin/webinfra-install-firewall", read_file("webinfra-install-firewall.sh"), "0755"),
        _file(
            "/usr/local/sbin/webinfra-install-ssm-agent",
            render_template("webinfra-install-ssm-agent.sh.j2", url=AWS_AGENT_URLS["amazon-ssm-agent"]),
            "0755",
        ),
    ]


DB_TLS_DIR = "/etc/mysql/webinfra-tls"


def _stagger() -> str:
    return f"{defaults.SERVER_DEFAULTS.mariadb.backup_stagger_minutes} minutes"


def backup_turn(hostname: str) -> str:
    """HH:MM (UTC) of a web server's turn at the daily full backup: web-01's at backup_hour_utc, each
    next one backup_stagger_minutes later."""
    table = defaults.SERVER_DEFAULTS.mariadb
    minutes = table.backup_hour_utc * 60 + (server_id_of(hostname) - 1) * table.backup_stagger_minutes
    return f"{minutes // 60 % 24:02d}:{minutes % 60:02d}"


def web_cloud_config(
    facts: StackFacts, hostname: str, role: str, primary_address: str | None, *, db_ca: str, backup_bucket: str
) -> str:
    """The cloud-config of one web server: nginx → gunicorn app → MariaDB primary or replica."""
    if role not in ("primary", "replica"):
        raise ValueError(f"role must be primary or replica, got {role!r}")
    if (role == "replica") != bool(primary_address):
        raise ValueError("a replica needs the primary's address, and only a replica")
    env = {
        "WEBINFRA_ROLE": role,
        "WEBINFRA_DB_TLS_CA": f"{DB_TLS_DIR}/ca.pem",
        "WEBINFRA_DB_NAME": DB_NAME,
        "WEBINFRA_DB_USER": DB_APP_USER,
        "WEBINFRA_DB_REPLICATION_USER": DB_REPLICATION_USER,
        "WEBINFRA_DB_LOCAL_SOCKET": "/run/mysqld/mysqld.sock",
        "WEBINFRA_DB_PRIMARY_HOST": primary_address or "local",
        "WEBINFRA_MAX_LAG": str(facts.max_replication_lag_seconds),
        "WEBINFRA_ORPHAN_READS_SECONDS": f"{defaults.seconds(defaults.SERVER_DEFAULTS.failover.orphan_reads):g}",
        "WEBINFRA_WRITES_AT_ONCE": str(defaults.SERVER_DEFAULTS.gunicorn.writes_at_once),
        "WEBINFRA_DB_HEARTBEAT_PERIOD": f"{defaults.seconds(defaults.SERVER_DEFAULTS.failover.heartbeat_period):g}",
        "WEBINFRA_DB_DEAD_STREAM_AFTER_MS": str(
            round(defaults.seconds(defaults.SERVER_DEFAULTS.failover.dead_stream_after) * 1000)
        ),
        "WEBINFRA_DB_DEAD_STREAM_CHECK_SECONDS": f"{defaults.DEAD_STREAM_CHECK_SECONDS:g}",
        "WEBINFRA_BACKUP_BUCKET": backup_bucket,
        "WEBINFRA_BACKUP_FRESH_SECONDS": str(defaults.SERVER_DEFAULTS.mariadb.backup_fresh_hours * 3600),
        "WEBINFRA_BINLOG_SHIP_SECONDS": f"{defaults.seconds(defaults.SERVER_DEFAULTS.mariadb.binlog_ship_interval):g}",
        "WEBINFRA_PRIVATE_ADDRESS": facts.web_addresses[server_id_of(hostname) - 1],
    }
    network_hosts = [mariadb_host_pattern(facts.vpc_cidr)]
    files = [
        _env_file(facts, **env),
        *_common_files(
            facts,
            hostname,
            "web",
            [
                password_sync("db-app", facts.ssm_db_app_password, "WEBINFRA_DB_PASSWORD"),
                password_sync("db-replication", facts.ssm_db_replication_password, "WEBINFRA_DB_REPLICATION_PASSWORD"),
                password_sync("db-failover", facts.ssm_db_failover_password, "WEBINFRA_DB_FAILOVER_PASSWORD"),
                db_tls_sync(facts, hostname),
                program_sync(facts, "webinfra-app"),
                program_sync(facts, "webinfra-db-backup"),
                program_sync(facts, "webinfra-db-ship-binlogs"),
                program_sync(facts, "webinfra-db-restore"),
                firewall_peers_sync(facts),
            ],
        ),
        # Until webinfra-config-sync brings the stack's peers (first boot): empty sets, nobody passes.
        _file(FIREWALL_PEERS, "# webinfra: the stack's peers come from SSM Parameter Store (webinfra-config-sync)\n"),
        _file(
            "/etc/mysql/mariadb.conf.d/60-webinfra.cnf",
            render_template(
                "mariadb.cnf.j2",
                hostname=hostname,
                role=role,
                server_id=server_id_of(hostname),
                tls_dir=DB_TLS_DIR,
            ),
        ),
        _file(
            "/etc/webinfra/db-users.sql",
            render_template(
                "db-users.sql.j2",
                db_name=DB_NAME,
                app_user=DB_APP_USER,
                replication_user=DB_REPLICATION_USER,
                failover_user=DB_FAILOVER_USER,
                app_client_hosts=["localhost", *network_hosts],
                replication_client_hosts=network_hosts,
                failover_client_hosts=network_hosts,
            ),
            "0600",
        ),
        _file(
            "/etc/webinfra/db-self-fence.sql",
            render_template(
                "webinfra-db-self-fence.sql.j2", failover_user=DB_FAILOVER_USER, replication_user=DB_REPLICATION_USER
            ),
        ),
        _file(
            "/etc/webinfra/db-end-dump-threads.sql",
            render_template("webinfra-db-end-dump-threads.sql.j2", replication_user=DB_REPLICATION_USER),
        ),
        _file(f"{DB_TLS_DIR}/ca.pem", db_ca),
        _file("/opt/webinfra/app/schema.sql", (APP_DIR / "schema.sql").read_text()),
        _file("/etc/systemd/system/webinfra-app.service", render_template("webinfra-app.service.j2")),
        restart_drop_in("nginx", read_file("restart-on-failure.conf")),
        restart_drop_in("mariadb", read_file("mariadb-restart.conf")),
        _file(
            "/etc/systemd/system/mariadb.service.d/webinfra-release-stream.conf",
            read_file("mariadb-release-stream.conf"),
        ),
        _file("/usr/local/sbin/webinfra-db-release-stream", read_file("webinfra-db-release-stream.sh"), "0755"),
        _file("/usr/local/sbin/webinfra-db-end-dead-streams", read_file("webinfra-db-end-dead-streams.sh"), "0755"),
        _file("/etc/systemd/system/webinfra-db-backup.service", read_file("webinfra-db-backup.service")),
        _file(
            "/etc/systemd/system/webinfra-db-backup.timer",
            render_template(
                "webinfra-db-backup.timer.j2", hostname=hostname, calendar=backup_turn(hostname), stagger=_stagger()
            ),
        ),
        _file(
            "/etc/systemd/system/webinfra-db-end-dead-streams.service",
            read_file("webinfra-db-end-dead-streams.service"),
        ),
        _file("/etc/systemd/system/webinfra-db-ship-binlogs.service", read_file("webinfra-db-ship-binlogs.service")),
        _file(
            "/etc/webinfra/nginx-site.conf",
            render_template("nginx-site.conf.j2", hostname=hostname, vpc_cidr=facts.vpc_cidr),
        ),
        _file("/usr/local/sbin/webinfra-db-setup", read_file("webinfra-db-setup.sh"), "0755"),
        _file("/usr/local/sbin/webinfra-db-follow", read_file("webinfra-db-follow.sh"), "0755"),
        _file("/usr/local/sbin/webinfra-bootstrap", read_file("web-bootstrap.sh"), "0755"),
    ]
    return _cloud_config(hostname, WEB_PACKAGES, files)


def haproxy_config(
    *,
    acme: bool = False,
    admin_cidr: str | None = None,
    check: HealthCheck | None = None,
    certificate_path: str = CERTIFICATE_PATH,
) -> str:
    """HAProxy's configuration as the load balancer boots with it (user-data), without what a running stack
    changes (haproxy_runtime_config); `check` replaces the table's health-check timings (the benchmark
    compares them)."""
    return render_template(
        "haproxy.cfg.j2",
        check=check or defaults.SERVER_DEFAULTS.haproxy_health_check,
        certificate_path=certificate_path,
        admin_cidr=admin_cidr,
        acme=acme,
        acme_port=ACME_PORT,
    )


def haproxy_runtime_config(backends: Sequence[Backend], rate_limit_per_10s: int) -> tuple[str, str]:
    """(HAProxy's runtime file: the web servers and the rate limit, data only; its version): what the load
    balancers load after haproxy.cfg, and what the smoke test waits to see in X-Webinfra-Config (a digest of
    the file rendered without it)."""
    if not backends:
        raise ValueError("the load balancer needs at least one backend")

    def rendered(version: str) -> str:
        return render_template(
            "haproxy-runtime.cfg.j2",
            backends=list(backends),
            rate_limit_per_10s=rate_limit_per_10s,
            config_version=version,
        )

    version = hashlib.sha256(rendered("").encode()).hexdigest()[:12]
    return rendered(version), version


def stack_haproxy_config(facts: StackFacts, backends: Sequence[Backend]) -> tuple[str, str]:
    """This stack's HAProxy runtime file and its version (haproxy_runtime_config)."""
    return haproxy_runtime_config(backends, facts.rate_limit_per_10s)


FAILOVER_STATE = "/run/webinfra-failover/state.json"


def failover_servers(backends: Sequence[Backend]) -> str:
    """The database servers webinfra-failover watches (the stack's first primary first): data only, the
    part of its configuration a running stack changes (SSM, webinfra-config-sync)."""
    return json.dumps({"servers": [{"name": b.name, "address": b.address} for b in backends]}, indent=2) + "\n"


def failover_config(facts: StackFacts) -> str:
    """What webinfra-failover reads (in user-data): where its servers are listed (failover_servers), how
    to reach them, its timings (server-defaults.yaml, `failover`), and who decides (keepalived's state
    on a pair, and on every load balancer where the stack's Elastic IP points, as EC2 says)."""
    config = {
        "servers_file": FAILOVER_SERVERS,
        "user": DB_FAILOVER_USER,
        "password_file": "/etc/webinfra/secrets/db-failover.env",
        "tls_ca": f"{DB_TLS_DIR}/ca.pem",
        "interval": defaults.seconds(defaults.SERVER_DEFAULTS.failover.poll_interval),
        "failure_after": defaults.seconds(defaults.SERVER_DEFAULTS.failover.failure_after),
        "silence_after": defaults.seconds(defaults.SERVER_DEFAULTS.failover.silence_after),
        "drain_timeout": defaults.seconds(defaults.SERVER_DEFAULTS.failover.drain_timeout),
        "fallback_after": defaults.seconds(defaults.SERVER_DEFAULTS.failover.fallback_after),
        "active_file": "/run/webinfra/lb-state" if facts.lb_pair else None,
        # Only the load balancer the stack's Elastic IP points at decides (webinfra-lb-takeover's filters): on
        # a pair the active one; a lone one while a second one joining it (lbCount 1 -> 2) has not taken it.
        "elastic_ip": {
            "filters": [
                {"Name": "tag:Project", "Values": [PROJECT]},
                {"Name": "tag:Stack", "Values": [facts.stack]},
                {"Name": "tag:Role", "Values": ["lb"]},
            ],
            "instance_id_file": "/var/lib/cloud/data/instance-id",
        },
        "arbiter_interval": defaults.seconds(defaults.SERVER_DEFAULTS.failover.arbiter_interval),
        "arbiter_call_timeout": defaults.seconds(defaults.SERVER_DEFAULTS.failover.arbiter_call_timeout),
        "arbiter_valid_for": defaults.seconds(defaults.SERVER_DEFAULTS.failover.arbiter_valid_for),
        "takeover_after": defaults.seconds(defaults.SERVER_DEFAULTS.failover.takeover_after),
        "state_file": FAILOVER_STATE,
        "stack": facts.stack,
        "region": facts.region,
        "endpoint_url": facts.aws_endpoint_url,
    }
    return json.dumps(config, indent=2) + "\n"


def lb_cloud_config(facts: StackFacts, hostname: str, *, db_ca: str) -> str:
    """The cloud-config of one HAProxy load balancer (alone, or one of a keepalived pair)."""
    paths = {"certificate_path": CERTIFICATE_PATH, "acme_port": ACME_PORT}
    env = {
        "WEBINFRA_ROLE": "lb",
        "WEBINFRA_STATS_PORT": str(HAPROXY_STATS_PORT),
        "WEBINFRA_PRIVATE_ADDRESS": lb_address(facts, hostname),
        "WEBINFRA_LB_PAIR": "yes" if facts.lb_pair else "no",
    }
    files = [
        _env_file(facts, **env),
        *_common_files(
            facts,
            hostname,
            "lb",
            [
                # the certificate first: HAProxy's configuration names it, and is checked with it in place
                lb_certificate_sync(facts),
                haproxy_config_sync(facts),
                password_sync("db-failover", facts.ssm_db_failover_password, "WEBINFRA_DB_FAILOVER_PASSWORD"),
                program_sync(facts, "webinfra-failover"),
                failover_servers_sync(facts),
            ],
        ),
        # Installed by webinfra-bootstrap after the haproxy package (whose own files these would replace).
        _file(
            "/etc/webinfra/haproxy.cfg",
            haproxy_config(acme=facts.acme, admin_cidr=facts.admin_cidr),
        ),
        _file("/etc/webinfra/haproxy-runtime.conf", read_file("haproxy-runtime.conf")),
        _file(FAILOVER_CONFIG, failover_config(facts)),
        _file(f"{DB_TLS_DIR}/ca.pem", db_ca),
        _file("/etc/systemd/system/webinfra-failover.service", read_file("webinfra-failover.service")),
        _file(
            "/usr/local/sbin/webinfra-check-haproxy-certificate",
            read_file("webinfra-check-haproxy-certificate.sh"),
            "0755",
        ),
        _file(
            "/usr/local/sbin/webinfra-bootstrap",
            render_template(
                "lb-bootstrap.sh.j2",
                acme=facts.acme,
                domain=facts.domain,
                lb_pair=facts.lb_pair,
                **paths,
            ),
            "0755",
        ),
    ]
    if facts.lb_pair:
        files += [
            _file("/etc/webinfra/keepalived.conf", keepalived_config(facts, hostname)),
            _file("/usr/local/sbin/webinfra-lb-takeover", read_file("webinfra-lb-takeover.sh"), "0755"),
            _file("/usr/local/sbin/webinfra-lb-state", read_file("webinfra-lb-state.sh"), "0755"),
            _file("/etc/systemd/system/webinfra-lb-eip.service", read_file("webinfra-lb-eip.service")),
            _file("/etc/systemd/system/webinfra-lb-eip.timer", read_file("webinfra-lb-eip.timer")),
            restart_drop_in(
                "keepalived",
                render_template("keepalived-restart.conf.j2", address=facts.lb_virtual_address or VRRP_MARKER_ADDRESS),
            ),
        ]
    if facts.acme:
        acme = {"domain": facts.domain, "acme_email": facts.acme_email, "acme_server": facts.acme_server, **paths}
        files += [
            _file("/usr/local/sbin/webinfra-acme", render_template("webinfra-acme.sh.j2", **acme), "0755"),
            _file(
                "/usr/local/sbin/webinfra-install-certificate",
                render_template("webinfra-install-certificate.sh.j2", **acme),
                "0755",
            ),
            _file("/etc/systemd/system/webinfra-certificate.service", read_file("webinfra-certificate.service")),
            _file("/etc/systemd/system/webinfra-certificate.timer", read_file("webinfra-certificate.timer")),
        ]
    packages = LB_PACKAGES + (LB_PAIR_PACKAGES if facts.lb_pair else ())
    return _cloud_config(hostname, packages, files)


def encode_user_data(cloud_config: str) -> str:
    """gzip (cloud-init reads it as on EC2; mtime 0 so the bytes are stable) and base64 for EC2."""
    compressed = gzip.compress(cloud_config.encode(), compresslevel=9, mtime=0)
    if len(compressed) > USER_DATA_LIMIT_BYTES:
        raise ValueError(f"user-data is {len(compressed)} bytes gzipped, over EC2's {USER_DATA_LIMIT_BYTES}")
    return base64.b64encode(compressed).decode()


def decode_user_data(encoded: str) -> str:
    return gzip.decompress(base64.b64decode(encoded)).decode()
