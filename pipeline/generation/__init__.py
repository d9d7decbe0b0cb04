"""The generation layer shared by the captioner (``llava_recap``) and the fusion step (``llm_fusion``).

- ``config``: :class:`GenerationConfig` and the :class:`Generator` interface;
- ``chat``: :func:`render_chat`, a user turn through the model's chat template;
- ``factory``: :func:`load_generator`, which imports a backend only when asked for it;
- ``transformers_backend`` / ``vllm_backend``: the two backends (they import ``config`` only).
"""

from pipeline.generation.chat import render_chat
from pipeline.generation.config import BACKENDS, DTYPES, GenerationConfig, Generator, check_aligned
from pipeline.generation.factory import load_generator

__all__ = [
    "BACKENDS",
    "DTYPES",
    "GenerationConfig",
    "Generator",
    "check_aligned",
    "load_generator",
    "render_chat",
]
