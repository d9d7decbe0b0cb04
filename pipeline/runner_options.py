"""Beam runner and options: the in-process FnApiRunner by default, any Beam option passed through.

``vecap run ... -- --runner DataflowRunner --project P ...``: every argument vecap does not know
is handed to Beam's ``PipelineOptions`` unchanged. Without ``--runner`` (or with
``--runner FnApiRunner``) the job runs on Beam's in-process FnApiRunner, which needs no Prism
binary (the DirectRunner may try to download one); ``--direct_running_mode=multi_processing
--direct_num_workers=N`` makes it run N SDK worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

LOCAL_RUNNER_NAMES = frozenset({"", "fnapirunner", "local"})


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


def make_pipeline(options: Any) -> Any:
    """A ``beam.Pipeline`` on the FnApiRunner unless the options name another runner."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions

    if is_local(options):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        options.view_as(StandardOptions).runner = None  # FnApiRunner is passed as an object
        return beam.Pipeline(runner=FnApiRunner(), options=options)
    return beam.Pipeline(options=options)


__all__ = ["is_local", "make_pipeline", "pipeline_options", "runner_name"]
