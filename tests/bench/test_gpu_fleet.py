"""bench/gpu_fleet.py: the fleet figures from the simulated servers' stats, on made-up stats
(the benchmark itself runs `vecap run` three times: minutes, so not here)."""

from __future__ import annotations

import importlib.util

import pytest

from tests.net_tripwire import REPO_ROOT

_spec = importlib.util.spec_from_file_location("gpu_fleet", REPO_ROOT / "bench" / "gpu_fleet.py")
gpu_fleet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_fleet)
sim = gpu_fleet.sim


def _server(model: str, requests: int, prompt: float, output: float, busy_s: float, t0: float,
            t1: float, in_flight: float, gpu: int) -> dict:  # fmt: skip
    return {
        "model": model, "cuda_visible_devices": str(gpu), "sim_scale": 8.0,
        "max_num_seqs": 256, "max_num_batched_tokens": 8192, "requests_done": requests,
        "requests_failed": 0, "prefill_tokens": prompt * requests,
        "output_tokens": output * requests, "busy_s": busy_s, "first_request_unix": t0,
        "end_unix": t1, "window_s": t1 - t0, "mean_in_flight": in_flight,
        "max_in_flight": 256, "mean_running": in_flight, "cpu_s": 1.5,
    }  # fmt: skip


@pytest.mark.parametrize(("load", "busy"), [(1.0, 1.0), (0.5, 0.8)])
def test_utilization_is_busy_times_step_efficiency(load, busy):
    a = sim.default_args(sim_scale=8.0)
    c_cap, c_fus = sim.capacity(577, 33, a), sim.capacity(250, 32, a)
    window, n = 100.0, 2
    per_gpu = 1 / (1 / c_cap + 1 / c_fus)  # rows/s of one GPU at saturation
    rows = round(load * per_gpu * window)  # per GPU
    servers = []
    for gpu in range(n):
        share_cap = (1 / c_cap) / (1 / c_cap + 1 / c_fus)
        servers.append(
            _server("cap", rows, 577, 33, busy * window * share_cap, 1000.0, 1090.0, 200, gpu)
        )
        servers.append(
            _server("fus", rows, 250, 32, busy * window * (1 - share_cap), 1005.0, 1100.0, 100, gpu)
        )
    f = gpu_fleet.fleet_figures(n, servers, "cap", "fus")
    assert f["rows"] == n * rows and f["window_s"] == pytest.approx(window)
    assert f["fleet_capacity"] == pytest.approx(n * per_gpu)
    assert f["rows_per_s"] == pytest.approx(n * rows / window)
    assert f["fleet_utilization"] == pytest.approx(load, abs=0.01)
    assert f["gpu_busy"] == pytest.approx(busy)
    assert f["fleet_utilization"] == pytest.approx(f["gpu_busy"] * f["step_efficiency"])
    assert f["mean_in_flight"] == pytest.approx(150)
    assert f["fusion_starts_after_s"] == pytest.approx(5.0)
    assert f["sim_cpu_s"] == pytest.approx(4 * 1.5)


def test_a_missing_server_is_an_error():
    s = _server("cap", 10, 577, 33, 1.0, 0.0, 1.0, 1, 0)
    with pytest.raises(SystemExit, match="fusion servers"):
        gpu_fleet.fleet_figures(1, [s], "cap", "fus")


def test_tree_cpu_interpolates_between_samples():
    t = gpu_fleet.TreeCPU.__new__(gpu_fleet.TreeCPU)
    t.samples = [(10.0, 1.0, 2.0), (11.0, 2.0, 4.0)]
    assert t.at(9.0) == (1.0, 2.0)
    assert t.at(10.5) == pytest.approx((1.5, 3.0))
    assert t.at(12.0) == (2.0, 4.0)


def test_parse_args_quick_has_fewer_rows():
    assert gpu_fleet.parse_args(["--quick"]).rows_per_gpu < gpu_fleet.parse_args([]).rows_per_gpu
    assert gpu_fleet.parse_args([]).fleet_sizes == (1, 2, 4)
