"""How a non-square image becomes the captioner's input: ``caption.image_aspect``.

- ``pad``: LLaVA-1.5 as its authors ran it (and VeCLIP with it): pad to a square with the image
  processor's mean colour (``expand2square(image, tuple(int(x * 255) for x in
  image_processor.image_mean))`` in LLaVA's ``llava/mm_utils.py``), then the processor. The
  llava-hf checkpoints ship a ``CLIPImageProcessor``, which instead resizes the short side and
  centre-crops: the sides of a wide image never reach the model.
- ``crop``: centre-crop to a square here (what the CLIP processor does anyway for 1.5).
- ``native``: the image as stored; the processor decides (LLaVA-NeXT's anyres tiling).
- ``auto`` (default): ``pad`` for the LLaVA-1.5 family (``model_type`` ``llava``), ``native``
  for everything else (``llava_next`` anyres and other families).

The decision and the padding run in the generator's process (the captioner object lives there,
also behind Beam's shared-model proxy), before the processor, for both backends.
"""

from __future__ import annotations

import logging
from typing import Any

_LOG = logging.getLogger(__name__)

ASPECTS = ("auto", "pad", "crop", "native")
PAD_FAMILIES = ("llava",)  # model_type of the LLaVA-1.5 family (llava-hf/llava-1.5-*-hf)


def expand2square(image: Any, background: tuple[int, ...]) -> Any:
    """LLaVA's ``expand2square``: the image centred on a square of ``background``."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    result = Image.new(image.mode, (side, side), background)
    result.paste(image, ((side - width) // 2, (side - height) // 2))
    return result


def center_crop_square(image: Any) -> Any:
    width, height = image.size
    if width == height:
        return image
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def mean_color(image_processor: Any) -> tuple[int, int, int]:
    """The processor's ``image_mean`` as an RGB colour, as LLaVA computes its padding colour."""
    mean = getattr(image_processor, "image_mean", None)
    if mean is None or len(mean) != 3:
        raise ValueError(
            f"{type(image_processor).__name__} has no 3-channel image_mean to pad with; "
            "set caption.image_aspect to crop or native"
        )
    return tuple(int(x * 255) for x in mean)  # type: ignore[return-value]


def resolve_aspect(value: str, model_type: str | None) -> str:
    """``auto`` -> ``pad`` for the LLaVA-1.5 family, ``native`` otherwise; others as given."""
    if value not in ASPECTS:
        raise ValueError(f"image_aspect must be one of {ASPECTS}, got {value!r}")
    if value != "auto":
        return value
    return "pad" if model_type in PAD_FAMILIES else "native"


def model_type_of(processor: Any, model: str, trust_remote_code: bool = False) -> str | None:
    """The checkpoint's ``model_type`` (``llava``, ``llava_next``, ...) from its config, else
    guessed from the processor class (``LlavaProcessor`` -> llava)."""
    from pipeline.generation.templates import load_model_config

    config = load_model_config(model, trust_remote_code)
    model_type = getattr(config, "model_type", None)
    if model_type:
        return model_type
    by_class = {"LlavaProcessor": "llava", "LlavaNextProcessor": "llava_next"}
    return by_class.get(type(processor).__name__)


def grid_pinpoints(processor: Any) -> list[list[int]] | None:
    """LLaVA-NeXT's anyres resolutions (height, width), when the processor tiles."""
    image_processor = getattr(processor, "image_processor", processor)
    pinpoints = getattr(image_processor, "image_grid_pinpoints", None)
    return [list(p) for p in pinpoints] if pinpoints else None


class ImagePrep:
    """Applies the resolved aspect to each image; warns when anyres would only upscale.

    Built once per loaded captioner, in the generator's process.
    """

    def __init__(self, value: str, processor: Any, model: str, trust_remote_code: bool = False):
        self.model_type = model_type_of(processor, model, trust_remote_code)
        self.aspect = resolve_aspect(value, self.model_type)
        image_processor = getattr(processor, "image_processor", processor)
        self.background = mean_color(image_processor) if self.aspect == "pad" else None
        self.pinpoints = grid_pinpoints(processor)
        # anyres upsamples every image that fits inside its smallest grid resolution
        self.grid_min_side = min(max(p) for p in self.pinpoints) if self.pinpoints else None
        self.small_images = 0
        _LOG.info(
            "%s (model_type %s): image_aspect %s%s",
            model,
            self.model_type,
            self.aspect,
            f" -> {value}" if value != self.aspect else "",
        )

    def __call__(self, images: list[Any]) -> list[Any]:
        if self.aspect == "pad":
            images = [expand2square(im, self.background) for im in images]
        elif self.aspect == "crop":
            images = [center_crop_square(im) for im in images]
        if self.grid_min_side is not None:
            self._check_grid(images)
        return list(images)

    def _check_grid(self, images: list[Any]) -> None:
        small = [im.size for im in images if max(im.size) < self.grid_min_side]
        if not small:
            return
        if self.small_images == 0:
            width, height = small[0]
            _LOG.warning(
                "stored images are smaller than the anyres grid of %s (e.g. %dx%d; its smallest "
                "grid resolution has a %d px side, pinpoints %s): each image is upscaled into "
                "several tiles that cost 3-5x the image tokens of one tile and add no detail. "
                "Store larger images (download size >= %d px) or set caption.image_aspect to "
                "pad or crop",
                self.model_type,
                width,
                height,
                self.grid_min_side,
                self.pinpoints,
                self.grid_min_side,
            )
        self.small_images += len(small)


__all__ = [
    "ASPECTS",
    "ImagePrep",
    "center_crop_square",
    "expand2square",
    "grid_pinpoints",
    "mean_color",
    "model_type_of",
    "resolve_aspect",
]
