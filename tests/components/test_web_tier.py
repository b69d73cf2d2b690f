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
