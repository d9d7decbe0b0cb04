"""How much GPU memory a checkpoint needs, from its ``config.json`` alone (no weights loaded).

- **Parameters**: exact from the safetensors headers when the weights are on this machine
  (a header is a few KB at the front of each file), else from the config's dimensions with the
  usual formulas for a Llama-style decoder, a CLIP/SigLIP vision tower and LLaVA's projector
  (llava-1.5-7b: 7.06 B, vicuna-7b: 6.74 B, as their model cards say).
- **KV cache per token**: ``2 x layers x kv_heads x head_dim x dtype bytes`` (keys and values).
- **Image tokens**: what one image costs in the prompt, (image_size / patch_size)^2 for LLaVA-1.5.

The config comes from a local directory, the local hub cache, or (when the hub may be reached)
a download of ``config.json`` alone; :func:`model_config` returns None when none answers.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Any

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
_SAFETENSORS_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I8": 1, "U8": 1}


@dataclass(frozen=True)
class ModelFootprint:
    model: str
    parameters: int  # all of them: decoder, vision tower, projector
    layers: int
    kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    image_tokens: int  # per image; 0 for a text model
    vision_hidden_size: int
    vision_intermediate_size: int
    exact: bool  # parameters counted from the weights' headers, not estimated

    def weight_bytes(self, dtype: str) -> int:
        return self.parameters * DTYPE_BYTES[dtype]

    def kv_bytes_per_token(self, dtype: str) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * DTYPE_BYTES[dtype]


def model_config(model: str, download: bool = True) -> dict[str, Any] | None:
    """The checkpoint's config.json, from disk, the hub cache, or (``download``, and the hub
    not switched off) the hub: the config alone."""
    from pipeline.generation.model_cache import is_remote

    if is_remote(model):  # a checkpoint on an object store: its config alone, read in place
        import fsspec

        try:
            with fsspec.open(model.rstrip("/") + "/config.json", "r", encoding="utf-8") as f:
                data = json.load(f)
        except Exception:
            return None
        return data if isinstance(data, dict) else None
    local = os.path.expanduser(model)
    path: str | None = None
    if os.path.isdir(local):
        path = os.path.join(local, "config.json")
    elif "://" not in model:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "config.json")
            path = cached if isinstance(cached, str) else None
            if path is None:
                from pipeline.generation.availability import hub_offline

                if download and not hub_offline():
                    from huggingface_hub import hf_hub_download

                    path = hf_hub_download(model, "config.json")
        except Exception:  # no hub, no such repo: the plan says it cannot size this model
            path = None
    if path is None or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else None


def complete_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config with transformers' defaults filled in: hub configs leave out what equals the
    architecture's default (llava-1.5-7b-hf's text_config names only its vocab size)."""
    try:
        from transformers import CONFIG_MAPPING

        full = CONFIG_MAPPING[config["model_type"]](**config).to_dict()
    except Exception:  # an architecture this transformers does not know: take it as written
        return config
    return full


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    return config.get("text_config") or config.get("llm_config") or config


def _decoder_parameters(c: dict[str, Any]) -> int:
    h = int(c["hidden_size"])
    layers = int(c["num_hidden_layers"])
    heads = int(c["num_attention_heads"])
    kv_heads = int(c.get("num_key_value_heads") or heads)
    head_dim = int(c.get("head_dim") or h // heads)
    inter = int(c["intermediate_size"])
    vocab = int(c["vocab_size"])
    attention = h * heads * head_dim + 2 * h * kv_heads * head_dim + heads * head_dim * h
    if c.get("attention_bias") or c.get("qkv_bias"):
        attention += heads * head_dim + 2 * kv_heads * head_dim
    per_layer = attention + 3 * h * inter + 2 * h  # gate, up, down; two norms
    embeddings = vocab * h * (1 if c.get("tie_word_embeddings") else 2)
    return layers * per_layer + embeddings + h


def _vision_parameters(v: dict[str, Any]) -> int:
    h = int(v["hidden_size"])
    inter = int(v["intermediate_size"])
    layers = int(v["num_hidden_layers"])
    patch = int(v["patch_size"])
    image = int(v["image_size"])
    channels = int(v.get("num_channels", 3))
    positions = (image // patch) ** 2 + 1
    per_layer = 4 * (h * h + h) + 2 * h * inter + inter + h + 4 * h
    return layers * per_layer + channels * patch * patch * h + positions * h + 5 * h


def _image_tokens(config: dict[str, Any]) -> int:
    vision = config.get("vision_config")
    if not vision:
        return 0
    per_side = int(vision["image_size"]) // int(vision["patch_size"])
    tokens = per_side * per_side
    if config.get("vision_feature_select_strategy") == "full":
        tokens += 1
    pinpoints = config.get("image_grid_pinpoints")
    if pinpoints:  # LLaVA-NeXT: the base image plus its largest tiling
        tiles = max(a * b for a, b in pinpoints) // int(vision["image_size"]) ** 2
        tokens = tokens * (tiles + 1) + per_side * int(tiles**0.5)
    return tokens


def _safetensors_parameters(model: str) -> int | None:
    """Exact count from the headers of the local ``*.safetensors`` files, else None."""
    local = os.path.expanduser(model)
    if not os.path.isdir(local):
        return None
    files = sorted(f for f in os.listdir(local) if f.endswith(".safetensors"))
    if not files:
        return None
    total = 0
    for name in files:
        with open(os.path.join(local, name), "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            count = 1
            for dim in entry["shape"]:
                count *= int(dim)
            total += count
    return total


def footprint(model: str, config: dict[str, Any]) -> ModelFootprint:
    """The memory-relevant figures of ``model`` (see the module doc)."""
    config = complete_config(config)
    text = _text_config(config)
    vision = config.get("vision_config") or {}
    h = int(text["hidden_size"])
    heads = int(text["num_attention_heads"])
    counted = _safetensors_parameters(model)
    estimate = _decoder_parameters(text)
    if vision:
        estimate += _vision_parameters(vision)
        vh = int(vision["hidden_size"])
        estimate += vh * h + h + h * h + h  # LLaVA's two-layer MLP projector
    return ModelFootprint(
        model=model,
        parameters=counted if counted is not None else estimate,
        layers=int(text["num_hidden_layers"]),
        kv_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(text.get("head_dim") or h // heads),
        hidden_size=h,
        intermediate_size=int(text["intermediate_size"]),
        vocab_size=int(text["vocab_size"]),
        image_tokens=_image_tokens(config),
        vision_hidden_size=int(vision.get("hidden_size", 0)),
        vision_intermediate_size=int(vision.get("intermediate_size", 0)),
        exact=counted is not None,
    )


__all__ = ["DTYPE_BYTES", "ModelFootprint", "complete_config", "footprint", "model_config"]
