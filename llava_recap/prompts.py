"""Versioned caption prompts and per-family fallback prompt layouts.

A prompt's text never changes under its id: a new wording gets a new id, so the
``caption_prompt_id`` recorded on every row says exactly which words produced the caption.
The prompt is rendered through the model's chat template when the processor has one
(:func:`pipeline.generation.render_chat`); the fallback layouts below cover checkpoints that ship
without a template.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CaptionPrompt:
    id: str
    text: str
    note: str = ""


PROMPTS: dict[str, CaptionPrompt] = {
    p.id: p
    for p in (
        CaptionPrompt(
            "veclip-concise-v1",
            "Describe the image concisely, less than 20 words.",
            "VeCLIP's captioning prompt (arXiv 2310.07699, sec. 3.1)",
        ),
        CaptionPrompt(
            "short-caption-v1",
            "Write a short caption for this image.",
            "a one-line alternative",
        ),
        CaptionPrompt(
            "detailed-v1",
            "Describe this image in detail.",
            "long-form captions; raise max_new_tokens",
        ),
    )
}
DEFAULT_PROMPT_ID = "veclip-concise-v1"

# Layouts for checkpoints without a chat template, by model family. {user}/{system} as in
# pipeline.generation.render_chat; each carries the family's image placeholder.
FALLBACK_TEMPLATES: dict[str, str] = {
    "llava-1.5": "USER: <image>\n{user} ASSISTANT:",
    "llava-next-mistral": "[INST] <image>\n{user} [/INST]",
    "llava-next-vicuna": (
        "A chat between a curious human and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the human's questions. "
        "USER: <image>\n{user} ASSISTANT:"
    ),
    "llava-next-34b": (
        "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\n"
        "{user}<|im_end|><|im_start|>assistant\n"
    ),
}


def get_prompt(prompt_id: str) -> CaptionPrompt:
    try:
        return PROMPTS[prompt_id]
    except KeyError:
        known = ", ".join(sorted(PROMPTS))
        raise ValueError(
            f"unknown caption prompt id {prompt_id!r}; known: {known} "
            "(or pass prompt_text with a new prompt_id)"
        ) from None


def fallback_template_for(model: str) -> str:
    """The family layout guessed from a model id or path; llava-1.5's when nothing matches."""
    name = model.lower()
    if "mistral" in name and ("next" in name or "v1.6" in name):
        return FALLBACK_TEMPLATES["llava-next-mistral"]
    if "34b" in name and ("next" in name or "v1.6" in name):
        return FALLBACK_TEMPLATES["llava-next-34b"]
    if "vicuna" in name and ("next" in name or "v1.6" in name):
        return FALLBACK_TEMPLATES["llava-next-vicuna"]
    return FALLBACK_TEMPLATES["llava-1.5"]


__all__ = [
    "DEFAULT_PROMPT_ID",
    "FALLBACK_TEMPLATES",
    "PROMPTS",
    "CaptionPrompt",
    "fallback_template_for",
    "get_prompt",
]
