"""CaptionStage through a Beam pipeline (FnApiRunner): uids, statuses, failure paths."""

from __future__ import annotations

import pickle
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that

from llava_recap.config import CaptionConfig
from llava_recap.handler import Captioner, decode_image
from llava_recap.stage import CaptionStage
from pipeline.generation import GenerationConfig, load_generator
from schemas import Record, Status, make_uid
from tests.llava_recap.conftest import jpeg_bytes, make_image

PROMPT_ID = "veclip-concise-v1"


def _config(model: str, **kwargs) -> CaptionConfig:
    gen = GenerationConfig(
        model=model, max_new_tokens=10, device="cpu", batch_size=4, min_batch_size=4
    )
    return CaptionConfig(generation=gen, **kwargs)


def _write_to(path: str):
    def capture(actual):
        Path(path).write_bytes(pickle.dumps(list(actual)))

    return capture


def run_stage(records: list[Record], stage: CaptionStage, tmp_path: Path) -> list[Record]:
    out = tmp_path / "out.pkl"
    with beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions()) as p:
        result = p | beam.Create(records) | stage
        assert_that(result, _write_to(str(out)))
    return pickle.loads(out.read_bytes())


def _ok(i: int, jpg: bytes | None) -> Record:
    return Record(
        uid=make_uid(0, i),
        shard_id=0,
        row_index=i,
        url=f"http://x/{i}.jpg",
        alt_text=f"alt {i}",
        jpg=jpg,
        image_format="jpeg",
    )


@pytest.fixture(scope="module")
def mixed_records():
    records = [_ok(i, jpeg_bytes(make_image(100 + i, (40 + 4 * i, 36)))) for i in range(7)]
    records.insert(2, _ok(90, b"\xff\xd8not really a jpeg"))
    records.insert(5, _ok(91, None))
    failed = _ok(92, None).fail(Status.HTTP_ERROR, "HTTP 404")
    records.insert(0, failed)
    return records


@pytest.mark.parametrize("decode_threads", [4, 1], ids=["decode-pool", "decode-inline"])
def test_captions_attach_to_the_right_uid(tiny_models, mixed_records, tmp_path, decode_threads):
    config = _config(str(tiny_models.llava), model_name="tiny-llava", decode_threads=decode_threads)
    out = run_stage(mixed_records, CaptionStage(config), tmp_path)

    assert len(out) == len(mixed_records)
    by_uid = {r.uid: r for r in out}
    assert set(by_uid) == {r.uid for r in mixed_records}

    # expected captions: the same model, one image at a time, outside Beam
    captioner = Captioner(load_generator(config.generation, multimodal=True), config)
    from llava_recap.cleaning import clean_caption

    captioned = 0
    for record in mixed_records:
        got = by_uid[record.uid]
        if not record.ok:
            assert got == record  # untouched
        elif record.row_index in (90, 91):
            assert got.status == Status.CAPTION_FAILED.value
            assert got.error and ("decode" in got.error or "no image bytes" in got.error)
            assert got.visual_caption is None
        else:
            raw = captioner.caption([decode_image(record.jpg)])[0]
            assert got.status == "ok", got.error
            assert got.visual_caption == clean_caption(raw, config.prompt)
            assert got.caption_model == "tiny-llava"
            assert got.caption_prompt_id == PROMPT_ID
            assert got.jpg == record.jpg and got.alt_text == record.alt_text
            captioned += 1
    assert captioned == 7
    assert len({by_uid[r.uid].visual_caption for r in mixed_records if r.ok} - {None}) > 1


# ---- failure paths with stand-in generators (module level: Beam pickles the factory)


class _Proc:
    chat_template = None


class RaisingGenerator:
    multimodal = True
    processor = _Proc()

    def __init__(self, config, multimodal):
        self.config = config

    def generate(self, prompts, images=None):
        raise RuntimeError("CUDA out of memory (simulated)")


class PoisonGenerator(RaisingGenerator):
    """Fails any batch that holds a 13-px-wide image; captions others by width."""

    def generate(self, prompts, images=None):
        if any(im.width == 13 for im in images):
            raise RuntimeError("poison image in batch")
        return [f"An image {im.width} px wide. And a cut" for im in images]


class EmptyGenerator(RaisingGenerator):
    def generate(self, prompts, images=None):
        return ["   " if im.width % 2 else f"Width {im.width}." for im in images]


class ShortGenerator(RaisingGenerator):
    def generate(self, prompts, images=None):
        return ["one caption"]  # drops rows: must never pass silently


def raising_factory(config, multimodal):
    return RaisingGenerator(config, multimodal)


def poison_factory(config, multimodal):
    return PoisonGenerator(config, multimodal)


def empty_factory(config, multimodal):
    return EmptyGenerator(config, multimodal)


def short_factory(config, multimodal):
    return ShortGenerator(config, multimodal)


def _records(widths):
    return [_ok(i, jpeg_bytes(make_image(i, (w, 20)))) for i, w in enumerate(widths)]


def test_raising_batch_gives_caption_failed_rows(tmp_path):
    records = _records([20, 22, 24, 26, 28])
    out = run_stage(
        records, CaptionStage(_config("fake"), generator_factory=raising_factory), tmp_path
    )
    assert sorted(r.uid for r in out) == sorted(r.uid for r in records)
    assert {r.status for r in out} == {Status.CAPTION_FAILED.value}
    assert all("CUDA out of memory" in r.error for r in out)
    assert all(r.jpg for r in out), "a failed caption keeps the image for a retry"


def test_dead_letter_path_without_isolation(tmp_path):
    records = _records([20, 22, 24, 26, 28])
    stage = CaptionStage(
        _config("fake", isolate_failed_batches=False), generator_factory=raising_factory
    )
    out = run_stage(records, stage, tmp_path)
    assert sorted(r.uid for r in out) == sorted(r.uid for r in records)
    assert {r.status for r in out} == {Status.CAPTION_FAILED.value}
    assert all(r.error.startswith("caption batch failed: RuntimeError") for r in out)


def test_failed_batch_is_isolated_to_the_bad_row(tmp_path):
    records = _records([20, 13, 24, 26, 28, 30])
    out = {
        r.uid: r
        for r in run_stage(
            records, CaptionStage(_config("fake"), generator_factory=poison_factory), tmp_path
        )
    }
    assert len(out) == len(records)
    bad = out[records[1].uid]
    assert bad.status == Status.CAPTION_FAILED.value and "poison" in bad.error
    for record in records[:1] + records[2:]:
        got = out[record.uid]
        assert got.status == "ok"
        assert got.visual_caption == f"An image {record_width(record)} px wide."


def record_width(record: Record) -> int:
    return decode_image(record.jpg).width


def test_empty_output_is_caption_failed(tmp_path):
    records = _records([20, 21, 22, 23])
    out = {
        r.uid: r
        for r in run_stage(
            records, CaptionStage(_config("fake"), generator_factory=empty_factory), tmp_path
        )
    }
    for record in records:
        got = out[record.uid]
        if record_width(record) % 2:
            assert got.status == Status.CAPTION_FAILED.value
            assert "empty caption" in got.error
        else:
            assert got.visual_caption == f"Width {record_width(record)}."


def test_generator_that_drops_rows_fails_them(tmp_path):
    records = _records([20, 22, 24])
    out = run_stage(
        records,
        CaptionStage(
            _config("fake", isolate_failed_batches=False), generator_factory=short_factory
        ),
        tmp_path,
    )
    assert len(out) == 3
    assert all(r.status == Status.CAPTION_FAILED.value for r in out)
    assert all("returned 1 captions for 3 images" in r.error for r in out)


def test_all_rows_not_ok_skip_the_model(tmp_path):
    records = [_ok(i, None).fail(Status.TIMEOUT, "timed out") for i in range(3)]
    out = run_stage(
        records, CaptionStage(_config("fake"), generator_factory=raising_factory), tmp_path
    )
    assert sorted(out, key=lambda r: r.uid) == records


@pytest.mark.parametrize(
    "change",
    [
        {"generation": {"max_batch_duration_secs": 1.0, "min_batch_size": 1}},
        {"share_model_across_processes": True},
    ],
    ids=["time-bounded-batches", "shared-model"],
)
def test_batching_and_sharing_options_run(change, tmp_path):
    import dataclasses

    config = _config("fake")
    if "generation" in change:
        config = dataclasses.replace(
            config, generation=dataclasses.replace(config.generation, **change["generation"])
        )
    else:
        config = dataclasses.replace(config, **change)
    records = _records([20, 22, 24, 26, 28])
    out = run_stage(records, CaptionStage(config, generator_factory=poison_factory), tmp_path)
    by_uid = {r.uid: r for r in out}
    assert len(by_uid) == len(records)
    for record in records:
        assert by_uid[record.uid].visual_caption == f"An image {record_width(record)} px wide."


def test_rerun_skips_done_rows_and_retries_failed_ones(tmp_path):
    """A rerun over an earlier output: no paid work redone, failed captions tried again."""
    base = _records([20, 22, 24, 26, 30])
    config = _config("fake", model_name="m1")
    done = base[0].replace(visual_caption="old.", caption_model="m1", caption_prompt_id=PROMPT_ID)
    other_prompt = base[1].replace(
        visual_caption="old.", caption_model="m1", caption_prompt_id="detailed-v1"
    )
    failed_with_image = base[2].replace(status=Status.CAPTION_FAILED.value, error="OOM")
    failed_without_image = base[3].fail(Status.CAPTION_FAILED, "decode")
    fresh = base[4]
    records = [done, other_prompt, failed_with_image, failed_without_image, fresh]
    out = {
        r.uid: r
        for r in run_stage(
            records, CaptionStage(config, generator_factory=poison_factory), tmp_path
        )
    }
    assert len(out) == 5
    assert out[done.uid] == done  # same model + prompt: not captioned again
    assert out[failed_without_image.uid] == failed_without_image
    for record in (other_prompt, failed_with_image, fresh):
        got = out[record.uid]
        assert got.status == "ok" and got.error is None
        assert got.visual_caption == f"An image {record_width(record)} px wide."
        assert got.caption_prompt_id == PROMPT_ID

    no_retry = CaptionStage(_config("fake", retry_failed=False), generator_factory=poison_factory)
    out = run_stage([failed_with_image], no_retry, tmp_path)
    assert out == [failed_with_image]


class LongErrorGenerator(RaisingGenerator):
    def generate(self, prompts, images=None):
        raise RuntimeError("x" * 50_000)


def long_error_factory(config, multimodal):
    return LongErrorGenerator(config, multimodal)


def test_outcome_counters_and_bounded_errors():
    from apache_beam.metrics.metric import MetricsFilter

    records = _records([20, 21, 22, 23]) + [_ok(50, b"junk")]
    p = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions())
    _ = p | beam.Create(records) | CaptionStage(_config("fake"), generator_factory=empty_factory)
    result = p.run()
    result.wait_until_finish()
    query = result.metrics().query(MetricsFilter().with_namespace("vecap_caption"))
    counters = {c.key.metric.name: c.committed for c in query["counters"]}
    odd = sum(record_width(r) % 2 for r in records[:4])
    assert counters["captioned"] == 4 - odd
    assert counters["failed_empty"] == odd
    assert counters["failed_decode"] == 1


def test_long_errors_are_truncated(tmp_path):
    out = run_stage(
        _records([20, 22]),
        CaptionStage(_config("fake"), generator_factory=long_error_factory),
        tmp_path,
    )
    assert all(r.status == Status.CAPTION_FAILED.value for r in out)
    assert all(0 < len(r.error) <= 1000 for r in out)


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P"])
def test_decode_image_gives_rgb(mode):
    import io

    buf = io.BytesIO()
    image = make_image(3).convert(mode)
    image.save(buf, format="JPEG" if mode in ("L", "CMYK") else "PNG")
    decoded = decode_image(buf.getvalue())
    assert decoded.mode == "RGB" and decoded.size == image.size
    with pytest.raises(ValueError, match="no image bytes"):
        decode_image(b"")
