"""WebServer under mocks: one host, tagged with its database role; a replica's user-data names the
primary; the primary is never replaced by a template or key-pair change, a replica is."""

import yaml

from lab.mock_cloud import run_program
from provisioning.render import decode_user_data


def web_instances(run):
    return sorted(
        (i for i in run.of_type("aws:ec2/instance:Instance") if i.inputs["tags"]["Role"] == "web"),
        key=lambda i: i.inputs["tags"]["Name"],
    )


def test_each_server_is_its_own_component_tagged_with_its_database_role(program):
    servers = {c.name for c in program.of_type("webinfra:web_server:WebServer")}
    for number, server in enumerate(web_instances(program), start=1):
        hostname = f"web-{number:02d}"
        assert hostname in servers and server.options["parent"] == hostname, server
        role = "primary" if number == 1 else "replica"
        assert server.inputs["tags"] == {
            "Project": "webinfra",
            "Stack": "dev",
            "Role": "web",
            "ManagedBy": "pulumi",
            "Name": hostname,
            "DbRole": role,
        }, server
        assert server.inputs["volumeTags"] == server.inputs["tags"], server
        user_data = yaml.safe_load(decode_user_data(server.inputs["userDataBase64"]))
        assert user_data["hostname"] == hostname, server


def test_each_server_keeps_its_fixed_address_across_replacements(program):
    for server, address in zip(web_instances(program), program.exports["web_private_ips"], strict=True):
        assert server.inputs["privateIp"] == address, server
        # a fixed address is in use until the old instance is gone: delete first, then create
        assert server.options["delete_before_replace"] is True, server


def test_every_replica_replicates_from_the_primary(program):
    primary_ip = program.exports["db_primary_private_ip"]
    for server in web_instances(program):
        user_data = decode_user_data(server.inputs["userDataBase64"])
        if server.inputs["tags"]["DbRole"] == "replica":
            assert f"WEBINFRA_DB_PRIMARY_HOST={primary_ip}\n" in user_data, server
        else:
            assert "WEBINFRA_DB_PRIMARY_HOST=local\n" in user_data
        # Every server boots read-only, the primary too: only the failover controller (or the first
        # primary's first boot) makes one writable.
        assert "read_only                = ON" in user_data.split("60-webinfra.cnf", 1)[1].split("path:", 1)[0]


def test_the_primary_ignores_user_data_key_pair_and_instance_type_changes(program):
    (primary,) = [s for s in web_instances(program) if s.inputs["tags"]["DbRole"] == "primary"]
    assert primary.inputs["tags"]["Name"] == "web-01"
    assert {"ami", "userData", "userDataBase64", "keyName", "instanceType"} <= set(primary.options["ignore_changes"])
    assert primary.inputs["userDataReplaceOnChange"] is False


def test_replicas_are_replaced_when_their_user_data_changes(program):
    replicas = [s for s in web_instances(program) if s.inputs["tags"]["DbRole"] == "replica"]
    assert len(replicas) == len(program.exports["web_private_ips"]) - 1
    for replica in replicas:
        assert replica.inputs["userDataReplaceOnChange"] is True, replica
        assert not {"userData", "userDataBase64", "keyName", "instanceType"} & set(replica.options["ignore_changes"])
        assert "ami" in replica.options["ignore_changes"], replica  # a new image is no reason to rebuild


def test_a_key_pair_reaches_every_server_but_replaces_only_replicas():
    run = run_program({"sshKeyName": "ops", "adminCidr": "203.0.113.0/28"})
    for server in web_instances(run):
        assert server.inputs["keyName"] == "ops", server
        ignored = "keyName" in server.options["ignore_changes"]
        assert ignored is (server.inputs["tags"]["DbRole"] == "primary"), server
