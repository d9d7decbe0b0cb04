"""Release JSON export and streaming validation."""

from __future__ import annotations

import json
import tracemalloc

import pyarrow as pa
import pytest

from pipeline.io.export_json import (
    ExportConfig,
    JsonShapeError,
    export_json,
    find_split_files,
    iter_json_object,
    split_file_name,
    split_of,
    validate_json,
)
from pipeline.io.writer import WriterConfig, write_shard
from schemas import Record, Status, make_uid
from tests.pipeline.synthetic import synthetic_url, write_synthetic_output


def _rec(shard: int, i: int, url: str, **kw) -> Record:
    return Record(uid=make_uid(shard, i), shard_id=shard, row_index=i, url=url, **kw)


def test_export_policy_small(tmp_path):
    out = str(tmp_path / "out")
    cfg = WriterConfig(output=out)
    rows0 = [
        _rec(0, 0, "http://127.0.0.1/a.jpg", fused_caption="first a", alt_text="alt a"),
        _rec(0, 1, "http://127.0.0.1/b.jpg", fused_caption="  ", alt_text="alt b"),  # blank
        _rec(0, 2, "http://127.0.0.1/c.jpg", fused_caption="c", ethics_flagged=True),
        _rec(0, 3, "http://127.0.0.1/d.jpg").fail(Status.TIMEOUT, "slow"),
        _rec(0, 4, "http://127.0.0.1/e.jpg", fused_caption='quote " and \\ and \n newline é'),
        _rec(0, 5, "http://127.0.0.1/x.jpg", status="ethics_excluded", fused_caption="x"),
    ]
    rows1 = [
        _rec(1, 0, "http://127.0.0.1/a.jpg", fused_caption="second a"),  # duplicate URL
        _rec(1, 1, "http://127.0.0.1/f.jpg", fused_caption="f", alt_text="alt f"),
    ]
    write_shard(cfg, 0, rows0, 6)
    write_shard(cfg, 1, rows1, 2)
    # an unfinished shard (parquet, no stats) is never exported
    write_shard(cfg, 2, [_rec(2, 0, "http://127.0.0.1/z.jpg", fused_caption="z")], 1)
    (tmp_path / "out" / "shards" / "part-00002.stats.json").unlink()

    res = export_json(ExportConfig(source=out, splits=3, name="wit_300m"))
    assert [f.rsplit("/", 1)[1] for f in res.files] == [
        split_file_name("wit_300m", i, 3) for i in range(3)
    ]
    assert res.files[0].endswith("wit_300m-00-of-03.json")
    merged = {}
    for i, path in enumerate(res.files):
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)  # the stdlib agrees it is ONE JSON object
        assert all(split_of(u, 3) == i for u in obj)
        assert not merged.keys() & obj.keys()
        merged.update(obj)
    assert merged == {
        "http://127.0.0.1/a.jpg": "first a",  # first in uid order wins
        "http://127.0.0.1/e.jpg": 'quote " and \\ and \n newline é',
        "http://127.0.0.1/f.jpg": "f",
    }
    assert (res.duplicates, res.skipped_no_caption, res.skipped_flagged, res.skipped_not_ok) == (
        1,
        1,
        1,
        2,
    )
    assert validate_json(res.files).ok

    flagged = export_json(
        ExportConfig(
            source=out, splits=3, include_flagged=True, caption="alt", dest=str(tmp_path / "alt")
        )
    )
    merged = {}
    for path in flagged.files:
        merged.update(json.load(open(path, encoding="utf-8")))  # noqa: SIM115
    assert merged == {
        "http://127.0.0.1/a.jpg": "alt a",
        "http://127.0.0.1/b.jpg": "alt b",
        "http://127.0.0.1/f.jpg": "alt f",
    }
    assert find_split_files(str(tmp_path / "alt")) == flagged.files


def test_export_is_deterministic(tmp_path):
    out = str(tmp_path / "out")
    write_synthetic_output(out, 3000, 700, dup_every=5, fail_every=7)
    a = export_json(ExportConfig(source=out, dest=str(tmp_path / "a"), splits=4, bucket_rows=100))
    b = export_json(ExportConfig(source=out, dest=str(tmp_path / "b"), splits=4))
    assert a.buckets_per_split > 1 and b.buckets_per_split == 1
    for fa, fb in zip(a.files, b.files, strict=False):
        da = json.load(open(fa, encoding="utf-8"))  # noqa: SIM115
        db = json.load(open(fb, encoding="utf-8"))  # noqa: SIM115
        assert da == db
    # same config twice: byte-identical files
    c = export_json(ExportConfig(source=out, dest=str(tmp_path / "c"), splits=4, bucket_rows=100))
    assert [open(f, "rb").read() for f in a.files] == [open(f, "rb").read() for f in c.files]  # noqa: SIM115


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"http://a/x": "c"} {}', "after the end"),
        ('{"http://a/x": 3}', "expected a string value"),
        ('{"http://a/x": "c",}', "expected a string key"),
        ('{"http://a/x": "c"', "after a value"),
        ('{"http://a/x": "unterminated', "bad value string"),
        ('["http://a/x"]', "at the start"),
        ('{"http://a/x": {"nested": "x"}}', "expected a string value"),
    ],
)
def test_streaming_parser_rejects_bad_shapes(tmp_path, text, message):
    p = tmp_path / "w-00-of-01.json"
    p.write_text(text)
    rep = validate_json([str(p)])
    assert not rep.ok and any(message in e for e in rep.errors), rep.errors


def test_streaming_parser_handles_chunk_boundaries(tmp_path):
    entries = {f"http://127.0.0.1/{i}": 'v\\"' * (i % 7) + "é\u2603" + str(i) for i in range(500)}
    p = tmp_path / "x.json"
    p.write_text(json.dumps(entries, ensure_ascii=bool(0)), encoding="utf-8")
    assert dict(iter_json_object(str(p), chunk_chars=7)) == entries
    p.write_text(json.dumps(entries, ensure_ascii=True), encoding="utf-8")
    assert dict(iter_json_object(str(p), chunk_chars=5)) == entries


def test_validate_finds_duplicates_misplaced_non_urls_empty_and_count_mismatch(tmp_path):
    good_url = next(u for u in (f"http://127.0.0.1/{i}" for i in range(100)) if split_of(u, 2) == 0)
    bad_url = next(u for u in (f"http://127.0.0.1/{i}" for i in range(100)) if split_of(u, 2) == 1)
    f0 = tmp_path / "r-00-of-02.json"
    f1 = tmp_path / "r-01-of-02.json"
    f0.write_text(
        "{"
        + f'"{good_url}": "a", "{good_url}": "b", "{bad_url}": "c", "not a url": "d", "{good_url}x": " "'
        + "}"
    )
    f1.write_text("{}")
    (tmp_path / "r.export.json").write_text(json.dumps({"entries": 4, "entries_per_split": [4, 0]}))
    rep = validate_json(find_split_files(str(tmp_path)))
    assert not rep.ok
    text = "\n".join(rep.errors)
    assert rep.duplicates == 1 and "duplicate URL" in text
    assert rep.misplaced >= 1 and "belongs in split 1" in text
    assert "is not a URL" in text and "empty caption" in text
    assert "5 entries, the export recorded 4" in text
    # a missing split is an error too
    assert not validate_json([str(f0)]).ok


@pytest.mark.slow
def test_round_trip_100k_rows_bounded_memory(tmp_path):
    out = str(tmp_path / "out")
    n = 100_000
    exportable, unique = write_synthetic_output(out, n, 10_000, dup_every=10, fail_every=13)
    pool = pa.default_memory_pool()
    arrow_before = pool.max_memory()
    tracemalloc.start()
    res = export_json(ExportConfig(source=out, splits=10, bucket_rows=5_000))
    _, export_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    rep = validate_json(res.files)
    _, validate_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert rep.ok, rep.errors
    assert res.entries == rep.entries == unique
    assert res.duplicates == exportable - unique > 0
    # Holding every entry as Python strings would take > 100k * (2 strings * ~90 B) ~ 18 MB;
    # the bucketed export holds one 5k-URL bucket and one parquet batch at a time.
    all_rows_bytes = sum(len(synthetic_url(i)) + 60 for i in range(n)) + n * 2 * 49
    assert export_peak < all_rows_bytes / 3, (export_peak, all_rows_bytes)
    assert validate_peak < all_rows_bytes / 3, (validate_peak, all_rows_bytes)
    # arrow buffers are not seen by tracemalloc: the pool's high-water mark covers them
    assert (
        pool.max_memory() - arrow_before < all_rows_bytes / 3
        or pool.max_memory() < all_rows_bytes / 3
    )
    # spot-check content
    obj = json.load(open(res.files[split_of(synthetic_url(3), 10)], encoding="utf-8"))  # noqa: SIM115
    assert obj[synthetic_url(3)] == 'a "quoted" caption \\ 3 café'


def test_export_to_and_from_an_object_store_filesystem():
    """memory:// stands in for gs:// / s3://: no rename, files written under their final names."""
    src = "memory://vecap-export-test/out"
    rows = [
        _rec(0, i, f"http://127.0.0.1/{i % 5}.jpg", fused_caption=f"c{i}", status="ok")
        for i in range(8)
    ]
    write_shard(WriterConfig(output=src), 0, rows, 8)
    res = export_json(ExportConfig(source=src, splits=2, dest="memory://vecap-export-test/release"))
    assert res.entries == 5 and res.duplicates == 3
    assert all(
        f.startswith("memory://") and "/vecap-export-test/release/wit_300m-" in f for f in res.files
    )
    found = find_split_files("memory://vecap-export-test/release")
    assert len(found) == 2
    rep = validate_json(found)
    assert rep.ok and rep.entries == 5 and rep.expected_entries == 5, rep.errors


def test_a_failure_mid_split_publishes_no_cut_split_on_an_object_store(monkeypatch):
    """An object store's file object completes its upload on close even while an error is on
    its way: a split must be written locally and uploaded whole, or a cut split would sit
    under its final name, looking finished."""
    import fsspec

    import pipeline.io.export_json as ej

    src, dest = "memory://vecap-export-cut/out", "memory://vecap-export-cut/release"
    rows = [
        _rec(0, i, f"http://127.0.0.1/{i}.jpg", fused_caption=f"c{i}", status="ok")
        for i in range(40)
    ]
    write_shard(WriterConfig(output=src), 0, rows, 40)
    real, calls = ej._write_bucket, []

    def failing(path, out, first):
        calls.append(path)
        if len(calls) == 2:  # the second split, after its opening brace was written
            out.write(b'\n"http://127.0.0.1/x.jpg": "half')
            raise OSError("disk full")
        return real(path, out, first)

    monkeypatch.setattr(ej, "_write_bucket", failing)
    with pytest.raises(OSError, match="disk full"):
        export_json(ExportConfig(source=src, splits=2, dest=dest))
    fs = fsspec.filesystem("memory")
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls("/vecap-export-cut/release", detail=False))
    assert names == ["wit_300m-00-of-02.json"]  # the first split whole; no cut second one
    assert len(json.loads(fs.cat("/vecap-export-cut/release/wit_300m-00-of-02.json"))) > 0


def test_a_bad_escape_fails_at_once_without_reading_the_rest(tmp_path):
    p = tmp_path / "w-00-of-01.json"
    p.write_text(
        '{"http://a/x": "bad \\q escape", '
        + '"http://a/y": "fine", ' * 200_000
        + '"http://a/z": "z"}'
    )
    got = []
    tracemalloc.start()
    with pytest.raises(JsonShapeError, match="Invalid"):
        for kv in iter_json_object(str(p), chunk_chars=64 * 1024):
            got.append(kv)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert got == []
    assert peak < 1_000_000, f"the ~4 MB file was read on: peak {peak} bytes"
