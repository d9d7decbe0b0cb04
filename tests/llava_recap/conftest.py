"""Images for the captioner tests: small, distinct, deterministic."""

from __future__ import annotations

import io

import pytest


def make_image(seed: int, size: tuple[int, int] = (64, 48)):
    """A noise image: distinct seeds give distinct images (and, usually, distinct captions)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def jpeg_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="session")
def images():
    # different sizes on purpose: the processor must bring them to one shape
    return [make_image(i, (48 + 8 * (i % 4), 40 + 6 * (i % 3))) for i in range(8)]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread for these tests, restored afterwards.

    The tiny models gain nothing from threads, and on a shared 2-core machine OpenMP's
    spin-waiting threads make them several times slower (measured in bench/caption.py).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
