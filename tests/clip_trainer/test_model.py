"""Built-in CLIP configs, the tiny tokenizer, weight-decay groups, schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clip_trainer.model import (
    LOGIT_SCALE_INIT,
    MODEL_CONFIGS,
    ModelConfig,
    build_model,
    load_model,
    model_context_length,
    model_image_size,
    resolve_tokenizer,
)
from clip_trainer.optim import OptimConfig, build_optimizer, build_scheduler, param_groups
from clip_trainer.tokenizer import build_tiny_tokenizer, load_tokenizer


def test_tiny_tokenizer_is_deterministic_and_clip_shaped(tmp_path: Path, tiny_tokenizer) -> None:
    again = load_tokenizer(build_tiny_tokenizer(tmp_path / "again"))
    text = "a red circle next to a blue square"
    ids = tiny_tokenizer(text)["input_ids"]
    assert ids == again(text)["input_ids"]
    assert ids[0] == tiny_tokenizer.bos_token_id and ids[-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.eos_token_id != 2  # see build_tiny_tokenizer
    assert len(tiny_tokenizer("an unseen wörd ✓")["input_ids"]) > 2  # byte fallback, no UNK
    truncated = tiny_tokenizer([text * 10], truncation=True, max_length=8)["input_ids"][0]
    assert len(truncated) == 8 and truncated[-1] == tiny_tokenizer.eos_token_id


def test_tiny_model_roundtrip_and_eos_pooling(tmp_path: Path, tiny_tokenizer) -> None:
    config = ModelConfig(arch="tiny")
    torch.manual_seed(0)
    model = build_model(config, tiny_tokenizer).eval()
    assert model.config.text_config.eos_token_id == tiny_tokenizer.eos_token_id
    assert model.config.text_config.vocab_size == len(tiny_tokenizer)
    assert model_image_size(model) == 32 and model_context_length(model) == 32
    assert abs(float(model.logit_scale.detach()) - LOGIT_SCALE_INIT) < 1e-6
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists() and (
        tmp_path / "m" / "config.json"
    ).exists()
    loaded = load_model(tmp_path / "m").eval()
    tokens = tiny_tokenizer(
        ["a red circle", "a blue square on the left"], padding="longest", return_tensors="pt"
    )
    with torch.no_grad():
        a = model.get_text_features(**tokens).pooler_output
        b = loaded.get_text_features(**tokens).pooler_output
        # Padding after the EOS must not change a caption's embedding.
        alone = model.get_text_features(
            **tiny_tokenizer(["a red circle"], return_tensors="pt")
        ).pooler_output
    assert torch.allclose(a, b)
    assert torch.allclose(a[0], alone[0], atol=1e-5)


@pytest.mark.parametrize("arch", ["ViT-B-16", "ViT-L-14"])
def test_published_architectures(arch: str) -> None:
    spec = MODEL_CONFIGS[arch]
    assert spec["vision"]["image_size"] == 224 and spec["text"]["max_position_embeddings"] == 77
    assert spec["vision"]["patch_size"] == {"ViT-B-16": 16, "ViT-L-14": 14}[arch]


def test_tokenizer_resolution(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    assert len(resolve_tokenizer(ModelConfig(arch="tiny"), tmp_path)) == len(
        load_tokenizer(tiny_tokenizer_dir)
    )
    with pytest.raises(ValueError, match="no tokenizer"):
        resolve_tokenizer(ModelConfig(arch="ViT-B-16"), tmp_path)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        resolve_tokenizer(
            ModelConfig(arch="ViT-B-16", tokenizer="openai/clip-vit-base-patch16"), tmp_path
        )
    with pytest.raises(ValueError, match="unknown arch"):
        ModelConfig(arch="ViT-H-14")


def test_weight_decay_groups(tiny_tokenizer) -> None:
    model = build_model(ModelConfig(arch="tiny"), tiny_tokenizer)
    decay, no_decay = param_groups(model, 0.2)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    assert "logit_scale" in kept
    assert "text_model.embeddings.token_embedding.weight" in kept
    assert "text_model.embeddings.position_embedding.weight" in kept
    assert "vision_model.embeddings.class_embedding" in kept
    assert not any(n.endswith("bias") or "norm" in n for n in decayed)
    assert (
        "visual_projection.weight" in decayed
        and "vision_model.embeddings.patch_embedding.weight" in decayed
    )
    assert len(decayed) + len(kept) == len(names)


def test_cosine_schedule_with_warmup(tiny_tokenizer) -> None:
    model = build_model(ModelConfig(arch="tiny"), tiny_tokenizer)
    config = OptimConfig(lr=1e-3, warmup_steps=10)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, total_steps=110)
    lrs = []
    for _ in range(110):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0.0 and abs(lrs[5] - 5e-4) < 1e-9 and abs(lrs[10] - 1e-3) < 1e-9
    assert abs(lrs[60] - 5e-4) < 1e-9  # half way through the cosine
    assert lrs[-1] < 1e-6


def test_t5_tokenizer_like_veclip(tmp_path: Path) -> None:
    """VeCLIP's checkpoints use a T5 tokenizer: no BOS, EOS id 1 appended, pad id 0."""
    from transformers import T5Tokenizer

    words = ["a", "red", "circle", "blue", "square", "photo", "of", "the", "on", "left"]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [("\u2581" + w, -1.0 - i / 100) for i, w in enumerate(words)]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz\u2581"]
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(tmp_path / "t5")
    tokenizer = resolve_tokenizer(
        ModelConfig(arch="tiny", tokenizer=str(tmp_path / "t5"), tokenizer_kind="t5"), tmp_path
    )
    assert tokenizer("a red circle")["input_ids"][-1] == tokenizer.eos_token_id == 1
    model = build_model(ModelConfig(arch="tiny"), tokenizer).eval()
    assert model.config.text_config.eos_token_id == 1 and model.config.text_config.pad_token_id == 0
    with torch.no_grad():
        batch = model.get_text_features(
            **tokenizer(
                ["a red circle", "the blue square on the left"],
                padding="longest",
                return_tensors="pt",
            )
        )
        alone = model.get_text_features(**tokenizer(["a red circle"], return_tensors="pt"))
    assert torch.allclose(batch.pooler_output[0], alone.pooler_output[0], atol=1e-5)
