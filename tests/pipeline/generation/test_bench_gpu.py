"""bench/gpu.py in its tiny CPU mode: the GPU benchmark's code path runs in CI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_gpu_bench_runs_tiny_on_the_cpu_and_ends_with_its_json_line():
    proc = subprocess.run(
        [sys.executable, "bench/gpu.py", "--tiny", "--batches", "2", "--rounds", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"images_per_s", "pairs_per_s", "peak_gpu_mb", "batch"} <= set(result)
    assert result["mode"] == "tiny-cpu" and result["batch"] == 2
    assert result["images_per_s"] > 0 and result["pairs_per_s"] > 0
    assert 0 < result["prefill_share"] <= 1
