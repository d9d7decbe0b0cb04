"""Training checkpoints: ``OUT/checkpoints/step-00001000/`` holding

* ``model/`` — ``save_pretrained`` output (``model.safetensors`` + ``config.json``) plus the
  tokenizer and ``preprocessor_config.json``, so the directory is a self-contained CLIP that ``vecap eval`` and
  ``CLIPModel.from_pretrained`` load directly;
* ``trainer_state.pt`` — optimizer, scheduler, step, RNG states;
* ``data_state.json`` — every data slot's stream position and the caption-source counts.

A checkpoint is written to ``step-N.tmp`` and renamed into place, so a crash mid-save never
leaves a directory that looks finished.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Finished checkpoints, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / "trainer_state.pt").exists() and (child / "data_state.json").exists():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    model: Any,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    data_state: dict[str, Any],
    keep: int | None = None,
    preprocessor: tuple[int, tuple[float, ...], tuple[float, ...]] | None = None,
) -> Path:
    """Write a checkpoint atomically (call on the main process only) and prune old ones."""
    root = checkpoint_root(output_dir)
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)  # left by a crash during an earlier save
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp / "model"))
    tokenizer.save_pretrained(str(tmp / "model"))
    if preprocessor is not None:
        from clip_trainer.model import save_preprocessor

        save_preprocessor(tmp / "model", *preprocessor)
    torch.save(trainer_state, tmp / "trainer_state.pt")
    (tmp / "data_state.json").write_text(json.dumps(data_state, indent=2, sort_keys=True))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep is not None and keep > 0:
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_trainer_state(checkpoint: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(trainer_state, data_state) of a checkpoint directory."""
    path = Path(checkpoint)
    if not (path / "trainer_state.pt").exists():
        raise FileNotFoundError(f"{path} is not a finished checkpoint (no trainer_state.pt)")
    # weights_only=False: the state holds RNG states and plain python config, written by us.
    trainer_state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=False)
    data_state = json.loads((path / "data_state.json").read_text())
    return trainer_state, data_state


__all__ = [
    "checkpoint_root",
    "latest_checkpoint",
    "list_checkpoints",
    "load_trainer_state",
    "save_checkpoint",
]
