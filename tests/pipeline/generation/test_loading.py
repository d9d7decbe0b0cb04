"""Loading: weights straight to the device in the configured dtype; clear errors naming the model."""

from __future__ import annotations

import pytest

from pipeline.generation import GenerationConfig, load_generator
from pipeline.generation.config import ModelLoadError


def test_cuda_load_uses_a_device_map_and_the_configured_dtype(tiny_models, monkeypatch):
    """On CUDA the checkpoint must load onto the GPU directly (``device_map``), never as a full
    host-RAM copy moved afterwards: each SDK process on a GPU worker would hold one."""
    import torch
    from transformers import AutoModelForCausalLM

    seen = {}
    real = AutoModelForCausalLM.from_pretrained

    def recording(model, **kwargs):
        seen.update(kwargs)
        # load for real on the CPU (no GPU here); a later .to("cuda:0") would fail loudly
        return real(model, **{**kwargs, "device_map": {"": "cpu"}})

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", recording)
    config = GenerationConfig(model=str(tiny_models.llm), device="cuda:0", dtype="bfloat16")
    gen = load_generator(config, multimodal=False)
    assert seen["device_map"] == {"": "cuda:0"}
    assert seen["dtype"] == torch.bfloat16
    assert gen.model.dtype == torch.bfloat16


def test_cpu_load_keeps_weights_on_the_cpu_in_the_configured_dtype(tiny_models):
    import torch

    config = GenerationConfig(model=str(tiny_models.llm), device="cpu", dtype="bfloat16")
    gen = load_generator(config, multimodal=False)
    assert {p.device.type for p in gen.model.parameters()} == {"cpu"}
    assert {p.dtype for p in gen.model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("multimodal", [False, True])
def test_a_missing_checkpoint_is_one_error_line_naming_the_model(tmp_path, multimodal):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ModelLoadError) as info:
        load_generator(GenerationConfig(model=missing, device="cpu"), multimodal=multimodal)
    message = str(info.value)
    assert missing in message and "\n" not in message
    assert message.startswith(f"cannot load model {missing!r} (transformers backend)")


def test_a_broken_checkpoint_is_one_error_line_naming_the_model(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot load model .*broken") as info:
        load_generator(GenerationConfig(model=str(broken), device="cpu"), multimodal=False)
    assert "\n" not in str(info.value)


def test_an_unreachable_hub_id_is_one_error_line_naming_the_model(monkeypatch):
    import huggingface_hub.constants

    # offline, as the tripwire requires (nothing leaves loopback): the hub is "unreachable"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="cannot load model 'vecap-test/does-not-exist'"):
        load_generator(
            GenerationConfig(model="vecap-test/does-not-exist", device="cpu"), multimodal=False
        )
