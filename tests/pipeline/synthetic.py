"""Synthetic finished vecap outputs (parquet shards + stats) without images, for export tests and
the pipeline benchmark: fast to build with pyarrow, shaped exactly like the writer's output."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io.shard_files import attempt_parquet_name, new_attempt_id
from pipeline.io.writer import shard_stats, shards_dir, stats_path
from schemas import RECORD_SCHEMA, Record, make_uid
from schemas.stats import ShardStats


def synthetic_url(i: int) -> str:
    return f"http://127.0.0.1:9/img/{i:09d}.jpg"


def write_synthetic_output(
    out: str, rows: int, shard_rows: int = 10_000, *, dup_every: int = 0, fail_every: int = 0
) -> tuple[int, int]:
    """Write ``rows`` rows; every ``dup_every``-th row repeats an earlier row's URL, every
    ``fail_every``-th row is an http_error. Returns (exportable rows, unique exportable URLs)."""
    import os

    os.makedirs(shards_dir(out), exist_ok=True)
    exportable: set[str] = set()
    exportable_rows = 0
    for shard_id, start in enumerate(range(0, rows, shard_rows)):
        n = min(shard_rows, rows - start)
        idx = range(start, start + n)
        urls = [synthetic_url(i // 2 if dup_every and i % dup_every == 0 else i) for i in idx]
        failed = [bool(fail_every) and i % fail_every == 1 for i in idx]
        cols = {
            "uid": [make_uid(shard_id, j) for j in range(n)],
            "shard_id": [shard_id] * n,
            "row_index": list(range(n)),
            "url": urls,
            "alt_text": [f"alt text {i}" for i in idx],
            "status": ["http_error" if f else "ok" for f in failed],
            "visual_caption": [
                None if f else f"a photo of thing {i}" for i, f in zip(idx, failed, strict=False)
            ],
            "fused_caption": [
                None if f else f'a "quoted" caption \\ {i} caf\u00e9'
                for i, f in zip(idx, failed, strict=False)
            ],
        }
        for u, f in zip(urls, failed, strict=False):
            if not f:
                exportable.add(u)
                exportable_rows += 1
        table = pa.Table.from_pydict(
            {f.name: cols.get(f.name, [None] * n) for f in RECORD_SCHEMA}, schema=RECORD_SCHEMA
        )
        attempt = new_attempt_id()
        name = attempt_parquet_name(shard_id, attempt)
        pq.write_table(table, f"{shards_dir(out)}/{name}", compression="zstd")
        stats: ShardStats = shard_stats(
            shard_id, [Record(uid="x", shard_id=shard_id, row_index=0)] * 0
        )
        stats.rows = n
        stats.parquet, stats.attempt = name, attempt
        stats.parquet_bytes = os.path.getsize(f"{shards_dir(out)}/{name}")
        n_failed = sum(failed)
        stats.status_counts = {
            k: v for k, v in (("http_error", n_failed), ("ok", n - n_failed)) if v
        }
        with open(stats_path(out, shard_id), "w") as f:
            f.write(stats.to_json())
    return exportable_rows, len(exportable)
