"""``CaptionStage``: the captioner as a Beam PTransform, Record -> Record, no row lost."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from llava_recap.config import CaptionConfig
from llava_recap.handler import CaptionModelHandler, GeneratorFactory
from pipeline.generation import load_generator
from schemas import Record, Status


def _route(record: Record, _n: int) -> int:
    return 0 if record.ok else 1


def _key_by_uid(record: Record) -> tuple[str, Record]:
    return record.uid, record


def failed_batch_records(dead_letter: tuple[Any, Any]) -> Iterable[Record]:
    """Rows of a batch that reached RunInference's dead letters, as ``caption_failed`` rows.

    Beam's dead letter is ``(batch, (exception type, repr, traceback lines))``; the batch is the
    list of (uid, Record) pairs the handler was given.
    """
    batch, error = dead_letter
    if isinstance(error, tuple) and len(error) >= 2:
        exc_type, exc_repr = error[0], error[1]
        name = getattr(exc_type, "__name__", str(exc_type))
        message = f"caption batch failed: {name}: {exc_repr}"
    else:
        message = f"caption batch failed: {error!r}"
    for item in batch:
        record = item[1] if isinstance(item, tuple) else item
        # keep the image: a later run can caption it again without downloading it again
        yield record.replace(status=Status.CAPTION_FAILED.value, error=message[:2000])


class CaptionStage(beam.PTransform):
    """Sets ``visual_caption``, ``caption_model`` and ``caption_prompt_id`` on ok rows.

    Rows that are not ok pass through untouched; rows that fail here get ``caption_failed``
    and an error. Rows in == rows out.
    """

    def __init__(
        self, config: CaptionConfig, *, generator_factory: GeneratorFactory = load_generator
    ) -> None:
        super().__init__()
        self._config = config
        self._handler = CaptionModelHandler(config, generator_factory)

    def expand(self, records: beam.PCollection[Record]) -> beam.PCollection[Record]:
        ok, passthrough = records | "SplitOk" >> beam.Partition(_route, 2)
        captioned, dead = (
            ok
            | "KeyByUid" >> beam.Map(_key_by_uid)
            | "Caption" >> RunInference(self._handler).with_exception_handling()
        )
        failed = dead.failed_inferences | "FailedBatches" >> beam.FlatMap(failed_batch_records)
        return (captioned, failed, passthrough) | "Merge" >> beam.Flatten()


__all__ = ["CaptionStage", "failed_batch_records"]
