"""The captioner's Beam ``ModelHandler``: (uid, Record) in, captioned (or failed) Record out."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler

from llava_recap.aspect import ImagePrep
from llava_recap.cleaning import clean_caption
from llava_recap.config import CaptionConfig
from pipeline.generation import GenerationConfig, Generator, load_generator, render_chat
from pipeline.generation.recovery import FailedBatchBreaker, generate_split
from schemas import Record, Status

log = logging.getLogger(__name__)

KeyedRecord = tuple[str, Record]
MAX_ERROR_CHARS = 1000  # CUDA and tokenizer errors can be pages long; the parquet keeps a summary
METRICS_NAMESPACE = "vecap_caption"
GeneratorFactory = Callable[[GenerationConfig, bool], Generator]


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


def decode_image(data: bytes | None):  # -> PIL.Image.Image
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


class CaptionModelHandler(ModelHandler[KeyedRecord, Record, Captioner]):
    """Keyed by uid; images are decoded here, on the worker, from ``Record.jpg``.

    Row-level problems (bytes that do not decode, an empty caption) become ``caption_failed``
    rows. An exception from the model fails the batch: with ``isolate_failed_batches`` it is
    retried in halves after freeing memory (``pipeline.generation.recovery.generate_split``),
    otherwise it reaches RunInference's dead letters. Engine-fatal errors (a CUDA error, a dead
    vLLM engine) and ``max_failed_batches`` consecutive batches without one caption raise
    ``EngineFatalError``, which the stage re-raises so the runner retries the bundle.
    """

    def __init__(
        self, config: CaptionConfig, generator_factory: GeneratorFactory = load_generator
    ) -> None:
        super().__init__()
        self._config = config
        self._factory = generator_factory
        # outcome counters, visible in the runner's UI (Dataflow) and in PipelineResult.metrics()
        self._captioned = Metrics.counter(METRICS_NAMESPACE, "captioned")
        self._undecodable = Metrics.counter(METRICS_NAMESPACE, "failed_decode")
        self._gen_failed = Metrics.counter(METRICS_NAMESPACE, "failed_generation")
        self._empty = Metrics.counter(METRICS_NAMESPACE, "failed_empty")
        self._breaker = FailedBatchBreaker(config.generation.max_failed_batches, "caption")

    def load_model(self) -> Captioner:
        return Captioner(self._factory(self._config.generation, True), self._config)

    def run_inference(
        self,
        batch: Sequence[KeyedRecord],
        model: Captioner,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[Record]:
        cfg = self._config
        out: list[Record | None] = [None] * len(batch)
        todo: list[tuple[int, Any]] = []
        for uid, record in batch:
            if uid != record.uid:
                raise ValueError(f"key {uid!r} does not match record uid {record.uid!r}")
        for i, decoded in enumerate(self._decode_all([record.jpg for _, record in batch])):
            if isinstance(decoded, ValueError):
                self._undecodable.inc()
                out[i] = _failed(batch[i][1], str(decoded))
            else:
                todo.append((i, decoded))
        raws = self._generate(model, [image for _, image in todo])
        for (i, _), raw in zip(todo, raws, strict=True):
            record = batch[i][1]
            if isinstance(raw, BaseException):
                self._gen_failed.inc()
                out[i] = _failed(record, f"generation failed: {_describe(raw)}")
                continue
            caption = clean_caption(raw, cfg.prompt)
            if not caption:
                self._empty.inc()
                out[i] = _failed(record, f"empty caption after cleaning (raw output {raw[:200]!r})")
                continue
            self._captioned.inc()
            out[i] = record.replace(
                visual_caption=caption,
                caption_model=cfg.recorded_model,
                caption_prompt_id=cfg.prompt_id,
            )
        return [r for r in out if r is not None]

    def _decode_all(self, blobs: list[bytes | None]) -> list[Any]:
        """Decoded images, or the ValueError saying why not, in input order."""
        threads = min(self._config.decode_threads, len(blobs))
        if threads <= 1:
            return [_try_decode(b) for b in blobs]
        with ThreadPoolExecutor(threads, thread_name_prefix="vecap-decode") as pool:
            return list(pool.map(_try_decode, blobs))

    def _generate(self, model: Captioner, images: list[Any]) -> list[str | BaseException]:
        """Captions or, per image that failed alone, the error; see ``generate_split``."""
        if not images:
            return []
        results = generate_split(
            model.caption,
            images,
            isolate=self._config.isolate_failed_batches,
            what="caption batch",
            units=("captions", "images"),
        )
        self._breaker.record(results)
        return results

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return self._config.generation.batch_elements_kwargs()

    def share_model_across_processes(self) -> bool:
        return self._config.share_model_across_processes

    def get_num_bytes(self, batch: Sequence[KeyedRecord]) -> int:
        return sum(len(record.jpg or b"") for _, record in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE


def _try_decode(data: bytes | None) -> Any:
    try:
        return decode_image(data)
    except ValueError as exc:
        return exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _failed(record: Record, error: str) -> Record:
    """``caption_failed``; the image stays so a later run can retry without downloading."""
    return record.replace(status=Status.CAPTION_FAILED.value, error=error[:MAX_ERROR_CHARS])


__all__ = ["CaptionModelHandler", "Captioner", "decode_image"]
