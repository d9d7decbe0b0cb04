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
