"""HostPrograms under mocks: the programs too large for user-data, as SSM parameters."""

import base64
import gzip
import hashlib
import json

import yaml

from lab.mock_tls import unwrap
from provisioning import render
from provisioning.render import decode_user_data


def test_each_program_is_in_pieces_a_parameter_holds_and_a_host_gets_exactly_its_code(program):
    pieces = {
        p.inputs["name"]: p for p in program.of_type("aws:ssm/parameter:Parameter") if "/programs/" in p.inputs["name"]
    }
    assert pieces
    for piece in pieces.values():
        assert (piece.inputs["type"], piece.inputs["tier"]) == ("String", "Advanced"), piece
        assert len(unwrap(piece.inputs["value"])) <= 8 * 1024
        assert piece.inputs["name"].startswith("/webinfra/dev/programs/")
    manifests = {}
    for instance in program.of_type("aws:ec2/instance:Instance"):
        files = {
            f["path"]: f["content"]
            for f in yaml.safe_load(decode_user_data(instance.inputs["userDataBase64"]))["write_files"]
        }
        manifests[instance.inputs["tags"]["Role"]] = json.loads(files[render.CONFIG_SYNC_MANIFEST])["entries"]
    wanted = {
        "web": ["webinfra-app", "webinfra-db-backup", "webinfra-db-ship-binlogs", "webinfra-db-restore"],
        "lb": ["webinfra-failover"],
    }
    for role, entries in manifests.items():
        programs = [e for e in entries if e["format"] == "gzip-base64"]
        assert [e["name"] for e in programs] == wanted[role]
        for entry in programs:
            joined = "".join(unwrap(pieces[name].inputs["value"]) for name in entry["parameter"])
            content = gzip.decompress(base64.b64decode(joined))
            assert hashlib.sha256(content).hexdigest() == entry["sha256"]
            source = render.HOST_PROGRAMS[entry["name"]][0]
            assert content.decode() == render.shipped_program(source)
