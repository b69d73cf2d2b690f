"""What the provisioning tests share: a stack's facts, backends, and reading rendered user-data."""

from __future__ import annotations

import dataclasses
import subprocess
from typing import Any

import yaml

from provisioning import render
from provisioning.render import Backend, StackFacts

FACTS = StackFacts(
    stack="dev",
    region="eu-west-1",
    vpc_cidr="10.0.0.0/16",
    ssm_prefix="/webinfra/dev",
    max_replication_lag_seconds=30,
    rate_limit_per_10s=200,
    lb_addresses=("10.0.0.5",),
    web_addresses=tuple(f"10.0.{n % 3}.{10 + n}" for n in range(1, 21)),
)
PAIR = dataclasses.replace(FACTS, lb_addresses=("10.0.0.5", "10.0.1.5"))
BACKUP_BUCKET = "webinfra-dev-backups-0123456789abcdefghijklmnop"
DB_CA = "-----BEGIN CERTIFICATE-----\nMIIB (the stack's database CA: public, in user-data)\n-----END CERTIFICATE-----\n"


def web_config(*args, **kwargs) -> str:
    return render.web_cloud_config(*args, db_ca=DB_CA, backup_bucket=BACKUP_BUCKET, **kwargs)


def lb_config(*args, **kwargs) -> str:
    return render.lb_cloud_config(*args, db_ca=DB_CA, **kwargs)


ACME: dict[str, Any] = {
    "domain": "www.example.com",
    "acme_email": "ops@example.com",
    "acme_server": "https://acme.example.com/dir",
}
BACKENDS_2 = [Backend("web-01", "10.0.0.11"), Backend("web-02", "10.0.1.12")]
BACKENDS_20 = [Backend(f"web-{n:02d}", f"10.0.{n % 3}.{10 + n}") for n in range(1, 21)]


def files_of(cloud_config: str) -> dict[str, dict]:
    return {f["path"]: f for f in yaml.safe_load(cloud_config)["write_files"]}


def run(*command, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, input=input)


def runtime_files(facts: StackFacts, backends) -> dict[str, str]:
    """What webinfra-config-sync installs from the stack's runtime configuration parameters, by the path
    its manifest entries name (the program's own entries and values, decoded as the host decodes them)."""
    import base64
    import gzip

    values = render.runtime_config(facts, backends)
    entries = [
        render.haproxy_config_sync(facts),
        render.failover_servers_sync(facts),
        render.firewall_peers_sync(facts),
    ]
    assert {e["parameter"] for e in entries} == set(values)
    return {
        entry["files"][0]["path"]: gzip.decompress(base64.b64decode(values[entry["parameter"]])).decode()
        for entry in entries
    }


def haproxy_files(tmp_path, facts: StackFacts, backends, certificate: str, main: str | None = None) -> list[str]:
    """HAProxy's two files as a load balancer loads them, written under tmp_path: its configuration (from its
    user-data unless `main` is given) with the test's certificate in place, then the runtime file (SSM)."""
    if main is None:
        main = files_of(lb_config(facts, "lb-01"))["/etc/webinfra/haproxy.cfg"]["content"]
    config = tmp_path / "haproxy.cfg"
    config.write_text(main.replace(render.CERTIFICATE_PATH, certificate))
    runtime = tmp_path / "webinfra-runtime.cfg"
    runtime.write_text(runtime_files(facts, backends)[render.HAPROXY_RUNTIME])
    return [str(config), str(runtime)]


def haproxy_check(paths: list[str]) -> subprocess.CompletedProcess:
    """`haproxy -c` on these files, in order, as the load balancer's unit loads them."""
    return run("haproxy", "-c", *[word for path in paths for word in ("-f", path)])
