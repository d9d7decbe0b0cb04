"""``vecap export-hf``: a Hugging Face datasets folder (Hub-ready) from an output's committed shards.

Why not ``load_dataset("parquet", data_files="OUT/shards/*.parquet")``: that glob also reads
uncommitted attempt files (a shard's rows twice), and ``jpg`` comes back as raw bytes. This
export reads only what the stats files commit and writes::

    DEST/data/{split}-00000-of-000NN.parquet   one per committed shard, in shard order
    DEST/README.md                             the dataset card, written last
    DEST/.vecap-export/{split}.plan.json       what this split is made of (created once)
    DEST/.vecap-export/{file}.done.json        a data file is complete (created only if absent)

Each data file holds the shard's rows, all of them (rows in == rows out: a failed row stays,
with a null ``image`` and its ``status``/``error``), with ``image`` in the ``datasets`` Image
storage (struct ``{bytes, path}``) and the ``huggingface`` schema metadata ``datasets`` itself
writes, so the features are declared in every file and in the card's YAML.

``caption`` follows the release export's rule (:mod:`pipeline.io.export_json`): the chosen column
(``fused`` -> ``fused_caption``, which already holds the fusion stage's fallback, ``visual`` ->
``visual_caption``, ``alt`` -> ``alt_text``) where the row is ``ok``, that text is not blank and
the row is not ``ethics_flagged`` (unless ``include_flagged``); null elsewhere. Two release rules
do not apply, because rows here are keyed by uid, not URL: no URL is required, and a duplicate
URL keeps all its rows.

Scale: the existing markers are read in one batched ``fs.cat`` (s3fs/gcsfs fetch them
concurrently) after one listing of ``.vecap-export/``, this run's markers are kept in memory for
the card, and up to ``workers`` files are exported at once (threads: each reads its shard, writes
a local file and uploads it). The card is written only after every file is complete.

Exactly once: a data file is published whole (local disks: a hidden temporary, fsynced, renamed;
object stores: one upload of a finished local file), then its marker is created. A rerun skips
every file with a marker whose size matches the file, and rewrites the others (the bytes are a
pure function of the shard, so a file published just before a crash is rewritten identically).
"""

from __future__ import annotations

import collections
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from glob import has_magic  # the test fsspec.expand_path applies: such a path is globbed
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import ConfigError, InputNotFoundError, OutputError, UsageError
from pipeline.io.bounded_pool import run_bounded
from pipeline.io.export_json import CAPTION_COLUMNS, release_masks
from pipeline.io.shard_files import (
    CommitNotSupported,
    committed_parquet_name,
    committed_parquet_path,
    committed_shards,
    file_sha256,
    fs_and_path,
    is_local,
    publish_staged,
    put_bytes,
    put_if_absent,
    staged_file,
)
from pipeline.manifest import read_manifest
from schemas.record import RECORD_SCHEMA
from schemas.stats import ShardStats

INSTALL_HINT = "vecap export-hf needs the datasets library: pip install 'vecap[hf]'"
PLAN_FORMAT = "vecap-export-hf/1"
META_DIR = ".vecap-export"
_SPLIT_RE = re.compile(r"^\w+(\.\w+)*$")  # datasets' own rule for split names

# (column, kind) in file order; kind is a datasets feature: "image" or a Value dtype
COLUMNS: tuple[tuple[str, str], ...] = (
    ("image", "image"),
    ("uid", "string"),
    ("url", "string"),
    ("alt_text", "string"),
    ("caption", "string"),
    ("visual_caption", "string"),
    ("fused_caption", "string"),
    ("status", "string"),
    ("error", "string"),
    ("width", "int64"),
    ("height", "int64"),
    ("original_width", "int64"),
    ("original_height", "int64"),
    ("sha256", "string"),
    ("caption_model", "string"),
    ("caption_prompt_id", "string"),
    ("caption_engine", "string"),
    ("fusion_model", "string"),
    ("fusion_prompt_id", "string"),
    ("fusion_engine", "string"),
    ("fusion_source", "string"),
    ("fusion_reason", "string"),
    ("ethics_flagged", "bool"),
    # `vecap run --dedup`: the canonical row whose captions this row carries (a trainer may
    # skip rows that have one)
    ("duplicate_of", "string"),
    ("duplicate_kind", "string"),
    ("fusion_of", "string"),
)
# the columns counted per file, for the card (the rows' own word on models, prompts, engines)
_COUNTED = (
    "status",
    "fusion_source",
    "caption_model",
    "caption_prompt_id",
    "caption_engine",
    "fusion_model",
    "fusion_prompt_id",
    "fusion_engine",
)
_SOURCE_COLUMNS = tuple(n for n, _ in COLUMNS if n not in ("image", "caption")) + (
    "jpg",
    "image_format",
)
_IMAGE_EXTENSIONS = {"jpeg": "jpg"}  # image_format -> file extension, where they differ


def import_datasets() -> Any:
    """``datasets``, or a one-line :class:`UsageError` naming the install command."""
    try:
        import datasets
    except ImportError as e:
        raise UsageError(f"{INSTALL_HINT} ({e})") from None
    return datasets


def hf_features(datasets: Any) -> Any:
    """The ``datasets.Features`` of an exported file."""
    return datasets.Features(
        {
            name: datasets.Image() if kind == "image" else datasets.Value(kind)
            for name, kind in COLUMNS
        }
    )


@dataclass(frozen=True)
class HFExportConfig:
    source: str  # a vecap output (fsspec URL): its committed shards are exported
    dest: str  # the dataset folder (fsspec URL)
    caption: str = "fused"
    split: str = "train"
    include_flagged: bool = False
    row_group_rows: int = 100  # datasets' own row group size for image datasets (viewer pages)
    workers: int = 4  # files exported at once (threads; the bytes do not depend on it)

    def __post_init__(self) -> None:
        if self.caption not in CAPTION_COLUMNS:
            raise ConfigError(
                f"caption must be one of {sorted(CAPTION_COLUMNS)}, got {self.caption!r}"
            )
        if not _SPLIT_RE.match(self.split):
            raise ConfigError(
                f"split {self.split!r}: letters, digits and underscores (datasets' split names)"
            )
        if self.row_group_rows < 1:
            raise ConfigError(f"row_group_rows must be >= 1, got {self.row_group_rows}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if not self.dest:
            raise ConfigError("give the destination folder: vecap export-hf OUT DEST")


@dataclass
class HFExportResult:
    dest: str
    split: str
    files: list[str]
    written: int = 0  # files written by this call
    skipped: int = 0  # files already complete
    rows: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    card: str = ""
    seconds: float = 0.0


def data_file_name(split: str, index: int, total: int) -> str:
    """``train-00000-of-00003.parquet``: the names ``datasets.push_to_hub`` gives."""
    return f"{split}-{index:05d}-of-{total:05d}.parquet"


# --------------------------------------------------------------------------- the rows


def _nonblank(arr: pa.Array) -> pa.Array:
    return pc.fill_null(pc.not_equal(pc.utf8_trim_whitespace(arr), ""), False)


def release_caption(batch: pa.RecordBatch, caption: str, include_flagged: bool) -> pa.Array:
    """The row's caption by the release export's rule (module docstring), null where it has none."""
    text = batch.column(CAPTION_COLUMNS[caption])
    _ok, _ok_caption, keep = release_masks(
        batch.column("status"), text, batch.column("ethics_flagged"), include_flagged
    )
    return pc.if_else(keep, text, pa.scalar(None, pa.string()))


def image_storage(batch: pa.RecordBatch) -> pa.StructArray:
    """``datasets``' Image storage: ``{bytes, path}``, null where the row has no image; the path
    (``<uid>.<ext>``) names the format, the bytes are the image."""
    jpg = batch.column("jpg").cast(pa.binary())
    fmt = batch.column("image_format").cast(pa.string())
    for name, ext in _IMAGE_EXTENSIONS.items():
        fmt = pc.if_else(pc.fill_null(pc.equal(fmt, name), False), ext, fmt)
    path = pc.binary_join_element_wise(batch.column("uid"), fmt, ".")
    return pa.StructArray.from_arrays([jpg, path], names=["bytes", "path"], mask=pc.is_null(jpg))


def export_batch(
    batch: pa.RecordBatch, config: HFExportConfig, schema: pa.Schema
) -> pa.RecordBatch:
    """One batch of vecap records as a batch of the export's ``schema``."""
    arrays = []
    for f in schema:
        if f.name == "image":
            arrays.append(image_storage(batch))
        elif f.name == "caption":
            arrays.append(release_caption(batch, config.caption, config.include_flagged))
        else:
            arrays.append(batch.column(f.name).cast(f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _source_batches(url: str, rows: int) -> Iterator[pa.RecordBatch]:
    """The shard's rows, ``rows`` at a time, only the columns the export needs (never ``extra``);
    a column an older output lacks (``caption_engine`` before schema 1.1) reads as nulls."""
    fs, path = fs_and_path(url)
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        present = [c for c in _SOURCE_COLUMNS if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(batch_size=rows, columns=present):
            yield pa.RecordBatch.from_arrays(
                [
                    batch.column(c)
                    if c in present
                    else pa.nulls(batch.num_rows, RECORD_SCHEMA.field(c).type)
                    for c in _SOURCE_COLUMNS
                ],
                names=list(_SOURCE_COLUMNS),
            )


def _count(counts: dict[str, collections.Counter], batch: pa.RecordBatch) -> None:
    for col in _COUNTED:
        for item in pc.value_counts(batch.column(col)).to_pylist():
            if item["values"] is not None:
                counts[col][item["values"]] += item["counts"]
    counts["rows"][""] += batch.num_rows
    counts["images"][""] += batch.num_rows - batch.column("image").null_count
    counts["captions"][""] += batch.num_rows - batch.column("caption").null_count


# --------------------------------------------------------------------------- one file


def _write_file(
    source_url: str, stats: ShardStats, config: HFExportConfig, schema: pa.Schema, out: Any
) -> dict[str, Any]:
    """Stream one shard into the open binary file ``out``; returns the file's counts."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    arrow_bytes = 0
    with pq.ParquetWriter(out, schema, compression="zstd") as writer:
        for batch in _source_batches(source_url, config.row_group_rows):
            exported = export_batch(batch, config, schema)
            writer.write_batch(exported, row_group_size=config.row_group_rows)
            _count(counts, exported)
            arrow_bytes += exported.nbytes
    rows = counts["rows"][""]
    if rows != stats.rows:  # the commit says how many rows the shard has: never publish fewer
        raise RuntimeError(
            f"{source_url}: {rows} rows read, its stats file commits {stats.rows}; not exported"
        )
    return {
        "rows": rows,
        "images": counts["images"][""],
        "captions": counts["captions"][""],
        "arrow_bytes": arrow_bytes,
        "counts": {col: dict(sorted(counts[col].items())) for col in _COUNTED},
    }


def _publish(fs: Any, final: str, write: Any) -> tuple[dict[str, Any], int, str]:
    """Run ``write(binary file)`` and publish the result at ``final`` whole; returns (what write
    returned, size, sha256). Nothing is left at ``final`` if ``write`` fails."""
    with staged_file(fs, final) as tmp:
        with open(tmp, "wb") as f:
            info = write(f)
            f.flush()
            os.fsync(f.fileno())
        size, digest = os.path.getsize(tmp), file_sha256(tmp)
        publish_staged(fs, tmp, final)
    return info, size, digest


def _create_marker(fs: Any, path: str, data: bytes) -> None:
    """Create-only where the store allows it; elsewhere (hf://, ...) a plain whole write: a
    marker records a finished file, so two exporters writing it write the same facts."""
    try:
        put_if_absent(fs, path, data)
    except CommitNotSupported:
        put_bytes(fs, path, data)


# --------------------------------------------------------------------------- the plan


def _plan(config: HFExportConfig, done: Mapping[int, ShardStats]) -> dict[str, Any]:
    total = len(done)
    return {
        "format": PLAN_FORMAT,
        "split": config.split,
        "caption": config.caption,
        "include_flagged": config.include_flagged,
        "files": [
            {
                "name": data_file_name(config.split, i, total),
                "shard_id": sid,
                "source_parquet": committed_parquet_name(done[sid]),
                "rows": done[sid].rows,
            }
            for i, sid in enumerate(sorted(done))
        ],
    }


def _read_json(fs: Any, path: str) -> dict[str, Any] | None:
    try:
        return json.loads(fs.cat_file(path).decode("utf-8"))
    except FileNotFoundError:
        return None


def _read_jsons(fs: Any, paths: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    """{path: its JSON, None where it is absent}: one batched ``fs.cat`` (concurrent GETs on
    object stores) instead of one round trip after another. Any other failure raises."""
    paths = list(paths)
    literal = [p for p in paths if not has_magic(p)]
    got = fs.cat(literal, on_error="return") if literal else {}
    for p in paths:
        if has_magic(p):  # fs.cat would glob it: read it on its own
            try:
                got[p] = fs.cat_file(p)
            except FileNotFoundError as e:
                got[p] = e
    out: dict[str, dict[str, Any] | None] = {}
    for p in paths:
        data = got.get(p, got.get(fs._strip_protocol(p)))
        if data is None:
            raise OutputError(f"{p}: not returned by the store's batched read")
        if isinstance(data, FileNotFoundError):
            out[p] = None
        elif isinstance(data, BaseException):
            raise OutputError(f"{p}: could not be read ({data})") from data
        else:
            try:
                out[p] = json.loads(data.decode("utf-8"))
            except ValueError as e:
                raise OutputError(f"{p}: not JSON ({e}); remove it to write it again") from None
    return out


def _settle_plan(fs: Any, root: str, config: HFExportConfig, plan: dict[str, Any]) -> None:
    """Record the plan once; a rerun must export the same shards the same way into DEST."""
    path = f"{root}/{META_DIR}/{config.split}.plan.json"
    body = json.dumps(plan, indent=2, sort_keys=True).encode()
    try:
        created = put_if_absent(fs, path, body)
    except CommitNotSupported:
        created = not fs.exists(path)
        if created:
            put_bytes(fs, path, body)
    if created:
        return
    recorded = _read_json(fs, path)
    if recorded != plan:
        why = _plan_difference(recorded or {}, plan)
        raise OutputError(
            f"{config.dest} already holds split {config.split!r} exported from other shards or "
            f"options ({why}); export to a new DEST, or remove DEST/data/{config.split}-* and "
            f"DEST/{META_DIR}/ to start over"
        )


def _plan_difference(recorded: dict[str, Any], plan: dict[str, Any]) -> str:
    for key in ("format", "caption", "include_flagged"):
        if recorded.get(key) != plan.get(key):
            return f"{key} {recorded.get(key)!r} then, {plan.get(key)!r} now"
    before, now = recorded.get("files", []), plan["files"]
    if len(before) != len(now):
        return f"{len(before)} committed shards then, {len(now)} now"
    return "a shard was committed by another attempt or with other rows since"


# --------------------------------------------------------------------------- export


def export_hf(config: HFExportConfig) -> HFExportResult:
    """Export ``config.source``'s committed shards as split ``config.split`` of the dataset
    folder ``config.dest``, then (re)write its card; see the module docstring."""
    t0 = time.time()
    datasets = import_datasets()
    features = hf_features(datasets)
    schema = features.arrow_schema  # carries the "huggingface" metadata datasets writes
    done = committed_shards(config.source)
    if not done:
        raise InputNotFoundError(
            f"no committed shards (part-*.stats.json) under {config.source.rstrip('/')}/shards"
        )
    fs, root = fs_and_path(config.dest)
    root = root.rstrip("/")
    plan = _plan(config, done)
    fs.makedirs(f"{root}/data", exist_ok=True)
    fs.makedirs(f"{root}/{META_DIR}", exist_ok=True)
    _settle_plan(fs, root, config, plan)

    result = HFExportResult(dest=config.dest, split=config.split, files=[])
    sizes = _sizes(fs, f"{root}/data")
    listing = _sizes(fs, f"{root}/{META_DIR}")
    marker_path = {e["name"]: f"{root}/{META_DIR}/{e['name']}.done.json" for e in plan["files"]}
    recorded = _read_jsons(fs, [p for p in marker_path.values() if p in listing])
    markers: dict[str, dict[str, Any]] = {}  # this split's markers, by file name
    todo = []
    for entry in plan["files"]:
        name = entry["name"]
        marker = recorded.get(marker_path[name])
        if marker is None:  # not listed, or gone since the listing: (re)write the file
            todo.append(entry)
            continue
        final = f"{root}/data/{name}"
        if sizes.get(final) != marker.get("bytes"):
            raise OutputError(
                f"{final}: {sizes.get(final, 'missing')} bytes, the export recorded "
                f"{marker.get('bytes')}; remove it and {marker_path[name]} to write it again"
            )
        markers[name] = marker
        result.skipped += 1

    def export_one(entry: dict[str, Any]) -> dict[str, Any]:
        name, stats = entry["name"], done[entry["shard_id"]]
        source_url = committed_parquet_path(config.source, stats)
        info, size, digest = _publish(
            fs,
            f"{root}/data/{name}",
            lambda out: _write_file(source_url, stats, config, schema, out),
        )
        marker = {"name": name, "bytes": size, "sha256": digest, **entry, **info}
        body = json.dumps(marker, indent=2, sort_keys=True).encode()
        _create_marker(fs, marker_path[name], body)
        return json.loads(body)  # what a later run reads back, so the card cannot differ

    for marker in run_bounded(export_one, todo, config.workers, "vecap-export-hf"):
        markers[marker["name"]] = marker
        result.written += 1

    status_counts: collections.Counter = collections.Counter()
    for entry in plan["files"]:
        marker = markers[entry["name"]]
        result.rows += marker["rows"]
        status_counts.update(marker["counts"]["status"])
        final = f"{root}/data/{entry['name']}"
        result.files.append(final if is_local(fs) else fs.unstrip_protocol(final))
    result.status_counts = dict(sorted(status_counts.items()))

    from pipeline.io.hf_card import write_card

    this_split = [markers[e["name"]] for e in plan["files"]]
    inputs = _card_inputs(config, fs, root, plan, this_split)
    result.card = write_card(fs, root, features, datasets, inputs)
    result.seconds = time.time() - t0
    return result


def _sizes(fs: Any, folder: str) -> dict[str, int]:
    """{path: size} of the files directly in ``folder``: one listing."""
    fs.invalidate_cache(folder)
    try:
        entries = fs.ls(folder, detail=True)
    except FileNotFoundError:
        return {}
    return {e["name"].rstrip("/"): int(e["size"]) for e in entries if e.get("type") == "file"}


def _card_inputs(
    config: HFExportConfig,
    fs: Any,
    root: str,
    plan: dict[str, Any],
    markers: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Per complete split in DEST (every file marked done): its plan, its markers and the
    manifest of the output it came from. This call's split comes from memory (``plan``,
    ``markers``: all complete by now, ``config.source``'s manifest); the other splits' records
    are read in two batched reads."""
    listing = _sizes(fs, f"{root}/{META_DIR}")
    other_plans = [
        p
        for p in sorted(listing)
        if p.endswith(".plan.json") and p.rsplit("/", 1)[-1] != f"{config.split}.plan.json"
    ]
    sources = [p.removesuffix(".plan.json") + ".source.json" for p in other_plans]
    records = _read_jsons(fs, other_plans + [p for p in sources if p in listing])
    complete = {}
    for path in other_plans:
        other = records[path] or {}
        names = [f"{root}/{META_DIR}/{f['name']}.done.json" for f in other.get("files", [])]
        if names and all(p in listing for p in names):  # one still being exported stays out
            complete[path] = (other, names)
    other_markers = _read_jsons(fs, [p for _, names in complete.values() for p in names])

    this = dict(plan, source=config.source)
    manifest = read_manifest(config.source)
    _record_source(fs, root, config.split, config.source, manifest)
    splits = [{"plan": this, "markers": markers, "manifest": manifest}]
    for path, (other, names) in complete.items():
        recorded = records.get(path.removesuffix(".plan.json") + ".source.json") or {}
        other["source"] = recorded.get("source")
        splits.append(
            {"plan": other, "markers": [other_markers[p] or {} for p in names],
             "manifest": recorded.get("manifest")}
        )  # fmt: skip
    return sorted(splits, key=lambda s: f"{s['plan'].get('split')}.plan.json")  # listing order


def _record_source(
    fs: Any, root: str, split: str, source: str, manifest: dict[str, Any] | None
) -> None:
    """Keep the source's manifest beside the plan, so a later export of another split into the
    same DEST can still describe this one in the card."""
    body = json.dumps({"source": source, "manifest": manifest}, indent=2, sort_keys=True)
    put_bytes(fs, f"{root}/{META_DIR}/{split}.source.json", body.encode())


__all__ = [
    "COLUMNS",
    "INSTALL_HINT",
    "HFExportConfig",
    "HFExportResult",
    "data_file_name",
    "export_hf",
    "hf_features",
    "import_datasets",
    "release_caption",
]
