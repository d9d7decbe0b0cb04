"""The generation layer shared by the captioner (``llava_recap``) and the fusion step (``llm_fusion``).

- ``config``: :class:`GenerationConfig` and the :class:`Generator` interface;
- ``chat``: :func:`render_chat`, a user turn through the model's chat template, and the
  generators' ``chat`` method that renders in the model's own process;
- ``templates``: fallback chat templates per text-model family (``fusion.chat_template``);
- ``factory``: :func:`load_generator`, which imports a backend only when asked for it;
- ``transformers_backend`` / ``vllm_backend``: the two backends (they import ``config`` and
  ``chat`` only).
"""

from pipeline.generation.chat import (
    AUTO,
    ChatMixin,
    ChatTemplateChoice,
    ChatTemplateError,
    render_chat,
)
from pipeline.generation.config import BACKENDS, DTYPES, GenerationConfig, Generator, check_aligned
from pipeline.generation.factory import load_generator

__all__ = [
    "AUTO",
    "BACKENDS",
    "ChatMixin",
    "ChatTemplateChoice",
    "ChatTemplateError",
    "DTYPES",
    "GenerationConfig",
    "Generator",
    "check_aligned",
    "load_generator",
    "render_chat",
]
