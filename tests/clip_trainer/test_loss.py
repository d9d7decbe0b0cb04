"""The contrastive loss: equals transformers' CLIP loss on one process. That gathering across
processes gives the same gradients as one process holding the whole batch is checked inside
test_train's two-process DDP test, with the helpers below."""

from __future__ import annotations

import torch

from clip_trainer.loss import clip_loss


def _features(seed: int, n: int = 8, d: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    return image, text


def test_matches_transformers_clip_loss() -> None:
    from transformers.models.clip.modeling_clip import image_text_contrastive_loss as hf_clip_loss

    image, text = _features(0)
    scale = torch.tensor(14.3)
    expected = hf_clip_loss(scale * text @ image.t())
    assert torch.allclose(clip_loss(image, text, scale), expected, atol=1e-6)


def test_perfect_alignment_has_low_loss() -> None:
    image, _ = _features(1)
    identity_like = image @ image.t()
    assert identity_like.diag().min() > identity_like.fill_diagonal_(-1).max()
    assert float(clip_loss(image, image, torch.tensor(100.0))) < float(
        clip_loss(*_features(1), torch.tensor(100.0))
    )


def local_loss_and_grads(rank: int, world: int) -> tuple[float, list]:
    """Run in each process of an initialised process group (see test_train's DDP test, which
    checks the result against :func:`expected_local_grads`, sparing a second set of processes)."""
    image, text = _features(2)
    per_rank = image.shape[0] // world
    local = slice(rank * per_rank, (rank + 1) * per_rank)
    image_local = image[local].clone().requires_grad_(True)
    text_local = text[local].clone().requires_grad_(True)
    loss = clip_loss(image_local, text_local, torch.tensor(10.0))
    loss.backward()
    # DDP averages gradients over ranks: do the same by hand. Plain lists: tensors in a queue
    # travel as shared memory that dies with the sending process.
    grads = torch.cat([image_local.grad, text_local.grad]) / world
    return float(loss.detach()), grads.tolist()


def expected_local_grads(rank: int, world: int) -> tuple[float, torch.Tensor]:
    """The global-batch loss on one process, and the share of its gradient that DDP should leave
    on ``rank``: each rank's gradient reaches only its own features, divided by the world size."""
    image, text = _features(2)
    image = image.clone().requires_grad_(True)
    text = text.clone().requires_grad_(True)
    full = clip_loss(image, text, torch.tensor(10.0))
    full.backward()
    per_rank = image.shape[0] // world
    local = slice(rank * per_rank, (rank + 1) * per_rank)
    return float(full.detach()), torch.cat([image.grad[local], text.grad[local]]) / world
