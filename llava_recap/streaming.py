"""The captioner on a server backend: one row at a time, many in flight (``pipeline.inflight``).

Per row, on a prep thread: decode the JPEG, apply ``caption.image_aspect`` (LLaVA-1.5's pad),
and send it with the rendered prompt; on the stage's thread: clean the answer into the row. The
outcomes and error texts are those of the batch path (``llava_recap.caption_rows``).
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

from apache_beam.metrics import Metrics

from llava_recap.caption_rows import (
    FAILED_DECODE,
    Captioner,
    failed_caption,
    finish_caption,
    try_decode,
)
from llava_recap.config import CaptionConfig
from pipeline.generation import load_generator
from pipeline.generation.server_client import completion_text
from schemas import Record

METRICS_NAMESPACE = "vecap_caption"


class CaptionTask:
    """``InFlightTask`` of the caption stage; ``route`` is the stage's router (done rows and
    rows that are not ok pass through; retried ``caption_failed`` rows are reset)."""

    def __init__(self, config: CaptionConfig, router: Any, reset: Any) -> None:
        self.config = config
        self.generation = config.generation
        self.prep_threads = config.decode_threads
        self._router = router
        self._reset = reset
        self.counters = {
            name: Metrics.counter(METRICS_NAMESPACE, name)
            for name in ("captioned", "failed_decode", "failed_generation", "failed_empty")
        }

    def load(self) -> None:
        self.generator = load_generator(self.generation, True)
        self.captioner = Captioner(self.generator, self.config)

    def route(self, record: Record) -> Record | None:
        if self._router(record, 2) == 1:
            return record
        return None

    def prepare(self, record: Record) -> Any:
        record = self._reset(record)
        image = try_decode(record.jpg)
        if isinstance(image, ValueError):
            self.counters[FAILED_DECODE].inc()
            return failed_caption(record, str(image))
        prepped = self.captioner.prep([image])[0]
        # untouched by image_aspect: the stored JPEG goes as it is (the server decodes the very
        # pixels decoded here), no re-encoding
        return record, record.jpg if prepped is image else prepped

    def send(self, prepared: Any) -> concurrent.futures.Future:
        _record, image = prepared
        return self.generator.submit(
            self.captioner.prompt, image, user_text=self.config.prompt, system=self.config.system
        )

    def finish(self, record: Record, answer: Any) -> Record:
        record = self._reset(record)
        raw = answer if isinstance(answer, BaseException) else _text(answer)
        out, outcome = finish_caption(record, raw, self.config)
        self.counters[outcome].inc()
        return out


def _text(answer: dict) -> str | BaseException:
    try:
        return completion_text(answer)
    except Exception as exc:  # an answer without a choice fails its row
        return exc


__all__ = ["CaptionTask"]
