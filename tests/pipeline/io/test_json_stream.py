"""The ijson-based JSON readers: one-line errors, exact checkpoints, streaming memory, and no
silent corruption where yajl would mangle a lone surrogate escape."""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path

import ijson
import pytest

import pipeline.io.json_stream as js
import pipeline.io.text_formats as tf
from pipeline.io.export_json import JsonShapeError, iter_json_object, validate_json
from pipeline.io.readers import FilePart, InputShard, ReaderConfig, plan_shards, read_shard
from pipeline.io.table_formats import Checkpoints
from pipeline.io.text_formats import JsonArrayReader, scan_json


def test_the_c_backend_is_the_one_used() -> None:
    assert js.yajl2_c().backend_name == "yajl2_c"
    assert ijson.backend == "yajl2_c"


def _array_error(data: bytes) -> str:
    with pytest.raises(ValueError, match="not a JSON array of objects") as info:
        list(JsonArrayReader("in.json", io.BytesIO(data)))
    return str(info.value)


@pytest.mark.parametrize(
    "data, says",
    [
        (b'[{"url": "a"}, {"url": "b"}, {"url": ', "premature EOF, in row 2"),
        (b'[{"url": "a"} {"url": "b"}]', "expect ',' or ']'"),
        (b'[{"url": "a"}] trailing', "trailing garbage"),
        (b'[{"url": "caf\xe9"}]', "not valid UTF-8"),
        (b"[1, NaN]", "invalid character"),  # json.loads took NaN; JSON has no NaN
        (b'{"url": "a"}', "expected '[', got '{', in row 0 (by byte 0)"),
        (b"  ", "expected '[', got end of file"),
    ],
)
def test_a_broken_array_is_one_line_naming_the_row(data: bytes, says: str) -> None:
    message = _array_error(data)
    assert "\n" not in message and says in message, message


def test_a_truncated_release_file_is_one_line(tmp_path: Path) -> None:
    p = tmp_path / "w-00-of-01.json"
    p.write_text('{"http://127.0.0.1/a": "one", "http://127.0.0.1/b": "tw')
    with pytest.raises(JsonShapeError) as info:
        list(iter_json_object(str(p)))
    assert "\n" not in str(info.value) and "truncated" in str(info.value)
    report = validate_json([str(p)])
    assert not report.ok and len(report.errors) == 1 and "\n" not in report.errors[0]
    assert report.entries_per_file == [1]  # the entry before the cut was read


@pytest.mark.parametrize("escape", [r"\ud800", r"\ud800\u0041", r"\udc00"])
def test_a_lone_surrogate_escape_is_an_error_not_a_changed_caption(
    tmp_path: Path, escape: str
) -> None:
    # yajl alone turns "\ud800" into "?" and "\ud800\u0041" into U+10041
    p = tmp_path / "w-00-of-01.json"
    p.write_text('{"http://127.0.0.1/a": "x' + escape + '"}')
    with pytest.raises(JsonShapeError, match="surrogate"):
        list(iter_json_object(str(p)))
    message = _array_error(b'[{"url": "u", "caption": "x' + escape.encode() + b'"}]')
    assert "surrogate" in message


def test_surrogate_pairs_and_escaped_backslashes_read_right_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tf, "_CHUNK", 5)  # pairs and backslash runs straddle every chunk
    rows = [
        {"url": f"u{i}", "caption": "\U0001f600" * i + "\\ud800 literal" + "\\" * i}
        for i in range(20)
    ]
    data = json.dumps(rows, ensure_ascii=True).encode()  # emoji as \ud83d\ude00 escapes
    assert list(JsonArrayReader("in.json", io.BytesIO(data))) == rows
    obj = {r["url"]: r["caption"] for r in rows}
    p = tmp_path / "x.json"
    p.write_text(json.dumps(obj, ensure_ascii=True))
    assert dict(iter_json_object(str(p), chunk_chars=5)) == obj


def test_checkpoints_at_the_default_chunk_size_resume_at_their_row(tmp_path: Path) -> None:
    rows = [
        {"url": f"https://127.0.0.1/{i}.jpg", "caption": "x, [y] {z}" * (i % 5), "n": i}
        for i in range(7_000)
    ]
    path = tmp_path / "rows.json"
    path.write_text("[\n" + ",\n  ".join(json.dumps(r) for r in rows) + "\n]\n")
    scan = scan_json(str(path), Checkpoints(0, 1_000))
    assert scan.rows == 7_000 and sorted(scan.offsets) == list(range(0, 7_000, 1_000))
    data = path.read_bytes()
    for row, offset in scan.offsets.items():
        f = io.BytesIO(data)
        f.seek(offset)
        got = list(JsonArrayReader("rows.json", f, inside=True, byte_start=offset, first_row=row))
        assert got == rows[row:]
    config = ReaderConfig(str(path), shard_size=1_000)
    shards = plan_shards(config)
    assert all(s.parts[0].offset_row == s.parts[0].start_row for s in shards)
    for shard in shards[:3]:  # jumping to a checkpoint reads what parsing from the start reads
        plain = InputShard(
            shard.shard_id,
            shard.rows,
            tuple(FilePart(p.path, p.start_row, p.stop_row, p.file_format) for p in shard.parts),
        )
        assert [r.to_dict() for r in read_shard(shard, config)] == [
            r.to_dict() for r in read_shard(plain, config)
        ]


def test_a_10mb_array_is_streamed_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tf, "_CHUNK", 256 << 10)
    row = {"url": "https://127.0.0.1/img.jpg", "caption": "a caption " * 20}
    n = 10_000_000 // len(json.dumps(row))
    path = tmp_path / "big.json"
    with open(path, "w") as f:
        f.write("[" + ",\n".join([json.dumps(row)] * n) + "]")
    assert path.stat().st_size > 10_000_000
    tracemalloc.start()
    scan = scan_json(str(path), Checkpoints(0, 1_000))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert scan.rows == n and len(scan.offsets) == -(-n // 1_000)
    assert peak < 4_000_000, f"peak {peak} bytes for a {path.stat().st_size} byte file"


def test_an_unterminated_string_stops_at_the_value_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(js, "MAX_VALUE_BYTES", 64 << 10)
    monkeypatch.setattr(tf, "_CHUNK", 16 << 10)
    data = b'[{"url": "a"}, {"url": "never closed' + b"x" * (4 << 20)
    tracemalloc.start()
    message = _array_error(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "longer than" in message and "in row 1" in message
    assert peak < 1_000_000, peak
