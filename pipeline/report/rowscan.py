"""One streamed pass over the finished shards: counts, caption lengths, and which rows to show.

Reads only the light columns (never ``jpg``) batch by batch, so memory depends on the batch
size, the sample size and the number of shards, never on the number of rows.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from fsspec import AbstractFileSystem

from pipeline.report.aggregates import BoundedCounter, LengthHistogram
from pipeline.report.outputs import FinishedShard
from pipeline.report.sampling import KeyedReservoir, RowRef
from schemas.status import Status

# Caption kinds measured in words, with the column each comes from.
CAPTION_COLUMNS: dict[str, str] = {
    "AltText": "alt_text",
    "VC": "visual_caption",
    "VeC": "fused_caption",
}
SCAN_COLUMNS: tuple[str, ...] = (
    "status",
    "error",
    "fusion_source",
    "ethics_flagged",
    *CAPTION_COLUMNS.values(),
)
NO_FUSION_SOURCE = "(none)"
NO_ERROR_MESSAGE = "(no error message)"
_OK = Status.OK.value


@dataclass(frozen=True)
class ScanLimits:
    sample_size: int = 48
    failure_examples: int = 5  # example rows kept per failure status
    max_error_messages: int = 200  # distinct error messages counted per status
    length_cap: int = 200  # words; longer captions share the last histogram bin
    batch_size: int = 8192
    seed: int = 0
    workers: int = 4  # shards read at once; arrow decodes and counts outside the GIL

    def __post_init__(self) -> None:
        for name in ("sample_size", "failure_examples", "max_error_messages"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.length_cap < 1 or self.batch_size < 1 or self.workers < 1:
            raise ValueError("length_cap, batch_size and workers must be >= 1")


@dataclass
class ShardRowCounts:
    rows: int = 0
    status_counts: Counter = field(default_factory=Counter)


@dataclass
class RowScan:
    """Everything the report shows that comes from the rows themselves."""

    rows: int = 0
    status_counts: Counter = field(default_factory=Counter)
    fusion_source_counts: Counter = field(default_factory=Counter)  # over ok rows
    ethics_flagged: int = 0
    lengths: dict[str, LengthHistogram] = field(default_factory=dict)  # over ok rows
    error_messages: dict[str, BoundedCounter] = field(default_factory=dict)
    per_shard: dict[int, ShardRowCounts] = field(default_factory=dict)  # by shard index
    sample: list[RowRef] = field(default_factory=list)  # ok rows
    failure_examples: dict[str, list[RowRef]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def word_counts(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Words per non-null value (as ``str.split()`` counts them, Unicode spaces included)."""
    trimmed = pc.utf8_trim_whitespace(pc.drop_null(column))
    pieces = pc.list_value_length(pc.utf8_split_whitespace(trimmed))
    # Splitting an empty string gives one empty piece: that is zero words.
    counts = pc.if_else(pc.equal(pc.binary_length(trimmed), 0), 0, pieces)
    return np.asarray(counts.to_numpy(zero_copy_only=False), dtype=np.int64)


def mask_message_details(messages: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """URLs and long numbers masked, so messages that differ only there count together."""
    masked = pc.replace_substring_regex(messages, r"[a-zA-Z][a-zA-Z0-9+.-]*://\S+", "<url>")
    return pc.replace_substring_regex(masked, r"\b\d{5,}\b", "<n>")


def scan_rows(fs: AbstractFileSystem, shards: list[FinishedShard], limits: ScanLimits) -> RowScan:
    """Scan every finished shard once, ``limits.workers`` shards at a time.

    Each shard draws its sampling keys from its own stream (seeded by the seed and its shard
    id) into its own reservoir, and reservoirs merge by keeping the smallest keys: the result
    is the same uniform sample whatever the thread timing, batch size or number of workers.
    """
    scan = RowScan(lengths={k: LengthHistogram(cap=limits.length_cap) for k in CAPTION_COLUMNS})
    sample = KeyedReservoir(limits.sample_size)
    failures: dict[str, KeyedReservoir] = {}

    def read(index: int) -> _ShardAccumulator | str:
        try:
            return _scan_shard(fs, shards[index], index, limits)
        except (OSError, ValueError, TypeError, pa.ArrowException) as exc:
            # A corrupt file or a column of an unexpected type: that shard only.
            return f"{_name(shards[index].parquet_path)}: unreadable, not counted ({exc})"

    for index, local in _ordered_map(read, range(len(shards)), limits.workers):
        if isinstance(local, str):
            scan.problems.append(local)  # a shard counts whole or not at all
            continue
        local.merge_into(scan, index, limits)
        sample.merge(local.sample)
        for status, reservoir in local.failures.items():
            failures.setdefault(status, KeyedReservoir(limits.failure_examples)).merge(reservoir)

    scan.sample = sample.refs()
    scan.failure_examples = {s: r.refs() for s, r in sorted(failures.items())}
    return scan


def _ordered_map(fn, items: Sequence[int], workers: int):
    """(item, fn(item)) in order, at most ``2 * workers`` in flight (bounded memory)."""
    items = list(items)
    if workers <= 1:
        for item in items:
            yield item, fn(item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vecap-report") as pool:
        pending: deque = deque()
        it = iter(items)
        for item in it:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= 2 * workers:
                break
        while pending:
            item, future = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(fn, nxt)))
            yield item, future.result()


def _scan_shard(
    fs: AbstractFileSystem, shard: FinishedShard, index: int, limits: ScanLimits
) -> _ShardAccumulator:
    local = _ShardAccumulator(shard.shard_id, index, limits)
    with fs.open(shard.parquet_path, "rb") as f:
        pf = pq.ParquetFile(f)
        if "status" not in pf.schema_arrow.names:
            raise ValueError("no 'status' column")
        columns = [c for c in SCAN_COLUMNS if c in pf.schema_arrow.names]
        offset = 0
        for batch in pf.iter_batches(batch_size=limits.batch_size, columns=columns):
            local.add_batch(batch, offset)
            offset += batch.num_rows
    return local


class _ShardAccumulator:
    """One shard's counts and candidate rows, merged into the scan only if read whole."""

    def __init__(self, shard_id: int, shard_index: int, limits: ScanLimits) -> None:
        self.shard_index = shard_index
        self.limits = limits
        self.counts = ShardRowCounts()
        self.fusion_sources: Counter = Counter()
        self.ethics_flagged = 0
        self.lengths = {k: LengthHistogram(cap=limits.length_cap) for k in CAPTION_COLUMNS}
        self.errors: dict[str, Counter] = {}
        # Streams keyed by shard id (stable across reruns), separate for the gallery and the
        # failure examples so one does not shift the other.
        self.sample = KeyedReservoir(
            limits.sample_size, np.random.default_rng([limits.seed, 0, shard_id])
        )
        self._failure_rng = np.random.default_rng([limits.seed, 1, shard_id])
        self.failures: dict[str, KeyedReservoir] = {}

    def add_batch(self, batch: pa.RecordBatch, offset: int) -> None:
        shard_index, limits = self.shard_index, self.limits
        names = batch.schema.names
        status = pc.fill_null(batch.column("status"), "(missing status)")
        self.counts.rows += batch.num_rows
        for entry in pc.value_counts(status).to_pylist():
            self.counts.status_counts[entry["values"]] += entry["counts"]

        ok_mask = pc.equal(status, _OK)
        ok = batch.filter(ok_mask)
        positions = np.arange(offset, offset + batch.num_rows, dtype=np.int64)
        ok_np = ok_mask.to_numpy(zero_copy_only=False)
        self.sample.offer(shard_index, positions[ok_np])

        for kind, column in CAPTION_COLUMNS.items():
            if column in names:
                values = ok.column(column)
                self.lengths[kind].add(word_counts(values))
                self.lengths[kind].missing += values.null_count
            else:
                self.lengths[kind].missing += ok.num_rows
        if "fusion_source" in names:
            sources = pc.fill_null(ok.column("fusion_source"), NO_FUSION_SOURCE)
            for entry in pc.value_counts(sources).to_pylist():
                self.fusion_sources[entry["values"]] += entry["counts"]
        else:
            self.fusion_sources[NO_FUSION_SOURCE] += ok.num_rows
        if "ethics_flagged" in names:
            self.ethics_flagged += int(
                pc.sum(pc.fill_null(batch.column("ethics_flagged"), False).cast(pa.int64())).as_py()
                or 0
            )

        failed_np = ~ok_np
        if not failed_np.any():
            return
        failed_status = np.asarray(status.to_numpy(zero_copy_only=False), dtype=object)[failed_np]
        failed_positions = positions[failed_np]
        # One key per failed row, in row order, from the shard's failure stream, then split by
        # status: the examples depend on the output and the seed, not on the batch size.
        keys = self._failure_rng.random(failed_positions.size)
        for name in sorted(set(failed_status)):
            reservoir = self.failures.get(name)
            if reservoir is None:
                reservoir = self.failures[name] = KeyedReservoir(limits.failure_examples)
            mask = failed_status == name
            reservoir.offer_keyed(shard_index, failed_positions[mask], keys[mask])
        if "error" in names:
            failed = batch.filter(pc.invert(ok_mask))
            pairs = pa.table(
                {
                    "status": pc.fill_null(failed.column("status"), "(missing status)"),
                    "error": mask_message_details(
                        pc.fill_null(failed.column("error"), NO_ERROR_MESSAGE)
                    ),
                }
            )
            grouped = pairs.group_by(["status", "error"]).aggregate([([], "count_all")])
            for st, err, n in zip(
                grouped.column("status").to_pylist(),
                grouped.column("error").to_pylist(),
                grouped.column("count_all").to_pylist(),
                strict=True,
            ):
                self.errors.setdefault(st, Counter())[err] += n

    def merge_into(self, scan: RowScan, shard_index: int, limits: ScanLimits) -> None:
        scan.rows += self.counts.rows
        scan.status_counts.update(self.counts.status_counts)
        scan.fusion_source_counts.update(self.fusion_sources)
        scan.ethics_flagged += self.ethics_flagged
        for kind, hist in self.lengths.items():
            scan.lengths[kind].merge(hist)
        for status, messages in self.errors.items():
            bounded = scan.error_messages.setdefault(
                status, BoundedCounter(max_keys=limits.max_error_messages)
            )
            # Most frequent first, so the cap keeps the messages that matter.
            for message, n in messages.most_common():
                bounded.add(message, n)
        scan.per_shard[shard_index] = self.counts


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]
