"""Which GPU a job's engines will run on, known before the job starts.

The memory plan (:mod:`pipeline.generation.memory_plan`) needs the GPU's memory and compute
capability. They come, first that answers, from:

1. ``--gpu-type`` (``run.gpu_type``): a name from :data:`GPU_TYPES` or one of its aliases;
2. Dataflow's accelerator option in the Beam arguments,
   ``--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;...``;
3. on the local runner, this machine's first GPU as ``nvidia-smi`` reports it (no CUDA
   initialised here: see :mod:`pipeline.generation.devices`).

Otherwise the GPU is unknown and nothing is refused: the plan says so and how to tell it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

# the worker image's torch (2.13, CUDA 13 build) needs an NVIDIA driver of this major version
# or newer, and CUDA 13 has no kernels for GPUs below compute capability 7.5 (Pascal, Volta)
CUDA_BUILD = "13.0"
MIN_DRIVER = 580
MIN_COMPUTE_CAPABILITY = (7, 5)


@dataclass(frozen=True)
class GpuSpec:
    """One GPU: ``memory_gib`` as the driver reports its total (what vLLM's share is of)."""

    name: str
    memory_gib: float
    compute_capability: tuple[int, int]
    count: int = 1  # GPUs per worker machine

    @property
    def native_bf16(self) -> bool:
        return self.compute_capability >= (8, 0)

    @property
    def supported(self) -> bool:
        """The worker image's CUDA build has kernels for it."""
        return self.compute_capability >= MIN_COMPUTE_CAPABILITY


# name -> (memory GiB as nvidia-smi's memory.total reports it, compute capability)
GPU_TYPES: dict[str, tuple[float, tuple[int, int]]] = {
    "p4": (7.5, (6, 1)),
    "p100": (16.0, (6, 0)),
    "v100": (16.0, (7, 0)),
    "t4": (15.0, (7, 5)),
    "a10g": (22.5, (8, 6)),
    "l4": (22.5, (8, 9)),
    "a100-40gb": (40.0, (8, 0)),
    "l40s": (45.0, (8, 9)),
    "a100-80gb": (80.0, (8, 0)),
    "h100-80gb": (79.6, (9, 0)),
    "h200": (140.4, (9, 0)),
}

# other spellings, Dataflow's accelerator types among them
_ALIASES = {
    "nvidia-tesla-p4": "p4",
    "nvidia-tesla-p100": "p100",
    "nvidia-tesla-v100": "v100",
    "nvidia-tesla-t4": "t4",
    "nvidia-a10g": "a10g",
    "nvidia-l4": "l4",
    "nvidia-tesla-a100": "a100-40gb",
    "a100": "a100-40gb",
    "nvidia-l40s": "l40s",
    "nvidia-a100-80gb": "a100-80gb",
    "nvidia-h100-80gb": "h100-80gb",
    "nvidia-h100-mega-80gb": "h100-80gb",
    "h100": "h100-80gb",
    "nvidia-h200-141gb": "h200",
    "h200-141gb": "h200",
}


class UnknownGpuType(ValueError):
    """A ``--gpu-type`` (or accelerator option) vecap has no figures for."""


def gpu_spec(name: str, count: int = 1) -> GpuSpec:
    """The spec of a GPU named as ``--gpu-type`` or Dataflow's accelerator type takes it."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in GPU_TYPES:
        raise UnknownGpuType(
            f"unknown GPU type {name!r}; known: {', '.join(GPU_TYPES)} (or Dataflow's "
            "nvidia-* names)"
        )
    memory, capability = GPU_TYPES[key]
    return GpuSpec(key, memory, capability, count)


def accelerator_from_beam_args(beam_args: Sequence[str]) -> tuple[str, int] | None:
    """(type, count) from Dataflow's ``worker_accelerator`` service option, if given."""
    text = " ".join(beam_args)
    found = re.search(r"worker_accelerator=type:([A-Za-z0-9._-]+)(?:;count:(\d+))?", text)
    if found is None:
        return None
    return found.group(1), int(found.group(2) or 1)


def local_gpu() -> GpuSpec | None:
    """This machine's first GPU from ``nvidia-smi`` (with how many there are), else None."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, "--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvidia_smi(done.stdout)


def parse_nvidia_smi(text: str) -> GpuSpec | None:
    """``name, memory MiB, major.minor`` lines -> the first GPU, counted with its peers."""
    rows = [
        [part.strip() for part in line.split(",")] for line in text.splitlines() if line.strip()
    ]
    rows = [r for r in rows if len(r) == 3]
    if not rows:
        return None
    name, memory_mib, capability = rows[0]
    try:
        major, minor = (int(x) for x in capability.split("."))
        memory_gib = float(memory_mib) / 1024
    except ValueError:
        return None
    return GpuSpec(name, round(memory_gib, 1), (major, minor), len(rows))


def job_gpu(
    gpu_type: str | None, beam_args: Sequence[str], local: bool
) -> tuple[GpuSpec | None, str]:
    """The GPU this job's workers have, and where that was learnt (see the module doc)."""
    accelerator = accelerator_from_beam_args(beam_args)
    if gpu_type:
        count = accelerator[1] if accelerator else 1
        return gpu_spec(gpu_type, count), "--gpu-type"
    if accelerator is not None:
        return gpu_spec(*accelerator), "worker_accelerator"
    if local:
        spec = local_gpu()
        if spec is not None:
            return spec, "nvidia-smi"
    return None, "unknown"


__all__ = [
    "CUDA_BUILD",
    "GPU_TYPES",
    "MIN_COMPUTE_CAPABILITY",
    "MIN_DRIVER",
    "GpuSpec",
    "UnknownGpuType",
    "accelerator_from_beam_args",
    "gpu_spec",
    "job_gpu",
    "local_gpu",
    "parse_nvidia_smi",
]
