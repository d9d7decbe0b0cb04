"""``dtype: auto`` resolved one way on every backend; the resolved engine is part of the key
that says a row is already captioned or fused."""

from __future__ import annotations

import pytest

import pipeline.generation.precision as precision
from llava_recap.caption_rows import finish_caption
from llava_recap.config import CaptionConfig
from llava_recap.prompts import DEFAULT_PROMPT_ID
from llava_recap.stage import _Router
from llm_fusion.config import FusionConfig
from llm_fusion.fusion_rules import FusionRules
from pipeline.generation.config import GenerationConfig
from pipeline.generation.engine_server import server_command
from pipeline.generation.precision import engine_label, resolved_dtype, with_resolved_dtype
from schemas import Record


@pytest.fixture
def gpus(monkeypatch):
    """Set the compute capabilities nvidia-smi would report (no CUDA is asked)."""

    def use(*capabilities):
        monkeypatch.setattr(precision, "_gpu_capabilities", lambda: list(capabilities))
        precision._worker_dtype.cache_clear()

    yield use
    precision._worker_dtype.cache_clear()


@pytest.mark.parametrize(
    "capabilities, expected",
    [([(7, 5)], "float16"), ([(7, 0)], "float16"), ([(8, 0)], "bfloat16"), ([(9, 0)], "bfloat16"),
     ([(9, 0), (7, 5)], "float16"), ([], "float32")],
)  # fmt: skip
def test_auto_is_bf16_only_with_native_bf16(gpus, capabilities, expected):
    gpus(*capabilities)
    for backend in ("vllm", "transformers"):
        assert resolved_dtype(GenerationConfig(model="m", backend=backend)) == expected


def test_explicit_dtype_cpu_device_and_openai(gpus):
    gpus((9, 0))
    assert resolved_dtype(GenerationConfig(model="m", dtype="float16")) == "float16"
    assert resolved_dtype(GenerationConfig(model="m", device="cpu")) == "float32"
    openai = GenerationConfig(model="m", backend="openai", base_url="http://127.0.0.1:1/v1")
    assert resolved_dtype(openai) == "auto"  # the user's server decides
    assert engine_label(GenerationConfig(model="m", backend="vllm")) == "vllm/bfloat16"


def test_cuda_n_asks_that_gpu(gpus):
    gpus((9, 0), (7, 5))
    assert resolved_dtype(GenerationConfig(model="m", device="cuda:1")) == "float16"
    assert resolved_dtype(GenerationConfig(model="m", device="cuda:0")) == "bfloat16"


def test_vllm_servers_get_the_resolved_dtype_not_vllms_own_auto(gpus):
    gpus((7, 5))
    config = with_resolved_dtype(GenerationConfig(model="m", backend="vllm"))
    args = server_command(config, 8000, multimodal=True)
    assert args[args.index("--dtype") + 1] == "float16"


def _captioned(engine: str | None) -> Record:
    return Record(
        uid="0-0",
        shard_id=0,
        row_index=0,
        jpg=b"x",
        visual_caption="a cat",
        caption_model="m",
        caption_prompt_id=DEFAULT_PROMPT_ID,
        caption_engine=engine,
    )


def test_a_row_captioned_on_another_engine_is_captioned_again(gpus):
    gpus((9, 0))
    router = _Router(CaptionConfig(generation=GenerationConfig(model="m", backend="vllm")))
    assert router(_captioned("vllm/bfloat16"), 2) == 1  # done: pass through
    assert router(_captioned("vllm/float16"), 2) == 0  # another precision: redo
    assert router(_captioned("transformers/bfloat16"), 2) == 0  # another backend: redo
    assert router(_captioned(None), 2) == 1  # written before engines were recorded


def test_captioning_records_the_engine_and_drops_a_stale_fused_caption(gpus):
    """A fused caption (and an ethics verdict) made from the old visual caption must not
    survive a new one."""
    gpus((8, 0))
    config = CaptionConfig(generation=GenerationConfig(model="m", backend="vllm"))
    old = _captioned("vllm/float16").replace(
        fused_caption="a cat on a mat", fusion_model="f", fusion_prompt_id="p",
        fusion_engine="vllm/float16", fusion_source="llm", ethics_flagged=False,
        ethics_reason=None,
    )  # fmt: skip
    new, outcome = finish_caption(old, "a dog on a sofa", config)
    assert new.ethics_flagged is None  # the check must read the new caption
    assert outcome == "captioned" and new.visual_caption == "a dog on a sofa"
    assert new.caption_engine == "vllm/bfloat16"
    assert new.fused_caption is None and new.fusion_source is None and new.fusion_model is None


def test_a_row_fused_on_another_engine_is_fused_again(gpus):
    gpus((9, 0))
    rules = FusionRules.from_config(
        FusionConfig(generation=GenerationConfig(model="f", backend="vllm"))
    )
    fused = _captioned("vllm/bfloat16").replace(
        fused_caption="x", fusion_model="f", fusion_prompt_id=rules.prompt.prompt_id,
        fusion_source="llm",
    )  # fmt: skip
    assert rules.already_fused(fused.replace(fusion_engine="vllm/bfloat16"))
    assert rules.already_fused(fused.replace(fusion_engine=None))  # before engines were recorded
    assert not rules.already_fused(fused.replace(fusion_engine="vllm/float16"))
    assert not rules.already_fused(fused.replace(fusion_model="other"))
    # chosen by the rules alone (no LLM asked): stands whatever the engine
    assert rules.already_fused(fused.replace(fusion_model=None, fusion_source="visual"))
