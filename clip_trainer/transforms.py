"""Image transforms for CLIP training and evaluation, on PIL + numpy + torch (no torchvision).

Train: random resized crop (torchvision's sampling algorithm) + optional horizontal flip.
Eval: resize the shortest side (bicubic) + centre crop, as OpenAI's CLIP preprocessing and
transformers' ``CLIPImageProcessor`` do. Both end with CLIP's mean/std normalisation.

The train transform stops at uint8 CHW tensors and the trainer normalises on the device
(:func:`normalize_batch`): float conversion was two thirds of a loader worker's time per
sample, and uint8 moves 4x fewer bytes to the GPU. The eval transform returns normalised floats.

Randomness comes from a ``numpy.random.Generator`` passed per call, so the data loader can
derive it from the sample's position and a resumed run draws the same crops.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

# OpenAI CLIP's normalisation constants (the same values transformers calls OPENAI_CLIP_MEAN/STD).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


def decode_image(data: bytes) -> Image.Image:
    """Decode image bytes to a loaded PIL image; raises on corrupt data (the caller counts it)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB, compositing transparency onto white (like a browser shows it) instead of black."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "P", "PA") and (
        image.mode != "P" or "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def to_uint8_chw(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 CHW tensor (contiguous)."""
    # np.array copies: PIL hands numpy a read-only buffer, which torch warns about.
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def normalize_batch(
    pixels: torch.Tensor, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD
) -> torch.Tensor:
    """uint8 [..., 3, H, W] (on any device) -> float32 scaled to [0, 1] then standardised."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=pixels.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=pixels.device).view(3, 1, 1)
    return pixels.float().div_(255.0).sub_(mean_t).div_(std_t)


def normalize(image: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 HWC RGB -> float32 CHW tensor, scaled to [0, 1] then standardised."""
    return normalize_batch(to_uint8_chw(image), mean, std)


@dataclass(frozen=True)
class EvalTransform:
    """Shortest side to ``size`` (bicubic), centre crop ``size`` x ``size``, normalise."""

    size: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        _check_mean_std(self.mean, self.std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = to_rgb(image)
        width, height = image.size
        # Same rounding as transformers' get_resize_output_image_size (int() truncation).
        if width <= height:
            new_w, new_h = self.size, int(self.size * height / width)
        else:
            new_w, new_h = int(self.size * width / height), self.size
        if (new_w, new_h) != (width, height):
            image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
        left = (new_w - self.size) // 2
        top = (new_h - self.size) // 2
        image = image.crop((left, top, left + self.size, top + self.size))
        return normalize(image, self.mean, self.std)


@dataclass(frozen=True)
class TrainTransform:
    """Random resized crop (scale/ratio as torchvision) + horizontal flip, then normalise.

    open_clip trains CLIP with ``scale=(0.9, 1.0)``: web captions describe the whole image, so
    aggressive crops would cut away what the caption names.
    """

    size: int = 224
    scale: tuple[float, float] = (0.9, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip_prob: float = 0.5
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {self.size}")
        if not (0 < self.scale[0] <= self.scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {self.scale}")
        if not (0 < self.ratio[0] <= self.ratio[1]):
            raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {self.ratio}")
        if not 0 <= self.hflip_prob <= 1:
            raise ValueError(f"hflip_prob must be in [0, 1], got {self.hflip_prob}")
        _check_mean_std(self.mean, self.std)

    def crop_box(
        self, width: int, height: int, rng: np.random.Generator
    ) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) by torchvision's RandomResizedCrop.get_params algorithm."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * rng.uniform(self.scale[0], self.scale[1])
            aspect = math.exp(rng.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(rng.integers(0, height - h + 1))
                left = int(rng.integers(0, width - w + 1))
                return left, top, left + w, top + h
        # Fallback: the largest centre crop whose aspect ratio is within bounds.
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            w, h = int(round(height * self.ratio[1])), height
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
        return left, top, left + w, top + h

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        """uint8 CHW tensor; normalise with :func:`normalize_batch` (on the device)."""
        image = to_rgb(image)
        box = self.crop_box(*image.size, rng)
        # Crop and resize in one resampling pass (PIL's box argument), cheaper than crop + resize.
        image = image.resize((self.size, self.size), Image.Resampling.BICUBIC, box=box)
        if rng.random() < self.hflip_prob:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_uint8_chw(image)


def decode_for_training(data: bytes, size: int) -> Image.Image:
    """Decode bytes, letting JPEG decode at a reduced scale when the image is far larger than needed.

    ``draft`` picks the smallest DCT scale that keeps both sides >= the request; asking for twice
    the crop size keeps enough detail for a crop of 90% area while cutting decode time for big
    photos several-fold.
    """
    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG":
        image.draft("RGB", (2 * size, 2 * size))
    image.load()
    return image


def _check_mean_std(mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    if len(mean) != 3 or len(std) != 3:
        raise ValueError("mean and std need three values (RGB)")
    if any(s <= 0 for s in std):
        raise ValueError(f"std values must be > 0, got {std}")


__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "EvalTransform",
    "TrainTransform",
    "decode_for_training",
    "decode_image",
    "normalize",
    "normalize_batch",
    "to_rgb",
    "to_uint8_chw",
]
