"""LoadBalancer under mocks: HAProxy names every web server; Elastic IP; only the LB group."""

import re

import yaml

from provisioning.render import decode_user_data


def runtime_config(program, name: str) -> str:
    """A runtime configuration parameter's value, decoded as webinfra-config-sync decodes it."""
    import base64
    import gzip

    (parameter,) = [p for p in program.of_type("aws:ssm/parameter:Parameter") if p.inputs["name"].endswith(name)]
    assert parameter.inputs["type"] == "String" and parameter.inputs["tier"] == "Standard"
    from lab.mock_tls import unwrap  # the provider marks every parameter's value secret

    return gzip.decompress(base64.b64decode(unwrap(parameter.inputs["value"]))).decode()


def test_haproxy_names_every_web_server_in_runtime_configuration_not_in_user_data(program):
    config = runtime_config(program, "/config/haproxy-runtime.cfg")
    ips = program.exports["web_private_ips"]
    for number, ip in enumerate(ips, start=1):
        # in the reads' backend, and in the writes' backend following the reads' health checks
        assert f"server web-{number:02d} {ip}:80\n" in config, f"web-{number:02d} missing from the LB"
        assert f"server web-{number:02d} {ip}:80 track web/web-{number:02d}\n" in config
    assert config.count("    server web-") == 2 * len(ips)
    assert "backend web from webinfra_reads\n" in config and "backend web_write from webinfra_writes\n" in config
    # a web server added or removed changes no load balancer's user-data (which would replace it)
    for lb in [i for i in program.of_type("aws:ec2/instance:Instance") if i.inputs["tags"]["Role"] == "lb"]:
        user_data = decode_user_data(lb.inputs["userDataBase64"])
        # (the runtime file's line pattern, in its sync entry, says `server web-[0-9]{2}`)
        assert not re.search(r"server web-\d\d", user_data) and not any(ip in user_data for ip in ips)


def test_lb_has_an_elastic_ip_and_the_url_uses_it_over_https(program):
    (eip,) = program.of_type("aws:ec2/eip:Eip")
    (association,) = program.of_type("aws:ec2/eipAssociation:EipAssociation")
    assert eip.inputs["domain"] == "vpc" and "instance" not in eip.inputs  # allocated first, for the certificate
    assert association.inputs == {"allocationId": f"{eip.name}-id", "instanceId": "lb-01-instance-id"}
    assert association.options["ignore_changes"] == []  # a single load balancer: Pulumi keeps it there
    # the provider's docs: an association may need the VPC's internet gateway first
    assert "net-igw" in [d._name for d in association.options["depends_on"]]
    assert program.exports["url"] == f"https://{program.exports['lb_public_ip']}/"


def test_lb_is_in_the_lb_group_with_ipv6(program):
    lb = program.named("lb-01-instance")
    assert lb.inputs["vpcSecurityGroupIds"] == ["net-lb-sg-id"] and lb.inputs["ipv6AddressCount"] == 1
    # the single load balancer's earlier name: an existing stack keeps its instance
    assert lb.options["aliases"] == ["lb-instance"]
    assert "keepalived" not in decode_user_data(lb.inputs["userDataBase64"])
    assert lb.inputs["tags"]["LbPair"] == "no"  # a pair's readiness gate waits while the address is here


# --- a load-balancer pair (lbCount 2) -------------------------------------------------------------------


def lb_instances(run):
    return {
        i.inputs["tags"]["Name"]: i
        for i in run.of_type("aws:ec2/instance:Instance")
        if i.inputs["tags"]["Role"] == "lb"
    }


def test_a_pair_runs_in_two_subnets_each_naming_the_other_as_its_vrrp_peer(pair):
    lbs = lb_instances(pair)
    assert sorted(lbs) == ["lb-01", "lb-02"]
    assert lbs["lb-01"].inputs["subnetId"] != lbs["lb-02"].inputs["subnetId"]  # two availability zones
    addresses = {name: lb.inputs["privateIp"] for name, lb in lbs.items()}
    for name, peer in (("lb-01", "lb-02"), ("lb-02", "lb-01")):
        document = yaml.safe_load(decode_user_data(lbs[name].inputs["userDataBase64"]))
        keepalived = next(f["content"] for f in document["write_files"] if f["path"] == "/etc/webinfra/keepalived.conf")
        assert (
            f"unicast_src_ip {addresses[name]}" in keepalived
            and f"unicast_peer {{\n        {addresses[peer]}\n" in keepalived
        )
        assert (
            'notify_master "/usr/local/sbin/webinfra-lb-takeover"' in keepalived
            and "keepalived" in document["packages"]
        )
        # on AWS the Elastic IP moves: keepalived holds only a host-local marker, nothing on the network
        assert "169.254.51.1/32 dev lo" in keepalived and "dev $LB_INTERFACE" not in keepalived


def test_a_pair_declares_no_association_so_no_pulumi_up_can_move_the_elastic_ip(pair):
    # keepalived's active load balancer associates the address (notify_master, and every 30 s): an
    # association owned by Pulumi would be dropped by a refresh and re-created on lb-01, dead or not
    assert pair.of_type("aws:ec2/eipAssociation:EipAssociation") == []
    for lb in lb_instances(pair).values():
        document = yaml.safe_load(decode_user_data(lb.inputs["userDataBase64"]))
        paths = {f["path"] for f in document["write_files"]}
        assert {"/etc/systemd/system/webinfra-lb-eip.timer", "/usr/local/sbin/webinfra-lb-takeover"} <= paths


def test_lb_01_waits_for_lb_02_to_serve_so_a_pair_is_never_replaced_at_once(pair):
    import shlex

    (gate,) = [c for c in pair.of_type("command:local:Command") if c.name == "lb-02-ready"]
    words = shlex.split(gate.inputs["create"])
    assert words[0] == "scripts/wait-healthy"
    args = dict(zip(words[1::2], words[2::2], strict=False))
    assert args == {
        "--stack": "dev",
        "--region": "eu-west-1",
        "--host": "lb-02",
        "--instance-id": "lb-02-instance-id",
        "--metric": "HealthyBackends",
        "--at-least": "1",
        "--within-minutes": "5",
        "--timeout": "900",
        "--interval": "15",
        # and the stack's Elastic IP on no single load balancer (lbCount 1 -> 2: lb-02 has taken it over)
        "--elastic-ip": pair.named("net-lb-eip").outputs["allocationId"],
    }
    tags = {name: i.inputs["tags"]["LbPair"] for name, i in lb_instances(pair).items()}
    assert tags == {"lb-01": "yes", "lb-02": "yes"}
    # re-run whenever lb-02 is replaced (a property dependency: the gate is replaced with lb-02), and
    # whenever lb-01 is about to be (its user-data, address or key pair changed) ...
    lb_01 = pair.named("lb-01-instance").inputs
    assert gate.inputs["triggers"] == ["lb-02-instance-id", lb_01["userDataBase64"], lb_01["privateIp"], ""]
    assert gate.options["parent"] == "lb" and "environment" not in gate.inputs
    # ... while lb-01 depends on it by depends_on alone: Pulumi does not delete lb-01 along with lb-02
    # (a dependsOn edge makes no dependent replacement), and registers lb-01 only once the gate passed.
    # lb-02 first: a second load balancer added to a stack (lbCount 1 -> 2 replaces lb-01) serves, and
    # holds the Elastic IP, before lb-01 goes.
    assert gate_of(pair.named("lb-01-instance")) == ["lb-02-ready"]
    assert gate_of(pair.named("lb-02-instance")) == []


def gate_of(instance) -> list[str]:
    return [d._name for d in instance.options["depends_on"] if getattr(d, "_name", "").endswith("-ready")]


def test_a_single_load_balancer_has_no_readiness_gate(program):
    assert [c.name for c in program.of_type("command:local:Command") if c.name.startswith("lb-")] == []


def test_vrrp_is_allowed_between_the_load_balancers_only(pair):
    from tests.components.helpers import EGRESS, INGRESS

    vrrp = [r for r in pair.of_type(INGRESS) + pair.of_type(EGRESS) if r.inputs["ipProtocol"] == "112"]
    assert sorted(
        (r.type == INGRESS, r.inputs["securityGroupId"], r.inputs.get("referencedSecurityGroupId")) for r in vrrp
    ) == [(False, "net-lb-sg-id", "net-lb-sg-id"), (True, "net-lb-sg-id", "net-lb-sg-id")]
    assert all("fromPort" not in r.inputs and "cidrIpv4" not in r.inputs for r in vrrp)


def test_without_a_pair_there_is_no_vrrp_and_no_right_to_move_the_address(program):
    import json

    from tests.components.helpers import EGRESS, INGRESS

    assert not [r for r in program.of_type(INGRESS) + program.of_type(EGRESS) if r.inputs["ipProtocol"] != "tcp"]
    for policy in program.of_type("aws:iam/rolePolicy:RolePolicy"):
        actions = {
            action
            for statement in json.loads(policy.inputs["policy"])["Statement"]
            for action in statement["Action"]
            if action.startswith("ec2:")
        }
        # the failover controller asks where the Elastic IP points (it decides only there); nothing moves it
        assert actions == ({"ec2:DescribeAddresses"} if policy.name.startswith("lb-") else set()), policy


def test_the_lb_role_may_move_only_the_stacks_elastic_ip_onto_the_stacks_load_balancers(pair):
    import json

    (policy,) = [p for p in pair.of_type("aws:iam/rolePolicy:RolePolicy") if p.name == "lb-host-policy"]
    ec2 = [
        s for s in json.loads(policy.inputs["policy"])["Statement"] if any(a.startswith("ec2:") for a in s["Action"])
    ]
    actions = sorted({a for s in ec2 for a in s["Action"]})
    assert actions == ["ec2:AssociateAddress", "ec2:DescribeAddresses"]
    associate = [s for s in ec2 if s["Action"] == ["ec2:AssociateAddress"]]
    resources = sorted(r for s in associate for r in s["Resource"])
    assert resources == [
        "arn:aws:ec2:eu-west-1:123456789012:elastic-ip/net-lb-eip-id",
        "arn:aws:ec2:eu-west-1:123456789012:instance/*",
    ]
    (onto,) = [s for s in associate if s["Resource"] == ["arn:aws:ec2:eu-west-1:123456789012:instance/*"]]
    assert onto["Condition"] == {
        "StringEquals": {
            "aws:ResourceTag/Project": "webinfra",
            "aws:ResourceTag/Stack": "dev",
            "aws:ResourceTag/Role": "lb",
        }
    }
    (describe,) = [s for s in ec2 if s["Action"] == ["ec2:DescribeAddresses"]]
    assert describe["Resource"] == "*" and "Condition" not in describe  # read-only; has no resource-level permissions
    # the instances carry the tags the condition names, and so does the address the script looks up
    for lb in lb_instances(pair).values():
        assert {k: lb.inputs["tags"][k] for k in ("Project", "Stack", "Role")} == {
            "Project": "webinfra",
            "Stack": "dev",
            "Role": "lb",
        }
    (eip,) = pair.of_type("aws:ec2/eip:Eip")
    assert {k: eip.inputs["tags"][k] for k in ("Project", "Stack", "Role")} == {
        "Project": "webinfra",
        "Stack": "dev",
        "Role": "lb",
    }
    (web_policy,) = [p for p in pair.of_type("aws:iam/rolePolicy:RolePolicy") if p.name == "web-host-policy"]
    assert "ec2:" not in web_policy.inputs["policy"]


def test_both_load_balancers_are_watched_and_keepalived_with_them(pair):
    alarms = {a.inputs["name"]: a.inputs for a in pair.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    for lb in ("lb-01", "lb-02"):
        assert alarms[f"webinfra-dev-{lb}-backends"]["dimensions"] == {"Host": lb}
        assert alarms[f"webinfra-dev-{lb}-keepalived-down"]["dimensions"]["exe"] == "keepalived"
        assert f"webinfra-dev-{lb}-system-check" in alarms
    assert "webinfra-dev-web-01-keepalived-down" not in alarms


def test_the_gate_uses_the_aws_profile_pulumi_up_uses():
    from lab.mock_cloud import run_program

    run = run_program({"lbCount": 2}, aws_profile="ops-admin")
    (gate,) = [c for c in run.of_type("command:local:Command") if c.name == "lb-02-ready"]
    assert gate.inputs["environment"] == {"AWS_PROFILE": "ops-admin"}
