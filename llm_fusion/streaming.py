"""Fusion on a server backend: one row at a time, many in flight (``pipeline.inflight``).

The rules are the batch path's (``FusionRules``): rows that need no LLM are finished at once,
the others get their user text rendered through the model's chat template on a prep thread and
sent; the answer is cleaned and applied (or the fallback, when the row's request failed).
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

from apache_beam.metrics import Metrics

from llm_fusion.errors import internal_error_record
from llm_fusion.fusion_rules import REASON_INTERNAL_ERROR, FusionRules
from llm_fusion.handler import load_text_generator
from pipeline.generation.server_client import completion_text
from pipeline.generation.templates import chat_template_choice
from schemas import Record

METRICS_NAMESPACE = "vecap_fusion"


class FusionTask:
    """``InFlightTask`` of the fusion stage."""

    def __init__(self, rules: FusionRules) -> None:
        self.rules = rules
        self.config = rules.config
        self.generation = rules.config.generation
        self.prep_threads = 2  # jinja rendering: light
        self.choice = chat_template_choice(self.config.chat_template)
        self.skipped = Metrics.counter(METRICS_NAMESPACE, "llm_skipped")
        self.passed = Metrics.counter(METRICS_NAMESPACE, "passed_through")
        self.sources = {
            s: Metrics.counter(METRICS_NAMESPACE, f"source_{s}")
            for s in ("llm", "visual", "alt", "failed")
        }

    def load(self) -> None:
        self.generator = load_text_generator(self.generation)
        self.generator.resolve_chat_template(self.choice)  # no template: fail before any row

    def route(self, record: Record) -> Record | None:
        if not record.ok or self.rules.already_fused(record):
            self.passed.inc()
            return record
        try:
            done = self.rules.plan(record.without_fusion())
        except Exception as exc:  # a bad row must not stop the job
            return internal_error_record(
                record, "fusion routing", exc, fusion_reason=REASON_INTERNAL_ERROR
            )
        if done is not None:
            self.skipped.inc()
        return done

    def prepare(self, record: Record) -> Any:
        user = self.rules.user_text(record)
        return self.generator.render_prompts([user], chat_template=self.choice)[0]

    def send(self, prepared: Any) -> concurrent.futures.Future:
        return self.generator.submit(prepared)

    def finish(self, record: Record, answer: Any) -> Record:
        model_id = self.config.generation.model
        try:
            if isinstance(answer, BaseException):
                out = self.rules.apply_failure(record, answer, model_id)
            else:
                out = self.rules.apply_output(record, completion_text(answer), model_id)
        except Exception as exc:
            out = internal_error_record(
                record, "fusion output", exc, fusion_reason=REASON_INTERNAL_ERROR
            )
        self.sources[out.fusion_source or "failed"].inc()
        return out


class FusionTaskFactory:
    """Picklable: builds the task on the worker."""

    def __init__(self, rules: FusionRules) -> None:
        self.rules = rules

    def __call__(self) -> FusionTask:
        return FusionTask(self.rules)


__all__ = ["FusionTask", "FusionTaskFactory"]
