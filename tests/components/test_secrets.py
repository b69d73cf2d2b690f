"""StackSecrets and HostRole under mocks: SecureStrings per stack; each role reads only its own."""
import json

from components.host_role import SESSION_MANAGER_STATEMENT
from lab.mock_cloud import ACCOUNT_ID, run_program

PARAMETERS = ["/webinfra/{stack}/db/app-password", "/webinfra/{stack}/db/replication-password", "/webinfra/{stack}/tls/lb-certificate"]


def test_secrets_are_secure_strings_under_the_stack_prefix(program):
    passwords = program.of_type("random:index/randomPassword:RandomPassword")
    assert len(passwords) == 2 and all(p.inputs["length"] >= 32 and p.inputs["special"] is False for p in passwords)
    parameters = program.of_type("aws:ssm/parameter:Parameter")
    assert sorted(p.inputs["name"] for p in parameters) == [name.format(stack="dev") for name in PARAMETERS]
    assert all(p.inputs["type"] == "SecureString" for p in parameters)


def statements_of(run, role: str) -> list[dict]:
    (policy,) = [p for p in run.of_type("aws:iam/rolePolicy:RolePolicy") if p.name == f"{role}-policy"]
    return json.loads(policy.inputs["policy"])["Statement"]


def test_each_role_reads_exactly_its_own_parameters_of_this_stack():
    run = run_program({}, stack="staging")
    arn = f"arn:aws:ssm:eu-west-1:{ACCOUNT_ID}:parameter/webinfra/staging"
    reads = {
        role: [s for s in statements_of(run, role) if "ssm:GetParameter" in s["Action"]]
        for role in ("web-host", "lb-host")
    }
    assert [s["Resource"] for s in reads["web-host"]] == [[f"{arn}/db/app-password", f"{arn}/db/replication-password"]]
    assert [s["Resource"] for s in reads["lb-host"]] == [[f"{arn}/tls/lb-certificate"]]
    for role in ("web-host", "lb-host"):
        for statement in statements_of(run, role):
            actions = statement["Action"]
            assert statement["Effect"] == "Allow"
            # nothing may read parameters beyond the listed ARNs, nor act as an administrator
            if statement["Resource"] == "*":
                assert not [a for a in actions if a.startswith("ssm:GetParameter") or a.endswith("*")], statement
    roles = run.of_type("aws:iam/role:Role")
    assert {r.name for r in roles} == {"web-host-role", "lb-host-role"}
    for role in roles:
        assume = json.loads(role.inputs["assumeRolePolicy"])
        assert assume["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}


def test_session_manager_is_allowed_on_every_role(program):
    for role in ("web-host", "lb-host"):
        assert SESSION_MANAGER_STATEMENT in statements_of(program, role)
    actions = SESSION_MANAGER_STATEMENT["Action"]
    assert {"ssmmessages:CreateControlChannel", "ssmmessages:OpenDataChannel", "ssm:UpdateInstanceInformation"} <= set(actions)
    assert not {"ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"} & set(actions)
