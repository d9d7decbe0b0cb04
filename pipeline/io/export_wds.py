"""`vecap export-wds`: an output's committed shards as webdataset tar shards (open_clip, NeMo
Curator, img2dataset's format).

One tar per committed vecap shard, same id: ``DEST/part-00042.tar``, holding per exported row
``{uid}.<ext>`` (the stored image bytes), ``{uid}.txt`` (the caption) and ``{uid}.json`` (the
row's metadata), in uid order. The uid is digits only (``schemas.record.make_uid``), so
webdataset's key (the name up to the first dot) is the uid.

Rows: the release export's rule (``pipeline.io.export_json``): status ok, a non-blank caption
of the chosen kind (``fused`` -> ``fused_caption``, ``visual`` -> ``visual_caption``, ``alt`` ->
``alt_text``), not ``ethics_flagged`` unless asked; there is no fallback at export time (the
fusion stage already fell back: ``fused_caption`` holds the visual caption or the AltText where
the LLM failed, and ``fusion_source`` says which). Plus what a tar needs: image bytes (failures
and ``keep_images`` off have none). Every row left out is counted by reason.

Image member: named by the format of the bytes themselves (magic bytes: ``.jpg`` for JPEG,
``.webp`` for WebP, ``.png`` ...), never re-encoded. Re-encoding WebP to JPEG would be a second
lossy generation and CPU per image for nothing: open_clip reads ``jpg;png;jpeg;webp`` and
img2dataset writes ``.webp`` itself; a ``.jpg`` name on WebP bytes would be a lie that PIL's
sniffing happens to forgive and other decoders (DALI, torchvision's decode_jpeg) do not.

Commit, as the vecap writer commits: a tar is published whole (local disk: a temporary beside it,
fsynced, then renamed; object stores: one upload of a finished local file, which S3 and GCS make
visible only when complete), then ``DEST/part-00042.count.json`` (samples, rows skipped by
reason, the source parquet, the tar's size and sha256) is created only if absent: that is the
commit. Right before publishing, a tar whose count file a concurrent export of the same DEST
has meanwhile created is dropped, not uploaded over the committed one. A rerun skips shards
with a count file and rewrites a tar that has none (killed between the two). Tars are byte-for-byte reproducible (fixed member order and mtime), so an interrupted
export plus a rerun gives exactly the files of an uninterrupted one.

Memory: one parquet row group (256 rows by default) per worker, plus the tar being written to
disk; never a whole shard.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.download.image_processing import sniff_format
from pipeline.errors import ConfigError, InputNotFoundError, OutputError, UsageError

# the release export's own caption columns and rule, so the exports cannot drift apart
from pipeline.io.bounded_pool import run_bounded
from pipeline.io.export_json import CAPTION_COLUMNS, release_masks
from pipeline.io.shard_files import (
    CommitNotSupported,
    committed_parquet_name,
    committed_parquet_path,
    committed_shards,
    file_sha256,
    list_entries,
    publish_staged,
    put_bytes,
    put_if_absent,
    staged_file,
)
from schemas.record import RECORD_SCHEMA
from schemas.stats import ShardStats, shard_stem

INSTALL_HINT = "pip install 'vecap[wds]'"
SUMMARY_NAME = "export-wds.json"
COUNT_SUFFIX = ".count.json"
# why a row of a committed shard is not in its tar
SKIP_REASONS = ("not_ok", "no_image", "not_an_image", "no_caption", "flagged")
# Pillow's format name (sniffed from the bytes) -> the member's extension, webdataset's names
_EXTENSIONS = {
    "JPEG": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "GIF": "gif",
    "BMP": "bmp",
    "TIFF": "tiff",
}
# the {uid}.json member: these record fields, in this order
JSON_FIELDS = (
    "uid",
    "url",
    "alt_text",
    "visual_caption",
    "fused_caption",
    "width",
    "height",
    "original_width",
    "original_height",
    "sha256",
    "caption_model",
    "caption_prompt_id",
    "caption_engine",
    "fusion_model",
    "fusion_prompt_id",
    "fusion_engine",
    "fusion_source",
    "ethics_flagged",
    "duplicate_of",  # `vecap run --dedup`: a trainer may skip rows that name a canonical row
    "duplicate_kind",
    "fusion_of",
)
_READ_COLUMNS = tuple(dict.fromkeys(("status", "jpg", *JSON_FIELDS)))


@dataclass(frozen=True)
class WdsExportConfig:
    source: str  # a vecap output (fsspec URL): its committed shards are exported
    dest: str  # where the tars go (fsspec URL)
    caption: str = "fused"  # the .txt: fused | visual | alt
    include_flagged: bool = False
    workers: int = 4  # shards exported at once (threads: object-store uploads overlap)
    batch_rows: int = 256  # parquet rows in memory at once per worker

    def __post_init__(self) -> None:
        if self.caption not in CAPTION_COLUMNS:
            raise ConfigError(
                f"--caption must be one of {', '.join(CAPTION_COLUMNS)}, got {self.caption!r}"
            )
        if not self.source or not self.dest:
            raise ConfigError("export-wds needs an output OUT and a destination DEST")
        if self.source.rstrip("/") == self.dest.rstrip("/"):
            raise ConfigError("DEST must not be OUT itself: pick a folder such as OUT/wds")
        if not 1 <= self.workers <= 256:
            raise ConfigError(f"--workers must be in 1..256, got {self.workers}")
        if self.batch_rows < 1:
            raise ConfigError(f"batch_rows must be >= 1, got {self.batch_rows}")


@dataclass
class TarCount:
    """``DEST/part-00042.count.json``: the commit of one tar."""

    shard_id: int
    tar: str  # the tar's name in DEST
    samples: int
    skipped: dict[str, int]  # reason -> rows
    source_parquet: str  # the committed parquet of OUT the tar was made from
    source_rows: int
    tar_bytes: int
    tar_sha256: str
    caption: str
    include_flagged: bool

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> TarCount:
        try:
            raw = json.loads(data)
            return cls(**{k: raw[k] for k in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError) as e:
            raise OutputError(f"{where}: not a vecap export-wds count file ({e})") from e


@dataclass
class WdsExportResult:
    source: str
    dest: str
    caption: str
    include_flagged: bool
    shards: int = 0  # committed shards of OUT, all exported now
    samples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    tar_bytes: int = 0
    written_now: int = 0  # tars this run wrote
    samples_now: int = 0  # samples in them
    already_done: int = 0  # tars a previous run committed
    seconds: float = 0.0
    tars: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def tar_name(shard_id: int) -> str:
    return f"{shard_stem(shard_id)}.tar"


def count_name(shard_id: int) -> str:
    return f"{shard_stem(shard_id)}{COUNT_SUFFIX}"


def _tar_writer_class() -> type:
    try:
        from webdataset import TarWriter
    except ImportError as e:
        raise UsageError(
            f"the webdataset library cannot be imported ({e}): {INSTALL_HINT}"
        ) from None
    return TarWriter


# --------------------------------------------------------------------------- rows


def _iter_samples(
    parquet: str, config: WdsExportConfig, skipped: Counter
) -> Iterator[dict[str, bytes | str]]:
    """The webdataset samples of one committed parquet, in uid order, one batch at a time;
    counts the rows left out into ``skipped``."""
    caption_col = CAPTION_COLUMNS[config.caption]
    fs, root = fsspec.core.url_to_fs(parquet)
    with fs.open(root, "rb") as f:
        pf = pq.ParquetFile(f)
        present = set(pf.schema_arrow.names)
        columns = [c for c in _READ_COLUMNS if c in present]  # older outputs lack *_engine
        for batch in pf.iter_batches(batch_size=config.batch_rows, columns=columns):
            yield from _batch_samples(batch, caption_col, config, skipped)


def _column(batch: pa.RecordBatch, name: str) -> pa.Array:
    """The column ``name``, or (an older output lacks it) nulls of the record's type: untyped
    nulls have no kernels for fill_null, binary_length or the blank test."""
    i = batch.schema.get_field_index(name)
    if i >= 0:
        return batch.column(i)
    return pa.nulls(batch.num_rows, RECORD_SCHEMA.field(name).type)


def _batch_samples(
    batch: pa.RecordBatch, caption_col: str, config: WdsExportConfig, skipped: Counter
) -> Iterator[dict[str, bytes | str]]:
    n = batch.num_rows
    if n == 0:
        return
    # the release export's rule (status ok, non-blank caption, flag), then: image bytes present
    ok, has_caption, keep = release_masks(
        batch.column("status"),
        _column(batch, caption_col),
        _column(batch, "ethics_flagged"),
        config.include_flagged,
    )
    has_image = pc.fill_null(pc.greater(pc.binary_length(_column(batch, "jpg")), 0), False)
    ok, has_image = ok.to_pylist(), has_image.to_pylist()
    has_caption, keep = has_caption.to_pylist(), keep.to_pylist()
    rows = batch.to_pylist()
    for i, row in enumerate(rows):
        if not ok[i]:
            skipped["not_ok"] += 1
        elif not has_image[i]:
            skipped["no_image"] += 1
        elif not has_caption[i]:
            skipped["no_caption"] += 1
        elif not keep[i]:
            skipped["flagged"] += 1
        else:
            ext = _EXTENSIONS.get(sniff_format(row["jpg"]) or "")
            if ext is None:  # bytes no trainer's decoder would take: left out, counted
                skipped["not_an_image"] += 1
                continue
            yield _sample(row, caption_col, ext)


def _sample(row: Mapping[str, Any], caption_col: str, ext: str) -> dict[str, bytes | str]:
    uid = row["uid"]
    if not (isinstance(uid, str) and uid.isdigit()):
        # webdataset cuts keys at the first dot: anything but make_uid's digits could merge
        # or split samples, so refuse rather than write a tar that reads back wrong
        raise ValueError(f"uid {uid!r} is not digits only (schemas.record.make_uid)")
    meta = {k: row.get(k) for k in JSON_FIELDS}
    meta["image_format"] = ext
    return {
        "__key__": uid,
        ext: row["jpg"],
        "txt": row[caption_col].encode("utf-8"),
        "json": json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8"),
    }


# --------------------------------------------------------------------------- one tar


def _write_tar(
    path: str, parquet: str, stats: ShardStats, config: WdsExportConfig
) -> tuple[int, Counter]:
    """Write shard ``stats.shard_id``'s tar to the local file ``path``; (samples, skipped)."""
    writer_class = _tar_writer_class()
    skipped: Counter = Counter()
    samples = 0
    with open(path, "wb") as f:
        # fixed owner, mode and mtime (the shard's commit time): the same shard always gives
        # the same bytes, so a rerun after a crash reproduces an uninterrupted export exactly
        tar = writer_class(
            f, user="vecap", group="vecap", encoder=False, mtime=int(stats.finished_at)
        )
        try:
            for sample in _iter_samples(parquet, config, skipped):
                tar.write(sample)
                samples += 1
        finally:
            tar.close()
        f.flush()
        os.fsync(f.fileno())
    return samples, skipped


def _committed_count(fs: fsspec.AbstractFileSystem, path: str) -> TarCount | None:
    """The count file at ``path`` as DEST holds it now (not a cached listing), or None."""
    with contextlib.suppress(Exception):
        fs.invalidate_cache(path)  # s3fs/gcsfs cache listings: another export may have written
    try:
        return TarCount.from_json(fs.cat_file(path), path)
    except FileNotFoundError:
        return None


def _commit(fs: fsspec.AbstractFileSystem, path: str, count: TarCount) -> bool:
    try:
        return put_if_absent(fs, path, count.to_json())
    except CommitNotSupported as e:  # e.g. az://: no create-only write, so no exactly-once
        raise OutputError(f"DEST: {e}") from e


def export_shard(
    fs: fsspec.AbstractFileSystem, dest: str, stats: ShardStats, config: WdsExportConfig
) -> TarCount:
    """Write, publish and commit one shard's tar; returns its commit (this export's, or a
    concurrent export's that committed first)."""
    sid = stats.shard_id
    final = f"{dest}/{tar_name(sid)}"
    count_path = f"{dest}/{count_name(sid)}"
    parquet = committed_parquet_path(config.source, stats)
    with staged_file(fs, final) as tmp:
        samples, skipped = _write_tar(tmp, parquet, stats, config)
        count = TarCount(
            shard_id=sid,
            tar=tar_name(sid),
            samples=samples,
            skipped={r: skipped[r] for r in SKIP_REASONS if skipped[r]},
            source_parquet=committed_parquet_name(stats),
            source_rows=stats.rows,
            tar_bytes=os.path.getsize(tmp),
            tar_sha256=file_sha256(tmp),
            caption=config.caption,
            include_flagged=config.include_flagged,
        )
        if samples + sum(skipped.values()) != stats.rows:
            raise RuntimeError(
                f"{parquet}: {samples + sum(skipped.values())} rows read, its stats file says "
                f"{stats.rows}; refusing to commit {tar_name(sid)}"
            )
        # a concurrent export of this DEST that committed the shard meanwhile has the tar
        # the commit names: do not overwrite it (the window left is this check to the upload)
        winner = _committed_count(fs, count_path)
        if winner is None:
            publish_staged(fs, tmp, final)
    if winner is not None:
        if winner.tar_sha256 != count.tar_sha256:
            raise RuntimeError(
                f"{final}: another export with other options ({winner.caption!r}) committed "
                f"this tar while this one ({config.caption!r}) wrote it; its tar stands, this "
                "export stops: one export per DEST at a time"
            )
        return winner
    if _commit(fs, count_path, count):
        return count
    # another export of this DEST committed the shard between the check and the upload
    winner = TarCount.from_json(fs.cat_file(count_path), count_path)
    if winner.tar_sha256 != count.tar_sha256:
        raise RuntimeError(
            f"{final}: another export with other options ({winner.caption!r}) committed this "
            f"tar while this one ({config.caption!r}) overwrote it; delete {final} and "
            f"{count_path} and export again, one export per DEST at a time"
        )
    return winner


# --------------------------------------------------------------------------- the export


def _existing_counts(fs: fsspec.AbstractFileSystem, dest: str) -> dict[int, TarCount]:
    with contextlib.suppress(Exception):
        fs.invalidate_cache(dest)  # s3fs/gcsfs cache listings: another process wrote here
    try:
        # count files are part-NNNNN.count.json: the output listing's key prefixes fit DEST too
        entries = list_entries(fs, dest)
    except FileNotFoundError:
        return {}
    paths: dict[str, int] = {}
    for name in (e["name"] for e in entries if e.get("type") != "directory"):
        base = name.rstrip("/").rsplit("/", 1)[-1]
        stem = base[: -len(COUNT_SUFFIX)] if base.endswith(COUNT_SUFFIX) else ""
        if stem.startswith("part-") and stem[5:].isdigit():
            paths[name] = int(stem[5:])
    if not paths:
        return {}
    contents = fs.cat(list(paths), on_error="raise")
    return {paths[p]: TarCount.from_json(data, p) for p, data in contents.items()}


def _check_matches(
    counts: Mapping[int, TarCount], done: Mapping[int, ShardStats], config: WdsExportConfig
) -> None:
    """A rerun continues the same export: refuse a DEST made with other options or from
    other commits of OUT (mixing them would give tars that disagree with one another)."""
    for sid, c in sorted(counts.items()):
        if (c.caption, c.include_flagged) != (config.caption, config.include_flagged):
            raise ConfigError(
                f"{config.dest} holds an export with --caption {c.caption}"
                f"{' --include-flagged' if c.include_flagged else ''} ({count_name(sid)}); "
                "use the same options or another DEST"
            )
        stats = done.get(sid)
        if stats is None:
            raise OutputError(
                f"{config.dest}/{count_name(sid)} covers shard {sid}, which {config.source} "
                "has not committed: DEST belongs to another output; use another DEST"
            )
        if c.source_parquet != committed_parquet_name(stats):
            raise OutputError(
                f"{config.dest}/{count_name(sid)} was made from {c.source_parquet}, but "
                f"{config.source} commits {committed_parquet_name(stats)} (output rewritten?); "
                "use another DEST"
            )


def export_wds(config: WdsExportConfig) -> WdsExportResult:
    """Export every committed shard of ``config.source`` not yet committed in ``config.dest``;
    writes ``DEST/export-wds.json`` (totals over all tars) and returns the same totals."""
    t0 = time.time()
    _tar_writer_class()  # the install hint before any work
    done = committed_shards(config.source)
    if not done:
        raise InputNotFoundError(
            f"no committed shards (shards/part-*.stats.json) under {config.source}: "
            "nothing to export"
        )
    fs, dest = fsspec.core.url_to_fs(config.dest)
    dest = dest.rstrip("/")
    fs.makedirs(dest, exist_ok=True)
    counts = _existing_counts(fs, dest)
    _check_matches(counts, done, config)
    todo = [done[sid] for sid in sorted(done) if sid not in counts]
    result = WdsExportResult(
        source=config.source,
        dest=config.dest,
        caption=config.caption,
        include_flagged=config.include_flagged,
        already_done=len(counts),
    )
    for count in _export_all(fs, dest, todo, config):
        counts[count.shard_id] = count
        result.samples_now += count.samples
    result.written_now = len(todo)
    _totals(result, counts)
    result.seconds = round(time.time() - t0, 3)
    put_bytes(fs, f"{dest}/{SUMMARY_NAME}", result.to_json().encode())
    return result


def _export_all(
    fs: fsspec.AbstractFileSystem, dest: str, todo: list[ShardStats], config: WdsExportConfig
) -> list[TarCount]:
    """Export ``todo``, ``config.workers`` at a time, commits in shard order; the first failure
    (or a Ctrl-C) stops the export: tars already committed stand, shards not started are not
    begun (``pipeline.io.bounded_pool``)."""
    counts = run_bounded(
        lambda stats: export_shard(fs, dest, stats, config), todo, config.workers, "export-wds"
    )
    return sorted(counts, key=lambda count: count.shard_id)


def _totals(result: WdsExportResult, counts: Mapping[int, TarCount]) -> None:
    skipped: Counter = Counter()
    for c in counts.values():
        result.samples += c.samples
        result.rows += c.source_rows
        result.tar_bytes += c.tar_bytes
        skipped.update(c.skipped)
    result.shards = len(counts)
    result.skipped = {r: skipped[r] for r in SKIP_REASONS if skipped[r]}
    result.tars = [counts[sid].tar for sid in sorted(counts)]


__all__ = [
    "INSTALL_HINT",
    "JSON_FIELDS",
    "SKIP_REASONS",
    "SUMMARY_NAME",
    "TarCount",
    "WdsExportConfig",
    "WdsExportResult",
    "count_name",
    "export_shard",
    "export_wds",
    "tar_name",
]
