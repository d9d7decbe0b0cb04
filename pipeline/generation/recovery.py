"""What a model stage does when ``generate`` fails: free, split, or give the bundle back.

- :func:`generate_split` runs one batch; when it fails it leaves the ``except`` block (so the
  failed call's frames and tensors are no longer referenced), frees memory
  (:func:`free_memory`: ``gc.collect`` and, where CUDA is in use, ``torch.cuda.empty_cache``) and
  retries the batch in halves, recursively, down to single rows. An out-of-memory error also
  lowers the largest size tried for the rest of the batch, so a batch that fits only ``k`` rows
  costs ``log2(n / k)`` failed calls, not one per row. A row that fails alone keeps its error.
- Engine-fatal errors (a CUDA error such as a device-side assert, a dead vLLM engine) are not
  retried: :class:`EngineFatalError` is raised so the runner retries the bundle, on a fresh
  worker, instead of committing shards full of failed rows. :class:`FailedBatchBreaker` raises
  it too after ``K`` consecutive batches in which no row succeeded.
- :class:`CallGuard` is what a generator wraps its engine calls in: a lock (one batch in the
  engine at a time, whichever thread calls) that also frees memory after a failure and, after
  an engine-fatal error, refuses further calls instead of running on a broken device.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# consecutive batches without a single successful row before a stage gives its bundle back
DEFAULT_MAX_FAILED_BATCHES = 3

_OOM_MARKERS = ("out of memory", "outofmemoryerror", "cuda_error_out_of_memory")
_FATAL_TYPE_NAMES = ("EngineDeadError", "AcceleratorError", "EngineFatalError")
_FATAL_MARKERS = (
    "cuda error",  # RuntimeError: CUDA error: device-side assert triggered / illegal address
    "device-side assert",
    "illegal memory access",
    "cublas_status_execution_failed",
    "cudnn_status_execution_failed",
    "nccl error",
    "enginecore encountered an issue",  # vLLM v1's EngineDeadError text
    "engine loop has died",  # vLLM's AsyncEngineDeadError text
    "engine is dead",
)


class EngineFatalError(RuntimeError):
    """The model cannot serve more rows in this process: let the runner retry the bundle.

    Raised for CUDA errors that poison the CUDA context, a dead vLLM engine, or too many
    consecutive failed batches. The model stages re-raise it from their dead-letter paths, so it
    fails the bundle rather than turning every row into a failed row.
    """


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and node not in seen:
        seen.append(node)
        node = node.__cause__ or node.__context__
    return seen


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".lower()


def is_out_of_memory(exc: BaseException) -> bool:
    """``torch.cuda.OutOfMemoryError`` and its relatives (also ``CUDA error: out of memory``)."""
    return any(m in _text(e) for e in _chain(exc) for m in _OOM_MARKERS)


def is_engine_fatal(exc: BaseException) -> bool:
    """An error after which this process's engine cannot be trusted (out of memory is not one)."""
    if is_out_of_memory(exc):
        return False
    for e in _chain(exc):
        if any(type(e).__name__ == name or _named_in_mro(e, name) for name in _FATAL_TYPE_NAMES):
            return True
        if any(m in _text(e) for m in _FATAL_MARKERS):
            return True
    return False


def _named_in_mro(exc: BaseException, name: str) -> bool:
    return any(cls.__name__ == name for cls in type(exc).__mro__)


def describe(exc: BaseException, limit: int = 500) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def forget_frames(exc: BaseException) -> BaseException:
    """Drop the tracebacks of ``exc`` and its chain: their frames hold the failed batch's
    tensors (inputs, KV cache, logits) for as long as the exception object lives."""
    for e in _chain(exc):
        e.__traceback__ = None
    return exc


def free_memory() -> None:
    """Collect garbage and return cached CUDA blocks to the driver (where CUDA is in use)."""
    gc.collect()
    torch = sys.modules.get("torch")  # never import torch (or start CUDA) just for this
    if torch is None:
        return
    try:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    except Exception:  # a broken CUDA context: the caller is already handling an error
        log.debug("torch.cuda.empty_cache failed", exc_info=True)


def generate_split(
    call: Callable[[list[T]], Sequence[R]],
    items: Sequence[T],
    *,
    isolate: bool = True,
    what: str = "batch",
    units: tuple[str, str] = ("outputs", "inputs"),
) -> list[R | BaseException]:
    """``call(items)``, one result per item; a failed call is retried in halves, out of its
    ``except`` block and after :func:`free_memory`, down to single rows.

    Returns per item its result or, for a row that failed alone, the exception. Raises
    :class:`EngineFatalError` on an engine-fatal error, the error itself when ``isolate`` is off,
    and ``RuntimeError`` when ``call`` returns another number of results than it was given
    (never attach an output to the wrong row).
    """
    items = list(items)
    out: list[Any] = [None] * len(items)
    cap = len(items)  # the largest chunk not known to run out of memory
    pending: list[tuple[int, int]] = [(0, len(items))] if items else []
    while pending:
        start, stop = pending.pop()
        size = stop - start
        if size > cap:  # out of memory at this size before: go straight to chunks that fit
            pieces = [(s, min(s + cap, stop)) for s in range(start, stop, cap)]
            pending.extend(reversed(pieces))
            continue
        error: BaseException | None = None
        try:
            results = list(call(items[start:stop]))
        except Exception as exc:
            error = exc
        if error is None:
            if len(results) != size:
                raise RuntimeError(
                    f"generator returned {len(results)} {units[0]} for {size} {units[1]}"
                )
            out[start:stop] = results
            continue
        # out of the except block: nothing but `error` refers to the failed call now
        error = forget_frames(error)
        if is_engine_fatal(error):
            raise EngineFatalError(f"{what}: engine-fatal error: {describe(error)}") from error
        if not isolate:
            raise error
        if size == 1:
            out[start] = error
            continue
        oom = is_out_of_memory(error)
        if oom:
            cap = min(cap, size // 2)
        log.warning(
            "%s of %d failed (%s); freeing memory and retrying in halves",
            what,
            size,
            describe(error, 200),
        )
        del error
        free_memory()
        mid = start + size // 2
        pending.extend([(mid, stop), (start, mid)])  # the first half runs first
    return out


class FailedBatchBreaker:
    """Raises :class:`EngineFatalError` after ``limit`` consecutive batches in which every row
    failed in the model (0: never). A healthy model with a few poison rows never trips it; a
    model that fails everything (a broken worker) does, before it fails a whole shard."""

    def __init__(self, limit: int, what: str) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self.limit = limit
        self.what = what
        self.consecutive = 0

    def record(self, results: Sequence[Any]) -> None:
        if not results:
            return
        failures = [r for r in results if isinstance(r, BaseException)]
        if len(failures) < len(results):
            self.consecutive = 0
            return
        self.consecutive += 1
        if self.limit and self.consecutive >= self.limit:
            self.consecutive = 0
            raise EngineFatalError(
                f"{self.what}: {self.limit} consecutive batches failed on every row; "
                f"last error: {describe(failures[-1])}"
            )


class CallGuard:
    """Serialises calls into one engine; frees memory after a failed call; after an
    engine-fatal error, refuses every later call with :class:`EngineFatalError`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.fatal: str | None = None

    def call(self, fn: Callable[..., R], *args: Any) -> R:
        with self.lock:
            if self.fatal is not None:
                raise EngineFatalError(
                    f"model {self.name} is unusable after an earlier error: {self.fatal}"
                )
            error: BaseException | None = None
            try:
                return fn(*args)
            except Exception as exc:
                error = exc
            # out of the except block: free the failed call's tensors before anyone retries
            error = forget_frames(error)
            if is_engine_fatal(error):
                self.fatal = describe(error)
            free_memory()
            raise error


def is_fatal_dead_letter(error: object) -> bool:
    """A RunInference dead letter's error (``(type, repr, traceback)`` or an exception) that
    must fail the bundle instead of becoming failed rows."""
    if isinstance(error, BaseException):
        return isinstance(error, EngineFatalError)
    if isinstance(error, tuple) and error and isinstance(error[0], type):
        return issubclass(error[0], EngineFatalError)
    return False


__all__ = [
    "DEFAULT_MAX_FAILED_BATCHES",
    "CallGuard",
    "EngineFatalError",
    "FailedBatchBreaker",
    "describe",
    "free_memory",
    "generate_split",
    "is_engine_fatal",
    "is_fatal_dead_letter",
    "is_out_of_memory",
]
