"""The bounded load generator, against a local HTTP server on 127.0.0.1."""

import http.server
import json
import threading

import pytest

from lab import loadgen


@pytest.fixture
def server():
    class Handler(http.server.BaseHTTPRequestHandler):
        count = 0

        def do_GET(self):
            Handler.count += 1
            status = 503 if self.path == "/fail" else 200
            self.send_response(status)
            self.send_header("X-Served-By", f"backend-{Handler.count % 2}")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            Handler.count += 1
            stored = self.path == "/api/messages" and self.headers["Content-Type"] == "application/json"
            answer = json.dumps({"id": 1000 + Handler.count, "text": body["text"]}).encode()
            self.send_response(201 if stored else 400)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_counts_statuses_and_servers(server):
    report = loadgen.run(server + "/", 20, None, 10, 2, concurrency=4)
    assert report["sent"] == 20 and report["statuses"] == {"200": 20}
    assert report["servers"] == {"backend-0": 10, "backend-1": 10}
    assert [r["t"] for r in report["records"]] == sorted(r["t"] for r in report["records"])


def test_failures_and_refused_connections_are_recorded(server):
    assert loadgen.run(server + "/fail", 3, None, 10, 2)["statuses"] == {"503": 3}
    port = server.rsplit(":", 1)[1]
    closed = loadgen.run("http://127.0.0.1:1/", 2, None, 10, 1)
    assert closed["statuses"] == {"0": 2} and port != "1"


def test_rate_and_duration_bound_the_run(server):
    report = loadgen.run(server + "/", 1000, 20, 1.0, 2)
    assert 15 <= report["sent"] <= 22 and report["elapsed"] < 3


def test_writes_post_a_new_message_each_and_record_the_acknowledged_ids(server):
    report = loadgen.run(server + "/api/messages", 5, None, 10, 2, write=True)
    assert report["statuses"] == {"201": 5}
    records = sorted(report["records"], key=lambda r: r["index"])
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4]
    assert len({r["id"] for r in records}) == 5 and all(r["id"] > 1000 for r in records)
    refused = loadgen.run(server + "/elsewhere", 2, None, 10, 2, write=True)
    assert refused["statuses"] == {"400": 2} and not any("id" in r for r in refused["records"])


def test_limits_are_enforced():
    with pytest.raises(SystemExit):
        loadgen.main(["http://127.0.0.1/", "--requests", "1000000"])


def test_disruption_counts_what_a_failure_did_from_its_moment_on():
    from lab.loadgen import disruption

    records = [
        {"t": 1.0, "status": 200, "latency": 0.9},  # slow, but over before the failure: not disturbed
        {"t": 4.8, "status": 200, "latency": 10.0},  # in flight at the failure, held up
        {"t": 5.2, "status": 502, "latency": 0.1},  # failed after it
        {"t": 6.9, "status": 200, "latency": 0.7},  # held up
        {"t": 8.0, "status": 200, "latency": 0.05},  # through at once
    ]
    effect = disruption(records, since=5.0)
    assert [r["t"] for r in effect["failed"]] == [5.2]
    assert [r["t"] for r in effect["disturbed"]] == [4.8, 5.2, 6.9]
    assert effect["slowest"] == 10.0 and round(effect["window"], 2) == 1.9
    quiet = disruption([{"t": 1.0, "status": 200, "latency": 0.01}], since=0.5)
    assert quiet["disturbed"] == [] and quiet["window"] == 0


def test_sigterm_ends_the_run_early_with_its_report(server):
    import signal
    import subprocess
    import sys
    import time

    from tests.lab.helpers import REPO

    process = subprocess.Popen(
        [sys.executable, "-m", "lab.loadgen", server + "/", "--requests", "600", "--rate", "20", "--duration", "30"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=10)
    report = json.loads(output)
    assert time.monotonic() - began < 3 and process.returncode == 0
    assert 10 <= report["sent"] <= 60 and report["statuses"] == {"200": report["sent"]}


def test_a_pinned_public_key_trusts_a_reminted_certificate_and_nothing_else(tmp_path):
    import ssl

    from lab.mock_tls import private_key, self_signed_cert

    def certificate(key_pem: str) -> str:
        return self_signed_cert(
            {
                "privateKeyPem": key_pem,
                "subject": {"commonName": "test"},
                "ipAddresses": ["127.0.0.1"],
                "validityPeriodHours": 24,
                "allowedUses": ["server_auth", "digital_signature"],
            }
        )["certPem"]

    key = private_key({"algorithm": "ECDSA", "ecdsaCurve": "P256"})["privateKeyPem"]
    other = private_key({"algorithm": "ECDSA", "ecdsaCurve": "P256"})["privateKeyPem"]
    pinned, reminted, foreign = certificate(key), certificate(key), certificate(other)
    assert pinned != reminted
    (tmp_path / "pinned.pem").write_text(pinned)

    def served(cert: str, key_pem: str) -> dict:
        (tmp_path / "served.pem").write_text(cert + key_pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tmp_path / "served.pem")

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        httpd.handle_error = lambda *args: None  # type: ignore[method-assign]  # a client that hung up: expected
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            url = f"https://127.0.0.1:{httpd.server_address[1]}/"
            return loadgen.run(url, 3, None, 10, 5, pin_key_of=str(tmp_path / "pinned.pem"))["statuses"]
        finally:
            httpd.shutdown()

    assert served(reminted, key) == {"200": 3}
    assert served(foreign, other) == {"0": 3}
