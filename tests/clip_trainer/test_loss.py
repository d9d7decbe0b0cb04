"""The contrastive loss: equals transformers' CLIP loss on one process, and gathering across
processes gives the same gradients as one process holding the whole batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        image, text = _features(2)
        local = slice(rank * 4, rank * 4 + 4)
        image_local = image[local].clone().requires_grad_(True)
        text_local = text[local].clone().requires_grad_(True)
        loss = clip_loss(image_local, text_local, torch.tensor(10.0))
        loss.backward()
        # DDP averages gradients over ranks: do the same by hand.
        grads = torch.cat([image_local.grad, text_local.grad])
        # Plain lists: tensors in a queue travel as shared memory that dies with this process.
        queue.put((rank, float(loss.detach()), (grads / world).tolist()))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_gathered_loss_gives_the_global_batch_gradient() -> None:
    image, text = _features(2)
    image = image.clone().requires_grad_(True)
    text = text.clone().requires_grad_(True)
    full = clip_loss(image, text, torch.tensor(10.0))
    full.backward()
    ctx = mp.get_context("spawn")  # fork deadlocks on the parent's autograd threads
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict((r, (loss, grads)) for r, loss, grads in (queue.get(timeout=90) for _ in procs))
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    for rank in range(2):
        loss, grads = results[rank]
        assert abs(loss - float(full.detach())) < 1e-5  # every rank sees the global-batch loss
        local = slice(rank * 4, rank * 4 + 4)
        # Each rank's gradient reaches only its own features, and DDP divides by the world size.
        expected = torch.cat([image.grad[local], text.grad[local]]) / 2
        assert torch.allclose(torch.tensor(grads), expected, atol=1e-6)
