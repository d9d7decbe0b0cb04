"""The tiny offline models: deterministic, complete, in the llava-hf key layout."""

from __future__ import annotations

import json

import pytest

from llava_recap.tiny_models import IMAGE_TOKEN, build_tiny_models


def test_layout_is_llava_hf(tiny_models):
    from safetensors import safe_open

    with safe_open(str(tiny_models.llava / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    vision = [k for k in keys if "vision_tower" in k]
    assert vision and all(k.startswith("vision_tower.vision_model.") for k in vision)
    assert any(k.startswith("language_model.model.layers.") for k in keys)
    assert "language_model.lm_head.weight" in keys
    assert any(k.startswith("multi_modal_projector.") for k in keys)
    assert not any(k.startswith("model.") for k in keys)


def test_transformers_loads_every_weight(tiny_models):
    """No key silently left at random init by the layout rewrite."""
    from transformers import LlavaForConditionalGeneration

    _, info = LlavaForConditionalGeneration.from_pretrained(
        tiny_models.llava, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert not info["mismatched_keys"]


def test_processor_and_config(tiny_models):
    from transformers import AutoConfig, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_models.llava)
    config = AutoConfig.from_pretrained(tiny_models.llava)
    assert processor.image_token == IMAGE_TOKEN
    assert processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) == config.image_token_id
    assert processor.patch_size == config.vision_config.patch_size
    head_dim = config.text_config.hidden_size // config.text_config.num_attention_heads
    assert head_dim >= 32  # vLLM's CPU attention
    data = json.loads((tiny_models.llava / "processor_config.json").read_text())
    assert data["image_processor"]["image_processor_type"] == "CLIPImageProcessor"


def test_build_is_deterministic_and_reused(tmp_path, tiny_models):
    import hashlib

    other = build_tiny_models(tmp_path)
    for a, b in ((tiny_models.llava, other.llava), (tiny_models.llm, other.llm)):
        for name in ("model.safetensors", "tokenizer.json"):
            digest = [hashlib.sha256((d / name).read_bytes()).hexdigest() for d in (a, b)]
            assert digest[0] == digest[1], f"{name} differs between two builds"
    stamp = (other.llm / "model.safetensors").stat().st_mtime_ns
    build_tiny_models(tmp_path)  # already there: reused, not rebuilt
    assert (other.llm / "model.safetensors").stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("*.partial"))
    # built by another recipe version: rebuilt, not reused
    (other.llm / "vecap-tiny-models-version.txt").write_text("0\n")
    build_tiny_models(tmp_path)
    assert (other.llm / "model.safetensors").stat().st_mtime_ns != stamp
    assert (other.llm / "vecap-tiny-models-version.txt").read_text().strip() != "0"


@pytest.mark.parametrize("which", ["llava", "llm"])
def test_tokenizer_round_trips_and_adds_bos(tiny_models, which):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(getattr(tiny_models, which))
    text = "A dog running along the beach."
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text
