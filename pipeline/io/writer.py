"""Per-shard outputs: ``OUT/shards/part-00042.<attempt>.parquet``, committed by
``part-00042.stats.json``.

A shard is the unit of work and of commit. Its rows are buffered by the writer until every row of
the shard has arrived (the shard plan says how many), checked (rows in == rows out, no duplicate
uid), sorted by uid and written under a name of this attempt's own; then the stats file, which
names that parquet with its row count and size, is created only if absent. That creation is the
commit: a shard with a stats file is complete, a second attempt of the same shard (a retried
bundle, a zombie worker) can never replace or un-commit it, and a parquet no stats file names is
never read (see ``pipeline.io.shard_files`` for the store-specific create-only writes and gc).

Memory: where the stages between the reader and the writer are fused (Dataflow, Flink), a shard's
rows travel in the bundle that read the shard, so the writer holds only the shards in flight in
its bundle (``shard_size`` rows each), never the dataset, and needs no shuffle. Where they are not
(Beam's local FnApiRunner materialises multi-input Flattens and may split their rows over bundles
or workers), the rows left over at the end of a bundle take a GroupByKey path that completes the
shard correctly; the Beam counters ``vecap_writer/shards_fused``, ``shards_regrouped`` and
``rows_regrouped`` say which path ran, and ``pipeline.run`` bounds the local runner's memory by
running it in waves of shards. The parquet file is serialised in memory before it is uploaded
(about the size of the shard's rows, which are held anyway), so a failure while writing it
uploads nothing.
"""

from __future__ import annotations

import collections
import contextlib
import io
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.shared import Shared
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from pipeline.io.shard_files import (
    SHARDS_DIR,
    attempt_parquet_name,
    committed_parquet_path,
    committed_parquet_urls,
    committed_shard_ids,
    committed_shards,
    list_shards,
    new_attempt_id,
    put_bytes,
    put_if_absent,
    shards_dir,
    stats_path,
)
from schemas.record import RECORD_SCHEMA, Record
from schemas.stats import ShardStats

# The stage boundaries the clock stamps, in pipeline order; "read" is the first.
READ_STAGE = "read"


class ShardIntegrityError(RuntimeError):
    """A shard reached the writer with missing, extra or duplicate rows: a stage lost or duplicated rows."""


@dataclass(frozen=True)
class WriterConfig:
    """Where and how shards are written.

    ``rows_per_row_group``: images dominate a row (~30 KB), so 256 rows is ~8 MB per row group,
    small enough for a trainer to read one group at a time and large enough for zstd to work.
    """

    output: str
    rows_per_row_group: int = 256
    compression: str = "zstd"
    compression_level: int | None = None
    keep_images: bool = True  # False drops the jpg column's bytes (captions-only output)

    def __post_init__(self) -> None:
        if not self.output or not isinstance(self.output, str):
            raise ValueError("WriterConfig.output must be a non-empty path or fsspec URL")
        if self.rows_per_row_group < 1:
            raise ValueError(f"rows_per_row_group must be >= 1, got {self.rows_per_row_group}")
        if self.compression not in ("zstd", "snappy", "gzip", "brotli", "lz4", "none"):
            raise ValueError(f"unsupported parquet compression {self.compression!r}")


# --------------------------------------------------------------------------- paths


def parquet_path(output: str, shard_id: int) -> str:
    """The parquet file shard ``shard_id``'s stats file names (reads that stats file).

    Raises ``FileNotFoundError`` when the shard is not committed: an uncommitted attempt file
    is never the shard's parquet."""
    fs, path = _fs(stats_path(output, shard_id))
    try:
        stats = ShardStats.from_json(fs.cat_file(path).decode("utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"shard {shard_id} of {output} is not committed") from None
    return committed_parquet_path(output, stats)


def _fs(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(path)
    return fs, root


def finished_shard_ids(output: str) -> set[int]:
    """Ids of the committed shards (with a stats file): one listing, no file read."""
    return committed_shard_ids(output)


def finished_shards(output: str) -> dict[int, ShardStats]:
    """Committed shards' stats, read in bulk (one listing, one batched read); {} when the output
    does not exist."""
    return committed_shards(output)


def read_stats(output: str, shard_ids: Iterable[int]) -> dict[int, ShardStats]:
    """The stats of those of ``shard_ids`` that are committed (one listing, one batched read)."""
    return committed_shards(output, shard_ids)


def finished_parquet_paths(output: str) -> list[str]:
    """Full paths (with protocol) of the parquet files the stats files name, in shard order."""
    return list(committed_parquet_urls(output).values())


def remove_stale_temporaries(output: str) -> int:
    """Delete local-disk temporaries a killed run left behind; returns how many."""
    fs, listing = list_shards(output)
    if listing.temporaries:
        fs.rm(listing.temporaries)
    return len(listing.temporaries)


# --------------------------------------------------------------------------- reading back


def read_shard_records(path: str, columns: Sequence[str] | None = None) -> Iterator[Record]:
    """Records of one written shard, in uid order, one row group at a time."""
    fs, root = _fs(path)
    with fs.open(root, "rb") as f:
        pf = pq.ParquetFile(f)
        for i in range(pf.num_row_groups):
            for row in pf.read_row_group(i, columns=list(columns) if columns else None).to_pylist():
                yield Record.from_dict(row)


# --------------------------------------------------------------------------- writing one shard


def check_shard(shard_id: int, records: Sequence[Record], expected_rows: int) -> None:
    """Raise :class:`ShardIntegrityError` unless the shard has exactly its rows, once each."""
    wrong = [r.uid for r in records if r.shard_id != shard_id]
    if wrong:
        raise ShardIntegrityError(
            f"shard {shard_id}: {len(wrong)} rows belong to another shard (e.g. uid {wrong[0]})"
        )
    uids = collections.Counter(r.uid for r in records)
    dups = [u for u, n in uids.items() if n > 1]
    if dups:
        raise ShardIntegrityError(
            f"shard {shard_id}: {len(dups)} duplicate uids (e.g. {dups[0]}); a stage emitted a row twice"
        )
    if len(records) != expected_rows:
        raise ShardIntegrityError(
            f"shard {shard_id}: {len(records)} rows reached the writer, {expected_rows} were read; "
            "a stage lost rows, refusing to mark the shard done"
        )


def shard_stats(
    shard_id: int,
    records: Sequence[Record],
    *,
    stage_seconds: Mapping[str, float] | None = None,
    started_at: float | None = None,
    finished_at: float | None = None,
) -> ShardStats:
    status_counts = collections.Counter(r.status for r in records)
    source_counts = collections.Counter(r.fusion_source for r in records if r.fusion_source)
    now = time.time()
    return ShardStats(
        shard_id=shard_id,
        rows=len(records),
        status_counts=dict(sorted(status_counts.items())),
        fusion_source_counts=dict(sorted(source_counts.items())),
        ethics_flagged=sum(1 for r in records if r.ethics_flagged),
        dedup_counts=dedup_counts(records),
        stage_seconds={k: round(v, 4) for k, v in (stage_seconds or {}).items()},
        started_at=started_at if started_at is not None else now,
        finished_at=finished_at if finished_at is not None else now,
        caption_models=sorted({r.caption_model for r in records if r.caption_model}),
        fusion_models=sorted({r.fusion_model for r in records if r.fusion_model}),
    )


DEDUP_COUNTS = (
    "url_duplicates",  # downloads saved
    "image_duplicates",
    "pair_duplicates",
    "caption_cache_hits",
    "fusion_cache_hits",
    "caption_calls_saved",
    "fusion_calls_saved",
)


def dedup_counts(records: Sequence[Record]) -> dict[str, int]:
    """What dedup and the caption cache saved on these rows; {} when neither touched them."""
    counts = dict.fromkeys(DEDUP_COUNTS, 0)
    for r in records:
        if r.duplicate_kind == "url":
            counts["url_duplicates"] += 1
        elif r.duplicate_kind == "image":
            counts["image_duplicates"] += 1
        if r.fusion_of:
            counts["pair_duplicates"] += 1
        counts["caption_cache_hits"] += bool(r.caption_cached)
        counts["fusion_cache_hits"] += bool(r.fusion_cached)
        # a visual caption this row carries without its own model call
        if r.visual_caption and (r.duplicate_of or r.caption_cached):
            counts["caption_calls_saved"] += 1
        # an LLM-written fused caption this row carries without its own call
        if r.fusion_source == "llm" and (r.fusion_of or r.fusion_cached):
            counts["fusion_calls_saved"] += 1
    return counts if any(counts.values()) else {}


def records_table(records: Sequence[Record], keep_images: bool = True) -> pa.Table:
    rows = [r.to_dict() for r in records]
    if not keep_images:
        for row in rows:
            row["jpg"] = None
    return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)


def parquet_bytes(config: WriterConfig, rows: Sequence[Record]) -> bytes:
    """The shard's parquet file, serialised in memory (the shard's rows are in memory anyway)."""
    codec = "NONE" if config.compression == "none" else config.compression
    binary_cols = {"jpg"}  # statistics and dictionaries of image bytes are waste
    stat_cols = [f.name for f in RECORD_SCHEMA if f.name not in binary_cols]
    # and so is compressing them: JPEG bytes do not shrink, zstd only burns CPU on them
    compression = {f.name: "NONE" if f.name in binary_cols else codec for f in RECORD_SCHEMA}
    level = config.compression_level
    levels = None if level is None or codec == "NONE" else {c: level for c in stat_cols}
    # A BytesIO sink: getvalue() hands over its buffer without a copy, where an arrow
    # BufferOutputStream's to_pybytes() would hold the shard's bytes twice at the peak.
    sink = io.BytesIO()
    with pq.ParquetWriter(
        sink,
        RECORD_SCHEMA,
        compression=compression,
        compression_level=levels,
        use_dictionary=stat_cols,
        write_statistics=stat_cols,
    ) as writer:
        step = config.rows_per_row_group
        for start in range(0, len(rows), step):
            writer.write_table(
                records_table(rows[start : start + step], config.keep_images),
                row_group_size=step,
            )
        if not rows:  # an empty shard is still a valid file with the schema
            writer.write_table(RECORD_SCHEMA.empty_table())
    return sink.getvalue()


def read_committed_stats(output: str, shard_id: int) -> ShardStats | None:
    """The shard's stats file, or None if the shard is not committed."""
    fs, path = _fs(stats_path(output, shard_id))
    try:
        return ShardStats.from_json(fs.cat_file(path).decode("utf-8"))
    except FileNotFoundError:
        return None


def write_shard(
    config: WriterConfig,
    shard_id: int,
    records: Iterable[Record],
    expected_rows: int,
    *,
    stage_seconds: Mapping[str, float] | None = None,
    started_at: float | None = None,
) -> ShardStats:
    """Check and sort the rows, upload them as this attempt's own parquet file, then commit by
    creating the stats file, which names that parquet, only if it does not exist yet.

    Returns the shard's committed stats: this attempt's, or, when another attempt committed
    first (before this one started or while it wrote), that attempt's; this attempt's parquet
    is then deleted (an uncommitted attempt file, never read). A failure anywhere uploads
    nothing or leaves an uncommitted attempt file: never a commit.
    """
    rows = sorted(records, key=lambda r: r.uid)
    check_shard(shard_id, rows, expected_rows)
    committed = read_committed_stats(config.output, shard_id)
    if committed is not None:  # never written again: a retry or a second attempt of a bundle
        _SHARDS_ALREADY_COMMITTED.inc()
        return committed
    fs, shards_root = _fs(shards_dir(config.output))
    fs.makedirs(shards_root, exist_ok=True)
    attempt = new_attempt_id()
    name = attempt_parquet_name(shard_id, attempt)
    parquet = f"{shards_root.rstrip('/')}/{name}"

    t0 = time.time()
    data = parquet_bytes(config, rows)
    put_bytes(fs, parquet, data)
    seconds = dict(stage_seconds or {})
    seconds["write"] = time.time() - t0
    stats = shard_stats(shard_id, rows, stage_seconds=seconds, started_at=started_at)
    stats.parquet, stats.parquet_bytes, stats.attempt = name, len(data), attempt
    _, final_stats = _fs(stats_path(config.output, shard_id))
    if put_if_absent(fs, final_stats, stats.to_json().encode()):
        return stats
    winner = read_committed_stats(config.output, shard_id)
    if winner is None:
        raise RuntimeError(
            f"shard {shard_id}: the stats file existed a moment ago and is gone now; is "
            "another run clearing this output (--overwrite)?"
        )
    if winner.parquet == name:
        # our own commit: the create succeeded but its answer was lost and the client's retry
        # met our own file (a 412); deleting the parquet now would break the commit
        return winner
    # another attempt committed this shard while this one wrote: its commit stands
    _COMMITS_LOST.inc()
    with contextlib.suppress(FileNotFoundError):
        fs.rm(parquet)
    return winner


# --------------------------------------------------------------------------- stage clock


class ShardClockBoard:
    """Per-process first/last time each shard's rows crossed each stage boundary.

    Shared between the clock DoFns and the writer of one fused stage through Beam's
    ``apache_beam.utils.shared.Shared`` (one board per pipeline tag and process), because records
    carry no timing and the stages are opaque transforms.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._marks: dict[int, dict[str, list[float]]] = {}

    def stamp(self, shard_id: int, stage: str, t: float) -> None:
        with self._lock:
            span = self._marks.setdefault(shard_id, {}).setdefault(stage, [t, t])
            if t < span[0]:
                span[0] = t
            if t > span[1]:
                span[1] = t

    def pop(self, shard_id: int) -> dict[str, list[float]]:
        with self._lock:
            return self._marks.pop(shard_id, {})


def stage_seconds_from_marks(
    marks: Mapping[str, Sequence[float]], stages: Sequence[str]
) -> tuple[dict[str, float], float | None]:
    """Critical-path seconds per stage: when the shard's last row cleared the stage, minus when it
    cleared the previous one ("read": last minus first row read). They add up to the shard's time.
    Returns (seconds per stage, started_at)."""
    seconds: dict[str, float] = {}
    previous_end: float | None = None
    started_at: float | None = None
    for stage in stages:
        span = marks.get(stage)
        if span is None:
            continue  # the stage ran in another process; its time is unknown here
        if previous_end is None:
            started_at = span[0]
            previous_end = span[0]
        seconds[stage] = max(span[1] - previous_end, 0.0)
        previous_end = span[1]
    return seconds, started_at


def new_clock() -> tuple[Any, str]:
    """A (Shared handle, tag) pair for one pipeline's clock DoFns and writer."""
    return Shared(), f"vecap-clock-{uuid.uuid4().hex}"


def _acquire_board(handle: Any, tag: str) -> ShardClockBoard:
    return handle.acquire(ShardClockBoard, tag=tag)


# --------------------------------------------------------------------------- Beam transforms


PARTIAL_TAG = "partial"
METRICS_NAMESPACE = "vecap_writer"
_SHARDS_FUSED = Metrics.counter(METRICS_NAMESPACE, "shards_fused")
_SHARDS_REGROUPED = Metrics.counter(METRICS_NAMESPACE, "shards_regrouped")
_ROWS_REGROUPED = Metrics.counter(METRICS_NAMESPACE, "rows_regrouped")
# a shard found committed when its rows reached the writer (a retried bundle), and commits this
# attempt lost to a concurrent one: both leave the first commit in place
_SHARDS_ALREADY_COMMITTED = Metrics.counter(METRICS_NAMESPACE, "shards_already_committed")
_COMMITS_LOST = Metrics.counter(METRICS_NAMESPACE, "commits_lost")


class StageClockFn(beam.DoFn):
    """Pass-through that stamps when each shard's rows cross a stage boundary."""

    def __init__(self, stage: str, handle: Any, tag: str) -> None:
        self._stage, self._handle, self._tag = stage, handle, tag

    def setup(self) -> None:
        self._board = _acquire_board(self._handle, self._tag)

    def process(self, record: Record) -> Iterator[Record]:
        self._board.stamp(record.shard_id, self._stage, time.time())
        yield record


def make_stage_clock(stage: str, clock: tuple[Any, str]) -> beam.ParDo:
    handle, tag = clock
    return beam.ParDo(StageClockFn(stage, handle, tag))


class _ShardCommitter:
    """What both writer DoFns share: the shard plan, the clock board, the write itself."""

    def __init__(
        self,
        config: WriterConfig,
        expected_rows: Mapping[int, int],
        stages: Sequence[str],
        clock: tuple[Any, str],
    ) -> None:
        self.config = config
        self.expected = dict(expected_rows)
        self.stages = tuple(stages)
        self.handle, self.tag = clock

    def commit(self, board: ShardClockBoard, shard_id: int, rows: Iterable[Record]) -> ShardStats:
        seconds, started_at = stage_seconds_from_marks(board.pop(shard_id), self.stages)
        return write_shard(
            self.config,
            shard_id,
            rows,
            self.expected[shard_id],
            stage_seconds=seconds,
            started_at=started_at,
        )


class FusedShardWriterFn(beam.DoFn):
    """Writes each shard as soon as its last row arrives; leftovers go to the grouped path."""

    def __init__(self, committer: _ShardCommitter) -> None:
        self._committer = committer

    def setup(self) -> None:
        self._board = _acquire_board(self._committer.handle, self._committer.tag)

    def start_bundle(self) -> None:
        self._buffers: dict[int, list[Record]] = {}

    def process(self, record: Record) -> Iterator[ShardStats]:
        sid = record.shard_id
        expected = self._committer.expected
        if sid not in expected:
            raise ShardIntegrityError(
                f"row {record.uid} has shard_id {sid}, which is not in this run's shard plan"
            )
        buf = self._buffers.setdefault(sid, [])
        buf.append(record)
        if len(buf) == expected[sid]:
            del self._buffers[sid]
            _SHARDS_FUSED.inc()
            yield self._committer.commit(self._board, sid, buf)

    def finish_bundle(self) -> Iterator[Any]:
        # A shard still incomplete here was split across bundles by some stage: hand its rows
        # to the GroupByKey path, which sees all of them (the run reports this counter: the
        # regroup path holds rows in the runner's shuffle, not in this worker's bounded buffer).
        for sid, buf in self._buffers.items():
            _ROWS_REGROUPED.inc(len(buf))
            for record in buf:
                yield pvalue.TaggedOutput(
                    PARTIAL_TAG, WindowedValue((sid, record), MIN_TIMESTAMP, [GlobalWindow()])
                )
        self._buffers = {}


class GroupedShardWriterFn(beam.DoFn):
    def __init__(self, committer: _ShardCommitter) -> None:
        self._committer = committer

    def setup(self) -> None:
        self._board = _acquire_board(self._committer.handle, self._committer.tag)

    def process(self, element: tuple[int, Iterable[Record]]) -> Iterator[ShardStats]:
        sid, rows = element
        _SHARDS_REGROUPED.inc()
        yield self._committer.commit(self._board, sid, list(rows))


class WriteShards(beam.PTransform):
    """PTransform PCollection[Record] -> PCollection[ShardStats], one per shard written.

    ``expected_rows`` maps every shard id of this run to its row count (from the shard plan).
    ``clock`` is the :func:`new_clock` pair the run's :func:`make_stage_clock` ParDos share, and
    ``stages`` the boundary names in pipeline order, for per-stage seconds in the stats file.
    """

    def __init__(
        self,
        config: WriterConfig,
        expected_rows: Mapping[int, int],
        *,
        stages: Sequence[str] = (READ_STAGE,),
        clock: tuple[Any, str] | None = None,
    ) -> None:
        super().__init__()
        self._committer = _ShardCommitter(config, expected_rows, stages, clock or new_clock())

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        fused = records | "WriteCompleteShards" >> beam.ParDo(
            FusedShardWriterFn(self._committer)
        ).with_outputs(PARTIAL_TAG, main="stats")
        regrouped = (
            fused[PARTIAL_TAG]
            | "GroupPartialShards" >> beam.GroupByKey()
            | "WriteRegroupedShards" >> beam.ParDo(GroupedShardWriterFn(self._committer))
        )
        return (fused.stats, regrouped) | "AllShardStats" >> beam.Flatten()


__all__ = [
    "SHARDS_DIR",
    "ShardClockBoard",
    "ShardIntegrityError",
    "WriteShards",
    "WriterConfig",
    "check_shard",
    "finished_parquet_paths",
    "finished_shard_ids",
    "finished_shards",
    "make_stage_clock",
    "new_clock",
    "parquet_path",
    "read_shard_records",
    "parquet_bytes",
    "read_committed_stats",
    "read_stats",
    "records_table",
    "remove_stale_temporaries",
    "shard_stats",
    "shards_dir",
    "stage_seconds_from_marks",
    "stats_path",
    "write_shard",
]
