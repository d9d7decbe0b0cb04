"""A model stage that keeps its engines fed: rows stream to the server, many in flight.

RunInference hands a model one fixed batch at a time and waits for all of it, so between two
batches the engine runs dry and its scheduler never sees more than a batch. On the server
backends (``pipeline.generation.server_backend``) a stage instead runs :class:`InFlightInference`:

- each row is prepared on a small thread pool (JPEG decode, padding, PNG encode, prompt
  rendering) and sent as soon as it is ready, so preparation overlaps generation;
- up to ``window`` rows (``max_in_flight`` x the model's engines) are prepared or in flight at
  once; ``process`` blocks only when the window is full (or the process's engines are full
  with the rows of every instance of the stage: Beam runs one per harness thread), and emits
  each row as its answer arrives, in completion order;
- rows the stage does not touch (already done, failed upstream) pass straight through, so the
  stage has no Partition/Flatten: read, download, caption, fuse and write fuse into one stage of
  the runner, and fusion starts on the first captioned row, not after the last;
- ``finish_bundle`` waits for the rest, so a bundle commits only with every row answered.

Rows keep their per-row outcome (a refused request fails that row, with the server's message);
an :class:`~pipeline.generation.recovery.EngineFatalError` (a model that cannot serve, restarts
used up) fails the bundle so the runner retries it, never a shard of failed rows.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from pipeline.generation.config import GenerationConfig
from pipeline.generation.recovery import EngineFatalError, FailedBatchBreaker
from schemas import Record

# consecutive model failures judged together by the breaker (the streaming analogue of a batch)
_BREAKER_CHUNK = 32


class InFlightTask(Protocol):
    """What one model stage does per row; everything but ``prepare`` runs on the DoFn's thread.
    ``generation`` is the stage's GenerationConfig; ``generator`` (set by ``load``) a
    ``ServerGenerator``, whose ``pool`` says how many engines there are and how full."""

    generation: GenerationConfig
    generator: Any
    prep_threads: int

    def load(self) -> None:
        """Load the generator (and the prompt)."""

    def route(self, record: Record) -> Record | None:
        """The finished record when this row needs no model call, else None."""

    def prepare(self, record: Record) -> Any:
        """(Prep thread) the request's inputs, or a finished Record when the row fails here."""

    def send(self, prepared: Any) -> concurrent.futures.Future:
        """Send the prepared request; a future of the server's answer."""

    def finish(self, record: Record, answer: Any) -> Record:
        """The row with the answer applied; ``answer`` may be the exception the row failed with."""


class _Row:
    """One row on its way: prepared on a prep thread, then its request in flight."""

    __slots__ = ("record", "future")

    def __init__(self, record: Record) -> None:
        self.record = record
        self.future: concurrent.futures.Future = concurrent.futures.Future()


class InFlightInference(beam.DoFn):
    """Record -> Record through ``task`` (see the module doc); rows in == rows out."""

    def __init__(self, task_factory: Callable[[], InFlightTask], name: str) -> None:
        self._factory = task_factory
        self._name = name
        self._sent = beam.metrics.Metrics.counter("vecap_inflight", f"{name}_sent")
        self._passed = beam.metrics.Metrics.counter("vecap_inflight", f"{name}_passed")

    def setup(self) -> None:
        self.task = self._factory()
        self.task.load()
        self.pool = self.task.generator.pool
        self.window = self.pool.capacity
        self.prep = concurrent.futures.ThreadPoolExecutor(
            self.task.prep_threads, thread_name_prefix=f"vecap-{self._name}-prep"
        )
        self.breaker = FailedBatchBreaker(self.task.generation.max_failed_batches, self._name)
        self._outcomes: list[Any] = []

    def start_bundle(self) -> None:
        self.pending: set[concurrent.futures.Future] = set()
        self.rows: dict[concurrent.futures.Future, _Row] = {}

    def process(self, record: Record) -> Iterator[Record]:
        done = self.task.route(record)
        if done is not None:
            self._passed.inc()
            yield done
            return
        row = _Row(record)
        self.rows[row.future] = row
        self.pending.add(row.future)
        self.prep.submit(self._prepare_and_send, row)
        self._sent.inc()
        # block while this instance's window is full, or while the process's engines are
        # saturated by every instance together (Beam runs one instance per harness thread):
        # prepared rows then wait here, not in memory
        full = len(self.pending) >= self.window or self.pool.saturated()
        yield from self._collect(block=full)

    def finish_bundle(self) -> Iterator[Any]:
        while self.pending:
            for record in self._collect(block=True):
                yield GlobalWindows.windowed_value(record)

    def teardown(self) -> None:
        prep = getattr(self, "prep", None)
        if prep is not None:
            prep.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ internals

    def _prepare_and_send(self, row: _Row) -> None:
        """(Prep thread) prepare, then chain the request's answer into the row's future."""
        try:
            prepared = self.task.prepare(row.record)
            if isinstance(prepared, Record):  # failed in preparation: finished already
                row.future.set_result(("done", prepared))
                return
            request = self.task.send(prepared)
        except BaseException as exc:  # handed to the DoFn thread, which decides
            row.future.set_result(("error", exc))
            return

        def relay(f: concurrent.futures.Future) -> None:
            exc = f.exception()
            row.future.set_result(("error", exc) if exc is not None else ("answer", f.result()))

        request.add_done_callback(relay)

    def _collect(self, *, block: bool) -> Iterator[Record]:
        if not self.pending:
            return
        if block:
            ready, _ = concurrent.futures.wait(
                self.pending, return_when=concurrent.futures.FIRST_COMPLETED
            )
        else:
            ready = {f for f in self.pending if f.done()}
        for future in ready:
            self.pending.discard(future)
            row = self.rows.pop(future)
            kind, value = future.result()
            if kind == "done":
                yield value
                continue
            if isinstance(value, EngineFatalError):
                raise value  # the bundle fails and is retried; no row of it is committed
            out = self.task.finish(row.record, value)
            self._outcomes.append(value if kind == "error" else out)
            if len(self._outcomes) >= _BREAKER_CHUNK:
                chunk, self._outcomes = self._outcomes, []
                self.breaker.record(chunk)
            yield out


__all__ = ["InFlightInference", "InFlightTask"]
