"""Choosing and loading a backend: kept apart from the backends so no module imports in a circle.

One engine per model per process: :func:`load_generator` keeps the engines it loaded (weakly,
keyed by :meth:`GenerationConfig.engine_key`), so two stages that ask for the same model with
the same load settings — the ethics check and fusion, by default — share one copy of the
weights and one lock. A stage whose decoding settings differ (``max_new_tokens``, sampling)
gets a view of the shared engine with its own settings (``with_config``).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from pipeline.generation.config import GenerationConfig, Generator

_ENGINES: weakref.WeakValueDictionary[tuple, Any] = weakref.WeakValueDictionary()
_LOADING = threading.Lock()


def _load(config: GenerationConfig, multimodal: bool) -> Generator:
    if config.backend == "vllm":
        from pipeline.generation.vllm_backend import VllmGenerator

        return VllmGenerator(config, multimodal=multimodal)
    from pipeline.generation.transformers_backend import TransformersGenerator

    return TransformersGenerator(config, multimodal=multimodal)


def load_generator(config: GenerationConfig, multimodal: bool) -> Generator:
    """The model named by ``config`` on its backend (``multimodal`` for image-text models),
    loaded once per process and load settings; see the module doc."""
    key = (config.engine_key(), multimodal)
    with _LOADING:  # two stages' workers loading at once must not load twice
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _load(config, multimodal)
            _ENGINES[key] = engine
    if engine.config == config:
        return engine
    return engine.with_config(config)


def loaded_engines() -> int:
    """How many engines this process holds (for tests and diagnostics)."""
    return len(_ENGINES)


__all__ = ["load_generator", "loaded_engines"]
