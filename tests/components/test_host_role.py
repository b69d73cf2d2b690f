"""HostRole under mocks: one role and instance profile per kind of host, trusted by EC2 only, each
granted its own secrets, Session Manager and metric publishing, and nothing else."""

import json

import pytest

from components.host_role import SESSION_MANAGER_STATEMENT
from lab.mock_cloud import ACCOUNT_ID, run_program

KINDS = ("web", "lb")


def statements_of(run, role: str) -> list[dict]:
    (policy,) = [p for p in run.of_type("aws:iam/rolePolicy:RolePolicy") if p.name == f"{role}-policy"]
    return json.loads(policy.inputs["policy"])["Statement"]


def program_pieces(run, name: str, arn: str) -> list[str]:
    """The ARNs of a host program's pieces (components/host_programs.py), in order."""
    prefix = arn.split(":parameter", 1)[1] + f"/programs/{name}/"
    names = [
        p.inputs["name"] for p in run.of_type("aws:ssm/parameter:Parameter") if p.inputs["name"].startswith(prefix)
    ]
    assert names, name
    return [
        f"{arn.split(':parameter', 1)[0]}:parameter{n}" for n in sorted(names, key=lambda n: int(n.rsplit("/", 1)[1]))
    ]


def test_each_kind_of_host_has_a_role_and_an_instance_profile_its_instances_use(program):
    roles = {r.name: r for r in program.of_type("aws:iam/role:Role")}
    profiles = {p.name: p for p in program.of_type("aws:iam/instanceProfile:InstanceProfile")}
    assert set(roles) == {f"{kind}-host-role" for kind in KINDS}
    assert set(profiles) == {f"{kind}-host-profile" for kind in KINDS}
    for kind in KINDS:
        # the profile holds its own kind's role (by the name IAM gave it), inside the HostRole component
        assert profiles[f"{kind}-host-profile"].inputs["role"] == roles[f"{kind}-host-role"].outputs["name"]
        for child in (f"{kind}-host-role", f"{kind}-host-profile", f"{kind}-host-policy"):
            assert program.options[child]["parent"] == f"{kind}-host", child
    for instance in program.of_type("aws:ec2/instance:Instance"):
        kind = instance.inputs["tags"]["Role"]
        assert instance.inputs["iamInstanceProfile"] == profiles[f"{kind}-host-profile"].outputs["name"], instance


def test_the_roles_trust_ec2_and_nothing_else(program):
    for role in program.of_type("aws:iam/role:Role"):
        assert json.loads(role.inputs["assumeRolePolicy"]) == {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }, role


def test_each_role_reads_exactly_its_own_parameters_of_this_stack():
    run = run_program({}, stack="staging")
    arn = f"arn:aws:ssm:eu-west-1:{ACCOUNT_ID}:parameter/webinfra/staging"
    reads = {
        role: [s for s in statements_of(run, role) if "ssm:GetParameter" in s["Action"]]
        for role in ("web-host", "lb-host")
    }
    assert [s["Resource"] for s in reads["web-host"]] == [
        [
            f"{arn}/db/app-password",
            f"{arn}/db/replication-password",
            f"{arn}/db/failover-password",
            f"{arn}/tls/web-01",
            f"{arn}/tls/web-02",
            *program_pieces(run, "webinfra-app", arn),
            *program_pieces(run, "webinfra-db-backup", arn),
            *program_pieces(run, "webinfra-db-ship-binlogs", arn),
            *program_pieces(run, "webinfra-db-restore", arn),
            f"{arn}/config/firewall-peers.nft",
        ]
    ]
    assert [s["Resource"] for s in reads["lb-host"]] == [
        [
            f"{arn}/tls/lb-certificate",
            f"{arn}/db/failover-password",
            *program_pieces(run, "webinfra-failover", arn),
            f"{arn}/config/haproxy-runtime.cfg",
            f"{arn}/config/failover-servers.json",
        ]
    ]
    for role in ("web-host", "lb-host"):
        for statement in statements_of(run, role):
            actions = statement["Action"]
            assert statement["Effect"] == "Allow"
            # nothing may read parameters beyond the listed ARNs, nor act as an administrator
            if statement["Resource"] == "*":
                assert not [a for a in actions if a.startswith("ssm:GetParameter") or a.endswith("*")], statement
    roles = run.of_type("aws:iam/role:Role")
    assert {r.name for r in roles} == {"web-host-role", "lb-host-role"}
    for declared in roles:
        assume = json.loads(declared.inputs["assumeRolePolicy"])
        assert assume["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}


def test_the_web_role_reads_every_web_servers_database_key_and_no_other_hosts_secret(program):
    arn = f"arn:aws:ssm:eu-west-1:{ACCOUNT_ID}:parameter/webinfra/dev"
    hosts = [f"web-{n:02d}" for n in range(1, len(program.exports["web_private_ips"]) + 1)]
    (web_reads,) = [s for s in statements_of(program, "web-host") if "ssm:GetParameter" in s["Action"]]
    assert web_reads["Action"] == ["ssm:GetParameter"]
    assert web_reads["Resource"] == [
        f"{arn}/db/app-password",
        f"{arn}/db/replication-password",
        f"{arn}/db/failover-password",
        *(f"{arn}/tls/{host}" for host in hosts),
        *program_pieces(program, "webinfra-app", arn),
        *program_pieces(program, "webinfra-db-backup", arn),
        *program_pieces(program, "webinfra-db-ship-binlogs", arn),
        *program_pieces(program, "webinfra-db-restore", arn),
        f"{arn}/config/firewall-peers.nft",
    ]
    (lb_reads,) = [s for s in statements_of(program, "lb-host") if "ssm:GetParameter" in s["Action"]]
    assert (lb_reads["Action"], lb_reads["Resource"]) == (
        ["ssm:GetParameter"],
        [
            f"{arn}/tls/lb-certificate",
            f"{arn}/db/failover-password",
            *program_pieces(program, "webinfra-failover", arn),
            f"{arn}/config/haproxy-runtime.cfg",
            f"{arn}/config/failover-servers.json",
        ],
    )


def test_a_role_grants_its_secrets_session_manager_and_metrics_and_nothing_more(program):
    for kind in KINDS:
        statements = statements_of(program, f"{kind}-host")
        scoped = [s for s in statements if s["Resource"] != "*"]
        everywhere = [s for s in statements if s["Resource"] == "*"]
        # the web servers make and read the stack's backups (tests/components/test_backups.py)
        backups = [["s3:ListBucket"], ["s3:GetObject"], ["s3:PutObject", "s3:AbortMultipartUpload"]]
        assert [s["Action"] for s in scoped] == [["ssm:GetParameter"], *(backups if kind == "web" else [])], kind
        # a lone load balancer asks where the stack's Elastic IP points (its failover controller decides only
        # while it points there), and moves it nowhere
        where = [("ec2:DescribeAddresses",)] if kind == "lb" else []
        assert sorted(tuple(s["Action"]) for s in everywhere) == sorted(
            [tuple(SESSION_MANAGER_STATEMENT["Action"]), ("cloudwatch:PutMetricData",), *where]
        ), kind


def test_session_manager_is_allowed_on_every_role(program):
    for role in ("web-host", "lb-host"):
        assert SESSION_MANAGER_STATEMENT in statements_of(program, role)
    actions = SESSION_MANAGER_STATEMENT["Action"]
    assert {"ssmmessages:CreateControlChannel", "ssmmessages:OpenDataChannel", "ssm:UpdateInstanceInformation"} <= set(
        actions
    )
    assert not {"ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"} & set(actions)


@pytest.mark.parametrize("role", ["web-host", "lb-host"])
def test_metric_publishing_is_limited_to_the_stacks_namespaces(program, role):
    (policy,) = [p for p in program.of_type("aws:iam/rolePolicy:RolePolicy") if p.name == f"{role}-policy"]
    (statement,) = [
        s for s in json.loads(policy.inputs["policy"])["Statement"] if "cloudwatch:PutMetricData" in s["Action"]
    ]
    assert statement["Action"] == ["cloudwatch:PutMetricData"]
    assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": ["CWAgent", "webinfra/dev"]}}


def test_roles_and_profiles_carry_the_stacks_tags_and_their_own_name():
    run = run_program({}, stack="staging")
    for declared in run.of_type("aws:iam/role:Role") + run.of_type("aws:iam/instanceProfile:InstanceProfile"):
        kind = declared.name.split("-", 1)[0]
        assert declared.inputs["tags"] == {
            "Project": "webinfra",
            "Stack": "staging",
            "Role": kind,
            "ManagedBy": "pulumi",
            "Name": declared.name,
        }, declared
    for role in run.of_type("aws:iam/role:Role"):
        assert role.inputs["description"].startswith("webinfra staging "), role
