"""The engine fleet on simulated GPUs: one server per GPU per machine, each on its own device,
shared by every process, many requests in flight, each answer on its own row, restarts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline.generation import GenerationConfig, load_generator
from pipeline.generation.devices import GpuSelectionError, engine_slots
from pipeline.generation.factory import release_engines
from pipeline.generation.recovery import EngineFatalError
from pipeline.generation.server_backend import fleet_for
from pipeline.generation.server_client import completion_text
from tests.fixtures.sim_engines import REPO, server_records, sim_stats, stop_all


def _config(model, **kw) -> GenerationConfig:
    return GenerationConfig(model=str(model), backend="vllm", max_new_tokens=40, **kw)


# --------------------------------------------------------------------------- devices


def test_slots_cover_every_visible_gpu_once():
    slots = engine_slots(None, visible=["0", "1", "2", "3"])
    assert [s.cuda_visible_devices for s in slots] == ["0", "1", "2", "3"]
    assert [s.cuda_visible_devices for s in engine_slots("1,3", visible=["4", "5", "6", "7"])] == [
        "5",
        "7",
    ]
    assert [s.cuda_visible_devices for s in engine_slots(None, 2, visible=list("0123"))] == [
        "0,1",
        "2,3",
    ]
    cpu = engine_slots(None, visible=[])
    assert len(cpu) == 1 and cpu[0].cuda_visible_devices is None


@pytest.mark.parametrize(
    "spec, tp, match",
    [
        ("4", 1, "does not exist"),
        ("0,0", 1, "twice"),
        ("a,b", 1, "indices"),
        ("0,1,2", 2, "divide"),
    ],
)
def test_bad_gpu_choices_are_errors(spec, tp, match):
    with pytest.raises(GpuSelectionError, match=match):
        engine_slots(spec, tp, visible=["0", "1", "2", "3"])


def test_gpus_on_a_machine_without_gpus_is_an_error():
    with pytest.raises(GpuSelectionError, match="no GPU"):
        engine_slots("0", visible=[])


# --------------------------------------------------------------------------- one per GPU


def test_each_fake_gpu_gets_exactly_one_engine(sim_fleet_env, tiny_models):
    gen = load_generator(_config(tiny_models.llm), multimodal=False)
    seen = [sim_stats(e.base_url)["cuda_visible_devices"] for e in gen.pool.endpoints]
    assert sorted(seen) == ["0", "1", "2", "3"]  # distinct, and they cover every GPU
    assert len({r["pid"] for r in server_records(sim_fleet_env)}) == 4


def test_gpus_choose_the_devices(sim_fleet_env, tiny_models):
    gen = load_generator(_config(tiny_models.llm, gpus="1,3"), multimodal=False)
    assert sorted(sim_stats(e.base_url)["cuda_visible_devices"] for e in gen.pool.endpoints) == [
        "1",
        "3",
    ]


_ENSURE = """
import json, sys
sys.path.insert(0, {repo!r})
from pipeline.generation import GenerationConfig
from pipeline.generation.fleet import Fleet
fleet = Fleet(GenerationConfig(model={model!r}, backend="vllm"), multimodal=False)
print(json.dumps(sorted(e.base_url for e in fleet.ensure())))
"""


def test_processes_on_one_machine_share_one_engine_per_gpu(sim_fleet_env, tiny_models):
    """Five SDK-like processes asking at once: still four servers, and all use the same four."""
    code = _ENSURE.format(repo=str(REPO), model=str(tiny_models.llm))
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(5)
    ]
    answers = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert all(a == answers[0] for a in answers) and len(answers[0]) == 4
    records = server_records(sim_fleet_env)
    assert len(records) == 4 and len({r["pid"] for r in records}) == 4
    assert sorted(r["cuda_visible_devices"] for r in records) == ["0", "1", "2", "3"]


# --------------------------------------------------------------------------- requests


def test_concurrent_callers_each_get_their_own_rows(sim_fleet_env, tiny_models):
    """8 threads x 24 prompts at once equal each prompt sent alone, row for row."""
    gen = load_generator(_config(tiny_models.llm), multimodal=False)
    jobs = [[f"thread {t} row {i}: a red bicycle" for i in range(24)] for t in range(8)]
    alone = {p: gen.generate([p])[0] for p in jobs[0][:4] + jobs[7][-4:]}
    barrier = threading.Barrier(len(jobs))

    def run(prompts):
        barrier.wait()
        return gen.generate(prompts)

    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(run, jobs))
    assert all(len(out) == 24 for out in together)
    flat = {
        p: out
        for prompts, outs in zip(jobs, together, strict=True)
        for p, out in zip(prompts, outs, strict=True)
    }
    assert len(set(flat.values())) == len(flat)  # every row its own answer
    for p, text in alone.items():
        assert flat[p] == text
    peak = max(s["peak_in_flight"] for s in gen.stats().values())
    assert peak > 8, "requests did not overlap: no continuous batching to feed"


def test_in_flight_per_engine_is_capped_by_max_in_flight(sim_fleet_env, tiny_models):
    gen = load_generator(_config(tiny_models.llm, gpus="0", max_in_flight=5), multimodal=False)
    futures = [gen.submit(f"row {i}") for i in range(40)]
    assert len({completion_text(f.result(timeout=60)) for f in futures}) == 40
    [state] = gen.stats().values()
    assert state["peak_in_flight"] == 5
    assert sim_stats(gen.pool.endpoints[0].base_url)["max_in_flight"] <= 5


def test_a_killed_engine_is_replaced_and_every_request_answered(
    sim_fleet_env, tiny_models, tmp_path, monkeypatch
):
    prompts = [f"row {i} of the job" for i in range(60)]
    reference = load_generator(_config(tiny_models.llm, gpus="0,1"), multimodal=False)
    expected = reference.generate(prompts)
    stop_all(sim_fleet_env)
    release_engines()
    # a fresh fleet whose first server dies mid-step after 12 requests (once)
    monkeypatch.setenv("VECAP_ENGINE_DIR", str(tmp_path / "engines2"))
    monkeypatch.setenv("VECAP_SIM_DIE_AFTER", "12")
    monkeypatch.setenv("VECAP_SIM_DIE_ONCE_FILE", str(tmp_path / "died-once"))
    try:
        gen = load_generator(_config(tiny_models.llm, gpus="0,1"), multimodal=False)
        got = gen.generate(prompts)
        records = server_records(tmp_path / "engines2")
    finally:
        stop_all(tmp_path / "engines2")
    assert (tmp_path / "died-once").exists()
    assert got == expected  # nothing lost, nothing failed, every row its own answer
    assert max(r["generation"] for r in records) == 1
    assert sum(r["restarts"] for r in records) == 1


def test_restarts_are_bounded(sim_fleet_env, tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("VECAP_SIM_DIE_AFTER", "3")
    monkeypatch.setenv("VECAP_SIM_DIE_ONCE_FILE", str(tmp_path / "died-once"))
    gen = load_generator(
        _config(tiny_models.llm, gpus="0", max_engine_restarts=0), multimodal=False
    )
    with pytest.raises(EngineFatalError, match="max_engine_restarts"):
        gen.generate([f"row {i}" for i in range(10)])


def test_openai_backend_sends_the_key_and_refuses_a_wrong_one(tiny_models, tmp_path, monkeypatch):
    from pipeline.generation.engine_server import free_port, is_healthy

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "sim_gpu_server.py"), "--port", str(port),
         "--model", "served-tiny", "--api-key", "s3cret", "--sim-startup-s", "0.1",
         "--sim-scale", "0.1"],
    )  # fmt: skip
    try:
        for _ in range(100):
            if is_healthy(f"http://127.0.0.1:{port}"):
                break
            threading.Event().wait(0.1)
        cfg = dict(
            backend="openai",
            base_url=f"http://127.0.0.1:{port}/v1",
            served_model_name="served-tiny",
            api_key_env="VECAP_TEST_KEY",
        )
        monkeypatch.setenv("VECAP_TEST_KEY", "s3cret")
        gen = load_generator(GenerationConfig(model=str(tiny_models.llm), **cfg), False)
        assert len(set(gen.chat(["one", "two", "three"]))) == 3
        monkeypatch.setenv("VECAP_TEST_KEY", "wrong")
        release_engines()  # the key is read when the engine is loaded
        wrong = load_generator(
            GenerationConfig(model=str(tiny_models.llm), max_new_tokens=9, **cfg), False
        )
        with pytest.raises(EngineFatalError, match="401"):
            wrong.chat(["one"])
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_vllm_backend_without_vllm_names_the_install(tiny_models, monkeypatch):
    monkeypatch.delenv("VECAP_ENGINE_SERVER_CMD", raising=False)
    if __import__("importlib").util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    with pytest.raises(ImportError, match="pip install"):
        load_generator(_config(tiny_models.llm), multimodal=False)


def test_fleet_stop_stops_the_servers(sim_fleet_env, tiny_models):
    from pipeline.generation.engine_server import is_alive

    fleet = fleet_for(_config(tiny_models.llm, gpus="0,1"), False)
    fleet.ensure()
    pids = [r["pid"] for r in server_records(sim_fleet_env)]
    fleet.stop()
    assert pids and not any(is_alive(p) for p in pids)
    assert not server_records(sim_fleet_env)
    assert os.path.isdir(sim_fleet_env)


def test_in_process_models_claim_one_gpu_each(tmp_path):
    """transformers: each worker process claims its own GPU; past the last they share."""
    code = (
        f"import sys, time; sys.path.insert(0, {str(REPO)!r});"
        "from pipeline.generation.devices import claim_gpu;"
        "print(claim_gpu(None, ['0', '1', '2']), flush=True); time.sleep(3)"
    )
    env = {**os.environ, "VECAP_ENGINE_DIR": str(tmp_path)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(4)
    ]
    got = [int(p.communicate(timeout=60)[0].split()[-1]) for p in procs]
    assert len(got) == 4 and set(got) == {0, 1, 2}  # every GPU claimed; the fourth shares one


def test_vecap_engines_lists_and_stops_the_machines_servers(sim_fleet_env, tiny_models, capsys):
    from pipeline.cli import main
    from pipeline.generation.engine_server import is_alive

    fleet_for(_config(tiny_models.llm, gpus="0,1"), False).ensure()
    pids = [r["pid"] for r in server_records(sim_fleet_env)]
    assert main(["engines"]) == 0
    listed = capsys.readouterr().out
    assert listed.count("healthy") == 2 and "gpu0" in listed and "gpu1" in listed
    assert main(["engines", "--stop"]) == 0
    assert "stopped 2 server(s)" in capsys.readouterr().out
    assert not any(is_alive(p) for p in pids) and not server_records(sim_fleet_env)


def test_an_engine_that_cannot_restart_fails_the_bundle_not_its_rows(
    sim_fleet_env, tiny_models, monkeypatch
):
    from pipeline.generation.engine_server import stop_server

    gen = load_generator(_config(tiny_models.llm, gpus="0"), multimodal=False)
    assert gen.generate(["before"])
    [record] = server_records(sim_fleet_env)
    stop_server(record["pid"])  # the engine dies; its replacement exits at start
    monkeypatch.setenv("VECAP_ENGINE_SERVER_CMD", f"{sys.executable} -c 'raise SystemExit(3)'")
    with pytest.raises(EngineFatalError, match="could not be restarted"):
        gen.generate(["after"])
