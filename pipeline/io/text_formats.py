"""Streaming readers for text tables: jsonl, json (one array of objects), csv and tsv.

Same contract as :mod:`pipeline.io.table_formats`: ``scan_*`` counts rows (and records checkpoint
offsets), ``read_*`` yields exactly ``stop - start`` value tuples or
:class:`InvalidRow` s. Planning and reading split rows with the same code, so they always agree.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterator, Sequence
from itertools import islice
from typing import IO, Any

from pipeline.io.input_files import open_binary
from pipeline.io.table_formats import (
    MISSING,
    Checkpoints,
    FileScan,
    InvalidRow,
    Row,
    Seek,
    check_columns,
    file_changed_error,
    no_checkpoints,
    snippet,
    tuple_getter,
)

_CHUNK = 4 << 20
# A single JSON-array element bigger than this is treated as malformed instead of buffered.
_MAX_JSON_ELEMENT_CHARS = 64 << 20
_JSON_WS = re.compile(r"[ \t\r\n]*").match


# --------------------------------------------------------------------------- lines


def _decode_line(line: bytes) -> str:
    # surrogateescape never fails, so planning and reading split records identically; bad
    # bytes survive as lone surrogates and are caught in the values a row keeps
    return line.decode("utf-8", "surrogateescape")


class _TrackedLines:
    """Decoded lines for ``csv.reader`` that remember where each record starts and ends.

    ``csv.reader`` pulls exactly the lines one record needs and keeps no state between records,
    so after each record ``offset`` is where the next one starts, and the stream may be moved.
    """

    __slots__ = ("_f", "offset", "lines", "first_line", "first_end")

    def __init__(self, f: IO[bytes], offset: int = 0) -> None:
        self._f = f
        self.offset = offset
        self.lines = 0  # lines the current record has taken
        self.first_line = ""
        self.first_end = offset

    def __iter__(self) -> _TrackedLines:
        return self

    def __next__(self) -> str:
        line = self._f.readline()
        if not line:
            raise StopIteration
        self.offset += len(line)
        self.lines += 1
        text = _decode_line(line)
        if self.lines == 1:
            self.first_line = text
            self.first_end = self.offset
        return text

    def seek(self, offset: int) -> None:
        self._f.seek(offset)
        self.offset = offset


def _valid_utf8(values: tuple[str, ...]) -> bool:
    """False when a decoded value holds bytes that were not UTF-8 (lone surrogates)."""
    text = "".join(values)
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _count_lines(f: IO[bytes], base: int, checkpoints: Checkpoints) -> tuple[int, dict[int, int]]:
    """Count lines from the current position (byte ``base``), in big chunks.

    A final line without a newline counts; the newline at the end of the file does not start a
    new row. Offsets are recorded for the checkpoint rows that exist.
    """
    offsets: dict[int, int] = {}
    newlines = 0  # newlines seen before the current chunk
    pos = base
    last = b"\n"
    if checkpoints.wanted and checkpoints.next == 0:
        offsets[0] = base
        checkpoints.advance()
    while chunk := f.read(_CHUNK):
        n = chunk.count(b"\n")
        cursor, seen = -1, 0  # position of the `seen`-th newline of this chunk found so far
        # newline k (counting from 0 over the file) ends row k; row k+1 starts right after it
        while checkpoints.wanted and checkpoints.next - 1 < newlines + n:
            target = checkpoints.next - 1 - newlines
            while seen <= target:
                cursor = chunk.index(b"\n", cursor + 1)
                seen += 1
            offsets[checkpoints.next] = pos + cursor + 1
            checkpoints.advance()
        newlines += n
        pos += len(chunk)
        last = chunk[-1:]
    rows = newlines + (1 if pos > base and last != b"\n" else 0)
    return rows, {r: o for r, o in offsets.items() if r < rows}


def _position(url: str, f: IO[bytes], start: int, stop: int, seek: Seek | None) -> None:
    """Move a line-based stream (past its header) to file row ``start``: jump to ``seek``, then
    skip the rows between it and ``start``."""
    first = 0
    if seek is not None:
        offset, first = seek
        f.seek(offset)
    if (skipped := _skip_lines(f, start - first)) < start - first:
        raise file_changed_error(url, stop, first + skipped)


def _skip_lines(f: IO[bytes], count: int) -> int:
    skipped = 0
    while skipped < count and f.readline():
        skipped += 1
    return skipped


def _values_from_object(obj: Any, columns: Sequence[str]) -> Row:
    if obj.__class__ is not dict:
        return InvalidRow(f"row is a JSON {type(obj).__name__}, not an object")
    get = obj.get
    return tuple([get(c, MISSING) for c in columns])


# jsonl ---------------------------------------------------------------------------


_raw_decode = json.JSONDecoder().raw_decode


def _jsonl_row(line: bytes, columns: Sequence[str]) -> Row:
    # raw_decode skips json.loads' encoding sniffing and wrappers: a third faster per line
    try:
        text = line.decode("utf-8")
        obj, end = _raw_decode(text)
        if end != len(text) and not text[end:].isspace():
            raise ValueError(f"extra data at column {end + 1}")
    except (ValueError, UnicodeDecodeError):
        # the slow path names the problem exactly (and accepts leading whitespace or UTF-16)
        try:
            obj = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            if not line.strip():
                return InvalidRow("empty line")
            return InvalidRow(f"line is not valid JSON ({e}): {snippet(line)}")
    return _values_from_object(obj, columns)


def scan_jsonl(url: str, checkpoints: Checkpoints | None = None) -> FileScan:
    checkpoints = checkpoints or no_checkpoints()
    with open_binary(url) as f:
        columns: tuple[str, ...] = ()
        # The columns are those of the first line that is a JSON object.
        while line := f.readline():
            try:
                obj = json.loads(line) if line.strip() else None
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(obj, dict):
                columns = tuple(obj)
                break
        f.seek(0)
        rows, offsets = _count_lines(f, 0, checkpoints)
    return FileScan(rows=rows, columns=columns, offsets=offsets)


def read_jsonl(
    url: str, start: int, stop: int, columns: Sequence[str], seek: Seek | None = None
) -> Iterator[Row]:
    with open_binary(url) as f:
        _position(url, f, start, stop, seek)
        count = 0
        for line in islice(f, stop - start):
            yield _jsonl_row(line, columns)
            count += 1
        if count < stop - start:
            raise file_changed_error(url, stop, start + count)


# tsv -----------------------------------------------------------------------------
# TSV is read as IANA text/tab-separated-values: one row per line, fields split on tabs, no
# quoting. Web alt-texts are full of quote characters (CC3M's TSV is), and CSV-style quoting
# would silently glue lines together.


def _tsv_header(url: str, f: IO[bytes]) -> list[str]:
    header = f.readline()
    if not header:
        return []
    try:
        text = header.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{url}: header line is not valid UTF-8: {e}") from e
    return text.rstrip("\r\n").split("\t")


def scan_tsv(
    url: str, checkpoints: Checkpoints | None = None, names: Sequence[str] = ()
) -> FileScan:
    checkpoints = checkpoints or no_checkpoints()
    with open_binary(url) as f:
        header = list(names) or _tsv_header(url, f)
        rows, offsets = _count_lines(f, f.tell(), checkpoints)
    return FileScan(rows=rows, columns=tuple(header), offsets=offsets)


def _tsv_invalid(line: bytes, width: int) -> InvalidRow:
    try:
        text = line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        return InvalidRow(f"line is not valid UTF-8: {e}")
    if not text.strip():
        return InvalidRow("empty line")
    fields = text.count("\t") + 1
    return InvalidRow(
        f"line has {fields} tab-separated fields, the header has {width}: {snippet(text)}"
    )


def read_tsv(
    url: str,
    start: int,
    stop: int,
    columns: Sequence[str],
    seek: Seek | None = None,
    names: Sequence[str] = (),
) -> Iterator[Row]:
    with open_binary(url) as f:
        header = list(names) or _tsv_header(url, f)
        check_columns(url, columns, header)
        pick = tuple_getter([header.index(c) for c in columns])
        width = len(header)
        _position(url, f, start, stop, seek)
        count = 0
        for line in islice(f, stop - start):
            count += 1
            try:
                fields = line.decode("utf-8").rstrip("\r\n").split("\t")
            except UnicodeDecodeError:
                fields = ()
            if len(fields) == width and (width > 1 or fields[0].strip()):
                yield pick(fields)
            else:
                yield _tsv_invalid(line, width)
        if count < stop - start:
            raise file_changed_error(url, stop, start + count)


# csv -----------------------------------------------------------------------------


# A quoted field may hold newlines, so one CSV record can take several lines. A record longer
# than this is taken for a quote that never closed, not for an alt-text.
_MAX_RECORD_LINES = 64


def _csv_header(url: str, f: IO[bytes]) -> tuple[list[str], int]:
    """The header fields and the byte offset where the first record starts."""
    lines = _TrackedLines(f)
    try:
        header = next(csv.reader(lines, strict=True))
    except StopIteration:
        return [], lines.offset
    except csv.Error as e:
        raise ValueError(f"{url}: cannot parse the CSV header: {e}") from e
    if not _valid_utf8(tuple(header)):
        raise ValueError(f"{url}: the CSV header is not valid UTF-8")
    if header:
        header[0] = header[0].lstrip("\ufeff")
    return header, lines.offset


def _csv_records(f: IO[bytes], offset: int, width: int) -> Iterator[tuple[int, list[str] | str]]:
    """(start offset, fields or error text) for each record from byte ``offset`` on.

    Strict parsing, plus one recovery rule: a record that spans several lines but does not
    parse, has the wrong field count, or runs past ``_MAX_RECORD_LINES`` is a quote that never
    closed. Only its first line is reported bad, and parsing resumes on the next line, so one
    stray quote cannot swallow the rows after it. Planning and reading both go through here,
    so they agree on where every record starts.
    """
    lines = _TrackedLines(f, offset)
    lines.seek(offset)
    reader = csv.reader(lines, strict=True)
    while True:
        start = lines.offset
        lines.lines = 0
        try:
            record: list[str] | str = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            why = str(e)
            if why.startswith("new-line character seen in unquoted field"):
                why = "a bare carriage return (\\r) inside an unquoted field"
            record = f"cannot parse CSV record ({why}): {snippet(lines.first_line)}"
        if lines.lines > 1 and (
            record.__class__ is str or len(record) != width or lines.lines > _MAX_RECORD_LINES
        ):
            yield start, f"unterminated quoted field: {snippet(lines.first_line)}"
            lines.seek(lines.first_end)
            continue
        yield start, record


def scan_csv(
    url: str, checkpoints: Checkpoints | None = None, names: Sequence[str] = ()
) -> FileScan:
    """Counts CSV records (not lines: a quoted field may hold newlines) in one streaming pass."""
    checkpoints = checkpoints or no_checkpoints()
    offsets: dict[int, int] = {}
    rows = 0
    with open_binary(url) as f:
        header, first = (list(names), 0) if names else _csv_header(url, f)
        for start, _record in _csv_records(f, first, len(header)):
            if rows == checkpoints.next:
                offsets[rows] = start
                checkpoints.advance()
            rows += 1
    return FileScan(rows=rows, columns=tuple(header), offsets=offsets)


def read_csv(
    url: str,
    start: int,
    stop: int,
    columns: Sequence[str],
    seek: Seek | None = None,
    names: Sequence[str] = (),
) -> Iterator[Row]:
    """``names``: the columns of a file without a header line (all its lines are rows)."""
    with open_binary(url) as f:
        header, first = (list(names), 0) if names else _csv_header(url, f)
        check_columns(url, columns, header)
        pick = tuple_getter([header.index(c) for c in columns])
        width = len(header)
        offset, row = (first, 0) if seek is None else seek
        records = islice(_csv_records(f, offset, width), start - row, None)
        count = 0
        for _offset, record in islice(records, stop - start):
            count += 1
            if record.__class__ is str:
                yield InvalidRow(record)  # type: ignore[arg-type]
            elif len(record) == width:
                values = pick(record)
                yield values if _valid_utf8(values) else InvalidRow("record is not valid UTF-8")
            elif not record:
                yield InvalidRow("empty line")
            else:
                yield InvalidRow(
                    f"record has {len(record)} fields, the header has {width}: "
                    + snippet(",".join(record))
                )
        if count < stop - start:
            raise file_changed_error(url, stop, start + count)


# json (one array of objects) --------------------------------------------------------


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class JsonArrayReader:
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


def scan_json(url: str, checkpoints: Checkpoints | None = None) -> FileScan:
    checkpoints = checkpoints or no_checkpoints()
    offsets: dict[int, int] = {}
    rows = 0
    columns: tuple[str, ...] | None = None
    with open_binary(url) as f:
        array = JsonArrayReader(url, f)
        for obj in array:
            if columns is None and obj.__class__ is dict:
                columns = tuple(obj)
            if rows == checkpoints.next:
                offsets[rows] = array.offset()
                checkpoints.advance()
            rows += 1
    return FileScan(rows=rows, columns=columns or (), offsets=offsets)


def read_json(
    url: str, start: int, stop: int, columns: Sequence[str], seek: Seek | None = None
) -> Iterator[Row]:
    with open_binary(url) as f:
        i, byte_start = 0, 0
        if seek is not None:
            byte_start, i = seek
            f.seek(byte_start)
        array = JsonArrayReader(url, f, inside=seek is not None, byte_start=byte_start)
        for obj in array:
            if i >= stop:
                return
            if i >= start:
                yield _values_from_object(obj, columns)
            i += 1
    if i < stop:
        raise file_changed_error(url, stop, i)


__all__ = [
    "JsonArrayReader",
    "read_csv",
    "read_json",
    "read_jsonl",
    "read_tsv",
    "scan_csv",
    "scan_json",
    "scan_jsonl",
    "scan_tsv",
]
