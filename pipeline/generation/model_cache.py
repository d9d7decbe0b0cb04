"""Checkpoints on object stores (``gs://``, ``s3://``, any fsspec URL): copied once per machine.

Neither transformers nor vLLM loads from a bucket. A model given as a URL is copied, before
the first load on a machine, into ``VECAP_MODEL_CACHE`` (default ``~/.cache/vecap/models``)
under a name made of the URL's last part and a hash of the whole URL, and loaded from there:

- one copy per machine: the copy runs under an exclusive ``flock`` on the cache entry, so the
  SDK processes of a VM that load at once wait for the first one's copy instead of each
  downloading 14 GB;
- never half a model: the files go to a temporary directory beside the entry, which is renamed
  into place once every file arrived, then a marker file is written; an entry without its
  marker (a copy killed midway) is copied again.

The entry is keyed by the URL alone: publish a new checkpoint under a new path (a run's
manifest records the URL, so the path is the version).
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

CACHE_ENV = "VECAP_MODEL_CACHE"
COMPLETE = ".vecap-complete"


def is_remote(model: str) -> bool:
    """A URL fsspec opens other than the local disk (``file://`` is a local path)."""
    scheme, sep, _ = model.partition("://")
    return bool(sep) and scheme not in ("file", "local")


def cache_root() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "vecap", "models"
    )


def cache_path(url: str) -> str:
    name = url.rstrip("/").rsplit("/", 1)[-1] or "model"
    digest = hashlib.blake2b(url.encode(), digest_size=8).hexdigest()
    return os.path.join(cache_root(), f"{name}-{digest}")


@contextmanager
def _locked(path: str) -> Iterator[None]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def fetch_model(url: str) -> tuple[str, bool]:
    """The local directory holding the checkpoint at ``url``, and whether this call copied it
    (False: a copy on this machine, finished before or by a concurrent process, was used)."""
    import fsspec

    dest = cache_path(url)
    with _locked(dest):
        if os.path.isfile(os.path.join(dest, COMPLETE)):
            return dest, False
        fs, root = fsspec.core.url_to_fs(url)
        files = [p for p in fs.find(root) if not p.endswith("/")]
        if not files:
            raise FileNotFoundError(f"no files under {url}")
        if not any(p.rsplit("/", 1)[-1] == "config.json" for p in files):
            raise FileNotFoundError(f"{url} holds no config.json: not a model checkpoint")
        shutil.rmtree(dest, ignore_errors=True)  # a copy killed midway
        staging = f"{dest}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        started = time.time()
        total = 0
        prefix = root.rstrip("/") + "/"
        for remote in files:
            local = os.path.join(staging, remote[len(prefix) :])
            os.makedirs(os.path.dirname(local), exist_ok=True)
            fs.get_file(remote, local)
            total += os.path.getsize(local)
        os.rename(staging, dest)
        with open(os.path.join(dest, COMPLETE), "w") as f:
            json.dump({"url": url, "files": len(files), "bytes": total}, f)
        log.info("copied %s (%d files, %.1f GB) in %.0fs", url, len(files), total / 1e9,
                 time.time() - started)  # fmt: skip
        return dest, True


def with_local_model(config):  # GenerationConfig -> GenerationConfig
    """``config`` loading from this machine's copy of a remote checkpoint; its served name
    stays the URL (what requests and rows name it by). Local paths and hub ids as they are."""
    if not is_remote(config.model):
        return config
    local, _copied = fetch_model(config.model)
    return dataclasses.replace(
        config, model=local, served_model_name=config.served_model_name or config.model
    )


__all__ = ["cache_path", "fetch_model", "is_remote", "with_local_model"]
