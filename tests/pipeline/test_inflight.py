"""The streaming model stage (pipeline/inflight.py) on a simulated GPU: the engine is kept at
``max_in_flight`` requests, rows in == rows out, rows that need no model pass untouched."""

from __future__ import annotations

from pipeline.generation import GenerationConfig
from schemas import Record, Status, make_uid
from tests.fixtures.sim_engines import server_records, sim_command, sim_stats
from tests.llm_fusion.fakes import run_transform


def _rows(n: int) -> list[Record]:
    rows = [
        Record(
            uid=make_uid(0, i),
            shard_id=0,
            row_index=i,
            alt_text=f"Vintage red bicycle number {i} leaning on an old brick wall in Lyon",
            visual_caption=f"A red bicycle number {i} parked beside a brick wall.",
        )
        for i in range(n)
    ]
    rows[3] = rows[3].fail(Status.HTTP_ERROR, "404")  # failed upstream: passes through
    return rows


def test_fusion_stream_keeps_the_engine_at_max_in_flight(
    sim_fleet_env, tiny_models, tmp_path, monkeypatch
):
    from llm_fusion.config import FusionConfig
    from llm_fusion.stage import FusionStage

    # a GPU slow enough that the engine, not this 2-core machine's client side, is the limit
    monkeypatch.setenv("VECAP_ENGINE_SERVER_CMD", sim_command(scale=2.0))
    gen = GenerationConfig(
        model=str(tiny_models.llm), backend="vllm", gpus="0", max_in_flight=48, max_new_tokens=40
    )
    rows = _rows(400)
    out = run_transform(FusionStage(FusionConfig(generation=gen)), rows, tmp_path)
    assert sorted(r.uid for r in out) == sorted(r.uid for r in rows)  # rows in == rows out
    by_uid = {r.uid: r for r in out}
    assert by_uid[rows[3].uid] == rows[3]
    fused = [r for r in out if r.fusion_source == "llm"]
    assert len(fused) >= 300 and len({r.fused_caption for r in fused}) == len(fused)
    [record] = server_records(sim_fleet_env)
    stats = sim_stats(f"http://127.0.0.1:{record['port']}")
    assert stats["max_in_flight"] == 48  # the cap holds, and is not a batch of 16
    # steady state: the engine sees max_in_flight at once, not a batch at a time (the mean
    # includes the ramp-up and the bundle's tail)
    assert stats["mean_in_flight"] >= 36, stats
