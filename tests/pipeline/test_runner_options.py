"""The local runner's default parallelism: one worker process per core for CPU-only jobs."""

from __future__ import annotations

import pytest

from pipeline.runner_options import AUTO_PROCESSES_MIN_ROWS, local_beam_args

SIX_SHARDS = [1000] * 6


def _mode(args: list[str]) -> tuple[str | None, int | None]:
    mode = workers = None
    for a in args:
        if a.startswith("--direct_running_mode="):
            mode = a.split("=", 1)[1]
        if a.startswith("--direct_num_workers="):
            workers = int(a.split("=", 1)[1])
    return mode, workers


def test_download_only_job_gets_one_process_per_core():
    args = local_beam_args([], ["download"], SIX_SHARDS, cores=2)
    assert _mode(args) == ("multi_processing", 2)


def test_never_more_workers_than_shards():
    args = local_beam_args([], ["download"], [900, 900, 0], cores=8)
    assert _mode(args) == ("multi_processing", 2)


@pytest.mark.parametrize(
    "stages",
    [["download", "caption"], ["caption"], ["download", "caption", "fuse"], []],
)
def test_model_stages_stay_in_one_process(stages):
    # a model per worker process would be loaded once per core
    assert local_beam_args([], stages, SIX_SHARDS, cores=2) == []


def test_small_or_single_shard_or_single_core_jobs_stay_in_process():
    half = AUTO_PROCESSES_MIN_ROWS // 2 - 1
    assert local_beam_args([], ["download"], [half, half], cores=2) == []
    assert local_beam_args([], ["download"], [5000], cores=2) == []
    assert local_beam_args([], ["download"], SIX_SHARDS, cores=1) == []


@pytest.mark.parametrize(
    "user",
    [
        ["--direct_num_workers=1"],
        ["--direct_running_mode=in_memory"],
        ["--direct_running_mode", "multi_threading"],
        ["--runner", "DataflowRunner"],
    ],
)
def test_the_users_choice_and_other_runners_are_left_alone(user):
    assert local_beam_args(user, ["download"], SIX_SHARDS, cores=2) == user


def test_cpu_only_beam_args_drop_what_rents_gpus():
    from pipeline.runner_options import cpu_only_beam_args

    args = [
        "--runner", "DataflowRunner", "--project", "p",
        "--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver",
        "--dataflow_service_options", "enable_prime",
        "--machine_type", "g2-standard-8",
        "--experiments=use_runner_v2,no_use_multiple_sdk_containers",
        "--sdk_container_image=gcr.io/p/vecap-gpu:1",
    ]  # fmt: skip
    kept, dropped = cpu_only_beam_args(args)
    assert kept == [
        "--runner", "DataflowRunner", "--project", "p",
        "--dataflow_service_options=enable_prime",
        "--experiments=use_runner_v2",
        "--sdk_container_image=gcr.io/p/vecap-gpu:1",
    ]  # fmt: skip
    assert len(dropped) == 3 and any("worker_accelerator" in d for d in dropped)
    # a CPU machine type and other runners' options stay as they are
    same = ["--worker_machine_type=n2-standard-8", "--direct_num_workers=2", "--streaming"]
    assert cpu_only_beam_args(same) == (same, [])
