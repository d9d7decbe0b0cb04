"""Readers for URL tables: every format and its gzip variant, globs, shard planning, bad rows."""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.io.readers import (
    FilePart,
    InputShard,
    ReaderConfig,
    plan_from_json,
    plan_shards,
    plan_to_json,
    read_shard,
)
from schemas import Record, Status, make_uid

FORMATS = ("parquet", "jsonl", "json", "csv", "tsv")


def _rows(n: int, start: int = 0) -> list[dict]:
    return [
        {"url": f"https://example.com/img/{i}.jpg", "caption": f"a photo number {i}", "lang": "en"}
        for i in range(start, start + n)
    ]


def _encode(fmt: str, rows: list[dict]) -> bytes:
    if fmt == "parquet":
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buf, row_group_size=7)
        return buf.getvalue()
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows).encode()
    if fmt == "json":
        return json.dumps(rows, indent=1).encode()
    text = io.StringIO()
    cols = list(rows[0])
    if fmt == "csv":
        writer = csv.writer(text)
        writer.writerow(cols)
        writer.writerows([r[c] for c in cols] for r in rows)
    else:
        text.write("\t".join(cols) + "\n")
        text.writelines("\t".join(str(r[c]) for c in cols) + "\n" for r in rows)
    return text.getvalue().encode()


def write_table(path: Path, rows: list[dict], fmt: str | None = None) -> Path:
    """Write rows in the format the path's extension names (``.gz`` compresses)."""
    name = path.name.removesuffix(".gz")
    data = _encode(fmt or name.rsplit(".", 1)[-1], rows)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def read_all(config: ReaderConfig) -> list[Record]:
    return [r for shard in plan_shards(config) for r in read_shard(shard, config)]


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_reads_all_rows_in_order(tmp_path: Path, fmt: str, gz: bool) -> None:
    path = write_table(tmp_path / f"input.{fmt}{'.gz' if gz else ''}", _rows(25))
    config = ReaderConfig(str(path), shard_size=10, extra_columns=("lang",))

    shards = plan_shards(config)
    records = [r for s in shards for r in read_shard(s, config)]

    assert [s.rows for s in shards] == [10, 10, 5]
    assert [r.url for r in records] == [f"https://example.com/img/{i}.jpg" for i in range(25)]
    assert [r.alt_text for r in records] == [f"a photo number {i}" for i in range(25)]
    assert all(r.status == Status.OK.value and r.error is None for r in records)
    assert {json.loads(r.extra)["lang"] for r in records} == {"en"}
    assert [(r.shard_id, r.row_index) for r in records] == [(i // 10, i % 10) for i in range(25)]
    assert [r.uid for r in records] == [make_uid(i // 10, i % 10) for i in range(25)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_explicit_format_overrides_the_extension(tmp_path: Path, fmt: str) -> None:
    path = write_table(tmp_path / "rows.data", _rows(3), fmt=fmt)
    records = read_all(ReaderConfig(str(path), input_format=fmt))
    assert [r.url for r in records] == [f"https://example.com/img/{i}.jpg" for i in range(3)]


def test_unknown_extension_without_format_is_a_clear_error(tmp_path: Path) -> None:
    path = write_table(tmp_path / "rows.data", _rows(3), fmt="csv")
    with pytest.raises(ValueError, match="cannot tell the format"):
        plan_shards(ReaderConfig(str(path)))


def test_shards_span_files_and_globs_sort_and_dedupe(tmp_path: Path) -> None:
    # written out of order: the plan sorts each glob, so uids follow the file names
    write_table(tmp_path / "part-2.jsonl", _rows(9, start=12))
    write_table(tmp_path / "part-0.csv", _rows(7, start=0))
    write_table(tmp_path / "part-1.parquet", _rows(5, start=7))
    write_table(tmp_path / "part-3.tsv.gz", _rows(4, start=21))
    config = ReaderConfig(
        (str(tmp_path / "part-[01].*"), str(tmp_path / "part-*"), str(tmp_path / "part-0.csv")),
        shard_size=6,
    )

    shards = plan_shards(config)
    records = [r for s in shards for r in read_shard(s, config)]

    assert [r.url for r in records] == [f"https://example.com/img/{i}.jpg" for i in range(25)]
    assert [s.rows for s in shards] == [6, 6, 6, 6, 1]
    # shard 1 = last row of part-0.csv + the 5 rows of part-1.parquet
    assert [(Path(p.path).name, p.start_row, p.stop_row) for p in shards[1].parts] == [
        ("part-0.csv", 6, 7),
        ("part-1.parquet", 0, 5),
    ]
    assert [(Path(p.path).name, p.start_row, p.stop_row) for p in shards[3].parts] == [
        ("part-2.jsonl", 6, 9),
        ("part-3.tsv.gz", 0, 3),
    ]
    assert [r.row_index for r in records if r.shard_id == 1] == list(range(6))


def test_same_input_same_shards_and_uids(tmp_path: Path) -> None:
    for i in range(3):
        write_table(tmp_path / f"f{i}.csv", _rows(11, start=11 * i))
    config = ReaderConfig(str(tmp_path / "*.csv"), shard_size=4)

    first, second = plan_shards(config), plan_shards(config)
    assert first == second
    assert [r.to_dict() for r in read_all(config)] == [r.to_dict() for r in read_all(config)]
    # the plan survives a JSON round trip, so a resumed job can reuse the manifest's copy
    assert plan_from_json(plan_to_json(first)) == first


def test_big_file_holds_many_shards_read_from_offsets(tmp_path: Path) -> None:
    """A shard deep inside a text file starts at its planned byte offset, and reads the same
    rows as a reader that parses its way there."""
    rows = _rows(57)
    rows[20]["caption"] = 'quoted "caption", with a comma\nand a newline'
    for fmt in ("csv", "tsv.gz", "jsonl"):
        data = rows if fmt != "tsv.gz" else _rows(57)
        config = ReaderConfig(str(write_table(tmp_path / f"big.{fmt}", data)), shard_size=8)
        shards = plan_shards(config)
        assert len(shards) == 8
        assert all(s.parts[0].start_offset is not None for s in shards)
        for shard in shards:
            by_offset = [r.to_dict() for r in read_shard(shard, config)]
            no_offsets = InputShard(
                shard.shard_id,
                shard.rows,
                tuple(
                    FilePart(p.path, p.start_row, p.stop_row, p.file_format) for p in shard.parts
                ),
            )
            by_parsing = [r.to_dict() for r in read_shard(no_offsets, config)]
            assert by_offset == by_parsing
        records = read_all(config)
        assert [r.url for r in records] == [d["url"] for d in data]
        assert [r.alt_text for r in records] == [d["caption"] for d in data]


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "jsonl", "json"])
def test_missing_column_is_a_clear_error_naming_the_columns_found(tmp_path: Path, fmt: str) -> None:
    path = write_table(tmp_path / f"in.{fmt}", [{"link": "https://e.com/a.jpg", "alt": "x"}])
    with pytest.raises(ValueError, match=r"'url'.*not found; columns found: 'link', 'alt'"):
        plan_shards(ReaderConfig(str(path), caption_column="alt"))
    with pytest.raises(ValueError, match=r"'caption'.*columns found: 'link', 'alt'"):
        plan_shards(ReaderConfig(str(path), url_column="link"))
    with pytest.raises(ValueError, match=r"'lang'"):
        plan_shards(
            ReaderConfig(
                str(path), url_column="link", caption_column="alt", extra_columns=("lang",)
            )
        )
    records = read_all(ReaderConfig(str(path), url_column="link", caption_column="alt"))
    assert [(r.url, r.alt_text) for r in records] == [("https://e.com/a.jpg", "x")]


def test_no_caption_column(tmp_path: Path) -> None:
    path = tmp_path / "urls.csv"
    path.write_text("url\nhttps://e.com/1.jpg\nhttps://e.com/2.jpg\n")
    records = read_all(ReaderConfig(str(path), caption_column=None))
    assert [(r.url, r.alt_text, r.status) for r in records] == [
        ("https://e.com/1.jpg", None, "ok"),
        ("https://e.com/2.jpg", None, "ok"),
    ]


def _statuses(records: list[Record]) -> list[tuple[str | None, str]]:
    return [(r.url, r.status) for r in records]


def test_malformed_csv_rows_become_invalid_rows_in_place(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(
        b"url,caption\n"
        b"https://e.com/0.jpg,fine\n"
        b"https://e.com/1.jpg,too,many,fields\n"
        b"\n"
        b",no url here\n"
        b"   ,blank url\n"
        b"https://e.com/5.jpg,\n"
        b"https://e.com/6.jpg,caf\xe9 latin-1\n"
        b'https://e.com/7.jpg,"quoted, with comma"\n'
        b"https://e.com/8.jpg\n"
    )
    config = ReaderConfig(str(path), shard_size=4)
    shards = plan_shards(config)
    records = [r for s in shards for r in read_shard(s, config)]

    assert sum(s.rows for s in shards) == len(records) == 9
    assert [r.uid for r in records] == [make_uid(i // 4, i % 4) for i in range(9)]
    assert [r.status for r in records] == [
        "ok", "invalid_row", "invalid_row", "invalid_row", "invalid_row",
        "ok", "invalid_row", "ok", "invalid_row",
    ]  # fmt: skip
    errors = [r.error for r in records]
    assert "record has 4 fields, the header has 2" in errors[1]
    assert "too,many" in errors[1]
    assert errors[2] == "empty line"
    assert errors[3] == errors[4] == "'url' is empty"
    assert records[4].alt_text == "blank url"  # what could be read is kept for the record
    assert records[5].alt_text is None  # an empty alt-text is no alt-text
    assert errors[6] == "record is not valid UTF-8"
    assert records[7].alt_text == "quoted, with comma"
    assert "1 fields" in errors[8]


def test_malformed_jsonl_rows_become_invalid_rows_in_place(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl.gz"
    lines = [
        '{"url": "https://e.com/0.jpg", "caption": "fine"}',
        '{"url": "https://e.com/1.jpg", "caption": ',
        "[1, 2]",
        '{"url": 17, "caption": "number url"}',
        '{"caption": "no url key"}',
        "",
        '{"url": "https://e.com/6.jpg"}',
        '{"url": "https://e.com/7.jpg", "caption": 3.5}',
        '{"url": null, "caption": "null url"}',
    ]
    path.write_bytes(gzip.compress(("\n".join(lines)).encode()))  # no final newline
    records = read_all(ReaderConfig(str(path), shard_size=5))

    assert len(records) == 9
    assert [r.status for r in records] == [
        "ok", "invalid_row", "invalid_row", "invalid_row", "invalid_row",
        "invalid_row", "ok", "invalid_row", "invalid_row",
    ]  # fmt: skip
    assert records[1].error.startswith("line is not valid JSON")
    assert records[2].error == "row is a JSON list, not an object"
    assert records[3].error == "'url' is a int, not a string"
    assert records[4].error == "no 'url' value"
    assert records[5].error == "empty line"
    assert records[6].alt_text is None
    assert records[7].error == "caption is a float, not a string"
    assert records[8].error == "no 'url' value"


def test_malformed_tsv_and_parquet_rows(tmp_path: Path) -> None:
    tsv = tmp_path / "bad.tsv"
    # quotes are literal in TSV: a stray quote must not swallow the next lines
    tsv.write_text(
        'url\tcaption\nhttps://e.com/0.jpg\ta "quoted\nextra\tfield\tcount\nhttps://e.com/2.jpg\tok\n'
    )
    records = read_all(ReaderConfig(str(tsv)))
    assert _statuses(records) == [
        ("https://e.com/0.jpg", "ok"),
        (None, "invalid_row"),
        ("https://e.com/2.jpg", "ok"),
    ]
    assert records[0].alt_text == 'a "quoted'

    parquet = tmp_path / "bad.parquet"
    pq.write_table(
        pa.table(
            {
                "url": ["https://e.com/0.jpg", None, "", " https://e.com/3.jpg "],
                "caption": ["a", "b", "c", None],
            }
        ),
        parquet,
    )
    records = read_all(ReaderConfig(str(parquet)))
    assert _statuses(records) == [
        ("https://e.com/0.jpg", "ok"),
        (None, "invalid_row"),
        (None, "invalid_row"),
        ("https://e.com/3.jpg", "ok"),  # surrounding whitespace is trimmed
    ]


def test_json_array_elements_that_are_not_objects_are_invalid_rows(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(
        '[{"url": "https://e.com/0.jpg", "caption": "x"}, 12, null, {"url": "https://e.com/3.jpg"}]'
    )
    records = read_all(ReaderConfig(str(path), shard_size=3))
    assert [r.status for r in records] == ["ok", "invalid_row", "invalid_row", "ok"]
    assert records[1].error == "row is a JSON int, not an object"


@pytest.mark.parametrize(
    "text",
    [
        '{"url": "x"}',
        '[{"url": "x"}, {"url": ',
        '[{"url": "x"} {"url": "y"}]',
        '[{"url": "x"}] trailing',
    ],
    ids=["not-an-array", "truncated", "missing-comma", "trailing"],
)
def test_a_broken_json_array_fails_at_planning(tmp_path: Path, text: str) -> None:
    path = tmp_path / "rows.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="not a JSON array of objects"):
        plan_shards(ReaderConfig(str(path)))


def test_json_array_streams_across_chunk_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.io.text_formats as tf

    monkeypatch.setattr(tf, "_CHUNK", 7)  # every element and number straddles chunks
    rows = [
        {"url": f"https://e.com/{i}.jpg", "caption": "é" * (i % 3), "n": 12345678 * i}
        for i in range(30)
    ]
    path = tmp_path / "rows.json.gz"
    # a byte-order mark, multi-byte characters and odd spacing: checkpoints are byte offsets
    text = "\ufeff [ " + " ,\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + " ] \n"
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    config = ReaderConfig(str(path), extra_columns=("n",), shard_size=7)
    shards = plan_shards(config)
    assert all(s.parts[0].offset_row == s.parts[0].start_row for s in shards)
    records = [r for s in shards for r in read_shard(s, config)]
    assert [json.loads(r.extra)["n"] for r in records] == [12345678 * i for i in range(30)]
    assert [r.alt_text for r in records] == [("é" * (i % 3)) or None for i in range(30)]
    for shard in shards:  # jumping to a checkpoint reads what parsing from the start reads
        plain = InputShard(
            shard.shard_id,
            shard.rows,
            tuple(FilePart(p.path, p.start_row, p.stop_row, p.file_format) for p in shard.parts),
        )
        assert [r.to_dict() for r in read_shard(shard, config)] == [
            r.to_dict() for r in read_shard(plain, config)
        ]


def test_extra_columns_are_a_json_object(tmp_path: Path) -> None:
    import datetime

    path = tmp_path / "rows.parquet"
    pq.write_table(
        pa.table(
            {
                "url": ["https://e.com/0.jpg", "https://e.com/1.jpg"],
                "caption": ["a", "b"],
                "score": [0.5, float("nan")],
                "tags": [["x", "y"], []],
                "seen": [datetime.date(2024, 1, 2), None],
                "blob": [b"\x00\x01", None],
            }
        ),
        path,
    )
    records = read_all(
        ReaderConfig(str(path), extra_columns=("score", "tags", "seen", "blob", "url"))
    )
    assert [json.loads(r.extra) for r in records] == [
        {
            "score": 0.5,
            "tags": ["x", "y"],
            "seen": "2024-01-02",
            "blob": "AAE=",
            "url": "https://e.com/0.jpg",
        },
        {"score": None, "tags": [], "seen": None, "blob": None, "url": "https://e.com/1.jpg"},
    ]
    # jsonl rows that lack an extra key store null for it
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text('{"url": "u0", "caption": "c", "lang": "de"}\n{"url": "u1", "caption": "c"}\n')
    assert [
        json.loads(r.extra) for r in read_all(ReaderConfig(str(jsonl), extra_columns=("lang",)))
    ] == [
        {"lang": "de"},
        {"lang": None},
    ]


def test_fsspec_urls_and_directories(tmp_path: Path) -> None:
    fs = fsspec.filesystem("memory")
    try:
        fs.pipe("/vecap-readers/in/a.csv", _encode("csv", _rows(3)))
        fs.pipe("/vecap-readers/in/b.jsonl", _encode("jsonl", _rows(2, start=3)))
        records = read_all(
            ReaderConfig(("memory://vecap-readers/in/a.csv", "memory://vecap-readers/in/*.jsonl"))
        )
        assert [r.url for r in records] == [f"https://example.com/img/{i}.jpg" for i in range(5)]
        # a directory with several formats is ambiguous ...
        with pytest.raises(ValueError, match="several formats"):
            plan_shards(ReaderConfig("memory://vecap-readers/in"))
        # ... unless the format says which files to take
        records = read_all(ReaderConfig("memory://vecap-readers/in", input_format="jsonl"))
        assert [r.url for r in records] == [f"https://example.com/img/{i}.jpg" for i in (3, 4)]
    finally:
        fs.rm("/vecap-readers", recursive=True)


def test_inputs_that_match_nothing_fail(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plan_shards(ReaderConfig(str(tmp_path / "nope.csv")))
    with pytest.raises(FileNotFoundError, match="matches no files"):
        plan_shards(ReaderConfig(str(tmp_path / "*.csv")))


def test_empty_files_contribute_no_rows(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("url,caption\n")
    (tmp_path / "b.jsonl").write_text("")
    (tmp_path / "c.json").write_text("[]")
    write_table(tmp_path / "d.csv", _rows(2))
    config = ReaderConfig(
        tuple(str(tmp_path / n) for n in ("a.csv", "b.jsonl", "c.json", "d.csv")), shard_size=10
    )
    assert [r.url for r in read_all(config)] == [
        f"https://example.com/img/{i}.jpg" for i in range(2)
    ]


def test_a_file_that_shrank_after_planning_is_an_error(tmp_path: Path) -> None:
    path = write_table(tmp_path / "in.jsonl", _rows(10))
    config = ReaderConfig(str(path), shard_size=4)
    shards = plan_shards(config)
    write_table(path, _rows(5))
    with pytest.raises(RuntimeError, match="changed after planning"):
        list(read_shard(shards[1], config))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input": ""}, "input must be"),
        ({"input": ()}, "input must be"),
        ({"input": "a.csv", "input_format": "xlsx"}, "input_format must be one of"),
        ({"input": "a.csv", "shard_size": 0}, "shard_size"),
        ({"input": "a.csv", "shard_size": 10_000_000}, "shard_size"),
        ({"input": "a.csv", "extra_columns": ("a", "a")}, "distinct"),
        ({"input": "a.csv", "url_column": ""}, "url_column"),
        ({"input": "a.csv", "shard_size": "100"}, "shard_size must be an integer"),
        ({"input": "a.csv", "verify_images": "yes"}, "verify_images"),
        ({"input": "a.csv", "column_names": ("a", "")}, "column_names"),
    ],
)
def test_config_is_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ReaderConfig(**kwargs)


def test_config_normalises_inputs() -> None:
    assert ReaderConfig(["a.csv", "b.csv"]).inputs == ("a.csv", "b.csv")  # type: ignore[arg-type]
    assert ReaderConfig(["a.csv"]).input == "a.csv"  # type: ignore[arg-type]
    assert ReaderConfig("a.csv", extra_columns=["x"]).extra_columns == ("x",)  # type: ignore[arg-type]


def test_text_extras_fast_path_writes_what_the_json_encoder_writes(tmp_path: Path) -> None:
    from pipeline.io.readers import _EXTRA_JSON

    values = ["plain", 'quote " and \\ backslash', "tab\tand ünïcödé ✓", "ctrl \x01"]
    path = tmp_path / "rows.jsonl"
    path.write_text(
        "".join(
            json.dumps({"url": f"u{i}", "caption": "c", "a": v, "b": "x"}) + "\n"
            for i, v in enumerate(values)
        )
    )
    records = read_all(ReaderConfig(str(path), extra_columns=("a", "b")))
    assert [r.extra for r in records] == [_EXTRA_JSON.encode({"a": v, "b": "x"}) for v in values]
    assert [json.loads(r.extra)["a"] for r in records] == values


def test_jsonl_whitespace_and_trailing_data(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('  {"url": "u0"}  \r\n{"url": "u1"} junk\n{"url": "u2"}{"url": "u3"}\n\t\n')
    records = read_all(ReaderConfig(str(path), caption_column=None))
    assert [(r.url, r.status) for r in records] == [
        ("u0", "ok"),
        (None, "invalid_row"),
        (None, "invalid_row"),
        (None, "invalid_row"),
    ]
    assert "Extra data" in records[1].error and "junk" in records[1].error
    assert records[3].error == "empty line"


def test_a_stray_quote_does_not_swallow_the_rows_after_it(tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    path.write_bytes(
        b"url,caption\r\n"
        b'u0,"multi-line\nalt text, quoted"\r\n'
        b'u1,"never closed\n'
        b"u2,bare\rcr\n"
        b'u3,"closed" then text\n'
        + b"".join(b"u%d,c%d\n" % (i, i) for i in range(4, 12))
        + b'u12,"open at the end\n'
    )
    expected = [
        ("u0", "ok"), (None, "invalid_row"), (None, "invalid_row"), (None, "invalid_row"),
        *[(f"u{i}", "ok") for i in range(4, 12)], (None, "invalid_row"),
    ]  # fmt: skip
    for shard_size in (1, 2, 5, 100):  # planning and reading agree wherever shards start
        records = read_all(ReaderConfig(str(path), shard_size=shard_size))
        assert _statuses(records) == expected
    assert records[0].alt_text == "multi-line\nalt text, quoted"
    assert records[1].error == "unterminated quoted field: 'u1,\"never closed'"
    assert "bare carriage return" in records[2].error
    assert records[3].error.startswith("cannot parse CSV record")
    assert "unexpected end of data" in records[12].error


@pytest.mark.parametrize("fmt", ["jsonl", "tsv", "tsv.gz"])
def test_line_offsets_are_exact_across_chunk_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    import pipeline.io.text_formats as tf

    monkeypatch.setattr(tf, "_CHUNK", 5)  # lines straddle chunks; some chunks hold no newline
    rows = _rows(23)
    path = write_table(tmp_path / f"in.{fmt}", rows)
    for shard_size in (1, 3, 4, 23):
        config = ReaderConfig(str(path), shard_size=shard_size)
        shards = plan_shards(config)
        assert all(p.start_offset is not None for s in shards for p in s.parts)
        assert [r.url for r in read_all(config)] == [r["url"] for r in rows]


def _peak_read_memory(tmp_path: Path, fmt: str, n: int) -> int:
    import tracemalloc

    rows = [
        {
            "url": f"https://example.com/a/long/path/{i:08d}.jpg",
            "caption": "words " * 20,
            "lang": "en",
        }
        for i in range(n)
    ]
    path = tmp_path / f"{n}.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=5_000)
    else:
        write_table(path, rows)
    del rows
    config = ReaderConfig(str(path), shard_size=n, extra_columns=("lang",))
    (shard,) = plan_shards(config)
    tracemalloc.start()
    try:
        assert sum(1 for _ in read_shard(shard, config)) == n
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fmt", ["csv.gz", "jsonl", "parquet"])
def test_reading_streams_instead_of_loading_the_file(tmp_path: Path, fmt: str) -> None:
    """Peak Python memory while reading a shard does not grow with the shard's rows."""
    small = _peak_read_memory(tmp_path, fmt, 10_000)  # more than a parquet batch (8192)
    large = _peak_read_memory(tmp_path, fmt, 30_000)  # ~5.4 MB of row text
    assert large < small * 1.3 + 200_000, f"peak {small / 1e6:.2f} MB -> {large / 1e6:.2f} MB"


def test_headerless_tables_take_their_column_names_from_the_config(tmp_path: Path) -> None:
    # CC3M's training TSV: no header, caption first, and captions with quotes
    tsv = tmp_path / "Train_GCC-training.tsv"
    tsv.write_text(
        'a "quoted" dog\thttps://e.com/0.jpg\nsunset\thttps://e.com/1.jpg\n\nonly one field\n'
    )
    config = ReaderConfig(str(tsv), column_names=("caption", "url"), shard_size=2)
    records = read_all(config)
    assert [(r.url, r.alt_text, r.status) for r in records] == [
        ("https://e.com/0.jpg", 'a "quoted" dog', "ok"),
        ("https://e.com/1.jpg", "sunset", "ok"),
        (None, None, "invalid_row"),
        (None, None, "invalid_row"),
    ]
    csv_path = tmp_path / "urls.csv.gz"
    csv_path.write_bytes(gzip.compress(b"https://e.com/0.jpg,x\nhttps://e.com/1.jpg,y\n"))
    records = read_all(ReaderConfig(str(csv_path), column_names=("url", "caption"), shard_size=1))
    assert [(r.url, r.alt_text) for r in records] == [
        ("https://e.com/0.jpg", "x"),
        ("https://e.com/1.jpg", "y"),
    ]
    with pytest.raises(ValueError, match=r"'url'.*columns found: 'a', 'b'"):
        plan_shards(ReaderConfig(str(tsv), column_names=("a", "b")))
    parquet = write_table(tmp_path / "t.parquet", _rows(2))
    with pytest.raises(ValueError, match="csv and tsv only"):
        plan_shards(ReaderConfig(str(parquet), column_names=("url", "caption")))
    with pytest.raises(ValueError, match="csv and tsv"):
        ReaderConfig("x.parquet", input_format="parquet", column_names=("url",))


def test_shards_jump_to_the_nearest_checkpoint_then_skip(tmp_path: Path) -> None:
    from pipeline.io.shard_plan import checkpoint_every

    assert [checkpoint_every(n) for n in (3, 1_000, 2_500, 10_000, 100_000)] == [
        3,
        1_000,
        1_000,
        1_000,
        10_000,
    ]
    write_table(tmp_path / "a.jsonl.gz", _rows(1_700))
    write_table(tmp_path / "b.csv", _rows(2_300, start=1_700))
    write_table(tmp_path / "c.tsv", _rows(3_100, start=4_000))
    config = ReaderConfig(str(tmp_path / "*"), shard_size=2_500)
    shards = plan_shards(config)
    parts = [p for s in shards for p in s.parts]
    # file rows where shards start, and the checkpoints (every 1,000 file rows) they jump to
    assert [(Path(p.path).name, p.start_row, p.offset_row) for p in parts] == [
        ("a.jsonl.gz", 0, 0),
        ("b.csv", 0, 0),
        ("b.csv", 800, 0),  # jumps to row 0's offset, skips 800 records
        ("c.tsv", 0, 0),
        ("c.tsv", 1_000, 1_000),
    ]
    urls = [r.url for s in shards for r in read_shard(s, config)]
    assert urls == [f"https://example.com/img/{i}.jpg" for i in range(7_100)]


@pytest.mark.parametrize("suffix", ["bz2", "xz"])
def test_other_fsspec_compressions(tmp_path: Path, suffix: str) -> None:
    import bz2
    import lzma

    compress = {"bz2": bz2.compress, "xz": lzma.compress}[suffix]
    path = tmp_path / f"in.jsonl.{suffix}"
    path.write_bytes(compress(_encode("jsonl", _rows(5))))
    assert [r.url for r in read_all(ReaderConfig(str(path), shard_size=2))] == [
        f"https://example.com/img/{i}.jpg" for i in range(5)
    ]


def test_planning_stops_at_the_first_bad_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.io.readers as readers

    (tmp_path / "000.csv").write_text("link,caption\nu,c\n")
    for i in range(1, 40):
        write_table(tmp_path / f"{i:03d}.csv", _rows(2))
    scanned: list[str] = []
    real_scan = readers._scan

    def counting_scan(url, *args, **kwargs):
        scanned.append(url)
        if not url.endswith("000.csv"):
            time.sleep(0.05)  # big files take a while: the bad one fails first
        return real_scan(url, *args, **kwargs)

    monkeypatch.setattr(readers, "_SCAN_THREADS", 2)
    monkeypatch.setattr(readers, "_scan", counting_scan)
    with pytest.raises(ValueError, match=r"000\.csv: column\(s\) 'url' not found"):
        plan_shards(ReaderConfig(str(tmp_path / "*.csv")))
    assert len(scanned) < 20
