"""Row patches: what an index job decided for some rows of some shards, applied when a later
phase reads those shards.

An index job writes one parquet file per shard that has patches (``uid``, ``fields``: a JSON
object of Record fields to set) into a fresh attempt folder, then the launcher commits it with
``OUT/dedup/<name>.commit.json``, created only if absent, naming the attempt and its shards. A
phase reads patches only through a commit, so a killed index job (no commit) is simply run
again into a new attempt folder and its half-written files are never read.
"""

from __future__ import annotations

import io
import json
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.shard_files import (
    fs_and_path,
    list_entries,
    parse_parquet_name,
    put_bytes,
    put_if_absent,
)
from schemas.record import Record
from schemas.stats import shard_stem

PATCH_SCHEMA = pa.schema([pa.field("uid", pa.string(), False), pa.field("fields", pa.string())])
_RECORD_FIELDS = frozenset(Record.__dataclass_fields__)
# never patched: identity, and image bytes (an index job never moves them)
_FORBIDDEN = frozenset({"uid", "shard_id", "row_index", "jpg"})


def dedup_dir(output: str) -> str:
    return f"{output.rstrip('/')}/dedup"


def commit_path(output: str, name: str) -> str:
    return f"{dedup_dir(output)}/{name}.commit.json"


@dataclass(frozen=True)
class PatchCommit:
    """A committed index: where its files are and which shards have one."""

    name: str
    folder: str  # OUT/dedup/<name>/<attempt>
    shards: frozenset[int]
    fingerprint: str
    counts: dict[str, int]

    def path(self, shard_id: int) -> str:
        return f"{self.folder}/{shard_stem(shard_id)}.parquet"

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "name": self.name,
                "folder": self.folder,
                "shards": sorted(self.shards),
                "fingerprint": self.fingerprint,
                "counts": self.counts,
            },
            sort_keys=True,
        ).encode()


def read_commit(output: str, name: str) -> PatchCommit | None:
    fs, path = fs_and_path(commit_path(output, name))
    fs.invalidate_cache(path.rsplit("/", 1)[0])  # listings cached by s3fs/gcsfs may predate it
    if not fs.exists(path):
        return None
    data = json.loads(fs.cat_file(path))
    return PatchCommit(
        data["name"], data["folder"], frozenset(data["shards"]), data["fingerprint"], data["counts"]
    )


def new_attempt_folder(output: str, name: str) -> str:
    return f"{dedup_dir(output)}/{name}/{uuid.uuid4().hex[:12]}"


def write_shard_patches(folder: str, shard_id: int, patches: Iterable[tuple[str, dict]]) -> int:
    """One shard's patches as one file (a rerun of the same bundle writes the same bytes)."""
    merged: dict[str, dict[str, Any]] = {}
    for uid, fields in patches:
        bad = set(fields) - _RECORD_FIELDS | (set(fields) & _FORBIDDEN)
        if bad:
            raise ValueError(f"patch for {uid} sets fields that cannot be patched: {sorted(bad)}")
        merged.setdefault(uid, {}).update(fields)
    uids = sorted(merged)
    table = pa.table(
        {"uid": uids, "fields": [json.dumps(merged[u], sort_keys=True) for u in uids]},
        schema=PATCH_SCHEMA,
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    fs, path = fs_and_path(f"{folder}/{shard_stem(shard_id)}.parquet")
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    put_bytes(fs, path, sink.getvalue())
    return len(uids)


def commit_patches(
    output: str, name: str, folder: str, fingerprint: str, counts: dict[str, int]
) -> PatchCommit:
    """Commit the attempt ``folder``; if another launcher committed first, theirs stands."""
    fs, root = fs_and_path(folder)
    fs.invalidate_cache(root)
    shards: set[int] = set()
    if fs.exists(root):
        for entry in list_entries(fs, root):
            parsed = parse_parquet_name(entry["name"])
            if parsed is not None:  # part-NNNNN.parquet, the legacy shard name
                shards.add(parsed[0])
    commit = PatchCommit(name, folder, frozenset(shards), fingerprint, dict(counts))
    cfs, cpath = fs_and_path(commit_path(output, name))
    cfs.makedirs(cpath.rsplit("/", 1)[0], exist_ok=True)
    if not put_if_absent(cfs, cpath, commit.to_json()):
        existing = read_commit(output, name)
        assert existing is not None
        return existing
    return commit


def read_shard_patches(commit: PatchCommit, shard_id: int) -> dict[str, dict[str, Any]]:
    if shard_id not in commit.shards:
        return {}
    fs, path = fs_and_path(commit.path(shard_id))
    with fs.open(path, "rb") as f:
        table = pq.read_table(f)
    return {
        uid: json.loads(fields)
        for uid, fields in zip(
            table.column("uid").to_pylist(), table.column("fields").to_pylist(), strict=False
        )
    }


class PatchApplier:
    """Applies a commit's patches to records as they stream by; a few shards' patches cached,
    since a bundle's rows come shard by shard."""

    def __init__(self, commits: Iterable[PatchCommit], cache_shards: int = 4) -> None:
        self.commits = [c for c in commits if c is not None]
        self._cache: OrderedDict[int, dict[str, dict[str, Any]]] = OrderedDict()
        self._cache_shards = cache_shards

    def _patches(self, shard_id: int) -> dict[str, dict[str, Any]]:
        if shard_id in self._cache:
            self._cache.move_to_end(shard_id)
            return self._cache[shard_id]
        merged: dict[str, dict[str, Any]] = {}
        for commit in self.commits:  # later commits win
            for uid, fields in read_shard_patches(commit, shard_id).items():
                merged.setdefault(uid, {}).update(fields)
        self._cache[shard_id] = merged
        while len(self._cache) > self._cache_shards:
            self._cache.popitem(last=False)
        return merged

    def __call__(self, record: Record) -> Record:
        fields = self._patches(record.shard_id).get(record.uid)
        return record.replace(**fields) if fields else record


__all__ = [
    "PatchApplier",
    "PatchCommit",
    "commit_patches",
    "commit_path",
    "dedup_dir",
    "new_attempt_folder",
    "read_commit",
    "read_shard_patches",
    "write_shard_patches",
]
