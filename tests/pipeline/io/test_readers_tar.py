"""The fast tar member walker agrees with tarfile on every kind of archive, and fails like it."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from pipeline.io.tar_members import iter_tar_members


def _tar(entries: list[tuple[str, bytes | None]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar of regular files (bytes) and directories (None), in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _by_tarfile(data: bytes) -> list[tuple[str, int, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, m.offset, tar.extractfile(m).read()) for m in tar if m.isfile()]


def _by_walker(data: bytes) -> list[tuple[str, int, bytes]]:
    f = io.BufferedReader(io.BytesIO(data))
    return [(name, offset, read()) for name, offset, _size, read in iter_tar_members(f)]


LONG = "d" * 120 + "/0001.jpg"
CASES = {
    "plain": [
        ("0001.jpg", b"\xff\xd8" * 300),
        ("0001.txt", b"a cat"),
        ("0001.json", b"{}"),
        ("0002.jpg", b""),
    ],
    "directories": [("shard/", None), ("shard/0001.jpg", b"x" * 513), ("shard/0001.txt", b"y")],
    "pax long name midway": [("0001.jpg", b"x" * 10), (LONG, b"long"), ("0002.jpg", b"z" * 1024)],
    "non-ascii name": [("0001.jpg", b"x"), ("café/0002.jpg", b"y"), ("0003.jpg", b"z")],
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT], ids=["pax", "gnu"])
def test_walker_matches_tarfile(case: str, fmt: int) -> None:
    data = _tar(CASES[case], fmt)
    assert _by_walker(data) == _by_tarfile(data)
    assert [name for name, _, _ in _by_walker(data)] == [n for n, d in CASES[case] if d is not None]


def test_ustar_prefix_names() -> None:
    name = "p" * 90 + "/" + "q" * 60 + "/0001.jpg"  # too long for the name field: split by ustar
    data = _tar([(name, b"img"), ("0002.jpg", b"img2")], tarfile.USTAR_FORMAT)
    assert _by_walker(data) == _by_tarfile(data)
    assert _by_walker(data)[0][0] == name


def test_unread_members_are_skipped_on_a_forward_only_gzip_stream() -> None:
    data = gzip.compress(_tar(CASES["plain"]))
    f = io.BufferedReader(gzip.GzipFile(fileobj=io.BytesIO(data)))
    wanted = [(name, read()) for name, _, _, read in iter_tar_members(f) if name.endswith(".txt")]
    assert wanted == [("0001.txt", b"a cat")]


def test_truncated_and_foreign_files_raise_like_tarfile() -> None:
    data = _tar(CASES["plain"])
    truncated = io.BufferedReader(io.BytesIO(data[:700]))  # inside the first member's data
    with pytest.raises(tarfile.ReadError):
        list(iter_tar_members(truncated))
    foreign = io.BufferedReader(io.BytesIO(b"<html>" + b"not a tar " * 100))
    with pytest.raises(tarfile.ReadError):
        list(iter_tar_members(foreign))
    assert list(iter_tar_members(io.BufferedReader(io.BytesIO(b"")))) == []


def test_plain_archives_never_reach_tarfile(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.io.tar_members as tm

    handed_over: list[int] = []
    real = tm._tarfile_members

    def spy(f):
        handed_over.append(f.tell())
        return real(f)

    monkeypatch.setattr(tm, "_tarfile_members", spy)
    _by_walker(_tar(CASES["plain"]))
    _by_walker(_tar(CASES["directories"], tarfile.USTAR_FORMAT))
    assert handed_over == []
    _by_walker(_tar(CASES["pax long name midway"]))
    assert handed_over == [1024]  # at the pax header, after the first member (header + 1 block)
