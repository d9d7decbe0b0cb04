"""CLIP models as transformers' ``CLIPModel``: the format Apple released VeCLIP in
(``model.safetensors`` + ``config.json``), so our checkpoints and theirs load the same way."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clip_trainer.tokenizer import (
    TOKENIZER_KINDS,
    build_tiny_tokenizer,
    load_tokenizer,
    tokenizer_special_ids,
)

# Shapes of the published architectures (OpenAI CLIP / open_clip naming). VeCLIP trained ViT-B/16.
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "ViT-B-16": {
        "projection_dim": 512,
        "vision": dict(
            image_size=224,
            patch_size=16,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
        ),
        "text": dict(
            hidden_size=512,
            num_hidden_layers=12,
            num_attention_heads=8,
            intermediate_size=2048,
            max_position_embeddings=77,
        ),
    },
    "ViT-L-14": {
        "projection_dim": 768,
        "vision": dict(
            image_size=224,
            patch_size=14,
            hidden_size=1024,
            num_hidden_layers=24,
            num_attention_heads=16,
            intermediate_size=4096,
        ),
        "text": dict(
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=77,
        ),
    },
    # For tests and the benchmark: trains on CPU in seconds.
    "tiny": {
        "projection_dim": 64,
        "vision": dict(
            image_size=32,
            patch_size=8,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
        ),
        "text": dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=32,
        ),
    },
}

# CLIP initialises the temperature at 0.07 (logit scale ln(1/0.07)) and clamps it at 100.
LOGIT_SCALE_INIT = math.log(1 / 0.07)
LOGIT_SCALE_MAX = math.log(100.0)


@dataclass(frozen=True)
class ModelConfig:
    """Which CLIP to train and which tokenizer feeds it."""

    arch: str = "ViT-B-16"  # a key of MODEL_CONFIGS; ignored when init_from is set
    init_from: str | None = None  # a CLIPModel directory to continue from (ours or VeCLIP's)
    tokenizer: str | None = (
        None  # local tokenizer dir, "tiny", or None: init_from's, or tiny for arch tiny
    )
    tokenizer_kind: str = "auto"  # auto | clip | t5
    context_length: int | None = None  # default: the text model's max_position_embeddings
    image_size: int | None = None  # override the architecture's input resolution

    def __post_init__(self) -> None:
        if self.init_from is None and self.arch not in MODEL_CONFIGS:
            raise ValueError(f"unknown arch {self.arch!r}; built-in: {sorted(MODEL_CONFIGS)}")
        if self.tokenizer_kind not in TOKENIZER_KINDS:
            raise ValueError(f"tokenizer_kind must be one of {TOKENIZER_KINDS}")
        if self.context_length is not None and self.context_length < 2:
            raise ValueError("context_length must be >= 2 (BOS/EOS need room)")
        if self.image_size is not None and self.image_size < 1:
            raise ValueError("image_size must be >= 1")


def resolve_tokenizer(config: ModelConfig, work_dir: str | Path) -> Any:
    """Load the configured tokenizer; ``tiny`` is built into ``work_dir/tokenizer``."""
    source = config.tokenizer
    if source is None:
        if config.init_from is not None and _has_tokenizer(Path(config.init_from)):
            source = config.init_from
        elif config.init_from is None and config.arch == "tiny":
            source = "tiny"
        else:
            raise ValueError(
                "no tokenizer: pass a local tokenizer directory (CLIP BPE or T5, as VeCLIP used) "
                "with --tokenizer, or 'tiny' for the built-in test tokenizer"
            )
    if source == "tiny":
        source = str(build_tiny_tokenizer(Path(work_dir) / "tokenizer"))
    return load_tokenizer(source, config.tokenizer_kind)


def build_model(config: ModelConfig, tokenizer: Any) -> Any:
    """A fresh CLIPModel of ``config.arch`` sized for ``tokenizer``, or the ``init_from`` weights."""
    from transformers import CLIPConfig, CLIPModel

    ids = tokenizer_special_ids(tokenizer)
    if ids["eos_token_id"] == 2:
        raise ValueError(
            "the tokenizer's EOS id is 2, which transformers' CLIP treats as a legacy config "
            "(pooling at the largest token id); use a tokenizer whose EOS id is not 2"
        )
    if config.init_from is not None:
        model = CLIPModel.from_pretrained(config.init_from)
        if model.config.text_config.vocab_size < ids["vocab_size"]:
            raise ValueError(
                f"tokenizer has {ids['vocab_size']} tokens but {config.init_from} embeds only "
                f"{model.config.text_config.vocab_size}"
            )
        return model
    spec = MODEL_CONFIGS[config.arch]
    text = dict(spec["text"], **ids)
    if config.context_length is not None:
        text["max_position_embeddings"] = config.context_length
    vision = dict(spec["vision"])
    if config.image_size is not None:
        vision["image_size"] = config.image_size
    clip_config = CLIPConfig(
        text_config=text,
        vision_config=vision,
        projection_dim=spec["projection_dim"],
        logit_scale_init_value=LOGIT_SCALE_INIT,
    )
    return CLIPModel(clip_config)


def load_model(path: str | Path) -> Any:
    """Any HF ``CLIPModel`` directory (ours, VeCLIP's, OpenAI's converted)."""
    from transformers import CLIPModel

    if not Path(path).is_dir():
        raise FileNotFoundError(f"model directory {str(path)!r} not found")
    return CLIPModel.from_pretrained(str(path))


def model_image_size(model: Any) -> int:
    return int(model.config.vision_config.image_size)


def model_context_length(model: Any) -> int:
    return int(model.config.text_config.max_position_embeddings)


def preprocessing(
    model_dir: str | Path | None, default_size: int
) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(crop size, mean, std) from a model directory's ``preprocessor_config.json``, falling back
    to ``default_size`` and CLIP's constants (VeCLIP's and OpenAI's models use those)."""
    from clip_trainer.transforms import CLIP_MEAN, CLIP_STD

    size, mean, std = default_size, CLIP_MEAN, CLIP_STD
    path = None if model_dir is None else Path(model_dir) / "preprocessor_config.json"
    if path is not None and path.exists():
        data = json.loads(path.read_text())
        crop = data.get("crop_size", size)
        size = int(crop.get("height", size) if isinstance(crop, dict) else crop)
        mean = tuple(float(v) for v in data.get("image_mean", mean))
        std = tuple(float(v) for v in data.get("image_std", std))
    return size, mean, std


def save_preprocessor(
    model_dir: str | Path,
    size: int,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> None:
    """Write ``preprocessor_config.json`` so ``CLIPProcessor.from_pretrained(dir)`` preprocesses
    exactly as our eval transform does (shortest side, bicubic, centre crop, mean/std)."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from clip_trainer.transforms import CLIP_MEAN, CLIP_STD

    mean = CLIP_MEAN if mean is None else mean
    std = CLIP_STD if std is None else std

    CLIPImageProcessorPil(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(mean),
        image_std=list(std),
    ).save_pretrained(str(model_dir))


def _has_tokenizer(directory: Path) -> bool:
    return any(
        (directory / name).exists()
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "spiece.model")
    )


__all__ = [
    "LOGIT_SCALE_INIT",
    "LOGIT_SCALE_MAX",
    "MODEL_CONFIGS",
    "ModelConfig",
    "build_model",
    "load_model",
    "model_context_length",
    "model_image_size",
    "preprocessing",
    "resolve_tokenizer",
    "save_preprocessor",
]
