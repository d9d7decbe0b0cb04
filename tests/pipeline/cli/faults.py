"""`vecap` with one fault injected into the job, for the tests of what a failed job leaves.

``python -c "from tests.pipeline.cli.faults import main; main()" run ...`` is the real ``vecap``
entry (pipeline.cli.main.main) in a child process, except that the download stage is followed
by a step that raises on the rows of shard ``VECAP_TEST_FAIL_SHARD``. Local waves run shard by
shard (``--local-wave-shards 1``), so the shards before it are committed and the ones from it on
are not: a job that fails half-way, which nothing in a real input can be made to do on cue.
"""

from __future__ import annotations

import os
import sys


def fail_on_shard(record, shard_id: int):
    if record.shard_id == shard_id:
        raise RuntimeError(f"injected failure on a row of shard {shard_id}")
    return record


def main() -> None:
    from pipeline.cli.logs import configure_logging

    configure_logging(0)  # as vecap's main does before anything imports Beam
    import apache_beam as beam

    import pipeline.run as run
    from pipeline.cli.main import main as vecap_main

    shard = int(os.environ["VECAP_TEST_FAIL_SHARD"])
    real = run.stage_transform

    def stage_transform(stage, config):
        transform = real(stage, config)
        if stage == "download":
            return transform | "InjectedFault" >> beam.Map(fail_on_shard, shard)
        return transform

    run.stage_transform = stage_transform
    sys.argv[0] = "vecap"
    sys.exit(vecap_main())
