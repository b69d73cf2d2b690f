"""The policy pack's validators: each on a good and a bad resource, then every resource the program
declares (under mocks) through all of them: zero violations."""

import base64
import gzip

import pytest
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    StackValidationArgs,
)

from lab.mock_cloud import run_program
from policy import rules

OPTIONS = PolicyResourceOptions(
    protect=False,
    ignore_changes=[],
    delete_before_replace=None,
    aliases=[],
    custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
    additional_secret_outputs=[],
)


def args(resource_type: str, props: dict, name: str = "thing") -> ResourceValidationArgs:
    return ResourceValidationArgs(
        resource_type, props, f"urn:pulumi:dev::webinfra::{resource_type}::{name}", name, OPTIONS, None
    )


def collecting(found: list[str]) -> rules.Report:
    """A report callback that keeps each message."""

    def report(message: str, urn: object = None) -> None:
        found.append(message)

    return report


def violations(validate, resource_type: str, props: dict) -> list[str]:
    found: list[str] = []
    validate(args(resource_type, props), collecting(found))
    return found


def gz(text: str) -> str:
    return base64.b64encode(gzip.compress(text.encode())).decode()


GOOD_INSTANCE = {
    "metadataOptions": {"httpTokens": "required"},
    "rootBlockDevice": {"encrypted": True},
    "iamInstanceProfile": "web-profile",
    "userDataBase64": gz(
        "#cloud-config\nwrite_files:\n- content: WEBINFRA_SSM_DB_APP_PASSWORD=/webinfra/dev/db/app-password\n"
    ),
}
INGRESS, EGRESS = rules.INGRESS_RULE, rules.EGRESS_RULE


def rule(port, cidr="0.0.0.0/0", protocol="tcp", description="why", to=None):
    return {
        "ipProtocol": protocol,
        "fromPort": port,
        "toPort": port if to is None else to,
        "cidrIpv4": cidr,
        "description": description,
    }


CASES = [
    # (validator, type, good props, bad props)
    (
        rules.imdsv2_required,
        rules.INSTANCE,
        GOOD_INSTANCE,
        {**GOOD_INSTANCE, "metadataOptions": {"httpTokens": "optional"}},
    ),
    (
        rules.encrypted_volumes,
        rules.INSTANCE,
        GOOD_INSTANCE,
        {**GOOD_INSTANCE, "rootBlockDevice": {"encrypted": False}},
    ),
    (
        rules.instance_role_attached,
        rules.INSTANCE,
        GOOD_INSTANCE,
        {k: v for k, v in GOOD_INSTANCE.items() if k != "iamInstanceProfile"},
    ),
    (
        rules.no_secrets_in_user_data,
        rules.INSTANCE,
        GOOD_INSTANCE,
        {**GOOD_INSTANCE, "userDataBase64": gz("DB_PASSWORD=hunter2hunter2\n")},
    ),
    (
        rules.no_secrets_in_user_data,
        rules.INSTANCE,
        GOOD_INSTANCE,
        {**GOOD_INSTANCE, "userData": "-----BEGIN EC PRIVATE KEY-----\n"},
    ),
    (
        rules.no_secrets_in_user_data,
        rules.INSTANCE,
        GOOD_INSTANCE,
        {**GOOD_INSTANCE, "userData": "key AKIAABCDEFGHIJKLMNOP"},
    ),
    (
        rules.no_secrets_in_user_data,
        rules.INSTANCE,
        GOOD_INSTANCE,
        {**GOOD_INSTANCE, "userData": "CREATE USER a IDENTIFIED BY 'hunter22'"},
    ),
    (rules.no_world_on_sensitive_ports, INGRESS, rule(80), rule(22)),
    (rules.no_world_on_sensitive_ports, INGRESS, rule(3306, cidr="10.0.0.0/16"), rule(3306)),
    (rules.no_world_on_sensitive_ports, INGRESS, rule(443), rule(0, protocol="-1", to=0)),
    (rules.only_http_https_open_to_world, INGRESS, rule(443), rule(8080)),
    (rules.only_http_https_open_to_world, INGRESS, rule(8080, cidr="203.0.113.7/32"), rule(80, to=443)),
    (rules.restricted_egress, EGRESS, rule(443), rule(0, protocol="-1", to=0)),
    (rules.restricted_egress, EGRESS, rule(3306, cidr="10.0.0.0/16"), rule(25)),
    (rules.rules_have_descriptions, INGRESS, rule(80), rule(80, description="")),
    (rules.rules_have_descriptions, rules.SECURITY_GROUP, {"description": "web"}, {"description": ""}),
    (
        rules.default_security_group_closed,
        rules.DEFAULT_SECURITY_GROUP,
        {"ingress": [], "egress": []},
        {"egress": [{"protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["0.0.0.0/0"]}]},
    ),
    (
        rules.no_world_on_sensitive_ports,
        rules.SECURITY_GROUP,
        {"ingress": [{"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["0.0.0.0/0"]}]},
        {"ingress": [{"protocol": "tcp", "fromPort": 20, "toPort": 25, "ipv6CidrBlocks": ["::/0"]}]},
    ),
]


@pytest.mark.parametrize(
    "validate, resource_type, good, bad", CASES, ids=[f"{c[0].__name__}-{n}" for n, c in enumerate(CASES)]
)
def test_each_validator_passes_good_and_flags_bad(validate, resource_type, good, bad):
    assert violations(validate, resource_type, good) == []
    assert len(violations(validate, resource_type, bad)) >= 1


def test_every_policy_cites_its_rule_ids():
    for policy in rules.POLICIES:
        assert any(tag in policy.description for tag in ("CKV", "AWS-0", "FSBP", "WEBINFRA-")), policy.name


def test_a_fixed_address_instance_replaced_create_before_delete_is_refused():
    fixed = {**GOOD_INSTANCE, "privateIp": "10.0.0.11"}
    delete_first = PolicyResourceOptions(
        protect=False,
        ignore_changes=[],
        delete_before_replace=True,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
    )
    found: list[str] = []
    rules.fixed_address_delete_before_replace(args(rules.INSTANCE, fixed), collecting(found))
    assert len(found) == 1 and "InvalidIPAddress.InUse" in found[0]
    found.clear()
    ok = ResourceValidationArgs(rules.INSTANCE, fixed, "urn:x", "thing", delete_first, None)
    rules.fixed_address_delete_before_replace(ok, collecting(found))
    rules.fixed_address_delete_before_replace(args(rules.INSTANCE, GOOD_INSTANCE), collecting(found))
    assert found == []  # delete-before-replace, or an address EC2 chooses


def declared_args(resource) -> ResourceValidationArgs:
    """A declared resource with the options the program gave it (recorded by the mocks' transform)."""
    options = PolicyResourceOptions(
        protect=False,
        ignore_changes=resource.options.get("ignore_changes", []),
        delete_before_replace=resource.options.get("delete_before_replace"),
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
    )
    return ResourceValidationArgs(resource.type, resource.inputs, f"urn:{resource.name}", resource.name, options, None)


def stack_args(run) -> StackValidationArgs:
    resources = [
        PolicyResource(r.type, r.inputs, f"urn:{r.name}", r.name, OPTIONS, None, None, [], {}) for r in run.resources
    ]
    return StackValidationArgs(resources)


def test_public_ports_only_on_the_load_balancer(program):
    found: list[str] = []
    rules.world_ports_only_on_the_load_balancer(stack_args(program), collecting(found))
    assert found == []
    # move the LB's world-open rule onto the web servers' group: flagged
    tampered = [r for r in program.resources]
    web_rule = next(r for r in tampered if r.type == INGRESS and r.inputs.get("cidrIpv4") == "0.0.0.0/0")
    web_rule.inputs = {**web_rule.inputs, "securityGroupId": "net-web-sg-id"}
    try:
        rules.world_ports_only_on_the_load_balancer(stack_args(program), collecting(found))
        assert found and "web" in found[0]
    finally:
        web_rule.inputs = {**web_rule.inputs, "securityGroupId": "net-lb-sg-id"}


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"webCount": 20, "azCount": 3},
        {
            "adminCidr": "203.0.113.7/32",
            "sshKeyName": "ops",
            "domain": "www.example.com",
            "acmeEmail": "ops@example.com",
        },
        {"lbCount": 2},
    ],
    ids=["default", "20 servers", "ssh and acme", "load-balancer pair"],
)
def test_every_declared_resource_passes_every_policy(config):
    run = run_program(config)
    found: list[str] = []
    for policy in rules.POLICIES:
        if isinstance(policy, rules.ResourceValidationPolicy):
            for resource in run.resources:
                policy.validate(declared_args(resource), collecting(found))
        else:
            assert isinstance(policy, rules.StackValidationPolicy)
            policy.validate(stack_args(run), collecting(found))
    assert found == []
