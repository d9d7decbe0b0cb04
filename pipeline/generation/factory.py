"""Choosing and loading a backend: kept apart from the backends so no module imports in a circle.

One engine per model per process: :func:`load_generator` keeps the engines it loaded, keyed by
:meth:`GenerationConfig.engine_key`, so two stages that ask for the same model with the same
load settings — the ethics check and fusion, by default — share one copy of the weights and
one lock, and the local runner's waves do not reload the models. A stage whose decoding
settings differ (``max_new_tokens``, sampling) gets a view of the shared engine with its own
settings (``with_config``). The engines are held until :func:`release_engines`: vLLM's
in-process engines share process-wide state (its parallel groups) that deleting one of them
tears down under the others, so engines are released together or not at all. An engine that
hit an engine-fatal error is replaced on the next load.
"""

from __future__ import annotations

import gc
import os
import threading
from typing import Any

from pipeline.generation.config import GenerationConfig, Generator
from pipeline.generation.model_cache import with_local_model
from pipeline.generation.precision import with_resolved_dtype

_ENGINES: dict[tuple, Any] = {}
_LOADING = threading.Lock()


def _process_env(config: GenerationConfig) -> None:
    """Before a backend starts threads or processes: the tokenizers library's own thread pool
    stays off (a Beam worker forks and runs many threads), and an in-process vLLM spawns its
    engine processes instead of forking a process with live gRPC and download threads (a known
    deadlock). A value the user set is left alone; vecap's servers get both themselves
    (engine_server.server_env)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if config.backend == "vllm" and not config.streams:
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")


def _load(config: GenerationConfig, multimodal: bool) -> Generator:
    _process_env(config)
    if config.streams:  # vllm servers (one per GPU) or the user's openai fleet
        from pipeline.generation.server_backend import ServerGenerator

        return ServerGenerator(config, multimodal=multimodal)
    if config.backend == "vllm":
        from pipeline.generation.vllm_backend import VllmGenerator

        return VllmGenerator(config, multimodal=multimodal)
    from pipeline.generation.transformers_backend import TransformersGenerator

    return TransformersGenerator(config, multimodal=multimodal)


def load_generator(config: GenerationConfig, multimodal: bool) -> Generator:
    """The model named by ``config`` on its backend (``multimodal`` for image-text models),
    loaded once per process and load settings; see the module doc. ``dtype: auto`` is made
    concrete first, as the rows' engine label says (:mod:`pipeline.generation.precision`), and
    a checkpoint on an object store is copied to this machine once
    (:mod:`pipeline.generation.model_cache`)."""
    config = with_local_model(with_resolved_dtype(config))
    key = (config.engine_key(), multimodal)
    with _LOADING:  # two stages' workers loading at once must not load twice
        engine = _ENGINES.get(key)
        guard = getattr(engine, "_guard", None)
        if guard is not None and guard.fatal is not None:  # broken: load a fresh one
            engine = None
        if engine is None:
            engine = _load(config, multimodal)
            _ENGINES[key] = engine
    if engine.config == config:
        return engine
    return engine.with_config(config)


def loaded_engines() -> int:
    """How many engines this process holds (for tests and diagnostics)."""
    return len(_ENGINES)


def release_engines() -> None:
    """Drop every engine this process holds (they go once no stage refers to them)."""
    with _LOADING:
        _ENGINES.clear()
    gc.collect()


__all__ = ["load_generator", "loaded_engines", "release_engines"]
