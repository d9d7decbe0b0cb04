"""Tiny random-weight LLaVA and Llama models, built offline and deterministically.

Tests, the demo and the benchmarks need real model directories that load with
``from_pretrained`` exactly like hub checkpoints, without network access. This module trains a
small BPE tokenizer on a built-in corpus with ``tokenizers``, wraps it as a transformers fast
tokenizer with a chat template, and saves:

- ``tiny-llava``: a ``LlavaForConditionalGeneration`` (tiny CLIP vision tower + tiny Llama) with
  its ``LlavaProcessor`` (PIL-backed CLIP image processor, ``<image>`` token, llava-1.5 chat
  template), in the llava-hf key layout that both transformers and vLLM load;
- ``tiny-llama``: a ``LlamaForCausalLM`` with the same tokenizer and a Llama-2 chat template,
  the fusion model.

Head dims are 32 (vLLM's CPU attention needs at least 32). Everything is seeded; building both
takes a few seconds on a CPU.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

TINY_LLAVA_DIR = "tiny-llava"
TINY_LLAMA_DIR = "tiny-llama"
SEED = 1234
# Bump when the recipe changes: directories built by another version are rebuilt, not reused.
TINY_MODELS_VERSION = "1"
VERSION_FILE = "vecap-tiny-models-version.txt"
IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN)
VOCAB_SIZE = 1024
IMAGE_SIZE = 56  # 4x4 patches of 14 px: 16 image tokens per image keeps prompts short
PATCH_SIZE = 14

# llava-hf/llava-1.5-*-hf's template, so prompts render as "USER: <image>\n... ASSISTANT:".
LLAVA_15_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# Llama-2-chat's layout (BOS comes from the tokenizer's post-processor, not the template).
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] %}{% set messages = messages[1:] %}"
    "{% else %}{% set system = none %}{% endif %}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set text = message['content'] %}"
    "{% else %}{% set text = message['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join(' ') %}{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{% if loop.first and system %}{{ '[INST] <<SYS>>\n' + system + '\n<</SYS>>\n\n' + text + ' [/INST]' }}"
    "{% else %}{{ '[INST] ' + text + ' [/INST]' }}{% endif %}"
    "{% else %}{{ ' ' + text + ' </s>' }}{% endif %}"
    "{% endfor %}"
)

# A few hundred short caption-like sentences plus the prompts, so BPE learns whole words and a
# random model still emits readable words.
_SUBJECTS = (
    "a dog",
    "a cat",
    "two people",
    "a child",
    "a red car",
    "an old man",
    "a woman",
    "a bird",
    "a horse",
    "a group of friends",
    "a small boat",
    "a bicycle",
    "a chef",
    "a mountain",
    "a city street",
    "a bowl of fruit",
    "a wooden table",
    "a train",
)
_ACTIONS = (
    "sitting on",
    "running along",
    "standing near",
    "walking across",
    "lying on",
    "playing with",
    "looking at",
    "parked beside",
    "floating on",
    "flying over",
)
_PLACES = (
    "the beach",
    "a green field",
    "the snow",
    "a busy road",
    "the kitchen",
    "a river",
    "the park",
    "a sunny garden",
    "the old bridge",
    "a quiet lake",
    "the market",
    "the forest",
)
_EXTRA = (
    "Describe the image concisely, less than 20 words.",
    "Describe this image in one sentence.",
    "What is in the photo?",
    "Write a short caption for the image.",
    "Rewrite the following image caption using the visual description.",
    "Combine the alt text and the visual caption into one concise caption.",
    "You are a helpful assistant that writes image captions.",
    "The photo shows a close up view with bright colors and soft light.",
    "A black and white picture of people at an event, in the evening.",
)


def tiny_corpus() -> list[str]:
    """The built-in training corpus: deterministic, a few hundred sentences."""
    lines = [
        f"{s.capitalize()} {a} {p}."
        for i, s in enumerate(_SUBJECTS)
        for j, a in enumerate(_ACTIONS)
        for k, p in enumerate(_PLACES)
        if (i + 2 * j + 3 * k) % 5 == 0
    ]
    return lines + list(_EXTRA) * 3


@dataclass(frozen=True)
class TinyModels:
    """Paths of the two tiny model directories."""

    llava: Path
    llm: Path


def _build_tokenizer():  # -> transformers.PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    # sentencepiece-style (Metaspace) BPE like Llama's: decodes back to the exact text
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    tok.train_from_iterator(tiny_corpus(), trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=[IMAGE_TOKEN],
        padding_side="left",  # decoder-only batched generation
        model_max_length=512,
    )


def _llama_config(tokenizer, **overrides):
    from transformers import LlamaConfig

    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,  # head dim 32: vLLM's CPU attention needs >= 32
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def _shape_lm_head(lm_head_weight, tokenizer) -> None:
    """Keep random greedy output readable: never pick <unk>/<pad>/<image>/<s>, end rarely.

    With every special token's logit row zeroed, some random word logit is positive and wins,
    so captions are words rather than control tokens; EOS stays reachable but unlikely.
    """
    import torch

    with torch.no_grad():
        for token in ("<unk>", "<pad>", IMAGE_TOKEN, "<s>", "</s>"):
            lm_head_weight[tokenizer.convert_tokens_to_ids(token)] = 0.0


def _save_generation_config(model, tokenizer) -> None:
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=77,
    )


def _build_llama(out: Path, tokenizer) -> None:
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(SEED)
    model = LlamaForCausalLM(_llama_config(tokenizer)).eval()
    _shape_lm_head(model.lm_head.weight, tokenizer)
    _save_generation_config(model, tokenizer)
    model.save_pretrained(out)
    tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE
    tokenizer.save_pretrained(out)


def _build_llava(out: Path, tokenizer) -> None:
    import torch
    from transformers import (
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=64,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=_llama_config(tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",  # drop CLS: (56/14)^2 = 16 image tokens
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
        tie_word_embeddings=False,
    )
    torch.manual_seed(SEED + 1)
    model = LlavaForConditionalGeneration(config).eval()
    _shape_lm_head(model.lm_head.weight, tokenizer)
    _save_generation_config(model, tokenizer)
    model.save_pretrained(out)
    _to_llava_hf_layout(out)

    # PIL backend: torchvision must not be needed (see README)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        chat_template=LLAVA_15_CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
    )
    processor.save_pretrained(out)
    _canonical_image_processor_type(out)


def _to_llava_hf_layout(out: Path) -> None:
    """Rewrite the weights with llava-hf's key names (``vision_tower.vision_model.*``, ...).

    transformers 5 saves ``model.vision_tower.*``/``model.language_model.*``; vLLM's LLaVA loader
    expects the llava-hf layout of the hub checkpoints (``vision_tower.vision_model.*``,
    ``language_model.model.*``, ``language_model.lm_head.*``, ``multi_modal_projector.*``).
    transformers' checkpoint conversion maps that layout back on load, so both read one file.
    """
    from safetensors.torch import load_file, save_file

    path = out / "model.safetensors"
    tensors = load_file(str(path))
    renamed = {_llava_hf_key(k): v.contiguous() for k, v in tensors.items()}
    if len(renamed) != len(tensors):
        raise RuntimeError("key rename collided; refusing to write a lossy checkpoint")
    save_file(renamed, str(path), metadata={"format": "pt"})


def _llava_hf_key(key: str) -> str:
    rules = (
        ("model.language_model.", "language_model.model."),
        ("lm_head.", "language_model.lm_head."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
        ("model.vision_tower.vision_model.", "vision_tower.vision_model."),
        ("model.vision_tower.", "vision_tower.vision_model."),
        ("vision_tower.", "vision_tower.vision_model."),
    )
    if key.startswith("vision_tower.vision_model."):
        return key
    for old, new in rules:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def _canonical_image_processor_type(out: Path) -> None:
    """Name the class family ("CLIPImageProcessor"); AutoProcessor picks the PIL backend itself.

    A config naming ``CLIPImageProcessorPil`` would not load in vLLM's older transformers.
    """
    for name in ("preprocessor_config.json", "processor_config.json"):
        path = out / name
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        target = data.get("image_processor", data)
        if "image_processor_type" in target:
            target["image_processor_type"] = "CLIPImageProcessor"
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _is_current(path: Path) -> bool:
    marker = path / VERSION_FILE
    return marker.exists() and marker.read_text().strip() == TINY_MODELS_VERSION


def build_tiny_models(out_dir: str | Path, *, overwrite: bool = False) -> TinyModels:
    """Build ``out_dir/tiny-llava`` and ``out_dir/tiny-llama``; reuse them when already built
    by this recipe version (:data:`TINY_MODELS_VERSION`).

    A directory is written under a temporary name and renamed when complete, so an interrupted
    build never leaves a half model that later loads.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = TinyModels(llava=out / TINY_LLAVA_DIR, llm=out / TINY_LLAMA_DIR)
    for path, build in ((paths.llava, _build_llava), (paths.llm, _build_llama)):
        if not overwrite and _is_current(path):
            continue
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        build(tmp, _build_tokenizer())
        (tmp / VERSION_FILE).write_text(TINY_MODELS_VERSION + "\n")
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
    return paths


__all__ = ["TinyModels", "build_tiny_models", "tiny_corpus"]
