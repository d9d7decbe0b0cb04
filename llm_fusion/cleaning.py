"""Turning raw LLM output into a caption, and deciding when the output is unusable.

:func:`clean_output` strips what chat models wrap around an answer (preambles, labels, quotes,
markdown, notes), keeps one paragraph, cuts an unfinished trailing sentence and bounds the length
in CLIP tokens. :func:`rejection_reason` says why a cleaned output must not become the caption
(empty, a copy of the prompt, a refusal, mostly non-words, a degenerate repetition).
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from enum import Enum

from llm_fusion.clip_tokens import ApproxClipTokenCounter, TokenCounter


class RejectReason(str, Enum):
    """Why an LLM output was not used (the value goes into ``fusion_reason``)."""

    EMPTY = "llm_empty"
    PROMPT_COPY = "llm_prompt_copy"
    REFUSAL = "llm_refusal"
    NON_WORDS = "llm_non_words"
    REPETITION = "llm_repetition"

    def __str__(self) -> str:
        return self.value


_LABEL = (
    r"(?:(?:new|merged|fused|final|refined|combined|improved|enriched|rewritten|generated|"
    r"resulting|output)\s+)?(?:caption|sentence|description|answer|output|response|result|alt\s*text)"
    r"(?:\s*\([^)]{0,40}\))?"
)
_PREAMBLES = [
    # "Sure, here is the merged caption:", "Here's a fused caption that ...:"
    re.compile(
        r"^(?:(?:sure|certainly|of course|absolutely|okay|ok|great|alright)[,.!]?\s*)?"
        r"here(?:'s| is| are)\b[^:\n]{0,80}?\b(?:caption|sentence|description|version|merged|"
        r"fused|combined|result|answer|rewrite)\b[^:\n]{0,80}(?::|\n)\s*",
        re.IGNORECASE,
    ),
    # a lone "Sure!" / "Certainly." line or sentence before the answer
    re.compile(
        r"^(?:sure|certainly|of course|absolutely|okay|ok|alright)\s*[,.!:]+\s*", re.IGNORECASE
    ),
    # "New caption:", "Caption -", "**Merged sentence:**", "ASSISTANT:"
    re.compile(rf"^[*_#\s]*{_LABEL}[*_]*\s*(?::|\s[-\u2013\u2014]\s)\s*[*_]*\s*", re.IGNORECASE),
    re.compile(r"^(?:assistant|gpt|bot|a)\s*:\s*", re.IGNORECASE),
]
_NOTE_LINE = re.compile(
    r"^\s*[(\[]?\s*(?:note|notes|explanation|reasoning|disclaimer|p\.?s)\b\s*[:.\-]", re.IGNORECASE
)
_QUOTE_PAIRS = {
    '"': '"',
    "'": "'",
    "\u201c": "\u201d",
    "\u2018": "\u2019",
    "\u00ab": "\u00bb",
    "`": "`",
}
_TERMINAL = ".!?\u3002\uff01\uff1f"
# Abbreviations after which a period does not end a sentence.
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "st",
        "mt",
        "ft",
        "jr",
        "sr",
        "co",
        "inc",
        "ltd",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "u.s",
        "u.k",
        "no",
        "vol",
        "fig",
        "approx",
        "ca",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "ave",
        "blvd",
        "rd",
    ]
)
_REFUSAL = re.compile(
    r"^(?:i'?m sorry|i am sorry|sorry[,.!]|i apologi[sz]e|as an ai\b|as a language model|"
    r"i (?:cannot|can't|can not|won't|am unable to|'m unable to|am not able to|'m not able to)|"
    r"unfortunately,? i\b|i do not have|i don't have|there is no (?:alt|visual|caption|sentence))",
    re.IGNORECASE,
)
_REFUSAL_ANYWHERE = re.compile(
    r"\b(?:as an ai(?: language model)?|i'?m sorry, but)\b", re.IGNORECASE
)
_DATA_TAG = re.compile(
    r"</?\s*(?:alt_text|visual_caption)\s*>|&lt;/?(?:alt_text|visual_caption)&gt;"
)


def _strip_preambles(text: str) -> str:
    changed = True
    while changed:
        changed = False
        for pattern in _PREAMBLES:
            new = pattern.sub("", text, count=1)
            if new != text:
                text, changed = new, True
    return text


def _strip_markdown(text: str) -> str:
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)  # [text](url) -> text
    text = re.sub(r"(\*\*|__)(.+?)\1", r"\2", text)  # bold
    text = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"\1", text)  # *italic*
    text = re.sub(r"(?m)^\s*(?:#{1,6}\s+|>\s+|[-*+\u2022]\s+|\d+[.)]\s+)", "", text)
    return text.replace("**", "").replace("`", "")


def _strip_quotes(text: str) -> str:
    while len(text) >= 2 and text[0] in _QUOTE_PAIRS and text[-1] == _QUOTE_PAIRS[text[0]]:
        inner = text[1:-1].strip()
        # '"A" and "B"' is not one quoted caption: stop when the opening quote recurs inside.
        if text[0] in inner or (_QUOTE_PAIRS[text[0]] in inner and text[0] != "'"):
            break
        text = inner
    # a quoted caption followed by its full stop: "A dog on a beach".
    m = re.fullmatch(r'["\u201c](.+?)["\u201d]([.!?]?)', text)
    if m and '"' not in m.group(1):
        text = m.group(1) + m.group(2)
    return text.strip()


def _first_paragraph(text: str) -> str:
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    if not paragraphs:
        return ""
    lines = [line for line in paragraphs[0].splitlines() if line.strip()]
    # Drop note/explanation lines that trail the caption inside the same paragraph.
    kept: list[str] = []
    for line in lines:
        if kept and _NOTE_LINE.match(line):
            break
        kept.append(line.strip())
    return " ".join(kept)


def sentence_ends(text: str) -> list[int]:
    """Positions just after each sentence-ending punctuation mark (abbreviations excluded)."""
    ends = []
    for m in re.finditer(rf"[{_TERMINAL}]+[\"'\u201d\u2019)]*(?=\s|$)", text):
        if m.group()[0] == ".":
            word = re.search(r"([\w.]+)$", text[: m.start()])
            token = word.group(1).lower() if word else ""
            if token in _ABBREVIATIONS or re.fullmatch(r"[a-z]", token):
                continue  # "St. Louis", "J. Smith"
        ends.append(m.end())
    return ends


def cut_unfinished_sentence(text: str) -> str:
    """Drop a trailing sentence without an end mark when a finished sentence precedes it.

    A single unfinished sentence is kept (minus a dangling comma or dash): a caption fragment is
    still a caption, and it is what generation stopped at ``max_new_tokens`` leaves.
    """
    text = text.rstrip()
    if not text or text[-1] in _TERMINAL or text[-1] in "\"'\u201d\u2019)":
        return text
    ends = sentence_ends(text)
    if ends:
        return text[: ends[-1]].rstrip()
    return text.rstrip(" ,;:-\u2013\u2014")


def bound_length(text: str, max_tokens: int, counter: TokenCounter) -> str:
    """Cut ``text`` to ``max_tokens`` content tokens, at a sentence end when one keeps >= half."""
    if counter.count(text) <= max_tokens:
        return text
    cut = counter.truncate(text, max_tokens)
    ends = [e for e in sentence_ends(cut) if e >= len(cut) // 2]
    if ends:
        return cut[: ends[-1]].rstrip()
    return cut.rstrip(" ,;:-\u2013\u2014")


def clean_output(raw: str, *, max_tokens: int = 75, counter: TokenCounter | None = None) -> str:
    """The caption inside a raw LLM output (may be empty: see :func:`rejection_reason`)."""
    text = unicodedata.normalize("NFC", html.unescape(raw or ""))
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    text = _strip_markdown(_strip_preambles(text))
    text = _first_paragraph(text)
    text = _strip_quotes(_strip_preambles(text.strip()))
    text = re.sub(r"\s+", " ", text).strip()
    text = cut_unfinished_sentence(text)
    return bound_length(text, max_tokens, counter or ApproxClipTokenCounter())


def _words(text: str) -> list[str]:
    return re.findall(r"\S+", text)


def _is_wordlike(token: str) -> bool:
    core = token.strip("\"'()[]{}.,;:!?\u201c\u201d\u2018\u2019-\u2013\u2014")
    if not core:
        return False
    if re.fullmatch(r"\d+(?:[.,:/-]\d+)*(?:st|nd|rd|th|s|%|k|m|cm|mm|km|kg)?", core, re.IGNORECASE):
        return True
    if not re.fullmatch(r"[^\W\d_]+(?:['\u2019-][^\W\d_]+)*", core):
        return False
    if len(core) > 25:
        return False
    # Latin-script words need a vowel ("xkcdq" is noise); other scripts pass.
    has_vowel = re.search(r"[aeiouy]", core, re.IGNORECASE) is not None
    return has_vowel or not core.isascii() or len(core) <= 3


def _normalize_words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.lower())


@functools.lru_cache(maxsize=16)
def _prompt_shingles(instruction_text: str, shingle: int) -> frozenset[tuple[str, ...]]:
    words = _normalize_words(instruction_text)
    return frozenset(tuple(words[i : i + shingle]) for i in range(len(words) - shingle + 1))


def _copies_prompt(cleaned: str, instruction_text: str, shingle: int = 6) -> bool:
    words = _normalize_words(cleaned)
    if len(words) < shingle:
        return False
    prompt_shingles = _prompt_shingles(instruction_text, shingle)  # one prompt per job: cached
    hits = sum(
        tuple(words[i : i + shingle]) in prompt_shingles for i in range(len(words) - shingle + 1)
    )
    # One shared phrase can be chance; a third of the output's phrases is an echo.
    return hits >= max(1, (len(words) - shingle + 1) // 3)


def _has_loop(words: list[str], max_n: int = 8) -> bool:
    """A degenerate decoding loop: one word 4 times in a row, or a phrase 3 times in a row."""
    for n in range(1, max_n + 1):
        need = 4 if n == 1 else 3
        for i in range(len(words) - n * need + 1):
            gram = words[i : i + n]
            if all(words[i + k * n : i + (k + 1) * n] == gram for k in range(1, need)):
                return True
    return False


def rejection_reason(
    cleaned: str,
    *,
    instruction_text: str = "",
    min_word_fraction: float = 0.6,
) -> RejectReason | None:
    """Why ``cleaned`` must not become the caption, or None when it is usable.

    ``instruction_text`` is the prompt without its data (see ``FusionPrompt.instruction_text``):
    an output that repeats it, including the in-context example's answer, is an echo, whereas an
    output that repeats the visual caption is a (lazy but valid) caption.
    """
    if not cleaned or not re.search(r"[^\W_]", cleaned):
        return RejectReason.EMPTY
    if _REFUSAL.match(cleaned) or _REFUSAL_ANYWHERE.search(cleaned):
        return RejectReason.REFUSAL
    if _DATA_TAG.search(cleaned) or (
        instruction_text and _copies_prompt(cleaned, instruction_text)
    ):
        return RejectReason.PROMPT_COPY
    tokens = _words(cleaned)
    if sum(_is_wordlike(t) for t in tokens) < min_word_fraction * len(tokens):
        return RejectReason.NON_WORDS
    words = _normalize_words(cleaned)
    if (len(words) >= 8 and len(set(words)) < 0.3 * len(words)) or _has_loop(words):
        return RejectReason.REPETITION
    return None


__all__ = [
    "RejectReason",
    "bound_length",
    "clean_output",
    "cut_unfinished_sentence",
    "rejection_reason",
    "sentence_ends",
]
