"""What every input table format shares, and parquet.

Each format has two functions:

- ``scan_*`` counts a file's rows cheaply (parquet from its footer, text formats in one streaming
  pass, see :mod:`pipeline.io.text_formats`) and, for text formats, records checkpoints: the byte
  offsets where every N-th row starts, so a shard deep inside a big file jumps near its first
  row instead of re-parsing everything before it;
- ``read_*`` yields exactly ``stop - start`` rows, each a tuple of the requested columns' values
  in order, or an :class:`InvalidRow` that says what is wrong with that row. A malformed row
  still takes its place: rows in == rows out.

Memory is bounded by one parquet batch or one line, never the file.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline.io.input_files import open_binary

PARQUET_BATCH_ROWS = 8192


class _Missing:
    """A key absent from a JSON object (distinct from an explicit null)."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING = _Missing()


@dataclass(frozen=True)
class InvalidRow:
    """A row that could not be parsed; it still occupies its position in the shard."""

    error: str


def snippet(text: str | bytes, limit: int = 120) -> str:
    """The start of an offending row, for the error message (enough to find it, not all of it)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.rstrip("\r\n")
    return repr(text if len(text) <= limit else text[:limit] + "...")


Row = tuple[Any, ...] | InvalidRow
# (byte offset in the decompressed stream, the file row that starts there): where a reader may
# jump to before skipping forward to its first row
Seek = tuple[int, int]


@dataclass(frozen=True)
class FileScan:
    """What planning needs to know about one input file."""

    rows: int
    columns: tuple[str, ...]
    # local row index -> byte offset (in the decompressed stream) where that row starts
    offsets: dict[int, int] = field(default_factory=dict)
    binary_columns: tuple[str, ...] = ()  # parquet: columns holding bytes (img2dataset images)


class Checkpoints:
    """The file rows whose start offsets a scan records: first, first + every, ... (none if
    ``every`` is None)."""

    def __init__(self, first: int, every: int | None) -> None:
        self.every = every
        self.next = first if every else -1

    @property
    def wanted(self) -> bool:
        return self.next >= 0

    def advance(self) -> None:
        assert self.every is not None
        self.next += self.every


def no_checkpoints() -> Checkpoints:
    return Checkpoints(0, None)


def file_changed_error(url: str, planned: int, found: int) -> RuntimeError:
    return RuntimeError(
        f"input file {url} has {found} rows but the shard plan expected at least {planned}: "
        "it changed after planning; plan the input again (a new output directory)"
    )


def _missing_columns_error(url: str, missing: Sequence[str], found: Sequence[str]) -> InputError:
    return InputError(
        f"{url}: column(s) {', '.join(map(repr, missing))} not found; "
        f"columns found: {', '.join(map(repr, found)) or '(none)'}; choose from those with "
        "--url-column/--caption-column/--extra-columns (reader.column_names for a headerless table)"
    )


def check_columns(url: str, wanted: Sequence[str], found: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in found]
    if missing:
        raise _missing_columns_error(url, missing, found)


# --------------------------------------------------------------------------- parquet


def scan_parquet(url: str, checkpoints: Checkpoints | None = None) -> FileScan:
    """Row count and column names from the parquet footer; nothing else is read."""
    with open_binary(url, buffered=False) as f:
        pf = pq.ParquetFile(f)
        schema = pf.schema_arrow
        binary = tuple(
            n
            for n in schema.names
            if pa.types.is_binary(schema.field(n).type)
            or pa.types.is_large_binary(schema.field(n).type)
        )
        return FileScan(
            rows=pf.metadata.num_rows, columns=tuple(schema.names), binary_columns=binary
        )


def parquet_row_groups(pf: pq.ParquetFile, start: int, stop: int) -> tuple[list[int], int]:
    """The row groups that hold rows [start, stop) and how many rows of the first to skip."""
    groups: list[int] = []
    skip = 0
    pos = 0
    for i in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(i).num_rows
        if pos + n > start and pos < stop and n > 0:
            if not groups:
                skip = start - pos
            groups.append(i)
        pos += n
    return groups, skip


def iter_parquet_batches(
    url: str, start: int, stop: int, columns: Sequence[str], batch_rows: int = PARQUET_BATCH_ROWS
) -> Iterator[dict[str, list[Any]]]:
    """Columns (as python lists) of rows [start, stop), batch by batch, reading only their row groups."""
    with open_binary(url, buffered=False) as f:
        pf = pq.ParquetFile(f)
        check_columns(url, columns, pf.schema_arrow.names)
        groups, skip = parquet_row_groups(pf, start, stop)
        remaining = stop - start
        if remaining and groups:
            batches = pf.iter_batches(
                batch_size=batch_rows, row_groups=groups, columns=list(columns), use_threads=False
            )
            for batch in batches:
                if skip:
                    if skip >= batch.num_rows:
                        skip -= batch.num_rows
                        continue
                    batch = batch.slice(skip)
                    skip = 0
                if batch.num_rows > remaining:
                    batch = batch.slice(0, remaining)
                remaining -= batch.num_rows
                yield {name: batch.column(i).to_pylist() for i, name in enumerate(columns)}
                if remaining == 0:
                    break
        if remaining:
            raise file_changed_error(url, stop, stop - remaining)


def read_parquet(
    url: str, start: int, stop: int, columns: Sequence[str], seek: Seek | None = None
) -> Iterator[Row]:
    del seek  # parquet seeks by row group instead
    for batch in iter_parquet_batches(url, start, stop, columns):
        rows = zip(*(batch[c] for c in columns), strict=True)
        del batch  # one batch of Python values alive at a time, not two
        yield from rows
        del rows


def tuple_getter(indices: Sequence[int]) -> Any:
    """A C-speed function picking ``indices`` out of a sequence, always returning a tuple."""
    if len(indices) == 1:
        (i,) = indices
        return lambda seq: (seq[i],)
    return operator.itemgetter(*indices)


__all__ = [
    "MISSING",
    "Checkpoints",
    "FileScan",
    "InvalidRow",
    "Row",
    "Seek",
    "check_columns",
    "file_changed_error",
    "iter_parquet_batches",
    "no_checkpoints",
    "read_parquet",
    "scan_parquet",
    "snippet",
    "tuple_getter",
]
