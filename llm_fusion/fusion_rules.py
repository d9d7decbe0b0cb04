"""What happens to one record in the fusion stage, as pure functions (the Beam stage wires them).

Every record ends in exactly one of these states:

* passed through untouched: status is not ok, or a caption was already chosen (the ethics check's
  ``keep_unfused`` policy, or a resumed row);
* ``fusion_source="visual"``: the AltText carries no knowledge (skip rule, no LLM call), or the
  LLM output was rejected / its batch failed and the fallback is ``visual``;
* ``fusion_source="alt"``: no visual caption (the captioner did not run), or fallback ``alt``;
* ``fusion_source="llm"``: the cleaned LLM output;
* status ``fusion_failed``: fallback ``none`` after a rejection or failure, or neither a visual
  caption nor an informative AltText to caption with.

``fusion_reason`` says why whenever the source is not ``llm`` (a code, ``code: detail`` for
errors); ``fusion_model`` and ``fusion_prompt_id`` are set when the LLM was asked.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_fusion.alt_text_rules import (
    SkipReason,
    alt_text_in_visual_caption,
    skip_reason,
    truncate_alt_text,
)
from llm_fusion.cleaning import bound_length, clean_output, rejection_reason
from llm_fusion.clip_tokens import TokenCounter, make_token_counter
from llm_fusion.config import FusionConfig
from llm_fusion.errors import describe_error
from llm_fusion.prompts import FusionPrompt, get_prompt
from pipeline.generation.precision import engine_label
from schemas import Record, Status

SOURCE_LLM = "llm"
SOURCE_VISUAL = "visual"
SOURCE_ALT = "alt"

REASON_NO_VISUAL_CAPTION = "no_visual_caption"
REASON_LLM_ERROR = "llm_error"
REASON_INTERNAL_ERROR = "internal_error"


@dataclass
class FusionRules:
    """A fusion config with its prompt resolved and its token counter built (picklable)."""

    config: FusionConfig
    prompt: FusionPrompt
    counter: TokenCounter

    @classmethod
    def from_config(cls, config: FusionConfig) -> FusionRules:
        prompt = get_prompt(config.prompt_id, config.prompt_file)
        return cls(config, prompt, make_token_counter(config.clip_tokenizer))

    # -- before the LLM ------------------------------------------------------------------

    @property
    def recorded_model(self) -> str:
        return self.config.model_name or self.config.generation.model

    def already_fused(self, record: Record) -> bool:
        """A caption was chosen before and stands: by the rules alone (no LLM asked, e.g. the
        ethics check's keep_unfused), or by this model, prompt and engine (backend/dtype).
        Rows from before engines were recorded (``fusion_engine`` unset) match any engine."""
        if self.config.inherit_duplicates and record.fusion_of:
            return True  # dedup: its pair's canonical row is fused, and it takes that caption
        if record.fusion_source is None:
            return False
        if record.fusion_model is None:
            return True
        return (
            record.fusion_model == self.recorded_model
            and record.fusion_prompt_id == self.prompt.prompt_id
            and record.fusion_engine in (None, engine_label(self.config.generation))
        )

    def plan(self, record: Record) -> Record | None:
        """The finished record when no LLM call is needed, else None (send it to the LLM).

        Call only on ok records without a chosen caption; others pass through as they are.
        """
        visual = _text(record.visual_caption)
        reason = skip_reason(record.alt_text, self.config.extra_boilerplate)
        if reason is not None and reason is not SkipReason.EMPTY and not self.config.skip_rules:
            reason = None  # rules off: anything but an empty AltText goes to the LLM
        if visual is None:
            if reason is None:
                return self._use_alt(record, REASON_NO_VISUAL_CAPTION)
            return self._failed(
                record, str(reason), f"no visual caption and the AltText is unusable ({reason})"
            )
        if reason is not None:
            return self._use_visual(record, str(reason))
        if self.config.skip_rules and alt_text_in_visual_caption(record.alt_text or "", visual):
            return self._use_visual(record, str(SkipReason.IN_VISUAL_CAPTION))
        return None

    def user_text(self, record: Record) -> str:
        """The user message for ``record``: both texts bounded, escaped and delimited."""
        alt = truncate_alt_text(record.alt_text or "", self.config.max_alt_text_chars)
        visual = truncate_alt_text(
            record.visual_caption or "", self.config.max_visual_caption_chars
        )
        return self.prompt.user_text(alt, visual)

    # -- after the LLM -------------------------------------------------------------------

    def apply_output(self, record: Record, raw_output: str, model_id: str | None) -> Record:
        """The record with the cleaned LLM output, or the fallback when it is rejected."""
        record = self._provenance(record, model_id)
        cleaned = clean_output(
            raw_output, max_tokens=self.config.caption_token_budget, counter=self.counter
        )
        reject = rejection_reason(
            cleaned,
            instruction_text=self.prompt.instruction_text(),
            min_word_fraction=self.config.min_word_fraction,
        )
        if reject is not None:
            return self.fallback(record, str(reject), detail=_preview(raw_output))
        return record.replace(fused_caption=cleaned, fusion_source=SOURCE_LLM, fusion_reason=None)

    def apply_failure(self, record: Record, error: object, model_id: str | None) -> Record:
        """The record after its LLM batch failed: the configured fallback, error recorded.

        ``error`` is an exception, a message, or Beam's dead-letter (type, repr, traceback).
        """
        detail = describe_error(error)
        return self.fallback(self._provenance(record, model_id), REASON_LLM_ERROR, detail=detail)

    def fallback(self, record: Record, reason: str, *, detail: str | None = None) -> Record:
        """Apply ``config.fallback`` for a row whose LLM caption is unusable."""
        full_reason = f"{reason}: {detail}" if detail else reason
        if self.config.fallback == SOURCE_VISUAL and _text(record.visual_caption):
            return self._use_visual(record, full_reason)
        if self.config.fallback == SOURCE_ALT and skip_reason(record.alt_text) is None:
            return self._use_alt(record, full_reason)
        return self._failed(record, full_reason, f"fusion failed ({full_reason})")

    # -- helpers -------------------------------------------------------------------------

    def _bounded(self, text: str) -> str:
        text = " ".join(text.split())
        return bound_length(text, self.config.caption_token_budget, self.counter)

    def _use_visual(self, record: Record, reason: str) -> Record:
        return record.replace(
            fused_caption=self._bounded(record.visual_caption or ""),
            fusion_source=SOURCE_VISUAL,
            fusion_reason=reason,
        )

    def _use_alt(self, record: Record, reason: str) -> Record:
        alt = truncate_alt_text(record.alt_text or "", self.config.max_alt_text_chars)
        return record.replace(
            fused_caption=self._bounded(alt), fusion_source=SOURCE_ALT, fusion_reason=reason
        )

    def _failed(self, record: Record, reason: str, error: str) -> Record:
        return record.fail(Status.FUSION_FAILED, error).replace(
            fused_caption=None, fusion_source=None, fusion_reason=reason
        )

    def _provenance(self, record: Record, model_id: str | None) -> Record:
        return record.replace(
            fusion_model=self.config.model_name or model_id or self.config.generation.model,
            fusion_prompt_id=self.prompt.prompt_id,
            fusion_engine=engine_label(self.config.generation),
        )


def _text(value: str | None) -> str | None:
    return value if value is not None and value.strip() else None


def _preview(text: str, limit: int = 120) -> str:
    """A one-line excerpt of a rejected output, for the reason column."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


__all__ = [
    "REASON_LLM_ERROR",
    "REASON_NO_VISUAL_CAPTION",
    "SOURCE_ALT",
    "SOURCE_LLM",
    "SOURCE_VISUAL",
    "FusionRules",
]
