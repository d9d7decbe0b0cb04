"""Engine servers under a portable runner: Prism with EXTERNAL SDK workers (separate processes
from Beam's worker pool, launched with the FlinkRunner's flags), two fake GPUs on the simulated
engine. However many SDK processes the runner starts, each model gets one server per GPU,
each on its own device, and the output equals the local runner's."""

from __future__ import annotations

import signal

import pytest

from pipeline.portable_local import find_prism, runner_args, start_job_server, start_worker_pool
from pipeline.sample.server import SAMPLE_DIR, SampleServer
from tests.fixtures.sim_engines import server_records
from tests.pipeline.test_portable import ROWS, _argv, _check_output, _run, _same_rows, _table


@pytest.mark.slow
@pytest.mark.portable
@pytest.mark.timeout(900)
def test_one_engine_per_gpu_per_model_under_prism(sim_fleet_env, tiny_models, tmp_path):
    find_prism()  # make test builds it: missing is a failure, not a skip
    engines = ["--backend", "vllm", "--gpus", "0,1"]
    services = []
    try:
        with SampleServer(root_dir=SAMPLE_DIR) as server:
            table, _slow = _table(server, tmp_path / "in.csv")
            local = tmp_path / "local"
            _run(_argv(table, local, tiny_models, engines))
            want = _check_output(local, ROWS)
            assert not server_records(sim_fleet_env)  # the local launcher stopped its servers

            # the pool inherits this environment: the fake GPUs, the simulated engine, the registry
            pool = start_worker_pool(tmp_path / "worker-pool")
            services.append(pool)
            job_server = start_job_server("prism", tmp_path / "job-server")
            services.append(job_server)
            out = tmp_path / "prism"
            beam = runner_args("prism", job_server, pool, parallelism=2)
            _run(_argv(table, out, tiny_models, engines + beam))
            _same_rows(_check_output(out, ROWS), want)
    finally:
        for service in reversed(services):
            service.kill(signal.SIGKILL)
    # the SDK workers started the servers (a portable launcher does not): one per GPU per model
    records = server_records(sim_fleet_env)
    by_model: dict[str, list[str]] = {}
    for r in records:
        by_model.setdefault(r["model"], []).append(r["cuda_visible_devices"])
    assert sorted(by_model) == sorted([str(tiny_models.llava), str(tiny_models.llm)])
    assert all(sorted(devices) == ["0", "1"] for devices in by_model.values()), by_model
    starts = [p.read_text().count("== vecap: starting") for p in sim_fleet_env.glob("*.log")]
    # one log per (model, GPU): started once by the local run, once by the portable run's workers
    assert starts == [2, 2, 2, 2]
