"""scripts/smoke against a small site on loopback that behaves like the stack (round-robin backends
naming themselves, writes replicated to some or all of them, HTTPS with HSTS and an HTTP redirect),
and that can be broken in each way the smoke test must name. The lab test runs it on the real stack."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import urllib.parse

import pytest

from ops import smoke
from tests.ops.fake_site import FakeSite, self_signed_certificate, serve

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.fixture
def site(tmp_path):
    fake = FakeSite()
    cert_file, key_file = self_signed_certificate(tmp_path)
    https, plain = serve(fake, "127.0.0.1", 0, 0, str(cert_file), str(key_file))
    fake.url = f"https://127.0.0.1:{https.server_address[1]}/"
    fake.http_port = plain.server_address[1]
    fake.cacert = str(cert_file)
    yield fake
    for server in (https, plain):
        server.shutdown()
        server.server_close()


def run_smoke(site, *, backends=("web-01", "web-02"), timeout=0.0, cacert="site", **kwargs) -> tuple[int, str]:
    target = smoke.Target(
        urllib.parse.urlsplit(site.url), cacert=site.cacert if cacert == "site" else cacert, http_port=site.http_port
    )
    out = io.StringIO()
    code = smoke.smoke(target, list(backends), timeout=timeout, interval=0.2, out=out, **kwargs)
    return code, out.getvalue()


def test_a_serving_site_passes_every_check(site):
    code, out = run_smoke(site)
    assert code == 0, out
    for line in (
        "✓ health",
        "✓ rotation answered by web-01 ×1, web-02 ×1",
        "✓ write    message 1 acknowledged and read back from web-01, web-02",
        "✓ https    certificate verified (issuer 'webinfra smoke test', 89 days left), HSTS, http:// → 301",
    ):
        assert line in out, out


def test_a_rolling_gate_finds_its_one_replica_among_many(site):
    # scripts/smoke --backends web-12 on a site of 12: four requests are not enough, four rounds of the
    # servers that answer are
    site.backends = [f"web-{n:02d}" for n in range(1, 13)]
    site.turn = __import__("itertools").cycle(site.backends)
    site.stored = {b: [] for b in site.backends}
    site.replicate_to = set(site.backends)
    target = smoke.Target(urllib.parse.urlsplit(site.url), cacert=site.cacert, http_port=site.http_port)
    assert smoke.check_rotation(target, ["web-12"]).startswith("answered by")
    with pytest.raises(smoke.CheckFailed, match="web-13 not in the rotation"):
        smoke.check_rotation(target, ["web-13"])


def test_a_backend_missing_from_the_rotation_is_named(site):
    code, out = run_smoke(site, backends=("web-01", "web-02", "web-03"))
    assert code == 1 and "rotation: web-03 not in the rotation (answered: web-01 ×" in out, out


def test_an_unhealthy_site_fails_on_health(site):
    site.healthy = False
    code, out = run_smoke(site)
    assert code == 1 and "health: GET /health answered 503" in out, out


def test_a_write_that_does_not_replicate_is_named_with_the_backend(site):
    site.replicate_to = {"web-01"}
    code, out = run_smoke(site)
    assert code == 1 and "write: message 1 was acknowledged but not read back from web-02" in out, out


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("untrusted", "https: the certificate does not verify"),
        ("no hsts", "https: no Strict-Transport-Security header"),
        ("no redirect", "https: http:// answered 200"),
        ("expiring", "https: the certificate expires in 89 days"),
    ],
)
def test_https_problems_are_named(site, breakage, message):
    kwargs: dict[str, object] = {}
    if breakage == "untrusted":
        kwargs["cacert"] = None  # the system's CAs do not know the site's certificate
    elif breakage == "no hsts":
        site.hsts = False
    elif breakage == "no redirect":
        site.redirect = False
    else:
        kwargs["min_cert_days"] = 100
    code, out = run_smoke(site, **kwargs)
    assert code == 1 and message in out, out


def test_it_waits_bounded_and_shows_progress_until_the_site_serves(site):
    site.healthy = False
    threading.Timer(0.7, lambda: setattr(site, "healthy", True)).start()
    code, out = run_smoke(site, timeout=20)
    assert code == 0, out
    assert "waiting (1, " in out and "health: GET /health answered 503" in out and "attempts)" in out


def test_it_waits_until_the_site_serves_the_declared_configuration(site):
    site.config = "0123456789ab"
    code, out = run_smoke(site, config="fedcba987654")
    assert code == 1 and "config: the load balancer serves configuration 0123456789ab, not fedcba987654 yet" in out
    threading.Timer(0.7, lambda: setattr(site, "config", "fedcba987654")).start()
    code, out = run_smoke(site, config="fedcba987654", timeout=20)
    assert code == 0 and "✓ config   the load balancer serves configuration fedcba987654" in out, out


def test_the_command_line_exits_non_zero_naming_the_check_and_refuses_bad_arguments(site):
    command = [
        str(REPO / "scripts/smoke"),
        site.url,
        "--cacert",
        site.cacert,
        "--http-port",
        str(site.http_port),
        "--backends",
        "web-01,web-09",
        "--timeout",
        "0",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "rotation: web-09 not in the rotation" in result.stdout, (
        result.stdout + result.stderr
    )
    command[command.index("web-01,web-09")] = "web-01,web-02"
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "serves" in result.stdout, result.stdout + result.stderr
    bad = subprocess.run(
        [sys.executable, str(REPO / "ops/smoke.py"), "ftp://example.org/"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "URL must be http(s)" in bad.stderr
