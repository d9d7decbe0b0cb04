"""The injected fault of :mod:`tests.pipeline.cli.faults`, apart so that Beam is imported only
after vecap's logging is configured (and worker processes can import it by name)."""

from __future__ import annotations

import time
from pathlib import Path

import apache_beam as beam

# Upper bound on the wait: an earlier shard scheduled after this bundle in the same worker can
# never commit first, and then the failure comes without it (the test's assertion says so).
WAIT_S = 60


class FailOnShard(beam.DoFn):
    def __init__(self, shard_id: int, output: str) -> None:
        self._shard_id = shard_id
        self._output = output

    def start_bundle(self) -> None:
        self._held = 0

    def process(self, record):
        if record.shard_id >= self._shard_id:
            self._held += 1  # held back: this shard and the later ones never reach the writer
            return
        yield record

    def finish_bundle(self) -> None:
        # Beam finishes upstream steps first, so every row before this point has reached the
        # writer (and a complete shard 0 has been committed) by now.
        if not self._held:
            return
        shards = Path(self._output) / "shards"
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not all(
            (shards / f"part-{k:05d}.stats.json").exists() for k in range(self._shard_id)
        ):
            time.sleep(0.05)
        raise RuntimeError(f"injected failure on a row of shard {self._shard_id}")
