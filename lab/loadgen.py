"""A bounded HTTP client for lab tests and benchmarks, run from the client namespace.

    python -m lab.loadgen URL --requests N [--rate R] [--duration S] [--timeout T] [--concurrency C] [--cacert F]
                          [--pin-key-of CERT] [--write]

Sends at most N GET requests (at R per second when given, C at a time) and stops after S seconds
whatever happens (or sooner on SIGTERM, once the requests under way have finished); prints one JSON
report: status counts, X-Served-By counts, and per-request records
(start offset, status, server, latency) so callers can measure gaps. Targets only the URL given.
With --write, each request is instead a POST of a new message (`{"text": "loadgen write #i"}`, URL
being the app's /api/messages), and each record also holds the stored message's id when the write
was acknowledged (201), so callers can check that no acknowledged write was lost.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import pathlib
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

REPO = pathlib.Path(__file__).resolve().parent.parent


def public_key_of(certificate_der: bytes) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    return (
        x509.load_der_x509_certificate(certificate_der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def pinning_context() -> ssl.SSLContext:
    """TLS whose trust is a pinned public key (checked by one_request), not a certificate: a client of a
    stack whose self-signed certificate is re-minted with the same key (a rotation) keeps trusting it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def one_request(
    url: urllib.parse.SplitResult,
    timeout: float,
    context: ssl.SSLContext | None = None,
    body: bytes | None = None,
    pinned_key: bytes | None = None,
) -> tuple[int, str | None, bytes]:
    """GET, or POST `body` as JSON; returns the status (0: no answer, or a certificate without the pinned
    public key), X-Served-By and the response body."""
    if not url.hostname:
        raise ValueError(f"{url.geturl()!r} names no host")
    connection: http.client.HTTPConnection
    if url.scheme == "https":
        connection = http.client.HTTPSConnection(url.hostname, url.port or 443, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=timeout)
    try:
        headers = {"Connection": "close"}
        if pinned_key is not None:  # the server's key checked before anything is sent to it
            connection.connect()
            tls = connection.sock
            served = tls.getpeercert(binary_form=True) if isinstance(tls, ssl.SSLSocket) else None
            if not served or public_key_of(served) != pinned_key:
                return 0, None, b"not the pinned public key"
        if body is None:
            connection.request("GET", url.path or "/", headers=headers)
        else:
            connection.request(
                "POST", url.path or "/", body=body, headers={**headers, "Content-Type": "application/json"}
            )
        response = connection.getresponse()
        return response.status, response.getheader("X-Served-By"), response.read()
    except (OSError, http.client.HTTPException):
        return 0, None, b""  # no answer: refused, reset or timed out
    finally:
        connection.close()


# Set by SIGTERM: no new request starts, those under way finish, and the report is printed as at the end.
STOPPING = threading.Event()


def run(
    url: str,
    requests: int,
    rate: float | None,
    duration: float,
    timeout: float,
    concurrency: int = 1,
    cafile: str | None = None,
    write: bool = False,
    pin_key_of: str | None = None,
) -> dict:
    """Request i is due at i/rate seconds; `concurrency` workers take the due requests in order, so
    one request stuck on a dead server does not hold back the others. `pin_key_of`: a certificate file
    whose public key the served certificate must carry (instead of `cafile`'s trust)."""
    target = urllib.parse.urlsplit(url)
    context = ssl.create_default_context(cafile=cafile) if target.scheme == "https" else None
    pinned_key = None
    if pin_key_of:
        context = pinning_context()
        pinned_key = public_key_of(ssl.PEM_cert_to_DER_cert(pathlib.Path(pin_key_of).read_text()))
    records: list[dict] = []
    lock = threading.Lock()
    next_index = iter(range(requests))
    started = time.monotonic()

    def worker():
        while True:
            with lock:
                index = next(next_index, None)
            if index is None or STOPPING.is_set():
                return
            if rate:
                delay = started + index / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if STOPPING.is_set():
                    return
            offset = time.monotonic() - started
            if offset > duration:
                return
            body = json.dumps({"text": f"loadgen write #{index}"}).encode() if write else None
            status, server, answer = one_request(target, timeout, context, body, pinned_key)
            record: dict = {
                "t": round(offset, 3),
                "status": status,
                "server": server,
                "latency": round(time.monotonic() - started - offset, 4),
            }
            if write:
                record["index"] = index
                if status == 201:
                    record["id"] = json.loads(answer)["id"]
            with lock:
                records.append(record)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + timeout + 5)
    records.sort(key=lambda r: r["t"])
    statuses: dict[str, int] = {}
    servers: dict[str, int] = {}
    for record in records:
        statuses[str(record["status"])] = statuses.get(str(record["status"]), 0) + 1
        if record["server"]:
            servers[record["server"]] = servers.get(record["server"], 0) + 1
    return {
        "url": url,
        "sent": len(records),
        "statuses": statuses,
        "servers": servers,
        "elapsed": round(time.monotonic() - started, 3),
        "records": records,
    }


def command(
    url: str,
    requests: int,
    *,
    duration: float,
    timeout: float,
    concurrency: int = 1,
    rate: float | None = None,
    cacert: str | None = None,
    write: bool = False,
    pin_key_of: str | None = None,
) -> list[str]:
    """This load generator's command line, to run in the lab's client namespace."""
    return [
        *(sys.executable, "-m", "lab.loadgen", url, "--requests", str(requests), "--duration", str(duration)),
        *("--timeout", str(timeout), "--concurrency", str(concurrency)),
        *(["--rate", str(rate)] if rate else []),
        *(["--cacert", cacert] if cacert else []),
        *(["--write"] if write else []),
        *(["--pin-key-of", pin_key_of] if pin_key_of else []),
    ]


def stream_from_client(
    url: str,
    rate: float,
    duration: int,
    *,
    timeout: float,
    cacert: str,
    concurrency: int = 8,
    write: bool = False,
    pin_key_of: str | None = None,
) -> subprocess.Popen:
    """A bounded stream of GETs (or, with `write`, POSTs of new messages to `url`, the app's
    /api/messages) from the lab's internet, in the background: `.communicate()` gives its report."""
    from lab.network import CLIENT_NS  # here, not at the top: this module also runs alone inside the namespace

    generator = command(
        url,
        int(rate * duration),
        rate=rate,
        duration=duration,
        timeout=timeout,
        concurrency=concurrency,
        cacert=cacert,
        write=write,
        pin_key_of=pin_key_of,
    )
    return subprocess.Popen(["ip", "netns", "exec", CLIENT_NS, *generator], cwd=REPO, stdout=subprocess.PIPE, text=True)


def disruption(records: list[dict], since: float, slow: float = 0.5) -> dict:
    """What a failure at `since` (seconds into the run) did to the requests: how many failed, how many
    were disturbed (failed, or slower than `slow` seconds) among those still running at that moment or
    started after it, the slowest of them, and the window: from `since` to the start of the last
    disturbed request (every request started later went through at once)."""
    failed = [r for r in records if r["status"] != 200]
    disturbed = [r for r in records if r["t"] + r["latency"] >= since and (r["status"] != 200 or r["latency"] > slow)]
    return {
        "failed": failed,
        "disturbed": disturbed,
        "slowest": max((r["latency"] for r in disturbed), default=0.0),
        "window": max((r["t"] for r in disturbed), default=since) - since,
    }


def longest_outage(records: list[dict], since: float) -> tuple[float, float]:
    """The outage as clients saw it: the longest time, ending after `since`, in which no request
    completed successfully. Returns (its length, when it began) in seconds into the run."""
    done = sorted(r["t"] + r["latency"] for r in records if r["status"] == 200)
    return max(((b - a, a) for a, b in itertools.pairwise(done) if b >= since), default=(0.0, since))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--cacert", help="CA file to verify an https URL with")
    parser.add_argument("--write", action="store_true", help="POST a new message per request (URL: /api/messages)")
    parser.add_argument(
        "--pin-key-of", metavar="CERT", help="trust a certificate with this certificate's public key (not a CA)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 100_000 or args.duration > 600 or not 1 <= args.concurrency <= 64:
        parser.error("at most 100000 requests, 600 seconds and 64 concurrent requests")
    signal.signal(signal.SIGTERM, lambda *_: STOPPING.set())
    json.dump(
        run(
            args.url,
            args.requests,
            args.rate,
            args.duration,
            args.timeout,
            args.concurrency,
            args.cacert,
            args.write,
            args.pin_key_of,
        ),
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
