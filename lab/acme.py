"""The lab's ACME server: pebble (Let's Encrypt's test server, Debian's package) on the lab's
"internet", so a stack with a domain runs the whole ACME flow for real: certbot on the load balancer
asks pebble, pebble resolves the domain (pebble-challtestsrv answers every name with the load
balancer's public address) and fetches the HTTP-01 challenge through HAProxy.

pebble's own HTTPS listener gets a certificate from a lab CA; the lab adds that CA to the load
balancer's trust store (as Let's Encrypt's is already trusted on EC2). Clients verify the issued
certificates with pebble's root, fetched from its management interface.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import time

from lab import mock_tls
from lab.network import CLIENT_NS, in_ns
from lab.topology import CLIENT_ADDRESS

DOMAIN = "www.webinfra.test"
EMAIL = "ops@webinfra.test"
DIRECTORY = f"https://{CLIENT_ADDRESS}/dir"
MANAGEMENT = "https://127.0.0.1:15000"
DNS = "127.0.0.1:8053"


def overrides() -> dict[str, str]:
    """The settings a lab stack with ACME uses."""
    return {"domain": DOMAIN, "acmeEmail": EMAIL, "acmeServer": DIRECTORY}


def _listener_certificate(directory: pathlib.Path) -> str:
    ca, cert, key = mock_tls.lab_listener("webinfra lab ACME listener", ip_addresses=(CLIENT_ADDRESS,))
    (directory / "pebble-cert.pem").write_text(cert)
    (directory / "pebble-key.pem").write_text(key)
    (directory / "pebble-key.pem").chmod(0o600)
    return ca


def start(directory: pathlib.Path, lb_public_ip: str) -> str:
    """Start pebble and its DNS in the client namespace; returns the CA the LB must trust."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _listener_certificate(directory)
    config = {
        "pebble": {
            "listenAddress": f"{CLIENT_ADDRESS}:443",
            "managementListenAddress": "127.0.0.1:15000",
            "certificate": str(directory / "pebble-cert.pem"),
            "privateKey": str(directory / "pebble-key.pem"),
            "httpPort": 80,
            "tlsPort": 443,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (directory / "pebble.json").write_text(json.dumps(config))
    log = open(directory / "pebble.log", "ab")  # noqa: SIM115 - the servers below write to it after we return

    def start(argv: list[str]) -> None:
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    start(
        [
            "ip",
            "netns",
            "exec",
            CLIENT_NS,
            "pebble-challtestsrv",
            "-defaultIPv4",
            lb_public_ip,
            "-defaultIPv6",
            "",
            "-dns01",
            DNS,
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            "127.0.0.1:8055",
        ]
    )
    start(
        [
            "ip",
            "netns",
            "exec",
            CLIENT_NS,
            "env",
            "PEBBLE_VA_NOSLEEP=1",
            "PEBBLE_WFE_NONCEREJECT=0",
            "pebble",
            "-config",
            str(directory / "pebble.json"),
            "-dnsserver",
            DNS,
        ]
    )
    deadline = time.monotonic() + 30
    while in_ns(CLIENT_NS, "curl", "-fsk", "-o", "/dev/null", DIRECTORY, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"pebble did not start; see {directory / 'pebble.log'}")
        time.sleep(0.3)
    return ca


def root_certificate() -> str:
    """pebble's root (generated at its start): what issued certificates chain to."""
    return in_ns(CLIENT_NS, "curl", "-fsk", f"{MANAGEMENT}/roots/0").stdout
