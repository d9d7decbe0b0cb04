"""The report's figures: their numbers (plain data, unit-tested) and their SVG rendering.

Rendering uses matplotlib's object API on the Agg-free SVG backend (no pyplot, so no global
figure state) and draws text as paths: the SVG carries no text node that data could inject into.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.report.aggregates import LengthHistogram
from schemas.stats import ShardStats
from schemas.status import Status

OK_COLOR = "#2e7d32"
FAIL_COLOR = "#c62828"
KIND_COLORS = {"AltText": "#6d6d6d", "VC": "#1565c0", "VeC": "#ef6c00"}
SOURCE_COLORS = {"llm": "#2e7d32", "visual": "#1565c0", "alt": "#6d6d6d"}


@dataclass(frozen=True)
class Bar:
    label: str
    count: int
    share: float  # of the total of all bars


def status_bars(counts: Mapping[str, int]) -> list[Bar]:
    """Rows per status: ``ok`` first, then failures by count (ties by name)."""
    total = sum(counts.values())
    ordered = sorted(counts.items(), key=lambda kv: (kv[0] != Status.OK.value, -kv[1], kv[0]))
    return [Bar(k, v, v / total if total else 0.0) for k, v in ordered]


def share_bars(counts: Mapping[str, int]) -> list[Bar]:
    """Shares by count (ties by name), e.g. where the fused captions came from."""
    total = sum(counts.values())
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [Bar(k, v, v / total if total else 0.0) for k, v in ordered]


@dataclass(frozen=True)
class LengthSummary:
    kind: str
    n: int
    missing: int
    mean: float
    median: int
    p90: int
    capped: int  # rows at or beyond the histogram cap
    cap: int


def length_summary(kind: str, hist: LengthHistogram) -> LengthSummary:
    return LengthSummary(
        kind=kind,
        n=hist.n,
        missing=hist.missing,
        mean=hist.mean,
        median=hist.quantile(0.5),
        p90=hist.quantile(0.9),
        capped=hist.capped,
        cap=hist.cap,
    )


@dataclass(frozen=True)
class ShardTiming:
    shard_id: int
    start_s: float  # seconds since the earliest shard start
    end_s: float
    rows: int
    rows_per_s: float


@dataclass(frozen=True)
class Throughput:
    shards: list[ShardTiming]
    wall_seconds: float  # first shard start to last shard finish
    rows: int

    @property
    def rows_per_s(self) -> float:
        """Whole-run throughput: overlapping shards count once, unlike a mean of shard rates."""
        return self.rows / self.wall_seconds if self.wall_seconds > 0 else 0.0


def throughput(stats: Iterable[ShardStats]) -> Throughput:
    """Shard timings relative to the run's start; shards without timestamps are left out."""
    timed = [s for s in stats if s.started_at > 0 and s.finished_at >= s.started_at]
    if not timed:
        return Throughput([], 0.0, 0)
    t0 = min(s.started_at for s in timed)
    t1 = max(s.finished_at for s in timed)
    shards = [
        ShardTiming(s.shard_id, s.started_at - t0, s.finished_at - t0, s.rows, s.rows_per_s)
        for s in sorted(timed, key=lambda s: (s.finished_at, s.shard_id))
    ]
    return Throughput(shards, t1 - t0, sum(s.rows for s in timed))


@dataclass(frozen=True)
class StageTotal:
    stage: str
    seconds: float
    share: float  # of all stage time


MAX_SEGMENTS = 500  # beyond this many shards the time figure draws a band, not segments


@dataclass(frozen=True)
class ThroughputBand:
    """Shard rows/s grouped by when the shards finished: the figure for many shards."""

    end_s: list[float]  # bin centres, seconds since the first shard started
    p10: list[float]
    median: list[float]
    p90: list[float]
    shards: list[int]  # shards finishing in each bin


def throughput_band(tp: Throughput, bins: int = 60) -> ThroughputBand:
    """Percentiles of shard rows/s per finish-time bin; empty bins are left out."""
    if not tp.shards:
        return ThroughputBand([], [], [], [], [])
    ends = np.array([s.end_s for s in tp.shards])
    rates = np.array([s.rows_per_s for s in tp.shards])
    edges = np.linspace(0.0, max(tp.wall_seconds, 1e-9), bins + 1)
    which = np.clip(np.searchsorted(edges, ends, side="right") - 1, 0, bins - 1)
    out = ThroughputBand([], [], [], [], [])
    for b in range(bins):
        r = rates[which == b]
        if r.size:
            out.end_s.append(float((edges[b] + edges[b + 1]) / 2))
            lo, mid, hi = np.percentile(r, [10, 50, 90])
            out.p10.append(float(lo))
            out.median.append(float(mid))
            out.p90.append(float(hi))
            out.shards.append(int(r.size))
    return out


def stage_totals(stats: Iterable[ShardStats]) -> list[StageTotal]:
    """Seconds per stage summed over shards, largest first."""
    totals: dict[str, float] = {}
    for s in stats:
        for stage, seconds in s.stage_seconds.items():
            totals[stage] = totals.get(stage, 0.0) + float(seconds)
    grand = sum(totals.values())
    ordered = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    return [StageTotal(k, v, v / grand if grand else 0.0) for k, v in ordered]


# ---------------------------------------------------------------- rendering


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # matplotlib is imported only when rendering

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def _to_svg(fig, prefix: str) -> str:
    """The figure as an ``<svg>`` element to inline in a page holding other figures."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": prefix, "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    # Inline SVG: drop the XML prolog and doctype, which are only valid at the top of a file.
    text = re.sub(r"^<\?xml[^>]*>\s*", "", text)
    text = re.sub(r"<!DOCTYPE[^>]*>\s*", "", text)
    # Ids are page-wide once inlined: prefix every id and every reference to one, so figures
    # never share (or steal) each other's clip paths, markers and glyphs.
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}-\1"', text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", text)
    # Scale with the page instead of a fixed pixel size.
    return re.sub(
        r'<svg ([^>]*?)width="[^"]*" height="[^"]*"', r'<svg \1class="figure"', text, count=1
    )


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_axis_off()


def _hbar(ax, bars: Sequence[Bar], colors: Sequence[str], value_label) -> None:
    labels = [b.label for b in bars]
    y = np.arange(len(bars))
    ax.barh(y, [b.count for b in bars], color=colors)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    for yi, b in zip(y, bars, strict=True):
        ax.annotate(
            value_label(b),
            (b.count, yi),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.margins(x=0.25)
    ax.spines[["top", "right"]].set_visible(False)


def status_svg(bars: Sequence[Bar], id_prefix: str = "fig-status") -> str:
    fig, ax = _figure(6.0, max(1.6, 0.32 * len(bars) + 0.9))
    if not bars:
        _empty(ax, "no rows")
    else:
        colors = [OK_COLOR if b.label == Status.OK.value else FAIL_COLOR for b in bars]
        _hbar(ax, bars, colors, lambda b: f"{b.count:,} ({b.share:.1%})")
        ax.set_xlabel("rows")
    ax.set_title("Rows per status", loc="left", fontsize=11)
    return _to_svg(fig, id_prefix)


def fusion_svg(bars: Sequence[Bar], id_prefix: str = "fig-fusion") -> str:
    fig, ax = _figure(6.0, max(1.6, 0.32 * len(bars) + 0.9))
    if not bars:
        _empty(ax, "no ok rows")
    else:
        colors = [SOURCE_COLORS.get(b.label, "#9e9e9e") for b in bars]
        _hbar(ax, bars, colors, lambda b: f"{b.share:.1%} ({b.count:,})")
        ax.set_xlabel("ok rows")
    ax.set_title("Where the fused caption (VeC) came from", loc="left", fontsize=11)
    return _to_svg(fig, id_prefix)


def lengths_svg(histograms: Mapping[str, LengthHistogram], id_prefix: str = "fig-lengths") -> str:
    fig, ax = _figure(6.0, 3.0)
    drawn = [(k, h) for k, h in histograms.items() if h.n > 0]
    if not drawn:
        _empty(ax, "no captions yet")
    else:
        # Show up to the longest 99th percentile, so one very long caption does not squash the rest.
        right = max(h.quantile(0.99) for _, h in drawn) + 2
        right = min(max(right, 10), drawn[0][1].cap + 1)
        for kind, h in drawn:
            share = h.counts / h.n
            ax.stairs(
                share[:right],
                np.arange(right + 1),
                label=f"{kind} (median {h.quantile(0.5)})",
                color=KIND_COLORS.get(kind),
                linewidth=1.6,
            )
        ax.set_xlim(0, right)
        ax.set_xlabel("words per caption (ok rows)")
        ax.set_ylabel("share of rows")
        ax.yaxis.set_major_formatter(lambda v, _pos: f"{v:.0%}")
        ax.legend(frameon=False, fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    ax.set_title("Caption length in words", loc="left", fontsize=11)
    return _to_svg(fig, id_prefix)


def throughput_svg(tp: Throughput, id_prefix: str = "fig-throughput") -> str:
    """One segment per shard (start to finish, at its rows/s); past ``MAX_SEGMENTS`` shards,
    a band over time instead, so the SVG stays small whatever the shard count."""
    from matplotlib.collections import LineCollection

    fig, ax = _figure(6.0, 3.0)
    if not tp.shards:
        _empty(ax, "no shard timings")
    else:
        minutes = tp.wall_seconds >= 180
        scale = 60.0 if minutes else 1.0
        unit = "min" if minutes else "s"
        if len(tp.shards) <= MAX_SEGMENTS:
            segments = [
                [(s.start_s / scale, s.rows_per_s), (s.end_s / scale, s.rows_per_s)]
                for s in tp.shards
            ]
            ax.add_collection(LineCollection(segments, colors="#1565c0", linewidths=1.5))
            ax.scatter(
                [s.end_s / scale for s in tp.shards],
                [s.rows_per_s for s in tp.shards],
                s=10,
                color="#1565c0",
                zorder=3,
                label=f"{len(tp.shards):,} shards (start to finish)",
            )
        else:
            band = throughput_band(tp)
            x = np.asarray(band.end_s) / scale
            ax.fill_between(
                x,
                band.p10,
                band.p90,
                color="#90caf9",
                step="mid",
                label="shards finishing then, 10-90%",
            )
            ax.plot(
                x,
                band.median,
                color="#1565c0",
                drawstyle="steps-mid",
                linewidth=1.4,
                label=f"median of {len(tp.shards):,} shards",
            )
        ax.axhline(
            tp.rows_per_s,
            color="#ef6c00",
            linestyle="--",
            linewidth=1,
            label=f"whole run {tp.rows_per_s:,.1f} rows/s",
        )
        ax.set_xlim(0, tp.wall_seconds / scale * 1.02 or 1)
        ax.set_xlabel(f"time since first shard started ({unit})")
        ax.set_ylabel("rows/s")
        top = max([tp.rows_per_s, *(s.rows_per_s for s in tp.shards)])
        ax.set_ylim(0, top * 1.3 if top > 0 else 1)  # headroom for the legend
        ax.legend(frameon=False, fontsize=8, loc="upper left", ncols=2)
        ax.spines[["top", "right"]].set_visible(False)
    ax.set_title("Rows/s per shard over time", loc="left", fontsize=11)
    return _to_svg(fig, id_prefix)
