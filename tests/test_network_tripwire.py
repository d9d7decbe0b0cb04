"""The tripwire itself must work, or every guard test downstream proves nothing."""

import socket

import pytest

from tests.net_tripwire import LOG_ENV, NetworkTripwire


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


def test_child_processes_carry_the_tripwire_and_report_to_the_session():
    """Beam's multi-process workers and `vecap run` subprocesses are guarded too."""
    import os
    import subprocess
    import sys

    log = os.environ[LOG_ENV]
    with open(log) as f:
        before = f.read()
    # getaddrinfo of a numeric address does no network I/O, so even an unguarded child
    # (the failure this test catches) sends nothing
    code = (
        "import socket\n"
        "try:\n"
        "    socket.getaddrinfo('10.0.0.1', 80)\n"
        "    print('unguarded')\n"
        "except AssertionError as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        ).stdout
        with open(log) as f:
            added = f.read()[len(before) :]
    finally:
        with open(log, "w") as f:  # expected here; do not fail this test
            f.write(before)
    assert out.strip() == "NetworkTripwire"
    assert "10.0.0.1" in added and f"pid {os.getpid()}:" not in added
