"""The instance baseline under mocks: IMDSv2, encrypted gp3 root, role, image and replacement rules."""


def instances(run):
    return run.of_type("aws:ec2/instance:Instance")


def test_imdsv2_is_required_everywhere(program):  # CKV_AWS_79, AWS-0028, FSBP EC2.8
    for instance in instances(program):
        options = instance.inputs["metadataOptions"]
        assert options["httpTokens"] == "required" and options["httpPutResponseHopLimit"] == 1, instance


def test_root_volumes_are_encrypted_gp3(program):  # CKV_AWS_8, AWS-0131
    for instance in instances(program):
        root = instance.inputs["rootBlockDevice"]
        assert root["encrypted"] is True and root["volumeType"] == "gp3" and root["volumeSize"] == 10, instance


def test_every_instance_has_a_role(program):  # CKV2_AWS_41
    for instance in instances(program):
        assert instance.inputs["iamInstanceProfile"].endswith("-profile-1a2b3c"), instance


def test_images_are_official_debian_12_for_the_architecture():
    from lab.mock_cloud import run_program

    run = run_program({"instanceType": "t4g.small", "lbInstanceType": "t3.micro"})
    by_name = {i.inputs["tags"]["Name"]: i.inputs["ami"] for i in instances(run)}
    assert by_name == {
        "web-01": "ami-debian-12-arm64-latest",
        "web-02": "ami-debian-12-arm64-latest",
        "lb-01": "ami-debian-12-amd64-latest",
    }


def test_image_updates_never_replace_servers_and_the_primary_keeps_its_data(program):
    for instance in instances(program):
        ignored = instance.options["ignore_changes"]
        assert "ami" in ignored, instance
        if instance.inputs["tags"].get("DbRole") == "primary":
            assert {"userData", "userDataBase64", "keyName"} <= set(ignored) and instance.inputs[
                "userDataReplaceOnChange"
            ] is False
        else:
            assert instance.inputs["userDataReplaceOnChange"] is True, instance


def test_every_instance_boots_after_the_internet_gateway_its_routes_its_secrets_and_its_role(program):
    # its first boot downloads packages and agents: the gateway and the public routes must exist first
    for instance in instances(program):
        waits_for = {d._name for d in instance.options["depends_on"]}
        role = instance.inputs["tags"]["Role"]
        assert {"net-igw", "net-public-rt", "secrets", f"{role}-host"} <= waits_for, (instance, waits_for)
        subnet_index = instance.inputs["subnetId"].removeprefix("net-public-").removesuffix("-id")
        assert f"net-public-{subnet_index}-rta" in waits_for, (instance, waits_for)
