"""Inputs that already carry image bytes: img2dataset's parquet output and webdataset tar shards.

Their rows skip the download stage: each record leaves the reader with ``jpg`` bytes, the image
format and size read from the bytes' header, a sha256, and status ``ok``; bytes Pillow cannot
read become ``decode_error``, and rows img2dataset itself failed to download keep its error.

img2dataset's layouts (``img2dataset/writer.py``):

- ``output_format=parquet``: ``00000.parquet`` with the input columns (``url``, ``caption``, any
  ``save_additional_columns``), ``key``, ``status`` (``success`` | ``failed_to_download`` |
  ``failed_to_resize``), ``error_message``, ``width``, ``height``, ``original_width``,
  ``original_height``, optionally ``exif`` and a hash column (``sha256`` by default), and the
  image bytes in a binary column named after the encode format (``jpg``, ``png`` or ``webp``).
- ``output_format=webdataset``: ``00000.tar`` holding ``KEY.jpg``, ``KEY.txt`` (the caption) and
  ``KEY.json`` (the same metadata as above) per successful sample, next to a ``00000.parquet``
  of metadata only (no bytes; read the tars).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from PIL import Image

from pipeline.errors import InputError
from pipeline.io.input_files import open_binary
from pipeline.io.table_formats import (
    MISSING,
    Checkpoints,
    FileScan,
    InvalidRow,
    Seek,
    check_columns,
    iter_parquet_batches,
    scan_parquet,
)
from pipeline.io.tar_members import iter_tar_members
from schemas import Record, Status

# img2dataset names the bytes column after its encode format.
IMAGE_COLUMNS: tuple[str, ...] = ("jpg", "png", "webp", "jpeg")
# Metadata columns img2dataset writes that vecap uses when present.
META_COLUMNS: tuple[str, ...] = (
    "status",
    "error_message",
    "original_width",
    "original_height",
    "sha256",
)
_IMAGE_EXTENSIONS: frozenset[str] = frozenset({"jpg", "jpeg", "png", "webp"})
# Pillow format name -> Record.image_format (img2dataset's and the download stage's names)
_FORMAT_NAMES: dict[str, str] = {"JPEG": "jpg", "WEBP": "webp", "PNG": "png"}
# rows per parquet batch: image bytes make rows big (tens of KB each)
_IMAGE_BATCH_ROWS = 256
# webdataset: key = path up to the first dot of the file name, extension = the rest
_KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ImageRow:
    """A row with (maybe) image bytes: the user's columns in order, the bytes, img2dataset's metadata."""

    values: tuple[Any, ...]
    data: bytes | None
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- img2dataset parquet


def image_column(columns: Sequence[str], binary_columns: Sequence[str]) -> str | None:
    """The column holding image bytes in an img2dataset parquet file, or None."""
    for name in IMAGE_COLUMNS:
        if name in columns and name in binary_columns:
            return name
    return None


def check_img2dataset_scan(url: str, scan: FileScan) -> str:
    """The image column of a scanned parquet file meant as img2dataset output, or a clear error."""
    col = image_column(scan.columns, scan.binary_columns)
    if col is None:
        raise InputError(
            f"{url}: not img2dataset parquet output: no binary image column "
            f"({', '.join(IMAGE_COLUMNS)}); columns found: {', '.join(scan.columns) or '(none)'}. "
            "(img2dataset's webdataset output keeps bytes in the .tar files, not the parquet.)"
        )
    return col


def read_img2dataset(
    url: str, start: int, stop: int, columns: Sequence[str], seek: Seek | None = None
) -> Iterator[ImageRow]:
    del seek  # parquet seeks by row group
    scan = scan_parquet(url)
    col = check_img2dataset_scan(url, scan)
    check_columns(url, columns, scan.columns)
    meta_cols = [c for c in META_COLUMNS if c in scan.columns and c not in columns]
    wanted = list(dict.fromkeys([*columns, *meta_cols, col]))
    for batch in iter_parquet_batches(url, start, stop, wanted, batch_rows=_IMAGE_BATCH_ROWS):
        user = [batch[c] for c in columns]
        metas = {c: batch[c] for c in META_COLUMNS if c in batch}
        images = batch[col]
        for i, data in enumerate(images):
            yield ImageRow(
                values=tuple(v[i] for v in user),
                data=data,
                meta={k: v[i] for k, v in metas.items()},
            )


# --------------------------------------------------------------------------- webdataset tars


def split_key(name: str) -> tuple[str, str] | None:
    """webdataset's (key, extension) of a tar member name, or None for a name without one."""
    m = _KEY_EXT.match(name)
    return (m.group(1), m.group(2).lower()) if m else None


def _iter_tar_samples(
    f: IO[bytes], load_from: int = 0
) -> Iterator[tuple[int, str, int, dict[str, bytes | None]]]:
    """(index, key, header offset of its first member, {extension: bytes}) per sample, in order.

    Members of one sample are consecutive, as webdataset writes them. Bytes are read for samples
    from ``load_from`` on, while the stream is positioned at them (no backward seeks: a gzipped
    tar would have to decompress from the start again); earlier members are only skipped.
    """
    index = -1
    key: str | None = None
    offset = f.tell()
    members: dict[str, bytes | None] = {}
    for name, member_offset, _size, read in iter_tar_members(f):
        parts = split_key(name)
        if parts is None:
            continue
        k, ext = parts
        if k != key or ext in members:  # as webdataset: a repeated extension starts a sample
            if key is not None:
                yield index, key, offset, members
            index += 1
            key, offset, members = k, member_offset, {}
        members[ext] = read() if index >= load_from else None
    if key is not None:
        yield index, key, offset, members


def scan_webdataset(url: str, checkpoints: Checkpoints | None = None) -> FileScan:
    """Samples in a tar (consecutive members sharing a key), reading headers only."""
    checkpoints = checkpoints or Checkpoints(0, None)
    offsets: dict[int, int] = {}
    rows = 0
    with open_binary(url) as f:
        try:
            for index, _key, offset, _members in _iter_tar_samples(f, load_from=1 << 62):
                if index == checkpoints.next:
                    offsets[index] = offset
                    checkpoints.advance()
                rows = index + 1
        except tarfile.TarError as e:
            raise ValueError(f"{url}: not a readable tar file: {e}") from e
    return FileScan(rows=rows, columns=(), offsets=offsets)


def _webdataset_row(
    key: str, members: dict[str, bytes | None], columns: Sequence[str], caption_column: str | None
) -> ImageRow | InvalidRow:
    meta: dict[str, Any] = {}
    raw_meta = members.get("json")
    if raw_meta is not None:
        try:
            meta = json.loads(raw_meta)
        except ValueError as e:
            return InvalidRow(f"webdataset sample {key!r}: {key}.json is not valid JSON: {e}")
        if not isinstance(meta, dict):
            return InvalidRow(f"webdataset sample {key!r}: {key}.json is not a JSON object")
    image_ext = next((e for e in members if e in _IMAGE_EXTENSIONS), None)
    if image_ext is None:
        return InvalidRow(
            f"webdataset sample {key!r} has no image member (found: {', '.join(sorted(members))})"
        )
    text = members.get("txt")
    values = []
    for c in columns:
        if c == caption_column and text is not None:
            values.append(text.decode("utf-8", "replace"))
        elif c == "__key__":
            values.append(key)
        else:
            values.append(meta.get(c, MISSING))
    return ImageRow(values=tuple(values), data=members[image_ext], meta=meta)


def read_webdataset(
    url: str,
    start: int,
    stop: int,
    columns: Sequence[str],
    seek: Seek | None = None,
    caption_column: str | None = "caption",
) -> Iterator[ImageRow | InvalidRow]:
    with open_binary(url) as f:
        base = 0
        if seek is not None:
            offset, base = seek  # sample indices restart at 0 from the seek position
            f.seek(offset)
        count = 0
        for index, key, _offset, members in _iter_tar_samples(f, load_from=start - base):
            i = index + base
            if i < start:
                continue
            if i >= stop:
                break
            yield _webdataset_row(key, members, columns, caption_column)
            count += 1
    if count < stop - start:
        raise RuntimeError(
            f"input file {url} has fewer samples than the shard plan expected ({start + count} < "
            f"{stop}): it changed after planning; plan the input again"
        )


# --------------------------------------------------------------------------- rows -> records


def _failure_from_img2dataset(meta: dict[str, Any]) -> tuple[Status, str, int | None]:
    """A vecap status for a row img2dataset did not get bytes for, keeping its error text."""
    status = meta.get("status")
    message = meta.get("error_message") or ""
    where = f"img2dataset status {status!r}" + (f": {message}" if message else "")
    if status == "failed_to_resize":
        return Status.DECODE_ERROR, where, None
    if status == "failed_to_download":
        lowered = message.lower()
        http = re.search(r"http error (\d{3})", lowered)
        if http:
            return Status.HTTP_ERROR, where, int(http.group(1))
        if "timed out" in lowered or "timeout" in lowered:
            return Status.TIMEOUT, where, None
        if "x-robots-tag" in lowered:
            return Status.OPTED_OUT, where, None
        if "redirect" in lowered:
            return Status.TOO_MANY_REDIRECTS, where, None
        return Status.CONNECTION_ERROR, where, None
    if status == "success":
        return (
            Status.INVALID_ROW,
            "img2dataset status 'success' but the row has no image bytes",
            None,
        )
    return Status.INVALID_ROW, f"no image bytes ({where})", None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def attach_image(record: Record, row: ImageRow, *, verify: bool = False) -> Record:
    """``record`` with the row's image bytes and what the bytes say, or the right failure status.

    The size and format come from the image header (cheap); ``verify`` also decodes every pixel,
    catching truncated files before a GPU stage does.
    """
    if not record.ok:
        return record
    if not row.data:
        status, error, http_status = _failure_from_img2dataset(row.meta)
        return record.replace(status=status.value, error=error, http_status=http_status)
    try:
        with Image.open(io.BytesIO(row.data)) as img:
            pillow_format = img.format or ""
            width, height = img.size
            if verify:
                img.load()
    except Image.DecompressionBombError as e:
        return record.fail(Status.DECOMPRESSION_BOMB, f"image too large to decode safely: {e}")
    except Exception as e:  # Pillow raises many types for bad bytes; each is this row's failure
        return record.fail(
            Status.DECODE_ERROR, f"image bytes cannot be decoded: {type(e).__name__}: {e}"
        )
    # img2dataset hashes the bytes it downloaded (before resizing), as the download stage does;
    # without its hash, the bytes on hand are the best identity there is
    sha = row.meta.get("sha256")
    if not (isinstance(sha, str) and _SHA256.match(sha)):
        sha = hashlib.sha256(row.data).hexdigest()
    return record.replace(
        jpg=row.data,
        image_format=_FORMAT_NAMES.get(pillow_format, pillow_format.lower() or None),
        width=width,
        height=height,
        original_width=_int_or_none(row.meta.get("original_width")),
        original_height=_int_or_none(row.meta.get("original_height")),
        sha256=sha,
    )


__all__ = [
    "IMAGE_COLUMNS",
    "ImageRow",
    "attach_image",
    "check_img2dataset_scan",
    "image_column",
    "read_img2dataset",
    "read_webdataset",
    "scan_webdataset",
    "split_key",
]
