"""The GPU memory plan: model sizes from their configs, plans that fit and plans refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import build_pipeline_config
from pipeline.errors import ConfigError
from pipeline.generation.gpu_types import (
    accelerator_from_beam_args,
    gpu_spec,
    job_gpu,
    parse_nvidia_smi,
)
from pipeline.generation.memory_plan import default_max_model_len, plan_engines
from pipeline.generation.model_footprint import footprint
from pipeline.gpu_plan import plan_job_gpus

# the hub's config.json files of the default models, as published (llava's text_config names
# only what differs from Llama's defaults)
LLAVA_7B = {
    "architectures": ["LlavaForConditionalGeneration"],
    "model_type": "llava",
    "image_token_index": 32000,
    "projector_hidden_act": "gelu",
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    "text_config": {
        "architectures": ["LlamaForCausalLM"],
        "max_position_embeddings": 4096,
        "model_type": "llama",
        "rms_norm_eps": 1e-05,
        "torch_dtype": "float16",
        "vocab_size": 32064,
    },
    "vision_config": {
        "hidden_size": 1024,
        "image_size": 336,
        "intermediate_size": 4096,
        "model_type": "clip_vision_model",
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "patch_size": 14,
        "projection_dim": 768,
        "vocab_size": 32000,
    },
    "torch_dtype": "float16",
}
VICUNA_7B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
}


@pytest.fixture(scope="module")
def seven_b(tmp_path_factory) -> tuple[str, str]:
    """Directories holding only the config.json of llava-1.5-7b-hf and vicuna-7b-v1.5."""
    root = tmp_path_factory.mktemp("configs")
    out = []
    for name, config in (("llava-1.5-7b-hf", LLAVA_7B), ("vicuna-7b-v1.5", VICUNA_7B)):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(config))
        out.append(str(root / name))
    return out[0], out[1]


def _config(caption: str, fusion: str, backend: str = "vllm", **run):
    data = {
        "input": "in.csv",
        "output": "out",
        "caption": {"generation": {"model": caption, "backend": backend}},
        "fusion": {"generation": {"model": fusion, "backend": backend}},
        **run,
    }
    return build_pipeline_config(data)


def test_sizes_of_the_default_models_from_their_configs(seven_b):
    llava, vicuna = (footprint(p, json.loads(Path(p, "config.json").read_text())) for p in seven_b)
    assert llava.parameters == pytest.approx(7.06e9, rel=0.005)  # the model card's 7.06 B
    assert vicuna.parameters == pytest.approx(6.74e9, rel=0.005)
    assert llava.image_tokens == 576  # (336 / 14)^2
    assert llava.kv_bytes_per_token("bfloat16") == 2 * 32 * 32 * 128 * 2  # 0.5 MiB
    assert vicuna.image_tokens == 0 and not llava.exact


def test_parameters_are_counted_exactly_from_local_weights(tiny_models):
    import torch
    from transformers import AutoModelForImageTextToText

    config = json.loads(Path(tiny_models.llava, "config.json").read_text())
    fp = footprint(str(tiny_models.llava), config)
    model = AutoModelForImageTextToText.from_pretrained(tiny_models.llava, dtype=torch.float32)
    assert fp.exact and fp.parameters == sum(p.numel() for p in model.state_dict().values())


def test_readme_l4_recipe_with_both_models_is_refused_with_the_way_out(seven_b):
    config = _config(*seven_b, gpu_type="l4")
    with pytest.raises(ConfigError) as e:
        plan_job_gpus(config)
    line = str(e.value)
    assert "\n" not in line and "caption engine" in line and "10.1 GiB" in line
    assert "--stages download,caption" in line and "a larger GPU" in line


def test_an_80gb_gpu_takes_both_7b_models(seven_b):
    for gpu in ("a100-80gb", "h100-80gb", "h200"):
        config, plan = plan_job_gpus(_config(*seven_b, gpu_type=gpu))
        assert plan.fits, plan.lines()
        caption, fusion = plan.engines
        assert caption.sequences >= 50 and fusion.sequences >= 50
        assert config.caption.generation.max_model_len == 1024  # not the checkpoint's 4,096
        assert config.fusion.generation.max_model_len == 1024


def test_a100_40gb_with_both_models_starves_the_captioner(seven_b):
    _config_, plan = plan_job_gpus(_config(*seven_b, gpu_type="a100-40gb"), refuse=False)
    caption = plan.engines[0]
    assert 4 <= caption.sequences < 8  # the "about 7 concurrent captions"
    assert not plan.fits and "rows at once" in plan.refusal()
    # the user may accept it
    data = {
        "input": "in.csv",
        "output": "out",
        "caption": {"generation": {"model": seven_b[0], "backend": "vllm",
                                   "min_concurrent_sequences": 4}},
        "fusion": {"generation": {"model": seven_b[1], "backend": "vllm"}},
        "gpu_type": "a100-40gb",
    }  # fmt: skip
    accepted = build_pipeline_config(data)
    assert plan_job_gpus(accepted, refuse=False)[1].fits


def test_the_two_job_recipe_fits_an_l4(seven_b):
    llava, vicuna = seven_b
    caption_job = build_pipeline_config(
        {
            "input": "in.csv",
            "output": "vc",
            "stages": ["download", "caption"],
            "caption": {"generation": {"model": llava, "backend": "vllm"}},
            "gpu_type": "l4",
        }
    )
    _c, plan = plan_job_gpus(caption_job)
    assert plan.fits and plan.engines[0].share == 0.9 and plan.engines[0].sequences >= 8


def test_kv_cache_below_max_model_len_is_refused(seven_b):
    plan = plan_engines(
        [(["caption"], _gen(seven_b[0], max_model_len=12000, min_concurrent_sequences=0), True)],
        gpu_spec("l4"),
        "--gpu-type",
    )
    assert not plan.fits and "vLLM will not start" in plan.refusal()
    assert "smaller max_model_len" in plan.refusal()


def _gen(model: str, **kw):
    from pipeline.generation.config import GenerationConfig

    return GenerationConfig(model=model, backend="vllm", gpu_memory_utilization=0.9, **kw)


def test_pre_turing_gpus_are_refused_for_the_cuda_13_image(seven_b):
    _c, plan = plan_job_gpus(_config(*seven_b, gpu_type="v100"), refuse=False)
    assert "not supported" in plan.refusal() and "CUDA 13.0" in plan.refusal()


def test_transformers_models_of_one_process_share_one_gpu(seven_b):
    _c, plan = plan_job_gpus(_config(*seven_b, backend="transformers", gpu_type="t4"), refuse=False)
    assert not plan.fits and "transformers models of one worker process" in plan.refusal()
    assert [e.dtype for e in plan.engines] == ["float16", "float16"]  # T4: no native bf16
    assert plan_job_gpus(_config(*seven_b, backend="transformers", gpu_type="h100-80gb"))[1].fits


def test_engines_on_separate_gpus_each_get_the_whole_gpu(seven_b):
    data = {
        "input": "in.csv",
        "output": "out",
        "caption": {"generation": {"model": seven_b[0], "backend": "vllm", "gpus": "0"}},
        "fusion": {"generation": {"model": seven_b[1], "backend": "vllm", "gpus": "1"}},
        "gpu_type": "l4",
        "beam_args": ["--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:2"],
    }
    config, plan = plan_job_gpus(build_pipeline_config(data))
    assert plan.fits and [e.share for e in plan.engines] == [0.9, 0.9]
    assert plan.gpu.count == 2


def test_dataflow_accelerator_option_names_the_gpu(seven_b):
    args = [
        "--runner",
        "DataflowRunner",
        "--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver",
    ]
    assert accelerator_from_beam_args(args) == ("nvidia-l4", 1)
    # one SDK container per vCPU would start engines of its own on the same GPU
    with pytest.raises(ConfigError, match="no_use_multiple_sdk_containers"):
        plan_job_gpus(_config(*seven_b, beam_args=args))
    args.append("--experiments=no_use_multiple_sdk_containers")
    with pytest.raises(ConfigError, match="0.45 of l4's 22.5 GiB"):
        plan_job_gpus(_config(*seven_b, beam_args=args))


def test_vllm_settings_on_transformers_are_warned_about(seven_b, caplog):
    data = {
        "input": "in.csv",
        "output": "out",
        "stages": ["download", "caption"],
        "caption": {"generation": {"model": seven_b[0], "max_model_len": 2048}},
    }
    with caplog.at_level("WARNING"):
        plan_job_gpus(build_pipeline_config(data))
    assert "max_model_len is vLLM's; the transformers backend ignores it" in caplog.text


def test_unknown_gpu_is_not_refused_and_the_plan_says_how_to_name_it(seven_b):
    args = ["--runner", "DataflowRunner"]
    config, plan = plan_job_gpus(_config(*seven_b, beam_args=args))
    assert plan.fits and plan.gpu is None and "--gpu-type" in plan.lines()[0]
    assert config.caption.generation.dtype == "auto"  # each worker resolves its own


def test_gpu_type_must_be_known():
    with pytest.raises(ConfigError, match="unknown GPU type 'k80'"):
        build_pipeline_config({"input": "in.csv", "output": "o", "gpu_type": "k80"})


def test_nvidia_smi_and_local_detection(monkeypatch):
    spec = parse_nvidia_smi("NVIDIA H200, 143771, 9.0\nNVIDIA H200, 143771, 9.0\n")
    assert spec.count == 2 and spec.memory_gib == pytest.approx(140.4, abs=0.1)
    assert spec.compute_capability == (9, 0) and spec.native_bf16
    import pipeline.generation.gpu_types as gt

    monkeypatch.setattr(gt, "local_gpu", lambda: spec)
    assert job_gpu(None, [], local=True) == (spec, "nvidia-smi")
    assert job_gpu(None, [], local=False) == (None, "unknown")
    assert job_gpu("t4", [], local=True)[0].name == "t4"


def test_default_max_model_len_fits_vecap_prompts_and_the_checkpoint(seven_b):
    llava = footprint(seven_b[0], LLAVA_7B)
    gen = _gen(seven_b[0])
    assert default_max_model_len(llava, gen, True, 4096) == 1024  # 576 + 192 + 77 -> 1024
    assert default_max_model_len(llava, gen, True, 512) == 512  # never past the checkpoint


def test_plan_gpu_command_prints_the_plan_and_exits_2_when_refused(seven_b):
    base = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "plan-gpu",
        "--input",
        "in.csv",
        "--backend",
        "vllm",
    ]
    base += ["--caption-model", seven_b[0], "--fusion-model", seven_b[1]]
    refused = subprocess.run([*base, "--gpu-type", "l4"], capture_output=True, text=True)
    assert refused.returncode == 2 and "refused:" in refused.stdout, refused.stderr
    fits = subprocess.run([*base, "--gpu-type", "h100-80gb"], capture_output=True, text=True)
    assert fits.returncode == 0 and "fits" in fits.stdout and "KV cache" in fits.stdout


def test_vecap_run_refuses_the_plan_in_one_line_before_touching_the_output(seven_b, tmp_path):
    table = tmp_path / "in.csv"
    table.write_text("url,caption\nhttp://127.0.0.1:9/a.jpg,a cat\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--input", str(table), "--output", str(out)]
    cmd += ["--caption-model", seven_b[0], "--fusion-model", seven_b[1], "--backend", "vllm"]
    done = subprocess.run([*cmd, "--gpu-type", "l4"], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "GPU plan refused" in lines[0]
    assert not out.exists()
