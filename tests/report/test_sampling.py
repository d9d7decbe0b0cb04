"""Sampling and the counting pass, checked against brute force over small synthetic outputs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.report.outputs import scan_output
from pipeline.report.rowscan import ScanLimits, scan_rows
from pipeline.report.sampling import KeyedReservoir, RowRef, fetch_rows
from pipeline.report.synthetic import write_synthetic_output


def _offer_all(k: int, seed: int, n: int, batch: int) -> list[RowRef]:
    res = KeyedReservoir(k, np.random.default_rng(seed))
    for start in range(0, n, batch):
        res.offer(start // 1000, np.arange(start, min(start + batch, n)))
    return res.refs()


def test_reservoir_keeps_k_distinct_rows_deterministically() -> None:
    refs = _offer_all(10, seed=5, n=500, batch=37)
    assert len(refs) == 10 == len(set(refs))
    assert refs == sorted(refs)
    assert all(0 <= r.row < 500 for r in refs)
    assert refs == _offer_all(10, seed=5, n=500, batch=37)
    # The sample depends on the seed and the rows, not on how the rows were batched.
    assert refs == _offer_all(10, seed=5, n=500, batch=500)
    assert refs != _offer_all(10, seed=6, n=500, batch=37)


def test_reservoir_smaller_stream_and_zero_k() -> None:
    assert [r.row for r in _offer_all(50, seed=0, n=20, batch=7)] == list(range(20))
    res = KeyedReservoir(0, np.random.default_rng(0))
    res.offer(0, np.arange(100))
    assert res.refs() == [] and res.seen == 100
    with pytest.raises(ValueError):
        KeyedReservoir(-1, np.random.default_rng(0))


def test_reservoir_is_uniform() -> None:
    # 4000 draws of 5 out of 50: each row's inclusion rate should be 0.1.
    hits = Counter()
    rng = np.random.default_rng(123)
    for _ in range(4000):
        res = KeyedReservoir(5, rng)
        for start in range(0, 50, 8):
            res.offer(0, np.arange(start, min(start + 8, 50)))
        hits.update(r.row for r in res.refs())
    rates = np.array([hits[i] / 4000 for i in range(50)])
    # Binomial sd = sqrt(0.1*0.9/4000) ~ 0.0047; 5 sd on each of 50 rows.
    assert np.all(np.abs(rates - 0.1) < 0.024), rates
    # No drift between the first and last rows offered (the classic reservoir bug).
    assert abs(rates[:10].mean() - rates[-10:].mean()) < 0.015


def test_reservoir_merge_equals_one_reservoir() -> None:
    keys = np.random.default_rng(1).random(300)
    whole = KeyedReservoir(12)
    whole.offer_keyed(0, np.arange(300), keys)
    merged = KeyedReservoir(12)
    for part in range(3):
        local = KeyedReservoir(12)
        rows = np.arange(part * 100, part * 100 + 100)
        local.offer_keyed(0, rows, keys[rows])
        merged.merge(local)
    assert merged.refs() == whole.refs() and merged.seen == 300
    # The 12 smallest keys win.
    assert [r.row for r in whole.refs()] == sorted(np.argsort(keys)[:12].tolist())
    with pytest.raises(ValueError):
        KeyedReservoir(3).offer(0, np.arange(2))  # no generator to draw keys from
    with pytest.raises(ValueError):
        whole.offer_keyed(0, np.arange(3), np.zeros(2))


def test_fetch_rows_reads_only_wanted_rows_across_row_groups(tmp_path: Path) -> None:
    table = pa.table({"uid": [f"u{i}" for i in range(100)], "x": list(range(100))})
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=7)
    import fsspec

    fs = fsspec.filesystem("file")
    refs = [RowRef(0, r) for r in (0, 6, 7, 50, 99)]
    rows, problems = fetch_rows(fs, [str(path)], refs, ["uid", "x", "not_a_column"], batch_size=3)
    assert problems == []
    assert {ref: row["x"] for ref, row in rows.items()} == {ref: ref.row for ref in refs}
    assert all(set(row) == {"uid", "x"} for row in rows.values())


def _brute_force(root: Path) -> dict:
    """Every finished shard read whole, counted in plain Python."""
    tables = []
    for stats in sorted((root / "shards").glob("*.stats.json")):
        tables.append(pq.read_table(str(stats).replace(".stats.json", ".parquet")))
    rows = pa.concat_tables(tables).to_pylist()
    ok = [r for r in rows if r["status"] == "ok"]
    return {
        "rows": rows,
        "status": Counter(r["status"] for r in rows),
        "fusion": Counter(r["fusion_source"] or "(none)" for r in ok),
        "errors": Counter((r["status"], r["error"]) for r in rows if r["status"] != "ok"),
        "lengths": {
            kind: [len(r[col].split()) for r in ok if r[col] is not None]
            for kind, col in (
                ("AltText", "alt_text"),
                ("VC", "visual_caption"),
                ("VeC", "fused_caption"),
            )
        },
        "flagged": sum(bool(r["ethics_flagged"]) for r in rows),
    }


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "out"
    write_synthetic_output(root, shards=4, rows_per_shard=150, seed=11, row_group_size=40)
    return root


def test_scan_matches_brute_force(synthetic: Path) -> None:
    out = scan_output(str(synthetic))
    assert [s.shard_id for s in out.finished] == [0, 1, 2, 3]
    assert out.in_progress == [4]  # the torn parquet without stats is never opened
    scan = scan_rows(out.fs, out.finished, ScanLimits(sample_size=25, batch_size=64, seed=2))
    truth = _brute_force(synthetic)

    assert scan.problems == []
    assert scan.rows == len(truth["rows"]) == 600
    assert scan.status_counts == truth["status"]
    assert scan.fusion_source_counts == truth["fusion"]
    assert scan.ethics_flagged == truth["flagged"]
    assert {
        (status, msg): n for status, c in scan.error_messages.items() for msg, n in c.counts.items()
    } == dict(truth["errors"])
    for kind, lengths in truth["lengths"].items():
        hist = scan.lengths[kind]
        assert hist.n == len(lengths)
        assert hist.mean == pytest.approx(np.mean(lengths))
        assert hist.quantile(0.5) == int(np.quantile(lengths, 0.5, method="inverted_cdf"))
    # Per-shard counts agree with the stats files the synthetic writer wrote.
    for index, shard in enumerate(out.finished):
        assert scan.per_shard[index].rows == shard.stats.rows
        assert dict(scan.per_shard[index].status_counts) == shard.stats.status_counts

    # The gallery sample: ok rows only, the size asked, reproducible.
    rows = truth["rows"]
    offsets = np.cumsum([0] + [s.stats.rows for s in out.finished])
    sampled = [rows[offsets[r.shard_index] + r.row] for r in scan.sample]
    assert len(sampled) == 25 and all(r["status"] == "ok" for r in sampled)
    again = scan_rows(
        out.fs, out.finished, ScanLimits(sample_size=25, batch_size=500, seed=2, workers=1)
    )
    # Independent of the batch size and of how many shards were read at once.
    assert again.sample == scan.sample
    assert again.failure_examples == scan.failure_examples
    assert again.status_counts == scan.status_counts
    other = scan_rows(out.fs, out.finished, ScanLimits(sample_size=25, batch_size=64, seed=3))
    assert other.sample != scan.sample

    # Failure examples: at most the bound, each of its own status; counts stay complete.
    for status, refs in scan.failure_examples.items():
        assert 0 < len(refs) <= 5
        assert all(rows[offsets[r.shard_index] + r.row]["status"] == status for r in refs)
    assert set(scan.failure_examples) == set(truth["status"]) - {"ok"}


def test_corrupt_finished_shard_is_reported_not_fatal(tmp_path: Path) -> None:
    root = tmp_path / "out"
    write_synthetic_output(root, shards=3, rows_per_shard=30, seed=1)
    bad = root / "shards" / "part-00001.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all PAR1")
    out = scan_output(str(root))
    scan = scan_rows(out.fs, out.finished, ScanLimits(sample_size=100))
    assert len(scan.problems) == 1 and "part-00001.parquet" in scan.problems[0]
    assert scan.rows == 60
    assert 1 not in scan.per_shard
    assert all(r.shard_index != 1 for r in scan.sample)


def test_scan_output_states(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan_output(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    out = scan_output(str(empty))
    assert out.finished == [] and out.in_progress == [] and out.manifest is None
    assert "not found" in (out.manifest_error or "")

    root = tmp_path / "out"
    write_synthetic_output(root, shards=2, rows_per_shard=5)
    (root / "shards" / "part-00007.stats.json").write_text("{not json")
    (root / "shards" / "part-00007.parquet").write_bytes(b"")
    (root / "shards" / "part-00009.stats.json").write_text("{}")  # stats without parquet
    (root / "shards" / "part-00008.parquet").write_bytes(b"")
    (root / "shards" / "part-00008.stats.json").write_text(
        '{"shard_id": 8, "rows": "<b>many</b>", "started_at": 1, "finished_at": 2}'
    )
    (root / "shards" / ".part-00003.parquet.tmp").write_bytes(b"x")  # a writer's temp file
    (root / "manifest.json").write_text("[1, 2]")
    out = scan_output(str(root))
    assert [s.shard_id for s in out.finished] == [0, 1]
    assert out.in_progress == [2]
    assert any("part-00007" in p and "unreadable stats" in p for p in out.problems)
    assert any("part-00009" in p and "without its parquet" in p for p in out.problems)
    assert any("part-00008" in p and "rows is '<b>many</b>'" in p for p in out.problems)
    assert out.manifest is None and "not a JSON object" in out.manifest_error


def test_word_counts_match_python_split() -> None:
    from pipeline.report.rowscan import word_counts

    values = ["  a b  c ", "", "   ", "héllo\u00a0wörld\tx\ny", "one", None, "中文 字"]
    expected = [len(v.split()) for v in values if v is not None]
    assert word_counts(pa.array(values)).tolist() == expected
    assert (
        word_counts(pa.chunked_array([pa.array(values[:3]), pa.array(values[3:])])).tolist()
        == expected
    )


def test_report_on_an_fsspec_memory_filesystem(tmp_path: Path) -> None:
    """Outputs on object stores go through fsspec: read and write with no local path at all."""
    import fsspec

    from pipeline.report import ReportConfig, build_report

    local = write_synthetic_output(tmp_path / "out", shards=2, rows_per_shard=12, seed=5)
    mem = fsspec.filesystem("memory")
    for path in sorted(local.root.rglob("*")):
        if path.is_file():
            mem.pipe(f"/bucket/out/{path.relative_to(local.root)}", path.read_bytes())
    mem.pipe("/bucket/out/shards/part-00005.stats.json", b"[1, 2]")  # valid JSON, not stats
    mem.pipe("/bucket/out/shards/part-00005.parquet", b"")
    try:
        result = build_report(ReportConfig("memory://bucket/out", sample_size=4))
        assert result.path == "memory://bucket/out/report.html"
        page = mem.cat("/bucket/out/report.html").decode()
        assert result.rows == local.rows and page.count('<article class="item">') == 4
        assert any("part-00005" in p and "unreadable stats" in p for p in result.problems)
        assert mem.glob("/bucket/out/report.html.tmp*") == []
    finally:
        mem.rm("/bucket", recursive=True)


def test_error_messages_group_without_their_urls_and_byte_counts() -> None:
    from pipeline.report.rowscan import mask_message_details

    messages = pa.array(
        [
            "HTTP 404 Not Found for https://a.example/x.jpg?q=1",
            "HTTP 404 Not Found for http://b.example/y.png",
            "too large: 123456789 bytes > 10485760",
            "HTTP 503 after 3 attempts",
        ]
    )
    assert mask_message_details(messages).to_pylist() == [
        "HTTP 404 Not Found for <url>",
        "HTTP 404 Not Found for <url>",
        "too large: <n> bytes > <n>",
        "HTTP 503 after 3 attempts",
    ]


def test_a_shard_with_a_wrongly_typed_column_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    root = tmp_path / "out"
    write_synthetic_output(root, shards=2, rows_per_shard=10, seed=1)
    pq.write_table(pa.table({"status": [1, 2, 3]}), root / "shards" / "part-00001.parquet")
    out = scan_output(str(root))
    scan = scan_rows(out.fs, out.finished, ScanLimits())
    assert scan.rows == 10 and len(scan.problems) == 1 and "part-00001" in scan.problems[0]
