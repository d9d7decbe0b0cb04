"""One engine per GPU slot per machine, shared by every process on it, restarted when it dies.

Runners start many SDK processes on a machine (Dataflow and Flink one per core or slot, the
local runner ``direct_num_workers``); a model must still be loaded once per GPU. The fleet is
kept in a machine-local directory (``VECAP_ENGINE_DIR``, default ``$TMPDIR/vecap-engines-<uid>``):
per (model, slot) a lock file and a record of the running server (pid, port, generation). A
process that needs the engines takes each slot's ``flock``, and under it either finds a healthy
server and attaches, or starts one (all missing slots start together, then are waited for), so
exactly one server per slot exists however many processes ask at once.

A server that dies (a CUDA error kills it, the OOM killer, a crash) is replaced the same way:
the first caller that sees it fail takes the lock, finds it unhealthy and starts a new process —
a new CUDA context, never a retry in the broken one. Callers that saw the same failure find the
new generation and use it. After ``max_engine_restarts`` restarts of one slot,
:class:`EngineFatalError` fails the bundle instead of restarting forever.

Containers: SDK containers that do not share ``/tmp`` (Dataflow without
``no_use_multiple_sdk_containers``) must be given a shared ``VECAP_ENGINE_DIR``, or each would
start its own servers.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.generation.config import GenerationConfig
from pipeline.generation.devices import EngineSlot, engine_slots
from pipeline.generation.engine_server import (
    ServerHandle,
    is_alive,
    is_healthy,
    start_server,
    stop_server,
    wait_healthy,
)
from pipeline.generation.recovery import EngineFatalError

log = logging.getLogger(__name__)

ENGINE_DIR_ENV = "VECAP_ENGINE_DIR"


def engine_dir() -> str:
    path = os.environ.get(ENGINE_DIR_ENV) or os.path.join(
        tempfile.gettempdir(), f"vecap-engines-{os.getuid()}"
    )
    os.makedirs(path, exist_ok=True)
    return path


@dataclass(frozen=True)
class Endpoint:
    """A live engine: where to send requests, and which incarnation of the slot's server it is
    (a caller that saw generation ``g`` fail asks for a restart of ``g``, not of its successor)."""

    slot: str
    base_url: str
    generation: int


def fleet_key(config: GenerationConfig, multimodal: bool) -> str:
    """Names a model's servers on this machine: equal load settings share them."""
    digest = hashlib.blake2b(
        repr((config.engine_key(), multimodal)).encode(), digest_size=6
    ).hexdigest()
    base = os.path.basename(config.model.rstrip("/")) or "model"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in base)[:40]
    return f"{safe}-{digest}"


class Fleet:
    """The engines of one model (one load-settings key) on this machine."""

    def __init__(self, config: GenerationConfig, *, multimodal: bool) -> None:
        self.config = config
        self.multimodal = multimodal
        self.key = fleet_key(config, multimodal)
        self.slots = engine_slots(config.gpus, config.tensor_parallel_size)
        self.dir = engine_dir()
        self._lock = threading.Lock()  # one restart at a time from this process

    # ------------------------------------------------------------------ files

    def _path(self, slot: EngineSlot, ext: str) -> str:
        return os.path.join(self.dir, f"{self.key}.{slot.name}.{ext}")

    @contextlib.contextmanager
    def _locked(self, slot: EngineSlot) -> Iterator[None]:
        fd = os.open(self._path(slot, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def _read(self, slot: EngineSlot) -> dict | None:
        try:
            with open(self._path(slot, "json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _write(self, slot: EngineSlot, record: dict) -> None:
        path = self._path(slot, "json")
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, path)

    def _live(self, record: dict | None) -> bool:
        return (
            record is not None
            and is_alive(int(record["pid"]))
            and is_healthy(f"http://127.0.0.1:{record['port']}")
        )

    @staticmethod
    def _endpoint(slot: EngineSlot, record: dict) -> Endpoint:
        return Endpoint(slot.name, f"http://127.0.0.1:{record['port']}", int(record["generation"]))

    # ------------------------------------------------------------------ public

    def ensure(self) -> list[Endpoint]:
        """Every slot's live server, starting the missing ones together (module doc)."""
        with contextlib.ExitStack() as stack:
            for slot in self.slots:  # fixed order: two processes never deadlock on the locks
                stack.enter_context(self._locked(slot))
            records = {s.name: self._read(s) for s in self.slots}
            started: dict[str, tuple[ServerHandle, dict]] = {}
            for slot in self.slots:
                record = records[slot.name]
                if self._live(record):
                    continue
                generation = int(record["generation"]) + 1 if record else 0
                restarts = int(record.get("restarts", 0)) if record else 0
                started[slot.name] = (
                    self._start(slot),
                    {"generation": generation, "restarts": restarts},
                )
            for slot in self.slots:
                if slot.name not in started:
                    continue
                handle, meta = started[slot.name]
                try:
                    wait_healthy(handle, self.config, self.config.server_start_timeout_s)
                except BaseException:
                    for other, _ in started.values():  # no half-started fleet left behind
                        stop_server(other.pid)
                    raise
                records[slot.name] = self._record(slot, handle, **meta)
                self._write(slot, records[slot.name])
            return [self._endpoint(s, records[s.name]) for s in self.slots]

    def recover(self, failed: Endpoint) -> Endpoint:
        """A live server for ``failed``'s slot: the same one if it is healthy after all, one
        another process already restarted, or a new one (module doc)."""
        slot = next(s for s in self.slots if s.name == failed.slot)
        with self._lock, self._locked(slot):
            record = self._read(slot)
            if record is not None and int(record["generation"]) != failed.generation:
                if self._live(record):
                    return self._endpoint(slot, record)
            elif self._live(record):
                return self._endpoint(slot, record)  # a transient failure: it answers again
            restarts = int(record.get("restarts", 0)) + 1 if record else 1
            if restarts > self.config.max_engine_restarts:
                raise EngineFatalError(
                    f"engine {self.key} on {slot.name} died {restarts} times "
                    f"(generation.max_engine_restarts={self.config.max_engine_restarts})"
                )
            if record is not None:
                stop_server(int(record["pid"]))
            log.warning(
                "engine %s on %s is down (generation %s); starting a new server (restart %d)",
                self.key,
                slot.name,
                failed.generation,
                restarts,
            )
            handle = self._start(slot)
            wait_healthy(handle, self.config, self.config.server_start_timeout_s)
            generation = int(record["generation"]) + 1 if record else failed.generation + 1
            record = self._record(slot, handle, generation=generation, restarts=restarts)
            self._write(slot, record)
            return self._endpoint(slot, record)

    def stop(self) -> None:
        """Stop this model's servers on this machine (the launcher, at the end of a local job)."""
        for slot in self.slots:
            with self._locked(slot):
                record = self._read(slot)
                if record is not None:
                    stop_server(int(record["pid"]))
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(slot, "json"))

    def records(self) -> dict[str, dict | None]:
        """Each slot's server record (tests and diagnostics)."""
        return {s.name: self._read(s) for s in self.slots}

    # ------------------------------------------------------------------ helpers

    def _start(self, slot: EngineSlot) -> ServerHandle:
        log.info("starting engine %s on %s", self.key, slot.name)
        return start_server(
            self.config, slot, multimodal=self.multimodal, log_path=self._path(slot, "log")
        )

    def _record(
        self, slot: EngineSlot, handle: ServerHandle, *, generation: int, restarts: int
    ) -> dict:
        return {
            "pid": handle.pid,
            "port": handle.port,
            "generation": generation,
            "restarts": restarts,
            "slot": slot.name,
            "cuda_visible_devices": slot.cuda_visible_devices,
            "model": self.config.model,
            "started_at": time.time(),
            "started_by": os.getpid(),
        }


__all__ = ["ENGINE_DIR_ENV", "Endpoint", "Fleet", "engine_dir", "fleet_key"]
