"""WebTier under mocks: N servers, web-01 primary, spread across AZs (one server: test_web_server.py)."""

from tests.helpers import WEB_COUNTS


def web_instances(run):
    return sorted(
        (i for i in run.of_type("aws:ec2/instance:Instance") if i.inputs["tags"]["Role"] == "web"),
        key=lambda i: i.inputs["tags"]["Name"],
    )


def test_counts_and_roles(programs):
    for count in WEB_COUNTS:
        servers = web_instances(programs[count])
        assert [s.inputs["tags"]["Name"] for s in servers] == [f"web-{n:02d}" for n in range(1, count + 1)]
        assert [s.inputs["tags"]["DbRole"] for s in servers] == ["primary"] + ["replica"] * (count - 1)
        assert len(programs[count].exports["web_private_ips"]) == count


def test_servers_are_spread_round_robin_over_the_subnets(programs):
    servers = web_instances(programs[5])
    assert [s.inputs["subnetId"] for s in servers] == [f"net-public-{n}-id" for n in (1, 2, 3, 1, 2)]


def test_web_servers_are_in_the_web_group_only(program):
    for server in web_instances(program):
        assert server.inputs["vpcSecurityGroupIds"] == ["net-web-sg-id"], server


def test_children_are_parented_to_their_component(program):
    for declared in program.resources:
        if declared.type.startswith("aws:") or declared.type.startswith("random:"):
            assert declared.options["parent"], f"{declared} is not inside a component"
            assert declared.name.startswith(declared.options["parent"]), f"{declared} not named after its component"


def test_replicas_change_one_at_a_time_behind_rolling_gates(program):
    """Each replica has a gate; the next replica's instance waits for it. Created, a gate passes at once;
    updated (its replica's instance type or instance id changed), it runs the smoke test naming only that
    replica: the site serves with it in the rotation again."""
    import shlex

    from components.smoke_test import CERTIFICATE_VARIABLE

    replicas = sorted(
        (i for i in program.of_type("aws:ec2/instance:Instance") if i.inputs["tags"].get("DbRole") == "replica"),
        key=lambda i: i.name,
    )
    gates = {c.name: c for c in program.of_type("command:local:Command") if c.name.startswith("web-")}
    assert sorted(gates) == [f"{r.inputs['tags']['Name']}-ready" for r in replicas]
    for index, replica in enumerate(replicas):
        host = replica.inputs["tags"]["Name"]
        gate = gates[f"{host}-ready"]
        assert gate.inputs["create"] == "true"
        words = shlex.split(gate.inputs["update"])
        assert words[:2] == ["scripts/smoke", program.exports["url"]]
        assert words[words.index("--backends") + 1] == host
        environment = gate.inputs["environment"]
        assert environment["WEBINFRA_INSTANCE_ID"] == replica.id
        assert environment["WEBINFRA_INSTANCE_TYPE"] == replica.inputs["instanceType"]
        assert environment[CERTIFICATE_VARIABLE] == program.exports["lb_certificate_pem"]
        assert [d._name for d in gate.options["depends_on"]] == [f"web-{host.split('-')[1]}"]
        waits_for = [d._name for d in replica.options["depends_on"] if d._name.endswith("-ready")]
        assert waits_for == ([] if index == 0 else [f"{replicas[index - 1].inputs['tags']['Name']}-ready"])
