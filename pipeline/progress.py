"""Progress of a local run, watched from the outside: shards done = stats files present.

The stats file is each shard's commit marker, so counting them is exact and needs no hook into
Beam; a background thread polls the output's shards directory and drives a tqdm bar with rows/s.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from pipeline.io.shard_files import list_shards, read_stats_files
from schemas.stats import ShardStats


class ShardProgress:
    """Context manager: a bar of shards committed out of ``total`` while the run is in flight."""

    def __init__(
        self,
        output: str,
        shard_ids: Iterable[int],
        *,
        interval_s: float = 1.0,
        enabled: bool = True,
        stream: TextIO | None = None,
        on_update: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self._output = output
        self._todo = set(shard_ids)
        self._interval = interval_s
        self._enabled = enabled
        self._stream = stream or sys.stderr
        self._on_update = on_update
        self._seen: dict[int, ShardStats] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Any = None
        self._t0 = 0.0

    @property
    def done(self) -> dict[int, ShardStats]:
        return dict(self._seen)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self._seen.values())

    def poll(self) -> int:
        """Read the stats files that appeared since the last poll (one listing, one batched
        read of the new ones); returns how many are new."""
        fs, listing = list_shards(self._output)
        fresh = {
            sid: path
            for sid, path in listing.stats.items()
            if sid in self._todo and sid not in self._seen
        }
        try:
            found = read_stats_files(fs, fresh)
        except (OSError, ValueError):
            return 0  # being replaced right now (an --overwrite); the next poll reads it
        new = 0
        for sid, stats in found.items():
            if stats.finished_at < self._t0:
                continue  # an old marker from before this run (an overwrite deletes these)
            self._seen[sid] = stats
            new += 1
        return new

    def _update(self) -> None:
        new = self.poll()
        elapsed = max(time.time() - self._t0, 1e-9)
        if self._bar is not None and new:
            self._bar.update(new)
            self._bar.set_postfix(rows=self.rows, rows_s=f"{self.rows / elapsed:.1f}")
        if self._on_update is not None:
            self._on_update(len(self._seen), len(self._todo), self.rows / elapsed)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._update()
            except Exception as e:  # progress must never kill a run; say why it stopped
                print(f"progress: stopped watching: {e}", file=self._stream)
                return

    def __enter__(self) -> ShardProgress:
        self._t0 = time.time() - 1.0  # stats finished_at has sub-second jitter across processes
        if self._enabled and self._todo:
            from tqdm import tqdm

            self._bar = tqdm(total=len(self._todo), unit="shard", desc="shards", file=self._stream)
        # Nobody to tell (no bar: a distributed runner, --no-progress; no callback): no polling.
        # On Dataflow or Flink with an object-store output each poll lists the shards folder.
        if self._bar is not None or self._on_update is not None:
            self._thread = threading.Thread(target=self._loop, name="vecap-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join(timeout=10)
        self._update()
        if self._bar is not None:
            self._bar.close()


def run_summary_table(shards: dict[int, ShardStats], seconds: float) -> str:
    """The table printed at the end of a run: this run's shards, rows, statuses, rows/s."""
    rows = sum(s.rows for s in shards.values())
    status: dict[str, int] = {}
    for s in shards.values():
        for k, v in s.status_counts.items():
            status[k] = status.get(k, 0) + v
    lines = [
        f"this run: {len(shards)} shards, {rows} rows in {seconds:.1f} s "
        f"({rows / seconds if seconds > 0 else 0:.1f} rows/s)",
        f"{'status':<22}{'rows':>10}{'share':>8}",
    ]
    for k, v in sorted(status.items(), key=lambda kv: -kv[1]):
        lines.append(f"{k:<22}{v:>10}{100.0 * v / rows if rows else 0:>7.1f}%")
    return "\n".join(lines)


__all__ = ["ShardProgress", "run_summary_table"]
