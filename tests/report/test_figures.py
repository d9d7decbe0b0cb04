"""The figures' numbers (plain data) and that each renders to a clean inline SVG."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pipeline.report import figures
from pipeline.report.aggregates import BoundedCounter, LengthHistogram
from schemas.stats import ShardStats


def test_length_histogram_numbers() -> None:
    h = LengthHistogram(cap=10)
    h.add(np.array([0, 1, 2, 2, 3]))
    h.add(np.array([50, 12]))  # beyond the cap: last bin, exact in the mean
    assert h.n == 7
    assert h.mean == pytest.approx(70 / 7)
    assert h.capped == 2
    assert list(h.counts[:4]) == [1, 1, 2, 1]
    assert h.quantile(0.0) == 0
    assert h.quantile(0.5) == 2
    assert h.quantile(1.0) == 10  # i.e. ">= cap"
    other = LengthHistogram(cap=10)
    other.add(np.array([4]))
    other.missing = 3
    h.merge(other)
    assert h.n == 8 and h.missing == 3
    with pytest.raises(ValueError):
        h.merge(LengthHistogram(cap=5))
    with pytest.raises(ValueError):
        h.add(np.array([-1]))
    assert LengthHistogram().quantile(0.5) == 0 and LengthHistogram().mean == 0.0


def test_bounded_counter_caps_distinct_keys() -> None:
    c = BoundedCounter(max_keys=2)
    for key, n in [("a", 5), ("b", 1), ("c", 7), ("a", 1), ("d", 2)]:
        c.add(key, n)
    assert dict(c.counts) == {"a": 6, "b": 1}
    assert c.other == 9 and c.total == 16
    assert c.most_common(1) == [("a", 6)]


def test_status_and_share_bars() -> None:
    bars = figures.status_bars({"timeout": 5, "ok": 10, "http_error": 5, "decode_error": 20})
    assert [b.label for b in bars] == ["ok", "decode_error", "http_error", "timeout"]
    assert [b.count for b in bars] == [10, 20, 5, 5]
    assert sum(b.share for b in bars) == pytest.approx(1.0)
    assert bars[0].share == pytest.approx(10 / 40)
    shares = figures.share_bars({"visual": 1, "llm": 8, "alt": 1})
    assert [(b.label, b.share) for b in shares] == [("llm", 0.8), ("alt", 0.1), ("visual", 0.1)]
    assert figures.status_bars({}) == []


def _stats(shard_id: int, rows: int, start: float, end: float, **stages: float) -> ShardStats:
    return ShardStats(shard_id, rows, started_at=start, finished_at=end, stage_seconds=stages)


def test_throughput_and_stage_totals() -> None:
    stats = [
        _stats(1, 100, 1000.0, 1010.0, caption=6.0, download=2.0),
        _stats(0, 300, 1005.0, 1020.0, caption=9.0, fuse=3.0),
        _stats(2, 50, 0.0, 0.0),  # no timings: left out of the time figure
    ]
    tp = figures.throughput(stats)
    assert tp.wall_seconds == 20.0
    assert tp.rows == 400
    assert tp.rows_per_s == pytest.approx(20.0)  # overlapping shards count once
    assert [(s.shard_id, s.start_s, s.end_s) for s in tp.shards] == [(1, 0.0, 10.0), (0, 5.0, 20.0)]
    assert [s.rows_per_s for s in tp.shards] == [pytest.approx(10.0), pytest.approx(20.0)]
    assert figures.throughput([]).rows_per_s == 0.0

    totals = figures.stage_totals(stats)
    assert [(t.stage, t.seconds) for t in totals] == [
        ("caption", 15.0),
        ("fuse", 3.0),
        ("download", 2.0),
    ]
    assert totals[0].share == pytest.approx(0.75)


def test_throughput_band_for_many_shards() -> None:
    # Shards finishing at 1..100 s; the ones after 50 s run twice as fast.
    stats = [
        _stats(i, 10 * (2 if i > 50 else 1), 1000.0 + i - 1, 1000.0 + i) for i in range(1, 101)
    ]
    tp = figures.throughput(stats)
    band = figures.throughput_band(tp, bins=4)
    # every shard in exactly one bin; a shard ending on an edge goes to the later bin
    assert band.shards == [24, 25, 25, 26]
    assert band.median == [10.0, 10.0, 20.0, 20.0]
    assert band.end_s == [12.5, 37.5, 62.5, 87.5]
    assert all(lo <= mid <= hi for lo, mid, hi in zip(band.p10, band.median, band.p90, strict=True))
    assert figures.throughput_band(figures.throughput([])).shards == []
    many = figures.throughput(
        [_stats(i, 10, 1000.0 + i, 1010.0 + i) for i in range(figures.MAX_SEGMENTS + 1)]
    )
    svg = figures.throughput_svg(many)
    few = figures.throughput_svg(figures.throughput(stats))
    assert len(svg) < 3 * len(few)  # the band does not grow with the shard count


def test_length_summary() -> None:
    h = LengthHistogram(cap=100)
    h.add(np.arange(1, 11))  # 1..10
    s = figures.length_summary("VeC", h)
    assert (s.kind, s.n, s.median, s.p90, s.capped) == ("VeC", 10, 5, 9, 0)
    assert s.mean == pytest.approx(5.5)


def test_svgs_are_inline_ready_with_unique_ids() -> None:
    h = LengthHistogram(cap=50)
    h.add(np.array([3, 5, 8, 8, 13]))
    svgs = [
        figures.status_svg(figures.status_bars({"ok": 3, "timeout": 1})),
        figures.lengths_svg({"AltText": h, "VC": h, "VeC": LengthHistogram(cap=50)}),
        figures.fusion_svg(figures.share_bars({"llm": 2})),
        figures.throughput_svg(figures.throughput([_stats(0, 10, 1.0e9, 1.0e9 + 5)])),
        # empty data renders a message, not an exception
        figures.status_svg([], id_prefix="e1"),
        figures.lengths_svg({}, id_prefix="e2"),
        figures.throughput_svg(figures.throughput([]), id_prefix="e3"),
    ]
    ids: list[str] = []
    for svg in svgs:
        assert svg.startswith("<svg ") and svg.rstrip().endswith("</svg>")
        assert "<?xml" not in svg and "<!DOCTYPE" not in svg and 'class="figure"' in svg
        assert "<script" not in svg and "<text" not in svg  # text drawn as paths
        own = re.findall(r'\bid="([^"]+)"', svg)
        refs = re.findall(r'href="#([^"]+)"', svg) + re.findall(r"url\(#([^)]+)\)", svg)
        assert refs and set(refs) <= set(own)  # every reference resolves inside its own figure
        ids += own
    # Several SVGs share one page: ids must be unique page-wide.
    assert len(ids) == len(set(ids))
