"""Beam runner and options: the in-process FnApiRunner by default, any Beam option passed through.

``vecap run ... -- --runner DataflowRunner --project P ...``: every argument vecap does not know
is handed to Beam's ``PipelineOptions`` unchanged. Without ``--runner`` (or with
``--runner FnApiRunner``) the job runs on Beam's in-process FnApiRunner, which needs no Prism
binary (the DirectRunner may try to download one); ``--direct_running_mode=multi_processing
--direct_num_workers=N`` makes it run N SDK worker processes.

Local default for CPU-bound runs (:func:`local_beam_args`): a download-only job of at least
:data:`AUTO_PROCESSES_MIN_ROWS` rows in two or more shards runs one SDK worker process per core
(up to one per shard), because in one process the GIL serialises what the cores could share
(HTTP parsing, Pillow's JPEG encoder, which holds the GIL, Beam's per-element work, parquet
writing). So does a job whose model stages all stream to engine servers (the models live in the
servers, one per GPU, not in the workers: ``cpu_stages``). Other jobs with a model stage stay
in one process, so a model is loaded once; any
``--direct_running_mode`` or ``--direct_num_workers`` given by the user is left as it is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence, Set
from typing import Any

LOCAL_RUNNER_NAMES = frozenset({"", "fnapirunner", "local"})
# Below this many rows, starting worker processes (~2 s each) costs more than it saves.
AUTO_PROCESSES_MIN_ROWS = 1_000
# Stages that are plain CPU/network work, no model: safe and faster to run one process per core.
CPU_STAGES = frozenset({"download"})
_PARALLELISM_FLAGS = ("--direct_running_mode", "--direct_num_workers")


def pipeline_options(beam_args: Sequence[str]) -> Any:
    """Beam PipelineOptions from the pass-through arguments, validated by Beam itself."""
    from apache_beam.options.pipeline_options import PipelineOptions

    return PipelineOptions(list(beam_args))


def runner_name(options: Any) -> str:
    from apache_beam.options.pipeline_options import StandardOptions

    return options.view_as(StandardOptions).runner or ""


def is_local(options: Any) -> bool:
    """True when the job runs in this process tree (FnApiRunner), so progress can be watched."""
    return runner_name(options).lower() in LOCAL_RUNNER_NAMES


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def local_beam_args(
    beam_args: Sequence[str],
    stages: Sequence[str],
    shard_rows: Sequence[int],
    cores: int | None = None,
    cpu_stages: Set[str] = CPU_STAGES,
) -> list[str]:
    """``beam_args`` plus the local runner's process default for this job (see the module doc).

    ``shard_rows``: the rows of each shard this run does. Returns ``beam_args`` unchanged for
    other runners, jobs with a model stage, small jobs, one core, or when the user chose.
    """
    args = list(beam_args)
    cores = available_cores() if cores is None else cores
    shards = sum(1 for n in shard_rows if n > 0)
    if (
        not is_local(pipeline_options(args))
        or any(a.split("=", 1)[0] in _PARALLELISM_FLAGS for a in args)
        or not stages
        or not set(stages) <= cpu_stages
        or sum(shard_rows) < AUTO_PROCESSES_MIN_ROWS
        or min(cores, shards) < 2
    ):
        return args
    return args + [
        "--direct_running_mode=multi_processing",
        f"--direct_num_workers={min(cores, shards)}",
    ]


def _local_runner() -> Any:
    """Beam's FnApiRunner, whose worker processes (multi_processing) start through
    :mod:`pipeline.local_worker`, so their start-up logging does not flood the terminal."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.transforms.environments import SubprocessSDKEnvironment

    beams_worker = " -m apache_beam.runners.worker.sdk_worker_main"

    class LocalRunner(FnApiRunner):
        # FnApiRunner.run_pipeline assigns the subprocess environment for multi_processing
        # itself; this property swaps in the same command with vecap's quiet entry point.
        @property
        def _default_environment(self) -> Any:
            return self.__dict__["_vecap_environment"]

        @_default_environment.setter
        def _default_environment(self, env: Any) -> None:
            if isinstance(env, SubprocessSDKEnvironment) and env.command_string.endswith(
                beams_worker
            ):
                env = SubprocessSDKEnvironment.from_command_string(
                    env.command_string[: -len(beams_worker)] + " -m pipeline.local_worker"
                )
            self.__dict__["_vecap_environment"] = env

    # Each worker process warns that it has no semi_persistent_directory (a Dataflow notion) and
    # the runner relays it: noise in a local terminal.
    relay = logging.getLogger("apache_beam.runners.portability.local_job_service")
    if _NO_SEMI_PERSISTENT_NOISE not in relay.filters:
        relay.addFilter(_NO_SEMI_PERSISTENT_NOISE)
    return LocalRunner()


def _no_semi_persistent_noise(record: logging.LogRecord) -> bool:
    return "No semi_persistent_directory found" not in record.getMessage()


_NO_SEMI_PERSISTENT_NOISE = _no_semi_persistent_noise


# machine families whose every machine carries GPUs (Compute Engine's accelerator-optimized)
_GPU_MACHINE_FAMILIES = ("a2-", "a3-", "a4-", "g2-", "g4-")
_MACHINE_FLAGS = ("--machine_type", "--worker_machine_type")


def cpu_only_beam_args(beam_args: Sequence[str]) -> tuple[list[str], list[str]]:
    """``beam_args`` for a job without a model (the dedup's index jobs, its download and
    assemble phases): Dataflow's ``worker_accelerator`` service option, a GPU machine type and
    the one-SDK-process-per-VM experiment (there for GPU memory) dropped, so those jobs do not
    rent GPUs they leave idle. Returns (args, what was dropped)."""
    out: list[str] = []
    dropped: list[str] = []
    args = list(beam_args)
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        two_tokens = not eq and i + 1 < len(args) and not args[i + 1].startswith("--")
        if two_tokens and name in ("--dataflow_service_options", "--experiments", *_MACHINE_FLAGS):
            value, i = args[i + 1], i + 1
        i += 1
        if name == "--dataflow_service_options" and value.startswith("worker_accelerator="):
            dropped.append(f"{name}={value}")
            continue
        if name in _MACHINE_FLAGS and value.startswith(_GPU_MACHINE_FAMILIES):
            dropped.append(f"{name}={value}")
            continue
        if name == "--experiments" and value:
            kept = [e for e in value.split(",") if e != "no_use_multiple_sdk_containers"]
            if len(kept) != len(value.split(",")):
                dropped.append("--experiments=no_use_multiple_sdk_containers")
            if kept:
                out.append(f"{name}={','.join(kept)}")
            continue
        out.append(arg if eq or value == "" else f"{name}={value}")
    return out, dropped


def beam_counters(result: Any, namespace: str) -> dict[str, int]:
    """A finished pipeline's Beam counters in ``namespace``, summed by name; {} where the
    runner does not report metrics (the counters vecap reads are diagnostics only)."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        found = result.metrics().query(MetricsFilter().with_namespace(namespace))
    except Exception:  # not every runner implements metrics
        return {}
    out: dict[str, int] = {}
    for counter in found.get("counters", []):
        value = counter.committed if counter.committed is not None else counter.attempted
        out[counter.key.metric.name] = out.get(counter.key.metric.name, 0) + int(value or 0)
    return out


def make_pipeline(options: Any) -> Any:
    """A ``beam.Pipeline`` on the FnApiRunner unless the options name another runner."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions

    if is_local(options):
        from pipeline.local_worker import limit_malloc_arenas

        # this process is the in-process runner's worker: the same memory cap as a subprocess's
        limit_malloc_arenas()
        options.view_as(StandardOptions).runner = None  # FnApiRunner is passed as an object
        return beam.Pipeline(runner=_local_runner(), options=options)
    return beam.Pipeline(options=options)


__all__ = [
    "AUTO_PROCESSES_MIN_ROWS",
    "available_cores",
    "is_local",
    "local_beam_args",
    "make_pipeline",
    "pipeline_options",
    "runner_name",
]
