"""Guard for issue 10 item 2: the program evaluated with a changed setting and compared with the original.

Every instance that the change would replace (an input that forces a new EC2 instance changed) must be
replaced delete-before-replace, since every instance asks for a fixed private address that its old self
holds until deleted (create-first would fail with InvalidIPAddress.InUse); and a load-balancer pair
must never be replaced at once.
"""

from __future__ import annotations

import re

import pytest

from lab.mock_cloud import ProgramRun, run_program
from provisioning.render import decode_user_data

INSTANCE = "aws:ec2/instance:Instance"
# Inputs of aws:ec2/instance:Instance whose change replaces the instance: ForceNew in the Terraform AWS
# provider's aws_instance schema (internal/service/ec2/ec2_instance.go), which pulumi-aws wraps; and
# the user-data when userDataReplaceOnChange is set.
REPLACING = {
    "ami",
    "associatePublicIpAddress",
    "availabilityZone",
    "cpuCoreCount",
    "cpuThreadsPerCore",
    "cpuOptions",
    "ebsOptimized",
    "ephemeralBlockDevices",
    "hibernation",
    "hostId",
    "ipv6AddressCount",
    "ipv6Addresses",
    "keyName",
    "launchTemplate",
    "placementGroup",
    "placementPartitionNumber",
    "privateDnsNameOptions",
    "privateIp",
    "subnetId",
    "tenancy",
}
USER_DATA = {"userData", "userDataBase64"}

BASES: dict[str, dict[str, object]] = {"one load balancer": {}, "load-balancer pair": {"lbCount": 2}}
CHANGES: dict[str, dict[str, object]] = {
    "rateLimitPer10s": {"rateLimitPer10s": 300},
    "adminCidr": {"adminCidr": "203.0.113.7/32"},
    "domain": {"domain": "www.example.com", "acmeEmail": "ops@example.com"},
    "webCount": {"webCount": 3},
    "sshKeyName": {"adminCidr": "203.0.113.7/32", "sshKeyName": "ops"},
    "rootVolumeGb": {"rootVolumeGb": 30},  # in place: no replacement at all
}


PEM = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)


def comparable(key: str, value):
    """User-data as it would compare on a real stack: pulumi-tls keeps its CA in the state, while the
    mocks make a new one on every run, so certificates are left out of the comparison."""
    return PEM.sub("CERTIFICATE", decode_user_data(value)) if key == "userDataBase64" and value else value


def replacing_changes(before, after) -> set[str]:
    ignored = set(after.options.get("ignore_changes") or [])
    keys = REPLACING | (USER_DATA if after.inputs.get("userDataReplaceOnChange") else set())
    return {
        key
        for key in keys - ignored
        if comparable(key, before.inputs.get(key)) != comparable(key, after.inputs.get(key))
    }


def replaced_instances(base: ProgramRun, changed: ProgramRun) -> dict[str, set[str]]:
    before = {i.name: i for i in base.of_type(INSTANCE)}
    return {
        i.name: keys
        for i in changed.of_type(INSTANCE)
        if i.name in before and (keys := replacing_changes(before[i.name], i))
    }


@pytest.fixture(scope="module")
def bases():
    return {label: run_program(config) for label, config in BASES.items()}


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
@pytest.mark.parametrize("base", BASES, ids=list(BASES))
def test_every_instance_a_change_replaces_is_deleted_before_its_replacement(bases, base, change):
    changed = run_program({**BASES[base], **CHANGES[change]})
    replaced = replaced_instances(bases[base], changed)
    if change == "rootVolumeGb":
        assert replaced == {}, "a bigger root volume is changed in place"
        return
    lbs = {name for name in replaced if name.startswith("lb-")}
    assert lbs == ({"lb-01-instance", "lb-02-instance"} if base == "load-balancer pair" else {"lb-01-instance"}), (
        replaced
    )
    for name, keys in replaced.items():
        options = changed.named(name).options
        assert options["delete_before_replace"] is True, (
            f"{name} is replaced ({sorted(keys)} changed) create-before-delete"
        )
    if base == "load-balancer pair":
        # both replaced by one `pulumi up`: lb-02 only after lb-01's replacement serves again
        gates = [d._name for d in changed.named("lb-02-instance").options["depends_on"]]
        assert "lb-01-ready" in gates


def test_no_setting_replaces_the_database_primary(bases):
    # web-01 holds the data: it ignores user-data and key-pair changes, so none of these replaces it
    for label, base in bases.items():
        for change in CHANGES.values():
            replaced = replaced_instances(base, run_program({**BASES[label], **change}))
            assert "web-01-instance" not in replaced, replaced


def test_every_fixed_address_instance_is_replaced_delete_before_replace(program):
    # `pulumi up --replace URN` may replace any of them
    for instance in program.of_type(INSTANCE):
        assert instance.inputs.get("privateIp") and instance.options["delete_before_replace"] is True, instance
