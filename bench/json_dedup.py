"""Release JSON and dedup benchmark: vecap's former hand-written code against the libraries that
replaced it, side by side in one run on the same generated input.

- read a release split (one JSON object of URL -> caption): the former scanstring-on-a-sliding-
  buffer reader against ijson's C parser (``iter_json_object``);
- read a JSON-array input: the former raw_decode-on-a-sliding-buffer reader against ijson
  (``JsonArrayReader``), plain and with planning's checkpoint offsets every 1,000 rows;
- first-occurrence URL dedup of export buckets: the former numpy-unique-on-URL-hashes code
  against pyarrow's hash group-by (``_first_occurrences``);
- JSON string escaping of the entries: vecap's numpy scan (``_json_strings``) against the stdlib
  C escaper called per row.

Every pair is checked to give the same result. Prints a table and, as its LAST line, one JSON
object of the figures (seconds, rows/s, old/new ratios: > 1 means the library code is faster).
Local files only; no network. ``--entries 1000000 --rows 1000000`` is the reference size.
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from json.encoder import encode_basestring
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.io import export_json as ej  # noqa: E402
from pipeline.io.text_formats import JsonArrayReader  # noqa: E402

# --------------------------------------------------------------------------- the former code
# Copied from git (HEAD before the switch to ijson / pyarrow's group-by), unchanged but for
# names: pipeline/io/export_json.py iter_json_object and _first_occurrences, and
# pipeline/io/text_formats.py JsonArrayReader.

_MAX_STRING_CHARS = 16 * 1024 * 1024
_CHUNK = 4 << 20
_MAX_JSON_ELEMENT_CHARS = 64 << 20
_JSON_WS = re.compile(r"[ \t\r\n]*").match
_raw_decode = json.JSONDecoder().raw_decode


class JsonShapeError(ValueError):
    pass


def old_iter_json_object(path: str, chunk_chars: int = 1 << 20) -> Iterator[tuple[str, str]]:
    """Stream the (key, value) pairs of a file holding ONE flat JSON object of string values.

    Raises :class:`JsonShapeError` on anything else (nested values, numbers, two objects, trailing
    garbage, truncation). Uses the json module's C string scanner on a sliding buffer, so memory is
    one chunk plus the longest string, whatever the file size.
    """
    from json.decoder import JSONDecodeError, scanstring

    with open(path, encoding="utf-8") as f:
        buf = ""
        pos = 0
        eof = False

        def fill() -> bool:
            nonlocal buf, pos, eof
            if eof:
                return False
            chunk = f.read(chunk_chars)
            if not chunk:
                eof = True
                return False
            buf = buf[pos:] + chunk
            pos = 0
            return True

        def skip_ws() -> str:
            """Next non-whitespace char ('' at EOF), not consumed."""
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\n\r":
                    pos += 1
                if pos < len(buf):
                    return buf[pos]
                if not fill():
                    return ""

        def read_string(what: str) -> str:
            nonlocal pos
            if skip_ws() != '"':
                got = buf[pos : pos + 20] if pos < len(buf) else "end of file"
                raise JsonShapeError(f"{path}: expected a string {what}, got {got!r}")
            while True:
                try:
                    value, end = scanstring(buf, pos + 1, True)
                except JSONDecodeError as e:
                    # only a string cut by the chunk's end (unterminated, or an escape cut short)
                    # needs more data; anything else is an error now, without reading on
                    cut = e.msg.startswith("Unterminated string") or e.pos >= len(buf) - 6
                    if cut and len(buf) - pos <= _MAX_STRING_CHARS and fill():
                        continue
                    raise JsonShapeError(f"{path}: bad {what} string: {e.msg}") from None
                pos = end
                return value

        def expect(ch: str, what: str) -> None:
            nonlocal pos
            got = skip_ws()
            if got != ch:
                raise JsonShapeError(
                    f"{path}: expected {ch!r} {what}, got {got or 'end of file'!r}"
                )
            pos += 1

        expect("{", "at the start of the object")
        if skip_ws() == "}":
            pos += 1
        else:
            while True:
                key = read_string("key")
                expect(":", "after a key")
                value = read_string("value")
                yield key, value
                nxt = skip_ws()
                pos += 1
                if nxt == ",":
                    continue
                if nxt == "}":
                    break
                raise JsonShapeError(
                    f"{path}: expected ',' or '}}' after a value, got {nxt or 'end of file'!r}"
                )
        if skip_ws() != "":
            raise JsonShapeError(f"{path}: data after the end of the JSON object")


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class OldJsonArrayReader:
    """The elements of a top-level JSON array, decoded one at a time from a streamed text buffer,
    with the byte offset where each element starts (planning's checkpoints).

    A document that is not an array, or that breaks off or is malformed, raises ValueError:
    unlike a jsonl line, a broken array element leaves no way to find where the next one starts.
    ``inside=True`` starts at an element (a checkpoint offset) instead of at the opening ``[``.
    """

    def __init__(self, url: str, f: IO[bytes], *, inside: bool = False, byte_start: int = 0):
        self._url = url
        self._f = f
        self._inside = inside
        self._utf8 = codecs.getincrementaldecoder("utf-8" if inside else "utf-8-sig")()
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._first_chunk = not inside
        # byte offset of buf[mark]: advanced chunk by chunk so each character is measured once
        self._mark = 0
        self._mark_byte = byte_start
        self._element = 0  # position in buf of the element last yielded

    def _fill(self) -> bool:
        """Append the next chunk to the buffer (dropping what is consumed); False at the end."""
        if self._eof:
            return False
        chunk = self._f.read(_CHUNK)
        if self._first_chunk:
            self._first_chunk = False
            if chunk.startswith(codecs.BOM_UTF8):
                self._mark_byte += len(codecs.BOM_UTF8)  # the decoder drops it
        try:
            text = self._utf8.decode(chunk, final=not chunk)
        except UnicodeDecodeError as e:
            raise ValueError(f"{self._url}: not valid UTF-8: {e}") from e
        if not chunk:
            self._eof = True
        pos = self._pos
        self._mark_byte += _utf8_len(self._buf[self._mark : pos])
        self._mark = 0
        self._element -= pos
        self._buf = self._buf[pos:] + text
        self._pos = 0
        return bool(text) or not self._eof

    def _next_char(self) -> str:
        """The next non-whitespace character (not consumed), or "" at the end of the file."""
        while True:
            self._pos = _JSON_WS(self._buf, self._pos).end()
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill():
                return ""

    def _malformed(self, what: str) -> ValueError:
        at = self._mark_byte + _utf8_len(self._buf[self._mark : self._pos])
        return ValueError(f"{self._url}: not a JSON array of objects: {what} at byte {at}")

    def offset(self) -> int:
        """The byte offset (in the decompressed stream) where the last yielded element starts."""
        self._mark_byte += _utf8_len(self._buf[self._mark : self._element])
        self._mark = self._element
        return self._mark_byte

    def __iter__(self) -> Iterator[Any]:
        if not self._inside:
            if self._next_char() != "[":
                raise self._malformed("expected '['")
            self._pos += 1
            if self._next_char() == "]":
                self._pos += 1
                if self._next_char() != "":
                    raise self._malformed("content after the closing ']'")
                return
        while True:
            self._next_char()
            while True:
                try:
                    obj, end = _raw_decode(self._buf, self._pos)
                except json.JSONDecodeError as e:
                    if len(self._buf) - self._pos > _MAX_JSON_ELEMENT_CHARS or not self._fill():
                        raise self._malformed(f"bad element ({e.msg})") from e
                    continue
                # a number at the very end of the buffer may continue in the next chunk
                if end == len(self._buf) and not self._eof and self._fill():
                    continue
                break
            self._element = self._pos
            self._pos = end
            yield obj
            buf, pos = self._buf, self._pos
            sep = buf[pos] if pos < len(buf) else ""
            if sep not in (",", "]"):
                sep = self._next_char()
            if sep == ",":
                self._pos += 1
            elif sep == "]":
                self._pos += 1
                break
            else:
                raise self._malformed(
                    f"expected ',' or ']' but found {sep!r}" if sep else "unexpected end"
                )
        if self._next_char() != "":
            raise self._malformed("content after the closing ']'")


def old_first_occurrences(table: pa.Table) -> pa.Table:
    """The rows whose URL did not appear earlier in the bucket (which is in uid order).

    Vectorised on the 64-bit URL hashes; a repeated hash is checked against the URL strings, and
    should two different URLs ever share a hash the bucket falls back to an exact set of URLs.
    """
    h = table.column("h").to_numpy()
    uniq, first = np.unique(h, return_index=True)
    if len(uniq) == len(h):
        return table
    keep = np.zeros(len(h), dtype=bool)
    keep[first] = True
    repeats = np.nonzero(~keep)[0]
    firsts = first[np.searchsorted(uniq, h[repeats])]
    urls = table.column("url")
    same = pc.equal(urls.take(pa.array(repeats)), urls.take(pa.array(firsts)))
    if not pc.all(same).as_py():  # a 64-bit collision: be exact the slow way
        seen: set[str] = set()
        mask = []
        for url in urls.to_pylist():
            mask.append(url not in seen)
            seen.add(url)
        return table.filter(pa.array(mask))
    return table.filter(pa.array(keep))


# --------------------------------------------------------------------------- inputs


def _url(i: int) -> str:
    return f"https://img.example.com/photos/{i % 9973:04d}/{i:09d}.jpg"


def _caption(i: int) -> str:
    extra = ' with "quotes" and a \\ backslash' if i % 50 == 0 else ""
    return f"a photo of item {i}: a red bicycle leaning on a wall, café{extra}"


def _write_release(path: str, n: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("{")
        for start in range(0, n, 100_000):
            stop = min(n, start + 100_000)
            f.write(
                ("\n" if start == 0 else ",\n")
                + ",\n".join(
                    f"{encode_basestring(_url(i))}: {encode_basestring(_caption(i))}"
                    for i in range(start, stop)
                )
            )
        f.write("\n}\n")


def _write_array(path: str, n: int) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("[")
        for start in range(0, n, 100_000):
            stop = min(n, start + 100_000)
            f.write(
                ("\n" if start == 0 else ",\n")
                + ",\n".join(
                    json.dumps({"url": _url(i), "caption": _caption(i), "n": i}, ensure_ascii=False)
                    for i in range(start, stop)
                )
            )
        f.write("\n]\n")


def _dedup_buckets(rows: int, dup_fraction: float, bucket_rows: int) -> list[pa.Table]:
    """Export buckets as the export spills them: rows in uid order, every URL in one bucket by
    hash, ``dup_fraction`` of the rows repeating an earlier URL."""
    rng = np.random.default_rng(7)
    ids = np.arange(rows)
    repeat = rng.random(rows) < dup_fraction
    ids[repeat] = (rng.random(int(repeat.sum())) * np.maximum(ids[repeat], 1)).astype(np.int64)
    urls = pa.array([_url(int(i)) for i in ids], pa.string())
    captions = pa.array([_caption(i) for i in range(rows)], pa.string())
    h = ej._hashes(urls)
    n_buckets = max(1, -(-rows // bucket_rows))
    bucket = h % np.uint64(n_buckets)
    table = pa.table({"url": urls, "caption": captions, "h": pa.array(h, pa.uint64())})
    return [table.filter(pa.array(bucket == b)) for b in range(n_buckets)]


# --------------------------------------------------------------------------- timing


def _best(fn, repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _array_with_offsets(reader_cls, path: str, every: int, new: bool) -> tuple[int, dict]:
    offsets: dict[int, int] = {}
    rows = 0
    with open(path, "rb") as f:
        if new:
            array = reader_cls(path, f, want_start=lambda r: -(-r // every) * every)
        else:
            array = reader_cls(path, f)
        for _obj in array:
            if rows % every == 0:
                start = array.offset()
                if start is not None:
                    offsets[rows] = start
            rows += 1
    return rows, offsets


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=1_000_000, help="release JSON entries")
    p.add_argument("--array-rows", type=int, default=None, help="JSON-array rows (= entries)")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows deduplicated")
    p.add_argument("--dup-fraction", type=float, default=0.2)
    p.add_argument("--bucket-rows", type=int, default=500_000, help="as ExportConfig's")
    p.add_argument("--repeat", type=int, default=2, help="best of this many runs")
    args = p.parse_args(argv)
    array_rows = args.array_rows if args.array_rows is not None else args.entries
    figures: dict[str, Any] = {"entries": args.entries, "array_rows": array_rows}
    figures.update(rows=args.rows, dup_fraction=args.dup_fraction, ijson_backend="yajl2_c")

    def pair(name: str, old, new, count: int, check=lambda a, b: a == b) -> None:
        t_old, r_old = _best(old, args.repeat)
        t_new, r_new = _best(new, args.repeat)
        if not check(r_old, r_new):
            raise SystemExit(f"{name}: the old and the new code disagree")
        figures[name] = {
            "old_s": round(t_old, 4),
            "new_s": round(t_new, 4),
            "old_per_s": round(count / t_old) if t_old else None,
            "new_per_s": round(count / t_new) if t_new else None,
            "speedup": round(t_old / t_new, 2) if t_new else None,
        }
        print(
            f"{name:<24} old {t_old:8.3f} s  new {t_new:8.3f} s  "
            f"({count / t_new:,.0f}/s)  old/new {t_old / t_new:5.2f}x"
        )

    with tempfile.TemporaryDirectory(prefix="vecap-bench-json-") as tmp:
        release = os.path.join(tmp, "r-00-of-01.json")
        array = os.path.join(tmp, "rows.json")
        _write_release(release, args.entries)
        _write_array(array, array_rows)
        figures["release_mb"] = round(os.path.getsize(release) / 1e6, 1)
        figures["array_mb"] = round(os.path.getsize(array) / 1e6, 1)
        print(f"release {figures['release_mb']} MB, array {figures['array_mb']} MB")

        def read_object(fn) -> tuple[int, str]:
            n, last = 0, ""
            for key, _value in fn(release):
                n, last = n + 1, key
            return n, last

        pair(
            "release_object_read",
            lambda: read_object(old_iter_json_object),
            lambda: read_object(ej.iter_json_object),
            args.entries,
        )

        def read_array(cls) -> tuple[int, Any]:
            n, last = 0, None
            with open(array, "rb") as f:
                for obj in cls(array, f):
                    n, last = n + 1, obj
            return n, last

        pair(
            "array_read",
            lambda: read_array(OldJsonArrayReader),
            lambda: read_array(JsonArrayReader),
            array_rows,
        )

        def same_rows_and_resumable(old, new) -> bool:
            # the new offsets may sit before the element's whitespace: both must resume right
            if old[0] != new[0] or not set(new[1]) <= set(old[1]):
                return False
            with open(array, "rb") as f:
                for row, off in list(new[1].items())[:50]:
                    f.seek(off)
                    got = next(iter(JsonArrayReader(array, f, inside=True, byte_start=off)))
                    if got["n"] != row:
                        return False
            figures["array_checkpoints"] = {"old": len(old[1]), "new": len(new[1])}
            return True

        pair(
            "array_plan_offsets",
            lambda: _array_with_offsets(OldJsonArrayReader, array, 1000, new=False),
            lambda: _array_with_offsets(JsonArrayReader, array, 1000, new=True),
            array_rows,
            check=same_rows_and_resumable,
        )

    buckets = _dedup_buckets(args.rows, args.dup_fraction, args.bucket_rows)
    plain = [b.select(["url", "caption"]) for b in buckets]
    pair(
        "dedup_first_occurrences",
        lambda: [old_first_occurrences(b).select(["url", "caption"]) for b in buckets],
        lambda: [ej._first_occurrences(b) for b in plain],
        args.rows,
        check=lambda a, b: all(x.equals(y) for x, y in zip(a, b, strict=True)),
    )
    kept = [ej._first_occurrences(b) for b in plain]
    figures["dedup_kept"] = sum(t.num_rows for t in kept)

    def stdlib_escape() -> list[pa.Array]:
        return [
            pa.array([encode_basestring(v) for v in t.column("url").to_pylist()], pa.string())
            for t in kept
        ]

    pair(
        "json_escape_urls_stdlib_vs_numpy",  # here "old" is the stdlib per row, "new" vecap's
        stdlib_escape,
        lambda: [ej._json_strings(t.column("url")) for t in kept],
        figures["dedup_kept"],
        check=lambda a, b: all(x.equals(y) for x, y in zip(a, b, strict=True)),
    )
    return figures


if __name__ == "__main__":
    result = main()
    print(json.dumps(result, separators=(",", ":")))
