"""The lab's plan and network rules, derived from the program's declarations (no lab booted here,
except `nft -c` in a throw-away namespace to check the rulesets are valid)."""

import gzip
import os
import subprocess

import pytest
import yaml

from lab.cli import STACK_FILE
from lab.mock_cloud import run_program, stack_config
from lab.topology import gateway_ruleset, lab_plan, plan_from_program, security_groups_ruleset
from tests.helpers import require_tool


@pytest.fixture(scope="module")
def plan():
    config, region = stack_config(STACK_FILE)
    config["webCount"] = 3
    run = run_program(config, stack="lab", region=region)
    return lab_plan(run, config, region)


def test_the_lab_stack_points_hosts_at_the_lab_api_stand_in():
    config, region = stack_config(STACK_FILE)
    assert region and config["awsEndpointUrl"] == "http://10.77.0.2" and config["vpcCidr"] == "10.77.0.0/16"


def test_plan_has_every_instance_with_its_exact_user_data(plan):
    assert [(h.name, h.role, h.db_role) for h in plan.hosts] == [
        ("lb-01", "lb", None),
        ("lb-02", "lb", None),
        ("web-01", "web", "primary"),
        ("web-02", "web", "replica"),
        ("web-03", "web", "replica"),
    ]
    for host in plan.hosts:
        text = gzip.decompress(host.user_data_gzip).decode()
        assert text.startswith("#cloud-config\n") and f"hostname: {host.name}\n" in text
        assert host.packages == tuple(yaml.safe_load(text)["packages"])
        assert host.private_ip.startswith("10.77.") and host.public_ip.startswith("198.51.100.")
    assert "nginx" not in plan.host("lb-01").packages and "haproxy" in plan.host("lb-01").packages
    # the Elastic IP is the site; with a pair it floats, and each LB keeps its own public address
    assert plan.url == f"https://{plan.elastic_ip}/" and plan.floating_address == "10.77.0.4"
    assert plan.elastic_ip not in {h.public_ip for h in plan.hosts}
    assert plan.elastic_ip_tags["Role"] == "lb" and plan.elastic_ip_tags["Stack"] == "lab"
    assert plan.router_address == "10.77.0.1" and plan.api_address == "10.77.0.2"


def test_parameters_are_the_declared_secrets_and_programs_unwrapped(plan):
    secrets = sorted(name for name in plan.parameters if "/programs/" not in name and "/config/" not in name)
    assert secrets == [
        "/webinfra/lab/db/app-password",
        "/webinfra/lab/db/failover-password",
        "/webinfra/lab/db/replication-password",
        "/webinfra/lab/tls/lb-certificate",
        "/webinfra/lab/tls/web-01",
        "/webinfra/lab/tls/web-02",
        "/webinfra/lab/tls/web-03",
    ]
    programs = sorted(name for name in plan.parameters if "/programs/" in name)
    assert programs and all(plan.parameters[name][0] == "String" for name in programs), programs
    config = sorted(name for name in plan.parameters if "/config/" in name)
    assert config == [
        "/webinfra/lab/config/failover-servers.json",
        "/webinfra/lab/config/firewall-peers.nft",
        "/webinfra/lab/config/haproxy-runtime.cfg",
    ]
    assert all(plan.parameters[name][0] == "String" for name in config)
    for name in secrets:
        kind, value = plan.parameters[name]
        assert kind == "SecureString" and isinstance(value, str)
        if "password" in name:
            assert value.isalnum() and len(value) == 32
        else:
            assert "-----BEGIN CERTIFICATE-----" in value and "PRIVATE KEY-----" in value


def test_security_group_rules_follow_the_declarations(plan):
    ruleset = security_groups_ruleset(plan)
    web_ips = ", ".join(h.private_ip for h in plan.hosts if h.role == "web")
    assert f"set sg_net_web_sg_id {{ type ipv4_addr; elements = {{ {web_ips} }}; }}" in ruleset
    ingress_web = ruleset.split("chain ingress_web_01 {", 1)[1].split("}", 1)[0]
    assert "ip saddr @sg_net_lb_sg_id tcp dport 80 accept" in ingress_web
    assert "ip saddr @sg_net_web_sg_id tcp dport 3306 accept" in ingress_web
    assert "0.0.0.0/0" not in ingress_web and "counter drop" in ingress_web
    ingress_lb = ruleset.split("chain ingress_lb_01 {", 1)[1].split("}", 1)[0]
    assert "ip saddr 0.0.0.0/0 tcp dport 80 accept" in ingress_lb and "3306" not in ingress_lb
    assert "ct state established,related accept" in ruleset


def test_vrrp_passes_between_the_load_balancers_and_the_floating_address_gets_their_rules(plan):
    ruleset = security_groups_ruleset(plan)
    for lb in ("lb_01", "lb_02"):
        ingress = ruleset.split(f"chain ingress_{lb} {{", 1)[1].split("}", 1)[0]
        egress = ruleset.split(f"chain egress_{lb} {{", 1)[1].split("}", 1)[0]
        assert "ip saddr @sg_net_lb_sg_id ip protocol 112 accept" in ingress
        assert "ip daddr @sg_net_lb_sg_id ip protocol 112 return" in egress
    web = ruleset.split("chain ingress_web_01 {", 1)[1].split("}", 1)[0]
    assert "112" not in web
    forward = ruleset.split("chain forward {", 1)[1].split("\n    }", 1)[0]
    assert "ip daddr 10.77.0.4 jump ingress_lb_01" in forward


def test_gateway_forwards_only_within_the_lab(plan):
    ruleset = gateway_ruleset(plan, bridge="vpc0", internet_link="v-inet")
    for host in plan.hosts:
        assert f"ip daddr {host.public_ip} dnat to {host.private_ip}" in ruleset
    assert f"ip daddr {plan.elastic_ip} dnat to 10.77.0.4" in ruleset  # to whichever LB keepalived gave it
    assert "policy drop" in ruleset and "ip daddr 203.0.113.0/24 accept" in ruleset


@pytest.mark.lab  # needs root: nft -c in a network namespace
def test_rulesets_are_valid_nftables(plan, tmp_path):
    nft = require_tool("nft")
    if os.geteuid() != 0:
        pytest.fail("checking nftables rulesets needs root (a throw-away network namespace)")
    namespace = f"wt-nftcheck-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        for text in (security_groups_ruleset(plan), gateway_ruleset(plan, bridge="vpc0", internet_link="v-inet")):
            result = subprocess.run(
                ["ip", "netns", "exec", namespace, nft, "-c", "-f", "-"], input=text, capture_output=True, text=True
            )
            assert result.returncode == 0, result.stderr
        broken = security_groups_ruleset(plan).replace("tcp dport 80 accept", "tcp dport eighty accept", 1)
        assert (
            subprocess.run(
                ["ip", "netns", "exec", namespace, nft, "-c", "-f", "-"], input=broken, capture_output=True, text=True
            ).returncode
            != 0
        )
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], check=False)


def test_plan_carries_the_declared_smoke_command_unchanged():
    config, region = stack_config(STACK_FILE)
    run = run_program(config, stack="lab", region=region)
    declared = run.named("smoke-test-run")
    plan = plan_from_program(
        run, stack="lab", region=region, vpc_cidr=config["vpcCidr"], aws_endpoint_url=config["awsEndpointUrl"]
    )
    assert plan.smoke_command["create"] == declared.inputs["create"]
    assert plan.smoke_command["environment"] == declared.inputs["environment"]
    gate = run.named("lb-02-ready")  # the pair's readiness gate
    assert plan.local_commands[gate.name]["create"] == gate.inputs["create"]
    rolling = run.named("web-02-ready")  # a replica's rolling gate: its update is what waits
    assert plan.local_commands[rolling.name]["update"] == rolling.inputs["update"]


def test_a_second_evaluation_with_ec2s_instance_ids_names_them_and_keeps_the_topology():
    from lab.cli import topology

    config, region = stack_config(STACK_FILE)
    first = lab_plan(run_program(config, stack="lab", region=region), config, region)
    ids = {h.name: f"i-0{n:016x}" for n, h in enumerate(first.hosts, start=1)}
    run = run_program(config, stack="lab", region=region, instance_ids=ids)
    second = lab_plan(run, config, region)
    assert topology(second) == topology(first)
    assert {h.name: h.instance_id for h in second.hosts} == ids
    # what the program declares from an instance's id names the instance EC2 made
    assert f"--instance-id {ids['lb-02']} " in second.local_commands["lb-02-ready"]["create"]
    alarm = next(
        a
        for a in run.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
        if a.inputs["name"] == "webinfra-lab-web-01-cpu-high"
    )
    assert alarm.inputs["dimensions"] == {"InstanceId": ids["web-01"]}
