"""Streaming JSON through ijson's C backend (yajl2): what vecap's two big-JSON readers share.

ijson parses; this module adds only what vecap needs around it: the file fed to ijson in pieces
whose ends the caller chooses (so a reader can tell the exact byte where an array element starts),
a cap on the bytes one value may take (an unterminated string must not pull the rest of a huge
file into memory), a guard against yajl's handling of lone UTF-16 surrogate escapes (it turns
``"\\ud800"`` into ``"?"`` and ``"\\ud800\\u0041"`` into U+10041: silent corruption), and yajl's
multi-line error messages made one line.
"""

from __future__ import annotations

import ast
import codecs
import contextlib
import re
from collections.abc import Callable
from types import ModuleType
from typing import IO

import ijson

CHUNK = 4 << 20  # bytes read from the file at a time
# one value (an array element, a key or a caption) bigger than this is malformed, not buffered
MAX_VALUE_BYTES = 64 << 20


def yajl2_c() -> ModuleType:
    """ijson's C backend; the pure-Python fallback is 20-50x slower, so its absence is an error."""
    try:
        return ijson.get_backend("yajl2_c")
    except ImportError as e:
        raise ImportError(
            "ijson's C backend (yajl2_c) is not available; reinstall ijson from a wheel "
            "(pip install --force-reinstall ijson)"
        ) from e


# A lone high surrogate escape: one not followed by a low one. The escape is real when an even
# number of backslashes (maybe none) precedes its backslash. (A lone low one makes ijson raise
# UnicodeDecodeError by itself.)
_LONE_HIGH_SURROGATE = re.compile(
    rb"(?<!\\)(?:\\\\)*(\\u[dD][89abAB][0-9a-fA-F]{2})(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)
_PAIR_BYTES = 12  # a high escape this close to a chunk's end may pair with the next chunk
_CARRY = 16  # bytes scanned again with the next chunk (more to take a whole backslash run)


def _lone_surrogate(data: bytes, final: bool) -> int | None:
    """Index in ``data`` of a lone high surrogate escape (those cut by its end wait, unless final)."""
    if b"\\u" not in data:
        return None
    for m in _LONE_HIGH_SURROGATE.finditer(data):
        if final or m.start(1) + _PAIR_BYTES <= len(data):
            return m.start(1)
    return None


class FeedError(ValueError):
    """Raised from inside the feed's ``read`` (ijson passes it through): ``what`` at byte ``at``."""

    def __init__(self, what: str, at: int, *, ahead: bool = False) -> None:
        super().__init__(f"{what} at byte {at}")
        self.what = what
        self.at = at
        self.ahead = ahead  # found in a chunk read ahead of the parser, not in the current value


class Feed:
    """The binary file ijson reads, served in pieces the caller shapes.

    ``pos`` is the file offset just past the last byte served; ``reads`` counts pieces served.
    With ``to_comma`` set, a piece ends at its first comma: then a piece completes at most one
    element of an array (elements are separated by commas), so after ijson yields an element
    that the latest such piece completed, ``pos`` is exactly where the next element's text
    begins. ``limit`` caps the next piece's size. ``value_done()`` resets the per-value byte cap.
    """

    def __init__(
        self,
        f: IO[bytes],
        *,
        start: int = 0,
        prefix: bytes = b"",
        skip_bom: bool = False,
        plan: Callable[[Feed], None] | None = None,
        chunk: int = CHUNK,
    ) -> None:
        self._f = f
        self._chunk = chunk
        self._buf = b""
        self._i = 0
        self._eof = False
        self._prefix = prefix  # served first, not part of the file (pos does not count it)
        self._carry = b""
        self._scanned_to = start  # file offset up to which the surrogate guard has looked
        self._since_value = 0
        self._plan = plan
        self.pos = start
        self.reads = 0
        self.to_comma = False
        self.limit = chunk
        self.precise = False  # the latest piece was cut at its first comma
        self._skip_bom = skip_bom

    def _fill(self) -> bool:
        """Append a chunk of the file to the buffer; False at its end."""
        if self._eof:
            return False
        chunk = self._f.read(self._chunk)
        if not chunk:
            self._eof = True
        base = self._scanned_to - len(self._carry)
        window = self._carry + chunk
        at = _lone_surrogate(window, final=not chunk)
        if at is not None:
            raise FeedError(
                "a lone UTF-16 surrogate escape (not a character)", base + at, ahead=True
            )
        keep = max(0, len(window) - _CARRY)
        while keep > 0 and window[keep - 1] == 0x5C:  # never start inside a run of backslashes
            keep -= 1
        self._carry = window[keep:]
        self._scanned_to += len(chunk)
        self._buf = self._buf[self._i :] + chunk if self._i < len(self._buf) else chunk
        self._i = 0
        return bool(chunk)

    def peek(self) -> tuple[bytes, int]:
        """The next non-whitespace byte (b"" at the end of the file) and its offset; not consumed.
        Skips a UTF-8 byte-order mark at the start when asked to."""
        if self._skip_bom:
            self._skip_bom = False
            self._fill()
            if self._buf.startswith(codecs.BOM_UTF8):
                self._i = len(codecs.BOM_UTF8)
                self.pos += self._i
        while True:
            rest = self._buf[self._i :]
            stripped = rest.lstrip(b" \t\r\n")
            if stripped:
                return stripped[:1], self.pos + len(rest) - len(stripped)
            self._i = len(self._buf)
            self.pos += len(rest)
            if not self._fill():
                return b"", self.pos

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson's probe for bytes or text
            return b""
        if self._prefix:
            piece, self._prefix = self._prefix, b""
            return piece
        if self._plan is not None:
            self._plan(self)
        limit = min(self.limit, size) if size > 0 else self.limit
        while self._i >= len(self._buf) or (
            self.to_comma and self._buf.find(b",", self._i) < 0 and len(self._buf) < self._chunk * 2
        ):
            if not self._fill():
                break
        end = min(len(self._buf), self._i + max(1, limit))
        if self.to_comma:
            comma = self._buf.find(b",", self._i, end)
            if comma >= 0:
                end = comma + 1
        piece = self._buf if (self._i, end) == (0, len(self._buf)) else self._buf[self._i : end]
        self.precise = self.to_comma and piece.endswith(b",")
        self._i = end
        self.pos += len(piece)
        self.reads += 1
        self._since_value += len(piece)
        if self._since_value > MAX_VALUE_BYTES + self._chunk:
            raise FeedError(
                f"a value longer than {MAX_VALUE_BYTES >> 20} MiB (an unterminated string?)",
                self.pos,
            )
        return piece

    def value_done(self) -> None:
        self._since_value = 0


# yajl's phrasing, where it is obscure, in plain words
_PLAIN = {
    "lexical error: inside a string, '\\' occurs before a character which it may not":
        "Invalid \\escape in a string",
    "lexical error: invalid bytes in UTF8 string": "not valid UTF-8",
    "lexical error: invalid char in json text": "invalid character",
    "lexical error: invalid character inside string": "a control character inside a string",
}  # fmt: skip


def parse_error(e: Exception) -> str:
    """yajl's error as one line: ``parse error: trailing garbage near '{"a": 1} x'``."""
    text = str(e)
    if text.startswith(("b'", 'b"')):  # yajl2_c reports invalid UTF-8 as the repr of bytes
        with contextlib.suppress(ValueError, SyntaxError):
            text = ast.literal_eval(text).decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "invalid JSON"
    what = lines[0].rstrip(".")
    what = _PLAIN.get(what, what)
    context = lines[1] if len(lines) > 2 else ""
    return f"{what} near {context!r}" if context else what


JSON_ERRORS = (ijson.JSONError, UnicodeDecodeError)

__all__ = ["CHUNK", "JSON_ERRORS", "MAX_VALUE_BYTES", "Feed", "FeedError", "parse_error", "yajl2_c"]
