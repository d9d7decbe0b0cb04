"""VeCLIP's "LLM ethical check" before fusion: a term blocklist and an LLM yes/no question.

``EthicsCheckStage`` (off unless ``EthicsConfig.enabled``) sets ``ethics_flagged`` and
``ethics_reason`` on every ok row it checks, then applies the policy to flagged rows:

* ``fuse``: flag only; the row is fused as usual;
* ``keep_unfused``: the caption is the visual caption, ``fusion_source="visual"`` and
  ``fusion_reason="ethics_flagged"`` (the fusion stage then passes the row through);
* ``exclude``: status ``ethics_excluded`` (image bytes dropped), so export skips the row.

A blocklist hit flags the row without an LLM call. An answer that is neither yes nor no, or a
failed LLM batch, counts as ``on_unparseable`` says, with the reason recorded. Rows in == rows out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference

from llm_fusion.alt_text_rules import truncate_alt_text
from llm_fusion.cleaning import bound_length
from llm_fusion.clip_tokens import CLIP_CONTEXT_LENGTH, ApproxClipTokenCounter, content_budget
from llm_fusion.config import EthicsConfig
from llm_fusion.errors import describe_error, internal_error_record
from llm_fusion.ethics_prompts import ETHICS_PROMPTS, parse_yes_no
from llm_fusion.fusion_rules import REASON_INTERNAL_ERROR, SOURCE_VISUAL
from llm_fusion.handler import GeneratorLoader, TextLLMHandler, load_text_generator
from llm_fusion.prompts import FusionPrompt
from pipeline.generation.recovery import EngineFatalError, is_fatal_dead_letter
from pipeline.generation.templates import chat_template_choice
from schemas import Record, Status

_LOG = logging.getLogger(__name__)
_LLM = "llm"
REASON_ETHICS_FLAGGED = "ethics_flagged"


class Blocklist:
    """Whole-word, case-insensitive term matching (multi-word terms match any whitespace)."""

    def __init__(self, terms: Iterable[str]) -> None:
        self.terms = tuple(dict.fromkeys(t.strip() for t in terms if t.strip()))
        if self.terms:
            # Longest first, so "hate speech" wins over "hate" in the reported term.
            alternatives = [
                r"\s+".join(re.escape(word) for word in term.split())
                for term in sorted(self.terms, key=len, reverse=True)
            ]
            self._pattern: re.Pattern | None = re.compile(
                r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE
            )
        else:
            self._pattern = None

    def find(self, *texts: str | None) -> str | None:
        """The first blocked term found in any of ``texts`` (as written there), or None."""
        if self._pattern is None:
            return None
        for text in texts:
            if text:
                match = self._pattern.search(text)
                if match:
                    return " ".join(match.group().split())
        return None

    def __len__(self) -> int:
        return len(self.terms)


def read_blocklist_file(path: str) -> list[str]:
    """Terms from a UTF-8 file (any fsspec path): one per line, ``#`` starts a comment."""
    import fsspec

    with fsspec.open(path, "r", encoding="utf-8") as f:
        lines = f.read().splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


@dataclass
class EthicsRules:
    """The ethics config with its prompt and blocklist resolved (picklable)."""

    config: EthicsConfig
    prompt: FusionPrompt
    blocklist: Blocklist

    @classmethod
    def from_config(cls, config: EthicsConfig) -> EthicsRules:
        terms = list(config.blocklist)
        if config.blocklist_file:
            terms += read_blocklist_file(config.blocklist_file)
        return cls(config, ETHICS_PROMPTS[config.prompt_id], Blocklist(terms))

    @property
    def uses_llm(self) -> bool:
        return self.config.generation is not None

    def needs_check(self, record: Record) -> bool:
        if self.config.inherit_duplicates and record.fusion_of:
            return False  # dedup: takes the verdict of its pair's canonical row
        return record.ok and record.ethics_flagged is None

    def check_without_llm(self, record: Record) -> Record | None:
        """The finished record when the blocklist decides (or there is no LLM), else None."""
        term = self.blocklist.find(record.alt_text, record.visual_caption)
        if term is not None:
            return self.flag(record, f"blocklist: {term}")
        if not self.uses_llm:
            return record.replace(ethics_flagged=False, ethics_reason=None)
        return None

    def user_text(self, record: Record) -> str:
        bound = self.config.max_text_chars
        return self.prompt.user_text(
            truncate_alt_text(record.alt_text or "", bound),
            truncate_alt_text(record.visual_caption or "", bound),
        )

    def apply_answer(self, record: Record, raw_answer: str) -> Record:
        verdict = parse_yes_no(raw_answer)
        if verdict is True:
            return self.flag(record, "llm: yes")
        if verdict is False:
            return record.replace(ethics_flagged=False, ethics_reason=None)
        return self._undecided(record, f"llm_unparseable: {_preview(raw_answer)}")

    def apply_failure(self, record: Record, error: object) -> Record:
        detail = describe_error(error)
        return self._undecided(record, f"llm_error: {detail}")

    def _undecided(self, record: Record, reason: str) -> Record:
        if self.config.on_unparseable == "flagged":
            return self.flag(record, reason)
        return record.replace(ethics_flagged=False, ethics_reason=reason)

    def flag(self, record: Record, reason: str) -> Record:
        """Mark ``record`` flagged and apply the policy."""
        record = record.replace(ethics_flagged=True, ethics_reason=reason)
        policy = self.config.policy
        if policy == "exclude":
            return record.fail(Status.ETHICS_EXCLUDED, f"ethics check: {reason}")
        if policy == "keep_unfused":
            visual = " ".join((record.visual_caption or "").split())
            if not visual:
                return record.fail(
                    Status.FUSION_FAILED,
                    f"ethics check flagged the row ({reason}) and it has no visual caption",
                ).replace(fusion_reason=REASON_ETHICS_FLAGGED)
            caption = bound_length(
                visual, content_budget(CLIP_CONTEXT_LENGTH), ApproxClipTokenCounter()
            )
            return record.replace(
                fused_caption=caption,
                fusion_source=SOURCE_VISUAL,
                fusion_reason=REASON_ETHICS_FLAGGED,
            )
        return record  # "fuse": flag only


def _preview(text: str, limit: int = 80) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


class _EthicsUserText:
    def __init__(self, rules: EthicsRules) -> None:
        self.rules = rules

    def __call__(self, record: Record) -> str:
        return self.rules.user_text(record)


def _internal_error(record: Record, stage: str, exc: BaseException) -> Record:
    return internal_error_record(record, stage, exc, ethics_reason=REASON_INTERNAL_ERROR)


class _RouteForEthics(beam.DoFn):
    def __init__(self, rules: EthicsRules) -> None:
        self.rules = rules
        self.flagged = beam.metrics.Metrics.counter("vecap_ethics", "flagged")

    def process(self, record: Record) -> Iterator:
        if not self.rules.needs_check(record):
            yield record
            return
        try:
            done = self.rules.check_without_llm(record)
        except Exception as exc:
            yield _internal_error(record, "ethics check", exc)
            return
        if done is None:
            yield beam.pvalue.TaggedOutput(_LLM, (record.uid, record))
            return
        if done.ethics_flagged:
            self.flagged.inc()
        yield done


class _ApplyAnswer(beam.DoFn):
    def __init__(self, rules: EthicsRules) -> None:
        self.rules = rules
        self.flagged = beam.metrics.Metrics.counter("vecap_ethics", "flagged")

    def process(self, element: tuple[str, PredictionResult]) -> Iterator[Record]:
        _uid, result = element
        try:
            if isinstance(result.inference, BaseException):  # failed alone after isolation
                out = self.rules.apply_failure(result.example, result.inference)
            else:
                out = self.rules.apply_answer(result.example, result.inference)
        except Exception as exc:
            out = _internal_error(result.example, "ethics answer", exc)
        if out.ethics_flagged:
            self.flagged.inc()
        yield out


class _ApplyEthicsFailure(beam.DoFn):
    def __init__(self, rules: EthicsRules) -> None:
        self.rules = rules

    def process(self, element: tuple) -> Iterator[Record]:
        batch, error = element
        if is_fatal_dead_letter(error):  # fail the bundle: the runner retries it elsewhere
            raise EngineFatalError(f"ethics stage: {describe_error(error)}")
        _LOG.warning("ethics batch of %d rows failed: %s", len(batch), describe_error(error))
        for _uid, record in batch:
            yield self.rules.apply_failure(record, error)


class EthicsCheckStage(beam.PTransform):
    """PCollection[Record] -> PCollection[Record] with ``ethics_flagged``/``ethics_reason``.

    With ``enabled=False`` the stage returns its input unchanged.
    """

    def __init__(
        self, config: EthicsConfig, *, generator_loader: GeneratorLoader = load_text_generator
    ) -> None:
        super().__init__()
        self.config = config
        self.rules = EthicsRules.from_config(config) if config.enabled else None
        self.handler = (
            TextLLMHandler(
                config.generation,
                _EthicsUserText(self.rules),
                metrics_namespace="vecap_ethics",
                share_model_across_processes=config.share_model_across_processes,
                generator_loader=generator_loader,
                isolate_failed_batches=config.isolate_failed_batches,
                chat_template=chat_template_choice(config.chat_template),
            )
            if self.rules is not None and config.generation is not None
            else None
        )

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        if self.rules is None:
            return records
        routed = records | "RouteForEthics" >> beam.ParDo(_RouteForEthics(self.rules)).with_outputs(
            _LLM, main="done"
        )
        if self.handler is None:
            return routed["done"]
        answered, dead_letters = (
            routed[_LLM]
            | "EthicsLLM"
            >> RunInference(
                KeyedModelHandler(self.handler), model_identifier=self.handler.shared_model_tag()
            ).with_exception_handling()
        )
        judged = answered | "ApplyEthicsAnswer" >> beam.ParDo(_ApplyAnswer(self.rules))
        recovered = dead_letters.failed_inferences | "ApplyEthicsFailure" >> beam.ParDo(
            _ApplyEthicsFailure(self.rules)
        )
        return (routed["done"], judged, recovered) | "MergeEthics" >> beam.Flatten()


__all__ = ["Blocklist", "EthicsCheckStage", "EthicsRules", "read_blocklist_file"]
