"""CLIP's symmetric contrastive loss, with features gathered across processes.

Every process computes the full (global batch x global batch) logits, with gradients flowing
through its own features only; DDP then averages the gradients, which gives exactly the gradient
of the global-batch loss (open_clip's default, ``gather_with_grad=False, local_loss=False``).
A "local" loss over only this process's rows would silently drop every term in which a local
sample is another process's negative.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def gather_features(features: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's features in rank order; this rank's slice keeps its gradient."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features
    gathered = [torch.empty_like(features) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, features.contiguous())
    gathered[dist.get_rank()] = features  # all_gather's copies carry no gradient
    return torch.cat(gathered, dim=0)


def clip_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Mean of the image->text and text->image cross-entropies over the global batch.

    ``image_embeds`` / ``text_embeds``: this process's L2-normalised features (same batch size
    on every process); ``logit_scale``: the exponentiated, already clamped scale.
    """
    image = gather_features(image_embeds.float())
    text = gather_features(text_embeds.float())
    logits = logit_scale.float() * image @ text.t()
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


__all__ = ["clip_loss", "gather_features"]
