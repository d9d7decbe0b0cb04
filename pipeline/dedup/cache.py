"""The caption cache (``--caption-cache URL``): visual and fused captions by content key, shared
across jobs, on any fsspec location.

Layout: ``URL/captions/<segment>.parquet`` and ``URL/fusions/<segment>.parquet``, each segment
a table of (``key``, the Record fields the entry sets). A job adds one segment per shard it
computed, created only if absent under a name no other job or shard uses, published whole
(``put_if_absent``): two jobs adding at once each add their own files, so neither loses or
corrupts an entry, and a reader sees a segment complete or not at all. Where two entries share
a key (two jobs computed it at once) the one in the smallest segment name wins, the same for
every reader.

Keys come from :mod:`pipeline.dedup.keys` and name the model, prompt, decoding settings and
engine, and each entry also records model and prompt, checked again before it is used: an
entry made with anything else is never used.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.shard_files import basename, fs_and_path, list_entries, put_if_absent

CAPTIONS = "captions"
FUSIONS = "fusions"
# what an entry sets on a row, per kind
ENTRY_FIELDS = {
    CAPTIONS: ("visual_caption", "caption_model", "caption_prompt_id", "caption_engine"),
    FUSIONS: (
        "ethics_flagged",
        "ethics_reason",
        "fused_caption",
        "fusion_model",
        "fusion_prompt_id",
        "fusion_engine",
        "fusion_source",
        "fusion_reason",
    ),
}
_TYPES = {"ethics_flagged": pa.bool_()}


def _schema(kind: str) -> pa.Schema:
    return pa.schema(
        [pa.field("key", pa.string(), False)]
        + [pa.field(name, _TYPES.get(name, pa.string())) for name in ENTRY_FIELDS[kind]]
    )


def segment_name(*ident: Any) -> str:
    return hashlib.blake2b(json.dumps(ident, default=str).encode(), digest_size=12).hexdigest()


def write_segment(cache: str, kind: str, name: str, entries: Iterable[tuple[str, dict]]) -> bool:
    """Add one segment; False if a segment of that name exists already (a rerun of the same
    shard of the same job: its entries are there)."""
    rows: dict[str, dict] = {}
    for key, fields in entries:
        rows.setdefault(key, fields)
    if not rows:
        return False
    keys = sorted(rows)
    table = pa.table(
        {"key": keys, **{f: [rows[k].get(f) for k in keys] for f in ENTRY_FIELDS[kind]}},
        schema=_schema(kind),
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    fs, folder = fs_and_path(f"{cache.rstrip('/')}/{kind}")
    fs.makedirs(folder, exist_ok=True)
    return put_if_absent(fs, f"{folder}/{name}.parquet", sink.getvalue())


def list_segments(cache: str, kind: str) -> list[str]:
    """The segment URLs of one kind, sorted by name (the order ties are broken in)."""
    fs, folder = fs_and_path(f"{cache.rstrip('/')}/{kind}")
    fs.invalidate_cache(folder)  # another job (or this process) may have added segments since
    if not fs.exists(folder):
        return []
    names = [
        e["name"] for e in list_entries(fs, folder, prefixes=None)  # segment names are hashes
        if e["name"].endswith(".parquet") and not basename(e["name"]).startswith(".")
    ]  # fmt: skip
    if "://" not in cache:
        return sorted(names)
    return sorted({fs.unstrip_protocol(n) for n in names})


def read_segment(url: str, kind: str) -> Iterator[tuple[str, tuple[str, dict]]]:
    """(key, (segment url, fields)) of every entry of one segment."""
    fs, path = fs_and_path(url)
    with fs.open(path, "rb") as f:
        table = pq.read_table(f)
    names = [n for n in ENTRY_FIELDS[kind] if n in table.column_names]
    columns = {n: table.column(n).to_pylist() for n in names}
    for i, key in enumerate(table.column("key").to_pylist()):
        yield key, (url, {n: columns[n][i] for n in names})


def pick_entry(found: Iterable[tuple[str, dict]]) -> dict | None:
    """The entry that stands among those sharing a key: the smallest segment name's."""
    best = min(found, key=lambda e: e[0], default=None)
    return None if best is None else best[1]


def entry_matches(kind: str, fields: dict, model: str | None, prompt_id: str | None) -> bool:
    """Belt and braces beside the key: the entry was made by this model with this prompt."""
    if kind == CAPTIONS:
        return fields.get("caption_model") == model and fields.get("caption_prompt_id") == prompt_id
    if fields.get("fusion_model") is None:  # decided by rules, no LLM asked: the key decides
        return True
    return fields.get("fusion_model") == model and fields.get("fusion_prompt_id") == prompt_id


__all__ = [
    "CAPTIONS",
    "ENTRY_FIELDS",
    "FUSIONS",
    "entry_matches",
    "list_segments",
    "pick_entry",
    "read_segment",
    "segment_name",
    "write_segment",
]
