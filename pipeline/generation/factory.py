"""Choosing and loading a backend: kept apart from the backends so no module imports in a circle."""

from __future__ import annotations

from pipeline.generation.config import GenerationConfig, Generator


def load_generator(config: GenerationConfig, multimodal: bool) -> Generator:
    """Load the model named by ``config`` with its backend; ``multimodal`` for image-text models."""
    if config.backend == "vllm":
        from pipeline.generation.vllm_backend import VllmGenerator

        return VllmGenerator(config, multimodal=multimodal)
    from pipeline.generation.transformers_backend import TransformersGenerator

    return TransformersGenerator(config, multimodal=multimodal)
