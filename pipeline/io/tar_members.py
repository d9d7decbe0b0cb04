"""The regular files of a tar archive, in order, without tarfile's per-header Python cost.

Planning counts every sample of every webdataset tar, so header parsing speed is planning
speed: ``tarfile`` spends ~50 us per header building a TarInfo. Tars written by webdataset and
img2dataset hold plain ustar headers only, which this module walks directly (one 512-byte read
and a checksum per member, data skipped by seeking). At the first header it does not handle
(pax or GNU long names, base-256 sizes, a bad checksum) it hands the rest of the archive to
``tarfile``, which then also raises the errors for broken archives.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Iterator
from typing import IO

_BLOCK = 512
_SKIPPED_TYPES = frozenset({b"1", b"2", b"3", b"4", b"5", b"6", b"7"})  # links, devices, dirs
_REGULAR_TYPES = frozenset({b"0", b"\0"})

TarMember = tuple[str, int, int, Callable[[], bytes]]


def _octal(field: bytes) -> int:
    digits = field.rstrip(b"\0 ").strip()
    return int(digits, 8) if digits else 0


def _plain_header(block: bytes) -> tuple[str, int, bytes] | None:
    """(name, data size, type flag) of a plain ustar/v7 header, or None for tarfile to handle."""
    if block[124] & 0x80 or block[148] & 0x80:  # base-256 numbers
        return None
    try:
        size = _octal(block[124:136])
        checksum = _octal(block[148:156])
    except ValueError:
        return None
    # the checksum counts its own field as spaces (and some writers sum signed bytes: let
    # tarfile judge anything that does not match the common unsigned sum)
    if checksum != sum(block[:148]) + 256 + sum(block[156:]):
        return None
    typeflag = block[156:157]
    if typeflag not in _REGULAR_TYPES and typeflag not in _SKIPPED_TYPES:
        return None  # pax ("x", "g"), GNU long names ("L", "K"), sparse files ...
    name = block[:100].split(b"\0", 1)[0]
    if block[257:263] == b"ustar\x00":  # POSIX ustar: long paths are split into a prefix
        prefix = block[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    text = name.decode("utf-8", "surrogateescape")  # as tarfile decodes names
    if typeflag == b"\0" and text.endswith("/"):
        typeflag = b"5"  # an old-style directory entry
    return text, size, typeflag


def iter_tar_members(f: IO[bytes]) -> Iterator[TarMember]:
    """(name, header offset, size, read) for each regular file, from the stream's position.

    ``read()`` returns the member's bytes; call it before advancing the iterator. Members whose
    bytes are not read are skipped by seeking, so a gzipped stream is never rewound.
    """
    offset = f.tell()
    start = offset
    while True:
        if offset > start:
            # the previous member's data must be complete (tarfile checks the same way)
            f.seek(offset - 1)
            if not f.read(1):
                raise tarfile.ReadError("unexpected end of data")
        f.seek(offset)
        block = f.read(_BLOCK)
        if not block or block == b"\0" * _BLOCK:
            return  # end of the archive
        if len(block) < _BLOCK:
            raise tarfile.ReadError("unexpected end of data")
        header = _plain_header(block)
        if header is None:
            break
        name, size, typeflag = header
        data_offset = offset + _BLOCK
        if typeflag in _REGULAR_TYPES:
            yield name, offset, size, _reader(f, data_offset, size)
        offset = data_offset + -(-size // _BLOCK) * _BLOCK
    f.seek(offset)
    yield from _tarfile_members(f)


def _reader(f: IO[bytes], offset: int, size: int) -> Callable[[], bytes]:
    def read() -> bytes:
        f.seek(offset)
        data = f.read(size)
        if len(data) != size:
            raise tarfile.ReadError("unexpected end of data")
        return data

    return read


def _tarfile_members(f: IO[bytes]) -> Iterator[TarMember]:
    """The same, through tarfile, from the stream's position (TarInfo offsets are absolute)."""
    # closing a TarFile given a fileobj leaves the fileobj open
    with tarfile.open(fileobj=f, mode="r:") as tf:
        while (member := tf.next()) is not None:
            tf.members.clear()  # tarfile keeps every header it read; a shard has thousands
            if member.isfile():
                yield member.name, member.offset, member.size, _tarfile_reader(tf, member)


def _tarfile_reader(tf: tarfile.TarFile, member: tarfile.TarInfo) -> Callable[[], bytes]:
    def read() -> bytes:
        handle = tf.extractfile(member)
        assert handle is not None  # a regular file always has a handle
        return handle.read()

    return read


__all__ = ["TarMember", "iter_tar_members"]
