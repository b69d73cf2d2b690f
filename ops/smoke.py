"""scripts/smoke: check a running stack the way a user would, and wait (bounded) until it passes.

    scripts/smoke URL [--cacert FILE] [--backends web-01,web-02] [--timeout 900] [--server-name NAME] [--config V]

Checks, in order, each named in the output and in the failure message:
  config     (with --config VERSION) the site answers with HAProxy's configuration VERSION (its
             X-Webinfra-Config header): a changed configuration has reached the load balancer
  health     GET /health answers 200 with {"healthy": true}
  rotation   every expected backend answers (X-Served-By) within a bounded number of GETs
  write      a POST /api/messages is acknowledged (201) and read back through the load balancer
             from every backend (replicated to each)
  https      (https URLs) the certificate verifies against --cacert (or the system's CAs), is valid
             for at least --min-cert-days more days, HSTS is sent, and http:// answers 301 to https

Until every check passes or --timeout runs out, it retries every --interval seconds and prints one
progress line per attempt. Exit 0 when the site serves; 1 with the failing check named; 2 on bad
arguments. Standard library only, so `pulumi up` (pulumi_command) can run it with any Python 3.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import socket
import ssl
import sys
import time
import urllib.parse
from dataclasses import dataclass, field

USER_AGENT = "webinfra-smoke/1"


class CheckFailed(Exception):
    def __init__(self, check: str, reason: str):
        super().__init__(f"{check}: {reason}")
        self.check, self.reason = check, reason


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    certificate: dict | None = None

    def json(self):
        return json.loads(self.body)


@dataclass
class Target:
    url: urllib.parse.SplitResult
    cacert: str | None = None
    cacert_pem: str | None = None  # the same, as PEM text
    server_name: str | None = None  # SNI, certificate name and Host header, when the URL holds an address
    request_timeout: float = 5.0
    http_port: int = 80  # where http:// answers (the redirect check of an https URL)
    context: ssl.SSLContext | None = field(default=None, repr=False)

    @property
    def https(self) -> bool:
        return self.url.scheme == "https"

    @property
    def host(self) -> str:
        if not self.url.hostname:  # main() refuses such a URL first
            raise ValueError(f"{self.url.geturl()!r} names no host")
        return self.url.hostname

    @property
    def host_header(self) -> str:
        return self.server_name or self.host

    def ssl_context(self) -> ssl.SSLContext:
        if self.context is None:
            # The system's CAs (a Let's Encrypt certificate), plus the given one (the stack's own).
            context = ssl.create_default_context()
            if self.cacert or self.cacert_pem:
                context.load_verify_locations(cafile=self.cacert, cadata=self.cacert_pem)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self.context = context
        return self.context

    def request(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        scheme: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        scheme = scheme or self.url.scheme
        base = self.url.path.rstrip("/")
        connection: http.client.HTTPConnection
        if scheme == "https":
            connection = _SNIConnection(
                self.host,
                self.url.port or 443,
                timeout=self.request_timeout,
                context=self.ssl_context(),
                server_name=self.server_name,
            )
        else:
            port = self.url.port if self.url.scheme == "http" and self.url.port else self.http_port
            connection = http.client.HTTPConnection(self.host, port, timeout=self.request_timeout)
        headers = {"Host": self.host_header, "User-Agent": USER_AGENT, "Connection": "close", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, base + path, body=data, headers=headers)
            # the peer's certificate, before getresponse() lets go of a `Connection: close` socket
            certificate = connection.sock.getpeercert() if isinstance(connection.sock, ssl.SSLSocket) else None
            answer = connection.getresponse()
            payload = answer.read()
            return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, payload, certificate)
        finally:
            connection.close()


class _SNIConnection(http.client.HTTPSConnection):
    """HTTPS to an address, verifying the certificate for `server_name` (the site's DNS name) when given."""

    def __init__(self, host: str, port: int, *, timeout: float, context: ssl.SSLContext, server_name: str | None):
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_name = server_name
        self._sni_context = context  # HTTPSConnection keeps it too, but as an undocumented attribute

    def connect(self) -> None:
        if not self._server_name:
            return super().connect()
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._sni_context.wrap_socket(sock, server_hostname=self._server_name)


# --- the checks ---------------------------------------------------------------------------------------------


def _ask(target: Target, check: str, method: str, path: str, body: dict | None = None, **kwargs) -> Response:
    try:
        return target.request(method, path, body, **kwargs)
    except ssl.SSLCertVerificationError as error:
        raise CheckFailed("https", f"the certificate does not verify: {error.verify_message}") from None
    except (OSError, http.client.HTTPException) as error:
        raise CheckFailed(check, f"{method} {path}: {error.__class__.__name__}: {error}") from None


CONFIG_CHECK_HEADER = "X-Webinfra-Config-Check"  # HAProxy names its configuration only when asked


def check_config(target: Target, version: str) -> str:
    answer = _ask(target, "config", "GET", "/health", headers={CONFIG_CHECK_HEADER: "1"})
    served = answer.headers.get("x-webinfra-config", "")
    if served != version:
        raise CheckFailed("config", f"the load balancer serves configuration {served or '(none)'}, not {version} yet")
    return f"the load balancer serves configuration {version}"


def check_health(target: Target) -> str:
    answer = _ask(target, "health", "GET", "/health")
    if answer.status != 200:
        raise CheckFailed("health", f"GET /health answered {answer.status}: {answer.body[:200]!r}")
    try:
        report = answer.json()
    except ValueError:
        raise CheckFailed("health", f"GET /health is not JSON: {answer.body[:200]!r}") from None
    if report.get("healthy") is not True:
        raise CheckFailed("health", f"GET /health does not say healthy: {report}")
    return f"200, served by {answer.headers.get('x-served-by', '?')}"


def check_rotation(target: Target, backends: list[str], rounds: int = 4) -> str:
    """Round-robin means N backends answer within a few times N requests. N is the larger of the backends
    asked for and those answering so far: a rolling gate asks for one replica among many."""
    seen: dict[str, int] = {}
    asked = 0
    while asked < max(len(backends), len(seen), 1) * rounds:
        asked += 1
        answer = _ask(target, "rotation", "GET", "/health")
        if answer.status == 200:
            server = answer.headers.get("x-served-by")
            if not server:
                raise CheckFailed("rotation", "a response without X-Served-By")
            seen[server] = seen.get(server, 0) + 1
        if backends and set(backends) <= set(seen):
            break
    missing = [b for b in backends if b not in seen]
    if missing:
        raise CheckFailed("rotation", f"{', '.join(missing)} not in the rotation (answered: {_counts(seen)})")
    if not seen:
        raise CheckFailed("rotation", "no backend answered")
    return f"answered by {_counts(seen)}"


def check_write(target: Target, backends: list[str], wait: float = 10.0) -> str:
    text = f"smoke test {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}"
    answer = _ask(target, "write", "POST", "/api/messages", {"text": text})
    if answer.status != 201:
        raise CheckFailed("write", f"POST /api/messages answered {answer.status}: {answer.body[:200]!r}")
    message_id = answer.json()["id"]
    confirmed: set[str] = set()
    deadline = time.monotonic() + wait
    expected = set(backends)
    while time.monotonic() < deadline:
        reading = _ask(target, "write", "GET", "/api/messages")
        if reading.status == 200 and any(m.get("id") == message_id for m in reading.json().get("messages", [])):
            confirmed.add(reading.headers.get("x-served-by", "?"))
        if (expected and expected <= confirmed) or (not expected and confirmed):
            return f"message {message_id} acknowledged and read back from {', '.join(sorted(confirmed))}"
        time.sleep(0.1)
    missing = sorted(expected - confirmed) if expected else ["every backend"]
    raise CheckFailed(
        "write",
        f"message {message_id} was acknowledged but not read back from {', '.join(missing)} within {wait:.0f} s",
    )


def check_https(target: Target, min_days: int) -> str:
    answer = _ask(target, "https", "GET", "/health")
    if answer.certificate is None:  # not over https: the URL's scheme decides
        raise CheckFailed("https", "no certificate: not an https URL")
    expires = datetime.datetime.fromtimestamp(ssl.cert_time_to_seconds(answer.certificate["notAfter"]), datetime.UTC)
    days = (expires - datetime.datetime.now(datetime.UTC)).days
    if days < min_days:
        raise CheckFailed("https", f"the certificate expires in {days} days ({expires:%Y-%m-%d}), under {min_days}")
    if "strict-transport-security" not in answer.headers:
        raise CheckFailed("https", "no Strict-Transport-Security header")
    redirect = _ask(target, "https", "GET", "/health", scheme="http")
    location = redirect.headers.get("location", "")
    if redirect.status != 301 or not location.startswith("https://"):
        raise CheckFailed("https", f"http:// answered {redirect.status} {location!r}, not a 301 to https")
    issuer = dict(pair for rdn in answer.certificate.get("issuer", ()) for pair in rdn).get("commonName", "?")
    return f"certificate verified (issuer {issuer!r}, {days} days left), HSTS, http:// → 301"


def _counts(seen: dict[str, int]) -> str:
    return ", ".join(f"{name} ×{count}" for name, count in sorted(seen.items())) or "nothing"


def run_checks(
    target: Target, backends: list[str], min_cert_days: int, config: str | None = None
) -> list[tuple[str, str]]:
    results = [("config", check_config(target, config))] if config else []
    results += [("health", check_health(target)), ("rotation", check_rotation(target, backends))]
    results.append(("write", check_write(target, backends)))
    if target.https:
        results.append(("https", check_https(target, min_cert_days)))
    return results


def smoke(
    target: Target,
    backends: list[str],
    *,
    timeout: float,
    interval: float,
    min_cert_days: int = 14,
    config: str | None = None,
    out=sys.stdout,
) -> int:
    began = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        try:
            results = run_checks(target, backends, min_cert_days, config)
        except CheckFailed as failure:
            left = timeout - (time.monotonic() - began)
            if left <= 0:
                print(
                    f"✗ smoke test of {target.url.geturl()} failed after {time.monotonic() - began:.0f} s "
                    f"({attempt} attempts): {failure}",
                    file=out,
                    flush=True,
                )
                return 1
            print(f"  waiting ({attempt}, {left:.0f} s left): {failure}", file=out, flush=True)
            time.sleep(min(interval, max(left, 0.1)))
            continue
        for check, detail in results:
            print(f"  ✓ {check:<8} {detail}", file=out)
        print(
            f"✓ {target.url.geturl()} serves "
            f"({time.monotonic() - began:.1f} s, {attempt} attempt{'s' if attempt > 1 else ''})",
            file=out,
            flush=True,
        )
        return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/smoke",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("url", help="the site, e.g. https://203.0.113.7/ (the stack's `url` output)")
    parser.add_argument("--cacert", help="trust this CA or certificate (PEM): the stack's lb_certificate_pem output")
    parser.add_argument(
        "--cacert-pem-env", metavar="VARIABLE", help="trust the PEM held in this environment variable (as --cacert)"
    )
    parser.add_argument(
        "--server-name", help="the site's DNS name, when URL holds its address (SNI, certificate, Host)"
    )
    parser.add_argument("--backends", default="", help="comma-separated hostnames that must all be in the rotation")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to keep retrying (default 600)")
    parser.add_argument("--interval", type=float, default=10, help="seconds between attempts (default 10)")
    parser.add_argument(
        "--http-port", type=int, default=80, help="where http:// answers, for the redirect check (default 80)"
    )
    parser.add_argument("--min-cert-days", type=int, default=14, help="fail when the certificate expires sooner")
    parser.add_argument(
        "--config", metavar="VERSION", help="wait until the site answers with this HAProxy configuration version"
    )
    args = parser.parse_args(argv)
    url = urllib.parse.urlsplit(args.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        parser.error(f"URL must be http(s)://HOST/..., got {args.url!r}")
    if args.timeout < 0 or args.interval <= 0:
        parser.error("--timeout must be ≥ 0 and --interval > 0")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    cacert_pem = None
    if args.cacert_pem_env:
        cacert_pem = os.environ.get(args.cacert_pem_env, "")
        if "-----BEGIN CERTIFICATE-----" not in cacert_pem:
            parser.error(f"--cacert-pem-env: ${args.cacert_pem_env} holds no PEM certificate")
    target = Target(
        url, cacert=args.cacert, cacert_pem=cacert_pem, server_name=args.server_name, http_port=args.http_port
    )
    print(
        f"smoke test of {args.url}"
        + (f" (backends: {', '.join(backends)})" if backends else "")
        + f", at most {args.timeout:.0f} s",
        flush=True,
    )
    return smoke(
        target,
        backends,
        timeout=args.timeout,
        interval=args.interval,
        min_cert_days=args.min_cert_days,
        config=args.config,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
