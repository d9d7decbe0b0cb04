"""One engine server process: vLLM's OpenAI-compatible server on one GPU slot, on loopback.

This module is the lifecycle only (the command line, the environment that fixes the device,
start, health check, stop), as Beam's ``_VLLMModelServer`` keeps it apart from the handler that
sends requests; :mod:`pipeline.generation.fleet` decides which process starts which server, and
:mod:`pipeline.generation.server_client` sends the requests.

The server is started with:

- ``CUDA_VISIBLE_DEVICES`` set to its slot's GPUs before the process starts, so CUDA is first
  initialised there, on that device only;
- ``VLLM_WORKER_MULTIPROC_METHOD=spawn`` and ``TOKENIZERS_PARALLELISM=false``: vLLM's engine
  processes are spawned, never forked from a process with live threads;
- ``--generation-config vllm``: the sampling defaults are vLLM's, not the checkpoint's
  (vecap sends every setting it decodes with, as the offline engine gets them);
- ``--trust-request-chat-template``: caption requests carry the prompt vecap rendered (see
  :mod:`pipeline.generation.server_backend`);
- its own session (``start_new_session``): it outlives the SDK process that happened to start
  it, serving every process on the machine until it is stopped.

``VECAP_ENGINE_SERVER_CMD`` replaces ``python -m vllm.entrypoints.openai.api_server`` (the
flags are appended unchanged): the simulated GPU of ``bench/gpu_fleet.py`` and the tests' fake
servers are started this way.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from pipeline.generation.config import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    GenerationConfig,
    ModelLoadError,
)
from pipeline.generation.devices import EngineSlot

SERVER_CMD_ENV = "VECAP_ENGINE_SERVER_CMD"
LOOPBACK = "127.0.0.1"
_HEALTH_POLL_S = 0.5


def free_port() -> int:
    """A loopback port nobody listens on now (the server binds it a moment later; a lost race
    shows as a server that exits at start, and the caller starts it again on another port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def served_name(config: GenerationConfig) -> str:
    """The model name requests carry (vLLM's ``--served-model-name``)."""
    return config.served_model_name or config.model


def server_command(config: GenerationConfig, port: int, *, multimodal: bool) -> list[str]:
    """vLLM's OpenAI server for ``config`` on ``port`` (see the module doc)."""
    override = os.environ.get(SERVER_CMD_ENV)
    head = (
        shlex.split(override)
        if override
        else [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    )
    args = [
        "--model",
        config.model,
        "--served-model-name",
        served_name(config),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--dtype",
        config.dtype,
        "--seed",
        str(config.seed if config.seed is not None else 0),
        "--gpu-memory-utilization",
        str(config.gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION),
        "--tensor-parallel-size",
        str(config.tensor_parallel_size),
        "--generation-config",
        "vllm",
        "--trust-request-chat-template",
        "--disable-uvicorn-access-log",
    ]
    if config.max_model_len is not None:
        args += ["--max-model-len", str(config.max_model_len)]
    if config.max_num_seqs is not None:
        args += ["--max-num-seqs", str(config.max_num_seqs)]
    if config.enforce_eager:
        args.append("--enforce-eager")
    if config.load_format != "auto":
        args += ["--load-format", config.load_format]
    if config.trust_remote_code:
        args.append("--trust-remote-code")
    if multimodal:
        args += ["--limit-mm-per-prompt", json.dumps({"image": 1})]
    return head + args


def server_env(slot: EngineSlot, base: dict[str, str] | None = None) -> dict[str, str]:
    """The server's environment: the slot's device, spawned engine processes (module doc)."""
    env = dict(os.environ if base is None else base)
    if slot.cuda_visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot.cuda_visible_devices
    # a server runs its engine core in its own process, as vLLM serves by default (the switch
    # that keeps an offline engine in-process is for vllm_engine=offline only)
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    env["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"
    env["TOKENIZERS_PARALLELISM"] = "false"
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    env["VLLM_HOST_IP"] = LOOPBACK
    return env


@dataclass(frozen=True)
class ServerHandle:
    """A started server: where it listens and which process it is."""

    pid: int
    port: int
    log_path: str

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"


def start_server(
    config: GenerationConfig, slot: EngineSlot, *, multimodal: bool, log_path: str
) -> ServerHandle:
    """Start the server for ``config`` on ``slot`` (does not wait for it: :func:`wait_healthy`)."""
    port = free_port()
    cmd = server_command(config, port, multimodal=multimodal)
    log = open(log_path, "ab")  # noqa: SIM115 - the child keeps the descriptor
    try:
        log.write(f"\n== vecap: starting {shlex.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd,
            env=server_env(slot),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        raise ModelLoadError.wrap(config.model, config.backend, exc) from exc
    finally:
        log.close()
    _CHILDREN[proc.pid] = proc  # reaped in is_alive, so a dead child is not a zombie
    return ServerHandle(proc.pid, port, log_path)


_CHILDREN: dict[int, subprocess.Popen] = {}


def is_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie of another process still answers kill(0): read its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def is_healthy(base_url: str, timeout: float = 5.0) -> bool:
    """``GET /health`` answers 200 (vLLM answers 503 once its engine is dead)."""
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_healthy(handle: ServerHandle, config: GenerationConfig, timeout_s: float) -> None:
    """Block until the server answers its health check; raise ModelLoadError (with the tail
    of its log) if it exits or does not come up within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if is_healthy(handle.base_url, timeout=2.0):
            return
        if not is_alive(handle.pid):
            raise ModelLoadError(
                f"cannot load model {config.model!r} ({config.backend} backend): its server "
                f"exited at start; {log_tail(handle.log_path)} (log: {handle.log_path})"
            )
        time.sleep(_HEALTH_POLL_S)
    stop_server(handle.pid)
    raise ModelLoadError(
        f"cannot load model {config.model!r} ({config.backend} backend): its server was not "
        f"healthy after {timeout_s:.0f}s (generation.server_start_timeout_s); log: {handle.log_path}"
    )


def log_tail(path: str, lines: int = 3) -> str:
    """The last lines of a server log that say something, on one line."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "no log"
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-600:] or "empty log"


def stop_server(pid: int, grace_s: float = 20.0) -> None:
    """SIGTERM the server's process group (vLLM's engine processes with it), then SIGKILL."""
    if not is_alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and is_alive(pid):
        time.sleep(0.1)
    if is_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return
        child = _CHILDREN.get(pid)
        if child is not None:
            child.wait(timeout=10)
    _CHILDREN.pop(pid, None)


__all__ = [
    "SERVER_CMD_ENV",
    "ServerHandle",
    "free_port",
    "is_alive",
    "is_healthy",
    "log_tail",
    "server_command",
    "server_env",
    "served_name",
    "start_server",
    "stop_server",
    "wait_healthy",
]
