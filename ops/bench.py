"""scripts/bench: measure the infrastructure in the lab, and write docs/BENCHMARKS.md.

    sudo scripts/bench [--output docs/BENCHMARKS.md] [--quick]
    sudo scripts/bench --faults [--output docs/FAULTS.md] [--quick]

Boots its own lab (`scripts/lab up`, the lab stack with the rate limit raised so that load is not
answered 429), then measures, all in one run so that ratios compare like with like:

  1. latency p50/p99 and throughput (wrk, Debian's package) through HAProxy (TLS, round-robin over
     the web servers) and straight to one web server, from the same place (the active load
     balancer's network) with the same load; the ratio of the two
  2. failed requests and the gap while a web server is killed hard under constant load, with the
     project's health-check settings and with HAProxy's defaults (inter 2s, fall 3, rise 2)
  3. replication lag p50/p99 under a steady write load: from each write's acknowledgement (at the
     client) to the moment the replica has the row
  4. `scripts/lab up` time to healthy (cloud-init done everywhere and the smoke test passed)
  5. evaluation time of the whole program under Pulumi mocks as webCount grows
  6. (the lab stack runs a load-balancer pair) the active load balancer killed hard under constant
     load: when the standby takes over, when it has moved the Elastic IP, and what clients saw

With --faults, only the fault matrix (ops/faults.py: each fault under load, what clients saw, the
time until healed, writes lost), on its own lab, into docs/FAULTS.md.

Bounded: every load has a fixed duration and count; the lab is removed at the end. Machines here
are shared and noisy: compare the ratios within one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

from lab.loadgen import disruption, longest_outage, stream_from_client
from ops import faults

REPO = pathlib.Path(__file__).resolve().parent.parent
CA = "/var/lib/webinfra-lab/lb-certificate.pem"
BENCH_SETTINGS = [f"rateLimitPer10s={faults.BENCH_RATE_LIMIT}"]  # the load below is one client address


def sh(
    *command: str, timeout: float = 600, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, input=input, cwd=REPO)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def lab(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    return sh(sys.executable, "-m", "lab.cli", *args, timeout=timeout, check=check)


def guest(host: str, *command: str, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess:
    return sh(sys.executable, "-m", "lab.cli", "exec", host, "--", *command, timeout=timeout, input=input)


def in_netns(netns: str, *command: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", netns, *command, timeout=timeout)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- 4. lab up ------------------------------------------------------------------------------------------------


def measure_lab_up() -> dict:
    began = time.monotonic()
    up = lab("up", *[item for setting in BENCH_SETTINGS for item in ("--set", setting)], timeout=1500)
    seconds = time.monotonic() - began
    hosts = {
        m.group(1): float(m.group(2)) for m in re.finditer(r"✓ (\S+)\s.*cloud-init done after ([\d.]+)s", up.stdout)
    }
    return {"seconds": round(seconds, 1), "cloud_init_done": hosts}


# --- 1. through HAProxy vs straight to one server ---------------------------------------------------------

WRK_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def parse_wrk(output: str) -> dict:
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    latencies = {
        f"p{m.group(1)}_ms": round(float(m.group(2)) * scale[m.group(3)], 2) for m in WRK_LATENCY.finditer(output)
    }
    requests = re.search(r"Requests/sec:\s+([\d.]+)", output)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    total = re.search(r"(\d+) requests in", output)
    if not requests or not total:
        raise ValueError(f"wrk printed no request count or rate:\n{output}")
    return {
        **latencies,
        "requests_per_second": float(requests.group(1)),
        "requests": int(total.group(1)),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": sum(map(int, socket_errors.groups())) if socket_errors else 0,
    }


def measure_proxy_overhead(status: dict, duration: int, connections: int) -> dict:
    active = status["floating_address_holder"] or next(h for h in status["hosts"] if h["role"] == "lb")["name"]
    web = next(h for h in status["hosts"] if h["role"] == "web")
    netns = f"wi-{active}"
    runs = {}
    for label, url in (
        ("through HAProxy", f"https://{status['floating_address'] or '127.0.0.1'}/health"),
        (f"straight to {web['name']}", f"http://{web['address']}/health"),
    ):
        command = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-H", "Host: webinfra-bench", url]
        runs[label] = {
            **parse_wrk(in_netns(netns, *command, timeout=duration + 60).stdout),
            "command": shlex.join(["ip", "netns", "exec", netns, *command]),
        }
        log(f"  {label}: {runs[label]}")
    through, direct = runs["through HAProxy"], runs[f"straight to {web['name']}"]
    return {
        "from": f"the active load balancer's network ({active})",
        "runs": runs,
        "ratio": {
            "p50": round(through["p50_ms"] / direct["p50_ms"], 2),
            "p99": round(through["p99_ms"] / direct["p99_ms"], 2),
            "throughput": round(through["requests_per_second"] / direct["requests_per_second"], 2),
        },
    }


# --- 2. a web server killed under load, two health-check settings --------------------------------------------


def lb_names(status: dict) -> list[str]:
    return [h["name"] for h in status["hosts"] if h["role"] == "lb"]


def set_health_checks(status: dict, kind: str) -> None:
    """HAProxy's config with the project's or HAProxy's default check settings, onto every LB."""
    from provisioning.defaults import SERVER_DEFAULTS, HealthCheck

    check = SERVER_DEFAULTS.haproxy_health_check if kind == "project" else HealthCheck.haproxy_defaults()
    faults.install_haproxy_config(faults.BENCH_RATE_LIMIT, check)


def wait_in_rotation(url: str, name: str, seconds: float = 180) -> float:
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        report = json.loads(
            in_netns("wi-client", sys.executable, "-m", "lab.loadgen", url, "--requests", "10", "--cacert", CA).stdout
        )
        if name in report["servers"]:
            return time.monotonic() - began
        time.sleep(1)
    raise RuntimeError(f"{name} did not return to the rotation within {seconds} s")


def measure_kill(status: dict, kind: str, rate: int, duration: int) -> dict:
    url = status["url"]
    victim = [h["name"] for h in status["hosts"] if h["role"] == "web"][-1]
    set_health_checks(status, kind)
    wait_in_rotation(url, victim)
    stream = stream_from_client(url, rate, duration, timeout=15, cacert=CA)
    started = time.monotonic()
    time.sleep(5)
    killed_at = time.monotonic() - started
    lab("kill", victim)
    report = json.loads(stream.communicate(timeout=duration + 60)[0])
    effect = disruption(report["records"], killed_at)
    lab("start", victim)
    wait_in_rotation(url, victim)
    result = {
        "settings": kind,
        "requests": report["sent"],
        "failed": len(effect["failed"]),
        "disturbed": len(effect["disturbed"]),
        "slowest_s": round(effect["slowest"], 2),
        "window_s": round(effect["window"], 2),
        "load": f"{rate} req/s, 8 concurrent, {duration} s, kill at 5 s",
    }
    log(f"  kill with {kind} health checks: {result}")
    return result


# --- 6. the active load balancer killed under load ----------------------------------------------------------


def measure_lb_failover(rate: int, duration: int) -> dict:
    from lab.cli import load_state
    from lab.hosts import logged_at

    status = json.loads(lab("status", "--json").stdout)
    active = status["floating_address_holder"]
    (standby,) = [name for name in lb_names(status) if name != active]
    stream = stream_from_client(status["url"], rate, duration, timeout=3, cacert=CA)
    started = time.monotonic()
    time.sleep(5)
    killed_at, kill_wall = time.monotonic() - started, time.time()
    lab("kill", active)
    report = json.loads(stream.communicate(timeout=duration + 60)[0])
    outage, outage_from = longest_outage(report["records"], killed_at)
    standby_host = load_state().host(standby)
    after = json.loads(lab("status", "--json").stdout)
    result = {
        "killed": active,
        "standby": standby,
        "requests": report["sent"],
        "failed": sum(1 for r in report["records"] if r["status"] != 200),
        "master_after_s": round(logged_at(standby_host, "webinfra-lb-state", "now MASTER") - kill_wall, 2),
        "elastic_ip_moved_after_s": round(
            logged_at(standby_host, "webinfra-lb-takeover", "now points at") - kill_wall, 2
        ),
        "elastic_ip_holder": after["elastic_ip_holder"],
        "longest_outage_s": round(outage, 2),
        "outage_began_s": round(outage_from - killed_at, 2),
        "load": f"{rate} req/s, 8 concurrent, 3 s client timeout, {duration} s, kill at 5 s",
    }
    lab("start", active)
    log(f"  load-balancer failover: {result}")
    return result


# --- 3. replication lag under steady writes -------------------------------------------------------------------

WATCHER = r"""
import json, sys, time, pymysql
seconds = float(sys.argv[1])
db = pymysql.connect(unix_socket="/run/mysqld/mysqld.sock", user="root", database="webinfra", autocommit=True)
cur = db.cursor()
cur.execute("SELECT COALESCE(MAX(id), 0) FROM messages")
last = cur.fetchone()[0]
seen = {}
end = time.time() + seconds
while time.time() < end:
    cur.execute("SELECT id FROM messages WHERE id > %s ORDER BY id", (last,))
    now = time.time()
    for (row_id,) in cur.fetchall():
        seen[row_id] = now
        last = row_id
    time.sleep(0.005)
print(json.dumps(seen))
"""


def writer(url: str, rate: float, seconds: float, cacert: str) -> dict:
    """Runs in the client namespace: steady POSTs; returns {id: acknowledged at (epoch seconds)}."""
    import http.client
    import ssl
    import urllib.parse

    target = urllib.parse.urlsplit(url)
    if not target.hostname:
        raise ValueError(f"{url!r} names no host")
    context = ssl.create_default_context(cafile=cacert)
    acknowledged = {}
    began = time.time()
    for index in range(int(rate * seconds)):
        delay = began + index / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        connection = http.client.HTTPSConnection(target.hostname, target.port or 443, context=context, timeout=10)
        connection.request(
            "POST",
            "/api/messages",
            body=json.dumps({"text": f"bench write {index}"}),
            headers={"Content-Type": "application/json"},
        )
        answer = connection.getresponse()
        body = answer.read()
        if answer.status == 201:
            acknowledged[json.loads(body)["id"]] = time.time()
        connection.close()
    return acknowledged


def measure_replication_lag(status: dict, rate: float, seconds: float) -> dict:
    replica = next(h["name"] for h in status["hosts"] if h.get("db_role") == "replica")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "lab.cli", "exec", replica, "--", "python3", "-c", WATCHER, str(seconds + 5)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    written = in_netns(
        "wi-client",
        sys.executable,
        "-m",
        "ops.bench",
        "writer",
        status["url"],
        str(rate),
        str(seconds),
        CA,
        timeout=seconds + 120,
    )
    acknowledged = {int(k): v for k, v in json.loads(written.stdout).items()}
    seen = {int(k): v for k, v in json.loads(watcher.communicate(timeout=seconds + 120)[0]).items()}
    lags = [(seen[i] - acknowledged[i]) * 1000 for i in acknowledged if i in seen]
    result = {
        "replica": replica,
        "writes_acknowledged": len(acknowledged),
        "seen_on_replica": len(lags),
        "p50_ms": round(percentile(lags, 0.5), 1),
        "p99_ms": round(percentile(lags, 0.99), 1),
        "max_ms": round(max(lags), 1),
        "load": f"{rate:g} POST/s for {seconds:g} s through the load balancer",
    }
    log(f"  replication lag: {result}")
    return result


# --- 5. program evaluation under mocks ----------------------------------------------------------------------

EVALUATE = """
import json, sys, time
from lab.mock_cloud import run_program
count = int(sys.argv[1])
began = time.perf_counter()
run = run_program({"webCount": count, "azCount": 3})
print(json.dumps({"seconds": time.perf_counter() - began, "resources": len(run.resources)}))
"""


def measure_evaluation(counts: list[int], repeats: int) -> list[dict]:
    results = []
    for count in counts:
        runs = [json.loads(sh(sys.executable, "-c", EVALUATE, str(count), timeout=300).stdout) for _ in range(repeats)]
        results.append(
            {
                "web_count": count,
                "resources": runs[0]["resources"],
                "median_s": round(statistics.median(r["seconds"] for r in runs), 2),
                "min_s": round(min(r["seconds"] for r in runs), 2),
                "repeats": repeats,
            }
        )
        log(f"  evaluation at webCount {count}: {results[-1]}")
    return results


# --- the report ---------------------------------------------------------------------------------------------------


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        int(line.split()[1])
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    os_release = dict(
        line.split("=", 1) for line in pathlib.Path("/etc/os-release").read_text().splitlines() if "=" in line
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": os_release.get("PRETTY_NAME", "").strip('"'),
        "python": platform.python_version(),
        "wrk": sh("wrk", "--version", check=False).stdout.split(" Copyright")[0].strip(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def markdown(results: dict, command: str) -> str:
    m, up, proxy = results["machine"], results["lab_up"], results["proxy"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `{command}` on {m['date']}. "
        "Regenerate with the same command (root; it boots and removes its own lab).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}, kernel {m['kernel']}, "
        f"Python {m['python']}, {m['wrk']}. Shared and noisy: every host of the lab, the load generators and the "
        f"AWS stand-in run on these {m['cores']} cores, so absolute figures are far below what EC2 instances give; "
        "compare ratios within this run.",
        "",
        "## 1. Through HAProxy vs straight to one web server",
        "",
        f"Same load from the same place ({proxy['from']}): `GET /health` (the app checks its database).",
        "",
        "| path | p50 | p99 | requests/s | requests | non-2xx | socket errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, run in proxy["runs"].items():
        lines.append(
            f"| {label} | {run['p50_ms']} ms | {run['p99_ms']} ms | {run['requests_per_second']:.0f} | "
            f"{run['requests']} | {run['non_2xx']} | {run['socket_errors']} |"
        )
    ratio = proxy["ratio"]
    lines += [
        "",
        f"Ratio through/straight: **p50 ×{ratio['p50']}, p99 ×{ratio['p99']}, throughput ×{ratio['throughput']}**. "
        "Through HAProxy includes TLS termination and spreads the load over every web server; straight goes to one.",
        "",
        "Commands:",
        "",
        *[f"    {run['command']}" for run in proxy["runs"].values()],
        "",
        "## 2. A web server killed hard under constant load",
        "",
        f"Load: {results['kill'][0]['load']} (the lab's load generator, `lab/loadgen.py`, 15 s client timeout); "
        "`scripts/lab kill` takes the server's port down and kills it, like a lost instance. *Disturbed*: failed, or "
        "slower than 0.5 s. *Window*: from the kill to the start of the last disturbed request.",
        "",
        "| health checks | requests | failed | disturbed | slowest | window |",
        "|---|---|---|---|---|---|",
    ]
    labels = {
        "project": "the project's (inter 500ms, fastinter 250ms, timeout 500ms, fall 2, observe layer4)",
        "haproxy-defaults": "HAProxy's defaults (inter 2s, fall 3, rise 2)",
    }
    for run in results["kill"]:
        lines.append(
            f"| {labels[run['settings']]} | {run['requests']} | {run['failed']} | {run['disturbed']} | "
            f"{run['slowest_s']} s | {run['window_s']} s |"
        )
    lag = results["replication"]
    lines += [
        "",
        "Both keep HAProxy's retries and redispatch (`retry-on conn-failure empty-response response-timeout`), "
        "which is why requests are held up rather than failed; the window shows how long the dead server stays in "
        "the rotation.",
        "",
        "## 3. Replication lag under a steady write load",
        "",
        f"{lag['load']}; the lag of each write is from its acknowledgement at the client to the moment a watcher "
        f"on {lag['replica']} (polling every 5 ms) sees the row. Semi-synchronous replication acknowledges a write "
        "once the replica has *received* it, so the lag is mostly the replica applying it; negative values are "
        "possible.",
        "",
        "| writes acknowledged | seen on the replica | p50 | p99 | max |",
        "|---|---|---|---|---|",
        f"| {lag['writes_acknowledged']} | {lag['seen_on_replica']} | {lag['p50_ms']} ms | {lag['p99_ms']} ms | "
        f"{lag['max_ms']} ms |",
        "",
        "## 4. `scripts/lab up` to healthy",
        "",
        f"With the images cached: **{up['seconds']} s** from the command to cloud-init `done` on every host and "
        "the smoke test passed (`scripts/lab up --set rateLimitPer10s=100000`). cloud-init finished, after boot "
        "began: " + ", ".join(f"{name} {seconds} s" for name, seconds in up["cloud_init_done"].items()) + ".",
        "",
        "## 5. Program evaluation under Pulumi mocks",
        "",
        "The whole program (`lab/mock_cloud.run_program`, as the tests run it), `azCount` 3, "
        "in a fresh interpreter each time:",
        "",
        "| webCount | resources | median | fastest | runs |",
        "|---|---|---|---|---|",
        *[
            f"| {r['web_count']} | {r['resources']} | {r['median_s']} s | {r['min_s']} s | {r['repeats']} |"
            for r in results["evaluation"]
        ],
        "",
        *(_lb_failover_section(results["lb_failover"]) if "lb_failover" in results else []),
    ]
    return "\n".join(lines)


def _lb_failover_section(run: dict) -> list[str]:
    return [
        "## 6. The active load balancer killed hard under constant load",
        "",
        f"The lab stack's load-balancer pair (keepalived, `advert_int 1`); load: {run['load']} through the Elastic IP. "
        f"{run['killed']} was active and was killed (`scripts/lab kill`).",
        "",
        "| requests | failed | standby MASTER after | Elastic IP moved (EC2 API) after "
        "| longest time without a successful response |",
        "|---|---|---|---|---|",
        f"| {run['requests']} | {run['failed']} | {run['master_after_s']} s | {run['elastic_ip_moved_after_s']} s | "
        f"{run['longest_outage_s']} s (from {run['outage_began_s']:+} s) |",
        "",
        f"The failed requests were in flight on the dead load balancer (each client gave up after 3 s). Afterwards the "
        f"AWS API stand-in had the Elastic IP on {run['elastic_ip_holder']}.",
        "",
    ]


def fault_report(m: dict, rows: list[dict], quick: bool) -> str:
    command = "sudo scripts/bench --faults" + (" --quick" if quick else "")
    lines = [
        "# Fault matrix",
        "",
        f"Measured by `{command}` on {m['date']} (root; it boots and removes its own lab). Machine: {m['cpu']}, "
        f"{m['cores']} cores, shared with every host of the lab and the load generators.",
        "",
        *faults.markdown(rows)[1:],
    ]
    return "\n".join(lines) + "\n"


def fault_matrix(output: str, quick: bool, raw: str | None) -> int:
    m = machine()
    try:
        log("▸ lab up")
        lab("up", *[item for setting in BENCH_SETTINGS for item in ("--set", setting)], timeout=1800)
        log("▸ 7. the fault matrix")
        rows = faults.matrix(quick, log=log)
    finally:
        lab("down", check=False)
    (REPO / output).write_text(fault_report(m, rows, quick))
    if raw:
        pathlib.Path(raw).write_text(json.dumps({"machine": m, "faults": rows}, indent=2))
    log(f"✓ wrote {REPO / output}")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["writer"]:
        url, rate, seconds, cacert = argv[1], float(argv[2]), float(argv[3]), argv[4]
        print(json.dumps(writer(url, rate, seconds, cacert)))
        return 0
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "--output", help="the report to write (default docs/BENCHMARKS.md, with --faults docs/FAULTS.md)"
    )
    parser.add_argument("--faults", action="store_true", help="only the fault matrix, into docs/FAULTS.md")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument(
        "--quick", action="store_true", help="shorter loads (a check that the benchmark runs, not figures)"
    )
    parser.add_argument(
        "--report-only",
        metavar="JSON",
        help="write the report from the results a run saved with --json; measure nothing",
    )
    args = parser.parse_args(argv)
    if args.report_only and args.faults:
        saved = json.loads(pathlib.Path(args.report_only).read_text())
        (REPO / (args.output or "docs/FAULTS.md")).write_text(fault_report(saved["machine"], saved["faults"], False))
        return 0
    if args.report_only:
        saved = json.loads(pathlib.Path(args.report_only).read_text())
        (REPO / args.output).write_text(markdown(saved, saved.get("command", "sudo scripts/bench")))
        return 0
    if os.geteuid() != 0:
        print("scripts/bench boots the lab: run it as root (sudo scripts/bench)", file=sys.stderr)
        return 1
    if args.faults:
        return fault_matrix(args.output or "docs/FAULTS.md", args.quick, args.json)
    args.output = args.output or "docs/BENCHMARKS.md"
    duration, kill_seconds, lag_seconds, repeats = (3, 12, 5, 1) if args.quick else (10, 25, 20, 3)
    results: dict = {"machine": machine()}
    try:
        log("▸ 4. lab up to healthy")
        results["lab_up"] = measure_lab_up()
        status = json.loads(lab("status", "--json").stdout)
        log("▸ 1. through HAProxy vs straight to one web server (wrk)")
        results["proxy"] = measure_proxy_overhead(status, duration, connections=16)
        log("▸ 3. replication lag under steady writes")
        results["replication"] = measure_replication_lag(status, rate=20, seconds=lag_seconds)
        log("▸ 2. a web server killed under load, two health-check settings")
        results["kill"] = [
            measure_kill(status, kind, rate=20, duration=kill_seconds) for kind in ("project", "haproxy-defaults")
        ]
        set_health_checks(status, "project")
        if status["floating_address"]:
            log("▸ 6. the active load balancer killed under load")
            results["lb_failover"] = measure_lb_failover(rate=20, duration=kill_seconds)
    finally:
        lab("down", check=False)
    log("▸ 5. program evaluation under mocks")
    results["evaluation"] = measure_evaluation([2, 5, 10, 20], repeats)
    command = results["command"] = "sudo scripts/bench" + (" --quick" if args.quick else "")
    output = REPO / args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(markdown(results, command))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=2))
    log(f"✓ wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
