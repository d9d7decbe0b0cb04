"""``dtype: auto`` made concrete, the same way on every backend, and the label rows carry.

The rule: bfloat16 where the engine's GPU computes it natively (compute capability 8.0 or
newer), float16 on older GPUs (bf16 is emulated there, several times slower), float32 on the
CPU (fast there, and exact: tests compare backends token for token). vLLM's own ``auto`` would
take the checkpoint's dtype instead (fp16 for llava-1.5-7b-hf); vecap passes the resolved one.

The launcher resolves it from the job's GPU when it knows it (:mod:`pipeline.generation.
memory_plan`); otherwise each worker resolves it from its own GPUs, asked through
``nvidia-smi`` so that no CUDA context is made in an SDK process. The result is cached per
process: the row router and the loader must agree.

:func:`engine_label` (``backend/dtype``) goes onto each captioned or fused row and is part of
the key that says a row is already done: a rerun with another backend or precision redoes it.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import subprocess

from pipeline.generation.config import GenerationConfig


def dtype_for(capability: tuple[int, int] | None) -> str:
    """``auto`` on a device of this compute capability (None: the CPU)."""
    if capability is None:
        return "float32"
    return "bfloat16" if capability >= (8, 0) else "float16"


def _gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capabilities of this machine's visible GPUs, CUDA left uninitialised."""
    from pipeline.generation.devices import visible_gpus

    visible = visible_gpus()
    exe = shutil.which("nvidia-smi")
    if not visible or exe is None:
        return []
    try:
        done = subprocess.run(
            [exe, "--query-gpu=index,uuid,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    found: list[tuple[int, int]] = []
    for line in done.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and (parts[0] in visible or parts[1] in visible):
            major, _, minor = parts[2].partition(".")
            found.append((int(major), int(minor or 0)))
    return found


@functools.cache
def _worker_dtype(backend: str, device: str) -> str:
    if device == "cpu":
        return "float32"
    capabilities = _gpu_capabilities()
    if device.startswith("cuda:") and capabilities:
        index = int(device.split(":", 1)[1])
        return dtype_for(capabilities[min(index, len(capabilities) - 1)])
    # engines on every visible GPU: the oldest decides, so all of them run one precision
    return dtype_for(min(capabilities) if capabilities else None)


def resolved_dtype(config: GenerationConfig) -> str:
    """The dtype this process's engine for ``config`` runs in (the module doc's rule);
    ``auto`` stays for the openai backend, whose server decides."""
    if config.dtype != "auto" or config.backend == "openai":
        return config.dtype
    return _worker_dtype(config.backend, config.device)


def with_resolved_dtype(config: GenerationConfig) -> GenerationConfig:
    dtype = resolved_dtype(config)
    return config if dtype == config.dtype else dataclasses.replace(config, dtype=dtype)


def engine_label(config: GenerationConfig) -> str:
    """What rows record of the engine that wrote them: ``backend/dtype``."""
    return f"{config.backend}/{resolved_dtype(config)}"


__all__ = ["dtype_for", "engine_label", "resolved_dtype", "with_resolved_dtype"]
