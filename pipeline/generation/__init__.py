"""The generation layer shared by the captioner (``llava_recap``) and the fusion step (``llm_fusion``).

- ``config``: :class:`GenerationConfig` and the :class:`Generator` interface;
- ``chat``: :func:`render_chat`, a user turn through the model's chat template, and the
  generators' ``chat`` method that renders in the model's own process;
- ``templates``: fallback chat templates per text-model family (``fusion.chat_template``);
- ``factory``: :func:`load_generator`, which imports a backend only when asked for it and loads
  one engine per model per process (the ethics check reuses the fusion engine);
- ``recovery``: failed batches (free memory, split in halves), engine-fatal errors and the
  circuit breaker (:class:`EngineFatalError`), the lock that serialises calls into one engine;
- ``stops``: the one stop-token set both backends use;
- ``transformers_backend`` / ``vllm_backend``: the two backends (they import ``config``,
  ``chat``, ``recovery`` and ``stops`` only).
"""

from pipeline.generation.chat import (
    AUTO,
    ChatMixin,
    ChatTemplateChoice,
    ChatTemplateError,
    render_chat,
)
from pipeline.generation.config import (
    BACKENDS,
    DTYPES,
    GenerationConfig,
    Generator,
    ModelLoadError,
    check_aligned,
)
from pipeline.generation.factory import load_generator
from pipeline.generation.recovery import EngineFatalError

__all__ = [
    "AUTO",
    "BACKENDS",
    "ChatMixin",
    "ChatTemplateChoice",
    "ChatTemplateError",
    "DTYPES",
    "EngineFatalError",
    "GenerationConfig",
    "Generator",
    "ModelLoadError",
    "check_aligned",
    "load_generator",
    "render_chat",
]
