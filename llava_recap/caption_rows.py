"""The captioner's work on a batch of rows, without Beam: decode, generate, clean, mark failures.

``llava_recap.handler`` wraps :func:`caption_records` in Beam's ``ModelHandler`` (and counts its
outcomes as Beam metrics); ``bench/gpu.py`` calls it directly where Beam is not installed. This
module must not import ``apache_beam``, directly or through another module.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from llava_recap.aspect import ImagePrep
from llava_recap.cleaning import clean_caption
from llava_recap.config import CaptionConfig
from pipeline.generation import Generator, render_chat
from pipeline.generation.precision import engine_label
from pipeline.generation.recovery import FailedBatchBreaker, generate_split
from schemas import Record, Status

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 1000  # CUDA and tokenizer errors can be pages long; the parquet keeps a summary

# what happened to one row; caption_records reports one per row through its ``count``
CAPTIONED = "captioned"
FAILED_DECODE = "failed_decode"
FAILED_GENERATION = "failed_generation"
FAILED_EMPTY = "failed_empty"
OUTCOMES = (CAPTIONED, FAILED_DECODE, FAILED_GENERATION, FAILED_EMPTY)


class Captioner:
    """A loaded generator plus its rendered prompt: what one worker keeps between batches.

    Beam's shared-model proxy forwards method calls only, so everything the handler needs from
    the model goes through :meth:`caption`.
    """

    def __init__(self, generator: Generator, config: CaptionConfig) -> None:
        self.generator = generator
        self.prompt = render_chat(
            generator.processor,
            config.prompt,
            image=True,
            system=config.system,
            fallback_template=config.fallback,
        )
        if not getattr(generator.processor, "chat_template", None):
            log.warning(
                "%s ships no chat template on its processor: caption prompts use the layout %r",
                config.generation.model,
                config.fallback,
            )
        # caption.image_aspect (pad for LLaVA-1.5 as its authors ran it), decided and applied
        # here, in the generator's process, before the processor of either backend
        self.prep = ImagePrep(
            config.image_aspect,
            generator.processor,
            config.generation.model,
            config.generation.trust_remote_code,
        )

    def caption(self, images: list[Any]) -> list[str]:
        """Raw completions, one per image, in order."""
        return self.generator.generate([self.prompt] * len(images), self.prep(images))


def decode_image(data: bytes | None) -> Image.Image:
    """RGB image from the record's re-encoded bytes; raises ValueError with the reason."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ValueError("no image bytes")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        # convert() copies even RGB -> RGB; most re-encoded JPEGs are RGB already
        return image if image.mode == "RGB" else image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc


def try_decode(data: bytes | None) -> Image.Image | ValueError:
    """:func:`decode_image`, or the ValueError saying why not."""
    try:
        return decode_image(data)
    except ValueError as exc:
        return exc


def decode_all(blobs: list[bytes | None], threads: int) -> list[Image.Image | ValueError]:
    """Decoded images, or the ValueError saying why not, in input order."""
    threads = min(threads, len(blobs))
    if threads <= 1:
        return [try_decode(b) for b in blobs]
    with ThreadPoolExecutor(threads, thread_name_prefix="vecap-decode") as pool:
        return list(pool.map(try_decode, blobs))


def failed_caption(record: Record, error: str) -> Record:
    """``caption_failed``; the image stays so a later run can retry without downloading."""
    return record.replace(status=Status.CAPTION_FAILED.value, error=error[:MAX_ERROR_CHARS])


def finish_caption(
    record: Record, raw: str | BaseException, config: CaptionConfig
) -> tuple[Record, str]:
    """One row's outcome from its raw completion, or the exception it failed with alone:
    ``(record, outcome)``, outcome one of ``captioned``, ``failed_generation``, ``failed_empty``."""
    if isinstance(raw, BaseException):
        return failed_caption(record, f"generation failed: {_describe(raw)}"), FAILED_GENERATION
    caption = clean_caption(raw, config.prompt)
    if not caption:
        error = f"empty caption after cleaning (raw output {raw[:200]!r})"
        return failed_caption(record, error), FAILED_EMPTY
    # a fused caption made from an earlier visual caption no longer describes this one, and an
    # ethics verdict on it does not cover this one (the check reads the visual caption)
    captioned = record.without_fusion().replace(
        ethics_flagged=None,
        ethics_reason=None,
        visual_caption=caption,
        caption_model=config.recorded_model,
        caption_prompt_id=config.prompt_id,
        caption_engine=engine_label(config.generation),
    )
    return captioned, CAPTIONED


def caption_records(
    batch: Sequence[tuple[str, Record]],
    captioner: Captioner,
    config: CaptionConfig,
    *,
    breaker: FailedBatchBreaker | None = None,
    count: Callable[[str], None] | None = None,
) -> list[Record]:
    """(uid, Record) pairs in, one captioned or ``caption_failed`` Record each out, in order.

    Images are decoded here from ``Record.jpg`` (``config.decode_threads``); a row whose bytes do
    not decode or whose caption cleans to nothing fails alone. A failed ``generate`` is retried
    in halves with ``config.isolate_failed_batches`` (``generate_split``), else it raises;
    ``breaker`` sees every batch's results. ``count(outcome)`` is called once per row.
    """
    out: list[Record | None] = [None] * len(batch)
    todo: list[tuple[int, Any]] = []
    for uid, record in batch:
        if uid != record.uid:
            raise ValueError(f"key {uid!r} does not match record uid {record.uid!r}")
    blobs = [record.jpg for _, record in batch]
    for i, decoded in enumerate(decode_all(blobs, config.decode_threads)):
        if isinstance(decoded, ValueError):
            if count is not None:
                count(FAILED_DECODE)
            out[i] = failed_caption(batch[i][1], str(decoded))
        else:
            todo.append((i, decoded))
    raws = _generate(captioner, [image for _, image in todo], config, breaker)
    for (i, _), raw in zip(todo, raws, strict=True):
        out[i], outcome = finish_caption(batch[i][1], raw, config)
        if count is not None:
            count(outcome)
    return [r for r in out if r is not None]


def _generate(
    captioner: Captioner,
    images: list[Any],
    config: CaptionConfig,
    breaker: FailedBatchBreaker | None,
) -> list[str | BaseException]:
    """Captions or, per image that failed alone, the error; see ``generate_split``."""
    if not images:
        return []
    results = generate_split(
        captioner.caption,
        images,
        isolate=config.isolate_failed_batches,
        what="caption batch",
        units=("captions", "images"),
    )
    if breaker is not None:
        breaker.record(results)
    return results


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


__all__ = [
    "MAX_ERROR_CHARS",
    "OUTCOMES",
    "Captioner",
    "caption_records",
    "decode_all",
    "decode_image",
    "failed_caption",
    "finish_caption",
    "try_decode",
]
