"""StackSecrets and HostRole under mocks: SecureStrings per stack; each role reads only its own."""
import json

from components.host_role import SESSION_MANAGER_STATEMENT
from lab.mock_cloud import ACCOUNT_ID, run_program

PARAMETERS = [
    "/webinfra/{stack}/db/app-password",
    "/webinfra/{stack}/db/replication-password",
    "/webinfra/{stack}/tls/lb-certificate",
]


def test_secrets_are_secure_strings_under_the_stack_prefix(program):
    passwords = program.of_type("random:index/randomPassword:RandomPassword")
    assert len(passwords) == 2 and all(p.inputs["length"] >= 32 and p.inputs["special"] is False for p in passwords)
    parameters = program.of_type("aws:ssm/parameter:Parameter")
    web = [f"/webinfra/dev/tls/web-{n:02d}" for n in range(1, len(program.exports["web_private_ips"]) + 1)]
    assert sorted(p.inputs["name"] for p in parameters) == sorted(
        [name.format(stack="dev") for name in PARAMETERS] + web
    )
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
    assert [s["Resource"] for s in reads["web-host"]] == [
        [f"{arn}/db/app-password", f"{arn}/db/replication-password", f"{arn}/tls/web-01", f"{arn}/tls/web-02"]
    ]
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
    for declared in roles:
        assume = json.loads(declared.inputs["assumeRolePolicy"])
        assert assume["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}


def test_session_manager_is_allowed_on_every_role(program):
    for role in ("web-host", "lb-host"):
        assert SESSION_MANAGER_STATEMENT in statements_of(program, role)
    actions = SESSION_MANAGER_STATEMENT["Action"]
    assert {"ssmmessages:CreateControlChannel", "ssmmessages:OpenDataChannel", "ssm:UpdateInstanceInformation"} <= set(
        actions
    )
    assert not {"ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"} & set(actions)


def test_database_tls_certificates_name_each_server_and_chain_to_the_stack_ca(program):
    import yaml
    from cryptography import x509

    from provisioning.render import decode_user_data

    ca = x509.load_pem_x509_certificate(program.named("db-tls-ca").outputs["certPem"].encode())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    for number, address in enumerate(program.exports["web_private_ips"], start=1):
        host = f"web-{number:02d}"
        cert = x509.load_pem_x509_certificate(program.named(f"db-tls-{host}-cert").outputs["certPem"].encode())
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == [address]
        key = program.named(f"db-tls-{host}-key").outputs["privateKeyPem"].splitlines()[1]
        instance = program.named(f"web-{number:02d}-instance")
        user_data = decode_user_data(instance.inputs["userDataBase64"])
        assert key not in user_data, f"{host}'s database key is in its user-data"
        files = {f["path"]: f["content"] for f in yaml.safe_load(user_data)["write_files"]}
        assert (
            files["/etc/mysql/webinfra-tls/ca.pem"] == program.named("db-tls-ca").outputs["certPem"]
        )  # the public CA is
