"""A Beam ``ModelHandler`` that asks a text LLM one question per record, for fusion and ethics.

Examples are whole :class:`~schemas.Record` objects (keyed by uid through Beam's
``KeyedModelHandler``), so the answer comes back attached to its row without a join. The handler
renders each record's user text through the model's chat template (or the raw template of a
plain causal LM) and runs one batched ``generate`` per Beam batch on the shared generation
layer; either backend, same batching controls as the captioner.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from pipeline.generation import GenerationConfig, Generator, load_generator, render_chat
from schemas import Record

# Plain causal LMs (no chat template) get the user text as is: vecap's prompts end with an
# answer cue ("Caption:", "Answer:") that a base model continues.
RAW_TEMPLATE = "{user}"

UserTextFn = Callable[[Record], str]
GeneratorLoader = Callable[[GenerationConfig], Generator]


def load_text_generator(config: GenerationConfig) -> Generator:
    """The default loader: a text-only model on the configured backend."""
    return load_generator(config, multimodal=False)


class TextLLMHandler(ModelHandler[Record, str, Generator]):
    """Record in, raw completion out (``PredictionResult(example=record, inference=text)``).

    ``user_text`` turns a record into the user message (a picklable callable);
    ``generator_loader`` exists for tests that swap in a fake model.
    """

    def __init__(
        self,
        generation: GenerationConfig,
        user_text: UserTextFn,
        *,
        metrics_namespace: str = "vecap_llm",
        share_model_across_processes: bool = False,
        generator_loader: GeneratorLoader = load_text_generator,
    ) -> None:
        super().__init__()
        self._generation = generation
        self._user_text = user_text
        self._metrics_namespace = metrics_namespace
        self._share = share_model_across_processes
        self._loader = generator_loader

    def load_model(self) -> Generator:
        return self._loader(self._generation)

    def render(self, model: Generator, record: Record) -> str:
        return render_chat(
            model.processor, self._user_text(record), image=False, fallback_template=RAW_TEMPLATE
        )

    def run_inference(
        self,
        batch: Sequence[Record],
        model: Generator,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        prompts = [self.render(model, record) for record in batch]
        outputs = model.generate(prompts)
        if len(outputs) != len(batch):  # never attach a completion to the wrong row
            raise RuntimeError(
                f"generator returned {len(outputs)} outputs for {len(batch)} prompts"
            )
        return [
            PredictionResult(record, text, self._generation.model)
            for record, text in zip(batch, outputs, strict=True)
        ]

    def get_num_bytes(self, batch: Sequence[Record]) -> int:
        # The default pickles the whole batch, image bytes included; count the text we send.
        return sum(len(r.alt_text or "") + len(r.visual_caption or "") for r in batch)

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return self._generation.batch_elements_kwargs()

    def share_model_across_processes(self) -> bool:
        return self._share

    def get_metrics_namespace(self) -> str:
        return self._metrics_namespace


__all__ = ["RAW_TEMPLATE", "TextLLMHandler", "load_text_generator"]
