"""Rendering user turns into the exact prompt strings a model expects (its chat template).

Two entry points:

- :func:`render_chat`: one user turn through a processor's or tokenizer's template (or an
  explicit jinja ``template``), else a ``fallback_template`` format string; with neither, an
  error — a prompt never goes out without its template silently.
- :class:`ChatMixin`: the generators' :meth:`~ChatMixin.chat` method, which renders *inside the
  generator's process* and then generates. Beam's cross-process model sharing hands a stage a
  proxy that forwards method calls only (an attribute such as ``processor`` comes back as a
  bound remote method, without a chat template), so a stage must send user texts, never read
  the tokenizer through the proxy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

_LOG = logging.getLogger(__name__)


class ChatTemplateError(ValueError):
    """No usable chat template: the model has none and no fallback applies."""


def render_chat(
    processor_or_tokenizer: Any,
    user_text: str,
    *,
    image: bool,
    system: str | None = None,
    fallback_template: str | None = None,
    template: str | None = None,
    tokenizer_adds_bos: bool | None = None,
) -> str:
    """The prompt string for one user turn, ready for the model (generation prompt appended).

    ``template`` (jinja) overrides the object's own chat template. Otherwise the processor's or
    tokenizer's template is used when it has one (llava-1.5 renders ``USER: <image>\\n...
    ASSISTANT:``, llava-next and other image-text-to-text models their own); otherwise
    ``fallback_template.format(user=..., system=...)`` — the fallback must then carry the
    model's image placeholder itself when ``image`` is true. With no template and no fallback
    this raises :class:`ChatTemplateError`: sending the bare user text is a choice to make
    explicitly (``fallback_template="{user}"``), never a silent default.
    ``tokenizer_adds_bos``: whether tokenizing adds a BOS (None: find out by tokenizing "").
    """
    if template is None:
        template = _chat_template(processor_or_tokenizer)
    if template is None:
        if fallback_template is None:
            raise ChatTemplateError(
                f"{type(processor_or_tokenizer).__name__} has no chat template and no fallback "
                "was given; refusing to send the bare user text"
            )
        return fallback_template.format(user=user_text, system=system or "")
    is_processor = hasattr(processor_or_tokenizer, "tokenizer")
    if image or is_processor:
        # processors' templates expect typed content parts
        content: Any = [{"type": "text", "text": user_text}]
        if image:
            content.insert(0, {"type": "image"})
    else:
        content = user_text
    messages: list[dict[str, Any]] = []
    if system:
        messages.append(
            {"role": "system", "content": [{"type": "text", "text": system}]}
            if is_processor
            else {"role": "system", "content": system}
        )
    messages.append({"role": "user", "content": content})
    text = processor_or_tokenizer.apply_chat_template(
        messages, chat_template=template, add_generation_prompt=True, tokenize=False
    )
    return _without_template_bos(processor_or_tokenizer, text, tokenizer_adds_bos)


def tokenizer_adds_bos(processor_or_tokenizer: Any) -> bool:
    """Whether tokenizing a prompt (special tokens on, as both backends do) adds a BOS."""
    tokenizer = getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)
    if getattr(tokenizer, "bos_token_id", None) is None:
        return False
    return tokenizer.bos_token_id in tokenizer("", add_special_tokens=True)["input_ids"]


def _without_template_bos(processor_or_tokenizer: Any, text: str, adds_bos: bool | None) -> str:
    """Drop a BOS the chat template wrote when tokenizing will add one anyway.

    Llama 2/3 and Mistral templates start with ``{{ bos_token }}``, and both backends tokenize
    the rendered string with special tokens on (transformers' tokenizer call, vLLM's prompt
    path), which would give two BOS tokens — a known quality loss for those models.
    """
    tokenizer = getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)
    bos = getattr(tokenizer, "bos_token", None)
    if not bos or not text.startswith(bos):
        return text
    if adds_bos is None:
        adds_bos = tokenizer_adds_bos(tokenizer)
    return text[len(bos) :] if adds_bos else text


def _chat_template(obj: Any) -> str | None:
    # Only the object's own template: a processor whose template sits on its text tokenizer alone
    # (older checkpoints) would render without the image placeholder, so it takes the fallback.
    template = getattr(obj, "chat_template", None)
    return template if isinstance(template, str) and template else None


@dataclass(frozen=True)
class ChatTemplateChoice:
    """Which chat template a text model's prompts use (``fusion.chat_template``).

    ``name``: ``auto`` (the tokenizer's own template, else the fallback of the model's family,
    else an error), a family name from :data:`pipeline.generation.templates.FAMILIES`, ``raw``
    (the bare user text, for base models — only when asked for), or ``file:<path>`` with the
    file's jinja in ``text`` (read where the config is resolved, so workers carry the text).
    """

    name: str = "auto"
    text: str | None = None

    def __post_init__(self) -> None:
        if self.name.startswith("file:") != (self.text is not None):
            raise ValueError("a file chat template carries its text, and only a file one does")


AUTO = ChatTemplateChoice()


@dataclass(frozen=True)
class ResolvedTemplate:
    """What a choice became for one model: ``source`` names it for logs and the manifest."""

    source: str  # "tokenizer" | "fallback:<family>" | "<family>" | "raw" | "file:<path>"
    template: str | None  # jinja; None for raw
    adds_bos: bool = False  # tokenizing the prompt adds a BOS (a template's own one is dropped)


class ChatMixin:
    """``chat``/``render_prompts`` for a generator that has ``processor``, ``config`` and
    ``generate``; everything runs in the generator's own process.

    Resolving a template tokenizes once (does tokenizing add a BOS?); after that rendering is
    jinja only, so it never touches the tokenizer's padding state while another thread's
    ``generate`` holds the model.
    """

    _resolved_templates: dict[ChatTemplateChoice, ResolvedTemplate]

    def resolve_chat_template(self, choice: ChatTemplateChoice | None = AUTO) -> ResolvedTemplate:
        """The template ``choice`` (None: auto) gives for this model (cached); raises
        ChatTemplateError."""
        from pipeline.generation.templates import resolve_template

        choice = AUTO if choice is None else choice
        cache = self.__dict__.setdefault("_resolved_templates", {})
        if choice not in cache:
            resolved = resolve_template(
                choice, self.processor, self.config.model, self.config.trust_remote_code
            )
            resolved = replace(resolved, adds_bos=tokenizer_adds_bos(self.processor))
            _LOG.info("%s: chat template %s", self.config.model, resolved.source)
            cache[choice] = resolved
        return cache[choice]

    def render_prompts(
        self,
        user_texts: list[str],
        *,
        system: str | None = None,
        chat_template: ChatTemplateChoice | None = AUTO,
    ) -> list[str]:
        """Each user text as the full prompt this (text) model expects."""
        resolved = self.resolve_chat_template(chat_template)
        if resolved.template is None:  # raw, asked for explicitly
            if system:
                raise ChatTemplateError("the raw chat template has no place for a system text")
            return list(user_texts)
        return [
            render_chat(
                self.processor,
                u,
                image=False,
                system=system,
                template=resolved.template,
                tokenizer_adds_bos=resolved.adds_bos,
            )
            for u in user_texts
        ]

    def chat(
        self,
        user_texts: list[str],
        *,
        system: str | None = None,
        chat_template: ChatTemplateChoice | None = AUTO,
    ) -> list[str]:
        """One completion per user text, in order: rendered here, then :meth:`generate`."""
        prompts = self.render_prompts(user_texts, system=system, chat_template=chat_template)
        return self.generate(prompts)  # type: ignore[attr-defined]


__all__ = [
    "AUTO",
    "ChatMixin",
    "ChatTemplateChoice",
    "ChatTemplateError",
    "ResolvedTemplate",
    "render_chat",
    "tokenizer_adds_bos",
]
