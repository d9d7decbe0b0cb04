"""Seeded uniform sampling of rows over any number of shards, in bounded memory.

Sampling is by random keys: every offered row draws a uniform key and the reservoir keeps the
``k`` smallest. That is a uniform sample without replacement (like Algorithm R) but vectorised
per arrow batch, so a scan over hundreds of millions of rows stays in numpy, not in a Python
loop. Only positions are kept; the rows themselves (with their image bytes) are fetched in a
second pass that reads just the row groups holding them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem


@dataclass(frozen=True, order=True)
class RowRef:
    """A row's position: index into the list of finished shards, and row number in its parquet."""

    shard_index: int
    row: int


class KeyedReservoir:
    """Keeps a uniform random sample of ``k`` row positions from everything offered."""

    def __init__(self, k: int, rng: np.random.Generator | None = None) -> None:
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        self.k = k
        self.seen = 0
        self._rng = rng  # None: a reservoir that is only merged into
        self._keys = np.empty(0, dtype=np.float64)
        self._shards = np.empty(0, dtype=np.int64)
        self._rows = np.empty(0, dtype=np.int64)

    def offer(self, shard_index: int, rows: np.ndarray) -> None:
        """Offer rows, drawing one uniform key each from this reservoir's generator."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        if self._rng is None:
            raise ValueError("this reservoir has no random generator; use offer_keyed or merge")
        # Keys are drawn even when k == 0 so a generator shared with other reservoirs moves
        # the same way whatever k is.
        self.offer_keyed(shard_index, rows, self._rng.random(rows.size))

    def offer_keyed(self, shard_index: int, rows: np.ndarray, keys: np.ndarray) -> None:
        """Offer rows with keys drawn by the caller (uniform in [0, 1), one per row)."""
        rows = np.asarray(rows, dtype=np.int64)
        keys = np.asarray(keys, dtype=np.float64)
        if rows.shape != keys.shape:
            raise ValueError("rows and keys differ in length")
        self.seen += int(rows.size)
        if self.k == 0 or rows.size == 0:
            return
        if self._keys.size >= self.k:
            # Full: only keys below the current k-th smallest can enter.
            keep = keys < self._keys.max()
            keys, rows = keys[keep], rows[keep]
            if keys.size == 0:
                return
        self._add(keys, rows, np.full(rows.size, shard_index, np.int64))

    def _add(self, keys: np.ndarray, rows: np.ndarray, shards: np.ndarray) -> None:
        self._keys = np.concatenate([self._keys, keys])
        self._rows = np.concatenate([self._rows, rows])
        self._shards = np.concatenate([self._shards, shards])
        if self._keys.size > self.k:
            best = np.argpartition(self._keys, self.k - 1)[: self.k]
            self._keys, self._rows, self._shards = (
                self._keys[best],
                self._rows[best],
                self._shards[best],
            )

    def merge(self, other: KeyedReservoir) -> None:
        """Absorb another reservoir: the k smallest keys of both, still a uniform sample."""
        self.seen += other.seen
        if self.k and other._keys.size:
            self._add(other._keys, other._rows, other._shards)

    def refs(self) -> list[RowRef]:
        """The sample, in file order (shard, then row), which is also uid order."""
        return sorted(RowRef(int(s), int(r)) for s, r in zip(self._shards, self._rows, strict=True))


def fetch_rows(
    fs: AbstractFileSystem,
    parquet_paths: Sequence[str],
    refs: Iterable[RowRef],
    columns: Sequence[str],
    batch_size: int = 64,
) -> tuple[dict[RowRef, dict[str, Any]], list[str]]:
    """Read just the rows in ``refs`` (with ``columns`` that exist in each file).

    Only the row groups that hold a wanted row are read, in small batches, so the memory used is
    a few batches of image bytes whatever the shard size. Returns the rows found and a problem
    line for each shard that could not be read.
    """
    wanted: dict[int, list[int]] = defaultdict(list)
    for ref in refs:
        wanted[ref.shard_index].append(ref.row)
    found: dict[RowRef, dict[str, Any]] = {}
    problems: list[str] = []
    for shard_index in sorted(wanted):
        path = parquet_paths[shard_index]
        try:
            with fs.open(path, "rb") as f:
                found.update(
                    _fetch_from_file(
                        f, shard_index, sorted(wanted[shard_index]), columns, batch_size
                    )
                )
        except (OSError, ValueError) as exc:  # arrow errors derive from these
            problems.append(f"{_name(path)}: sampled rows could not be read ({exc})")
    return found, problems


def _fetch_from_file(
    f: Any, shard_index: int, rows: list[int], columns: Sequence[str], batch_size: int
) -> Mapping[RowRef, dict[str, Any]]:
    pf = pq.ParquetFile(f)
    present = [c for c in columns if c in pf.schema_arrow.names]
    starts = np.cumsum([0] + [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)])
    groups = sorted({int(np.searchsorted(starts, r, side="right") - 1) for r in rows})
    wanted = set(rows)
    out: dict[RowRef, dict[str, Any]] = {}
    for group in groups:
        offset = int(starts[group])
        for batch in pf.iter_batches(batch_size=batch_size, row_groups=[group], columns=present):
            hits = [r - offset for r in range(offset, offset + batch.num_rows) if r in wanted]
            if hits:
                for i, row in zip(hits, batch.take(hits).to_pylist(), strict=True):
                    out[RowRef(shard_index, offset + i)] = row
            offset += batch.num_rows
    return out


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]
