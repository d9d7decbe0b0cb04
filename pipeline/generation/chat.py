"""Rendering one user turn into the exact prompt string a model expects (its chat template)."""

from __future__ import annotations

from typing import Any


def render_chat(
    processor_or_tokenizer: Any,
    user_text: str,
    *,
    image: bool,
    system: str | None = None,
    fallback_template: str,
) -> str:
    """The prompt string for one user turn, ready for the model (generation prompt appended).

    Uses the chat template of the processor or tokenizer when it has one (llava-1.5 renders
    ``USER: <image>\\n... ASSISTANT:``, llava-next and other image-text-to-text models their own);
    otherwise ``fallback_template.format(user=..., system=...)`` — the fallback must then carry
    the model's image placeholder itself when ``image`` is true.
    """
    template = _chat_template(processor_or_tokenizer)
    if template is None:
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
        messages, add_generation_prompt=True, tokenize=False
    )
    return _without_template_bos(processor_or_tokenizer, text)


def _without_template_bos(processor_or_tokenizer: Any, text: str) -> str:
    """Drop a BOS the chat template wrote when tokenizing will add one anyway.

    Llama 2/3 and Mistral templates start with ``{{ bos_token }}``, and both backends tokenize
    the rendered string with special tokens on (transformers' tokenizer call, vLLM's prompt
    path), which would give two BOS tokens — a known quality loss for those models.
    """
    tokenizer = getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)
    bos = getattr(tokenizer, "bos_token", None)
    if not bos or not text.startswith(bos):
        return text
    added = tokenizer("", add_special_tokens=True)["input_ids"]
    if tokenizer.bos_token_id in added:
        return text[len(bos) :]
    return text


def _chat_template(obj: Any) -> str | None:
    # Only the object's own template: a processor whose template sits on its text tokenizer alone
    # (older checkpoints) would render without the image placeholder, so it takes the fallback.
    return getattr(obj, "chat_template", None) or None
