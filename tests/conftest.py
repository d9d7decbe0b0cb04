"""Session-wide test setup.

The network tripwire: tests, benchmarks and the demo talk to loopback only. Every connect and
every name lookup outside loopback raises *before* anything leaves the machine, and is also
recorded, so code that catches the exception (the downloader turns errors into statuses) still
fails the test that triggered it.

The tripwire itself lives in tests/net_tripwire.py; child processes get it through
tests/tripwire_site/sitecustomize.py. Fixture modules under ``tests/fixtures/`` are loaded as plugins, so every test package shares them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.net_tripwire import LOG_ENV, child_env, install, violations

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}"
    for p in (Path(__file__).parent / "fixtures").glob("*.py")
    if p.stem != "__init__"
)


def pytest_configure(config: pytest.Config) -> None:
    install()
    # Child processes (multi-process Beam workers, `vecap run` subprocesses) load
    # tests/tripwire_site/sitecustomize.py and log their attempts to this file.
    fd, log = tempfile.mkstemp(prefix="vecap-net-tripwire-", suffix=".log")
    os.close(fd)
    env = child_env(log)
    os.environ.update({k: env[k] for k in ("PYTHONPATH", LOG_ENV)})


def _logged() -> list[str]:
    log = os.environ.get(LOG_ENV)
    if not log or not os.path.exists(log):
        return []
    with open(log) as f:
        return f.read().splitlines()


@pytest.fixture(autouse=True)
def _no_network_escape():
    """Fail the test if anything it ran tried to leave loopback, even if the error was caught."""
    start, logged = len(violations), len(_logged())
    yield
    escaped = violations[start:]
    # lines of this process are in both lists; the log adds the child processes'
    children = [line for line in _logged()[logged:] if not line.startswith(f"pid {os.getpid()}:")]
    if escaped or children:
        pytest.fail("network tripwire fired: " + "; ".join(escaped + children))


@pytest.fixture(scope="module", autouse=True)
def _release_model_engines():
    """Models a test module loaded go with the module (``load_generator`` keeps engines for the
    life of a process, as a worker wants); released together, after the module's fixtures."""
    yield
    import sys

    factory = sys.modules.get("pipeline.generation.factory")
    if factory is not None:
        factory.release_engines()


@pytest.fixture
def network_violations() -> list[str]:
    """The tripwire's log, for tests that check the guard itself."""
    return violations
