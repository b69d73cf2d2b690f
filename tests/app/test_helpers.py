"""The tests' own servers' ports (tests/app/helpers.py): never one an outgoing connection can take."""

from __future__ import annotations

import pathlib
import socket

from tests.app.helpers import PORT_BLOCK, _port_range_start, free_port


def test_free_ports_lie_below_the_ephemeral_range_each_worker_in_a_block_of_its_own(monkeypatch):
    ephemeral = int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    first = [free_port() for _ in range(5)]
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    second = [free_port() for _ in range(5)]
    assert len(set(first + second)) == 10 and max(first + second) < ephemeral
    start = _port_range_start()
    assert {(port - start) // PORT_BLOCK for port in first} == {0} and {(p - start) // PORT_BLOCK for p in second} == {
        1
    }
    taken = socket.socket()  # a port something listens on is skipped
    try:
        monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw2")
        port = free_port()
        taken.bind(("127.0.0.1", port + 1))
        assert free_port() == port + 2
    finally:
        taken.close()
