"""The whole program under mocks: exports, tags, user-data size, secrets, and config errors."""

import base64

import pytest

from lab.mock_cloud import run_program
from provisioning.render import USER_DATA_LIMIT_BYTES, decode_user_data
from settings import SettingsError

TAG_KEYS = {"Project", "Stack", "Role", "Name", "ManagedBy"}


def taggable(type_token: str) -> bool:
    """Whether the pulumi-aws resource class takes `tags` (read from the SDK, not a hand-kept list)."""
    import inspect

    import pulumi_aws

    module, _, name = type_token.split(":", 1)[1].partition("/")
    cls = getattr(getattr(pulumi_aws, module) if module != "index" else pulumi_aws, name.split(":")[1])
    return "tags" in inspect.signature(cls._internal_init).parameters


def test_exports(program):
    assert set(program.exports) == {
        "url",
        "lb_public_ip",
        "lb_certificate_pem",
        "web_private_ips",
        "db_primary_private_ip",
        "ssh_enabled",
        "ssm_parameter_prefix",
        "alarm_topic_arn",
        "dashboard",
        "backup_bucket",
    }
    assert program.exports["ssh_enabled"] is False
    assert program.exports["ssm_parameter_prefix"] == "/webinfra/dev"
    assert program.exports["db_primary_private_ip"] == program.exports["web_private_ips"][0]


def test_every_taggable_resource_is_tagged(program):
    for resource in program.resources:
        if not resource.type.startswith("aws:") or not taggable(resource.type):
            continue
        tags = resource.inputs.get("tags") or {}
        assert set(tags) >= TAG_KEYS, f"{resource} lacks tags {TAG_KEYS - set(tags)}"
        assert (tags["Project"], tags["Stack"], tags["ManagedBy"]) == ("webinfra", "dev", "pulumi"), resource


def test_user_data_fits_ec2s_limit_at_every_count(program):
    for instance in program.of_type("aws:ec2/instance:Instance"):
        raw = base64.b64decode(instance.inputs["userDataBase64"])
        assert len(raw) <= USER_DATA_LIMIT_BYTES, f"{instance}: {len(raw)} bytes"
        assert raw[:2] == b"\x1f\x8b", "user-data must be gzip"
        assert decode_user_data(instance.inputs["userDataBase64"]).startswith("#cloud-config\n"), instance


def test_no_generated_password_in_any_user_data_or_export(program):
    assert len(program.passwords) == 3  # the app's, replication's, the failover controllers'
    exported = repr(program.exports)
    for instance in program.of_type("aws:ec2/instance:Instance"):
        user_data = decode_user_data(instance.inputs["userDataBase64"])
        for password in program.passwords:
            assert password not in user_data, f"a password is in {instance}'s user-data"
    for password in program.passwords:
        assert password not in exported


@pytest.mark.parametrize(
    "config, message",
    [
        ({"webCount": 1}, "webinfra:webCount must be from 2 to 20"),
        ({"webCount": 50}, "webinfra:webCount must be from 2 to 20"),
        ({"vpcCidr": "10.0.0.0/99"}, "webinfra:vpcCidr"),
        ({"adminCidr": "0.0.0.0/0"}, "webinfra:adminCidr"),
        ({"instanceType": "zz1.nano"}, "webinfra:instanceType has unknown instance family"),
        ({"sshKeyName": "ops"}, "webinfra:sshKeyName is set but webinfra:adminCidr is not"),
    ],
)
def test_invalid_settings_fail_before_any_resource_is_declared(config, message, monkeypatch):
    declared: list[str] = []
    import lab.mock_cloud as harness

    original = harness.RecordingMocks.new_resource

    def recording(self, args):
        declared.append(args.name)
        return original(self, args)

    monkeypatch.setattr(harness.RecordingMocks, "new_resource", recording)
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        run_program(config)
    assert declared == []


def test_missing_region_fails_with_its_name():
    with pytest.raises(SettingsError, match="aws:region is required"):
        run_program({}, region=None)


def test_more_zones_than_the_region_has_fails_naming_the_setting():
    with pytest.raises(Exception, match="webinfra:azCount asks for 4 availability zones but the region offers 3"):
        run_program({"azCount": 4, "webCount": 4})


def test_the_taggable_check_reads_the_sdk():
    assert taggable("aws:ec2/instance:Instance") and taggable("aws:sns/topic:Topic")
    assert not taggable("aws:ec2/routeTableAssociation:RouteTableAssociation") and not taggable(
        "aws:iam/rolePolicy:RolePolicy"
    )


def test_the_largest_load_balancer_user_data_fits_too():
    """A pair's LB with ACME and 20 backends carries the most LB files."""
    from lab.mock_cloud import run_program

    run = run_program(
        {"webCount": 20, "azCount": 3, "lbCount": 2, "domain": "www.example.com", "acmeEmail": "ops@example.com"}
    )
    lbs = [i for i in run.of_type("aws:ec2/instance:Instance") if i.inputs["tags"]["Role"] == "lb"]
    assert len(lbs) == 2
    for instance in lbs:
        raw = base64.b64decode(instance.inputs["userDataBase64"])
        assert len(raw) <= USER_DATA_LIMIT_BYTES, f"{instance}: {len(raw)} bytes"
        assert "keepalived" in decode_user_data(instance.inputs["userDataBase64"])
