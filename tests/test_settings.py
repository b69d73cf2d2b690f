"""Settings: defaults from Pulumi.yaml, and every invalid value refused with a message naming it."""

import pytest
import yaml

from settings import PULUMI_YAML, Settings, SettingsError, architecture_of, project_defaults, subnet_cidrs


def settings(**values):
    return Settings.from_mapping(values, stack="dev", region="eu-west-1")


def test_defaults_are_those_declared_in_pulumi_yaml():
    declared = yaml.safe_load(PULUMI_YAML.read_text())["config"]
    assert all("default" in spec and spec.get("description") for spec in declared.values())
    s = settings()
    assert (s.web_count, s.instance_type, s.lb_instance_type, s.vpc_cidr, s.az_count) == (
        declared["webCount"]["default"],
        declared["instanceType"]["default"],
        declared["lbInstanceType"]["default"],
        declared["vpcCidr"]["default"],
        declared["azCount"]["default"],
    )
    assert s.admin_cidr is None and s.ssh_key_name is None and not s.ssh_enabled and s.aws_endpoint_url is None


def test_values_arrive_as_strings_as_pulumi_config_gives_them():
    s = settings(webCount="7", azCount="3", adminCidr="203.0.113.7/32", sshKeyName="ops", rateLimitPer10s="50")
    assert (s.web_count, s.az_count, s.admin_cidr, s.ssh_key_name, s.ssh_enabled) == (
        7,
        3,
        "203.0.113.7/32",
        "ops",
        True,
    )
    assert s.rate_limit_per_10s == 50


def test_ssh_needs_both_the_admin_network_and_a_key():
    assert settings(adminCidr="203.0.113.7/32").ssh_enabled is False
    assert settings(adminCidr="203.0.113.7/32", sshKeyName="ops").ssh_enabled is True


def test_acme_needs_a_domain_and_an_address():
    assert settings(domain="www.example.com").acme_enabled is False
    s = settings(domain="WWW.Example.com.", acmeEmail="ops@Example.com")
    assert (s.acme_enabled, s.domain, s.acme_email) == (True, "www.example.com", "ops@example.com")
    assert s.acme_server == "https://acme-v02.api.letsencrypt.org/directory"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"webCount": 1}, "webinfra:webCount must be from 2 to 20, got 1"),
        ({"webCount": 50}, "webinfra:webCount must be from 2 to 20, got 50"),
        ({"webCount": "two"}, "webinfra:webCount must be a whole number from 2 to 20"),
        ({"azCount": 0}, "webinfra:azCount must be from 1 to 4"),
        ({"vpcCidr": "10.0.0.0/33"}, "webinfra:vpcCidr must be an IPv4 network"),
        ({"vpcCidr": "not-a-cidr"}, "webinfra:vpcCidr must be an IPv4 network"),
        ({"vpcCidr": "10.0.0.1/16"}, "webinfra:vpcCidr must be an IPv4 network"),  # host bits set
        ({"vpcCidr": "10.0.0.0/8"}, "webinfra:vpcCidr must have a prefix from /16 to /24"),
        ({"vpcCidr": "8.8.0.0/16"}, "webinfra:vpcCidr must be a private range"),
        ({"adminCidr": "0.0.0.0/0"}, "webinfra:adminCidr 0.0.0.0/0 opens SSH to too much"),
        ({"adminCidr": "203.0.113.300/32"}, "webinfra:adminCidr must be an IPv4 network"),
        ({"instanceType": "z9.micro"}, "webinfra:instanceType has unknown instance family 'z9'"),
        ({"lbInstanceType": "t3"}, "webinfra:lbInstanceType must look like FAMILY.SIZE"),
        ({"sshKeyName": "ops"}, "webinfra:sshKeyName is set but webinfra:adminCidr is not"),
        ({"rootVolumeGb": 4}, "webinfra:rootVolumeGb must be from 8 to 200"),
        ({"awsEndpointUrl": "ftp://x"}, "webinfra:awsEndpointUrl must be an http(s) URL"),
        ({"webcount": 3}, "unknown setting(s) webinfra:webcount"),
        ({"domain": "bad_name"}, "webinfra:domain must be a DNS name"),
        ({"domain": "203.0.113.7"}, "webinfra:domain must be a DNS name"),
        ({"acmeEmail": "ops@example.com"}, "webinfra:acmeEmail is set but webinfra:domain is not"),
        ({"domain": "www.example.com", "acmeEmail": "not-an-address"}, "webinfra:acmeEmail must be an e-mail address"),
        ({"acmeServer": "letsencrypt"}, "webinfra:acmeServer must be an http(s) URL"),
        ({"rateLimitPer10s": 5}, "webinfra:rateLimitPer10s must be from 10 to 100000"),
        ({"lbCount": 3}, "webinfra:lbCount must be from 1 to 2, got 3"),
        ({"lbCount": 2, "azCount": 1}, "webinfra:lbCount 2 needs webinfra:azCount of at least 2"),
        ({"lbVirtualIp": "10.0.0.4"}, "webinfra:lbVirtualIp is only used by a load-balancer pair"),
        (
            {"lbCount": 2, "lbVirtualIp": "10.1.0.4"},
            "webinfra:lbVirtualIp must be a usable address inside vpcCidr 10.0.0.0/16",
        ),
        ({"lbCount": 2, "lbVirtualIp": "10.0.0.2"}, "webinfra:lbVirtualIp must be a usable address"),
        ({"lbCount": 2, "lbVirtualIp": "10.0.1.5"}, "webinfra:lbVirtualIp 10.0.1.5 is lb-02's address"),
        ({"lbCount": 2, "lbVirtualIp": "ten"}, "webinfra:lbVirtualIp must be an IPv4 address"),
        ({"smokeTest": "maybe"}, "webinfra:smokeTest must be true or false, got 'maybe'"),
    ],
)
def test_invalid_values_are_refused_naming_the_setting(values, message):
    with pytest.raises(SettingsError) as error:
        settings(**values)
    assert message in str(error.value)


def test_region_is_required():
    with pytest.raises(SettingsError, match="aws:region is required"):
        Settings.from_mapping({}, stack="dev", region=None)


def test_unknown_instance_families_list_what_is_accepted():
    with pytest.raises(SettingsError) as error:
        settings(instanceType="q1.large")
    assert "t3" in str(error.value) and "t4g" in str(error.value)


@pytest.mark.parametrize(
    "instance_type, arch",
    [("t3.micro", "x86_64"), ("t4g.small", "arm64"), ("m7g.large", "arm64"), ("c7i.xlarge", "x86_64")],
)
def test_architecture_follows_the_instance_family(instance_type, arch):
    assert architecture_of(instance_type) == arch
    assert settings(instanceType=instance_type).web_arch == arch


def test_a_load_balancer_pair_is_opt_in_and_spans_two_zones():
    assert (settings().lb_count, settings().lb_pair, settings().lb_virtual_ip) == (1, False, None)
    pair = settings(lbCount=2, lbVirtualIp="10.0.0.4")
    assert (pair.lb_pair, pair.lb_virtual_ip) == (True, "10.0.0.4")
    lbs, _ = pair.layout
    assert [(s.hostname, s.private_ip) for s in lbs] == [("lb-01", "10.0.0.5"), ("lb-02", "10.0.1.5")]


def test_settings_are_frozen():
    s = settings()
    with pytest.raises(AttributeError):
        s.web_count = 3


@pytest.mark.parametrize(
    "vpc, count, expected",
    [
        ("10.0.0.0/16", 2, ["10.0.0.0/24", "10.0.1.0/24"]),
        ("10.0.0.0/16", 3, ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]),
        ("192.168.10.0/24", 2, ["192.168.10.0/25", "192.168.10.128/25"]),
        ("172.16.0.0/23", 4, ["172.16.0.0/25", "172.16.0.128/25", "172.16.1.0/25", "172.16.1.128/25"]),
        ("10.1.0.0/16", 1, ["10.1.0.0/24"]),
    ],
)
def test_subnets_split_the_vpc_without_overlap(vpc, count, expected):
    assert subnet_cidrs(vpc, count) == expected


def test_project_defaults_cover_every_setting_the_class_reads():
    assert set(project_defaults()) == {
        "webCount",
        "instanceType",
        "lbInstanceType",
        "vpcCidr",
        "azCount",
        "adminCidr",
        "sshKeyName",
        "rootVolumeGb",
        "maxReplicationLagSeconds",
        "awsEndpointUrl",
        "domain",
        "acmeEmail",
        "acmeServer",
        "rateLimitPer10s",
        "alertEmail",
        "lbCount",
        "lbVirtualIp",
        "smokeTest",
        "backupRetentionDays",
        "deleteBackupsWithStack",
    }


@pytest.mark.parametrize("vpc, azs, count", [("10.0.0.0/16", 2, 2), ("10.0.0.0/16", 3, 20), ("192.168.0.0/24", 4, 20)])
def test_layout_gives_every_host_a_fixed_address_inside_its_subnet(vpc, azs, count):
    import ipaddress

    from settings import host_layout

    lbs, web = host_layout(vpc, azs, count, lb_count=2)
    subnets = [ipaddress.IPv4Network(c) for c in subnet_cidrs(vpc, azs)]
    slots = [*lbs, *web]
    assert [s.hostname for s in lbs] == ["lb-01", "lb-02"]
    assert [s.subnet_index for s in lbs] == [0, 1 % azs]  # a pair spans two availability zones
    assert [s.hostname for s in web] == [f"web-{n:02d}" for n in range(1, count + 1)]
    assert len({s.private_ip for s in slots}) == len(slots), "addresses collide"
    for slot in slots:
        subnet = subnets[slot.subnet_index]
        address = ipaddress.IPv4Address(slot.private_ip)
        # inside the subnet, clear of the 4 addresses AWS reserves at the start and the one at the end
        assert address in subnet and subnet[4] <= address < subnet[-1], slot
    assert [s.subnet_index for s in web] == [(n - 1) % azs for n in range(1, count + 1)]


@pytest.mark.parametrize("key", ["instanceType", "lbInstanceType"])
@pytest.mark.parametrize(
    "instance_type, suggestion",
    [("m5d.large", "m5.large"), ("c6gd.xlarge", "c6g.xlarge"), ("m6id.large", "m6i.large"), ("im4gn.large", None)],
)
def test_instance_store_types_are_refused_before_aws_refuses_their_recovery_alarm(key, instance_type, suggestion):
    with pytest.raises(SettingsError) as raised:
        Settings.from_mapping({key: instance_type}, stack="dev", region="eu-west-1")
    message = str(raised.value)
    assert message.startswith(f"webinfra:{key} {instance_type} has instance-store volumes") and "recover" in message
    assert (f"use {suggestion} instead" in message) if suggestion else "instead" not in message


def test_every_accepted_family_can_carry_the_recovery_alarm():
    from settings import ARM64_FAMILIES, X86_64_FAMILIES, has_instance_store

    accepted = [f for f in sorted(X86_64_FAMILIES | ARM64_FAMILIES) if not has_instance_store(f"{f}.large")]
    for family in accepted:
        Settings.from_mapping({"instanceType": f"{family}.large"}, stack="dev", region="eu-west-1")
    assert {"t3", "m5", "c6gn", "m7i-flex", "r7iz", "t4g"} <= set(accepted)
