"""The runtime configuration's own checks, as webinfra-config-sync runs them before it installs a value
from SSM (the rendered entries' first validate command): what the program renders passes; a value that
would run something as root does not."""

from __future__ import annotations

import dataclasses
import subprocess

import pytest

from provisioning import render
from tests.provisioning.helpers import ACME, BACKENDS_20, FACTS, PAIR, runtime_files


def passes(entry: dict, text: str, tmp_path) -> bool:
    candidate = tmp_path / "candidate"
    candidate.write_text(text)
    command = [argument.replace("{files[0]}", str(candidate)) for argument in entry["validate"][0]]
    return subprocess.run(command, capture_output=True).returncode == 0


@pytest.mark.parametrize("facts", [FACTS, dataclasses.replace(PAIR, **ACME)], ids=["one LB", "pair, ACME"])
def test_what_the_program_renders_passes(facts, tmp_path):
    files = runtime_files(facts, BACKENDS_20)
    assert passes(render.haproxy_config_sync(facts), files[render.HAPROXY_RUNTIME], tmp_path)
    assert passes(render.firewall_peers_sync(facts), files[render.FIREWALL_PEERS], tmp_path)


@pytest.mark.parametrize(
    "extra",
    [
        "program evil\n    command /bin/sh -c id\n",
        # HAProxy's quoting: neither word is `program` or `master-worker` to a pattern that looks for them
        '"prog"ram evil\n    "command" /bin/sh -c id\nglobal\n    "master-worker"\n',
        "global\n    lua-load /tmp/evil.lua\n",
        "global\n    insecure-fork-wanted\n",
        "global\n    user root\n",
        "global\n    ssl-provider legacy\n",
        "global\n    stats socket ipv4@0.0.0.0:9999 level admin\n",
        "global\n    setenv PATH /tmp\n",
        "backend web\n    option external-check\n    external-check command /tmp/evil\n",
        "    server web-03 10.0.0.9:80 check\n",  # a second value on a data line
        "    server web-03 10.0.0.9:80\tcheck\n",
        "    set-var proc.webinfra_rate_limit int(1) # )\n",
        "    server web-03 10.0.0.9:80\r\n",
        "    server web-03 203.0.113.9:80\n",  # outside the stack's VPC (10.0.0.0/16): all traffic elsewhere
        "    server web-03 10.1.0.9:80 track web/web-03\n",
        "    server web-03 10.0.0.256:80\n",
        "    set-var proc.webinfra_rate_limit int(700)\n",  # a second rate limit
    ],
)
def test_a_runtime_file_with_anything_but_its_data_lines_is_refused(extra, tmp_path):
    runtime = runtime_files(FACTS, BACKENDS_20)[render.HAPROXY_RUNTIME]
    assert not passes(render.haproxy_config_sync(FACTS), runtime + extra, tmp_path)


@pytest.mark.parametrize(
    "change",
    [
        lambda text: text.replace("int(200)", "int(0)"),  # every request refused
        lambda text: "\n".join(line for line in text.splitlines() if "rate_limit" not in line) + "\n",  # no limit
        lambda text: "\n".join(line for line in text.splitlines() if "webinfra_config" not in line) + "\n",
    ],
    ids=["a zero rate limit", "no rate limit", "no version"],
)
def test_a_runtime_file_without_its_rate_limit_and_version_is_refused(change, tmp_path):
    runtime = runtime_files(FACTS, BACKENDS_20)[render.HAPROXY_RUNTIME]
    assert passes(render.haproxy_config_sync(FACTS), runtime, tmp_path)
    assert not passes(render.haproxy_config_sync(FACTS), change(runtime), tmp_path)


def test_a_check_that_cannot_read_its_file_refuses_it(tmp_path):
    # grep's own failure (status 2) is no pass: `! grep -v ...` would have taken it for one
    for entry in (render.haproxy_config_sync(FACTS), render.firewall_peers_sync(FACTS)):
        command = [a.replace("{files[0]}", str(tmp_path / "missing")) for a in entry["validate"][0]]
        assert subprocess.run(command, capture_output=True).returncode != 0


@pytest.mark.parametrize("cidr", ["10.77.0.0/16", "172.16.32.0/20", "192.168.4.0/24", "10.128.0.0/17"])
def test_the_address_pattern_is_the_vpc_and_nothing_else_as_grep_reads_it(cidr, tmp_path):
    import ipaddress

    network = ipaddress.IPv4Network(cidr)
    inside = [*list(network)[:3], *list(network)[-3:], network[len(list(network)) // 2]]
    outside = [network.network_address - 1, network.broadcast_address + 1, ipaddress.IPv4Address("8.8.8.8")]
    candidates = tmp_path / "addresses"
    candidates.write_text("".join(f"{a}\n" for a in [*inside, *outside]) + "10.0.0.300\n")
    found = subprocess.run(
        ["grep", "-Ex", render.address_pattern(cidr), str(candidates)], capture_output=True, text=True
    ).stdout.split()
    assert found == [str(a) for a in inside]


@pytest.mark.parametrize(
    "change",
    [
        lambda text: text + "flush ruleset\n",
        lambda text: text.replace("10.0.0.5", "10.0.0.5 }; flush ruleset; add element inet x y { 10.0.0.5"),
        lambda text: text + "add rule inet webinfra_host input accept\n",
        lambda text: text + "\n",
        lambda text: "\n".join(line for line in text.splitlines() if not line.startswith("add element")) + "\n",
        lambda text: "",
        lambda text: text.replace(
            "flush set inet webinfra_host web_servers", "flush set inet webinfra_host web_servers\0"
        ),
    ],
    ids=["flush ruleset", "smuggled in an element", "a rule", "an empty line", "flushes alone", "empty", "a NUL"],
)
def test_a_peers_file_carries_the_two_sets_members_and_nothing_else(change, tmp_path):
    peers = runtime_files(FACTS, BACKENDS_20)[render.FIREWALL_PEERS]
    assert not passes(render.firewall_peers_sync(FACTS), change(peers), tmp_path)
