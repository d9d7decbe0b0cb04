"""Caption config validation and prompt rendering golden texts."""

from __future__ import annotations

import pytest

from llava_recap.config import CaptionConfig
from llava_recap.prompts import FALLBACK_TEMPLATES, PROMPTS, fallback_template_for, get_prompt
from pipeline.generation import GenerationConfig, render_chat

GEN = GenerationConfig(model="llava-hf/llava-1.5-7b-hf")


class NoTemplate:
    chat_template = None


def test_default_is_veclip_prompt():
    cfg = CaptionConfig(generation=GEN)
    assert cfg.prompt_id == "veclip-concise-v1"
    assert cfg.prompt == "Describe the image concisely, less than 20 words."
    assert cfg.generation.max_new_tokens == 77 and not cfg.generation.do_sample
    assert cfg.recorded_model == "llava-hf/llava-1.5-7b-hf"


def test_prompt_ids_are_unique_and_versioned():
    assert len({p.text for p in PROMPTS.values()}) == len(PROMPTS)
    assert all(pid.rsplit("-", 1)[-1].startswith("v") for pid in PROMPTS)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"prompt_id": "nope"}, "unknown caption prompt id"),
        ({"prompt_id": "veclip-concise-v1", "prompt_text": "Other words."}, "already names"),
        ({"prompt_id": "mine-v1", "prompt_text": "  "}, "blank"),
        ({"prompt_id": ""}, "empty"),
        ({"fallback_template": "USER: <image> ASSISTANT:"}, "{user}"),
        ({"decode_threads": 0}, "decode_threads"),
    ],
)
def test_config_rejects(kwargs, error):
    with pytest.raises(ValueError, match=error):
        CaptionConfig(generation=GEN, **kwargs)


def test_custom_prompt_with_new_id():
    cfg = CaptionConfig(generation=GEN, prompt_id="mine-v1", prompt_text="Caption it.")
    assert cfg.prompt == "Caption it."
    with pytest.raises(TypeError):
        CaptionConfig(generation={"model": "x"})


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("llava-hf/llava-1.5-7b-hf", "USER: <image>\nDescribe it. ASSISTANT:"),
        ("llava-hf/llava-v1.6-mistral-7b-hf", "[INST] <image>\nDescribe it. [/INST]"),
        (
            "llava-hf/llava-v1.6-vicuna-13b-hf",
            "A chat between a curious human and an artificial intelligence assistant. The "
            "assistant gives helpful, detailed, and polite answers to the human's questions. "
            "USER: <image>\nDescribe it. ASSISTANT:",
        ),
        (
            "llava-hf/llava-v1.6-34b-hf",
            "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\n"
            "Describe it.<|im_end|><|im_start|>assistant\n",
        ),
        ("/models/some-local-dir", "USER: <image>\nDescribe it. ASSISTANT:"),
    ],
)
def test_fallback_golden_texts(model, expected):
    text = render_chat(
        NoTemplate(), "Describe it.", image=True, fallback_template=fallback_template_for(model)
    )
    assert text == expected


def test_tiny_llava_uses_its_chat_template(tiny_models):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_models.llava)
    cfg = CaptionConfig(generation=GenerationConfig(model=str(tiny_models.llava)))
    text = render_chat(processor, cfg.prompt, image=True, fallback_template=cfg.fallback)
    assert text == "USER: <image>\nDescribe the image concisely, less than 20 words. ASSISTANT:"


def test_get_prompt_and_templates_have_image_placeholder():
    assert get_prompt("detailed-v1").text == "Describe this image in detail."
    assert all("<image>" in t and "{user}" in t for t in FALLBACK_TEMPLATES.values())
