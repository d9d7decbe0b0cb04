"""The files of an output's ``shards/`` folder: names, the create-only commit, bulk reads, gc.

Layout (one folder, flat, so one listing sees everything)::

    OUT/shards/part-00042.<attempt>.parquet   one per write attempt, a unique name
    OUT/shards/part-00042.stats.json          the commit: created only if absent, names the
                                              parquet it covers with its row count and size

Object stores have no rename and runners retry bundles (a lost lease, a zombie worker,
speculative execution), so two attempts of one shard may run at once. Each attempt uploads its
parquet under its own name, then tries to *create* the stats file: exactly one attempt can win
(S3 ``If-None-Match: *``, GCS ``ifGenerationMatch=0``, local ``link(2)``), and a commit can
never be replaced or removed by a later attempt. A parquet that no stats file names is an
*uncommitted attempt file*: a lost race, a failed or killed attempt. Readers never read it;
``vecap gc`` and the end of a complete run remove it.

Outputs written before attempt names existed (``part-00042.parquet``, a stats file without a
``parquet`` field) are still read: such a stats file covers the legacy name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import fsspec

from schemas.stats import ShardStats, shard_stem

SHARDS_DIR = "shards"
# part-00042.parquet (legacy) or part-00042.<attempt>.parquet
_PARQUET_RE = re.compile(r"^part-(\d+)(?:\.([0-9A-Za-z_-]+))?\.parquet$")
_STATS_RE = re.compile(r"^part-(\d+)\.stats\.json$")
# temporaries of the local-disk writer (write + rename / link): ".part-00042....tmp-<hex>"
_TEMP_RE = re.compile(r"^\.part-\d+\..*\.tmp-[0-9a-f]+$")


class CommitNotSupported(RuntimeError):
    """The filesystem offers no create-only write, so a commit could replace another."""


# --------------------------------------------------------------------------- names


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def shards_dir(output: str) -> str:
    return _join(output, SHARDS_DIR)


def new_attempt_id() -> str:
    """A name no other attempt of any shard uses: 16 hex digits of a random uuid."""
    return uuid.uuid4().hex[:16]


def attempt_parquet_name(shard_id: int, attempt: str) -> str:
    return f"{shard_stem(shard_id)}.{attempt}.parquet"


def legacy_parquet_name(shard_id: int) -> str:
    """``part-00042.parquet``: what outputs written before attempt names hold."""
    return f"{shard_stem(shard_id)}.parquet"


def stats_name(shard_id: int) -> str:
    return f"{shard_stem(shard_id)}.stats.json"


def stats_path(output: str, shard_id: int) -> str:
    return _join(shards_dir(output), stats_name(shard_id))


def committed_parquet_name(stats: ShardStats) -> str:
    """The parquet file a stats file commits (the legacy name when the stats file predates
    attempt names)."""
    return stats.parquet or legacy_parquet_name(stats.shard_id)


def committed_parquet_path(output: str, stats: ShardStats) -> str:
    return _join(shards_dir(output), committed_parquet_name(stats))


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def parse_parquet_name(name: str) -> tuple[int, str | None] | None:
    """(shard id, attempt or None for the legacy name), or None if not a shard parquet."""
    m = _PARQUET_RE.match(basename(name))
    return (int(m.group(1)), m.group(2)) if m else None


def parse_stats_name(name: str) -> int | None:
    m = _STATS_RE.match(basename(name))
    return int(m.group(1)) if m else None


def fs_and_path(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(url)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return bool({"file", "local"} & set(protocols))


def _protocols(fs: fsspec.AbstractFileSystem) -> set[str]:
    return set(fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


# --------------------------------------------------------------------------- writing


def put_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (as far as the store allows).

    The bytes are complete before anything is sent, so a failure while producing them uploads
    nothing (fsspec's buffered file, by contrast, finishes its upload on ``__exit__`` even when
    an exception is propagating). On local disks the file is written under a hidden temporary
    name and renamed; object stores make a single PUT (or a multipart upload that s3fs aborts
    on error) visible only when complete.
    """
    if is_local(fs):
        parent, base = path.rsplit("/", 1)
        tmp = f"{parent}/.{base}.tmp-{uuid.uuid4().hex[:12]}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    fs.pipe_file(path, data)


@contextlib.contextmanager
def staged_file(fs: fsspec.AbstractFileSystem, final: str) -> Iterator[str]:
    """A local path to write ``final``'s bytes to before :func:`publish_staged` makes them
    ``final`` whole; removed on exit, published or not. On a local disk it lies beside
    ``final`` (the rename stays on one filesystem), hidden (no pattern reads it)."""
    parent, base = final.rsplit("/", 1)
    if is_local(fs):
        tmp = f"{parent}/.{base}.tmp-{uuid.uuid4().hex[:12]}"
    else:
        fd, tmp = tempfile.mkstemp(prefix="vecap-stage-", suffix=f"-{base}")
        os.close(fd)
    try:
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def publish_staged(fs: fsspec.AbstractFileSystem, tmp: str, final: str) -> None:
    """Make the finished local file ``tmp`` (from :func:`staged_file`) the file ``final``, whole
    or not at all: an atomic rename on a local disk, one upload on object stores (S3 and GCS
    show the object only once complete; fsspec's writable file objects, by contrast, finish
    their upload on close even while an error is on its way)."""
    if is_local(fs):
        os.replace(tmp, final)
    else:
        fs.put_file(tmp, final)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _create_exclusive(path: str, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return True


_memory_lock = threading.Lock()


def put_if_absent(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists; True if this call created it.

    Atomic where the store allows it: local disks write a temporary and ``link(2)`` it to the
    final name (fails if the name exists, and the name never shows a half-written file); S3
    sends ``If-None-Match: *`` (s3fs ``mode="create"``; AWS S3 since 2024, MinIO, moto); GCS
    ``ifGenerationMatch=0`` (gcsfs ``mode="create"``); ``memory://`` checks under a lock
    (one process). Any other store raises :class:`CommitNotSupported` rather than risk a
    second attempt replacing a commit.
    """
    protocols = _protocols(fs)
    if is_local(fs):
        parent, base = path.rsplit("/", 1)
        tmp = f"{parent}/.{base}.tmp-{uuid.uuid4().hex[:12]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            # no hard links here (some FUSE mounts): O_EXCL creation is still exclusive, but a
            # crash mid-write could leave a short commit; this file is small and fsynced
            return _create_exclusive(path, data)
        finally:
            os.unlink(tmp)
    if "memory" in protocols:
        with _memory_lock:
            if fs.exists(path):
                return False
            fs.pipe_file(path, data)
            return True
    if protocols & {"s3", "s3a", "gs", "gcs"}:
        try:
            fs.pipe_file(path, data, mode="create")
            return True
        except TypeError as e:  # an s3fs/gcsfs from before exclusive writes (fsspec 2025.2)
            raise CommitNotSupported(
                f"{type(fs).__name__} {getattr(fs, '__version__', '')} has no exclusive write "
                f"(pipe_file mode='create'): upgrade s3fs/gcsfs ({e})"
            ) from e
        except FileExistsError:
            return False
        except OSError as e:
            # s3fs maps 412 to FileExistsError only when the server names the condition in its
            # error (AWS, moto); MinIO does not, and s3fs raises a plain OSError(EINVAL)
            if _precondition_failed(e):
                return False
            raise
    raise CommitNotSupported(
        f"{sorted(protocols)}: no create-only write known for this filesystem, so a shard "
        "commit could replace another attempt's; write outputs to a local disk, s3:// or gs://"
    )


def _precondition_failed(error: OSError) -> bool:
    cause = error.__cause__
    response = getattr(cause, "response", None) or {}
    code = (response.get("Error") or {}).get("Code")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code == "PreconditionFailed" or status == 412


# --------------------------------------------------------------------------- reading


@dataclass
class ShardListing:
    """One listing of ``OUT/shards``: every file sorted into stats files, parquets, temporaries.

    Names are paths on the listing's filesystem (no protocol)."""

    root: str
    stats: dict[int, str] = field(default_factory=dict)  # shard id -> stats file
    # shard id -> the stats file's listing entry (size, mtime, ETag or generation: what
    # `vecap status` tells a rewritten stats file by)
    stats_entries: dict[int, dict] = field(default_factory=dict)
    # id -> {path: size}; size None where the listing did not say (local disks: sizes are read
    # only for the files that need them, the uncommitted ones)
    parquets: dict[int, dict[str, int | None]] = field(default_factory=dict)
    temporaries: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)


def list_shards(output: str) -> tuple[fsspec.AbstractFileSystem, ShardListing]:
    """One listing of the output's shards folder (no file read); empty if it does not exist."""
    fs, root = fs_and_path(shards_dir(output))
    root = root.rstrip("/")
    listing = ShardListing(root=root)
    try:
        fs.invalidate_cache(root)  # s3fs/gcsfs cache listings: another process wrote here
        entries = list_entries(fs, root)
    except FileNotFoundError:
        return fs, listing
    for entry in entries:
        name = entry["name"]
        if entry.get("type") == "directory":
            continue
        base = basename(name)
        sid = parse_stats_name(base)
        if sid is not None:
            listing.stats[sid] = name
            listing.stats_entries[sid] = entry
            continue
        parsed = parse_parquet_name(base)
        if parsed is not None:
            size = entry.get("size")
            listing.parquets.setdefault(parsed[0], {})[name] = None if size is None else int(size)
        elif _TEMP_RE.match(base):
            listing.temporaries.append(name)
        else:
            listing.other.append(name)
    return fs, listing


# Object-store listings are paginated (1,000 keys a request, each waiting for the last): an
# output of 300,000 shards is 600 requests in a row. Listed by these key prefixes instead, the
# pages of different prefixes are fetched concurrently. Ten, not more: a single-node server
# (MinIO) walks its directory once per prefix (100,000 shards on loopback: one listing 18 s, 10
# prefixes 19 s, 100 prefixes 28 s), while moto's listing costs a scan of the bucket per page.
LISTING_PREFIXES = tuple(f"part-{i}" for i in range(10)) + (".part-",)


def list_entries(
    fs: fsspec.AbstractFileSystem, root: str, prefixes: Sequence[str] | None = LISTING_PREFIXES
) -> list[dict]:
    """The entries directly under ``root``: one ``ls`` on local disks and in memory. On async
    object stores (s3fs, gcsfs) ``prefixes`` are listed concurrently, which finds only names
    starting with one of them (the default: shard files' ``part-<digit>``, ``.part-``);
    ``prefixes=None`` lists every name, in one paginated listing."""
    if is_local(fs):  # names only (no stat per file): 200,000 entries in a fraction of a second
        with os.scandir(root) as it:
            return [
                {"name": f"{root}/{e.name}", "type": "directory" if e.is_dir() else "file"}
                for e in it
            ]
    if not getattr(fs, "async_impl", False) or not hasattr(fs, "_find"):
        return fs.ls(root, detail=True)
    import asyncio

    from fsspec.asyn import sync

    async def list_all() -> list[dict]:
        found = await asyncio.gather(
            *(
                fs._find(root, maxdepth=1, detail=True, **({"prefix": p} if p else {}))
                for p in (prefixes or ("",))
            )
        )
        return [entry for part in found for entry in part.values()]

    entries = sync(fs.loop, list_all)
    if not entries and not fs.exists(root):
        raise FileNotFoundError(root)
    return entries


def _read_local(paths: Iterable[str]) -> dict[str, bytes | BaseException]:
    out: dict[str, bytes | BaseException] = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                out[path] = f.read()
        except OSError as e:
            out[path] = e
    return out


def _remove(fs: fsspec.AbstractFileSystem, paths: list[str]) -> None:
    """Delete ``paths``: bulk deletes on object stores (s3fs: 1,000 keys a request)."""
    if not paths:
        return
    if is_local(fs):
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return
    fs.rm(paths)


def read_stats_files(
    fs: fsspec.AbstractFileSystem, paths: Mapping[int, str]
) -> dict[int, ShardStats]:
    """Read many stats files in one batched ``cat`` (object stores fetch them concurrently).

    A stats file that vanished between listing and reading is skipped (``--overwrite`` of a
    concurrent run); one that cannot be parsed raises: a commit marker is never silently
    ignored."""
    if not paths:
        return {}
    by_path = {p: sid for sid, p in paths.items()}
    contents = _read_local(by_path) if is_local(fs) else fs.cat(list(by_path), on_error="return")
    out: dict[int, ShardStats] = {}
    for path, sid in by_path.items():
        data = contents.get(path)
        if data is None or isinstance(data, FileNotFoundError):
            continue
        if isinstance(data, BaseException):
            raise OSError(f"reading {path}: {data}") from data
        try:
            stats = ShardStats.from_json(data.decode("utf-8"))
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: not a vecap stats file ({e})") from e
        if stats.shard_id != sid:
            raise ValueError(f"{path}: says shard_id {stats.shard_id}")
        out[sid] = stats
    return out


def committed_shards(output: str, shard_ids: Iterable[int] | None = None) -> dict[int, ShardStats]:
    """The committed shards (those with a stats file), read back in bulk: one listing and one
    batched read. ``shard_ids`` limits which are read. {} when the output does not exist."""
    fs, listing = list_shards(output)
    wanted = listing.stats
    if shard_ids is not None:
        keep = set(shard_ids)
        wanted = {sid: p for sid, p in wanted.items() if sid in keep}
    return dict(sorted(read_stats_files(fs, wanted).items()))


def committed_shard_ids(output: str) -> set[int]:
    """Ids of the committed shards: one listing, no file read (resume planning)."""
    return set(list_shards(output)[1].stats)


def committed_parquet_urls(output: str) -> dict[int, str]:
    """Shard id -> the URL of the parquet its stats file names, in shard order."""
    return {sid: committed_parquet_path(output, s) for sid, s in committed_shards(output).items()}


@dataclass
class UncommittedFiles:
    """Attempt files no stats file names, and local temporaries.

    ``of_committed``: attempts of shards that are committed: garbage forever (a commit can
    never be replaced, so nothing can ever name them). ``of_open``: attempts of shards not
    committed yet: garbage unless a run is writing that shard right now."""

    of_committed: list[str] = field(default_factory=list)
    of_open: list[str] = field(default_factory=list)
    temporaries: list[str] = field(default_factory=list)
    bytes: int = 0

    @property
    def all(self) -> list[str]:
        return [*self.of_committed, *self.of_open, *self.temporaries]


def uncommitted_files(output: str) -> UncommittedFiles:
    fs, listing = list_shards(output)
    stats = read_stats_files(fs, listing.stats)
    return uncommitted_from_listing(listing, stats)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # gone since the listing


def uncommitted_from_listing(
    listing: ShardListing, stats: Mapping[int, ShardStats]
) -> UncommittedFiles:
    out = UncommittedFiles(temporaries=sorted(listing.temporaries))
    for sid, files in sorted(listing.parquets.items()):
        named = committed_parquet_name(stats[sid]) if sid in stats else None
        for path, size in sorted(files.items()):
            if basename(path) == named:
                continue
            (out.of_committed if sid in stats else out.of_open).append(path)
            out.bytes += size if size is not None else _size(path)
    return out


def remove_uncommitted(output: str, *, include_open: bool = True) -> UncommittedFiles:
    """Delete uncommitted attempt files (one bulk delete); never a file a stats file names.

    ``include_open=False`` keeps attempts of shards not committed yet (a run may still be
    writing them). Returns what was deleted."""
    fs, listing = list_shards(output)
    stats = read_stats_files(fs, listing.stats)
    found = uncommitted_from_listing(listing, stats)
    if not include_open:
        found.of_open = []
        found.temporaries = []
    _remove(fs, found.all)
    fs.invalidate_cache(listing.root)
    return found


def remove_all_shard_files(output: str) -> int:
    """``--overwrite``: every file of the shards folder, in one listing and one bulk delete.
    Stats files go first, so a crash midway never leaves a commit naming a deleted parquet."""
    fs, listing = list_shards(output)
    commits = list(listing.stats.values())
    rest = [p for files in listing.parquets.values() for p in files] + listing.temporaries
    _remove(fs, commits)
    _remove(fs, rest)
    fs.invalidate_cache(listing.root)
    return len(commits) + len(rest)


__all__ = [
    "SHARDS_DIR",
    "CommitNotSupported",
    "ShardListing",
    "UncommittedFiles",
    "attempt_parquet_name",
    "committed_parquet_name",
    "committed_parquet_path",
    "committed_parquet_urls",
    "committed_shard_ids",
    "committed_shards",
    "legacy_parquet_name",
    "file_sha256",
    "list_entries",
    "list_shards",
    "new_attempt_id",
    "parse_parquet_name",
    "parse_stats_name",
    "put_bytes",
    "publish_staged",
    "put_if_absent",
    "read_stats_files",
    "remove_all_shard_files",
    "remove_uncommitted",
    "shards_dir",
    "staged_file",
    "stats_name",
    "stats_path",
    "uncommitted_files",
    "uncommitted_from_listing",
]
