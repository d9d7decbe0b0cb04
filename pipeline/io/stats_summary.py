"""`vecap stats OUT`: totals per status, rows/s per stage, caption lengths, fusion_source shares.

Reads only committed shards (those with a stats file), each from the parquet its stats file
names; counts the uncommitted attempt files beside them. Counts come from the stats files; caption
lengths come from the parquet caption columns, read in batches into fixed-size histograms, so
memory does not grow with the row count.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.io.shard_files import (
    committed_parquet_path,
    list_shards,
    read_stats_files,
    uncommitted_from_listing,
)

CAPTION_KINDS: dict[str, str] = {
    "alt": "alt_text",
    "visual": "visual_caption",
    "fused": "fused_caption",
}


@dataclass
class LengthSummary:
    """Word counts of the non-empty captions of one kind."""

    count: int = 0
    mean: float = 0.0
    p50: int = 0
    p90: int = 0
    p99: int = 0
    max: int = 0

    @classmethod
    def from_histogram(cls, hist: Mapping[int, int]) -> LengthSummary:
        n = sum(hist.values())
        if n == 0:
            return cls()

        def quantile(q: float) -> int:
            target = q * n
            seen = 0
            for words in sorted(hist):
                seen += hist[words]
                if seen >= target:
                    return words
            return max(hist)

        mean = sum(w * c for w, c in hist.items()) / n
        return cls(n, round(mean, 2), quantile(0.5), quantile(0.9), quantile(0.99), max(hist))


@dataclass
class OutputStats:
    shards: int = 0
    shards_planned: int | None = None  # from manifest.json, when the output has one
    rows: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    fusion_source_counts: dict[str, int] = field(default_factory=dict)
    ethics_flagged: int = 0
    dedup_counts: dict[str, int] = field(default_factory=dict)  # `vecap run --dedup`
    stage_seconds: dict[str, float] = field(default_factory=dict)  # summed over shards
    stage_rows_per_s: dict[str, float] = field(default_factory=dict)  # rows / stage seconds
    wall_seconds: float = 0.0  # first shard start to last shard commit
    rows_per_s: float = 0.0  # rows / wall seconds
    caption_lengths: dict[str, LengthSummary] = field(default_factory=dict)
    caption_models: list[str] = field(default_factory=list)
    fusion_models: list[str] = field(default_factory=list)
    # parquet files no stats file names (failed, killed or losing attempts) and temporaries:
    # never read; `vecap gc OUT` removes them
    uncommitted_files: int = 0
    uncommitted_bytes: int = 0

    @property
    def ok_rows(self) -> int:
        return self.status_counts.get("ok", 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def output_stats(output: str, *, caption_lengths: bool = True) -> OutputStats:
    from pipeline.manifest import read_manifest

    fs, listing = list_shards(output)
    done = dict(sorted(read_stats_files(fs, listing.stats).items()))
    orphans = uncommitted_from_listing(listing, done)
    stats = OutputStats(
        shards=len(done), uncommitted_files=len(orphans.all), uncommitted_bytes=orphans.bytes
    )
    manifest = read_manifest(output) or {}
    planned = (manifest.get("plan") or {}).get("shards_planned")
    stats.shards_planned = int(planned) if planned is not None else None
    if not done:
        return stats
    status: collections.Counter[str] = collections.Counter()
    sources: collections.Counter[str] = collections.Counter()
    seconds: collections.Counter[str] = collections.Counter()
    dedup: collections.Counter[str] = collections.Counter()
    caption_models, fusion_models = set(), set()
    for s in done.values():
        stats.rows += s.rows
        status.update(s.status_counts)
        sources.update(s.fusion_source_counts)
        seconds.update(s.stage_seconds)
        dedup.update(s.dedup_counts)
        stats.ethics_flagged += s.ethics_flagged
        caption_models.update(s.caption_models)
        fusion_models.update(s.fusion_models)
    stats.status_counts = dict(status.most_common())
    stats.fusion_source_counts = dict(sources.most_common())
    stats.dedup_counts = dict(dedup)
    stats.stage_seconds = {k: round(v, 3) for k, v in seconds.items()}
    stats.stage_rows_per_s = {k: round(stats.rows / v, 1) for k, v in seconds.items() if v > 0}
    starts = [s.started_at for s in done.values() if s.started_at > 0]
    ends = [s.finished_at for s in done.values() if s.finished_at > 0]
    if starts and ends:
        stats.wall_seconds = round(max(ends) - min(starts), 3)
        stats.rows_per_s = (
            round(stats.rows / stats.wall_seconds, 1) if stats.wall_seconds > 0 else 0
        )
    stats.caption_models = sorted(caption_models)
    stats.fusion_models = sorted(fusion_models)
    if caption_lengths:
        stats.caption_lengths = _caption_lengths(
            [committed_parquet_path(output, s) for s in done.values()]
        )
    return stats


def _caption_lengths(parquets: list[str]) -> dict[str, LengthSummary]:
    hists: dict[str, collections.Counter[int]] = {k: collections.Counter() for k in CAPTION_KINDS}
    for parquet in parquets:
        fs, root = fsspec.core.url_to_fs(parquet)
        with fs.open(root, "rb") as f:
            for batch in pq.ParquetFile(f).iter_batches(
                batch_size=65_536, columns=list(CAPTION_KINDS.values())
            ):
                for kind, column in CAPTION_KINDS.items():
                    text = pc.utf8_trim_whitespace(batch.column(column))
                    text = text.filter(pc.fill_null(pc.not_equal(text, ""), False))
                    if len(text) == 0:
                        continue
                    words = pc.list_value_length(pc.utf8_split_whitespace(text))
                    hists[kind].update(words.to_pylist())
    return {k: LengthSummary.from_histogram(h) for k, h in hists.items()}


def _share(n: int, total: int) -> str:
    return f"{100.0 * n / total:5.1f}%" if total else "    -"


def format_stats(stats: OutputStats) -> str:
    """The human table `vecap stats` prints."""
    planned = f" of {stats.shards_planned} planned" if stats.shards_planned is not None else ""
    lines = [
        f"shards finished: {stats.shards}{planned}   rows: {stats.rows}   ok: {stats.ok_rows} "
        f"({_share(stats.ok_rows, stats.rows).strip()})",
    ]
    if stats.uncommitted_files:
        lines.append(
            f"uncommitted attempt files: {stats.uncommitted_files} "
            f"({stats.uncommitted_bytes:,} bytes; never read; `vecap gc OUT` removes them)"
        )
    if stats.wall_seconds:
        lines.append(f"wall: {stats.wall_seconds:.1f} s   rows/s: {stats.rows_per_s:.1f}")
    lines.append("")
    lines.append(f"{'status':<22}{'rows':>10}{'share':>8}")
    for name, n in stats.status_counts.items():
        lines.append(f"{name:<22}{n:>10}{_share(n, stats.rows):>8}")
    if stats.fusion_source_counts:
        total = sum(stats.fusion_source_counts.values())
        lines.append("")
        lines.append(f"{'fusion_source':<22}{'rows':>10}{'share':>8}")
        for name, n in stats.fusion_source_counts.items():
            lines.append(f"{name:<22}{n:>10}{_share(n, total):>8}")
    if stats.dedup_counts:
        lines.append("")
        lines.append(f"{'dedup':<22}{'rows':>10}{'share':>8}")
        for name, n in stats.dedup_counts.items():
            lines.append(f"{name:<22}{n:>10}{_share(n, stats.rows):>8}")
    if stats.stage_seconds:
        lines.append("")
        lines.append(f"{'stage':<22}{'seconds':>10}{'rows/s':>10}")
        for name, secs in stats.stage_seconds.items():
            rps = stats.stage_rows_per_s.get(name, 0.0)
            lines.append(f"{name:<22}{secs:>10.2f}{rps:>10.1f}")
        lines.append("(stage seconds: the critical path of each shard, summed over shards)")
    if stats.caption_lengths:
        lines.append("")
        lines.append(
            f"{'caption words':<16}{'count':>9}{'mean':>8}{'p50':>6}{'p90':>6}{'p99':>6}{'max':>6}"
        )
        for kind, s in stats.caption_lengths.items():
            lines.append(
                f"{kind:<16}{s.count:>9}{s.mean:>8.1f}{s.p50:>6}{s.p90:>6}{s.p99:>6}{s.max:>6}"
            )
    if stats.caption_models or stats.fusion_models:
        lines.append("")
        lines.append(f"caption models: {', '.join(stats.caption_models) or '-'}")
        lines.append(f"fusion models:  {', '.join(stats.fusion_models) or '-'}")
    return "\n".join(lines)


def stats_json(stats: OutputStats) -> str:
    return json.dumps(stats.to_dict(), indent=2, sort_keys=True)


__all__ = ["LengthSummary", "OutputStats", "format_stats", "output_stats", "stats_json"]
