"""A small site that behaves like the stack for scripts/smoke (round-robin backends naming themselves,
writes replicated to some or all of them, HTTPS with HSTS and an HTTP redirect), and that can be broken
in each way the smoke test must name. In-process for tests/ops/test_smoke.py; as a process
(`python -m tests.ops.fake_site`) inside a network namespace for the test that runs the program's
declared smoke command against it at the stack's own address and ports."""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import itertools
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


class FakeSite:
    def __init__(self, backends=("web-01", "web-02")):
        self.backends = list(backends)
        self.turn = itertools.cycle(self.backends)
        self.stored: dict[str, list[int]] = {b: [] for b in self.backends}
        self.replicate_to = set(self.backends)
        self.healthy = True
        self.config = ""  # HAProxy's configuration version (X-Webinfra-Config), when it sends one
        self.hsts = True
        self.redirect = True
        self.next_id = 1
        self.lock = threading.Lock()
        # where it serves, once serve() has bound it (the tests' fixture fills these in)
        self.url = ""
        self.http_port = 0
        self.cacert = ""

    def handler(self, tls: bool):
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body=b"", headers=()):
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if not tls and site.redirect:
                    return self.reply(301, headers=[("Location", f"https://{self.headers['Host']}{self.path}")])
                with site.lock:
                    backend = next(site.turn)
                headers = [("X-Served-By", backend), ("Content-Type", "application/json")]
                if site.config and self.headers.get("X-Webinfra-Config-Check"):  # as HAProxy: only when asked
                    headers.append(("X-Webinfra-Config", site.config))
                if tls and site.hsts:
                    headers.append(("Strict-Transport-Security", "max-age=63072000"))
                if self.path == "/health":
                    body = {"host": backend, "healthy": site.healthy}
                    return self.reply(200 if site.healthy else 503, json.dumps(body).encode(), headers)
                if self.path == "/api/messages":
                    messages = [{"id": i} for i in site.stored[backend]]
                    return self.reply(200, json.dumps({"messages": messages}).encode(), headers)
                self.reply(404)

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                with site.lock:
                    message_id, site.next_id = site.next_id, site.next_id + 1
                    for backend in site.replicate_to:
                        site.stored[backend].append(message_id)
                self.reply(201, json.dumps({"id": message_id}).encode(), [("X-Served-By", self.backends_first())])

            def backends_first(self):
                return site.backends[0]

        return Handler


def self_signed_certificate(directory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webinfra smoke test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "site.pem", directory / "site.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def serve(fake: FakeSite, address: str, https_port: int, http_port: int, cert_file: str, key_file: str):
    """Serve `fake` over HTTPS and plain HTTP; returns both servers, already serving in threads."""
    https = ThreadingHTTPServer((address, https_port), fake.handler(tls=True))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    https.socket = context.wrap_socket(https.socket, server_side=True)
    plain = ThreadingHTTPServer((address, http_port), fake.handler(tls=False))
    for server in (https, plain):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return https, plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("address")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--backends", default="web-01,web-02")
    parser.add_argument("--config", default="", help="the X-Webinfra-Config it sends (HAProxy's configuration version)")
    args = parser.parse_args()
    fake = FakeSite(args.backends.split(","))
    fake.config = args.config
    serve(fake, args.address, 443, 80, args.cert, args.key)
    print("serving", flush=True)
    threading.Event().wait()  # until the test stops this process


if __name__ == "__main__":
    main()
