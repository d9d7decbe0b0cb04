"""A Beam ``ModelHandler`` that asks a text LLM one question per record, for fusion and ethics.

Examples are whole :class:`~schemas.Record` objects (keyed by uid through Beam's
``KeyedModelHandler``), so the answer comes back attached to its row without a join. The handler
sends each record's *user text* to the generator's ``chat`` method, which renders it through the
model's chat template (or the configured fallback, see ``pipeline.generation.templates``) in the
model's own process and runs one batched ``generate`` per Beam batch; either backend, same
batching controls as the captioner. Rendering must happen there: with
``share_model_across_processes`` the handler holds Beam's cross-process proxy, through which an
attribute such as the tokenizer arrives as a bound remote method without its template.

The work on a batch is Beam-free, in ``llm_fusion.text_rows.generate_texts``; this module adds
Beam's parts (the ``ModelHandler``, ``PredictionResult``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from llm_fusion.text_rows import UserTextFn, generate_texts
from pipeline.generation import (
    AUTO,
    ChatTemplateChoice,
    GenerationConfig,
    Generator,
    load_generator,
)
from pipeline.generation.recovery import FailedBatchBreaker
from schemas import Record

_LOG = logging.getLogger(__name__)

# ``chat_template: raw`` sends the user text as is, for plain causal LMs: vecap's prompts end
# with an answer cue ("Caption:", "Answer:") that a base model continues.
RAW_TEMPLATE = "{user}"

GeneratorLoader = Callable[[GenerationConfig], Generator]


def load_text_generator(config: GenerationConfig) -> Generator:
    """The default loader: a text-only model on the configured backend."""
    return load_generator(config, multimodal=False)


class TextLLMHandler(ModelHandler[Record, str, Generator]):
    """Record in, completion out: ``PredictionResult(example=record, inference=text | error)``.

    ``user_text`` turns a record into the user message (a picklable callable);
    ``generator_loader`` exists for tests that swap in a fake model. With
    ``isolate_failed_batches`` a failed batch is retried in halves after freeing memory
    (``pipeline.generation.recovery.generate_split``), so an out-of-memory batch still gets
    every row through and one poison row (a prompt over the context limit, say) does not take
    its batch-mates down; a row that fails alone comes back with the exception as its
    inference. Without it the batch raises and reaches RunInference's dead letters.
    Engine-fatal errors and ``max_failed_batches`` consecutive batches without one answer
    raise ``EngineFatalError``, which the stages re-raise so the runner retries the bundle.
    """

    def __init__(
        self,
        generation: GenerationConfig,
        user_text: UserTextFn,
        *,
        metrics_namespace: str = "vecap_llm",
        share_model_across_processes: bool = False,
        generator_loader: GeneratorLoader = load_text_generator,
        isolate_failed_batches: bool = True,
        chat_template: ChatTemplateChoice = AUTO,
        system: str | None = None,
    ) -> None:
        super().__init__()
        self._isolate = isolate_failed_batches
        self._chat_template = chat_template
        self._system = system
        self._generation = generation
        self._user_text = user_text
        self._metrics_namespace = metrics_namespace
        self._share = share_model_across_processes
        self._loader = generator_loader
        self._breaker = FailedBatchBreaker(generation.max_failed_batches, metrics_namespace)

    def load_model(self) -> Generator:
        generator = self._loader(self._generation)
        # fail at load, before any row, when the model has no usable template
        resolve = getattr(generator, "resolve_chat_template", None)
        if resolve is not None:
            resolve(self._chat_template)
        return generator

    def run_inference(
        self,
        batch: Sequence[Record],
        model: Generator,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        outputs = generate_texts(
            model,
            batch,
            self._user_text,
            system=self._system,
            chat_template=self._chat_template,
            isolate=self._isolate,
            what=f"{self._metrics_namespace} batch",
            breaker=self._breaker,
        )
        return [
            PredictionResult(record, output, self._generation.model)
            for record, output in zip(batch, outputs, strict=True)
        ]

    def get_num_bytes(self, batch: Sequence[Record]) -> int:
        # The default pickles the whole batch, image bytes included; count the text we send.
        return sum(len(r.alt_text or "") + len(r.visual_caption or "") for r in batch)

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return self._generation.batch_elements_kwargs()

    def share_model_across_processes(self) -> bool:
        return self._share

    def shared_model_tag(self) -> str | None:
        """RunInference's ``model_identifier`` when the model is shared across processes: the
        ethics check and fusion with equal generation configs get one server (one load) — the
        generator is stage-neutral, each call carries its stage's system text and template.
        None (Beam's random tag) when not shared: then ``load_generator``'s per-process engine
        registry gives the one load. The loader is part of the tag (a test's recording loader
        must not be served a model another loader built), and one that does not pickle
        deterministically gets no shared tag."""
        if not self._share:
            return None
        import hashlib
        import pickle

        try:
            loader = pickle.dumps(self._loader)
        except Exception:  # a lambda or local class: Beam's own random tag, no sharing
            return None
        base = self._generation.shared_model_tag(multimodal=False)
        return f"{base}-{hashlib.blake2b(loader, digest_size=6).hexdigest()}"

    def get_metrics_namespace(self) -> str:
        return self._metrics_namespace


__all__ = ["RAW_TEMPLATE", "TextLLMHandler", "load_text_generator"]
