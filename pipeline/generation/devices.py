"""Which GPUs this machine's engines get, decided without initialising CUDA in this process.

An engine's device is fixed by the ``CUDA_VISIBLE_DEVICES`` its server process starts with, so
the process that plans the fleet (an SDK worker, the launcher) never touches CUDA itself:
importing torch and asking it would initialise CUDA, and with it the fork hazards and a
context on GPU 0 that every engine would then pay for.

- :func:`visible_gpus`: the GPUs this process may use, as the ids ``CUDA_VISIBLE_DEVICES``
  takes (indices or ``GPU-<uuid>``): that variable when it is set, else what ``nvidia-smi``
  lists, else none (a CPU machine).
- :func:`engine_slots`: the GPU groups, one engine each: every visible GPU (or the ``--gpus``
  choice, positions in the visible list), ``tensor_parallel_size`` GPUs per engine. On a CPU
  machine there is one slot, :data:`CPU_SLOT`, and its server inherits the environment as is.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

log = logging.getLogger(__name__)

CPU_SLOT = "cpu"


class GpuSelectionError(ValueError):
    """``--gpus`` names GPUs this machine does not have, or does not divide into engines."""


@dataclass(frozen=True)
class EngineSlot:
    """Where one engine runs: ``name`` keys its server on this machine; ``cuda_visible_devices``
    is what its process sees (None: the environment is left alone, a CPU engine)."""

    name: str
    cuda_visible_devices: str | None


def visible_gpus() -> list[str]:
    """GPU ids this process may hand to engines (see the module doc); [] on a CPU machine."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [d.strip() for d in env.split(",") if d.strip()]
        # CUDA stops at the first invalid entry ("-1" hides every GPU)
        out: list[str] = []
        for d in ids:
            if d.startswith("-"):
                break
            out.append(d)
        return out
    return _nvidia_smi_gpus()


def _nvidia_smi_gpus() -> list[str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        done = subprocess.run(
            [exe, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []  # no driver loaded: no GPU to use
    return [line.strip() for line in done.stdout.splitlines() if line.strip().isdigit()]


def parse_gpus(spec: str | None) -> list[int] | None:
    """``--gpus``: None or ``all`` for every visible GPU, else positions such as ``0,1,3``."""
    if spec is None or spec.strip().lower() in ("", "all"):
        return None
    picked: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part.isdigit():
            raise GpuSelectionError(
                f"gpus must be 'all' or GPU indices such as 0,1,3; got {spec!r}"
            )
        if int(part) in picked:
            raise GpuSelectionError(f"gpus lists GPU {part} twice: {spec!r}")
        picked.append(int(part))
    return picked


def engine_slots(
    spec: str | None, tensor_parallel_size: int = 1, visible: list[str] | None = None
) -> list[EngineSlot]:
    """One slot per engine on this machine (see the module doc)."""
    visible = visible_gpus() if visible is None else visible
    picked = parse_gpus(spec)
    if not visible:
        if picked:
            raise GpuSelectionError(
                f"gpus={spec!r} but this machine shows no GPU (no CUDA_VISIBLE_DEVICES, no "
                "nvidia-smi); leave gpus unset to run one engine on the CPU"
            )
        return [EngineSlot(CPU_SLOT, None)]
    if picked is None:
        chosen = list(visible)
    else:
        bad = [i for i in picked if i >= len(visible)]
        if bad:
            raise GpuSelectionError(
                f"gpus={spec!r}: GPU {bad[0]} does not exist here; visible GPUs are 0-"
                f"{len(visible) - 1} ({','.join(visible)})"
            )
        chosen = [visible[i] for i in picked]
    tp = tensor_parallel_size
    if len(chosen) % tp:
        raise GpuSelectionError(
            f"{len(chosen)} GPUs do not divide into engines of tensor_parallel_size={tp}"
        )
    groups = [chosen[i : i + tp] for i in range(0, len(chosen), tp)]
    return [EngineSlot("gpu" + "+".join(g), ",".join(g)) for g in groups]


_CLAIMED: dict[str, tuple[int, int]] = {}  # spec -> (lock fd held for the process, position)


def claim_gpu(spec: str | None, visible: list[str] | None = None) -> int | None:
    """For an in-process model (the transformers backend): the position, in this process's
    visible GPUs, of a GPU no other process on the machine has claimed, held until the process
    ends, so N worker processes on an N-GPU machine load one model per GPU. None without GPUs;
    with more processes than GPUs the extra ones share (a warning says so)."""
    visible = visible_gpus() if visible is None else visible
    if not visible:
        return None
    key = spec or "all"
    if key in _CLAIMED:
        return _CLAIMED[key][1]
    picked = parse_gpus(spec)
    positions = list(range(len(visible))) if picked is None else picked
    lock_dir = os.environ.get("VECAP_ENGINE_DIR") or os.path.join(
        tempfile.gettempdir(), f"vecap-engines-{os.getuid()}"
    )
    os.makedirs(lock_dir, exist_ok=True)
    for position in positions:
        fd = os.open(
            os.path.join(lock_dir, f"in-process-gpu-{visible[position]}.lock"),
            os.O_RDWR | os.O_CREAT,
            0o644,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _CLAIMED[key] = (fd, position)
        return position
    position = positions[os.getpid() % len(positions)]
    log.warning(
        "every GPU (%s) already has a model process; this one shares GPU %s",
        ",".join(visible[p] for p in positions),
        visible[position],
    )
    _CLAIMED[key] = (-1, position)
    return position


__all__ = [
    "CPU_SLOT",
    "claim_gpu",
    "EngineSlot",
    "GpuSelectionError",
    "engine_slots",
    "parse_gpus",
    "visible_gpus",
]
