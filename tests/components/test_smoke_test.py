"""SmokeTest under mocks: `pulumi up` ends with scripts/smoke against the site, unless turned off; and
the declared command itself, run as pulumi-command runs it, passes against a site at the stack's address."""

import os
import re
import shlex
import subprocess
import sys
import uuid

import pytest

from components.smoke_test import CERTIFICATE_VARIABLE
from lab.declared import PROJECT_DIR, run_local_command
from lab.mock_cloud import run_program
from lab.mock_tls import unwrap
from provisioning.render import decode_user_data
from tests.components.test_load_balancer import runtime_config
from tests.provisioning.helpers import files_of


def haproxy_config_of(program) -> str:
    return runtime_config(program, "/config/haproxy-runtime.cfg")


def smoke_commands(run):
    return [c for c in run.of_type("command:local:Command") if c.name.startswith("smoke-test")]


def test_up_ends_with_the_smoke_test_of_the_url_naming_every_web_server(program):
    (smoke,) = smoke_commands(program)
    words = shlex.split(smoke.inputs["create"])
    assert words[:2] == ["scripts/smoke", program.exports["url"]]
    assert words[words.index("--backends") + 1] == ",".join(
        f"web-{n:02d}" for n in range(1, len(program.exports["web_private_ips"]) + 1)
    )
    assert int(words[words.index("--timeout") + 1]) == 900 and "--server-name" not in words
    # the exported certificate reaches it through the environment, not the command line
    assert words[words.index("--cacert-pem-env") + 1] == CERTIFICATE_VARIABLE
    assert smoke.inputs["environment"][CERTIFICATE_VARIABLE] == program.exports["lb_certificate_pem"]
    # after every instance exists (its component depends on the web tier and the LB), and again after a
    # replacement or a re-minted certificate
    instances = program.of_type("aws:ec2/instance:Instance")
    version = words[words.index("--config") + 1]
    assert sorted(smoke.inputs["triggers"]) == sorted(
        [*(f"{i.name}-id" for i in instances), program.exports["lb_certificate_pem"], version]
    )
    # the version HAProxy's declared runtime file sends: a changed one runs the test again, and the test
    # waits until the site serves it
    assert f"    set-var proc.webinfra_config str({version})\n" in haproxy_config_of(program)
    (lb,) = [i for i in instances if i.inputs["tags"]["Role"] == "lb"]
    config = files_of(decode_user_data(lb.inputs["userDataBase64"]))["/etc/webinfra/haproxy.cfg"]["content"]
    assert (
        "http-response set-header X-Webinfra-Config %[var(proc.webinfra_config)] if { var(txn.config_asked) -m bool }\n"
        in config
    )
    assert program.named("smoke-test-run").options["parent"] == "smoke-test"


def test_the_smoke_test_runs_after_the_web_tier_and_the_load_balancers(program):
    depends_on = program.options["smoke-test"]["depends_on"]
    assert sorted(resource._name for resource in depends_on) == ["lb", "web"]


def test_with_a_domain_the_certificate_is_checked_for_it():
    run = run_program({"domain": "www.example.com", "acmeEmail": "ops@example.com"})
    (smoke,) = smoke_commands(run)
    words = shlex.split(smoke.inputs["create"])
    assert words[words.index("--server-name") + 1] == "www.example.com"


def test_smoke_test_false_turns_it_off():
    # nor the web tier's rolling gates, which reach the site the same way
    assert run_program({"smokeTest": "false"}).of_type("command:local:Command") == []


def test_without_the_smoke_test_a_stack_with_several_replicas_is_warned_at_preview(monkeypatch):
    import pulumi

    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: warnings.append(message))
    run_program({"smokeTest": "false", "webCount": "3"})
    assert any("changes them all at once" in w for w in warnings), warnings
    warnings.clear()
    run_program({"smokeTest": "false"})  # one replica: nothing to roll
    run_program({"webCount": "3"})
    assert not any("changes them all at once" in w for w in warnings), warnings


@pytest.fixture
def stack_address_namespace():
    """A network namespace of this test's own, its loopback holding the stack's Elastic IP (nothing routes
    in or out of it): the declared command reaches a site there exactly as `pulumi up` reaches the stack."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root for its network namespace (sudo scripts/test; CI runs as root)")
    name = f"wit-smoke-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    yield name
    subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.mark.lab  # needs root: a network namespace
def test_the_declared_command_passes_against_a_site_at_the_stacks_address(stack_address_namespace, tmp_path):
    run = run_program({})
    (smoke,) = smoke_commands(run)
    address = run.exports["lb_public_ip"]
    (parameter,) = [
        p for p in run.of_type("aws:ssm/parameter:Parameter") if p.inputs["name"].endswith("/tls/lb-certificate")
    ]
    (version,) = re.findall(r"proc\.webinfra_config str\((\w+)\)", haproxy_config_of(run))  # what HAProxy would send
    pem = tmp_path / "haproxy.pem"  # what the load balancer serves: the exported certificate with its key, from SSM
    pem.write_text(unwrap(parameter.inputs["value"]))
    subprocess.run(["ip", "-n", stack_address_namespace, "addr", "add", f"{address}/32", "dev", "lo"], check=True)
    site = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            stack_address_namespace,
            sys.executable,
            "-m",
            "tests.ops.fake_site",
            address,
            "--cert",
            str(pem),
            "--key",
            str(pem),
            "--config",
            version,
        ],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert site.stdout is not None  # stdout=PIPE
        assert site.stdout.readline().strip() == "serving"
        result = run_local_command(smoke.inputs, namespace=stack_address_namespace, timeout=120)
    finally:
        site.kill()
        site.wait(timeout=10)
    assert result.returncode == 0, (
        f"{smoke.inputs['create']!r} exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )
    for check in ("health", "rotation", "write", "https"):
        assert f"✓ {check}" in result.stdout, result.stdout
