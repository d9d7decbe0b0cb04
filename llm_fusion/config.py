"""Frozen configs of the fusion stage and the ethics check, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass

from llm_fusion.clip_tokens import CLIP_CONTEXT_LENGTH, CLIP_SPECIAL_TOKENS
from llm_fusion.prompts import BUILTIN_PROMPTS, DEFAULT_PROMPT_ID
from pipeline.generation import GenerationConfig
from pipeline.generation.templates import validate_chat_template_value

FALLBACKS = ("visual", "alt", "none")
ETHICS_POLICIES = ("fuse", "keep_unfused", "exclude")
ON_UNPARSEABLE = ("not_flagged", "flagged")


@dataclass(frozen=True)
class FusionConfig:
    """AltText + visual caption -> visual-enriched caption.

    ``fallback`` decides the caption when the LLM output is rejected or its batch failed:
    ``visual`` (the VC), ``alt`` (the AltText) or ``none`` (status ``fusion_failed``).
    ``max_caption_tokens`` is the CLIP context the caption must fit, start and end tokens
    included (CLIP's 77); ``clip_tokenizer`` names a CLIP tokenizer (local dir or hub id) for
    exact counts, else a calibrated estimate is used (see ``llm_fusion.clip_tokens``).
    """

    generation: GenerationConfig
    # recorded in fusion_model instead of generation.model (a local path is no provenance)
    model_name: str | None = None
    prompt_id: str = DEFAULT_PROMPT_ID  # a built-in prompt; ignored when prompt_file is set
    prompt_file: str | None = None  # user prompt with {alt_text} and {visual_caption}
    fallback: str = "visual"
    max_caption_tokens: int = CLIP_CONTEXT_LENGTH
    clip_tokenizer: str | None = None
    # Very long AltText (SEO keyword dumps) would crowd the prompt and the context window.
    max_alt_text_chars: int = 500
    max_visual_caption_chars: int = 1000
    skip_rules: bool = True  # skip the LLM for file names, URLs, boilerplate (empty: always)
    extra_boilerplate: tuple[str, ...] = ()
    min_word_fraction: float = 0.6  # below this share of word-like tokens an output is noise
    # One model per machine shared by all SDK worker processes (Beam's MultiProcessShared):
    # what a multi-GB LLM on one GPU needs.
    share_model_across_processes: bool = False
    # Retry a failed batch in halves (after freeing memory), so an out-of-memory batch or one bad
    # row does not send the batch to the fallback.
    isolate_failed_batches: bool = True
    # auto | a family (vicuna_v1.1, llama-2, mistral, llama-3, chatml, qwen2.5) | raw | FILE:
    # auto uses the tokenizer's template, else its family's (pipeline.generation.templates)
    chat_template: str = "auto"
    # set by the dedup phases (pipeline.dedup) only: rows marked as another row's duplicate
    # pass through untouched, to take that row's result afterwards
    inherit_duplicates: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.generation, GenerationConfig):
            raise TypeError("generation must be a pipeline.generation.GenerationConfig")
        validate_chat_template_value(self.chat_template)
        if self.fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {self.fallback!r}")
        if self.prompt_file is None and self.prompt_id not in BUILTIN_PROMPTS:
            known = ", ".join(sorted(BUILTIN_PROMPTS))
            raise ValueError(f"unknown prompt_id {self.prompt_id!r}; built-ins: {known}")
        if self.max_caption_tokens <= CLIP_SPECIAL_TOKENS + 1:
            raise ValueError(f"max_caption_tokens must be > {CLIP_SPECIAL_TOKENS + 1}")
        if self.max_alt_text_chars < 1 or self.max_visual_caption_chars < 1:
            raise ValueError("max_alt_text_chars and max_visual_caption_chars must be >= 1")
        if not 0 <= self.min_word_fraction <= 1:
            raise ValueError("min_word_fraction must be in [0, 1]")
        if isinstance(self.extra_boilerplate, str):
            raise TypeError("extra_boilerplate must be a tuple of strings, not one string")
        object.__setattr__(self, "extra_boilerplate", tuple(self.extra_boilerplate))

    @property
    def caption_token_budget(self) -> int:
        """Content tokens a caption may use (CLIP's start and end tokens excluded)."""
        return self.max_caption_tokens - CLIP_SPECIAL_TOKENS


@dataclass(frozen=True)
class EthicsConfig:
    """VeCLIP's "LLM ethical check" before fusion: an LLM yes/no question and a term blocklist.

    Off unless ``enabled``. ``generation`` set: the LLM is asked about every ok row's AltText and
    VC; ``blocklist``/``blocklist_file`` (one term per line, ``#`` comments): whole-word,
    case-insensitive matches flag a row without asking. ``policy`` for flagged rows: ``fuse``
    (flag only), ``keep_unfused`` (the caption is the VC, no fusion) or ``exclude`` (status
    ``ethics_excluded``: export skips the row). ``on_unparseable``: how to treat an answer that
    is neither yes nor no, or a failed LLM batch (the reason is recorded either way).
    """

    enabled: bool = False
    generation: GenerationConfig | None = None
    blocklist: tuple[str, ...] = ()
    blocklist_file: str | None = None
    policy: str = "fuse"
    on_unparseable: str = "not_flagged"
    prompt_id: str = "veclip-ethics-v1"
    max_text_chars: int = 1000
    share_model_across_processes: bool = False
    isolate_failed_batches: bool = True
    chat_template: str = "auto"  # as FusionConfig.chat_template
    # set by the dedup phases (pipeline.dedup) only: rows marked as another row's duplicate
    # pass through untouched, to take that row's result afterwards
    inherit_duplicates: bool = False

    def __post_init__(self) -> None:
        from llm_fusion.ethics_prompts import ETHICS_PROMPTS

        validate_chat_template_value(self.chat_template)

        if self.policy not in ETHICS_POLICIES:
            raise ValueError(f"policy must be one of {ETHICS_POLICIES}, got {self.policy!r}")
        if self.on_unparseable not in ON_UNPARSEABLE:
            raise ValueError(f"on_unparseable must be one of {ON_UNPARSEABLE}")
        if self.generation is not None and not isinstance(self.generation, GenerationConfig):
            raise TypeError("generation must be a pipeline.generation.GenerationConfig or None")
        if isinstance(self.blocklist, str):
            raise TypeError("blocklist must be a tuple of terms, not one string")
        object.__setattr__(self, "blocklist", tuple(t for t in self.blocklist if t.strip()))
        if self.prompt_id not in ETHICS_PROMPTS:
            raise ValueError(f"unknown ethics prompt {self.prompt_id!r}: {sorted(ETHICS_PROMPTS)}")
        if self.max_text_chars < 1:
            raise ValueError("max_text_chars must be >= 1")
        if self.enabled and self.generation is None and not (self.blocklist or self.blocklist_file):
            raise ValueError("the ethics check is enabled but has neither an LLM nor a blocklist")


__all__ = ["ETHICS_POLICIES", "FALLBACKS", "ON_UNPARSEABLE", "EthicsConfig", "FusionConfig"]
