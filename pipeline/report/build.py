"""Compose the report: scan the output, sample, draw, render, write one HTML file."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import fsspec

from pipeline.report import figures
from pipeline.report.html import (
    FailureExample,
    FailureGroup,
    GalleryItem,
    ReportContent,
    ShardRow,
    render_html,
)
from pipeline.report.outputs import OutputScan, scan_output
from pipeline.report.rowscan import CAPTION_COLUMNS, RowScan, ScanLimits, scan_rows
from pipeline.report.sampling import RowRef, fetch_rows
from pipeline.report.thumbnails import make_thumbnail
from schemas.status import Status

GALLERY_COLUMNS: tuple[str, ...] = (
    "uid",
    "url",
    "status",
    "error",
    "jpg",
    "width",
    "height",
    "alt_text",
    "visual_caption",
    "fused_caption",
    "fusion_source",
    "fusion_reason",
    "ethics_flagged",
    "ethics_reason",
    "caption_model",
    "fusion_model",
)
FAILURE_COLUMNS: tuple[str, ...] = ("uid", "url", "status", "error", "alt_text")
REPORT_NAME = "report.html"


@dataclass(frozen=True)
class ReportConfig:
    output_dir: str  # the vecap output folder (fsspec URL or path)
    report_path: str | None = None  # default: OUTPUT/report.html
    sample_size: int = 48
    seed: int = 0
    failure_examples: int = 5  # example rows per failure status
    error_messages: int = 10  # most frequent error messages listed per status
    thumbnail_px: int = 192
    length_cap: int = 200  # caption lengths at or beyond this many words share one bin
    batch_size: int = 8192  # rows per arrow batch in the counting pass
    workers: int = 4  # shards read at once (arrow decodes outside the GIL)
    title: str = "vecap report"

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise ValueError("output_dir is required")
        checks = {
            "sample_size": self.sample_size >= 0,
            "failure_examples": self.failure_examples >= 0,
            "error_messages": self.error_messages >= 0,
            "thumbnail_px": 16 <= self.thumbnail_px <= 1024,
            "length_cap": self.length_cap >= 1,
            "batch_size": self.batch_size >= 1,
            "workers": self.workers >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"invalid {name}: {getattr(self, name)!r}")

    @property
    def resolved_report_path(self) -> str:
        return self.report_path or f"{self.output_dir.rstrip('/')}/{REPORT_NAME}"


@dataclass
class ReportResult:
    path: str
    finished_shards: int
    rows: int
    sampled: int
    seconds: float
    problems: list[str] = field(default_factory=list)


def collect_content(config: ReportConfig) -> ReportContent:
    """Everything the page shows, computed from the output folder."""
    scan = scan_output(config.output_dir)
    content = ReportContent(
        title=config.title,
        output_dir=config.output_dir,
        generated_at=time.time(),
        finished_shards=len(scan.finished),
        in_progress=scan.in_progress,
        problems=list(scan.problems),
        manifest=scan.manifest,
        manifest_error=scan.manifest_error,
        sample_requested=config.sample_size,
        seed=config.seed,
    )
    if not scan.finished:
        return content

    limits = ScanLimits(
        sample_size=config.sample_size,
        failure_examples=config.failure_examples,
        max_error_messages=max(200, config.error_messages),
        length_cap=config.length_cap,
        batch_size=config.batch_size,
        seed=config.seed,
        workers=config.workers,
    )
    rows = scan_rows(scan.fs, scan.finished, limits)
    content.problems += rows.problems
    content.rows = rows.rows
    content.ethics_flagged = rows.ethics_flagged
    content.sample_eligible = rows.status_counts.get(Status.OK.value, 0)
    content.status = figures.status_bars(rows.status_counts)
    content.fusion = figures.share_bars(rows.fusion_source_counts)
    content.lengths = [figures.length_summary(k, h) for k, h in rows.lengths.items()]
    stats = [s.stats for s in scan.finished]
    content.throughput = figures.throughput(stats)
    content.stages = figures.stage_totals(stats)
    for s in stats:
        for key, n in (s.dedup_counts or {}).items():
            content.dedup[key] = content.dedup.get(key, 0) + int(n)
    content.figures = {
        "status": figures.status_svg(content.status),
        "lengths": figures.lengths_svg(rows.lengths),
        "fusion": figures.fusion_svg(content.fusion),
        "throughput": figures.throughput_svg(content.throughput),
    }
    content.shards, mismatches = _shard_rows(scan, rows)
    content.problems += mismatches
    _fill_rows(content, scan, rows, config)
    return content


def _shard_rows(scan: OutputScan, rows: RowScan) -> tuple[list[ShardRow], list[str]]:
    """One table row per finished shard, checking the stats file against the parquet rows."""
    table, problems = [], []
    for index, shard in enumerate(scan.finished):
        st = shard.stats
        counted = rows.per_shard.get(index)
        note = ""
        if counted is None:
            note = "unreadable"
        elif counted.rows != st.rows:
            note = f"stats file says {st.rows:,} rows, parquet has {counted.rows:,}"
        elif st.status_counts and _nonzero(st.status_counts) != _nonzero(counted.status_counts):
            note = "status counts differ between stats file and parquet"
        if note and counted is not None:
            problems.append(f"part-{shard.shard_id:05d}: {note}")
        ok = counted.status_counts.get(Status.OK.value, 0) if counted else 0
        table.append(
            ShardRow(st.shard_id, st.rows, ok, st.seconds, st.rows_per_s, st.finished_at, note)
        )
    return table, problems


def _nonzero(counts) -> dict[str, int]:
    return {k: int(v) for k, v in counts.items() if v}


def _fill_rows(
    content: ReportContent, scan: OutputScan, rows: RowScan, config: ReportConfig
) -> None:
    """Second pass: fetch only the sampled rows (with images) and the failure examples."""
    paths = [s.parquet_path for s in scan.finished]
    gallery, problems = fetch_rows(scan.fs, paths, rows.sample, GALLERY_COLUMNS)
    content.problems += problems
    for ref in rows.sample:
        row = gallery.get(ref)
        if row is None:
            continue  # its shard became unreadable; already reported
        content.gallery.append(_gallery_item(row, config.thumbnail_px))
    if len(content.gallery) < len(rows.sample):
        content.problems.append(
            f"{len(rows.sample) - len(content.gallery)} sampled rows could not be fetched"
        )

    example_refs: list[RowRef] = [r for refs in rows.failure_examples.values() for r in refs]
    examples, problems = fetch_rows(scan.fs, paths, example_refs, FAILURE_COLUMNS, batch_size=512)
    content.problems += problems
    failed_statuses = [b for b in content.status if b.label != Status.OK.value]
    for bar in failed_statuses:
        messages = rows.error_messages.get(bar.label)
        top = messages.most_common(config.error_messages) if messages else []
        listed = sum(n for _, n in top)
        content.failures.append(
            FailureGroup(
                status=bar.label,
                count=bar.count,
                share=bar.share,
                messages=top,
                other_messages=(bar.count - listed) if top else 0,
                examples=[
                    FailureExample(r["uid"], r.get("url"), r.get("error"), r.get("alt_text"))
                    for ref in rows.failure_examples.get(bar.label, [])
                    if (r := examples.get(ref)) is not None
                ],
            )
        )


def _gallery_item(row: dict, thumbnail_px: int) -> GalleryItem:
    return GalleryItem(
        uid=str(row.get("uid")),
        url=row.get("url"),
        status=row.get("status") or "",
        alt_text=row.get("alt_text"),
        visual_caption=row.get("visual_caption"),
        fused_caption=row.get("fused_caption"),
        fusion_source=row.get("fusion_source"),
        fusion_reason=row.get("fusion_reason"),
        ethics_flagged=row.get("ethics_flagged"),
        ethics_reason=row.get("ethics_reason"),
        width=row.get("width"),
        height=row.get("height"),
        caption_model=row.get("caption_model"),
        fusion_model=row.get("fusion_model"),
        thumbnail=make_thumbnail(row.get("jpg"), thumbnail_px),
    )


def build_report(config: ReportConfig) -> ReportResult:
    """Write the report for ``config.output_dir`` and say where it went."""
    started = time.perf_counter()
    content = collect_content(config)
    page = render_html(content)
    path = config.resolved_report_path
    fs, fs_path = fsspec.core.url_to_fs(path)
    parent = fs_path.rsplit("/", 1)[0] if "/" in fs_path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    # Write beside, then move: a reader never sees half a page (and a rerun replaces it whole).
    tmp = f"{fs_path}.tmp-{uuid.uuid4().hex[:8]}"  # two reports at once do not collide
    with fs.open(tmp, "wb") as f:
        f.write(page.encode("utf-8"))
    fs.mv(tmp, fs_path)
    return ReportResult(
        path=path,
        finished_shards=content.finished_shards,
        rows=content.rows,
        sampled=len(content.gallery),
        seconds=time.perf_counter() - started,
        problems=content.problems,
    )


__all__ = ["CAPTION_COLUMNS", "ReportConfig", "ReportResult", "build_report", "collect_content"]
