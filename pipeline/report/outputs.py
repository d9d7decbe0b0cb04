"""Find the finished shards of a vecap output, and its manifest, on any fsspec filesystem.

A shard is finished when its stats file exists: the stats file is the commit and names the
parquet file it covers; every other parquet in the folder is an uncommitted write attempt
(in flight, failed, killed, or a lost race) and is never read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import fsspec
from fsspec import AbstractFileSystem

from pipeline.io.shard_files import committed_parquet_name, parse_parquet_name, parse_stats_name
from schemas.stats import ShardStats, shard_stem


@dataclass(frozen=True)
class FinishedShard:
    shard_id: int
    parquet_path: str  # path on ``OutputScan.fs`` (no protocol)
    stats: ShardStats


@dataclass
class OutputScan:
    """What lies in an output folder, read without touching a single parquet row."""

    root: str
    fs: AbstractFileSystem
    finished: list[FinishedShard] = field(default_factory=list)
    in_progress: list[int] = field(default_factory=list)  # shard ids with parquet but no stats
    problems: list[str] = field(default_factory=list)  # human-readable, shown on the page
    manifest: dict[str, Any] | None = None
    manifest_error: str | None = None


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def scan_output(output_dir: str) -> OutputScan:
    """List finished shards (sorted by id), shards in progress, and load ``manifest.json``.

    Never raises for the content of the folder: a malformed stats file or manifest becomes a
    problem line on the page. A missing folder raises ``FileNotFoundError`` (a typo, not data).
    """
    fs, root = fsspec.core.url_to_fs(output_dir)
    root = root.rstrip("/")
    if not fs.isdir(root):
        raise FileNotFoundError(f"output folder not found: {output_dir}")
    scan = OutputScan(root=root, fs=fs)
    _load_manifest(scan)

    shards_dir = f"{root}/shards"
    names = [_basename(p) for p in fs.ls(shards_dir, detail=False)] if fs.isdir(shards_dir) else []
    parquet_names: dict[int, set[str]] = {}
    for n in names:
        parsed = parse_parquet_name(n)
        if parsed is not None:
            parquet_names.setdefault(parsed[0], set()).add(n)
    stats_ids = {sid for n in names if (sid := parse_stats_name(n)) is not None}

    wanted = {}
    for shard_id in sorted(stats_ids):
        if shard_id not in parquet_names:
            scan.problems.append(
                f"{shard_stem(shard_id)}: stats file without its parquet file; shard skipped"
            )
            continue
        wanted[shard_id] = f"{shards_dir}/{shard_stem(shard_id)}.stats.json"
    # One batched read: object stores (gcsfs, s3fs) fetch these concurrently, which matters
    # with tens of thousands of shards.
    contents = fs.cat(list(wanted.values()), on_error="return") if wanted else {}
    for shard_id, stats_path in wanted.items():
        stem = shard_stem(shard_id)
        data = contents.get(stats_path)
        try:
            if data is None:
                raise OSError("not returned by the filesystem")
            if isinstance(data, BaseException):
                raise data
            stats = ShardStats.from_json(data.decode("utf-8"))
            _check_stats(stats, shard_id)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            scan.problems.append(f"{stem}: unreadable stats file ({exc}); shard skipped")
            continue
        parquet = committed_parquet_name(stats)
        if parquet not in parquet_names.get(shard_id, set()):
            scan.problems.append(
                f"{stem}: stats file without its parquet file ({parquet}); shard skipped"
            )
            continue
        scan.finished.append(FinishedShard(shard_id, f"{shards_dir}/{parquet}", stats))
    scan.in_progress = sorted(set(parquet_names) - stats_ids)
    return scan


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_stats(stats: ShardStats, shard_id: int) -> None:
    """Types the report relies on; a stats file is data from disk and may be anything."""
    if stats.shard_id != shard_id:
        raise ValueError(f"says shard_id {stats.shard_id!r}")
    if not isinstance(stats.parquet, str) or (
        stats.parquet and parse_parquet_name(stats.parquet) != (shard_id, stats.attempt or None)
    ):
        raise ValueError(f"names parquet {stats.parquet!r}, not one of this shard's")
    if not isinstance(stats.rows, int) or isinstance(stats.rows, bool) or stats.rows < 0:
        raise ValueError(f"rows is {stats.rows!r}")
    if not (_is_number(stats.started_at) and _is_number(stats.finished_at)):
        raise ValueError("started_at/finished_at are not numbers")
    for name in ("status_counts", "fusion_source_counts", "stage_seconds", "dedup_counts"):
        value = getattr(stats, name)
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and _is_number(v) for k, v in value.items()
        ):
            raise ValueError(f"{name} is not a mapping of names to numbers")


def _load_manifest(scan: OutputScan) -> None:
    path = f"{scan.root}/manifest.json"
    if not scan.fs.exists(path):
        scan.manifest_error = "manifest.json not found (the run may still be starting)"
        return
    try:
        with scan.fs.open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        scan.manifest_error = f"manifest.json is unreadable: {exc}"
        return
    if not isinstance(data, dict):
        scan.manifest_error = f"manifest.json holds a {type(data).__name__}, not a JSON object"
        return
    scan.manifest = data
