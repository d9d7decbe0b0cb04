"""The companion CLIP trainer (VeCLIP's mixed AltText/VeC sampling) and zero-shot evaluation.

A library with frozen configs, as open_clip separates ``open_clip`` from ``open_clip_train``;
``clip_trainer.cli`` is the thin ``vecap train`` / ``vecap eval`` front end. Names are imported
lazily so ``vecap --help`` does not pay for torch.

    from clip_trainer import DataConfig, ModelConfig, TrainConfig, train
    result = train(TrainConfig(data=DataConfig(paths=("OUT",)), output_dir="runs/x", steps=1000))
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "DataConfig": "clip_trainer.data",
    "DataProgress": "clip_trainer.data",
    "ShardedCaptionDataset": "clip_trainer.data",
    "build_train_loader": "clip_trainer.data",
    "find_parquet_files": "clip_trainer.data",
    "CaptionSampler": "clip_trainer.sampling",
    "CaptionSource": "clip_trainer.sampling",
    "EvalTransform": "clip_trainer.transforms",
    "TrainTransform": "clip_trainer.transforms",
    "MODEL_CONFIGS": "clip_trainer.model",
    "ModelConfig": "clip_trainer.model",
    "build_model": "clip_trainer.model",
    "load_model": "clip_trainer.model",
    "build_tiny_tokenizer": "clip_trainer.tokenizer",
    "load_tokenizer": "clip_trainer.tokenizer",
    "OptimConfig": "clip_trainer.optim",
    "clip_loss": "clip_trainer.loss",
    "TrainConfig": "clip_trainer.train",
    "TrainResult": "clip_trainer.train",
    "train": "clip_trainer.train",
    "EvalConfig": "clip_trainer.evaluate",
    "evaluate": "clip_trainer.evaluate",
    "retrieval_metrics": "clip_trainer.evaluate",
    "topk_accuracy": "clip_trainer.evaluate",
    "write_shapes_dataset": "clip_trainer.synthetic",
    "write_shapes_eval_set": "clip_trainer.synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'clip_trainer' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
