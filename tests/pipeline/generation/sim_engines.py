"""Helpers for tests that run vecap's engine fleet on the simulated GPU (bench/sim_gpu_server.py).

The simulated server takes vLLM's flags and ``CUDA_VISIBLE_DEVICES``, answers in OpenAI's format
with a text that is a function of the request's content (so a caption on the wrong row shows),
reports what it saw at ``/sim/stats``, and can kill itself once mid-step
(``VECAP_SIM_DIE_AFTER`` + ``VECAP_SIM_DIE_ONCE_FILE``) the way a CUDA error kills vLLM's server.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SIM = REPO / "bench" / "sim_gpu_server.py"


def sim_command(scale: float = 0.2, startup_s: float = 0.2) -> str:
    return f"{sys.executable} {SIM} --sim-scale {scale} --sim-startup-s {startup_s}"


@pytest.fixture
def sim_fleet_env(tmp_path, monkeypatch):
    """A fresh engine registry, the simulated server as the engine, four fake GPUs; servers
    still running at the end are stopped."""
    engines = tmp_path / "engines"
    monkeypatch.setenv("VECAP_ENGINE_DIR", str(engines))
    monkeypatch.setenv("VECAP_SIM_GPU_DIR", str(tmp_path / "simgpu"))
    (tmp_path / "simgpu").mkdir()
    monkeypatch.setenv("VECAP_ENGINE_SERVER_CMD", sim_command())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    yield engines
    stop_all(engines)


def stop_all(engines: Path) -> None:
    from pipeline.generation.engine_server import stop_server

    for record in engines.glob("*.json"):
        try:
            stop_server(int(json.loads(record.read_text())["pid"]), grace_s=5)
        except (OSError, ValueError, KeyError):
            pass


def sim_stats(base_url: str) -> dict:
    with urllib.request.urlopen(f"{base_url}/sim/stats", timeout=10) as r:
        return json.loads(r.read())


def server_records(engines: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(engines.glob("*.json"))]
