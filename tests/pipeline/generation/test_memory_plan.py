"""The GPU memory plan: ethics reuses the fusion engine; vLLM shares of one worker fit its GPU."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, build_pipeline_config
from pipeline.generation import GenerationConfig

LLAVA, VICUNA = "llava-hf/llava-1.5-7b-hf", "lmsys/vicuna-7b-v1.5"


def _build(stages, caption=None, fusion=None, ethics=None):
    data = {"input": "in.parquet", "output": "out", "stages": stages}
    for key, gen in (("caption", caption), ("fusion", fusion), ("ethics", ethics)):
        if gen is not None:
            data[key] = {"generation": gen}
    return build_pipeline_config(data)


def test_vllm_engines_of_one_worker_split_the_gpu_by_default():
    cfg = _build(
        ["download", "caption", "ethics", "fuse"],
        caption={"model": LLAVA, "backend": "vllm"},
        fusion={"model": VICUNA, "backend": "vllm"},
    )
    # ethics asks the fusion model: one engine, counted once -> two engines, 0.45 each
    assert cfg.caption.generation.gpu_memory_utilization == 0.45
    assert cfg.fusion.generation.gpu_memory_utilization == 0.45
    assert cfg.ethics.generation.gpu_memory_utilization == 0.45
    assert cfg.ethics.generation.engine_key() == cfg.fusion.generation.engine_key()


def test_one_engine_alone_gets_the_usual_share():
    cfg = _build(["download", "caption"], caption={"model": LLAVA, "backend": "vllm"})
    assert cfg.caption.generation.gpu_memory_utilization == 0.9
    # transformers engines reserve nothing: left alone
    cfg = _build(["download", "caption", "fuse"], caption={"model": LLAVA})
    assert cfg.caption.generation.gpu_memory_utilization is None


def test_explicit_shares_past_0_95_are_a_config_error_that_names_the_two_job_form():
    with pytest.raises(ConfigError, match=r"adds up to 1\.80.*> 0\.95.*--stages fuse"):
        _build(
            ["download", "caption", "fuse"],
            caption={"model": LLAVA, "backend": "vllm", "gpu_memory_utilization": 0.9},
            fusion={"model": VICUNA, "backend": "vllm", "gpu_memory_utilization": 0.9},
        )
    ok = _build(
        ["download", "caption", "fuse"],
        caption={"model": LLAVA, "backend": "vllm", "gpu_memory_utilization": 0.55},
        fusion={"model": VICUNA, "backend": "vllm", "gpu_memory_utilization": 0.4},
    )
    assert ok.fusion.generation.gpu_memory_utilization == 0.4


def test_an_explicit_share_leaves_the_rest_to_the_others():
    cfg = _build(
        ["download", "caption", "fuse"],
        caption={"model": LLAVA, "backend": "vllm", "gpu_memory_utilization": 0.6},
        fusion={"model": VICUNA, "backend": "vllm"},
    )
    assert cfg.fusion.generation.gpu_memory_utilization == pytest.approx(0.3)


def test_an_ethics_model_of_its_own_is_a_third_engine():
    with pytest.raises(ConfigError, match="adds up to"):
        _build(
            ["download", "caption", "ethics", "fuse"],
            caption={"model": LLAVA, "backend": "vllm", "gpu_memory_utilization": 0.5},
            fusion={"model": VICUNA, "backend": "vllm", "gpu_memory_utilization": 0.3},
            ethics={"model": "Qwen/Qwen2.5-7B-Instruct", "gpu_memory_utilization": 0.3},
        )


def test_fusion_and_ethics_share_one_beam_model_tag_when_shared_across_processes():
    from llm_fusion.config import EthicsConfig, FusionConfig
    from llm_fusion.ethics import EthicsCheckStage
    from llm_fusion.stage import FusionStage

    gen = GenerationConfig(model=VICUNA, backend="vllm")
    fusion = FusionStage(FusionConfig(generation=gen, share_model_across_processes=True))
    ethics = EthicsCheckStage(
        EthicsConfig(enabled=True, generation=gen, share_model_across_processes=True)
    )
    assert fusion.handler.shared_model_tag() == ethics.handler.shared_model_tag() is not None
    other = GenerationConfig(model=VICUNA, backend="vllm", max_new_tokens=5)
    assert other.shared_model_tag(False) != gen.shared_model_tag(False)  # not interchangeable


def test_ethics_and_fuse_load_the_model_once(tiny_models, tmp_path, monkeypatch):
    """Both stages in one pipeline, the real transformers backend: one load, not two."""
    import apache_beam as beam

    from llm_fusion.config import EthicsConfig, FusionConfig
    from llm_fusion.ethics import EthicsCheckStage
    from llm_fusion.stage import FusionStage
    from pipeline.generation import transformers_backend
    from tests.llm_fusion.fakes import run_transform
    from tests.llm_fusion.test_fusion_stage import rec

    loads = []
    real_init = transformers_backend.TransformersGenerator.__init__

    def counting_init(self, config, *, multimodal):
        loads.append(config.model)
        real_init(self, config, multimodal=multimodal)

    monkeypatch.setattr(transformers_backend.TransformersGenerator, "__init__", counting_init)
    gen = GenerationConfig(model=str(tiny_models.llm), device="cpu", max_new_tokens=6)
    ethics_gen = GenerationConfig(model=str(tiny_models.llm), device="cpu", max_new_tokens=3)
    rows = [rec(i, f"a dog near the old bridge {i}") for i in range(4)]

    class Both(beam.PTransform):
        def expand(self, pcoll):
            return (
                pcoll
                | "Ethics" >> EthicsCheckStage(EthicsConfig(enabled=True, generation=ethics_gen))
                | "Fuse" >> FusionStage(FusionConfig(generation=gen))
            )

    out = run_transform(Both(), rows, tmp_path)
    assert len(out) == len(rows)
    assert all(r.ethics_flagged is not None or r.ethics_reason for r in out)
    assert loads == [str(tiny_models.llm)], f"{len(loads)} loads"
