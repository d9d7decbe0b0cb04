"""``caption.image_aspect``: what the image processor receives.

LLaVA-1.5 as its authors (and VeCLIP) ran it pads a non-square image to a square with the image
processor's mean colour before the processor; the llava-hf checkpoints' CLIPImageProcessor would
otherwise crop the sides away. These tests intercept the images the processor is handed.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest

from llava_recap.aspect import expand2square, resolve_aspect
from llava_recap.config import CaptionConfig
from llava_recap.handler import Captioner, CaptionModelHandler
from pipeline.generation import GenerationConfig, load_generator
from schemas import Record, make_uid
from tests.llava_recap.conftest import jpeg_bytes

CLIP_MEAN_RGB = (122, 116, 104)  # int(x * 255) of OpenAI CLIP's image_mean, as LLaVA pads
RED = (200, 30, 30)


class RecordingProcessor:
    """Delegates to the real processor; keeps every image list it is called with."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.seen: list = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, *args, images=None, **kwargs):
        self.seen.append([im.copy() for im in images] if images is not None else None)
        return self.inner(*args, images=images, **kwargs)


class RecordingFactory:
    """The real transformers generator with a recording processor."""

    def __init__(self) -> None:
        self.processor: RecordingProcessor | None = None

    def __call__(self, config: GenerationConfig, multimodal: bool):
        generator = load_generator(config, multimodal)
        self.processor = RecordingProcessor(generator._processor)
        generator._processor = self.processor
        return generator


def _config(model, **kwargs) -> CaptionConfig:
    gen = GenerationConfig(model=str(model), max_new_tokens=4, batch_size=4, device="cpu")
    return CaptionConfig(generation=gen, decode_threads=1, **kwargs)


def _record(i: int, image) -> Record:
    return Record(uid=make_uid(3, i), shard_id=3, row_index=i, jpg=jpeg_bytes(image))


def _solid(size, color=RED):
    from PIL import Image

    return Image.new("RGB", size, color)


def _close(pixels: np.ndarray, color) -> bool:
    return bool(np.abs(pixels.astype(int) - np.array(color)).max() <= 12)  # JPEG noise


@pytest.mark.slow
def test_wide_image_reaches_the_processor_as_a_mean_colour_square(tiny_models) -> None:
    factory = RecordingFactory()
    handler = CaptionModelHandler(_config(tiny_models.llava), generator_factory=factory)
    model = handler.load_model()
    assert model.prep.model_type == "llava" and model.prep.aspect == "pad"
    wide, tall = _solid((96, 32)), _solid((30, 90))
    out = handler.run_inference([(r.uid, r) for r in (_record(0, wide), _record(1, tall))], model)
    assert [r.status for r in out] == ["ok", "ok"]
    (received,) = factory.processor.seen
    assert [im.size for im in received] == [(96, 96), (90, 90)]
    a = np.asarray(received[0])
    # LLaVA's expand2square: the image centred, mean-colour bands above and below
    assert (a[:32] == CLIP_MEAN_RGB).all() and (a[64:] == CLIP_MEAN_RGB).all()
    assert _close(a[32:64], RED)
    b = np.asarray(received[1])
    assert (b[:, :30] == CLIP_MEAN_RGB).all() and (b[:, 60:] == CLIP_MEAN_RGB).all()
    assert _close(b[:, 30:60], RED)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("aspect", "size"), [("native", (96, 32)), ("crop", (32, 32))], ids=["native", "crop"]
)
def test_crop_and_native(tiny_models, aspect, size) -> None:
    factory = RecordingFactory()
    captioner = Captioner(
        factory(_config(tiny_models.llava).generation, True),
        _config(tiny_models.llava, image_aspect=aspect),
    )
    captioner.caption([_solid((96, 32))])
    (received,) = factory.processor.seen
    assert received[0].size == size
    assert _close(np.asarray(received[0]), RED)  # no padding colour anywhere


def test_expand2square_matches_llava() -> None:
    """LLaVA's llava/mm_utils.py expand2square, for odd margins too."""
    image = _solid((7, 4), (1, 2, 3))
    square = expand2square(image, CLIP_MEAN_RGB)
    a = np.asarray(square)
    assert square.size == (7, 7)
    assert (a[:1] == CLIP_MEAN_RGB).all() and (a[1:5] == (1, 2, 3)).all()
    assert (a[5:] == CLIP_MEAN_RGB).all()  # (7 - 4) // 2 = 1 above, 2 below
    same = _solid((5, 5))
    assert expand2square(same, CLIP_MEAN_RGB) is same


def test_auto_by_family() -> None:
    assert resolve_aspect("auto", "llava") == "pad"
    assert resolve_aspect("auto", "llava_next") == "native"
    assert resolve_aspect("auto", None) == "native"
    assert resolve_aspect("crop", "llava") == "crop"
    with pytest.raises(ValueError, match="image_aspect"):
        CaptionConfig(generation=GenerationConfig(model="m"), image_aspect="stretch")


def _tiny_next_dir(tmp_path, tiny_models):
    """A LLaVA-NeXT checkpoint's config and processor (anyres grid of 56-px tiles)."""
    from transformers import (
        AutoTokenizer,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextProcessor,
    )
    from transformers.models.llava_next.image_processing_pil_llava_next import (
        LlavaNextImageProcessorPil,
    )

    out = tmp_path / "tiny-llava-next"
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.llava)
    grid = [[56, 112], [112, 56], [112, 112]]
    LlavaNextConfig(
        vision_config=CLIPVisionConfig(
            image_size=56, patch_size=14, hidden_size=64, num_attention_heads=2
        ),
        text_config=LlamaConfig(hidden_size=64, num_attention_heads=2, vocab_size=len(tokenizer)),
        image_grid_pinpoints=grid,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    ).save_pretrained(out)
    LlavaNextProcessor(
        image_processor=LlavaNextImageProcessorPil(
            size={"shortest_edge": 56},
            crop_size={"height": 56, "width": 56},
            image_grid_pinpoints=grid,
        ),
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        image_token="<image>",
    ).save_pretrained(out)
    return out


class _ImagesSeen:
    """A generator stand-in around a real processor: keeps what ``generate`` is handed."""

    multimodal = True

    def __init__(self, model_dir) -> None:
        from transformers import AutoProcessor

        self.config = GenerationConfig(model=str(model_dir))
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.seen: list = []

    def generate(self, prompts, images=None):
        self.seen.append(images)
        return ["a caption"] * len(prompts)


def test_llava_next_stays_native_and_warns_below_its_grid(tiny_models, tmp_path, caplog) -> None:
    model_dir = _tiny_next_dir(tmp_path, tiny_models)
    generator = _ImagesSeen(model_dir)
    captioner = Captioner(generator, _config(model_dir))
    assert captioner.prep.model_type == "llava_next" and captioner.prep.aspect == "native"
    with caplog.at_level(logging.WARNING, logger="llava_recap.aspect"):
        captioner.caption([_solid((200, 120))])  # as large as the grid: no warning
        assert not caplog.records
        captioner.caption([_solid((96, 32)), _solid((64, 48))])  # inside the smallest grid cell
    assert [im.size for im in generator.seen[-1]] == [(96, 32), (64, 48)]  # untouched
    (warning,) = [r for r in caplog.records if "anyres grid" in r.getMessage()]
    assert "112 px side" in warning.getMessage() and "96x32" in warning.getMessage()
    assert captioner.prep.small_images == 2
    captioner.caption([_solid((50, 50))])
    assert len([r for r in caplog.records if "anyres grid" in r.getMessage()]) == 1  # once
    assert captioner.prep.small_images == 3


def test_manifest_records_the_aspect(tiny_models, tmp_path) -> None:
    from pipeline.manifest import prompt_record

    def record(caption):
        return prompt_record(SimpleNamespace(caption=caption, fusion=None, ethics=None))

    assert record(_config(tiny_models.llava))["caption"]["image_aspect"] == "auto"
    assert record(_config(tiny_models.llava))["caption"]["image_aspect_resolved"] == "pad"
    next_dir = _tiny_next_dir(tmp_path, tiny_models)
    assert record(_config(next_dir))["caption"]["image_aspect_resolved"] == "native"
    crop = record(_config(tiny_models.llava, image_aspect="crop"))["caption"]
    assert (crop["image_aspect"], crop["image_aspect_resolved"]) == ("crop", "crop")
    remote = record(_config("llava-hf/llava-1.5-7b-hf"))["caption"]
    assert remote["image_aspect_resolved"] is None  # not on this machine: the workers decide
