"""The captioner's Beam ``ModelHandler``: (uid, Record) in, captioned (or failed) Record out.

The work on a batch (decode, prompt, ``generate``, cleaning, failed rows) is Beam-free, in
``llava_recap.caption_rows``; this module adds Beam's parts: the handler and its counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler

from llava_recap.caption_rows import (
    CAPTIONED,
    FAILED_DECODE,
    FAILED_EMPTY,
    FAILED_GENERATION,
    MAX_ERROR_CHARS,  # noqa: F401  (re-exported: llava_recap.stage imports it from here)
    Captioner,
    caption_records,
    decode_image,
)
from llava_recap.config import CaptionConfig
from pipeline.generation import GenerationConfig, Generator, load_generator
from pipeline.generation.recovery import FailedBatchBreaker
from schemas import Record

KeyedRecord = tuple[str, Record]
METRICS_NAMESPACE = "vecap_caption"
GeneratorFactory = Callable[[GenerationConfig, bool], Generator]


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
        self._counters = {
            outcome: Metrics.counter(METRICS_NAMESPACE, outcome)
            for outcome in (CAPTIONED, FAILED_DECODE, FAILED_GENERATION, FAILED_EMPTY)
        }
        self._breaker = FailedBatchBreaker(config.generation.max_failed_batches, "caption")

    def load_model(self) -> Captioner:
        return Captioner(self._factory(self._config.generation, True), self._config)

    def run_inference(
        self,
        batch: Sequence[KeyedRecord],
        model: Captioner,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[Record]:
        return caption_records(batch, model, self._config, breaker=self._breaker, count=self._count)

    def _count(self, outcome: str) -> None:
        self._counters[outcome].inc()

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return self._config.generation.batch_elements_kwargs()

    def share_model_across_processes(self) -> bool:
        return self._config.share_model_across_processes

    def get_num_bytes(self, batch: Sequence[KeyedRecord]) -> int:
        return sum(len(record.jpg or b"") for _, record in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE


__all__ = ["CaptionModelHandler", "Captioner", "decode_image"]
