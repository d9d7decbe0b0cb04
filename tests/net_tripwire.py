"""Socket-level network tripwire: only loopback may be reached, by name lookup or connect.

Installed for the whole test session in the pytest process (tests/conftest.py) and, through
``tests/tripwire_site/sitecustomize.py``, in every Python child process the tests start (Beam's
multi-process workers, ``vecap run`` subprocesses): each attempt raises before anything leaves
the machine and is appended to the log file named by ``VECAP_NET_TRIPWIRE_LOG``, so the test
that caused it fails even when the code under test caught the exception.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from pathlib import Path

LOG_ENV = "VECAP_NET_TRIPWIRE_LOG"
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class NetworkTripwire(AssertionError):
    """Raised when code under test tries to reach anything but loopback."""


SITE_DIR = Path(__file__).parent / "tripwire_site"
REPO_ROOT = Path(__file__).parent.parent

violations: list[str] = []
_installed = False


def is_loopback_host(host: object) -> bool:
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
    violations.append(what)
    log = os.environ.get(LOG_ENV)
    if log:
        with open(log, "a") as f:  # one line per attempt; O_APPEND keeps processes' lines whole
            f.write(f"pid {os.getpid()}: {what}\n")
    raise NetworkTripwire(f"network tripwire: {what} (tests may only reach loopback)")


def _check_address(address: object, what: str) -> None:
    if isinstance(address, (str, bytes)):  # AF_UNIX paths are local
        return
    host = address[0] if isinstance(address, tuple) and address else address
    if not is_loopback_host(host):
        _trip(f"{what} to {address!r}")


def install() -> None:
    """Wrap connect, connect_ex, sendto and the name lookups; idempotent."""
    global _installed
    if _installed:
        return
    _installed = True
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_sendto = socket.socket.sendto
    real_getaddrinfo = socket.getaddrinfo
    real_gethostbyname = socket.gethostbyname
    real_gethostbyname_ex = socket.gethostbyname_ex

    def connect(self, address):
        _check_address(address, "connect")
        return real_connect(self, address)

    def connect_ex(self, address):
        _check_address(address, "connect_ex")
        return real_connect_ex(self, address)

    def sendto(self, data, *args):
        _check_address(args[-1], "sendto")
        return real_sendto(self, data, *args)

    def lookup(real):
        def guarded(host, *args, **kwargs):
            if not is_loopback_host(host):
                _trip(f"name lookup of {host!r}")
            return real(host, *args, **kwargs)

        return guarded

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.socket.sendto = sendto
    socket.getaddrinfo = lookup(real_getaddrinfo)
    socket.gethostbyname = lookup(real_gethostbyname)
    socket.gethostbyname_ex = lookup(real_gethostbyname_ex)


def child_env(log: str | os.PathLike[str], base: Mapping[str, str] = os.environ) -> dict[str, str]:
    """``base`` plus what makes every Python child process load the tripwire (its sitecustomize
    first on PYTHONPATH, then the repository) and log its attempts to ``log``."""
    env = dict(base)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SITE_DIR), str(REPO_ROOT)]
        + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env[LOG_ENV] = str(log)
    return env
