"""Can a model be loaded at all? A cheap check made before a job reads its first row.

Both backends take a local directory or a Hugging Face hub id. A typo in either only surfaced
when a worker loaded the model, after the input was planned and rows were downloaded. This
module answers from the file system and the local hub cache alone: it never touches the
network, imports no backend and loads no weights.

- an existing directory must hold a ``config.json`` that parses (what both backends, and the
  manifest's chat-template and aspect lookup, read first);
- a name that is not a directory must be a valid hub id (``namespace/name`` or ``name``); one
  that looks like a path (``/models/x``, ``./x``, ``~/x``, ``a/b/c``) is a missing directory;
- with ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set, a hub id must be in the local hub
  cache, because nothing can be downloaded.

A hub id that merely does not exist on the hub is not found here (that needs the network); the
backend reports it when it loads the model.
"""

from __future__ import annotations

import json
import os

from pipeline.errors import ModelNotAvailableError

_TRUE = ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """Whether the Hugging Face libraries are told not to reach the hub."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUE
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _looks_like_path(model: str) -> bool:
    return (
        model.startswith(("/", "./", "../", "~", "."))
        or "\\" in model
        or model.endswith("/")
        or model.count("/") > 1
    )


def _valid_hub_id(model: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError:
        return False
    return True


def _in_hub_cache(model: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model, "config.json"), str)


def _config_problem(model: str, path: str) -> str | None:
    """A config.json both backends (and the manifest's family lookup) can parse."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as e:  # unreadable, not UTF-8, not JSON
        why = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())
        return f"model {model!r}: its config.json cannot be read as JSON ({why}); fix or replace it"
    if not isinstance(data, dict):
        return f"model {model!r}: its config.json is not a JSON object; fix or replace it"
    return None


def _remote_problem(model: str) -> str | None:
    """A checkpoint on an object store: its config.json must be readable from here (workers
    copy the whole directory once per machine: pipeline.generation.model_cache)."""
    import fsspec

    url = model.rstrip("/") + "/config.json"
    try:
        fs, path = fsspec.core.url_to_fs(url)
        found = fs.exists(path)
    except Exception as e:  # no such protocol, its package missing, no credentials
        return f"model {model!r} cannot be reached: {' '.join(f'{type(e).__name__}: {e}'.split())[:300]}"
    if not found:
        return f"model {model!r} holds no config.json; point at the checkpoint's directory"
    return None


def model_problem(model: str) -> str | None:
    """Why ``model`` cannot be loaded, as one line; None when it looks loadable."""
    from pipeline.generation.model_cache import is_remote

    if is_remote(model):
        return _remote_problem(model)
    local = os.path.expanduser(model)
    if os.path.isdir(local):
        config = os.path.join(local, "config.json")
        if not os.path.isfile(config):
            return (
                f"model directory {model!r} has no config.json, so it is not a model checkpoint; "
                "point at the directory that holds config.json and the weights"
            )
        return _config_problem(model, config)
    if os.path.exists(local):
        return f"model {model!r} is a file; give a model directory or a hub id"
    if _looks_like_path(model) or not _valid_hub_id(model):
        return (
            f"model {model!r} does not exist: it is not a local directory, nor a hub id "
            "(namespace/name); check the path"
        )
    if hub_offline() and not _in_hub_cache(model):
        return (
            f"model {model!r} is not a local directory and not in the Hugging Face cache, and "
            "HF_HUB_OFFLINE is set; download it first (huggingface-cli download "
            f"{model}), point at a local copy, or unset HF_HUB_OFFLINE"
        )
    return None


def check_model_available(model: str, what: str = "model") -> None:
    """Raise :class:`ModelNotAvailableError` naming ``what`` (e.g. ``--caption-model``)."""
    problem = model_problem(model)
    if problem is not None:
        raise ModelNotAvailableError(f"{what}: {problem}")


__all__ = ["check_model_available", "hub_offline", "model_problem"]
