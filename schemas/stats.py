"""Per-shard stats file (``OUT/shards/part-00042.stats.json``): the shard's commit, created only if
absent, naming the parquet file it covers (see ``pipeline.io.shard_files``)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from schemas.record import SCHEMA_VERSION


@dataclass
class ShardStats:
    shard_id: int
    rows: int  # rows in == rows out, per shard
    status_counts: dict[str, int] = field(default_factory=dict)
    fusion_source_counts: dict[str, int] = field(default_factory=dict)
    ethics_flagged: int = 0
    # `vecap run --dedup`: duplicates found per kind, model calls saved, cache hits ({} otherwise)
    dedup_counts: dict[str, int] = field(default_factory=dict)
    # wall-clock seconds spent per stage on this shard's rows (download, caption, fuse, ...)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    started_at: float = 0.0  # unix time the shard's first stage began
    finished_at: float = 0.0  # unix time the shard's files were committed
    caption_models: list[str] = field(default_factory=list)
    fusion_models: list[str] = field(default_factory=list)
    # the commit: the parquet file this stats file covers (a name in the same folder), its
    # size in bytes and the write attempt that produced it; "" in outputs that predate attempt
    # names, whose parquet is part-NNNNN.parquet
    parquet: str = ""
    parquet_bytes: int = 0
    attempt: str = ""
    schema_version: str = SCHEMA_VERSION

    @property
    def seconds(self) -> float:
        return max(self.finished_at - self.started_at, 0.0)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["seconds"] = self.seconds
        data["rows_per_s"] = self.rows_per_s
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ShardStats:
        data: dict[str, Any] = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def shard_stem(shard_id: int) -> str:
    """``part-00042``: the common stem of a shard's parquet and stats files."""
    return f"part-{shard_id:05d}"
