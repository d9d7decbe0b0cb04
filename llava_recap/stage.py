"""``CaptionStage``: the captioner as a Beam PTransform, Record -> Record, no row lost."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from llava_recap.config import CaptionConfig
from llava_recap.handler import MAX_ERROR_CHARS, CaptionModelHandler, GeneratorFactory
from pipeline.generation import load_generator
from pipeline.generation.precision import engine_label
from pipeline.generation.recovery import EngineFatalError, is_fatal_dead_letter
from schemas import Record, Status


class _Router:
    """0: caption this row; 1: pass it through untouched.

    Rows already captioned by this model with this prompt on this engine (backend/dtype) are
    not captioned again (a resumed or chained run must not redo paid work); rows captioned
    before engines were recorded (``caption_engine`` unset) match any engine.
    ``caption_failed`` rows with their image are retried when the config says so.
    """

    def __init__(self, config: CaptionConfig) -> None:
        self.model = config.recorded_model
        self.prompt_id = config.prompt_id
        self.retry_failed = config.retry_failed
        self.generation = config.generation
        self.inherit = config.inherit_duplicates

    def __call__(self, record: Record, _n: int) -> int:
        if record.status == Status.CAPTION_FAILED.value:
            return 0 if self.retry_failed and record.jpg else 1
        if not record.ok:
            return 1
        if self.inherit and record.duplicate_of:  # dedup: its canonical row is captioned
            return 1
        done = (
            bool(record.visual_caption)
            and record.caption_model == self.model
            and record.caption_prompt_id == self.prompt_id
            # resolved here, on the worker, as the loader resolves it
            and record.caption_engine in (None, engine_label(self.generation))
        )
        return 1 if done else 0


def _reset_for_retry(record: Record) -> Record:
    if record.status == Status.CAPTION_FAILED.value:
        return record.replace(status=Status.OK.value, error=None, caption_cached=None)
    if record.caption_cached:  # a cached caption of another engine: captioned here after all
        return record.replace(caption_cached=None)
    return record


def _key_by_uid(record: Record) -> tuple[str, Record]:
    return record.uid, record


def failed_batch_records(dead_letter: tuple[Any, Any]) -> Iterable[Record]:
    """Rows of a batch that reached RunInference's dead letters, as ``caption_failed`` rows.

    Beam's dead letter is ``(batch, (exception type, repr, traceback lines))``; the batch is the
    list of (uid, Record) pairs the handler was given.
    """
    batch, error = dead_letter
    if is_fatal_dead_letter(error):
        # the engine is broken (or failed batch after batch): fail the bundle so the runner
        # retries it on a fresh worker, rather than commit a shard of caption_failed rows
        raise EngineFatalError(f"caption stage: {_error_line(error)}")
    if isinstance(error, tuple) and len(error) >= 2:
        exc_type, exc_repr = error[0], error[1]
        name = getattr(exc_type, "__name__", str(exc_type))
        message = f"caption batch failed: {name}: {exc_repr}"
    else:
        message = f"caption batch failed: {error!r}"
    for item in batch:
        record = item[1] if isinstance(item, tuple) else item
        # keep the image: a later run can caption it again without downloading it again
        yield record.replace(status=Status.CAPTION_FAILED.value, error=message[:MAX_ERROR_CHARS])


def _error_line(error: Any) -> str:
    if isinstance(error, tuple) and len(error) >= 2:
        return f"{getattr(error[0], '__name__', error[0])}: {error[1]}"
    return repr(error)


class _CaptionTaskFactory:
    """Picklable: builds the streaming task on the worker."""

    def __init__(self, config: CaptionConfig) -> None:
        self.config = config

    def __call__(self):
        from llava_recap.streaming import CaptionTask

        return CaptionTask(self.config, _Router(self.config), _reset_for_retry)


class CaptionStage(beam.PTransform):
    """Sets ``visual_caption``, ``caption_model`` and ``caption_prompt_id`` on ok rows.

    Rows that are not ok pass through untouched (except ``caption_failed`` rows with their image,
    retried when ``retry_failed``), as do rows this model already captioned with this prompt;
    rows that fail here get ``caption_failed`` and an error. Rows in == rows out.
    """

    def __init__(
        self, config: CaptionConfig, *, generator_factory: GeneratorFactory = load_generator
    ) -> None:
        super().__init__()
        self._config = config
        self._factory = generator_factory
        self._handler = CaptionModelHandler(config, generator_factory)

    def expand(self, records: beam.PCollection[Record]) -> beam.PCollection[Record]:
        if self._config.generation.streams and self._factory is load_generator:
            # server backends: rows stream to the engines, passing through in the same DoFn
            from pipeline.inflight import InFlightInference

            task = _CaptionTaskFactory(self._config)
            return records | "Caption" >> beam.ParDo(InFlightInference(task, "caption"))
        todo, passthrough = records | "Route" >> beam.Partition(_Router(self._config), 2)
        captioned, dead = (
            todo
            | "ResetRetries" >> beam.Map(_reset_for_retry)
            | "KeyByUid" >> beam.Map(_key_by_uid)
            | "Caption" >> RunInference(self._handler).with_exception_handling()
        )
        failed = dead.failed_inferences | "FailedBatches" >> beam.FlatMap(failed_batch_records)
        return (captioned, failed, passthrough) | "Merge" >> beam.Flatten()


__all__ = ["CaptionStage", "failed_batch_records"]
