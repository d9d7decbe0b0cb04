"""Failed batches: out-of-memory splits, freeing memory, engine-fatal errors, the breaker.

Fake generators stand in for a GPU: one raises an out-of-memory error for batches larger than
``k`` (a batch that does not fit), one a CUDA device-side assert (a poisoned CUDA context).
"""

from __future__ import annotations

import gc
import io
import math
import sys
import threading
import weakref

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llava_recap.config import CaptionConfig
from llava_recap.handler import CaptionModelHandler
from llava_recap.stage import CaptionStage
from llm_fusion.handler import TextLLMHandler
from pipeline.generation import GenerationConfig, recovery
from pipeline.generation.recovery import (
    CallGuard,
    EngineFatalError,
    FailedBatchBreaker,
    generate_split,
    is_engine_fatal,
    is_out_of_memory,
)
from schemas import Record, Status, make_uid
from tests.llava_recap.conftest import jpeg_bytes, make_image

OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.15 GiB total capacity)"
FATAL = "CUDA error: device-side assert triggered\nCompile with `TORCH_USE_CUDA_DSA`"


class _Proc:
    chat_template = None


class Activations:
    """Stands in for a failed call's tensors; tests watch it through a weak reference."""

    alive: list = []

    def __init__(self) -> None:
        Activations.alive.append(weakref.ref(self))


class OomOverK:
    """Out of memory for any batch larger than ``k``; otherwise one caption per image.

    Records every call's size, whether an exception was being handled when it was called
    (a retry inside an ``except`` block), and whether the last failed call's "tensors" were
    still alive then.
    """

    multimodal = True
    processor = _Proc()
    k = 5

    def __init__(self, config=None, multimodal=True) -> None:
        self.config = config
        self.sizes: list[int] = []
        self.in_except: list[bool] = []
        self.leaked: list[bool] = []

    def generate(self, prompts, images=None):
        self.sizes.append(len(prompts))
        self.in_except.append(sys.exc_info()[0] is not None)
        self.leaked.append(any(ref() is not None for ref in Activations.alive))
        if len(prompts) > self.k:
            activations = Activations()  # noqa: F841 - held by this frame, like real tensors
            raise RuntimeError(OOM)
        return [f"Caption number {i}." for i in range(len(prompts))]


class DeviceAssert(OomOverK):
    def generate(self, prompts, images=None):
        self.sizes.append(len(prompts))
        raise RuntimeError(FATAL)


class AlwaysFails(OomOverK):
    def generate(self, prompts, images=None):
        self.sizes.append(len(prompts))
        raise ValueError("tokenizer exploded")


def oom_factory(config, multimodal):
    return OomOverK(config, multimodal)


def fatal_factory(config, multimodal):
    return DeviceAssert(config, multimodal)


def _caption_config(batch_size: int = 64, **kwargs) -> CaptionConfig:
    gen = GenerationConfig(model="fake", device="cpu", batch_size=batch_size, **kwargs)
    return CaptionConfig(generation=gen, decode_threads=1)


def _rows(n: int) -> list[tuple[str, Record]]:
    rows = []
    for i in range(n):
        record = Record(
            uid=make_uid(0, i), shard_id=0, row_index=i, jpg=jpeg_bytes(make_image(i, (20, 16)))
        )
        rows.append((record.uid, record))
    return rows


@pytest.fixture(autouse=True)
def _fresh_activations():
    Activations.alive = []
    yield
    Activations.alive = []


def test_out_of_memory_batch_is_split_in_halves_with_log_n_extra_calls(monkeypatch):
    freed = []
    real_free = recovery.free_memory
    monkeypatch.setattr(recovery, "free_memory", lambda: freed.append(1) or real_free())
    n, k = 64, OomOverK.k
    handler = CaptionModelHandler(_caption_config(), oom_factory)
    model = handler.load_model()
    out = handler.run_inference(_rows(n), model)

    assert [r.status for r in out] == ["ok"] * n  # every row succeeds
    assert [r.uid for r in out] == [uid for uid, _ in _rows(n)]
    sizes = model.generator.sizes
    failed = [s for s in sizes if s > k]
    # halving 64 -> 32 -> 16 -> 8 -> 4: ceil(log2(n / k)) failed calls, then chunks that fit
    assert len(failed) <= math.ceil(math.log2(n / k)), sizes
    assert sum(s for s in sizes if s <= k) == n  # each row generated once
    assert len(sizes) <= len(failed) + math.ceil(n / (k // 2 + 1)), sizes  # not row by row
    # every retry ran outside the except block, after the failed call's tensors were freed
    assert not any(model.generator.in_except), sizes
    assert not any(model.generator.leaked), "a retry ran while the failed batch was alive"
    assert len(freed) == len(failed)


def test_text_handler_splits_an_out_of_memory_batch_too():
    from tests.llm_fusion.test_fusion_stage import rec

    class Oom(OomOverK):
        multimodal = False
        processor = None

        def chat(self, user_texts, **_):
            return self.generate(user_texts)

    gen = Oom()
    handler = TextLLMHandler(
        GenerationConfig(model="fake-llm", batch_size=40),
        lambda r: r.alt_text or "",
        generator_loader=lambda cfg: gen,
    )
    rows = [rec(i, f"row {i}") for i in range(40)]
    results = handler.run_inference(rows, handler.load_model())
    assert [r.example for r in results] == rows
    assert all(isinstance(r.inference, str) for r in results)
    assert len([s for s in gen.sizes if s > Oom.k]) <= math.ceil(math.log2(40 / Oom.k))
    assert not any(gen.in_except)


def test_a_poison_row_is_found_by_halving_and_fails_alone():
    calls = []

    def call(items):
        calls.append(list(items))
        if 13 in items:
            raise ValueError("poison")
        return [f"ok {i}" for i in items]

    items = list(range(32))
    items[13] = 13
    out = generate_split(call, items)
    assert isinstance(out[13], ValueError)
    assert out[:13] + out[14:] == [f"ok {i}" for i in items if i != 13]
    assert len(calls) <= 2 * math.ceil(math.log2(32)) + 1  # a binary search, not 32 calls


def test_engine_fatal_error_raises_instead_of_failing_rows():
    handler = CaptionModelHandler(_caption_config(batch_size=8), fatal_factory)
    model = handler.load_model()
    with pytest.raises(EngineFatalError, match="device-side assert"):
        handler.run_inference(_rows(8), model)
    assert model.generator.sizes == [8]  # not retried on a poisoned CUDA context


def test_fatal_error_fails_the_run_and_no_shard_commits(tmp_path):
    """Through the real pipeline and writer: a shard of caption_failed rows must not commit."""
    from pipeline.config import build_pipeline_config
    from pipeline.io.writer import finished_shards
    from pipeline.run import run_pipeline

    photos = [jpeg_bytes(make_image(i, (32, 24))) for i in range(6)]
    table = pa.table(
        {
            "url": [f"http://127.0.0.1:9/{i}.jpg" for i in range(6)],
            "caption": [f"photo {i}" for i in range(6)],
            "key": [f"{i:09d}" for i in range(6)],
            "status": ["success"] * 6,
            "error_message": [None] * 6,
            "width": [32] * 6,
            "height": [24] * 6,
            "jpg": photos,
        }
    )
    src = tmp_path / "i2d" / "00000.parquet"
    src.parent.mkdir()
    pq.write_table(table, src)
    out = str(tmp_path / "out")
    cfg = build_pipeline_config(
        {
            "input": str(src),
            "output": out,
            "stages": ["caption"],
            "progress": False,
            "reader": {"shard_size": 6, "input_format": "img2dataset"},
            "caption": {"generation": {"model": "fake", "batch_size": 4}},
        }
    )
    stage = CaptionStage(cfg.caption, generator_factory=fatal_factory)
    with pytest.raises(Exception, match="EngineFatalError|device-side assert"):
        run_pipeline(cfg, stream=io.StringIO(), stage_overrides={"caption": stage})
    assert finished_shards(out) == {}


def test_breaker_gives_the_bundle_back_after_k_batches_without_one_success():
    handler = CaptionModelHandler(
        _caption_config(batch_size=2, max_failed_batches=3),
        lambda config, multimodal: AlwaysFails(config, multimodal),
    )
    model = handler.load_model()
    rows = _rows(8)
    for start in (0, 2):  # two failed batches: rows fail, the bundle goes on
        out = handler.run_inference(rows[start : start + 2], model)
        assert {r.status for r in out} == {Status.CAPTION_FAILED.value}
    with pytest.raises(EngineFatalError, match="3 consecutive batches"):
        handler.run_inference(rows[4:6], model)


def test_breaker_resets_on_any_success_and_can_be_off():
    breaker = FailedBatchBreaker(2, "x")
    err = ValueError("bad")
    for _ in range(5):
        breaker.record([err, err])
        breaker.record([err, "fine"])  # one success resets the count
    off = FailedBatchBreaker(0, "x")
    for _ in range(10):
        off.record([err])


def test_call_guard_refuses_calls_after_an_engine_fatal_error():
    guard = CallGuard("tiny")
    calls = []

    def boom():
        calls.append(1)
        raise RuntimeError(FATAL)

    with pytest.raises(RuntimeError, match="device-side assert"):
        guard.call(boom)
    with pytest.raises(EngineFatalError, match="model tiny is unusable"):
        guard.call(boom)
    assert calls == [1]
    # an out-of-memory error is not fatal: the next call runs
    guard2 = CallGuard("tiny")
    with pytest.raises(RuntimeError):
        guard2.call(lambda: (_ for _ in ()).throw(RuntimeError(OOM)))
    assert guard2.call(lambda: "fine") == "fine"
    assert isinstance(guard2.lock, type(threading.Lock()))


@pytest.mark.parametrize(
    ("message", "oom", "fatal"),
    [
        (OOM, True, False),
        ("CUDA error: out of memory", True, False),
        (FATAL, False, True),
        ("CUDA error: an illegal memory access was encountered", False, True),
        (
            "EngineCore encountered an issue. See stack trace (above) for the root cause.",
            False,
            True,
        ),
        ("prompt is longer than the maximum model length", False, False),
    ],
)
def test_error_classification(message, oom, fatal):
    exc = RuntimeError(message)
    assert is_out_of_memory(exc) is oom
    assert is_engine_fatal(exc) is fatal


def test_a_dead_vllm_engine_is_fatal_by_type():
    class EngineDeadError(Exception):
        pass

    assert is_engine_fatal(EngineDeadError("anything"))
    wrapped = RuntimeError("generate failed")
    wrapped.__cause__ = EngineDeadError("x")
    assert is_engine_fatal(wrapped)
    gc.collect()
