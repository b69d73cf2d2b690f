"""Rendering: pure checks on the cloud-configs, and the real validators on every rendered file.

The validators are the tools the hosts themselves use (haproxy -c, nginx -t) plus cloud-init's own
schema check, shellcheck and systemd-analyze, all from Debian's packages (installed by .ci/run).
"""

import dataclasses
import json
import pathlib
import subprocess

import jinja2
import pytest
import yaml

from provisioning import render
from provisioning.defaults import SERVER_DEFAULTS, HealthCheck
from tests.helpers import require_tool
from tests.provisioning.helpers import (
    ACME,
    BACKENDS_2,
    BACKENDS_20,
    FACTS,
    PAIR,
    files_of,
    haproxy_check,
    haproxy_files,
    lb_config,
    run,
    runtime_files,
    web_config,
)

# --- pure rendering ---------------------------------------------------------------------------------


def test_comment_lines_are_left_out_and_code_is_kept():
    script = "#!/bin/bash\n# why\nset -e   # inline stays\n    # indented comment\necho '#not a comment'\n"
    assert render.without_comment_lines(script) == "#!/bin/bash\nset -e   # inline stays\necho '#not a comment'\n"
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    assert render.without_comment_lines(pem) == pem


def test_cloud_configs_start_with_the_header_on_the_very_first_line():
    for text in (
        web_config(FACTS, "web-01", "primary", None),
        web_config(FACTS, "web-02", "replica", "10.0.0.11"),
        lb_config(FACTS, "lb-01"),
    ):
        assert text.startswith("#cloud-config\n")
        document = yaml.safe_load(text)
        assert document["runcmd"] == [["/usr/local/sbin/webinfra-bootstrap"]]
        assert document["package_update"] is True


def test_files_are_written_verbatim_from_the_templates_and_the_app():
    files = files_of(web_config(FACTS, "web-01", "primary", None))
    app_dir = pathlib.Path(render.APP_DIR)
    assert "/opt/webinfra/app/webinfra_app.py" not in files  # through SSM: test_host_programs_*
    assert files["/opt/webinfra/app/schema.sql"]["content"] == (app_dir / "schema.sql").read_text()
    # scripts and configs: the template's every line of code, its whole-line comments left out
    template = render.read_file("webinfra-db-setup.sh")
    shipped = files["/usr/local/sbin/webinfra-db-setup"]["content"]
    assert shipped == "".join(
        line for line in template.splitlines(True) if line.startswith("#!") or not line.lstrip().startswith("#")
    )
    assert shipped.startswith("#!/bin/bash\n") and "set -euo pipefail" in shipped and "\n#" not in shipped
    assert files["/usr/local/sbin/webinfra-db-setup"]["permissions"] == "0755"
    assert files["/etc/webinfra/db-users.sql"]["permissions"] == "0600"


def test_server_ids_are_unique_and_replicas_are_read_only():
    configs = {n: files_of(web_config(FACTS, f"web-{n:02d}", "replica", "10.0.0.11")) for n in range(2, 21)}
    ids = {n: c["/etc/mysql/mariadb.conf.d/60-webinfra.cnf"]["content"] for n, c in configs.items()}
    assert all(
        f"server_id                = {n}\n" in text and "read_only                = ON" in text
        for n, text in ids.items()
    )
    primary = files_of(web_config(FACTS, "web-01", "primary", None))["/etc/mysql/mariadb.conf.d/60-webinfra.cnf"][
        "content"
    ]
    # The primary boots read-only too: only the first boot's setup or the failover controller lifts it.
    assert "server_id                = 1\n" in primary and "read_only                = ON" in primary
    for setting in (
        "gtid_strict_mode         = ON",
        "binlog_format            = ROW",
        "relay_log_recovery       = ON",
        "log_bin",
    ):
        assert setting in primary


def test_roles_are_checked():
    with pytest.raises(ValueError):
        web_config(FACTS, "web-02", "replica", None)
    with pytest.raises(ValueError):
        web_config(FACTS, "web-01", "primary", "10.0.0.11")
    with pytest.raises(ValueError):
        web_config(FACTS, "web-01", "leader", None)


def test_templates_refuse_missing_values():
    with pytest.raises(jinja2.UndefinedError):
        render.render_template("haproxy-runtime.cfg.j2", backends=BACKENDS_2)


def test_endpoint_override_reaches_the_hosts():
    facts = dataclasses.replace(FACTS, stack="lab", ssm_prefix="/webinfra/lab", aws_endpoint_url="http://10.0.0.1:5000")
    env = files_of(web_config(facts, "web-01", "primary", None))["/etc/webinfra/webinfra.env"]["content"]
    assert "WEBINFRA_AWS_ENDPOINT_URL=http://10.0.0.1:5000\n" in env


def test_the_agents_install_the_same_way_with_or_without_an_endpoint_override():
    """The lab boots the install path EC2 runs: no switch in the user-data skips the agents."""
    lab = dataclasses.replace(FACTS, aws_endpoint_url="http://10.0.0.1:5000")
    for name in (
        "webinfra-install-agents",
        "webinfra-install-ssm-agent",
        "webinfra-install-cloudwatch-agent",
        "webinfra-install-aws-package",
    ):
        path = f"/usr/local/sbin/{name}"
        assert (
            files_of(web_config(lab, "web-01", "primary", None))[path]
            == files_of(web_config(FACTS, "web-01", "primary", None))[path]
        )
    env = files_of(web_config(lab, "web-01", "primary", None))["/etc/webinfra/webinfra.env"]["content"]
    assert "AGENTS" not in env
    files = all_rendered_files()
    for kind in ("primary", "lb-pair"):
        assert "\nwebinfra-install-agents\n" in files[f"{kind}:/usr/local/sbin/webinfra-bootstrap"]
        assert (
            "https://s3.{region}.amazonaws.com/amazon-ssm-{region}/latest/debian_{arch}/amazon-ssm-agent.deb"
            in files[f"{kind}:/usr/local/sbin/webinfra-install-ssm-agent"]
        )
        assert (
            "https://amazoncloudwatch-agent-{region}.s3.{region}.amazonaws.com/debian/{arch}/latest/amazon-cloudwatch-agent.deb"
            in files[f"{kind}:/usr/local/sbin/webinfra-install-cloudwatch-agent"]
        )
    # apt-get waits (bounded) for dpkg's lock where a bare dpkg -i failed at once (tests/lab proves it on a host)
    installer = files["primary:/usr/local/sbin/webinfra-install-aws-package"]
    assert (
        "apt-get install -y --no-install-recommends \\\n        -o DPkg::Lock::Timeout=" in installer
        and "\ndpkg -i" not in installer
    )


def test_user_data_is_stable_gzip():
    text = web_config(FACTS, "web-01", "primary", None)
    assert render.encode_user_data(text) == render.encode_user_data(text)  # no timestamp: no spurious diffs
    assert render.decode_user_data(render.encode_user_data(text)) == text


def test_oversized_user_data_is_refused():
    with pytest.raises(ValueError, match="over EC2"):
        render.encode_user_data("#cloud-config\n" + "".join(f"# {n} {n * 7919 % 104729}\n" for n in range(20000)))


def test_haproxy_is_round_robin_without_stickiness_and_fast_to_detect_failure():
    config = render.haproxy_config()
    runtime, version = render.stack_haproxy_config(FACTS, BACKENDS_2)
    directives = [
        line.split()[0]
        for line in (config + runtime).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    # stick-table only counts request rates for the rate limit; nothing pins a client to a server
    assert "balance roundrobin" in config and not {"cookie", "stick", "appsession"} & set(directives)
    assert "balance source" not in config and "hash-type" not in config
    assert "http-check expect status 200" in config and "uri /health" in config
    assert "option redispatch 1" in config and "retry-on conn-failure" in config
    # reads and writes: different retry rules (a write that may have reached a server is never replayed)
    assert "use_backend web_write unless METH_GET || METH_OPTIONS\n" in config
    reads = config.split("\ndefaults webinfra_reads from webinfra\n", 1)[1].split("\ndefaults ", 1)[0]
    writes = config.split("\ndefaults webinfra_writes from webinfra\n", 1)[1]
    assert "retry-on conn-failure empty-response response-timeout 502 503 504\n" in reads
    assert "timeout server 1s\n" in reads and "retries 1\n" in reads
    assert "    retry-on conn-failure\n" in writes and "http-reuse never" in writes and "timeout server 10s" in writes
    runtime_writes = runtime.split("\nbackend web_write from webinfra_writes\n", 1)[1]
    assert "check" not in (writes + runtime_writes).replace("track", "")
    for backend in BACKENDS_2:
        assert f"server {backend.name} {backend.address}:80 track web/{backend.name}\n" in runtime_writes
    assert "set-var proc.webinfra_rate_limit int(200)\n" in runtime and f"str({version})" in runtime
    assert "bind 127.0.0.1:8404" in config  # stats local only
    assert SERVER_DEFAULTS.haproxy_health_check.detect_seconds <= 2.0
    assert "observe layer4 error-limit 2 on-error fastinter" in config


def test_the_runtime_files_version_names_its_web_servers_and_rate_limit():
    version = render.stack_haproxy_config(FACTS, BACKENDS_2)[1]
    assert version == render.stack_haproxy_config(FACTS, list(BACKENDS_2))[1]
    assert version != render.stack_haproxy_config(FACTS, BACKENDS_2[:1])[1]
    assert version != render.stack_haproxy_config(dataclasses.replace(FACTS, rate_limit_per_10s=201), BACKENDS_2)[1]


def test_haproxys_default_check_settings_render_for_comparison(tmp_path, certificate):
    defaults = HealthCheck.haproxy_defaults()
    # a host gone quiet: up to 2 s to the first check, then 3 checks that each time out after 2 s, 2 s apart
    assert defaults.detect_seconds == 12.0 and SERVER_DEFAULTS.haproxy_health_check.detect_seconds == 1.75
    config = render.haproxy_config(check=defaults)
    assert (
        "default-server check inter 2s fastinter 2s downinter 2s fall 3 rise 2\n" in config and "observe" not in config
    )
    result = haproxy_check(haproxy_files(tmp_path, FACTS, BACKENDS_2, certificate, main=config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_mariadb_host_patterns():
    assert render.mariadb_host_pattern("10.0.0.0/16") == "10.0.0.0/255.255.0.0"
    assert render.mariadb_host_pattern("192.168.4.0/24") == "192.168.4.0/255.255.255.0"


# --- real validators ----------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path) -> str:
    """A throw-away certificate and key in one PEM file, as the host fetches it from SSM."""
    from lab.mock_tls import private_key, self_signed_cert

    key = private_key({"algorithm": "ECDSA", "ecdsaCurve": "P256"})["privateKeyPem"]
    cert = self_signed_cert(
        {
            "privateKeyPem": key,
            "subject": {"commonName": "test"},
            "ipAddresses": ["198.51.100.10"],
            "validityPeriodHours": 24,
            "allowedUses": ["server_auth", "digital_signature"],
        }
    )["certPem"]
    path = tmp_path / "site.pem"
    path.write_text(cert + key)
    return str(path)


@pytest.mark.parametrize("acme", [False, True], ids=["self-signed", "acme"])
@pytest.mark.parametrize("backends", [BACKENDS_2, BACKENDS_20], ids=["2 servers", "20 servers"])
def test_haproxy_accepts_the_rendered_config(tmp_path, backends, acme, certificate):
    require_tool("haproxy")
    paths = haproxy_files(tmp_path, dataclasses.replace(FACTS, **ACME if acme else {}), backends, certificate)
    config = pathlib.Path(paths[0]).read_text()
    assert ("backend acme" in config) == acme
    result = haproxy_check(paths)
    assert result.returncode == 0, result.stdout + result.stderr
    # and the validator really validates: a broken config is refused, and so is either file alone
    pathlib.Path(paths[0]).write_text(config.replace("balance roundrobin", "balance round-robin"))
    assert haproxy_check(paths).returncode != 0
    pathlib.Path(paths[0]).write_text(config)
    assert haproxy_check(paths[:1]).returncode != 0 and haproxy_check(paths[1:]).returncode != 0


@pytest.mark.lab  # needs root: nginx -t with Debian's nginx.conf (user www-data)
def test_nginx_accepts_the_site_inside_debians_nginx_conf(tmp_path):
    nginx = require_tool("nginx")
    site = files_of(web_config(FACTS, "web-01", "primary", None))["/etc/webinfra/nginx-site.conf"]["content"]
    (tmp_path / "site.conf").write_text(site)
    debian_conf = pathlib.Path("/etc/nginx/nginx.conf").read_text()
    assert "include /etc/nginx/sites-enabled/*;" in debian_conf
    (tmp_path / "nginx.conf").write_text(
        debian_conf.replace("include /etc/nginx/sites-enabled/*;", f"include {tmp_path}/site.conf;")
    )
    result = run(nginx, "-t", "-c", str(tmp_path / "nginx.conf"))
    assert result.returncode == 0 and "syntax is ok" in result.stderr, result.stderr
    (tmp_path / "site.conf").write_text(site.replace("server_tokens off;", "server_tokens maybe;"))
    assert run(nginx, "-t", "-c", str(tmp_path / "nginx.conf")).returncode != 0


def test_cloud_init_accepts_every_rendered_cloud_config(tmp_path, programs):
    cloud_init = require_tool("cloud-init")
    # every instance of the 5-server program: primary, replicas, load balancer
    for instance in programs[5].of_type("aws:ec2/instance:Instance"):
        path = tmp_path / f"{instance.inputs['tags']['Name']}.yaml"
        path.write_text(render.decode_user_data(instance.inputs["userDataBase64"]))
        result = run(cloud_init, "schema", "--config-file", str(path))
        assert result.returncode == 0 and "Valid cloud-config" in result.stdout, (
            f"{instance}: {result.stdout}{result.stderr}"
        )
    path = tmp_path / "broken.yaml"
    path.write_text("#cloud-config\nwrite_files: [{path: 7, permissions: [1]}]\nruncmd: 3\n")
    assert run(cloud_init, "schema", "--config-file", str(path)).returncode != 0


def all_rendered_files() -> dict[str, str]:
    """Every file any host gets, keyed "<host kind>:<path>" (web primary, replica, LB with ACME)."""
    configs = {
        "primary": web_config(FACTS, "web-01", "primary", None),
        "replica": web_config(FACTS, "web-02", "replica", "10.0.0.11"),
        "lb": lb_config(dataclasses.replace(FACTS, **ACME), "lb-01"),
        "lb-pair": lb_config(dataclasses.replace(PAIR, **ACME), "lb-02"),
    }
    return {f"{kind}:{path}": f["content"] for kind, text in configs.items() for path, f in files_of(text).items()}


SCRIPTS = sorted(
    key for key, content in all_rendered_files().items() if ":/usr/local/sbin/" in key and content.startswith("#!/bin/")
)


def test_every_host_gets_its_bootstrap_and_helpers():
    assert {
        "primary:/usr/local/sbin/webinfra-bootstrap",
        "lb:/usr/local/sbin/webinfra-bootstrap",
        "lb:/usr/local/sbin/webinfra-acme",
        "lb:/usr/local/sbin/webinfra-install-certificate",
        "lb:/usr/local/sbin/webinfra-check-haproxy-certificate",
        "lb:/usr/local/sbin/webinfra-install-firewall",
    } <= set(SCRIPTS)


@pytest.mark.parametrize("key", SCRIPTS)
def test_shell_scripts_pass_shellcheck(tmp_path, key):
    shellcheck = require_tool("shellcheck")
    script = tmp_path / key.rsplit("/", 1)[1]
    script.write_text(all_rendered_files()[key])
    result = run(shellcheck, "--severity=warning", "--external-sources", str(script))
    assert result.returncode == 0, result.stdout


@pytest.mark.lab  # needs root: nft -c in a network namespace
@pytest.mark.parametrize("kind", ["primary", "replica", "lb"])
def test_host_firewalls_are_valid_nftables_that_drop_by_default(tmp_path, kind):
    nft = require_tool("nft")
    ruleset = all_rendered_files()[f"{kind}:/etc/webinfra/nftables.conf"]
    assert "type filter hook input priority filter; policy drop;" in ruleset
    if kind == "lb":
        assert "tcp dport { 80, 443 } accept" in ruleset and "3306" not in ruleset and "include" not in ruleset
    else:
        assert "ip saddr @load_balancers tcp dport 80 accept" in ruleset
        assert "ip saddr @web_servers tcp dport 3306 accept" in ruleset
        # the sets' members: from the stack's runtime configuration, which the ruleset includes
        peers = runtime_files(FACTS, BACKENDS_2)[render.FIREWALL_PEERS]
        assert "add element inet webinfra_host load_balancers { 10.0.0.5 }" in peers
        assert f"add element inet webinfra_host web_servers {{ {', '.join(FACTS.web_addresses)} }}" in peers
        peers_file = tmp_path / "firewall-peers.nft"
        peers_file.write_text(peers)
        assert f'include "{render.FIREWALL_PEERS}"' in ruleset
        ruleset = ruleset.replace(render.FIREWALL_PEERS, str(peers_file))
    assert "dport 22" not in ruleset  # no SSH unless the stack enables it
    namespace = f"wt-nftcheck-{kind}"
    run("ip", "netns", "add", namespace)
    try:
        result = run("ip", "netns", "exec", namespace, nft, "-c", "-f", "-", input=ruleset)
        assert result.returncode == 0, result.stderr
    finally:
        run("ip", "netns", "delete", namespace)


def udp_reaches(ruleset: str, *, source_port: int, port: int) -> bool:
    """Whether a UDP datagram from a link-local address reaches `port` on a host running `ruleset`:
    two namespaces of this test's own joined by a veth, the ruleset loaded in the receiving one."""
    nft = require_tool("nft")
    tag = f"{source_port}-{port}"
    # "wt-": not the lab's "wi-" prefix, which `lab down` removes whoever made them
    host, peer = f"wt-fwtest-h{tag}", f"wt-fwtest-p{tag}"
    for namespace in (host, peer):
        run("ip", "netns", "add", namespace)
    try:
        assert (
            run(
                "ip", "link", "add", "fw-h", "netns", host, "type", "veth", "peer", "name", "fw-p", "netns", peer
            ).returncode
            == 0
        )
        for namespace, link, address in ((host, "fw-h", "fe80::1"), (peer, "fw-p", "fe80::2")):
            run("ip", "-n", namespace, "link", "set", link, "up")
            assert run("ip", "-n", namespace, "addr", "add", f"{address}/64", "dev", link, "nodad").returncode == 0
        loaded = run("ip", "netns", "exec", host, nft, "-f", "-", input=ruleset)
        assert loaded.returncode == 0, loaded.stderr
        # The listener says when it is bound; only then is anything sent (a sender that only waited a
        # moment lost every datagram to a listener still starting on a busy machine: a false "dropped").
        listen = (
            "import socket; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
            f"s.bind(('::', {port})); s.settimeout(3); print('bound', flush=True); "
            "print(s.recvfrom(100)[0].decode())"
        )
        listener = subprocess.Popen(
            ["ip", "netns", "exec", host, "python3", "-c", listen],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "bound", listener.stderr
        send = (
            "import socket, time; s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); "
            f"s.bind(('fe80::2', {source_port}, 0, socket.if_nametoindex('fw-p'))); "
            "[s.sendto(b'reply', ('fe80::1', "
            + str(port)
            + ", 0, socket.if_nametoindex('fw-p'))) or time.sleep(0.2) for _ in range(5)]"
        )
        sent = run("ip", "netns", "exec", peer, "python3", "-c", send)
        assert sent.returncode == 0, sent.stderr
        out, _ = listener.communicate(timeout=10)
        return out.strip() == "reply"
    finally:
        for namespace in (host, peer):
            run("ip", "netns", "delete", namespace)


@pytest.mark.lab  # needs root: network namespaces and nftables
def test_the_load_balancer_takes_dhcpv6_replies_so_its_ipv6_lease_renews():
    ruleset = render.host_firewall(FACTS, "lb-01", "lb")
    assert udp_reaches(ruleset, source_port=547, port=546), "a DHCPv6 reply from the router is dropped"
    # and only those: the same datagram to another port, or from another port, is dropped
    assert not udp_reaches(ruleset, source_port=547, port=5460)
    assert not udp_reaches(ruleset, source_port=5470, port=546)


def test_load_balancers_of_a_pair_take_vrrp_from_each_other_only():
    assert "vrrp" not in render.host_firewall(FACTS, "lb-01", "lb")
    for name, peer in (("lb-01", "10.0.1.5"), ("lb-02", "10.0.0.5")):
        ruleset = render.host_firewall(PAIR, name, "lb")
        (vrrp,) = [line.strip() for line in ruleset.splitlines() if "vrrp" in line and "accept" in line]
        assert vrrp.startswith(f"ip saddr {peer} ip protocol vrrp accept"), vrrp
    assert "vrrp" not in render.host_firewall(PAIR, "web-01", "web")


@pytest.mark.lab  # needs root: keepalived checks its scripts as root
@pytest.mark.parametrize("hostname, virtual_address", [("lb-01", None), ("lb-02", "10.0.0.4")])
def test_keepalived_accepts_the_rendered_config(tmp_path, hostname, virtual_address):
    keepalived = require_tool("keepalived")
    config = render.keepalived_config(dataclasses.replace(PAIR, lb_virtual_address=virtual_address), hostname)
    assert f"priority {render.vrrp_priority(hostname)}" in config and "nopreempt" in config
    assert ("10.0.0.4/32 dev $LB_INTERFACE" in config) == bool(virtual_address)
    assert ("169.254.51.1/32 dev lo" in config) == (not virtual_address)  # AWS: a host-local marker only
    # The interface is named at boot (ens5 on Nitro); here it is one of this machine's.
    interface = next(name.name for name in pathlib.Path("/sys/class/net").iterdir() if name.name != "lo")
    (tmp_path / "interface.conf").write_text(f"$LB_INTERFACE={interface}\n")
    path = tmp_path / "keepalived.conf"
    path.write_text(config.replace("/etc/keepalived/webinfra-interface.conf", str(tmp_path / "interface.conf")))
    result = run(keepalived, "-t", "-f", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    # and refuses what it must: a broken config is not installed
    path.write_text(path.read_text().replace("vrrp_script", "vrrp_scripts"))
    assert run(keepalived, "-t", "-f", str(path)).returncode != 0


def test_keepalived_is_for_pairs_only():
    with pytest.raises(ValueError, match="pair"):
        render.keepalived_config(FACTS, "lb-01")
    assert "/etc/webinfra/keepalived.conf" not in files_of(lb_config(FACTS, "lb-01"))
    pair = files_of(lb_config(PAIR, "lb-01"))
    assert {
        "/etc/webinfra/keepalived.conf",
        "/usr/local/sbin/webinfra-lb-takeover",
        "/usr/local/sbin/webinfra-lb-state",
        "/etc/systemd/system/webinfra-lb-eip.timer",
        "/etc/systemd/system/webinfra-lb-eip.service",
    } <= set(pair)
    assert "systemctl enable --now webinfra-lb-eip.timer" in pair["/usr/local/sbin/webinfra-bootstrap"]["content"]
    assert "WEBINFRA_LB_PAIR=yes" in pair["/etc/webinfra/webinfra.env"]["content"]


def test_ssh_reaches_the_firewall_only_when_enabled():
    ruleset = render.host_firewall(dataclasses.replace(FACTS, ssh_cidr="203.0.113.7/32"), "web-01", "web")
    assert "ip saddr 203.0.113.7/32 tcp dport 22 accept" in ruleset


@pytest.mark.parametrize(
    "key",
    [
        "primary:/etc/systemd/system/webinfra-app.service",
        "primary:/etc/systemd/system/webinfra-config-sync.service",
        "replica:/etc/systemd/system/webinfra-db-end-dead-streams.service",
        "lb:/etc/systemd/system/webinfra-config-sync.timer",
        "lb:/etc/systemd/system/webinfra-certificate.service",
        "lb:/etc/systemd/system/webinfra-certificate.timer",
        "primary:/etc/systemd/system/webinfra-metrics.timer",
        "lb:/etc/systemd/system/webinfra-metrics.service",
        "lb-pair:/etc/systemd/system/webinfra-lb-eip.service",
        "lb-pair:/etc/systemd/system/webinfra-lb-eip.timer",
    ],
)
def test_systemd_accepts_the_units(tmp_path, key):
    analyze = require_tool("systemd-analyze")
    kind = key.split(":", 1)[0]
    files = {k.split(":", 1)[1]: v for k, v in all_rendered_files().items() if k.startswith(f"{kind}:")}
    # The host's own scripts are placed under tmp_path (as executables) and the units point there;
    # everything else in the units is verified as rendered.
    for path, content in files.items():
        if path.startswith("/usr/local/sbin/"):
            (tmp_path / path.rsplit("/", 1)[1]).write_text(content)
            (tmp_path / path.rsplit("/", 1)[1]).chmod(0o755)
    for path, content in files.items():
        if path.startswith("/etc/systemd/system/"):
            (tmp_path / path.rsplit("/", 1)[1]).write_text(content.replace("/usr/local/sbin/", f"{tmp_path}/"))
    result = run(analyze, "verify", str(tmp_path / key.rsplit("/", 1)[1]))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "kind, processes",
    [("lb", ["haproxy"]), ("lb-pair", ["haproxy", "keepalived"]), ("primary", ["nginx", "gunicorn", "mariadbd"])],
)
def test_cloudwatch_agent_config_watches_memory_disk_and_the_roles_processes(kind, processes):
    import json

    config = json.loads(all_rendered_files()[f"{kind}:/etc/webinfra/cloudwatch-agent.json"])
    collected = config["metrics"]["metrics_collected"]
    assert collected["mem"]["measurement"] == ["mem_used_percent"] and collected["disk"]["resources"] == ["/"]
    assert [p["exe"] for p in collected["procstat"]] == processes
    assert ["InstanceId"] in config["metrics"]["aggregation_dimensions"]


def test_stats_port_opens_to_the_admin_network_only_when_set(certificate, tmp_path):
    local = render.haproxy_config()
    assert "bind 127.0.0.1:8404" in local and "bind :8404" not in local
    admin = render.haproxy_config(admin_cidr="203.0.113.0/28")
    assert "bind :8404" in admin and "http-request deny unless { src 127.0.0.1 } || { src 203.0.113.0/28 }" in admin
    result = haproxy_check(haproxy_files(tmp_path, FACTS, BACKENDS_2, certificate, main=admin))
    assert result.returncode == 0, result.stdout + result.stderr
    ruleset = render.host_firewall(dataclasses.replace(FACTS, admin_cidr="203.0.113.0/28"), "lb-01", "lb")
    assert "ip saddr 203.0.113.0/28 tcp dport 8404 accept" in ruleset


@pytest.mark.parametrize("kind", ["primary", "replica", "lb", "lb-pair"])
def test_env_file_is_safe_to_source_and_to_read_by_systemd(kind, tmp_path):
    env = all_rendered_files()[f"{kind}:/etc/webinfra/webinfra.env"]
    for line in env.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            assert key.isidentifier() and not any(c in value for c in " '\"$`;&|<>()\\"), line
    path = tmp_path / "webinfra.env"
    path.write_text(env)
    result = subprocess.run(["bash", "-euc", f". {path}; echo $WEBINFRA_STACK"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "dev", result.stderr


def test_replication_is_pointed_from_one_script_over_verified_tls():
    files = all_rendered_files()
    follow = files["replica:/usr/local/sbin/webinfra-db-follow"]
    for setting in (
        "MASTER_SSL = 1",
        "MASTER_SSL_CA = '$WEBINFRA_DB_TLS_CA'",
        "MASTER_SSL_VERIFY_SERVER_CERT = 1",
        "MASTER_PASSWORD = '$WEBINFRA_DB_REPLICATION_PASSWORD'",
        "MASTER_USE_GTID = $gtid_mode",
        "read_only = ON",
    ):
        assert setting in follow, setting
    assert "CHANGE MASTER" not in files["replica:/usr/local/sbin/webinfra-db-setup"]
    assert 'webinfra-db-follow "$primary" slave_pos' in files["replica:/usr/local/sbin/webinfra-db-setup"]
    # The first primary stores its settings, pointing at itself, without starting replication.
    assert (
        'webinfra-db-follow "$WEBINFRA_PRIVATE_ADDRESS" current_pos --stored'
        in files["primary:/usr/local/sbin/webinfra-db-setup"]
    )
    # No host rejoins a primary by itself at boot: only the failover controller does, once it has checked.
    assert not [key for key in files if "db-fence" in key]


# --- runtime configuration from SSM (webinfra-config-sync) -------------------------------------------------


def manifest_of(cloud_config: str) -> dict[str, dict]:
    from configsync.webinfra_config_sync import check_entry

    content = files_of(cloud_config)[render.CONFIG_SYNC_MANIFEST]["content"]
    return {e["name"]: check_entry(e) for e in json.loads(content)["entries"]}


def test_every_host_syncs_its_certificate_and_a_web_server_its_passwords_once():
    lb = manifest_of(lb_config(FACTS, "lb-01"))
    # the certificate before HAProxy's configuration (which names it), the program before its configuration
    # (which it checks)
    assert list(lb) == ["lb-certificate", "haproxy-runtime", "db-failover", "webinfra-failover", "failover-servers"]
    assert lb["db-failover"]["once"] and lb["db-failover"]["parameter"] == FACTS.ssm_db_failover_password
    entry = lb["lb-certificate"]
    assert entry["parameter"] == FACTS.ssm_lb_certificate and entry["files"][0]["path"] == render.CERTIFICATE_PATH
    assert entry["reload"] == [["systemctl", "reload", "haproxy"]], "a restart would drop connections"
    assert entry["validate"][0][0] == "/usr/local/sbin/webinfra-check-haproxy-certificate" and not entry["once"]
    assert entry["skip_if_exists"] == []
    # with a domain, certbot's certificate, once there, is never replaced by the stack's self-signed one
    acme = manifest_of(lb_config(dataclasses.replace(FACTS, **ACME), "lb-01"))
    assert acme["lb-certificate"]["skip_if_exists"] == [render.ACME_LINEAGE]

    web = manifest_of(web_config(FACTS, "web-02", "replica", "10.0.0.11"))
    assert list(web) == [
        "db-app",
        "db-replication",
        "db-failover",
        "db-tls",
        "webinfra-app",
        "webinfra-db-backup",
        "webinfra-db-ship-binlogs",
        "webinfra-db-restore",
        "firewall-peers",
    ]
    assert web["db-app"]["once"] and web["db-replication"]["once"], (
        "a running database would not know a changed password"
    )
    assert web["db-app"]["files"][0]["mode"] == "0600" and web["db-app"]["parameter"] == FACTS.ssm_db_app_password
    tls = web["db-tls"]
    assert tls["parameter"] == FACTS.ssm_db_tls("web-02") and tls["service"] == "mariadb"
    assert [(f["path"], f["part"], f["mode"], f["owner"]) for f in tls["files"]] == [
        (f"{render.DB_TLS_DIR}/server.pem", "certificates", "0644", "root:root"),
        (f"{render.DB_TLS_DIR}/server-key.pem", "key", "0600", "mysql:mysql"),
    ]
    assert ["openssl", "verify", "-CAfile", f"{render.DB_TLS_DIR}/ca.pem", "{files[0]}"] in tls["validate"]
    assert tls["reload"] == [["mariadb", "--connect-timeout=10", "-e", "FLUSH SSL"]], "a restart would cut replication"
    # every parameter a host reads is one its role may read (stack.py grants exactly these)
    assert {str(e["parameter"]) for e in web.values()} == {
        FACTS.ssm_db_app_password,
        FACTS.ssm_db_replication_password,
        FACTS.ssm_db_failover_password,
        FACTS.ssm_db_tls("web-02"),
        str(web["webinfra-app"]["parameter"]),
        str(web["webinfra-db-backup"]["parameter"]),
        str(web["webinfra-db-ship-binlogs"]["parameter"]),
        str(web["webinfra-db-restore"]["parameter"]),
        FACTS.ssm_config("firewall-peers.nft"),
    }
    for program in ("webinfra-app", "webinfra-db-backup", "webinfra-db-ship-binlogs", "webinfra-db-restore"):
        assert all(p.startswith(FACTS.ssm_program(program) + "/") for p in web[program]["parameter"])
    assert web["webinfra-db-backup"]["validate"] == [["bash", "-n", "{files[0]}"]]


def test_a_wrong_sync_entry_fails_at_render_time():
    with pytest.raises(ValueError, match="unknown format"):
        render.config_sync_manifest([{**render.lb_certificate_sync(FACTS), "format": "pem"}])


def test_the_password_check_accepts_a_generated_password_only(tmp_path):
    (command,) = render.password_sync("db-app", "/p", "WEBINFRA_DB_PASSWORD")["validate"]
    for value, accepted in (
        ("Abc123" * 4, True),
        ("short", False),
        ("has space in it 123456", False),
        ("x" * 20 + "';--", False),
    ):
        candidate = tmp_path / "db-app.env"
        candidate.write_text(f"WEBINFRA_DB_PASSWORD={value}\n")
        result = run(*[str(candidate) if arg == "{files[0]}" else arg for arg in command])
        assert (result.returncode == 0) == accepted, value


def test_haproxy_checks_a_candidate_certificate_before_it_replaces_the_served_one(tmp_path, certificate):
    require_tool("haproxy")
    files = files_of(lb_config(FACTS, "lb-01"))
    script = tmp_path / "webinfra-check-haproxy-certificate"
    script.write_text(files["/usr/local/sbin/webinfra-check-haproxy-certificate"]["content"])
    script.chmod(0o755)
    config = tmp_path / "haproxy.cfg"
    config.write_text(files["/etc/webinfra/haproxy.cfg"]["content"])
    runtime = tmp_path / "webinfra-runtime.cfg"
    runtime.write_text(runtime_files(FACTS, BACKENDS_2)[render.HAPROXY_RUNTIME])
    assert run(str(script), str(config), str(runtime), render.CERTIFICATE_PATH, certificate).returncode == 0
    broken = tmp_path / "broken.pem"
    broken.write_text(pathlib.Path(certificate).read_text().split("-----BEGIN PRIVATE KEY-----")[0])  # no key
    result = run(str(script), str(config), str(runtime), render.CERTIFICATE_PATH, str(broken))
    assert result.returncode != 0, result.stdout + result.stderr
    # a first boot: no runtime file yet, so nothing uses the certificate; it is checked with it later
    missing = tmp_path / "not-yet.cfg"
    assert run(str(script), str(config), str(missing), render.CERTIFICATE_PATH, str(broken)).returncode == 0


def test_host_programs_ship_as_their_source_without_comments_and_run(tmp_path):
    import ast

    def code_only(text: str) -> str:
        tree = ast.parse(text)
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (
                isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                and body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                body[0].value.value = "doc"
        return ast.dump(tree)

    files = files_of(web_config(FACTS, "web-01", "primary", None))
    shipped_through_ssm = {
        name: render.shipped_python(source)
        for name, (source, _path) in render.HOST_PROGRAMS.items()
        if source.suffix == ".py"
    }
    for shipped, source in (
        (files["/usr/local/sbin/webinfra-config-sync"]["content"], render.CONFIG_SYNC_PROGRAM),
        (shipped_through_ssm["webinfra-app"], render.APP_DIR / "webinfra_app.py"),
        (shipped_through_ssm["webinfra-failover"], render.FAILOVER_PROGRAM),
    ):
        path = str(source)
        assert shipped.startswith("#!/usr/bin/python3\n") and code_only(shipped) == code_only(source.read_text()), path
        assert len(shipped) < len(source.read_text())
    program = tmp_path / "webinfra-config-sync"
    program.write_text(files["/usr/local/sbin/webinfra-config-sync"]["content"])
    result = run("/usr/bin/python3", str(program), "--help")
    assert result.returncode == 0 and "runtime configuration from SSM" in result.stdout, result.stderr
    controller = tmp_path / "webinfra-failover"
    controller.write_text(shipped_through_ssm["webinfra-failover"])
    result = run("/usr/bin/python3", str(controller), "--help")
    assert result.returncode == 0 and "automatic failover" in result.stdout, result.stderr


def test_every_service_a_host_runs_restarts_by_itself_after_a_crash():
    import configparser

    def restart_of(unit_text: str) -> str | None:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read_string(unit_text)
        return parser.get("Service", "Restart", fallback=None)

    web = files_of(web_config(FACTS, "web-02", "replica", "10.0.0.11"))
    pair = files_of(lb_config(PAIR, "lb-01"))

    def drop_in(files: dict, service: str) -> str:
        return files[f"/etc/systemd/system/{service}.service.d/webinfra-restart.conf"]["content"]

    for files, service in ((web, "nginx"), (pair, "keepalived")):
        assert restart_of(drop_in(files, service)) == "on-failure", service
        assert "StartLimitBurst=5" in drop_in(files, service)
    # MariaDB: Debian's own on-abnormal (a crash, not a bad my.cnf), sooner
    assert restart_of(drop_in(web, "mariadb")) is None and "RestartSec=1s" in drop_in(web, "mariadb")
    assert restart_of(pathlib.Path("/lib/systemd/system/mariadb.service").read_text()) == "on-abnormal"
    # keepalived, however it stopped: not active any more, and the address it held released
    keepalived = drop_in(pair, "keepalived")
    assert "ExecStopPost=/usr/local/sbin/webinfra-lb-state STOPPED\n" in keepalived
    assert f"ip addr del {render.VRRP_MARKER_ADDRESS}/32" in keepalived
    assert restart_of(web["/etc/systemd/system/webinfra-app.service"]["content"]) == "on-failure"
    # HAProxy: Debian's own unit (the package the hosts install is the one installed here)
    assert restart_of(pathlib.Path("/lib/systemd/system/haproxy.service").read_text()) == "always"
