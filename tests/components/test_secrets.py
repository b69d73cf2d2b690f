"""DatabaseSecrets and HostRole under mocks: SecureStrings per stack, read only by the web role."""
import json

from lab.mock_cloud import ACCOUNT_ID, run_program


def test_passwords_are_generated_and_stored_as_secure_strings(program):
    passwords = program.of_type("random:index/randomPassword:RandomPassword")
    assert len(passwords) == 2 and all(p.inputs["length"] >= 32 and p.inputs["special"] is False for p in passwords)
    parameters = program.of_type("aws:ssm/parameter:Parameter")
    assert sorted(p.inputs["name"] for p in parameters) == ["/webinfra/dev/db/app-password", "/webinfra/dev/db/replication-password"]
    assert all(p.inputs["type"] == "SecureString" for p in parameters)


def test_web_role_reads_exactly_this_stacks_parameters_and_the_lb_nothing():
    run = run_program({}, stack="staging")
    (policy,) = run.of_type("aws:iam/rolePolicy:RolePolicy")
    assert policy.name == "web-host-policy"
    document = json.loads(policy.inputs["policy"])
    (statement,) = document["Statement"]
    assert statement["Effect"] == "Allow" and statement["Action"] == ["ssm:GetParameter"]
    assert sorted(statement["Resource"]) == [
        f"arn:aws:ssm:eu-west-1:{ACCOUNT_ID}:parameter/webinfra/staging/db/app-password",
        f"arn:aws:ssm:eu-west-1:{ACCOUNT_ID}:parameter/webinfra/staging/db/replication-password",
    ]
    roles = run.of_type("aws:iam/role:Role")
    assert {r.name for r in roles} == {"web-host-role", "lb-host-role"}
    for role in roles:
        assume = json.loads(role.inputs["assumeRolePolicy"])
        assert assume["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
