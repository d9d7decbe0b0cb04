"""Chat templates for text models that ship none, chosen per model family.

``lmsys/vicuna-7b-v1.5`` (VeCLIP's fusion LLM family) has no ``chat_template``; sending it the
bare user text silently changes what the model sees. The families' real templates live in
``chat_templates/*.jinja`` (sources in ``chat_templates/SOURCES.txt``); ``fusion.chat_template``
picks one:

- ``auto``: the tokenizer's own template; else the family's fallback, told from the tokenizer's
  special tokens, the model config's ``model_type``/``architectures`` and, for Llama-family
  checkpoints that carry no other sign, the model name; else an error;
- a family name (:data:`FAMILIES`): that template, even over the tokenizer's own;
- ``raw``: the bare user text (base models), only when asked for;
- a file path: jinja read from the file (any fsspec path), when the stage is built.
"""

from __future__ import annotations

import logging
from functools import cache
from importlib import resources
from typing import Any

from pipeline.generation.chat import (
    AUTO,
    ChatTemplateChoice,
    ChatTemplateError,
    ResolvedTemplate,
    _chat_template,
)

_LOG = logging.getLogger(__name__)

FAMILIES: tuple[str, ...] = ("vicuna_v1.1", "llama-2", "mistral", "llama-3", "chatml", "qwen2.5")
RAW = "raw"
CHOICES_HELP = f"auto, raw, a template file, or one of {', '.join(FAMILIES)}"


@cache
def family_template(name: str) -> str:
    """The published jinja of family ``name`` (package data)."""
    if name not in FAMILIES:
        raise ChatTemplateError(f"unknown chat template family {name!r}; known: {CHOICES_HELP}")
    path = resources.files("pipeline.generation") / "chat_templates" / f"{name}.jinja"
    return path.read_text(encoding="utf-8")


def chat_template_choice(value: str | None) -> ChatTemplateChoice:
    """``fusion.chat_template`` as a choice; a file is read here (a missing one raises)."""
    value = (value or "auto").strip()
    if value in ("auto", RAW) or value in FAMILIES:
        return ChatTemplateChoice(value)
    import fsspec

    try:
        with fsspec.open(value, "r", encoding="utf-8") as f:
            text = f.read()
    except (FileNotFoundError, IsADirectoryError, OSError) as exc:
        raise ChatTemplateError(
            f"chat_template {value!r} is not {CHOICES_HELP} ({type(exc).__name__}: {exc})"
        ) from exc
    if "{{" not in text and "{%" not in text:
        raise ChatTemplateError(f"chat_template file {value!r} holds no jinja template")
    return ChatTemplateChoice(f"file:{value}", text)


def validate_chat_template_value(value: str) -> None:
    """Config-time check of the form (a file is checked when the stage reads it)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"chat_template must be {CHOICES_HELP}")


def _vocab(tokenizer: Any) -> set[str]:
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    names: set[str] = set()
    for attr in ("all_special_tokens", "additional_special_tokens"):
        names.update(getattr(tokenizer, attr, None) or ())
    added = getattr(tokenizer, "get_added_vocab", None)
    if callable(added):
        names.update(added())
    return names


def detect_family(tokenizer: Any, model_config: Any, model_name: str) -> str | None:
    """The chat family of a text model from its tokenizer, config and name; None if unknown."""
    vocab = _vocab(tokenizer)
    model_type = (getattr(model_config, "model_type", None) or "").lower()
    architectures = " ".join(getattr(model_config, "architectures", None) or ()).lower()
    if "<|start_header_id|>" in vocab or "<|eot_id|>" in vocab:
        return "llama-3"
    if "<|im_start|>" in vocab or model_type.startswith("qwen2") or "qwen2" in architectures:
        return "qwen2.5" if model_type.startswith("qwen2") or "qwen2" in architectures else "chatml"
    if model_type in ("mistral", "mixtral") or "mistral" in architectures:
        return "mistral"
    if model_type == "llama" or "llama" in architectures:
        names = " ".join(
            n.lower()
            for n in (
                model_name,
                getattr(model_config, "_name_or_path", "") or "",
                getattr(getattr(tokenizer, "tokenizer", tokenizer), "name_or_path", "") or "",
            )
        )
        if "vicuna" in names:
            return "vicuna_v1.1"
        if "llama-2" in names or "llama2" in names:
            return "llama-2"
    return None


def _local_checkpoint(model: str) -> str | None:
    """A directory holding ``model`` on this machine (itself, or its hub-cache snapshot), found
    without any network call; None when it is not here."""
    import os

    if os.path.isdir(model):
        return model
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(model, "config.json")
    except ValueError:  # not a valid repo id: not a hub checkpoint either
        return None
    return os.path.dirname(found) if isinstance(found, str) else None


def load_model_config(model: str, trust_remote_code: bool = False) -> Any:
    """The checkpoint's config (``config.json``) from this machine (a local directory or the hub
    cache the loaded model came from: no network), or None when it is not here."""
    local = _local_checkpoint(model)
    if local is None:
        _LOG.info("no local config.json for %s: its family is unknown here", model)
        return None
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(local, trust_remote_code=trust_remote_code)


def resolve_template(
    choice: ChatTemplateChoice,
    tokenizer: Any,
    model: str,
    trust_remote_code: bool = False,
    model_config: Any = None,
) -> ResolvedTemplate:
    """The jinja that ``choice`` means for this model; raises :class:`ChatTemplateError`."""
    if choice.name == RAW:
        return ResolvedTemplate(RAW, None)
    if choice.text is not None:
        return ResolvedTemplate(choice.name, choice.text)
    if choice.name in FAMILIES:
        return ResolvedTemplate(choice.name, family_template(choice.name))
    if choice != AUTO:
        raise ChatTemplateError(f"unknown chat_template {choice.name!r}; use {CHOICES_HELP}")
    own = _chat_template(tokenizer)
    if own is not None:
        return ResolvedTemplate("tokenizer", own)
    if model_config is None:
        model_config = load_model_config(model, trust_remote_code)
    family = detect_family(tokenizer, model_config, model)
    if family is None:
        model_type = getattr(model_config, "model_type", None)
        raise ChatTemplateError(
            f"{model} has no chat template and its family (model_type {model_type!r}) has no "
            f"known fallback: set chat_template to {CHOICES_HELP} (raw sends the bare user "
            "text, for base models)"
        )
    _LOG.warning("%s ships no chat template: using the %s fallback", model, family)
    return ResolvedTemplate(f"fallback:{family}", family_template(family))


def describe_chat_template(value: str, model: str, trust_remote_code: bool = False) -> dict:
    """What the manifest records about a text stage's chat template.

    ``chat_template``: the configured value; ``resolved``: what it means for this model
    (``tokenizer``, ``fallback:<family>``, a family, ``raw``, ``file:<path>``), worked out from
    local files only (a local checkpoint or its hub-cache snapshot: no network at launch) — None
    when they are not here, and the workers then log what they use; ``template_sha256`` of the jinja
    (and the text itself for a file). A choice that cannot work raises here, before the run.
    """
    import hashlib

    choice = chat_template_choice(value)
    out: dict[str, Any] = {"chat_template": value, "resolved": None, "template_sha256": None}
    if choice.text is not None:
        out["template_text"] = choice.text
    tokenizer = config = None
    if choice == AUTO:
        local = _local_checkpoint(model)
        if local is None:
            _LOG.info("%s is not on this machine: the workers resolve its chat template", model)
            return out
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(local, trust_remote_code=trust_remote_code)
            if _chat_template(tokenizer) is None:
                config = load_model_config(local, trust_remote_code)
        except Exception as exc:  # noqa: BLE001 - a checkpoint that does not load fails on
            # the workers with its own error line; here it stays "not resolved"
            _LOG.info("chat template of %s not resolved at launch: %s", model, exc)
            return out
    resolved = resolve_template(choice, tokenizer, model, trust_remote_code, config)
    out["resolved"] = resolved.source
    if resolved.template is not None:
        out["template_sha256"] = hashlib.sha256(resolved.template.encode("utf-8")).hexdigest()
    return out


__all__ = [
    "CHOICES_HELP",
    "describe_chat_template",
    "FAMILIES",
    "RAW",
    "chat_template_choice",
    "detect_family",
    "family_template",
    "load_model_config",
    "resolve_template",
    "validate_chat_template_value",
]
