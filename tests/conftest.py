"""Session-wide test setup.

The network tripwire: tests, benchmarks and the demo talk to loopback only. Every connect and
every name lookup outside loopback raises *before* anything leaves the machine, and is also
recorded, so code that catches the exception (the downloader turns errors into statuses) still
fails the test that triggered it.

Fixture modules under ``tests/fixtures/`` are loaded as plugins, so every test package shares them.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}"
    for p in (Path(__file__).parent / "fixtures").glob("*.py")
    if p.stem != "__init__"
)

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class NetworkTripwire(AssertionError):
    """Raised when code under test tries to reach anything but loopback."""


_violations: list[str] = []


def _is_loopback_host(host: object) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port) means the local wildcard/loopback
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    host = host.strip("[]").split("%", 1)[0]
    if host.lower() in _LOOPBACK_NAMES or host == "":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _trip(what: str) -> None:
    _violations.append(what)
    raise NetworkTripwire(f"network tripwire: {what} (tests may only reach loopback)")


def _check_address(address: object, what: str) -> None:
    family_unix = isinstance(address, (str, bytes))  # AF_UNIX paths are local
    if family_unix:
        return
    host = address[0] if isinstance(address, tuple) and address else address
    if not _is_loopback_host(host):
        _trip(f"{what} to {address!r}")


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo
_real_gethostbyname = socket.gethostbyname
_real_gethostbyname_ex = socket.gethostbyname_ex
_real_sendto = socket.socket.sendto


def _guarded_connect(self, address):
    _check_address(address, "connect")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    _check_address(address, "connect_ex")
    return _real_connect_ex(self, address)


def _guarded_sendto(self, data, *args):
    address = args[-1]
    _check_address(address, "sendto")
    return _real_sendto(self, data, *args)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if not _is_loopback_host(host):
        _trip(f"name lookup of {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


def _guarded_gethostbyname(host):
    if not _is_loopback_host(host):
        _trip(f"name lookup of {host!r}")
    return _real_gethostbyname(host)


def _guarded_gethostbyname_ex(host):
    if not _is_loopback_host(host):
        _trip(f"name lookup of {host!r}")
    return _real_gethostbyname_ex(host)


def pytest_configure(config: pytest.Config) -> None:
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex
    socket.socket.sendto = _guarded_sendto
    socket.getaddrinfo = _guarded_getaddrinfo
    socket.gethostbyname = _guarded_gethostbyname
    socket.gethostbyname_ex = _guarded_gethostbyname_ex


@pytest.fixture(autouse=True)
def _no_network_escape():
    """Fail the test if anything it ran tried to leave loopback, even if the error was caught."""
    start = len(_violations)
    yield
    escaped = _violations[start:]
    if escaped:
        pytest.fail("network tripwire fired: " + "; ".join(escaped))


@pytest.fixture
def network_violations() -> list[str]:
    """The tripwire's log, for tests that check the guard itself."""
    return _violations
