"""`vecap run` on engine servers (simulated GPUs): the job's output when an engine dies midway
equals an uninterrupted run's, and worker processes share one engine per GPU."""

from __future__ import annotations

import pytest

from pipeline.config import build_pipeline_config
from pipeline.generation.factory import release_engines
from pipeline.run import run_pipeline
from pipeline.sample.server import SAMPLE_DIR, SampleServer, sample_input_table
from tests.fixtures.sim_engines import server_records
from tests.pipeline.test_run import rows_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample_table(tmp_path_factory):
    with SampleServer(root_dir=SAMPLE_DIR) as server:
        path = sample_input_table(server.base_url, tmp_path_factory.mktemp("in") / "sample.csv")
        yield str(path)


def _job(table: str, out: str, tiny_models, **extra) -> dict:
    gen = {"backend": "vllm", "gpus": "0,1", "max_new_tokens": 40}
    return {
        "input": table,
        "output": out,
        "stages": ["download", "caption", "fuse"],
        "progress": False,
        "reader": {"shard_size": 10},
        "download": {"allow_private_networks": True, "threads": 4, "retries": 0},
        "caption": {"generation": {"model": str(tiny_models.llava), **gen}},
        "fusion": {"generation": {"model": str(tiny_models.llm), **gen}},
        **extra,
    }


_COMPARED = ("uid", "status", "error", "visual_caption", "fused_caption", "fusion_source")


def _by_uid(out: str) -> dict[str, tuple]:
    return {r["uid"]: tuple(r[k] for k in _COMPARED) for r in rows_of(out)}


def test_engine_killed_midway_gives_the_uninterrupted_output(
    sim_fleet_env, sample_table, tiny_models, tmp_path, monkeypatch
):
    clean = str(tmp_path / "clean")
    assert run_pipeline(build_pipeline_config(_job(sample_table, clean, tiny_models))).status == (
        "succeeded"
    )
    assert not server_records(sim_fleet_env)  # the launcher stopped the servers it started
    release_engines()
    # the server that starts first dies mid-step after admitting 5 requests (once), as on a CUDA
    # error (every server of the job gets more than 5)
    monkeypatch.setenv("VECAP_SIM_DIE_AFTER", "5")
    monkeypatch.setenv("VECAP_SIM_DIE_ONCE_FILE", str(tmp_path / "died"))
    killed = str(tmp_path / "killed")
    result = run_pipeline(build_pipeline_config(_job(sample_table, killed, tiny_models)))
    assert result.status == "succeeded"
    assert (tmp_path / "died").exists()
    expected, got = _by_uid(clean), _by_uid(killed)
    assert got == expected  # no row lost, none failed by the crash, each caption on its row
    ok = [v for v in got.values() if v[1] == "ok"]
    assert len(ok) >= 30 and all(v[3] and v[4] for v in ok)
    logs = "".join(p.read_text() for p in sim_fleet_env.glob("*.log"))
    assert logs.count("== vecap: starting") == 4 + 4 + 1  # two runs x 2 models x 2 GPUs, 1 restart


def test_worker_processes_share_one_engine_per_gpu(
    sim_fleet_env, sample_table, tiny_models, tmp_path
):
    out = str(tmp_path / "out")
    beam = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
    cfg = build_pipeline_config(_job(sample_table, out, tiny_models, beam_args=beam))
    assert run_pipeline(cfg).status == "succeeded"
    starts = {
        p.name: p.read_text().count("== vecap: starting") for p in sim_fleet_env.glob("*.log")
    }
    assert len(starts) == 4 and set(starts.values()) == {1}  # 2 models x 2 GPUs, started once
    rows = rows_of(out)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) >= 30 and all(r["visual_caption"] and r["fused_caption"] for r in ok)
