"""The tripwire itself must work, or every guard test downstream proves nothing."""

import socket

import pytest

from tests.conftest import NetworkTripwire


def test_lookup_outside_loopback_raises(network_violations):
    before = len(network_violations)
    with pytest.raises(NetworkTripwire):
        socket.getaddrinfo("example.com", 80)
    assert len(network_violations) == before + 1
    del network_violations[before:]  # expected here; do not fail this test


@pytest.mark.parametrize("address", [("169.254.169.254", 80), ("10.0.0.1", 80), ("8.8.8.8", 53)])
def test_connect_outside_loopback_raises(address, network_violations):
    before = len(network_violations)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(NetworkTripwire):
            s.connect(address)
    finally:
        s.close()
    del network_violations[before:]


def test_loopback_is_allowed():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=5)
    client.close()
    server.close()
    assert socket.getaddrinfo("localhost", 80)
