"""webinfra-config-sync against moto's SSM, with real openssl, in a temporary directory; validate and
reload are commands the test can count. The lab test (tests/lab/test_lab.py) runs the real thing on
the load balancers and a web server, with HAProxy and MariaDB."""

import grp
import json
import os
import pathlib
import pwd
from typing import Any

import boto3
import pytest
from moto import mock_aws

from configsync import webinfra_config_sync as sync
from lab.mock_tls import cert_request, locally_signed_cert, private_key, self_signed_cert

# Files the tests install belong to whoever runs them (root in CI and on hosts), so the fast tier runs
# without root too.
OWNER = f"{pwd.getpwuid(os.getuid()).pw_name}:{grp.getgrgid(os.getgid()).gr_name}"
PARAMETER = "/webinfra/test/tls/lb-certificate"


def key_pem() -> str:
    return private_key({"algorithm": "ECDSA", "ecdsaCurve": "P256"})["privateKeyPem"]


def certificate_and_key(hours: int = 24, name: str = "198.51.100.10") -> str:
    key = key_pem()
    cert = self_signed_cert(
        {
            "privateKeyPem": key,
            "subject": {"commonName": name},
            "ipAddresses": [name],
            "validityPeriodHours": hours,
            "allowedUses": ["server_auth", "digital_signature"],
        }
    )["certPem"]
    return cert + key


def ca() -> tuple[str, str]:
    key = key_pem()
    cert = self_signed_cert(
        {
            "privateKeyPem": key,
            "subject": {"commonName": "db ca"},
            "isCaCertificate": True,
            "validityPeriodHours": 24,
            "allowedUses": ["cert_signing", "crl_signing"],
        }
    )["certPem"]
    return cert, key


def signed_by(ca_cert: str, ca_key: str, address: str = "10.0.0.11") -> str:
    key = key_pem()
    request = cert_request({"privateKeyPem": key, "subject": {"commonName": address}, "ipAddresses": [address]})[
        "certRequestPem"
    ]
    cert = locally_signed_cert(
        {
            "certRequestPem": request,
            "caCertPem": ca_cert,
            "caPrivateKeyPem": ca_key,
            "validityPeriodHours": 24,
            "allowedUses": ["server_auth", "client_auth", "digital_signature", "key_encipherment"],
        }
    )["certPem"]
    return cert + key


@pytest.fixture
def ssm(monkeypatch):
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(variable, "testing")
    with mock_aws():
        yield boto3.client("ssm", region_name="eu-west-1")


def put(ssm, value: str, name: str = PARAMETER) -> None:
    ssm.put_parameter(Name=name, Type="SecureString", Value=value, Overwrite=True)


class Host:
    """A manifest in a temporary directory, with a validate command and a reload command that leave
    a line in a log each time they run."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self.log = root / "commands.log"
        self.log.touch()

    def record(self, what: str) -> list[str]:
        return ["sh", "-c", f'echo "{what} $1" >> {self.log}', "sh"]

    def manifest(self, entries: list[dict]) -> str:
        path = self.root / "config-sync.json"
        path.write_text(json.dumps({"entries": entries}))
        return str(path)

    def lb_entry(self, **extra) -> dict:
        return {
            "name": "lb-certificate",
            "parameter": PARAMETER,
            "format": "pem-certificate-and-key",
            "files": [{"path": str(self.root / "certs/site.pem"), "mode": "0600", "owner": OWNER}],
            "validate": [["openssl", "x509", "-noout", "-in", "{files[0]}"], [*self.record("validated"), "{files[0]}"]],
            "reload": [self.record("reloaded")],
            **extra,
        }

    def commands(self) -> list[str]:
        return [line.split()[0] for line in self.log.read_text().splitlines()]


@pytest.fixture
def host(tmp_path) -> Host:
    return Host(tmp_path)


def run(host_manifest: str, ssm, running: bool = True) -> int:
    return sync.main(["--manifest", host_manifest], client=ssm, service_running=lambda service: running)


def test_a_changed_parameter_is_installed_once_and_reloads_once(ssm, host):
    manifest = host.manifest([host.lb_entry()])
    first, second = certificate_and_key(), certificate_and_key()
    put(ssm, first)
    assert run(manifest, ssm) == 0
    site = host.root / "certs/site.pem"
    assert site.read_text() == first.strip() + "\n"
    assert (site.stat().st_mode & 0o777, site.stat().st_uid) == (0o600, os.getuid())  # OWNER
    assert host.commands() == ["validated", "reloaded"]

    # unchanged: nothing validated, nothing reloaded
    assert run(manifest, ssm) == 0
    assert host.commands() == ["validated", "reloaded"]

    # re-minted: the new one is validated as a candidate beside the destination, then moved in
    put(ssm, second)
    assert run(manifest, ssm) == 0
    assert site.read_text() == second.strip() + "\n"
    assert host.commands() == ["validated", "reloaded", "validated", "reloaded"]
    validated = host.log.read_text().splitlines()[2].split()[1]
    assert os.path.dirname(validated) == str(site.parent) and validated != str(site)
    assert sorted(p.name for p in site.parent.iterdir()) == ["site.pem"], "a candidate file was left behind"


@pytest.mark.parametrize("bad", ["not a certificate", "key of another", "expired", "validator says no"])
def test_an_invalid_value_is_refused_and_the_installed_one_stays(ssm, host, bad, capsys):
    entry = host.lb_entry()
    good = certificate_and_key()
    put(ssm, good)
    assert run(host.manifest([entry]), ssm) == 0
    site = host.root / "certs/site.pem"
    installed = site.read_bytes()

    value = {
        "not a certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "key of another": certificate_and_key().split("-----BEGIN PRIVATE KEY-----")[0] + key_pem(),
        "expired": certificate_and_key(hours=0),
        "validator says no": certificate_and_key(),
    }[bad]
    if bad == "validator says no":
        entry["validate"] = [["sh", "-c", "echo 'no such certificate file' >&2; exit 1"]]
    put(ssm, value)
    assert run(host.manifest([entry]), ssm) == 1
    assert site.read_bytes() == installed
    assert host.commands() == ["validated", "reloaded"], "a refused value was validated further or reloaded"
    assert sorted(p.name for p in site.parent.iterdir()) == ["site.pem"], "a candidate file was left behind"
    out = capsys.readouterr().out
    assert "REFUSED, the installed one stays" in out
    assert "PRIVATE KEY" not in out and value.strip().splitlines()[1] not in out, "the value reached the log"


def test_a_certificate_certbot_installed_is_never_overwritten(ssm, host):
    acme_lineage = host.root / "letsencrypt/live/webinfra"
    manifest = host.manifest([host.lb_entry(skip_if_exists=[str(acme_lineage)])])
    put(ssm, certificate_and_key())
    assert run(manifest, ssm) == 0  # before the ACME certificate: the stack's self-signed one
    acme_lineage.mkdir(parents=True)
    issued = certificate_and_key(name="203.0.113.50")
    site = host.root / "certs/site.pem"
    site.write_text(issued)  # as webinfra-install-certificate leaves it
    put(ssm, certificate_and_key())  # and a `pulumi up` re-mints the self-signed one
    assert run(manifest, ssm) == 0
    assert site.read_text() == issued
    assert host.commands() == ["validated", "reloaded"]


def test_a_database_bundle_is_split_verified_against_the_ca_and_flushed(ssm, host):
    ca_cert, ca_key = ca()
    (host.root / "ca.pem").write_text(ca_cert)
    tls = host.root / "tls"
    entry = {
        "name": "db-tls",
        "parameter": "/webinfra/test/tls/web-01",
        "format": "pem-certificate-and-key",
        "files": [
            {"path": str(tls / "server.pem"), "part": "certificates", "mode": "0644", "owner": OWNER},
            {"path": str(tls / "server-key.pem"), "part": "key", "mode": "0600", "owner": OWNER},
        ],
        "validate": [["openssl", "verify", "-CAfile", str(host.root / "ca.pem"), "{files[0]}"]],
        "service": "mariadb",
        "reload": [host.record("flushed")],
    }
    manifest = host.manifest([entry])
    bundle = signed_by(ca_cert, ca_key)
    put(ssm, bundle, "/webinfra/test/tls/web-01")
    assert run(manifest, ssm, running=False) == 0  # first boot: MariaDB reads the files when it starts
    assert host.commands() == []
    assert (tls / "server.pem").read_text().count("BEGIN CERTIFICATE") == 1
    assert (
        "PRIVATE KEY" not in (tls / "server.pem").read_text() and "PRIVATE KEY" in (tls / "server-key.pem").read_text()
    )
    assert (tls / "server-key.pem").stat().st_mode & 0o777 == 0o600 and (
        tls / "server.pem"
    ).stat().st_mode & 0o777 == 0o644

    put(ssm, signed_by(ca_cert, ca_key), "/webinfra/test/tls/web-01")
    assert run(manifest, ssm) == 0
    assert host.commands() == ["flushed"]

    # signed by some other CA: replicas would refuse it, so the host does
    other_ca = ca()
    before = (tls / "server.pem").read_bytes(), (tls / "server-key.pem").read_bytes()
    put(ssm, signed_by(*other_ca), "/webinfra/test/tls/web-01")
    assert run(manifest, ssm) == 1
    assert ((tls / "server.pem").read_bytes(), (tls / "server-key.pem").read_bytes()) == before
    assert host.commands() == ["flushed"]


def test_one_refused_entry_does_not_hold_back_the_others(ssm, host):
    allowlist = {
        "name": "allowlist",
        "parameter": "/webinfra/test/allowlist",
        "format": "text",
        "files": [{"path": str(host.root / "allowlist.txt"), "mode": "0644", "owner": OWNER}],
        "reload": [host.record("allowlist-reloaded")],
    }
    manifest = host.manifest([host.lb_entry(), allowlist])
    put(ssm, "garbage")
    put(ssm, "198.51.100.0/24\n203.0.113.7/32", "/webinfra/test/allowlist")
    assert run(manifest, ssm) == 1
    assert (host.root / "allowlist.txt").read_text() == "198.51.100.0/24\n203.0.113.7/32\n"
    assert host.commands() == ["allowlist-reloaded"]


def test_a_missing_parameter_fails_after_bounded_retries():
    class Failing:
        calls = 0

        def get_parameter(self, **kwargs):
            Failing.calls += 1
            raise ConnectionError("no route to the endpoint")

    waits: list[float] = []
    with pytest.raises(ConnectionError):
        sync.fetch(Failing(), PARAMETER, retry_for=0.0, sleep=waits.append)
    assert Failing.calls == 1 and waits == []  # the timer's runs: once, the next run is minutes away

    class Late:
        calls = 0

        def get_parameter(self, **kwargs):
            Late.calls += 1
            if Late.calls < 3:
                raise ConnectionError("credentials not there yet")
            return {"Parameter": {"Value": "v"}}

    assert sync.fetch(Late(), PARAMETER, retry_for=60.0, sleep=waits.append) == "v"
    assert waits == [2, 2]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": "yaml"}, "unknown format"),
        ({"files": [{"path": "/x", "part": "key"}], "format": "text"}, "wants part 'key'"),
        ({"files": [{"path": "relative.pem"}]}, "absolute path"),
        ({"restart": [["systemctl", "restart", "x"]]}, "unknown keys"),
    ],
)
def test_a_wrong_manifest_entry_is_refused_whole(host, change, message):
    with pytest.raises(ValueError, match=message):
        sync.load_manifest(host.manifest([{**host.lb_entry(), **change}]))


def test_a_password_is_written_once_as_an_environment_file(ssm, host):
    entry: dict[str, Any] = {
        "name": "db-app",
        "parameter": "/webinfra/test/db/app-password",
        "format": "text",
        "once": True,
        "files": [
            {
                "path": str(host.root / "secrets/db-app.env"),
                "mode": "0600",
                "owner": OWNER,
                "prefix": "WEBINFRA_DB_PASSWORD=",
            }
        ],
        "validate": [["grep", "-Eqx", "WEBINFRA_DB_PASSWORD=[A-Za-z0-9]{16,128}", "{files[0]}"]],
    }
    manifest = host.manifest([entry])
    put(ssm, "Abcdefgh12345678", entry["parameter"])
    assert run(manifest, ssm) == 0
    env = host.root / "secrets/db-app.env"
    assert env.read_text() == "WEBINFRA_DB_PASSWORD=Abcdefgh12345678\n" and env.stat().st_mode & 0o777 == 0o600
    assert env.parent.stat().st_mode & 0o777 == 0o700
    # the database knows the first one: a changed value is not written under a running host
    put(ssm, "Changed0000000000", entry["parameter"])
    assert run(manifest, ssm) == 0
    assert env.read_text() == "WEBINFRA_DB_PASSWORD=Abcdefgh12345678\n"
    # and a value of the wrong shape never reaches a fresh host
    env.unlink()
    put(ssm, "not-a-generated-password!", entry["parameter"])
    assert run(manifest, ssm) == 1 and not env.exists()


def served_certificate(port: int) -> str:
    import subprocess

    result = subprocess.run(
        [
            "sh",
            "-c",
            f"openssl s_client -starttls mysql -connect 127.0.0.1:{port} </dev/null 2>/dev/null"
            " | openssl x509 -noout -fingerprint -sha256",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return result.stdout.strip()


def test_mariadb_serves_a_new_certificate_after_the_rendered_entry_without_a_restart(ssm, tmp_path):
    """The web server's rendered db-tls entry, run against a real MariaDB (paths moved under tmp_path)."""
    import subprocess

    from provisioning import render
    from tests.app.helpers import FACTS, start_mariadb

    ca_cert, ca_key = ca()
    tls = tmp_path / "tls"
    tls.mkdir()
    first = signed_by(ca_cert, ca_key, "127.0.0.1")
    (tls / "ca.pem").write_text(ca_cert)
    (tls / "server.pem").write_text(first.split("-----BEGIN PRIVATE KEY-----")[0])
    (tls / "server-key.pem").write_text("-----BEGIN PRIVATE KEY-----" + first.split("-----BEGIN PRIVATE KEY-----")[1])
    server = start_mariadb(tmp_path, "web-01", "primary", tls)
    try:
        entry = json.loads(json.dumps(render.db_tls_sync(FACTS, "web-01")).replace(render.DB_TLS_DIR, str(tls)))
        entry["reload"] = [[entry["reload"][0][0], f"--socket={server.socket}", *entry["reload"][0][1:]]]
        if os.geteuid() != 0:  # an ordinary user (the fast tier) cannot give files to mysql: as root, as rendered
            for file in entry["files"]:
                file["owner"] = OWNER
        manifest = tmp_path / "config-sync.json"
        manifest.write_text(json.dumps({"entries": [entry]}))
        # MariaDB answers the handshake only where some account may connect from
        server.sql("CREATE USER 'probe'@'127.0.0.1' IDENTIFIED BY 'unused-password-1234'")
        before = served_certificate(server.port)
        assert before.startswith("sha256 Fingerprint=") or before.startswith("SHA256 Fingerprint="), before

        # a re-minted certificate for the same address, from the same CA
        bundle = signed_by(ca_cert, ca_key, "127.0.0.1")
        put(ssm, bundle, entry["parameter"])
        assert sync.main(["--manifest", str(manifest)], client=ssm, service_running=lambda s: True) == 0
        after = served_certificate(server.port)
        expected = subprocess.run(
            ["openssl", "x509", "-noout", "-fingerprint", "-sha256"], input=bundle, capture_output=True, text=True
        ).stdout.strip()
        assert after == expected != before
        assert server.process.poll() is None, "MariaDB was restarted"
    finally:
        server.stop()


def test_a_manifest_entry_needs_its_parameter_and_files(host):
    entry = host.lb_entry()
    del entry["parameter"]
    with pytest.raises(ValueError, match=r"missing keys \['parameter'\]"):
        sync.load_manifest(host.manifest([entry]))
    assert sync.load_manifest(host.manifest([host.lb_entry()]))[0]["service"] is None


def test_a_program_is_installed_only_with_the_digest_the_host_expects(ssm, host):
    from provisioning import render

    program = "#!/usr/bin/python3\nprint('webinfra')\n"
    encoded, sha256 = render.encode_program(program)
    entry: dict[str, Any] = {
        "name": "program",
        "parameter": "/webinfra/test/programs/example",
        "format": "gzip-base64",
        "sha256": sha256,
        "files": [{"path": str(host.root / "bin/example"), "mode": "0755", "owner": OWNER}],
    }
    manifest = host.manifest([entry])
    # Another program under the same name (a parameter overwritten by someone else): refused, nothing written.
    put(ssm, render.encode_program("#!/usr/bin/python3\nimport os\nos.system('id')\n")[0], entry["parameter"])
    assert run(manifest, ssm) == 1
    assert not (host.root / "bin/example").exists()
    put(ssm, "not base64 at all", entry["parameter"])
    assert run(manifest, ssm) == 1
    put(ssm, encoded, entry["parameter"])
    assert run(manifest, ssm) == 0
    installed = host.root / "bin/example"
    assert installed.read_text() == program and oct(installed.stat().st_mode & 0o777) == "0o755"
    with pytest.raises(ValueError, match="needs the content's sha256"):
        sync.load_manifest(host.manifest([{**entry, "sha256": None}]))


def test_runtime_configuration_is_decoded_validated_installed_and_reloaded_on_each_change(ssm, host):
    from provisioning import render

    entry: dict[str, Any] = {
        **render.haproxy_config_sync(render.StackFacts("test", "eu-west-1", "10.0.0.0/16", "/webinfra/test", 30, 200)),
        "files": [{"path": str(host.root / "haproxy.cfg"), "mode": "0644", "owner": OWNER}],
        # the rendered entry's own checks stand in for nothing: a command the test counts, refusing "broken"
        "validate": [
            ["sh", "-c", '! grep -q broken "$1"', "sh", "{files[0]}"],
            [*host.record("validated"), "{files[0]}"],
        ],
        "reload": [host.record("reloaded")],
        "service": None,
    }
    assert entry["format"] == "gzip-base64-text"
    manifest = host.manifest([entry])
    installed = host.root / "haproxy.cfg"
    for value, status, content in (
        ("global\n    maxconn 100\n", 0, "global\n    maxconn 100\n"),
        ("global\n    maxconn 100\n", 0, "global\n    maxconn 100\n"),  # unchanged: no reload
        ("global\n    broken\n", 1, "global\n    maxconn 100\n"),  # refused: the installed one stays
        ("global\n    maxconn 200\n", 0, "global\n    maxconn 200\n"),
    ):
        put(ssm, render.encode_config(value), entry["parameter"])
        assert run(manifest, ssm) == status
        assert installed.read_text() == content
    put(ssm, "not gzip", entry["parameter"])
    assert run(manifest, ssm) == 1 and installed.read_text() == "global\n    maxconn 200\n"
    assert host.log.read_text().count("reloaded") == 2
