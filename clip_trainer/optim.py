"""AdamW with CLIP's weight-decay groups and a cosine schedule with linear warmup."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class OptimConfig:
    """Defaults follow open_clip's ViT-B/16 recipe (VeCLIP trained with its own, similar one)."""

    lr: float = 5e-4
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup_steps: int = 2000
    grad_clip_norm: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two values in [0, 1), got {self.betas}")
        if self.eps <= 0:
            raise ValueError("eps must be > 0")
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0")
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise ValueError("grad_clip_norm must be > 0 (or None to disable)")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices of linear/conv layers only: not biases, norms, embeddings or the logit scale.

    Decaying a LayerNorm gain or the temperature pulls them towards 0, which is never wanted;
    decaying embedding tables shrinks rare tokens' vectors just for being rare.
    """
    no_decay_ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, (nn.LayerNorm, nn.Embedding, nn.GroupNorm, nn.BatchNorm2d)):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # ndim < 2 covers biases, norm gains, CLIP's class embedding and the logit scale; the
        # patch "embedding" is a conv and is decayed like any other projection.
        if id(param) in no_decay_ids or param.ndim < 2 or "logit_scale" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(
        param_groups(model, config.weight_decay), lr=config.lr, betas=config.betas, eps=config.eps
    )


def build_scheduler(optimizer: torch.optim.Optimizer, config: OptimConfig, total_steps: int) -> Any:
    """Linear warmup then cosine decay to 0 over ``total_steps`` optimizer steps."""
    from transformers import get_cosine_schedule_with_warmup

    warmup = min(config.warmup_steps, max(total_steps - 1, 0))
    return get_cosine_schedule_with_warmup(optimizer, warmup, total_steps)


__all__ = ["OptimConfig", "build_optimizer", "build_scheduler", "param_groups"]
