"""Fusion: the per-row rules, fallback accounting through Beam, keyed order, the tiny model."""

from __future__ import annotations

import dataclasses

import pytest

from llm_fusion.config import FusionConfig
from llm_fusion.fusion_rules import FusionRules
from llm_fusion.stage import FusionStage
from pipeline.generation import GenerationConfig
from schemas import Record, Status, make_uid
from tests.llm_fusion.fakes import load_echo, run_transform

VC = "A brown dog runs on a sandy beach near the water."


def rec(i: int, alt: str | None, vc: str | None = VC, **changes) -> Record:
    r = Record(uid=make_uid(0, i), shard_id=0, row_index=i, url=f"http://127.0.0.1/{i}.jpg")
    return dataclasses.replace(r, alt_text=alt, visual_caption=vc, jpg=b"\xff\xd8jpg", **changes)


def config(fallback: str = "visual", batch_size: int = 4, **kw) -> FusionConfig:
    gen = GenerationConfig(model="fake-llm", batch_size=batch_size)
    return FusionConfig(generation=gen, fallback=fallback, **kw)


# -- the rules, without Beam -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("alt", "vc", "source", "reason"),
    [
        ("IMG_1234.jpg", VC, "visual", "alt_file_name"),
        ("", VC, "visual", "alt_empty"),
        ("click here", VC, "visual", "alt_boilerplate"),
        ("https://example.com/a.jpg", VC, "visual", "alt_url"),
        ("Brown dogs on the beach", VC, "visual", "alt_in_visual_caption"),
        ("Max the golden retriever", None, "alt", "no_visual_caption"),
        ("Max the golden retriever", "  ", "alt", "no_visual_caption"),
    ],
)
def test_plan_without_llm(alt: str, vc: str | None, source: str, reason: str) -> None:
    rules = FusionRules.from_config(config())
    out = rules.plan(rec(1, alt, vc))
    assert out is not None
    assert (out.fusion_source, out.fusion_reason, out.status) == (source, reason, "ok")
    assert out.fused_caption == (VC if source == "visual" else alt)
    assert out.fusion_model is None and out.fusion_prompt_id is None  # no LLM was asked


def test_plan_no_caption_at_all_fails_the_row() -> None:
    out = FusionRules.from_config(config()).plan(rec(1, "IMG_1.jpg", None))
    assert out.status == Status.FUSION_FAILED.value
    assert out.fusion_source is None and out.fused_caption is None
    assert "no visual caption" in out.error


def test_plan_sends_informative_alt_text_to_the_llm() -> None:
    rules = FusionRules.from_config(config())
    assert rules.plan(rec(1, "Max the golden retriever at Brighton beach")) is None


def test_skip_rules_off_sends_file_names_but_not_empty_alt_text() -> None:
    rules = FusionRules.from_config(config(skip_rules=False))
    assert rules.plan(rec(1, "IMG_1234.jpg")) is None
    assert rules.plan(rec(1, "brown dog")) is None
    assert rules.plan(rec(1, " ")).fusion_reason == "alt_empty"


def test_apply_output_cleans_and_records_provenance() -> None:
    rules = FusionRules.from_config(config())
    out = rules.apply_output(rec(1, "Max"), 'New caption: "Max runs on the beach."\n\nNote: x', "m")
    assert out.fused_caption == "Max runs on the beach."
    assert (out.fusion_source, out.fusion_reason) == ("llm", None)
    assert (out.fusion_model, out.fusion_prompt_id) == ("m", "veclip-fuse-v1")


@pytest.mark.parametrize(
    ("fallback", "source", "status"),
    [("visual", "visual", "ok"), ("alt", "alt", "ok"), ("none", None, "fusion_failed")],
)
def test_rejected_output_takes_the_fallback(fallback: str, source: str | None, status: str) -> None:
    rules = FusionRules.from_config(config(fallback=fallback))
    out = rules.apply_output(rec(1, "Max the dog"), "I'm sorry, I cannot do that.", "m")
    assert (out.fusion_source, out.status) == (source, status)
    assert out.fusion_reason.startswith("llm_refusal")
    assert out.fusion_prompt_id == "veclip-fuse-v1"
    expected = {"visual": VC, "alt": "Max the dog", None: None}[source]
    assert out.fused_caption == expected
    if status != "ok":
        assert "llm_refusal" in out.error and out.jpg is None


def test_model_name_is_the_recorded_provenance() -> None:
    rules = FusionRules.from_config(config(model_name="lmsys/vicuna-7b-v1.5"))
    out = rules.apply_output(rec(1, "Max"), "Max runs on the beach.", "/models/vicuna")
    assert out.fusion_model == "lmsys/vicuna-7b-v1.5"


def test_failed_batch_row_records_the_error() -> None:
    out = FusionRules.from_config(config()).apply_failure(rec(1, "Max"), RuntimeError("OOM"), "m")
    assert out.fusion_source == "visual"
    assert out.fusion_reason == "llm_error: RuntimeError: OOM"


def test_fallback_caption_is_bounded_in_clip_tokens() -> None:
    long_vc = "A dog runs on the beach. " * 40
    out = FusionRules.from_config(config()).plan(rec(1, "IMG_1.jpg", long_vc))
    assert len(out.fused_caption.split()) < 80
    assert out.fused_caption.endswith(".")


def test_user_text_bounds_long_alt_text() -> None:
    rules = FusionRules.from_config(config(max_alt_text_chars=40))
    text = rules.user_text(rec(1, "keyword " * 100))
    block = text.split("<alt_text>")[-1].split("</alt_text>")[0]
    assert 0 < len(block) <= 40


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="fallback"):
        config(fallback="llm")
    with pytest.raises(ValueError, match="prompt_id"):
        config(prompt_id="nope")
    with pytest.raises(ValueError, match="max_caption_tokens"):
        config(max_caption_tokens=2)
    with pytest.raises(TypeError):
        config(extra_boilerplate="logo")


# -- through Beam ----------------------------------------------------------------------------


def _mixed_rows() -> list[Record]:
    rows = []
    for i in range(40):
        kind = i % 8
        if kind == 0:
            rows.append(rec(i, f"IMG_{i:04d}.jpg"))
        elif kind == 1:
            rows.append(rec(i, f"alt {i}", status=Status.HTTP_ERROR.value, error="404", vc=None))
        elif kind == 2:
            rows.append(rec(i, f"REFUSE row {i}"))
        elif kind == 3:
            rows.append(rec(i, f"already {i}", fused_caption="kept", fusion_source="visual"))
        elif kind == 4:
            rows.append(rec(i, f"Knowledge row {i} Eiffel", vc=None))
        else:
            rows.append(rec(i, f"Knowledge row {i} Eiffel Tower"))
    rows.insert(6, rec(99, "BOOM row 99"))  # among knowledge rows, so it shares a batch
    return rows


@pytest.mark.parametrize(
    ("fallback", "isolate"), [("visual", True), ("visual", False), ("none", False)]
)
def test_fallback_accounting_rows_in_equal_rows_out(fallback: str, isolate: bool, tmp_path) -> None:
    rows = _mixed_rows()
    cfg = config(fallback=fallback, isolate_failed_batches=isolate)
    out = run_transform(FusionStage(cfg, generator_loader=load_echo), rows, tmp_path)
    by_uid = {r.uid: r for r in out}
    assert len(out) == len(rows) and set(by_uid) == {r.uid for r in rows}
    for row in rows:
        got = by_uid[row.uid]
        if not row.ok or row.fusion_source is not None:
            assert got == row  # passed through untouched
            continue
        # every row ends with exactly one source, or a failure status with a reason
        if got.status == Status.OK.value:
            assert got.fusion_source in {"llm", "visual", "alt"} and got.fused_caption
            assert (got.fusion_reason is None) == (got.fusion_source == "llm")
        else:
            assert got.status == Status.FUSION_FAILED.value and fallback == "none"
            assert got.fusion_source is None and got.fused_caption is None
            assert got.fusion_reason and got.error
        if got.fusion_source == "llm":
            # keyed order: the caption names this row's own AltText
            assert got.fused_caption == f"A photo of {row.alt_text} on a sunny day."
            assert got.fusion_prompt_id == "veclip-fuse-v1" and got.fusion_model == "fake-llm"
        if "REFUSE" in row.alt_text:
            assert got.fusion_reason.startswith(("llm_refusal", "llm_error"))
        if "BOOM" in row.alt_text:
            assert got.fusion_reason.startswith("llm_error: RuntimeError: CUDA out of memory")
        elif isolate and "Knowledge" in row.alt_text and row.visual_caption:
            assert got.fusion_source == "llm"  # the poison row did not take its batch down
    sources = [r.fusion_source for r in out if r.ok]
    assert sources.count("llm") >= 10  # most knowledge rows were fused, not all failed
    if not isolate:  # the dead-letter path: the BOOM row's batch-mates fell back with it
        failed_batch = [r for r in out if (r.fusion_reason or "").startswith("llm_error")]
        assert len(failed_batch) > 1


def test_keyed_order_preserved_across_batch_sizes(tmp_path) -> None:
    rows = [rec(i, f"Landmark number {i} in Paris") for i in range(37)]
    for batch_size in (1, 5, 16):
        out = run_transform(
            FusionStage(config(batch_size=batch_size), generator_loader=load_echo), rows, tmp_path
        )
        assert sorted(r.uid for r in out) == [r.uid for r in rows]
        for r in out:
            assert r.fusion_source == "llm"
            assert (
                r.fused_caption
                == f"A photo of Landmark number {r.row_index} in Paris on a sunny day."
            )


# -- the real tiny model ---------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_llama_fuses_through_the_pipeline(tiny_models, tmp_path) -> None:
    gen = GenerationConfig(model=str(tiny_models.llm), max_new_tokens=12, batch_size=4)
    cfg = FusionConfig(generation=gen)
    rows = [rec(i, f"The old bridge in Prague number {i}") for i in range(6)]
    rows += [rec(6, "IMG_0001.jpg"), rec(7, "x", status=Status.TIMEOUT.value, vc=None)]
    out = {r.uid: r for r in run_transform(FusionStage(cfg), rows, tmp_path)}
    assert set(out) == {r.uid for r in rows}
    for row in rows[:6]:
        got = out[row.uid]
        assert got.status == "ok" and got.fusion_source in {"llm", "visual"}
        assert got.fusion_model == str(tiny_models.llm)
        assert got.fusion_prompt_id == "veclip-fuse-v1"
        assert got.fused_caption
    assert out[rows[6].uid].fusion_reason == "alt_file_name"
    assert out[rows[7].uid] == rows[7]


@pytest.mark.slow
def test_tiny_llama_batched_equals_one_by_one(tiny_models) -> None:
    gen = GenerationConfig(model=str(tiny_models.llm), max_new_tokens=12, batch_size=8)
    stage = FusionStage(FusionConfig(generation=gen))
    model = stage.handler.load_model()
    rows = [
        rec(i, alt)
        for i, alt in enumerate(["Prague", "A red car in Rome", "Max", "Big Ben at noon in London"])
    ]
    batched = [p.inference for p in stage.handler.run_inference(rows, model)]
    single = [stage.handler.run_inference([r], model)[0].inference for r in rows]
    assert batched == single
    # the tiny Llama has a chat template: the prompt is wrapped in it
    user = stage.rules.user_text(rows[0])
    assert model.render_prompts([user]) == [f"[INST] {user} [/INST]"]
