"""bench/json_dedup.py at a tiny size: every old/new pair agrees and the last line is the JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.net_tripwire import LOG_ENV, REPO_ROOT, child_env


def test_json_dedup_benchmark_runs_and_ends_with_its_figures() -> None:
    script = REPO_ROOT / "bench" / "json_dedup.py"
    args = ["--entries", "3000", "--rows", "4000", "--bucket-rows", "1000", "--repeat", "1"]
    done = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env(os.environ.get(LOG_ENV, os.devnull)),
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["entries"] == 3000 and figures["rows"] == 4000
    for name in (
        "release_object_read",
        "array_read",
        "array_plan_offsets",
        "dedup_first_occurrences",
    ):
        assert figures[name]["old_s"] > 0 and figures[name]["new_s"] > 0
        assert figures[name]["speedup"] > 0
    assert 0 < figures["dedup_kept"] < 4000  # 20% repeats were dropped
    assert figures["array_checkpoints"]["new"] == figures["array_checkpoints"]["old"] == 3
