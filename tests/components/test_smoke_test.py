"""SmokeTest under mocks: `pulumi up` ends with scripts/smoke against the site, unless turned off."""
import shlex

from components.smoke_test import CERTIFICATE_VARIABLE
from lab.mock_cloud import run_program


def smoke_commands(run):
    return run.of_type("command:local:Command")


def test_up_ends_with_the_smoke_test_of_the_url_naming_every_web_server(program):
    (smoke,) = smoke_commands(program)
    words = shlex.split(smoke.inputs["create"])
    assert words[:3] == ["python3", "scripts/smoke", program.exports["url"]]
    assert words[words.index("--backends") + 1] == ",".join(f"web-{n:02d}" for n in range(1, len(program.exports["web_private_ips"]) + 1))
    assert int(words[words.index("--timeout") + 1]) == 900 and "--server-name" not in words
    # the exported certificate reaches it through the environment, not the command line
    assert words[words.index("--cacert-pem-env") + 1] == CERTIFICATE_VARIABLE
    assert smoke.inputs["environment"][CERTIFICATE_VARIABLE] == program.exports["lb_certificate_pem"]
    # after every instance exists (its component depends on the web tier and the LB), and again after a replacement
    instances = program.of_type("aws:ec2/instance:Instance")
    assert sorted(smoke.inputs["triggers"]) == sorted(f"{i.name}-id" for i in instances)
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
    assert smoke_commands(run_program({"smokeTest": "false"})) == []
