"""Turn raw model output into a caption: whitespace, prompt echoes, unfinished sentences."""

from __future__ import annotations

import re

_WHITESPACE = re.compile(r"\s+")
# role labels some checkpoints repeat at the start of their answer
_ROLE_PREFIX = re.compile(r"^(?:(?:assistant|answer|caption|gpt)\s*:\s*)+", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?](?:[\"')\]]*)(?=\s|$)")
_FINISHED = re.compile(r"[.!?][\"')\]]*$")


def collapse_whitespace(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def drop_prompt_echo(text: str, prompt: str | None) -> str:
    """Remove a leading copy of the prompt (and role labels) the model repeated."""
    text = _ROLE_PREFIX.sub("", text).lstrip()
    if prompt:
        echo = collapse_whitespace(prompt)
        if echo and text.lower().startswith(echo.lower()):
            text = text[len(echo) :].lstrip(" :-\n")
            text = _ROLE_PREFIX.sub("", text).lstrip()
    return text


def cut_unfinished_sentence(text: str) -> str:
    """Drop a trailing fragment after the last full sentence (max_new_tokens cut it off).

    Text without any sentence end is kept whole: a short caption like ``a dog on a beach``
    often has no final period, and dropping it would lose the caption.
    """
    if not text or _FINISHED.search(text):
        return text
    ends = list(_SENTENCE_END.finditer(text))
    if not ends:
        return text
    return text[: ends[-1].end()].rstrip()


def clean_caption(raw: str, prompt: str | None = None) -> str:
    """Strip, collapse whitespace, drop a prompt echo, cut an unfinished trailing sentence."""
    text = collapse_whitespace(raw)
    text = drop_prompt_echo(text, prompt)
    text = collapse_whitespace(text)
    return cut_unfinished_sentence(text)


__all__ = ["clean_caption", "collapse_whitespace", "cut_unfinished_sentence", "drop_prompt_echo"]
