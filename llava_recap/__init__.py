"""The visual captioner: prompts per model family, the Beam ModelHandler, tiny offline test models.

``from llava_recap import CaptionConfig, CaptionStage`` works; the names load lazily so that
importing the package (e.g. for ``vecap --help``) does not pull in Beam, torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CaptionConfig": "llava_recap.config",
    "CaptionStage": "llava_recap.stage",
    "CaptionModelHandler": "llava_recap.handler",
    "TinyModels": "llava_recap.tiny_models",
    "build_tiny_models": "llava_recap.tiny_models",
    "clean_caption": "llava_recap.cleaning",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llava_recap' has no attribute {name!r}")
