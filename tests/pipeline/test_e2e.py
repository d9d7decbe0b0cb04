"""End to end: the demo on the local runner, the multi-process runner, and a real kill -9 + resume.

Every URL here is on the loopback sample server (the multi-process workers and the killed
subprocess run outside the test tripwire, so this file builds only 127.0.0.1 URLs).
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import build_pipeline_config
from pipeline.io.export_json import ExportConfig, export_json, validate_json
from pipeline.io.writer import finished_shards
from pipeline.run import run_pipeline
from pipeline.sample.server import SAMPLE_DIR, SampleServer, sample_input_table
from tests.pipeline.test_run import rows_of

REPO = Path(__file__).resolve().parents[2]


def _assert_loopback_only(table: Path) -> None:
    with table.open() as f:
        urls = [row["url"] for row in csv.DictReader(f)]
    assert urls and all(u.startswith("http://127.0.0.1:") for u in urls), urls[:3]


@pytest.mark.slow
def test_demo_end_to_end_on_the_local_runner(tiny_models, tmp_path, capsys):
    from pipeline.cli import main

    out = tmp_path / "demo-out"
    t0 = time.time()
    code = main(["demo", "--output", str(out), "--models-dir", str(tiny_models.llava.parent)])
    elapsed = time.time() - t0
    printed = capsys.readouterr().out
    assert code == 0, printed
    _assert_loopback_only(out / "input" / "sample.csv")
    done = finished_shards(str(out))
    rows = rows_of(str(out))
    n_input = len(list(csv.DictReader((out / "input" / "sample.csv").open())))
    assert sum(s.rows for s in done.values()) == len(rows) == n_input
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) >= 32  # the bundled photos; the sample also holds a few deliberate failures
    assert all(r["visual_caption"] and r["fused_caption"] and r["fusion_source"] for r in ok)
    assert {r["caption_model"] for r in ok} == {str(tiny_models.llava)}
    # the engine that wrote each caption, resolved as the manifest says (CPU: fp32)
    from pipeline.manifest import read_manifest

    models = read_manifest(str(out))["models"]
    assert models["caption"]["dtype"] == models["fusion"]["dtype"] == "float32"
    assert {r["caption_engine"] for r in ok} == {"transformers/float32"}
    assert {r["fusion_engine"] for r in ok if r["fusion_source"] == "llm"} == {
        "transformers/float32"
    }
    release = sorted((out / "release").glob("vecap_demo-*-of-04.json"))
    assert len(release) == 4 and validate_json([str(p) for p in release]).ok
    assert "release JSON:" in printed and "fusion_source" in printed
    assert elapsed < 120, f"the demo must run in under two minutes here, took {elapsed:.0f} s"


@pytest.mark.slow
def test_multi_process_runner_end_to_end(tiny_models, tmp_path):
    with SampleServer(root_dir=SAMPLE_DIR) as server:
        full = sample_input_table(server.base_url, tmp_path / "full.csv")
        # 16 rows keep the two worker processes' CPU generation short on a 2-core machine
        table = tmp_path / "in.csv"
        table.write_text("".join(full.read_text().splitlines(keepends=True)[:17]))
        _assert_loopback_only(table)
        data = {
            "input": str(table),
            "stages": ["download", "caption", "fuse"],
            "progress": False,
            "reader": {"shard_size": 10},
            "download": {"allow_private_networks": True, "threads": 4, "retries": 0},
            "caption": {
                "generation": {
                    "model": str(tiny_models.llava),
                    "device": "cpu",
                    "max_new_tokens": 8,
                }
            },
            "fusion": {
                "generation": {"model": str(tiny_models.llm), "device": "cpu", "max_new_tokens": 8}
            },
        }
        mp = run_pipeline(
            build_pipeline_config(
                {
                    **data,
                    "output": str(tmp_path / "mp"),
                    "beam_args": [
                        "--direct_running_mode=multi_processing",
                        "--direct_num_workers=2",
                    ],
                }
            ),
            stream=io.StringIO(),
        )
    assert mp.status == "succeeded"
    rows = rows_of(str(tmp_path / "mp"))
    assert len(rows) == mp.plan.rows_todo == len({r["uid"] for r in rows})
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(rows) == 16 and len(ok) >= 12
    assert all(r["visual_caption"] and r["fused_caption"] for r in ok)
    assert len(mp.written) == 2  # both shards committed by the worker processes
    from pipeline.manifest import read_manifest

    # each shard committed exactly once, by the fused path or (rows split over the workers'
    # bundles) the regroup path
    run = read_manifest(str(tmp_path / "mp"))["runs"][-1]
    assert run.get("shards_fused", 0) + run.get("shards_regrouped", 0) == 2
    res = export_json(ExportConfig(source=str(tmp_path / "mp"), splits=2))
    assert res.entries == len({r["url"] for r in ok})


def _slow_table(server: SampleServer, dest: Path, rows: int, secs: float) -> Path:
    names = sorted(p.name for p in SAMPLE_DIR.glob("*.jpg"))
    with dest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["url", "caption"])
        for i in range(rows):
            name = names[i % len(names)]
            base = server.base_url.rstrip("/")
            w.writerow([f"{base}/_fault/slow/{name}?secs={secs}&i={i}", f"photo {i}"])
    return dest


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    with SampleServer(root_dir=SAMPLE_DIR) as server:
        table = _slow_table(server, tmp_path / "in.csv", rows=60, secs=0.3)
        _assert_loopback_only(table)
        killed = tmp_path / "killed"
        argv = [
            sys.executable, "-m", "pipeline.cli", "run", "--input", str(table), "--output", str(killed),
            "--stages", "download", "--shard-size", "4", "--threads", "2", "--allow-private-networks",
            "--no-progress", "--set", "download.retries=0",
        ]  # fmt: skip
        pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": pythonpath}  # keeps the tripwire's sitecustomize
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.time() + 240  # a shared, loaded machine starts Beam slowly
            while time.time() < deadline and proc.poll() is None:
                if len(list((killed / "shards").glob("part-*.stats.json"))) >= 3:
                    break
                time.sleep(0.05)
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            os.kill(proc.pid, signal.SIGKILL)  # a real crash: no cleanup, no finally blocks
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == -signal.SIGKILL
        partial = finished_shards(str(killed))
        assert 3 <= len(partial) < 15, (
            f"the kill must land mid-run, {len(partial)} shards were done"
        )

        # rerun the same command to completion, and an uninterrupted run for reference
        resumed = subprocess.run(
            argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )
        assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
        assert f"{len(partial)} already finished" in resumed.stderr
        # the uninterrupted reference: the same command line, run in-process
        from pipeline.cli import build_parser
        from pipeline.cli.run import config_dict_from_args

        args, extra = build_parser(("pipeline.cli.run",)).parse_known_args(argv[3:])
        data = config_dict_from_args(args, extra)
        data["output"] = str(tmp_path / "clean")
        run_pipeline(build_pipeline_config(data), stream=io.StringIO())

    # no retries allowed: a dropped kept-alive connection must not cost an attempt either
    got = rows_of(str(killed))
    want = rows_of(str(tmp_path / "clean"))
    assert len(got) == len(want) == 60
    assert len({r["uid"] for r in got}) == 60  # no duplicate, no missing row
    assert got == want  # same rows, same bytes, same statuses
    # the shards committed before the kill were not redone
    after = finished_shards(str(killed))
    assert all(after[s].finished_at == partial[s].finished_at for s in partial)
