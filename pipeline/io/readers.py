"""Input readers: from URL tables or img2dataset output to a stream of :class:`schemas.Record`.

Three steps, each usable on its own:

- :func:`plan_shards` expands the inputs (fsspec URLs, globs, directories), counts rows cheaply
  and cuts them into :class:`InputShard` s of ``shard_size`` rows with a global, stable
  numbering; column errors surface here, before any pipeline runs;
- :func:`read_shard` streams one shard's records (uid = ``make_uid(shard_id, row_index)``);
  malformed rows become ``invalid_row`` records in their place, never a crash or a gap;
- :class:`ReadInput` is the Beam transform: shards | Reshuffle | ParDo(read_shard), so workers
  read shards in parallel. Pass only the shards still to do when resuming.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import hashlib
import json
import math
import operator
import tarfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

import apache_beam as beam

from pipeline.errors import InputError
from pipeline.io.img2dataset_input import (
    ImageRow,
    attach_image,
    check_img2dataset_scan,
    image_column,
    read_img2dataset,
    read_webdataset,
    scan_webdataset,
)
from pipeline.io.input_files import (
    IMAGE_FORMATS,
    INPUT_FORMATS,
    expand_inputs,
    format_from_extension,
)
from pipeline.io.reader_config import (
    MAX_SHARD_SIZE,
    ReaderConfig,
    add_reader_arguments,
    reader_config_from_args,
)
from pipeline.io.shard_files import committed_parquet_urls
from pipeline.io.shard_plan import (
    FilePart,
    InputShard,
    PlannedFile,
    build_shards,
    checkpoint_every,
    plan_from_json,
    plan_to_json,
)
from pipeline.io.table_formats import (
    MISSING,
    Checkpoints,
    FileScan,
    InvalidRow,
    check_columns,
    read_parquet,
    scan_parquet,
    tuple_getter,
)
from pipeline.io.text_formats import (
    read_csv,
    read_json,
    read_jsonl,
    read_tsv,
    scan_csv,
    scan_json,
    scan_jsonl,
    scan_tsv,
)
from pipeline.io.writer import read_shard_records
from schemas import Record, Status, make_uid

# From this many shards on, a shard list reaches the runner as a file (OUT/plan/...) instead of
# inside the job graph: Dataflow refuses job graphs over a few MB, and 300M rows are 300k shards.
PLAN_FILE_MIN_SHARDS = 1000

# Files are scanned concurrently: footer reads and object-store reads are latency-bound, and
# zlib inflates without the GIL.
_SCAN_THREADS = 16

# formats whose files may come without a header line (ReaderConfig.column_names)
_HEADERLESS_FORMATS = frozenset({"csv", "tsv"})
SCANNERS = {
    "parquet": scan_parquet,
    "jsonl": scan_jsonl,
    "json": scan_json,
    "csv": scan_csv,
    "tsv": scan_tsv,
}
READERS = {
    "parquet": read_parquet,
    "jsonl": read_jsonl,
    "json": read_json,
    "csv": read_csv,
    "tsv": read_tsv,
}


# --------------------------------------------------------------------------- planning


def _resolve_format(url: str, config: ReaderConfig) -> str:
    if config.input_format is not None:
        return config.input_format
    fmt = format_from_extension(url)
    if fmt is None:
        raise InputError(
            f"cannot tell the format of {url!r} from its extension; set the input format "
            f"({', '.join(INPUT_FORMATS)})"
        )
    return fmt


def _scan(
    url: str, file_format: str, checkpoints: Checkpoints | None, names: Sequence[str] = ()
) -> FileScan:
    if file_format in _HEADERLESS_FORMATS:
        return SCANNERS[file_format](url, checkpoints, names=names)
    if file_format in ("parquet", "img2dataset"):
        return SCANNERS["parquet"](url)  # row groups, not byte offsets
    if file_format == "webdataset":
        return scan_webdataset(url, checkpoints)
    return SCANNERS[file_format](url, checkpoints)


def _check_scan(url: str, file_format: str, scan: FileScan, config: ReaderConfig) -> str:
    """Validate a scanned file's columns; returns the format (auto parquet may be img2dataset)."""
    if (
        file_format == "parquet"
        and config.input_format is None
        and image_column(scan.columns, scan.binary_columns) is not None
    ):
        file_format = "img2dataset"  # image bytes on board: no need to download again
    if file_format == "img2dataset":
        check_img2dataset_scan(url, scan)
    if file_format == "webdataset":
        return file_format  # columns live in each sample's .json; absent ones read as null
    if file_format in ("jsonl", "json") and not scan.columns:
        return file_format  # no JSON object to learn the keys from: every row is invalid anyway
    check_columns(url, config.columns, scan.columns)
    return file_format


def _input_file_error(url: str, fmt: str, e: Exception) -> str:
    detail = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, PermissionError):
        detail = "permission denied"
    where = "" if url in detail else f"input file {url}: "
    return f"{where}{detail}; cannot plan it as {fmt} (check the file, or set the input format)"


def plan_files(config: ReaderConfig) -> list[PlannedFile]:
    """Every input file with its format, row count and checkpoint offsets, in plan order."""
    urls = expand_inputs(config.inputs, config.input_format)
    formats = [_resolve_format(u, config) for u in urls]
    if config.column_names:
        others = [u for u, f in zip(urls, formats, strict=True) if f not in _HEADERLESS_FORMATS]
        if others:
            raise InputError(
                f"column names (a headerless table) apply to csv and tsv only, not {others[0]!r}"
            )
    every = checkpoint_every(config.shard_size)

    def plan_one(url: str, fmt: str) -> PlannedFile:
        # each file is scanned on its own, with checkpoints at fixed local intervals, so the
        # scans can run at once: remote reads and gzip inflation overlap across files
        try:
            scan = _scan(url, fmt, Checkpoints(0, every), config.column_names)
            fmt = _check_scan(url, fmt, scan, config)
        except InputError:
            raise
        except (OSError, ValueError, EOFError, zlib.error, tarfile.TarError) as e:
            # unreadable or malformed input (permission, a broken or cut-off gzip/parquet/tar, bad
            # UTF-8 or JSON): the user's file to fix, not a vecap bug, so a one-line input error
            raise InputError(_input_file_error(url, fmt, e)) from e
        return PlannedFile(url, fmt, scan.rows, scan.offsets)

    pool = ThreadPoolExecutor(min(_SCAN_THREADS, len(urls)))
    try:
        futures = [pool.submit(plan_one, u, f) for u, f in zip(urls, formats, strict=True)]
        return [future.result() for future in futures]
    finally:
        # on the first bad file, files not yet started are not scanned at all
        pool.shutdown(wait=True, cancel_futures=True)


def plan_shards(config: ReaderConfig) -> list[InputShard]:
    """The input cut into shards of ``config.shard_size`` rows, numbered from 0 in input order.

    Deterministic: the same files with the same contents give the same shards and uids. Raises
    :class:`~pipeline.errors.InputError` (a ``ValueError``; naming the columns found) when a file
    lacks a configured column or cannot be read, and ``InputNotFoundError`` (a
    ``FileNotFoundError``) when an input matches nothing.
    """
    return build_shards(plan_files(config), config.shard_size)


# --------------------------------------------------------------------------- rows -> records


def _json_default(value: Any) -> Any:
    """JSON for the extra-column values parquet can hold beyond JSON's types."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(f"cannot store a {type(value).__name__} in extra")


class _RowLayout:
    """Where url, caption and the extras sit in the value tuples a format reader yields."""

    def __init__(self, config: ReaderConfig) -> None:
        self.columns = config.columns
        self.url_name = config.url_column
        self.url_index = self.columns.index(config.url_column)
        self.caption_index = (
            None if config.caption_column is None else self.columns.index(config.caption_column)
        )
        self.extras = [(c, self.columns.index(c)) for c in config.extra_columns]
        self.extra_keys = [encode_basestring(c) + ":" for c in config.extra_columns]
        self.extra_values = tuple_getter([i for _, i in self.extras]) if self.extras else None


# one encoder for every row: json.dumps with options builds a new encoder per call
_EXTRA_JSON = json.JSONEncoder(
    ensure_ascii=False, default=_json_default, allow_nan=False, separators=(",", ":")
)


def _extra_json(row: tuple[Any, ...], layout: _RowLayout) -> str:
    """The extra columns as a JSON object; text tables (all strings) take a 10x faster path."""
    try:
        # the same text _EXTRA_JSON writes, from json's own C string encoder (TypeError on a
        # value that is not a string)
        pairs = map(
            operator.add, layout.extra_keys, map(encode_basestring, layout.extra_values(row))
        )
        return "{" + ",".join(pairs) + "}"
    except TypeError:
        values = {name: (None if row[i] is MISSING else row[i]) for name, i in layout.extras}
        try:
            return _EXTRA_JSON.encode(values)
        except ValueError:  # NaN or infinity, which JSON cannot hold: null, as pandas writes
            return _EXTRA_JSON.encode(_finite(values))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _record(
    shard_id: int,
    row_index: int,
    row: tuple[Any, ...] | InvalidRow,
    layout: _RowLayout,
    *,
    url_required: bool = True,
) -> Record:
    """A record from one row's values, or an ``invalid_row`` record saying what is wrong."""
    if row.__class__ is InvalidRow:
        return Record(
            make_uid(shard_id, row_index), shard_id, row_index,
            status=Status.INVALID_ROW.value, error=row.error,  # type: ignore[union-attr]
        )  # fmt: skip
    # Fast path for the common row (a URL string, a string or no caption); anything else goes
    # through the checks that name the problem.
    url = row[layout.url_index]
    caption = None if layout.caption_index is None else row[layout.caption_index]
    if url.__class__ is str and (caption is None or caption.__class__ is str):
        url = url.strip()  # stray whitespace around URLs is common in scraped tables
        if url:
            if caption is not None and (not caption or caption.isspace()):
                caption = None  # an empty alt-text is no alt-text: downstream tests one thing
            try:
                extra = _extra_json(row, layout) if layout.extras else None
            except (TypeError, ValueError):
                pass  # the checked path reports it
            else:
                return Record(
                    make_uid(shard_id, row_index), shard_id, row_index, url, caption, extra
                )
    return _checked_record(shard_id, row_index, row, layout, url_required=url_required)


def _checked_record(
    shard_id: int, row_index: int, row: tuple[Any, ...], layout: _RowLayout, *, url_required: bool
) -> Record:
    problems: list[str] = []
    url = row[layout.url_index]
    if url is MISSING or url is None:
        if url_required:
            problems.append(f"no {layout.url_name!r} value")
        url = None
    elif not isinstance(url, str):
        problems.append(f"{layout.url_name!r} is a {type(url).__name__}, not a string")
        url = None
    else:
        url = url.strip()
        if not url:
            if url_required:
                problems.append(f"{layout.url_name!r} is empty")
            url = None
    caption = None if layout.caption_index is None else row[layout.caption_index]
    if caption is MISSING or caption is None:
        caption = None
    elif not isinstance(caption, str):
        problems.append(f"caption is a {type(caption).__name__}, not a string")
        caption = None
    elif not caption.strip():
        caption = None
    extra = None
    if layout.extras:
        try:
            extra = _extra_json(row, layout)
        except (TypeError, ValueError) as e:
            problems.append(f"extra columns cannot be stored as JSON: {e}")
    uid = make_uid(shard_id, row_index)
    if problems:
        return Record(
            uid, shard_id, row_index, url=url, alt_text=caption, extra=extra,
            status=Status.INVALID_ROW.value, error="; ".join(problems),
        )  # fmt: skip
    return Record(uid, shard_id, row_index, url=url, alt_text=caption, extra=extra)


def _part_format(part: FilePart, config: ReaderConfig) -> str:
    return part.file_format or _resolve_format(part.path, config)


def _part_records(
    shard_id: int, first_index: int, part: FilePart, config: ReaderConfig, layout: _RowLayout
) -> Iterator[Record]:
    fmt = _part_format(part, config)
    index = first_index
    if fmt in IMAGE_FORMATS:
        if fmt == "webdataset":
            rows: Iterator[Any] = read_webdataset(
                part.path, part.start_row, part.stop_row, layout.columns, part.seek,
                caption_column=config.caption_column,
            )  # fmt: skip
        else:
            rows = read_img2dataset(part.path, part.start_row, part.stop_row, layout.columns)
        for row in rows:
            if row.__class__ is ImageRow:
                base = _record(shard_id, index, row.values, layout, url_required=False)
                yield attach_image(base, row, verify=config.verify_images)
            else:
                yield _record(shard_id, index, row, layout)
            index += 1
    else:
        names = {"names": config.column_names} if fmt in _HEADERLESS_FORMATS else {}
        rows = READERS[fmt](
            part.path, part.start_row, part.stop_row, layout.columns, part.seek, **names
        )
        for row in rows:
            yield _record(shard_id, index, row, layout)
            index += 1
    if index - first_index != part.rows:  # the format readers guarantee this; a bug otherwise
        raise RuntimeError(
            f"{part.path}: read {index - first_index} rows, the plan says {part.rows}"
        )


def read_shard(shard: InputShard, config: ReaderConfig) -> Iterator[Record]:
    """The shard's records in input order: exactly ``shard.rows`` of them, uids from the position.

    Malformed rows are ``invalid_row`` records. A file that changed since planning (fewer rows
    than the plan says) raises ``RuntimeError``: its uids would no longer mean the same rows.
    """
    layout = _RowLayout(config)
    index = 0
    for part in shard.parts:
        yield from _part_records(shard.shard_id, index, part, config, layout)
        index += part.rows


class ReadShardFn(beam.DoFn):
    """``read_shard`` as a DoFn that also counts rows, invalid rows and shards in Beam metrics
    (visible in the Dataflow/Flink UI while the job runs)."""

    def __init__(self, config: ReaderConfig) -> None:
        self._config = config
        self._rows = beam.metrics.Metrics.counter("vecap.readers", "rows")
        self._invalid = beam.metrics.Metrics.counter("vecap.readers", "invalid_rows")
        self._shards = beam.metrics.Metrics.counter("vecap.readers", "shards")

    def process(self, shard: InputShard) -> Iterator[Record]:
        invalid = 0
        for record in read_shard(shard, self._config):
            if record.status != Status.OK.value:
                invalid += 1
            yield record
        # once per shard: a counter update per row would cost more than the parsing
        self._rows.inc(shard.rows)
        self._invalid.inc(invalid)
        self._shards.inc()


def _write_json_lines(path: str, rows: Iterable[Any]) -> str:
    """``rows`` as JSON lines at ``path`` (any fsspec URL), written to a temporary name and
    moved, so a reader never sees half a list."""
    import fsspec

    fs, target = fsspec.core.url_to_fs(path)
    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    tmp = f"{target}.tmp"
    with fs.open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
    fs.mv(tmp, target)
    return path


def _read_json_lines(path: str, parse: Callable[[Any], Any], what: str) -> Iterator[Any]:
    """``parse`` of each line of a :func:`_write_json_lines` file, read through fsspec (any URL
    it knows: local, gs:// with gcsfs, s3:// with s3fs, memory://), the same stack that writes
    it, so one filesystem extra serves the launcher and the workers (Beam's own
    ``ReadFromText`` would need Beam's GCS/S3 filesystems as well)."""
    import fsspec

    with fsspec.open(path, "r", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield parse(json.loads(line))
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{number}: not {what}: {e}") from e


def write_plan_file(shards: Sequence[InputShard], path: str) -> str:
    """The shards as JSON lines at ``path``, for :class:`ReadInput`'s ``plan_file``."""
    return _write_json_lines(path, (shard.to_dict() for shard in shards))


def read_plan_file(path: str) -> Iterator[InputShard]:
    """The shards of a :func:`write_plan_file` file."""
    return _read_json_lines(path, InputShard.from_dict, "a shard plan line")


def write_parquet_list(parquets: Mapping[int, str], path: str) -> str:
    """Shard id -> committed parquet URL as JSON lines at ``path``: what a read of an earlier
    output names instead of embedding 300k URLs in the job graph."""
    return _write_json_lines(path, ([sid, url] for sid, url in sorted(parquets.items())))


def read_parquet_list(path: str) -> Iterator[tuple[int, str]]:
    return _read_json_lines(path, lambda pair: (int(pair[0]), str(pair[1])), "a parquet line")


class ShardParquets(beam.PTransform):
    """Pipeline root -> (shard id, parquet URL): from the graph for a few shards, from a
    :func:`write_parquet_list` file read on a worker for many (Dataflow caps job graphs at a
    few MB); spread over workers either way."""

    def __init__(
        self, parquets: Sequence[tuple[int, str]] | None = None, plan_file: str | None = None
    ) -> None:
        super().__init__()
        if (parquets is None) == (plan_file is None):
            raise ValueError("give the parquets or a file listing them")
        self._parquets = None if parquets is None else list(parquets)
        self._plan_file = plan_file

    def expand(self, pbegin):
        if self._plan_file is not None:
            pairs = (
                pbegin
                | "ParquetList" >> beam.Create([self._plan_file])
                | beam.FlatMap(read_parquet_list)
            )
        else:
            pairs = pbegin | "EarlierShards" >> beam.Create(self._parquets)
        return pairs | "SpreadShards" >> beam.Reshuffle()


class ReadInput(beam.PTransform):
    """Pipeline root -> PCollection[Record]: every row of the planned shards.

    ``shards`` defaults to the full plan (made when the pipeline is built, so input errors stop
    it before it runs); a resumed job passes only the unfinished ones. ``plan_file`` (from
    :func:`write_plan_file`) reads the shards from a file instead: a web-scale plan (300k shards)
    embedded in the job graph would exceed what Dataflow accepts. The Reshuffle keeps runners
    from fusing the whole read into one worker.
    """

    def __init__(
        self,
        config: ReaderConfig,
        shards: Sequence[InputShard] | None = None,
        *,
        plan_file: str | None = None,
    ) -> None:
        super().__init__()
        if shards is not None and plan_file is not None:
            raise ValueError("give the shards or a plan file, not both")
        self._config = config
        self._shards = None if shards is None else list(shards)
        self._plan_file = plan_file

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[Record]:
        if self._plan_file is not None:
            shards = (
                pbegin
                | "PlanFile" >> beam.Create([self._plan_file])
                | "InputShards" >> beam.FlatMap(read_plan_file)
            )
        else:
            plan = plan_shards(self._config) if self._shards is None else self._shards
            shards = pbegin | "InputShards" >> beam.Create(plan)
        return (
            shards
            | "SpreadShards" >> beam.Reshuffle()
            | "ReadShard" >> beam.ParDo(ReadShardFn(self._config))
        )


class ReadEarlierOutput(beam.PTransform):
    """Pipeline root -> the records of an earlier vecap output's committed shards (``--from``).

    Each shard is read from exactly the parquet file its stats file names; ``parquets`` (shard
    id -> URL, from the run's plan) saves reading the stats files again."""

    def __init__(
        self,
        source: str,
        shard_ids: Sequence[int],
        retry_statuses: Sequence[str] = (),
        parquets: Mapping[int, str] | None = None,
        *,
        list_dir: str | None = None,
    ) -> None:
        super().__init__()
        self._source = source
        self._shard_ids = list(shard_ids)
        self._retry = frozenset(retry_statuses)
        self._parquets = dict(parquets) if parquets is not None else None
        # from PLAN_FILE_MIN_SHARDS shards on, the parquet list goes in a file in this folder
        self._list_dir = list_dir

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        parquets = self._parquets
        if parquets is None:
            parquets = committed_parquet_urls(self._source)
        missing = [sid for sid in self._shard_ids if sid not in parquets]
        if missing:
            raise ValueError(f"{self._source}: shards {missing[:5]} are not committed there")
        pairs = [(sid, parquets[sid]) for sid in self._shard_ids]
        if self._list_dir is not None and len(pairs) >= PLAN_FILE_MIN_SHARDS:
            ident = hashlib.blake2b(json.dumps(pairs).encode(), digest_size=8).hexdigest()
            listing = write_parquet_list(
                dict(pairs), f"{self._list_dir.rstrip('/')}/earlier-{ident}.jsonl"
            )
            shards = ShardParquets(plan_file=listing)
        else:
            shards = ShardParquets(pairs)
        return (
            pbegin
            | "EarlierShards" >> shards
            | "ReadEarlierShard" >> beam.FlatMap(_read_earlier, self._retry)
        )


def _read_earlier(shard: tuple[int, str], retry: frozenset[str]) -> Iterator[Record]:
    return read_earlier_shard(shard[1], retry)


def read_earlier_shard(parquet: str, retry: frozenset[str]) -> Iterator[Record]:
    """One committed shard of an earlier output (the parquet its stats file names); rows with a
    ``retry`` status become ok again."""
    for record in read_shard_records(parquet):
        if record.status in retry:
            record = record.replace(status=Status.OK.value, error=None)
        yield record


__all__ = [
    "ReadEarlierOutput",
    "read_earlier_shard",
    "MAX_SHARD_SIZE",
    "FilePart",
    "InputShard",
    "ReadInput",
    "ReadShardFn",
    "ReaderConfig",
    "add_reader_arguments",
    "plan_files",
    "read_plan_file",
    "plan_from_json",
    "plan_shards",
    "plan_to_json",
    "read_shard",
    "reader_config_from_args",
    "write_plan_file",
]
