"""scripts/bench's parts that need no lab: wrk's output read right (from a real wrk run against a
server on loopback), percentiles, and the report naming the machine and the commands."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ops import bench
from tests.helpers import require_tool


class Health(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b'{"healthy": true}'
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_wrk_output_is_parsed_from_a_real_run():
    wrk = require_tool("wrk")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = bench.sh(
            wrk, "-t1", "-c2", "-d1s", "--latency", f"http://127.0.0.1:{server.server_address[1]}/health", timeout=30
        )
    finally:
        server.shutdown()
        server.server_close()
    parsed = bench.parse_wrk(result.stdout)
    assert parsed["requests"] > 10 and parsed["requests_per_second"] > 10, result.stdout
    assert 0 < parsed["p50_ms"] <= parsed["p99_ms"], result.stdout
    assert parsed["non_2xx"] == 0 and parsed["socket_errors"] == 0


def test_non_2xx_and_socket_errors_are_counted():
    sample = """Running 1s test @ http://x/
  Latency Distribution
     50%  812.00us
     75%    1.00ms
     90%    1.20ms
     99%    2.31s
  1234 requests in 1.00s, 100.00KB read
  Socket errors: connect 1, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 17
Requests/sec:   1234.00
"""
    assert bench.parse_wrk(sample) == {
        "p50_ms": 0.81,
        "p99_ms": 2310.0,
        "requests_per_second": 1234.0,
        "requests": 1234,
        "non_2xx": 17,
        "socket_errors": 6,
    }


def test_percentiles():
    values = list(range(1, 101))
    assert (
        bench.percentile(values, 0.5) in (50.0, 51.0)
        and bench.percentile(values, 0.99) == 99
        and bench.percentile([7], 0.99) == 7
    )


def test_the_report_names_the_machine_the_commands_and_every_measurement():
    results: dict[str, Any] = {
        "machine": bench.machine(),
        "lab_up": {"seconds": 30.1, "cloud_init_done": {"lb-01": 13.2}},
        "proxy": {
            "from": "lb-01",
            "ratio": {"p50": 1.9, "p99": 2.0, "throughput": 0.6},
            "runs": {
                "through HAProxy": {
                    "p50_ms": 19,
                    "p99_ms": 43,
                    "requests_per_second": 889,
                    "requests": 2670,
                    "non_2xx": 0,
                    "socket_errors": 0,
                    "command": "wrk A",
                },
                "straight to web-01": {
                    "p50_ms": 10,
                    "p99_ms": 21,
                    "requests_per_second": 1484,
                    "requests": 4455,
                    "non_2xx": 0,
                    "socket_errors": 0,
                    "command": "wrk B",
                },
            },
        },
        "kill": [
            {
                "settings": "project",
                "requests": 240,
                "failed": 0,
                "disturbed": 12,
                "slowest_s": 10.0,
                "window_s": 1.8,
                "load": "20 req/s",
            },
            {
                "settings": "haproxy-defaults",
                "requests": 163,
                "failed": 0,
                "disturbed": 49,
                "slowest_s": 10.0,
                "window_s": 7.0,
                "load": "20 req/s",
            },
        ],
        "replication": {
            "replica": "web-02",
            "writes_acknowledged": 100,
            "seen_on_replica": 100,
            "p50_ms": 1.8,
            "p99_ms": 5.5,
            "max_ms": 9.3,
            "load": "20 POST/s",
        },
        "evaluation": [{"web_count": 2, "resources": 97, "median_s": 0.9, "min_s": 0.8, "repeats": 3}],
        "lb_failover": {
            "killed": "lb-01",
            "standby": "lb-02",
            "requests": 500,
            "failed": 8,
            "master_after_s": 3.3,
            "elastic_ip_moved_after_s": 4.7,
            "elastic_ip_holder": "lb-02",
            "longest_outage_s": 3.05,
            "outage_began_s": 0.26,
            "load": "20 req/s",
        },
    }
    report = bench.markdown(json.loads(json.dumps(results)), "sudo scripts/bench")
    assert f"{results['machine']['cores']} cores" in report and "sudo scripts/bench" in report
    for text in (
        "p50 ×1.9, p99 ×2.0, throughput ×0.6",
        "    wrk A",
        "| HAProxy's defaults (inter 2s, fall 3, rise 2) | 163 | 0 | 49 | 10.0 s | 7.0 s |",
        "| 100 | 100 | 1.8 ms | 5.5 ms | 9.3 ms |",
        "**30.1 s**",
        "| 2 | 97 | 0.9 s | 0.8 s | 3 |",
        "| 500 | 8 | 3.3 s | 4.7 s | 3.05 s (from +0.26 s) |",
        "the Elastic IP on lb-02",
    ):
        assert text in report, text
