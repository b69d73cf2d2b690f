"""Network under mocks: the security-group invariants of the baseline, rule by rule."""

import pytest

from lab.mock_cloud import run_program
from tests.components.helpers import EGRESS, INGRESS

WORLD = ("0.0.0.0/0", "::/0")


def rules(run, typ):
    return run.of_type(typ)


def group_of(rule) -> str:
    return rule.inputs["securityGroupId"]  # mock ids are "<resource name>-id"


def test_vpc_and_one_public_subnet_per_az(program):
    (vpc,) = program.of_type("aws:ec2/vpc:Vpc")
    assert vpc.inputs["cidrBlock"] == "10.0.0.0/16"
    subnets = program.of_type("aws:ec2/subnet:Subnet")
    zones = [s.inputs["availabilityZone"] for s in subnets]
    assert len(set(zones)) == len(subnets) >= 2, f"subnets not one per AZ: {zones}"
    assert len(program.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")) == len(subnets)
    (rt,) = program.of_type("aws:ec2/routeTable:RouteTable")
    assert {r.get("cidrBlock") or r.get("ipv6CidrBlock") for r in rt.inputs["routes"]} == {"0.0.0.0/0", "::/0"}


def test_no_subnet_is_placed_in_a_local_zone(program):
    # the mocks answer as an account with a Local Zone opted in: it is listed unless filtered out
    zones = [s.inputs["availabilityZone"] for s in program.of_type("aws:ec2/subnet:Subnet")]
    assert zones == ["eu-west-1a", "eu-west-1b", "eu-west-1c"][: len(zones)], zones


def test_default_security_group_is_emptied(program):
    (default,) = program.of_type("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert default.inputs.get("ingress", []) == [] and default.inputs.get("egress", []) == [], default


def test_every_rule_has_a_description(program):
    for rule in rules(program, INGRESS) + rules(program, EGRESS):
        assert len(rule.inputs.get("description", "")) > 10, f"{rule} has no description"
    for group in program.of_type("aws:ec2/securityGroup:SecurityGroup"):
        assert group.inputs.get("description"), f"{group} has no description"


def test_only_http_and_https_on_the_lb_are_open_to_the_world(program):
    open_to_world = [
        (group_of(r), r.inputs["fromPort"], r.inputs["toPort"])
        for r in rules(program, INGRESS)
        if r.inputs.get("cidrIpv4") in WORLD or r.inputs.get("cidrIpv6") in WORLD
    ]
    assert sorted(open_to_world) == sorted(
        [("net-lb-sg-id", port, port) for port in (80, 443) for _family in ("ipv4", "ipv6")]
    ), open_to_world


def test_web_servers_take_http_only_from_the_lb_and_mysql_only_from_each_other_and_the_lb(program):
    web_ingress = [r for r in rules(program, INGRESS) if group_of(r) == "net-web-sg-id"]
    assert {(r.inputs["fromPort"], r.inputs.get("referencedSecurityGroupId")) for r in web_ingress} == {
        (80, "net-lb-sg-id"),
        (3306, "net-web-sg-id"),
        (3306, "net-lb-sg-id"),  # the failover controller
    }, [str(r) for r in web_ingress]
    for rule in rules(program, INGRESS):
        if rule.inputs["fromPort"] <= 3306 <= rule.inputs["toPort"]:
            assert group_of(rule) == "net-web-sg-id", f"{rule} opens 3306 on something else"
            assert rule.inputs.get("referencedSecurityGroupId") in ("net-web-sg-id", "net-lb-sg-id"), rule
            assert not rule.inputs.get("cidrIpv4") and not rule.inputs.get("cidrIpv6"), rule


def test_no_ssh_rule_without_admin_cidr(program):
    assert not [r for r in rules(program, INGRESS) if r.inputs["fromPort"] <= 22 <= r.inputs["toPort"]]


def test_an_admin_network_alone_opens_no_ssh():
    run = run_program({"adminCidr": "203.0.113.7/32"})
    assert not [r for r in rules(run, INGRESS) if r.inputs["fromPort"] <= 22 <= r.inputs["toPort"]]
    assert run.exports["ssh_enabled"] is False


def test_ssh_only_from_admin_cidr_when_set():
    run = run_program({"adminCidr": "203.0.113.7/32", "sshKeyName": "ops"})
    ssh = [r for r in rules(run, INGRESS) if r.inputs["fromPort"] <= 22 <= r.inputs["toPort"]]
    assert {group_of(r) for r in ssh} == {"net-lb-sg-id", "net-web-sg-id"}
    assert all(r.inputs.get("cidrIpv4") == "203.0.113.7/32" and not r.inputs.get("cidrIpv6") for r in ssh), ssh
    assert run.exports["ssh_enabled"] is True
    assert {i.inputs.get("keyName") for i in run.of_type("aws:ec2/instance:Instance")} == {"ops"}


def test_egress_is_limited_to_http_https_and_the_internal_flows(program):
    for rule in rules(program, EGRESS):
        assert rule.inputs["ipProtocol"] == "tcp" and rule.inputs["fromPort"] == rule.inputs["toPort"], rule
        port = rule.inputs["fromPort"]
        if rule.inputs.get("referencedSecurityGroupId"):
            assert (group_of(rule), port, rule.inputs["referencedSecurityGroupId"]) in {
                ("net-lb-sg-id", 80, "net-web-sg-id"),
                ("net-web-sg-id", 3306, "net-web-sg-id"),
                ("net-lb-sg-id", 3306, "net-web-sg-id"),
            }, rule
        else:
            assert port in (80, 443), f"{rule} lets port {port} out to the world"


@pytest.mark.parametrize("typ", [INGRESS, EGRESS])
def test_no_rule_is_all_protocols(program, typ):
    assert all(r.inputs["ipProtocol"] != "-1" for r in rules(program, typ))
