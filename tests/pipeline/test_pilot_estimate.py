"""A pilot run (--max-shards / --sample-shards) continued by the full run, and `vecap estimate`.

The pipeline runs on the local runner with the fake caption/fusion stages of test_run.py; the
estimate's arithmetic is checked against hand-computed figures from synthetic stats files.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from pipeline.config import ConfigError, build_pipeline_config
from pipeline.estimate import (
    EstimateError,
    Fleet,
    LeftOut,
    estimate_output,
    format_estimate,
    gpu_type_of,
    measure,
)
from pipeline.io.shard_files import committed_shards, shards_dir, stats_path
from pipeline.manifest import read_manifest, write_manifest
from pipeline.pilot import pilot_selection
from pipeline.run import plan_run, run_pipeline
from pipeline.sample.server import SAMPLE_DIR, SampleServer
from schemas.stats import ShardStats
from tests.pipeline.test_run import FAKES, _config

SHARDS, SHARD_SIZE = 6, 2
STAGES = ["download", "caption", "fuse"]


@pytest.fixture(autouse=True)
def _no_local_gpu(monkeypatch):
    """The GPU plan asks nvidia-smi on the local runner: no GPU, whatever machine runs this."""
    import pipeline.generation.gpu_types as gpu_types

    monkeypatch.setattr(gpu_types, "local_gpu", lambda: None)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """12 rows of the bundled photos on loopback: 6 shards of 2."""
    photos = sorted(SAMPLE_DIR.glob("*.jpg"))[: SHARDS * SHARD_SIZE]
    with SampleServer(root_dir=SAMPLE_DIR) as server:
        path = tmp_path_factory.mktemp("in") / "in.csv"
        lines = ["url,caption"] + [f"{server.base_url}/{p.name},photo {p.stem}" for p in photos]
        path.write_text("\n".join(lines) + "\n")
        yield str(path)


def _cfg(table: str, out: str, **extra):
    return build_pipeline_config(
        _config(table, out, stages=STAGES, reader={"shard_size": SHARD_SIZE}, **extra)
    )


def _commits(out: str) -> dict[int, tuple[str, int, int, bytes]]:
    """shard -> (attempt id, stats mtime, parquet mtime, stats bytes): a rewrite changes them."""
    found = {}
    for sid, s in committed_shards(out).items():
        stats = Path(stats_path(out, sid))
        parquet = Path(shards_dir(out)) / s.parquet
        found[sid] = (
            s.attempt,
            stats.stat().st_mtime_ns,
            parquet.stat().st_mtime_ns,
            stats.read_bytes(),
        )
    return found


# --------------------------------------------------------------------------- the selection


def test_pilot_selection_rule():
    assert pilot_selection(range(6), None, None) is None
    assert pilot_selection(range(6), 2, None)["shards"] == [0, 1]
    # sample: positions i * total // n of the plan's ids in order
    assert pilot_selection(range(6), None, 2)["shards"] == [0, 3]
    assert pilot_selection(range(6), None, 3)["shards"] == [0, 2, 4]
    assert pilot_selection(range(5), None, 2)["shards"] == [0, 2]
    assert pilot_selection(range(10), None, 4)["shards"] == [0, 2, 5, 7]
    assert pilot_selection([3, 10, 11, 40], None, 2)["shards"] == [3, 11]  # --from: sparse ids
    assert pilot_selection(range(3), None, 9)["shards"] == [0, 1, 2]  # N >= plan: all of it
    assert pilot_selection(range(3), 9, None) == {
        "flag": "--max-shards",
        "n": 9,
        "shards": [0, 1, 2],
    }


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"max_shards": 2, "sample_shards": 2}, "not both"),
        ({"max_shards": 0}, "max_shards must be a whole number >= 1"),
        ({"sample_shards": "two"}, "sample_shards must be a whole number >= 1"),
    ],
)
def test_bad_pilot_settings_are_config_errors(table, tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(table, str(tmp_path / "o"), **extra)


# --------------------------------------------------------------------------- pilot, then the job


def test_max_shards_pilot_then_the_full_run_continues_it(table, tmp_path):
    out = str(tmp_path / "o")
    full_plan = plan_run(_cfg(table, out))
    assert full_plan.shards_total == SHARDS and full_plan.pilot is None

    stream = io.StringIO()
    pilot = run_pipeline(
        _cfg(table, out, max_shards=2, progress=True), stream=stream, stage_overrides=FAKES
    )
    assert pilot.status == "succeeded" and sorted(pilot.written) == [0, 1]
    assert sorted(committed_shards(out)) == [0, 1]
    # the pilot planned only its shards into the pipeline (what any runner reads)...
    assert pilot.plan.todo == [0, 1] and pilot.plan.shards_total == SHARDS
    # ...and its progress and summary count them, not the full plan
    text = stream.getvalue()
    assert "pilot (--max-shards 2): shards 0, 1 of 6 planned; 4 left for later" in text
    assert "2/2" in text and "this run: 2 shards, 4 rows" in text
    assert "pilot done: 2 of 6 planned shards committed" in text
    manifest = read_manifest(out)
    run = manifest["runs"][-1]
    assert run["pilot"] == {"flag": "--max-shards", "n": 2, "shards": [0, 1]}
    assert run["shards_written"] == 2 and run["shards_left"] == 4 and run["shards_deferred"] == 4
    assert manifest["plan"]["rows_planned"] == SHARDS * SHARD_SIZE
    # the fingerprint is the full job's: the continuation is the same job
    assert manifest["plan"]["plan_fingerprint"] == full_plan.fingerprint
    before = _commits(out)

    # the pilot command again: its shards are done, nothing runs
    again = run_pipeline(
        _cfg(table, out, max_shards=2), stream=io.StringIO(), stage_overrides=FAKES
    )
    assert again.status == "nothing_to_do" and again.plan.todo == []

    full = run_pipeline(_cfg(table, out), stream=io.StringIO(), stage_overrides=FAKES)
    assert full.status == "succeeded" and full.plan.pilot is None
    assert full.plan.skipped == [0, 1] and full.plan.todo == [2, 3, 4, 5]
    assert sorted(full.written) == [2, 3, 4, 5]
    after = _commits(out)
    assert sorted(after) == list(range(SHARDS))
    # the pilot's commits are untouched: same attempt, same files, same bytes
    assert {sid: after[sid] for sid in (0, 1)} == before
    manifest = read_manifest(out)
    assert manifest["plan"]["plan_fingerprint"] == full_plan.fingerprint
    assert "pilot" not in manifest["plan"] and "pilot" not in manifest["runs"][-1]
    assert manifest["runs"][0]["pilot"]["shards"] == [0, 1]  # the history keeps the pilot
    # every committed parquet is the one its stats names, rows in == rows out
    assert sum(s.rows for s in committed_shards(out).values()) == SHARDS * SHARD_SIZE


def test_sample_shards_spreads_the_pilot_over_the_plan(table, tmp_path):
    out = str(tmp_path / "o")
    pilot_cfg = _cfg(table, out, sample_shards=2)
    plan = plan_run(pilot_cfg)
    assert plan.todo == [0, 3]
    assert [s.shard_id for s in plan.input_shards] == [0, 3]  # all a runner is given to read
    res = run_pipeline(pilot_cfg, stream=io.StringIO(), stage_overrides=FAKES)
    assert sorted(res.written) == [0, 3] and sorted(committed_shards(out)) == [0, 3]
    before = _commits(out)
    full = run_pipeline(_cfg(table, out), stream=io.StringIO(), stage_overrides=FAKES)
    assert full.plan.todo == [1, 2, 4, 5] and sorted(full.written) == [1, 2, 4, 5]
    assert {sid: _commits(out)[sid] for sid in (0, 3)} == before


def test_a_pilot_of_an_earlier_output_reads_only_its_shards(table, tmp_path):
    """--from: the pilot's shards are all the earlier output is read for."""
    src, out = str(tmp_path / "dl"), str(tmp_path / "cap")
    run_pipeline(
        build_pipeline_config(_config(table, src, reader={"shard_size": 2})), stream=io.StringIO()
    )
    cfg = build_pipeline_config(
        _config(None, out, input=None, **{"from": src}, stages=["caption"], sample_shards=3)
    )
    res = run_pipeline(cfg, stream=io.StringIO(), stage_overrides=FAKES)
    assert res.plan.todo == [0, 2, 4] and sorted(committed_shards(out)) == [0, 2, 4]


# --------------------------------------------------------------------------- estimate: arithmetic


def _stats(sid, rows, start, end, **stage_seconds) -> ShardStats:
    return ShardStats(
        shard_id=sid, rows=rows, started_at=start, finished_at=end, stage_seconds=stage_seconds
    )


# two overlapping shards: [1000, 1010] and [1005, 1015]
SYNTHETIC = [
    _stats(0, 10, 1000.0, 1010.0, read=1.0, download=3.0, caption=4.0, fuse=1.5),  # other 0.5
    _stats(1, 10, 1005.0, 1015.0, read=1.0, download=2.0, caption=5.0, fuse=1.0),  # other 1.0
    _stats(2, 0, 1000.0, 1000.0),  # an empty shard: committed without a clock, costs nothing
]


def test_measure_by_hand():
    m = measure(SYNTHETIC, {"caption", "fuse"})
    assert (m.shards, m.rows) == (2, 20)
    assert m.busy_wall_s == pytest.approx(15.0)  # union of the intervals, not 10 + 10
    assert m.shard_seconds == pytest.approx(20.0) and m.in_flight == pytest.approx(20 / 15)
    by = {f.stage: f for f in m.stages}
    assert [f.stage for f in m.stages] == ["read", "download", "caption", "fuse", "other"]
    assert by["caption"].shard_seconds == pytest.approx(9.0)
    assert by["caption"].share == pytest.approx(9.0 / 20.0)
    assert by["caption"].wall_s_per_row == pytest.approx(9.0 / 20.0 * 15.0 / 20)  # 0.3375
    assert by["other"].shard_seconds == pytest.approx(1.5)
    assert sum(f.share for f in m.stages) == pytest.approx(1.0)
    assert by["caption"].on_gpu and not by["download"].on_gpu
    with pytest.raises(EstimateError, match="carries timings"):
        measure([_stats(0, 10, 0.0, 0.0)], set())


def _synthetic_output(out: Path, gpu: dict | None, beam_args=(), pilot_gpus_engines=True) -> str:
    (out / "shards").mkdir(parents=True)
    for s in SYNTHETIC:
        Path(stats_path(str(out), s.shard_id)).write_text(s.to_json())
    write_manifest(
        str(out),
        {
            "config": {"run": {"beam_args": list(beam_args)}},
            "stages": STAGES,
            "plan": {"shards_planned": 6, "rows_planned": 60, "plan_fingerprint": "f"},
            "gpu_plan": {
                "gpu": gpu,
                "gpu_source": "--gpu-type" if gpu else "unknown",
                "engines": [{"stages": ["caption"]}, {"stages": ["fuse"]}]
                if pilot_gpus_engines
                else [],
                "fits": True,
            },
            "runs": [
                {
                    "pilot": {"flag": "--max-shards", "n": 3, "shards": [0, 1, 2]},
                    "shards_written": 3,
                    "seconds": 20.0,
                }
            ],
        },
    )
    return str(out)


H100x2 = {"name": "h100-80gb", "memory_gib": 79.6, "compute_capability": [9, 0], "count": 2}


def test_estimate_projects_the_plan_by_hand(tmp_path):
    out = _synthetic_output(tmp_path / "o", H100x2)
    # the pilot: 2 H100s (local runner: one machine of 2); the full run: 4 of them
    e = estimate_output(out, gpus=4)
    assert e.pilot_fleet.gpus == 2 and e.fleet == Fleet(4, "h100-80gb", "--gpus")
    assert e.rows_planned == 60 and e.measured.rows == 20 and e.gpu_scale == 0.5
    # wall = busy 15 s x 60/20 rows x 2/4 GPUs = 22.5 s; caption: 0.3375 s/row x 60 x 0.5
    assert e.wall_s == pytest.approx(22.5)
    assert e.stage_wall_s["caption"] == pytest.approx(10.125)
    assert e.stage_wall_s["download"] == pytest.approx(5 / 20 * 15 / 20 * 60 * 0.5)
    assert sum(e.stage_wall_s.values()) == pytest.approx(e.wall_s)
    # GPU-hours: 4 GPUs x wall; the same as the pilot's 2 GPUs x its projected 45 s
    assert e.gpu_hours_held == pytest.approx(4 * 22.5 / 3600) == pytest.approx(2 * 45 / 3600)
    assert e.gpu_hours == pytest.approx({"caption": 4 * 10.125 / 3600, "fuse": 4 * 2.8125 / 3600})
    assert e.overhead_s == pytest.approx(5.0)  # 20 s of run, 15 s of shards in flight
    assert e.pilot["shards"] == [0, 1, 2]
    assert e.left_out == () and e.runs_measured == ("#1",)  # one run: every shard, as before
    # the same fleet as the pilot: twice the wall, the same GPU-hours
    same = estimate_output(out)
    assert same.fleet.gpus == 2 and same.wall_s == pytest.approx(45.0)
    assert same.gpu_hours_held == pytest.approx(e.gpu_hours_held)
    assert estimate_output(out, gpu_type="nvidia-h100-80gb").fleet.gpu_type == "h100-80gb"

    text = format_estimate(e)
    for figure in (
        "3 of 6 planned shards committed",
        "measured: 20 rows in 2 shards",
        "1.33 shards at once",
        "pilot fleet: 2 GPU(s) h100-80gb",
        "fleet: 4 GPU(s) h100-80gb (--gpus)",
        "60 rows (the manifest's plan)",
        "linear in rows and in GPUs",
        "x 0.5 (pilot GPUs / fleet GPUs)",
        "0.3375",  # caption wall s/row
        "0.6750",  # caption GPU-s/row on the pilot's 2 GPUs
        "22.5 s",
        "GPU-hours held: 0.025 = 4 GPUs x 0.00625 h wall",
        "of which 0.0144 attributed to the GPU stages (caption, fuse)",  # (10.125 + 2.8125) x 4
        "still to run: 40 rows not committed (66.7%): wall 15.0 s; GPU-hours 0.0167",
        "not utilisation",
        "5.0 s of the runs outside it",
    ):
        assert figure in text, (figure, text)
    data = json.loads(json.dumps(e.to_dict()))
    assert data["wall_s"] == pytest.approx(22.5) and data["measured"]["rows"] == 20
    assert data["left"] == pytest.approx(
        {"rows": 40, "wall_s": 15.0, "gpu_hours_held": 0.025 * 2 / 3}
    )


def test_estimate_fleet_rules(tmp_path):
    out = _synthetic_output(tmp_path / "o", H100x2)
    with pytest.raises(EstimateError, match="not scaled by a guessed ratio"):
        estimate_output(out, gpu_type="l4")
    with pytest.raises(EstimateError, match="unknown GPU type"):
        estimate_output(out, gpu_type="tpu")
    # Dataflow: the machines come from a fixed --num_workers; autoscaling leaves them unknown
    df = ["--runner=DataflowRunner", "--num_workers=3"]
    h100 = {**H100x2, "count": 1}
    assert estimate_output(_synthetic_output(tmp_path / "df", h100, df)).pilot_fleet.gpus == 3
    auto = _synthetic_output(
        tmp_path / "auto", h100, ["--runner=DataflowRunner", "--max_num_workers=9"]
    )
    unknown = estimate_output(auto)
    assert unknown.pilot_fleet.gpus is None and unknown.gpu_hours_held is None
    assert "GPU count is not known" in format_estimate(unknown)
    with pytest.raises(EstimateError, match="--pilot-gpus N"):
        estimate_output(auto, gpus=8)
    told = estimate_output(auto, gpus=8, pilot_gpus=4)
    assert told.wall_s == pytest.approx(45.0 * 4 / 8) and told.fleet.gpu_type == "h100-80gb"
    # a CPU pilot: wall on the same machine, no GPU-hours, and --gpus refused
    cpu = _synthetic_output(tmp_path / "cpu", None)
    e = estimate_output(cpu)
    assert e.pilot_fleet.gpus == 0 and e.gpu_hours == {} and e.wall_s == pytest.approx(45.0)
    with pytest.raises(EstimateError, match="no GPU"):
        estimate_output(cpu, gpus=4)
    # download only: no engine, no GPU stage
    dl = estimate_output(_synthetic_output(tmp_path / "dl", None, pilot_gpus_engines=False))
    assert dl.pilot_fleet.gpus == 0 and not any(f.on_gpu for f in dl.measured.stages)


# --------------------------------------------------------------------------- estimate: fleets

LOCAL_H100x1 = {"name": "h100-80gb", "memory_gib": 79.6, "compute_capability": [9, 0], "count": 1}
DATAFLOW_4 = ["--runner=DataflowRunner", "--num_workers=4"]
# the continuation's shards on Dataflow: [2000, 2004] and [2002, 2006], 8 s of 20 rows
FLEET2 = [
    _stats(3, 10, 2000.0, 2004.0, read=0.5, download=1.0, caption=2.0, fuse=0.5),
    _stats(4, 10, 2002.0, 2006.0, read=0.5, download=1.0, caption=2.0, fuse=0.5),
]
STRAY = _stats(5, 10, 1500.0, 1501.0, caption=1.0)  # committed between the two runs' windows


def _fleet_record(gpu, beam_args):
    return {
        "gpu": gpu,
        "gpu_source": "--gpu-type",
        "gpu_stages": ["caption", "fuse"],
        "beam_args": list(beam_args),
        "stage_gpus": {"caption": None, "fuse": None},
    }


def _two_fleet_output(out: Path) -> str:
    """A pilot on 1 local H100 (shards 0-2, run #1), continued on Dataflow with 4 machines of 2
    H100s (shards 3, 4, run #2, still running); shard 5 in neither run's window."""
    (out / "shards").mkdir(parents=True)
    for s in [*SYNTHETIC, *FLEET2, STRAY]:
        Path(stats_path(str(out), s.shard_id)).write_text(s.to_json())
    write_manifest(
        str(out),
        {
            "config": {"run": {"beam_args": DATAFLOW_4}},  # the top level: the latest run's
            "stages": STAGES,
            "plan": {"shards_planned": 6, "rows_planned": 60, "plan_fingerprint": "f"},
            "gpu_plan": {
                "gpu": H100x2,
                "gpu_source": "--gpu-type",
                "engines": [{"stages": ["caption"]}, {"stages": ["fuse"]}],
            },
            "runs": [
                {
                    "run_id": "r1",
                    "started_at": 900.0,
                    "finished_at": 1100.0,
                    "pilot": {"flag": "--max-shards", "n": 3, "shards": [0, 1, 2]},
                    "shards_written": 3,
                    "seconds": 200.0,
                    "fleet": _fleet_record(LOCAL_H100x1, []),
                },
                {
                    "run_id": "r2",
                    "started_at": 1990.0,
                    "finished_at": None,
                    "status": "running",
                    "shards_written": 2,
                    "seconds": 10.0,
                    "fleet": _fleet_record(H100x2, DATAFLOW_4),
                },
            ],
        },
    )
    return str(out)


def test_estimate_measures_only_the_latest_fleet_by_hand(tmp_path):
    out = _two_fleet_output(tmp_path / "o")
    e = estimate_output(out)
    # run #2 only: 4 machines x 2 H100s; shards 3, 4: busy 6 s (union), 20 rows, 8 shard-s
    assert e.pilot_fleet.gpus == 8 and e.pilot_fleet.gpu_type == "h100-80gb"
    assert (e.measured.shards, e.measured.rows) == (2, 20)
    assert e.measured.busy_wall_s == pytest.approx(6.0)
    assert e.runs_measured == ("#2 r2",)
    # wall = 6 s x 60/20 rows = 18 s (the mixed figure would be (15 + 6) x 60/40 = 31.5 s)
    assert e.wall_s == pytest.approx(18.0)
    assert e.stage_wall_s["caption"] == pytest.approx(4 / 8 * 6 / 20 * 60)  # 9 s
    assert e.gpu_hours_held == pytest.approx(8 * 18 / 3600)  # 0.04
    assert e.gpu_hours["caption"] == pytest.approx(8 * 9 / 3600)
    assert e.overhead_s == pytest.approx(10.0 - 6.0)  # run #2's seconds only
    assert e.rows_committed == 50  # the continuation's share counts every committed row
    assert e.left_out == (
        LeftOut(2, ("#1 r1",), f"another fleet: {_pilot_fleet_text()}"),
        LeftOut(1, (), "committed outside every recorded run's [started_at, finished_at]"),
    )
    text = format_estimate(e)
    for figure in (
        "measured: 20 rows in 2 shards",
        "pilot fleet: 8 GPU(s) h100-80gb (DataflowRunner: --num_workers 4: 4 machine(s) x 2 GPU(s)",
        "runs measured: #2 r2 (one fleet: 2 shards)",
        "left out: 2 shard(s) of run(s) #1 r1: another fleet: 1 GPU(s) h100-80gb (local runner",
        "left out: 1 shard(s): committed outside every recorded run's",
        "18.0 s",
    ):
        assert figure in text, (figure, text)
    assert "these are the job's own figures" not in text
    data = json.loads(json.dumps(e.to_dict()))
    assert data["runs_measured"] == ["#2 r2"] and data["left_out"][0]["shards"] == 2

    # --run: the pilot's fleet, by id or by number: shards 0, 1 on 1 GPU, busy 15 s
    pilot = estimate_output(out, run="r1")
    assert pilot.pilot_fleet.gpus == 1 and pilot.measured.busy_wall_s == pytest.approx(15.0)
    assert pilot.wall_s == pytest.approx(45.0) and pilot.runs_measured == ("#1 r1",)
    assert pilot.overhead_s == pytest.approx(200.0 - 15.0)
    assert estimate_output(out, run="#1", gpus=8).wall_s == pytest.approx(45.0 / 8)
    assert [lo.shards for lo in pilot.left_out] == [2, 1]
    with pytest.raises(EstimateError, match=r"--run r9: no such run .*#1 r1, #2 r2"):
        estimate_output(out, run="r9")


def _pilot_fleet_text() -> str:
    """How the left-out pilot's fleet is printed (1 local H100)."""
    from pipeline.estimate import _fleet, run_fleet

    return _fleet(run_fleet(_fleet_record(LOCAL_H100x1, []))[0])


def test_runs_on_one_fleet_are_measured_together(tmp_path):
    """Two runs with the same fleet record: every committed shard, windows not needed."""
    out = _two_fleet_output(tmp_path / "o")
    manifest = read_manifest(out)
    manifest["runs"][0]["fleet"] = manifest["runs"][1]["fleet"]
    write_manifest(out, manifest)
    e = estimate_output(out)
    assert e.left_out == () and e.runs_measured == ("#1 r1", "#2 r2")
    assert (e.measured.shards, e.measured.rows) == (5, 50)
    assert e.measured.busy_wall_s == pytest.approx(15.0 + 1.0 + 6.0)
    assert "runs measured: #1 r1, #2 r2 (all on one fleet)" in format_estimate(e)


def test_older_manifests_without_per_run_fleets(tmp_path):
    out = _two_fleet_output(tmp_path / "o")
    manifest = read_manifest(out)
    del manifest["runs"][0]["fleet"]  # a run of an older vecap, continued by this one
    write_manifest(out, manifest)
    e = estimate_output(out)
    assert e.measured.shards == 2 and e.left_out[0].why.startswith("the run's fleet is not")
    with pytest.raises(EstimateError, match="does not record that run's fleet"):
        estimate_output(out, run="1")
    del manifest["runs"][1]["fleet"]  # wholly an older vecap's: the top level, as before
    write_manifest(out, manifest)
    old = estimate_output(out)
    assert old.left_out == () and old.measured.shards == 5 and old.pilot_fleet.gpus == 8
    assert any("records no fleet per run" in n for n in old.notes)


def test_gpu_type_of_driver_names():
    assert gpu_type_of({"name": "nvidia-l4"}) == "l4"
    smi = {"name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.6, "compute_capability": [9, 0]}
    assert gpu_type_of(smi) == "h100-80gb"
    assert (
        gpu_type_of({"name": "NVIDIA L4", "memory_gib": 22.0, "compute_capability": [8, 9]}) == "l4"
    )
    assert (
        gpu_type_of({"name": "NVIDIA A10G", "memory_gib": 22.0, "compute_capability": [8, 6]})
        == "a10g"
    )
    assert (
        gpu_type_of({"name": "Mystery", "memory_gib": 12.0, "compute_capability": [8, 6]}) is None
    )


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def vecap(monkeypatch):
    """`vecap` with the estimate command registered (until main's COMMAND_MODULES lists it)."""
    import importlib

    cli_main = importlib.import_module("pipeline.cli.main")
    modules = cli_main.COMMAND_MODULES
    if "pipeline.cli.estimate" not in modules:
        build = cli_main.build_parser
        modules = (*modules, "pipeline.cli.estimate")
        monkeypatch.setattr(cli_main, "build_parser", lambda m=modules: build(m))
    return cli_main.main


def test_cli_pilot_then_estimate_on_its_output(vecap, table, tmp_path, capsys):
    out = str(tmp_path / "o")
    argv = [
        "run", "--input", table, "--output", out, "--stages", "download", "--shard-size",
        str(SHARD_SIZE), "--allow-private-networks", "--no-progress",
    ]  # fmt: skip
    assert vecap([*argv, "--sample-shards", "3"]) == 0
    assert "succeeded (pilot): 3 shards, 6 rows" in capsys.readouterr().out
    assert sorted(committed_shards(out)) == [0, 2, 4]

    assert vecap(["estimate", out]) == 0
    text = capsys.readouterr().out
    assert "3 of 6 planned shards committed; pilot (--sample-shards 3): shards 0, 2, 4" in text
    assert "measured: 6 rows in 3 shards" in text
    assert "projection for the whole input: 12 rows (the manifest's plan), 6 shards" in text
    assert "no GPU-hours" in text  # download only
    assert vecap(["estimate", "--output", out]) == 0  # the shared spelling of OUT
    assert capsys.readouterr().out == text
    assert vecap(["estimate", out, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rows_planned"] == SHARDS * SHARD_SIZE and data["measured"]["rows"] == 6
    m = data["measured"]
    assert data["wall_s"] == pytest.approx(m["busy_wall_s"] * 12 / 6)
    assert {s["stage"] for s in m["stages"]} >= {"read", "download"}

    assert vecap(argv) == 0  # the job itself: the other 3 shards
    assert "succeeded: 3 shards, 6 rows" in capsys.readouterr().out
    assert sorted(committed_shards(out)) == list(range(SHARDS))
    # each run recorded its id and fleet; both ran here: one fleet, every shard measured
    runs = read_manifest(out)["runs"]
    assert [r["fleet"]["beam_args"] for r in runs] == [[], []] and runs[0]["run_id"]
    assert runs[0]["run_id"] != runs[1]["run_id"]
    assert vecap(["estimate", out, "--run", runs[0]["run_id"]]) == 0
    text = capsys.readouterr().out
    assert "measured: 12 rows in 6 shards" in text and "left out" not in text
    assert f"runs measured: #1 {runs[0]['run_id']}, #2 {runs[1]['run_id']}" in text


@pytest.mark.parametrize(
    "args, match",
    [
        (["estimate"], "give the output directory"),
        (["estimate", "{empty}"], "is not a vecap output"),
        (["estimate", "{out}", "--gpus", "0"], "--gpus must be a whole number >= 1"),
        (["estimate", "{out}", "--gpus", "many"], "--gpus must be a whole number >= 1"),
        (["estimate", "{out}", "--gpu-type", "l4"], "not scaled by a guessed ratio"),
        (["estimate", "{out}", "--pilot-gpus", "-1"], "--pilot-gpus must be a whole number >= 0"),
        (["estimate", "{out}", "--run", "7"], "--run 7: no such run in the manifest"),
        (
            ["run", "--input", "x.csv", "--output", "{empty}", "--max-shards", "0"],
            "max_shards must",
        ),
        (
            [
                "run",
                "--input",
                "x.csv",
                "--output",
                "{empty}",
                "--max-shards",
                "1",
                "--sample-shards",
                "1",
            ],
            "not both",
        ),
    ],
)
def test_bad_invocations_are_one_line_exit_2(vecap, tmp_path, capsys, args, match):
    out = _synthetic_output(tmp_path / "o", H100x2)
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [a.format(out=out, empty=str(empty)) for a in args]
    assert vecap(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err
    assert err.startswith(f"vecap {argv[0]}: ")


def test_no_committed_shards_is_one_line(vecap, tmp_path, capsys):
    out = tmp_path / "o"
    write_manifest(str(out), {"plan": {"shards_planned": 6}})
    os.makedirs(shards_dir(str(out)))
    assert vecap(["estimate", str(out)]) == 2
    assert "no committed shards yet" in capsys.readouterr().err
