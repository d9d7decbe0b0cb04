"""Checks made before a job starts, so that a mistake costs a second, not a planned and half-run
job: the output can be written, the models can be loaded. Each failure is a
:class:`~pipeline.errors.UsageError` whose message says what is wrong and what to do.

Nothing here writes: an output directory that does not exist yet is only checked to be
creatable, and models are checked from the file system and the local hub cache (see
:mod:`pipeline.generation.availability`).
"""

from __future__ import annotations

import os
from collections.abc import Container
from typing import Any

from pipeline.errors import OutputError
from pipeline.generation.availability import check_model_available


def _why(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def check_output(output: str) -> None:
    """The output is a directory vecap can read and write, or a path where one can be made."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    try:
        fs, path = fsspec.core.url_to_fs(output)
    except (ValueError, ImportError) as e:  # an unknown protocol, or its package is missing
        raise OutputError(f"output {output!r}: {e}") from e
    try:
        exists = fs.exists(path)
        if exists and not fs.isdir(path):
            raise OutputError(
                f"output {output!r} is an existing file; give a directory (a new one, or an "
                "earlier vecap output to resume)"
            )
        if exists:
            fs.ls(path, detail=False)  # an unreadable directory fails here, not mid-plan
    except PermissionError as e:
        raise OutputError(
            f"output directory {output!r} cannot be read: permission denied; fix its "
            "permissions or choose another --output"
        ) from e
    except OutputError:
        raise
    except OSError as e:  # e.g. a path under a regular file (ENOTDIR)
        raise OutputError(
            f"output {output!r} cannot be used: {_why(e)}; choose another --output"
        ) from e
    if isinstance(fs, LocalFileSystem):
        _check_local_writable(output, path, exists)


def _check_local_writable(output: str, path: str, exists: bool) -> None:
    """A local output directory, or its nearest existing parent, must be a writable directory."""
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise OutputError(
            f"output {output!r} cannot be created: {probe!r} is a file, not a directory; "
            "choose another --output"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "output directory" if exists else f"directory {probe!r} (where the output goes)"
        raise OutputError(
            f"{what} is not writable: permission denied; fix its permissions or choose "
            "another --output"
        )


# (config attribute, stage, the flag that names the model) for each model stage
_MODEL_STAGES = (
    ("caption", "caption", "--caption-model"),
    ("fusion", "fuse", "--fusion-model"),
    ("ethics", "ethics", "--ethics-model"),
)


def check_models(config: Any, skip_stages: Container[str] = (), local: bool = True) -> None:
    """Every model a stage of this run loads exists locally or is a plausible (cached, when
    offline) hub id; a URL's config.json is readable. ``skip_stages``: stages whose transform
    is replaced (tests, benchmarks). On a remote runner (``local`` False) an absolute path is
    the workers' (baked into their image, a mount): one this machine lacks is left to them."""
    import logging

    checked: set[str] = set()
    for attr, stage, flag in _MODEL_STAGES:
        section = getattr(config, attr, None)
        generation = getattr(section, "generation", None)
        if stage not in config.stages or stage in skip_stages or generation is None:
            continue
        if generation.model in checked:
            continue
        checked.add(generation.model)
        if not local and generation.model.startswith("/") and not os.path.exists(generation.model):
            logging.getLogger(__name__).warning(
                "%s %s is not on this machine: the workers must have it (image or mount); "
                "they check it when they load it",
                flag,
                generation.model,
            )
            continue
        check_model_available(generation.model, flag)


def check_gpus(config: Any, skip_stages: Container[str] = ()) -> None:
    """vecap's engine servers (``--backend vllm``) can be placed on this machine's GPUs as
    ``--gpus`` and ``tensor_parallel_size`` ask (workers elsewhere check their own machine)."""
    from pipeline.errors import ConfigError
    from pipeline.generation.devices import GpuSelectionError, engine_slots

    for attr, stage, _flag in _MODEL_STAGES:
        generation = getattr(getattr(config, attr, None), "generation", None)
        if stage not in config.stages or stage in skip_stages or generation is None:
            continue
        if generation.backend != "vllm" or not generation.streams:
            continue
        try:
            engine_slots(generation.gpus, generation.tensor_parallel_size)
        except GpuSelectionError as e:
            raise ConfigError(f"{attr}: {e}") from e


def preflight(config: Any, skip_stages: Container[str] = ()) -> None:
    """All checks before planning: the output, the models, the GPUs of a local job."""
    from pipeline.runner_options import is_local, pipeline_options

    local = is_local(pipeline_options(config.run.beam_args))
    check_output(config.run.output)
    check_models(config, skip_stages, local=local)
    if local:
        check_gpus(config, skip_stages)


__all__ = ["check_gpus", "check_models", "check_output", "preflight"]
