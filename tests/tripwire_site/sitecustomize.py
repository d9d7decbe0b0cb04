"""Loaded by every Python child process of the test session (tests/conftest.py puts this folder
on PYTHONPATH): installs the loopback-only network tripwire there too."""

import os

if os.environ.get("VECAP_NET_TRIPWIRE_LOG"):
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    from tests.net_tripwire import install

    install()
