"""``FusionStage``: the Beam PTransform that turns AltText + visual caption into the VeC.

Record -> Record, rows in == rows out. Only rows that need the LLM go through ``RunInference``;
everything else (failed rows, rows whose caption is already chosen, AltText that carries no
knowledge) is finished on the CPU path. A batch that fails in the model is retried in halves
after freeing memory (``isolate_failed_batches``); a row that still fails, or a whole batch when isolation is off
(via RunInference's dead-letter output), comes back as a fallback row with the error recorded,
never lost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference

from llm_fusion.config import FusionConfig
from llm_fusion.errors import describe_error, internal_error_record
from llm_fusion.fusion_rules import REASON_INTERNAL_ERROR, FusionRules
from llm_fusion.handler import GeneratorLoader, TextLLMHandler, load_text_generator
from pipeline.generation.recovery import EngineFatalError, is_fatal_dead_letter
from pipeline.generation.templates import chat_template_choice
from schemas import Record

_LOG = logging.getLogger(__name__)
_LLM = "llm"


class _FusionUserText:
    """Picklable record -> user message, for the handler."""

    def __init__(self, rules: FusionRules) -> None:
        self.rules = rules

    def __call__(self, record: Record) -> str:
        return self.rules.user_text(record)


def _internal_error(record: Record, stage: str, exc: BaseException) -> Record:
    return internal_error_record(record, stage, exc, fusion_reason=REASON_INTERNAL_ERROR)


class _RouteForFusion(beam.DoFn):
    """Finish what needs no LLM (main output); tag (uid, record) pairs for the LLM."""

    def __init__(self, rules: FusionRules) -> None:
        self.rules = rules
        self.skipped = beam.metrics.Metrics.counter("vecap_fusion", "llm_skipped")
        self.passed = beam.metrics.Metrics.counter("vecap_fusion", "passed_through")

    def process(self, record: Record) -> Iterator:
        if not record.ok or self.rules.already_fused(record):
            self.passed.inc()
            yield record
            return
        try:
            done = self.rules.plan(record.without_fusion())
        except Exception as exc:  # a bad row must not stop the job
            yield _internal_error(record, "fusion routing", exc)
            return
        if done is None:
            yield beam.pvalue.TaggedOutput(_LLM, (record.uid, record))
        else:
            self.skipped.inc()
            yield done


class _ApplyOutput(beam.DoFn):
    def __init__(self, rules: FusionRules) -> None:
        self.rules = rules
        self.sources = {
            s: beam.metrics.Metrics.counter("vecap_fusion", f"source_{s}")
            for s in ("llm", "visual", "alt", "failed")
        }

    def process(self, element: tuple[str, PredictionResult]) -> Iterator[Record]:
        _uid, result = element
        record: Record = result.example
        try:
            if isinstance(result.inference, BaseException):  # failed alone after isolation
                out = self.rules.apply_failure(record, result.inference, result.model_id)
            else:
                out = self.rules.apply_output(record, result.inference, result.model_id)
        except Exception as exc:
            out = _internal_error(record, "fusion output", exc)
        self.sources[out.fusion_source or "failed"].inc()
        yield out


class _ApplyFailure(beam.DoFn):
    """A failed batch from the dead-letter output: every row gets the fallback and the error."""

    def __init__(self, rules: FusionRules) -> None:
        self.rules = rules
        self.failed_rows = beam.metrics.Metrics.counter("vecap_fusion", "rows_in_failed_batches")

    def process(self, element: tuple) -> Iterator[Record]:
        batch, error = element
        if is_fatal_dead_letter(error):  # fail the bundle: the runner retries it elsewhere
            raise EngineFatalError(f"fusion stage: {describe_error(error)}")
        _LOG.warning("fusion batch of %d rows failed: %s", len(batch), describe_error(error))
        for _uid, record in batch:
            self.failed_rows.inc()
            yield self.rules.apply_failure(record, error, self.rules.config.generation.model)


class FusionStage(beam.PTransform):
    """PCollection[Record] -> PCollection[Record] with ``fused_caption`` and its provenance.

    ``generator_loader`` replaces the model loader (tests use a fake generator); production
    code leaves it alone.
    """

    def __init__(
        self, config: FusionConfig, *, generator_loader: GeneratorLoader = load_text_generator
    ) -> None:
        super().__init__()
        self.config = config
        self._loader = generator_loader
        # Resolve the prompt (a user file may live on gs://) once, at construction: workers
        # then carry the text, and a missing file fails the job before it starts.
        self.rules = FusionRules.from_config(config)
        self.handler = TextLLMHandler(
            config.generation,
            _FusionUserText(self.rules),
            metrics_namespace="vecap_fusion",
            share_model_across_processes=config.share_model_across_processes,
            generator_loader=generator_loader,
            isolate_failed_batches=config.isolate_failed_batches,
            chat_template=chat_template_choice(config.chat_template),
        )

    @property
    def prompt_id(self) -> str:
        return self.rules.prompt.prompt_id

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        if self.config.generation.streams and self._loader is load_text_generator:
            # server backends: rows stream to the engines, passing through in the same DoFn
            from llm_fusion.streaming import FusionTaskFactory
            from pipeline.inflight import InFlightInference

            task = FusionTaskFactory(self.rules)
            return records | "Fuse" >> beam.ParDo(InFlightInference(task, "fusion"))
        routed = records | "RouteForFusion" >> beam.ParDo(_RouteForFusion(self.rules)).with_outputs(
            _LLM, main="done"
        )
        inferred, dead_letters = (
            routed[_LLM]
            | "FuseWithLLM"
            >> RunInference(
                KeyedModelHandler(self.handler), model_identifier=self.handler.shared_model_tag()
            ).with_exception_handling()
        )
        fused = inferred | "ApplyFusionOutput" >> beam.ParDo(_ApplyOutput(self.rules))
        recovered = dead_letters.failed_inferences | "ApplyFusionFallback" >> beam.ParDo(
            _ApplyFailure(self.rules)
        )
        return (routed["done"], fused, recovered) | "MergeFusion" >> beam.Flatten()


__all__ = ["FusionStage"]
