"""Image transforms: the eval path against transformers' CLIP image processor, the train path's
crop geometry and determinism."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from clip_trainer.transforms import (
    CLIP_MEAN,
    CLIP_STD,
    EvalTransform,
    TrainTransform,
    decode_for_training,
    normalize,
    normalize_batch,
    to_rgb,
    to_uint8_chw,
)


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth, photo-like image (gradients + blobs): resampling filters differ most on noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.01, 0.05, 2).tolist() + [rng.uniform(0, 6)]
        channels.append(127 + 120 * np.sin(fx * x + fy * y + phase))
    return Image.fromarray(np.stack(channels, -1).clip(0, 255).astype(np.uint8))


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (224, 224), (640, 480), (100, 90)])
def test_eval_transform_matches_clip_image_processor(size: tuple[int, int]) -> None:
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image = _photo(*size)
    processor = CLIPImageProcessorPil(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
    )
    expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
    ours = EvalTransform(size=224)(image)
    assert ours.shape == expected.shape == (3, 224, 224)
    # Same geometry and filter; the processor resizes in float, we in uint8, so values differ by
    # rounding only: at most ~2/255 before normalisation (/std ~0.27 -> ~0.03).
    diff = (ours - expected).abs()
    assert float(diff.mean()) < 0.01
    assert float(diff.max()) < 0.06


def test_eval_transform_normalises_with_clip_mean_std() -> None:
    grey = Image.new("RGB", (50, 40), (128, 128, 128))
    out = EvalTransform(size=32)(grey)
    expected = (128 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(out[:, 10, 10], expected, atol=1e-5)


def test_train_transform_shape_and_determinism() -> None:
    image = _photo(320, 240)
    transform = TrainTransform(size=64)
    a = transform(image, np.random.default_rng(1))
    b = transform(image, np.random.default_rng(1))
    c = transform(image, np.random.default_rng(2))
    assert a.shape == (3, 64, 64) and a.dtype == torch.uint8  # normalised later, on the device
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_crop_box_respects_scale_and_bounds() -> None:
    transform = TrainTransform(size=32, scale=(0.5, 0.8), ratio=(0.75, 1.3333))
    rng = np.random.default_rng(0)
    for _ in range(500):
        left, top, right, bottom = transform.crop_box(400, 300, rng)
        assert 0 <= left < right <= 400 and 0 <= top < bottom <= 300
        share = (right - left) * (bottom - top) / (400 * 300)
        assert 0.49 <= share <= 0.81
    # An extreme aspect ratio cannot satisfy the ratio bounds: centre crop fallback.
    assert transform.crop_box(1000, 10, rng) == (493, 0, 506, 10)  # w = round(10 * 1.3333)


def test_normalize_batch_matches_per_image_normalisation() -> None:
    image = _photo(40, 40)
    batch = torch.stack([to_uint8_chw(image), to_uint8_chw(image)])
    expected = normalize(image, CLIP_MEAN, CLIP_STD)
    out = normalize_batch(batch)
    assert out.dtype == torch.float32 and torch.allclose(out[1], expected, atol=1e-6)
    grey = (128 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(
        normalize_batch(torch.full((3, 2, 2), 128, dtype=torch.uint8))[:, 0, 0], grey, atol=1e-6
    )


def test_flip_probability() -> None:
    # An image whose left half is black and right half white: a flip swaps the halves.
    array = np.zeros((32, 32, 3), np.uint8)
    array[:, 16:] = 255
    image = Image.fromarray(array)
    flips = 0
    always = TrainTransform(size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_prob=1.0)
    never = TrainTransform(size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_prob=0.0)
    for i in range(20):
        flipped = always(image, np.random.default_rng(i))
        kept = never(image, np.random.default_rng(i))
        flips += int(flipped[0, 0, 0] > kept[0, 0, 0])
    assert flips == 20


def test_rgba_and_grey_become_rgb() -> None:
    transparent = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    assert to_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("L", (8, 8), 7)).getpixel((0, 0)) == (7, 7, 7)


def test_decode_for_training_drafts_large_jpegs() -> None:
    buffer = io.BytesIO()
    _photo(1024, 768).save(buffer, format="JPEG")
    image = decode_for_training(buffer.getvalue(), size=64)
    assert image.size[0] < 1024 and min(image.size) >= 128  # reduced, yet >= 2x the crop


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        TrainTransform(scale=(0.0, 1.0))
    with pytest.raises(ValueError):
        EvalTransform(size=0)
    with pytest.raises(ValueError):
        EvalTransform(std=(1.0, 0.0, 1.0))
