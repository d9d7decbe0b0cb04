"""Streaming readers for text tables: jsonl, json (one array of objects), csv and tsv.

Same contract as :mod:`pipeline.io.table_formats`: ``scan_*`` counts rows (and records checkpoint
offsets), ``read_*`` yields exactly ``stop - start`` value tuples or
:class:`InvalidRow` s. Planning and reading split rows with the same code, so they always agree.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import IO, Any

import ijson

from pipeline.io.input_files import open_binary
from pipeline.io.json_stream import CHUNK, Feed, FeedError, parse_error, yajl2_c
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

_CHUNK = CHUNK


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


class JsonArrayReader:
    """The elements of a top-level JSON array, parsed by ijson's C backend as the file streams
    by, with the byte offset where an element starts when the caller asks for it (planning's
    checkpoints).

    A document that is not an array, or that breaks off or is malformed, raises ValueError
    naming the row and the byte reached: unlike a jsonl line, a broken array element leaves no
    way to find where the next one starts. ``inside=True`` starts at an element (a checkpoint
    offset, file row ``first_row``) instead of at the opening ``[``. ``want_start(row)`` names
    the first row at or after ``row`` whose start offset :meth:`offset` must know (-1: none);
    pieces of the file are then cut at commas just before that row (see
    :class:`~pipeline.io.json_stream.Feed`), so finding the offsets costs a few small reads per
    checkpoint, not a JSON parser of vecap's own.
    """

    def __init__(
        self,
        url: str,
        f: IO[bytes],
        *,
        inside: bool = False,
        byte_start: int = 0,
        first_row: int = 0,
        want_start: Callable[[int], int] | None = None,
    ):
        self._url = url
        self._inside = inside
        self._first_row = first_row
        self._want = want_start
        self._feed = Feed(
            f,
            start=byte_start,
            prefix=b"[" if inside else b"",  # a checkpoint's elements, as an array ijson can read
            skip_bom=not inside,
            plan=self._plan if want_start is not None else None,
            chunk=_CHUNK,
        )
        self._rows = 0  # elements yielded
        self._bracket_end = -1  # file offset just past the opening '[' (not inside)
        self._start: int | None = byte_start if inside else None  # of the element last yielded
        self._next_start: int | None = self._start

    def _plan(self, feed: Feed) -> None:
        """Shape the next piece: cut at the first comma while it may complete the element before
        a wanted row; before that, pieces small enough not to reach that element."""
        if self._bracket_end > feed.pos:
            feed.to_comma, feed.limit = False, self._bracket_end - feed.pos
            return
        row = self._first_row + self._rows + 1  # the element after the next one ...
        wanted = self._want(row) - self._first_row if self._want else -1
        left = wanted - 1 - self._rows  # ... whose start is known once this many more complete
        if left < 0:  # no offset wanted ahead
            feed.to_comma, feed.limit = False, _CHUNK
        elif left <= 1:
            feed.to_comma, feed.limit = True, _CHUNK
        else:
            seen = feed.pos - max(self._bracket_end, 0)
            per_element = seen // max(1, self._rows) or 1
            feed.to_comma, feed.limit = False, max(1, min(_CHUNK, (left - 1) * per_element // 2))

    def _malformed(self, what: str, at: int | None = None, *, row: bool = True) -> ValueError:
        at = self._feed.pos if at is None else at
        where = f"in row {self._first_row + self._rows} (by byte {at})" if row else f"at byte {at}"
        return ValueError(f"{self._url}: not a JSON array of objects: {what}, {where}")

    def offset(self) -> int | None:
        """The byte offset (in the decompressed stream) where the last yielded element starts,
        or None when the pieces did not end there (then the row gets no checkpoint)."""
        return self._start

    def __iter__(self) -> Iterator[Any]:
        feed = self._feed
        try:
            if not self._inside:
                first, at = feed.peek()
                if first != b"[":
                    got = repr(first.decode("latin-1")) if first else "end of file"
                    raise self._malformed(f"expected '[', got {got}", at)
                self._bracket_end = self._next_start = at + 1
            items = yajl2_c().items(feed, "item", use_float=True, buf_size=_CHUNK)
            reads = feed.reads
            for obj in items:
                self._start = self._next_start
                # exact only when the latest piece, cut at its first comma, completed this element
                first_of_piece, reads = feed.reads != reads, feed.reads
                self._next_start = feed.pos if first_of_piece and feed.precise else None
                feed.value_done()
                yield obj
                self._rows += 1
        except FeedError as e:
            raise self._malformed(e.what, e.at, row=not e.ahead) from None
        except UnicodeDecodeError as e:
            raise self._malformed(
                f"not valid UTF-8 ({e.reason}; a lone surrogate escape?)"
            ) from None
        except ijson.JSONError as e:
            raise self._malformed(parse_error(e)) from None


def _checkpoint_from(checkpoints: Checkpoints, row: int) -> int:
    """The first checkpoint row at or after ``row`` (-1: none)."""
    if not checkpoints.wanted or checkpoints.every is None:
        return -1
    behind = max(0, row - checkpoints.next)
    return checkpoints.next + -(-behind // checkpoints.every) * checkpoints.every


def scan_json(url: str, checkpoints: Checkpoints | None = None) -> FileScan:
    checkpoints = checkpoints or no_checkpoints()
    offsets: dict[int, int] = {}
    rows = 0
    columns: tuple[str, ...] | None = None
    with open_binary(url) as f:
        array = JsonArrayReader(url, f, want_start=lambda row: _checkpoint_from(checkpoints, row))
        for obj in array:
            if columns is None and obj.__class__ is dict:
                columns = tuple(obj)
            if rows == checkpoints.next:
                if (start := array.offset()) is not None:
                    offsets[rows] = start
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
        array = JsonArrayReader(url, f, inside=seek is not None, byte_start=byte_start, first_row=i)
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
