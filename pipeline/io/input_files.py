"""Finding input files (fsspec URLs, globs, directories) and telling their format and compression.

Everything goes through fsspec, so local paths, ``gs://``, ``s3://`` and ``memory://`` behave the
same. The expanded file list is sorted per input and de-duplicated, because shard ids and uids
are derived from the position of each row in that list: same input, same list, same uids.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import infer_compression

from pipeline.errors import InputError, InputNotFoundError

# URL tables: one row per line/record, a url and a caption column.
TABLE_FORMATS: tuple[str, ...] = ("parquet", "jsonl", "json", "csv", "tsv")
# Inputs that already carry image bytes: img2dataset's parquet output and webdataset tars.
IMAGE_FORMATS: tuple[str, ...] = ("img2dataset", "webdataset")
INPUT_FORMATS: tuple[str, ...] = TABLE_FORMATS + IMAGE_FORMATS

_EXTENSION_FORMATS: dict[str, str] = {
    "parquet": "parquet",
    "jsonl": "jsonl",
    "ndjson": "jsonl",
    "json": "json",
    "csv": "csv",
    "tsv": "tsv",
    "tar": "webdataset",
    "tgz": "webdataset",
}
# The file extensions each explicit --input-format picks out of a directory.
_FORMAT_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "parquet": ("parquet",),
    "img2dataset": ("parquet",),
    "jsonl": ("jsonl", "ndjson"),
    "json": ("json",),
    "csv": ("csv",),
    "tsv": ("tsv",),
    "webdataset": ("tar", "tgz"),
}

_READ_BUFFER = 1 << 20


def _has_magic(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def compression_of(path: str) -> str | None:
    """fsspec's compression name for a path from its extension (``gzip`` for ``.gz``, ``.tgz``)."""
    if path.lower().endswith(".tgz"):
        return "gzip"
    return infer_compression(path)


def base_extension(path: str) -> str:
    """The extension that names the format, below any compression suffix: ``a.csv.gz`` -> ``csv``."""
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    parts = name.split(".")
    if len(parts) < 2:
        return ""
    if parts[-1] == "tgz":
        return "tgz"
    if compression_of(name) is not None and len(parts) >= 3:
        return parts[-2]
    return parts[-1]


def format_from_extension(path: str) -> str | None:
    """The input format an extension implies, or None when the extension is not one we read."""
    return _EXTENSION_FORMATS.get(base_extension(path))


def _to_url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    # Keep local paths plain (readable in errors and manifests); others keep their protocol.
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def _directory_files(
    fs: fsspec.AbstractFileSystem, directory: str, input_format: str | None
) -> list[str]:
    """The readable files directly inside a directory (not recursive, like img2dataset output)."""
    # detail=True: one listing call, not one metadata request per file on object stores
    names = sorted(e["name"] for e in fs.ls(directory, detail=True) if e.get("type") == "file")
    if input_format is not None:
        wanted = _FORMAT_EXTENSIONS[input_format]
        return [p for p in names if base_extension(p) in wanted]
    found = [p for p in names if format_from_extension(p) is not None]
    formats = sorted({_EXTENSION_FORMATS[base_extension(p)] for p in found})
    if len(formats) > 1:
        # img2dataset's webdataset output holds .tar shards next to .parquet metadata and
        # _stats.json files: guessing would read the wrong ones.
        raise InputError(
            f"input directory {directory!r} holds files of several formats ({', '.join(formats)}); "
            "pass a glob such as 'DIR/*.tar' or set the input format"
        )
    return found


def expand_inputs(inputs: Sequence[str], input_format: str | None = None) -> list[str]:
    """Every input file, as fsspec URLs: globs expanded and sorted, directories listed, no duplicates.

    The order is the order of ``inputs``, then sorted within each glob or directory, so the same
    inputs give the same list every run. An input that matches nothing is an error: a typo in a
    glob must not silently shrink a job.
    """
    files: list[str] = []
    seen: set[str] = set()
    for spec in inputs:
        try:
            fs, path = fsspec.core.url_to_fs(spec)
        except (ValueError, ImportError) as e:  # an unknown protocol, or its package is missing
            raise InputError(f"input {spec!r}: {e}") from e
        try:
            if _has_magic(path) and not fs.exists(path):  # a real name with [ ] is not a glob
                found = fs.glob(path, detail=True)
                matches = sorted(p for p, info in found.items() if info.get("type") == "file")
            elif fs.isdir(path):
                matches = _directory_files(fs, path, input_format)
            elif fs.exists(path):
                matches = [path]
            else:
                raise InputNotFoundError(f"input {spec!r} does not exist; check the input path")
        except PermissionError as e:
            raise InputError(f"input {spec!r} cannot be read: permission denied") from e
        if not matches:
            what = "the glob" if _has_magic(path) else "the directory"
            raise InputNotFoundError(
                f"input {spec!r} matches no files; check {what} (and the input format)"
            )
        for p in matches:
            url = _to_url(fs, p)
            if url not in seen:
                seen.add(url)
                files.append(url)
    return files


@contextmanager
def open_binary(url: str, *, buffered: bool = True) -> Iterator[IO[bytes]]:
    """Open a file for reading through fsspec, decompressing by extension.

    The stream is wrapped in a large read buffer because remote fsspec files and line-by-line
    parsing make many small reads.
    """
    with fsspec.open(url, "rb", compression=compression_of(url)) as raw:
        if buffered:
            yield io.BufferedReader(raw, _READ_BUFFER)  # type: ignore[arg-type]
        else:
            yield raw


__all__ = [
    "IMAGE_FORMATS",
    "INPUT_FORMATS",
    "TABLE_FORMATS",
    "base_extension",
    "compression_of",
    "expand_inputs",
    "format_from_extension",
    "open_binary",
]
