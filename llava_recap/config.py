"""The captioner's frozen config."""

from __future__ import annotations

from dataclasses import dataclass

from llava_recap.aspect import ASPECTS
from llava_recap.prompts import DEFAULT_PROMPT_ID, PROMPTS, fallback_template_for, get_prompt
from pipeline.generation import GenerationConfig


@dataclass(frozen=True)
class CaptionConfig:
    """What to caption with and how.

    ``prompt_id`` names a versioned prompt from :data:`llava_recap.prompts.PROMPTS`; to try new
    words pass ``prompt_text`` with a new, unused ``prompt_id`` (the id is recorded on every row,
    so it must identify the words).
    """

    generation: GenerationConfig
    prompt_id: str = DEFAULT_PROMPT_ID
    prompt_text: str | None = None
    system: str | None = None
    # prompt layout for checkpoints without a chat template; None: guessed from the model name
    fallback_template: str | None = None
    # recorded in caption_model; None: generation.model (a hub id, or the directory name)
    model_name: str | None = None
    # one model per machine instead of per process, for models that fill the accelerator
    share_model_across_processes: bool = False
    # when a whole batch raises (e.g. out of memory), free memory and retry it in halves down
    # to single rows, so only a row that really fails is marked caption_failed
    isolate_failed_batches: bool = True
    # rows a previous run marked caption_failed that still carry their image are captioned
    # again (a rerun over an earlier output, `vecap run --from OUT --stages caption`)
    retry_failed: bool = True
    # threads decoding a batch's JPEGs (Pillow releases the GIL while decoding), so the CPU work
    # between two generate calls shrinks on many-core GPU workers; 1 decodes inline
    decode_threads: int = 4
    # auto | pad | crop | native (llava_recap.aspect): auto pads to a mean-colour square for the
    # LLaVA-1.5 family (as LLaVA-1.5 and VeCLIP ran it) and leaves LLaVA-NeXT's anyres native
    image_aspect: str = "auto"
    # set by the dedup phases (pipeline.dedup) only: rows marked as another row's duplicate
    # pass through untouched, to take that row's result afterwards
    inherit_duplicates: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.generation, GenerationConfig):
            raise TypeError("generation must be a pipeline.generation.GenerationConfig")
        if not self.prompt_id:
            raise ValueError("prompt_id must not be empty")
        if self.prompt_text is None:
            get_prompt(self.prompt_id)  # raises with the known ids
        else:
            if not self.prompt_text.strip():
                raise ValueError("prompt_text must not be blank")
            known = PROMPTS.get(self.prompt_id)
            if known is not None and known.text != self.prompt_text:
                raise ValueError(
                    f"prompt_id {self.prompt_id!r} already names other words; "
                    "give the custom prompt_text a new id"
                )
        if self.image_aspect not in ASPECTS:
            raise ValueError(f"image_aspect must be one of {ASPECTS}, got {self.image_aspect!r}")
        if self.decode_threads < 1:
            raise ValueError("decode_threads must be >= 1")
        if self.fallback_template is not None and "{user}" not in self.fallback_template:
            raise ValueError("fallback_template must contain {user}")

    @property
    def prompt(self) -> str:
        return self.prompt_text if self.prompt_text is not None else PROMPTS[self.prompt_id].text

    @property
    def recorded_model(self) -> str:
        return self.model_name or self.generation.model

    @property
    def fallback(self) -> str:
        return self.fallback_template or fallback_template_for(self.generation.model)


__all__ = ["CaptionConfig"]
