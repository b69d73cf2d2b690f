"""StackSecrets under mocks: SecureStrings per stack (who may read them: test_host_role.py)."""

PARAMETERS = [
    "/webinfra/{stack}/db/app-password",
    "/webinfra/{stack}/db/replication-password",
    "/webinfra/{stack}/db/failover-password",
    "/webinfra/{stack}/tls/lb-certificate",
]


def test_secrets_are_secure_strings_under_the_stack_prefix(program):
    passwords = program.of_type("random:index/randomPassword:RandomPassword")
    assert len(passwords) == 3 and all(p.inputs["length"] >= 32 and p.inputs["special"] is False for p in passwords)
    parameters = [
        p
        for p in program.of_type("aws:ssm/parameter:Parameter")
        if "/programs/" not in p.inputs["name"] and "/config/" not in p.inputs["name"]
    ]
    web = [f"/webinfra/dev/tls/web-{n:02d}" for n in range(1, len(program.exports["web_private_ips"]) + 1)]
    assert sorted(p.inputs["name"] for p in parameters) == sorted(
        [name.format(stack="dev") for name in PARAMETERS] + web
    )
    assert all(p.inputs["type"] == "SecureString" for p in parameters)
