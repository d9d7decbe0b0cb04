"""`vecap` with one fault injected into the job, for the tests of what a failed job leaves.

``python -c "from tests.pipeline.cli.faults import main; main()" run ...`` is the real ``vecap``
entry (pipeline.cli.main.main) in a child process, except that the download stage is followed
by a step that fails the bundle holding the rows of shard ``VECAP_TEST_FAIL_SHARD``: it holds
those rows (and any of later shards) back and raises at the end of the bundle, once every earlier shard's stats file is in
``VECAP_TEST_OUTPUT``. Shards run concurrently (a download-only job is one wave, the download
threads finish rows in any order), so without that wait shard 1 could fail before shard 0 is
committed. The shards before it are committed and the ones from it on are not: a job that fails
half-way, which nothing in a real input can be made to do on cue.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    from pipeline.cli.logs import configure_logging

    configure_logging(0)  # as vecap's main does before anything imports Beam
    import apache_beam as beam

    import pipeline.run as run
    from pipeline.cli.main import main as vecap_main
    from tests.pipeline.cli.fault_dofn import FailOnShard

    shard = int(os.environ["VECAP_TEST_FAIL_SHARD"])
    output = os.environ["VECAP_TEST_OUTPUT"]
    real = run.stage_transform

    def stage_transform(stage, config):
        transform = real(stage, config)
        if stage == "download":
            return transform | "InjectedFault" >> beam.ParDo(FailOnShard(shard, output))
        return transform

    run.stage_transform = stage_transform
    sys.argv[0] = "vecap"
    sys.exit(vecap_main())
