"""A text LLM's answers for a batch of records, without Beam: user text, chat, failed rows.

``llm_fusion.handler.TextLLMHandler`` wraps :func:`generate_texts` in Beam's ``ModelHandler``
(and its ``PredictionResult``); ``bench/gpu.py`` calls it directly where Beam is not installed.
This module must not import ``apache_beam``, directly or through another module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.generation import AUTO, ChatTemplateChoice, Generator
from pipeline.generation.recovery import FailedBatchBreaker, generate_split
from schemas import Record

UserTextFn = Callable[[Record], str]


def generate_texts(
    model: Generator,
    records: Sequence[Record],
    user_text: UserTextFn,
    *,
    system: str | None = None,
    chat_template: ChatTemplateChoice = AUTO,
    isolate: bool = True,
    what: str = "vecap_llm batch",
    breaker: FailedBatchBreaker | None = None,
) -> list[str | BaseException]:
    """One completion per record, in order, through ``model.chat`` (the chat template is
    rendered in the model's process); a failed batch is retried in halves with ``isolate``
    (``generate_split``), and a row that fails alone comes back as its exception. ``breaker``
    sees every batch's results."""
    outputs = generate_split(
        lambda rows: _chat(model, rows, user_text, system, chat_template),
        records,
        isolate=isolate,
        what=what,
    )
    if breaker is not None:
        breaker.record(outputs)
    return outputs


def _chat(
    model: Generator,
    batch: Sequence[Record],
    user_text: UserTextFn,
    system: str | None,
    chat_template: ChatTemplateChoice,
) -> list[str]:
    outputs = model.chat(
        [user_text(record) for record in batch], system=system, chat_template=chat_template
    )
    if len(outputs) != len(batch):  # never attach a completion to the wrong row
        raise RuntimeError(f"generator returned {len(outputs)} outputs for {len(batch)} prompts")
    return outputs


__all__ = ["UserTextFn", "generate_texts"]
