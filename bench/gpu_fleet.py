"""vecap's engine-server layer on N simulated GPUs: does `vecap run` keep a fleet busy?

What runs (all on this CPU machine, loopback only; every child loads the network tripwire)
    Once: the tiny offline models (``llava_recap.tiny_models``: vecap loads their tokenizer and
    image processor; the simulated servers ignore weights), the bundled sample photos on a
    loopback server repeated to ``rows_per_gpu x 4`` rows (duplicate URLs, each row its own alt
    text ``"<alt> (row i)"``) and ONE download-only ``vecap run`` of them (shards of
    ``rows_per_gpu / 4`` rows). Each fleet size N in 1, 2, 4 then continues a view of that output
    holding its first ``4 N`` shards (``rows_per_gpu x N`` rows, hard links; default 250 x N, so
    each run lasts about as long), through the real CLI in a subprocess::

        vecap run --from VIEW --output OUT --stages caption,fuse --backend vllm
            --caption-model tiny-llava --fusion-model tiny-llama --max-new-tokens 40
            --direct_running_mode=multi_processing --direct_num_workers=2

    with ``CUDA_VISIBLE_DEVICES=0,..,N-1`` and ``VECAP_ENGINE_SERVER_CMD`` =
    ``<python> bench/sim_gpu_server.py --sim-scale 8 --sim-startup-s 0.5``: vecap's launcher
    starts its fleet (a caption and a fusion server on every GPU: 2N servers, vLLM's flags), the
    two SDK worker processes stream rows to them (``pipeline/inflight.py``, 512 in flight per
    engine per worker) and the launcher stops them at the end. The worker count is given
    explicitly so that every N runs the same process shape (the local runner's own default runs
    a job under 1,000 rows in one process). ``VECAP_ENGINE_DIR``, ``VECAP_SIM_GPU_DIR`` and
    ``VECAP_SIM_STATS_DIR`` are fresh per run.

The simulated GPU (``bench/sim_gpu_server.py``'s docstring states the model)
    vLLM-style continuous batching: every scheduler step admits waiting requests while fewer
    than ``max_num_seqs`` B = 256 sequences run, has a budget of K = 8192 tokens (one per
    decoding sequence, then prefill chunks in arrival order) and takes
    ``scale * (6 ms + 23 us x prefill tokens + 0.1 ms x decoding sequences)`` (LLaVA-1.5-7B or
    a 7B LLM in bf16 on an H100 at scale 1). Prompt tokens: a caption is 576 image tokens plus
    its text (577 here), a fusion prompt ~250; output tokens ``min(40, L)``, L in 25..40 (~33).
    The caption and the fusion server of one GPU share it (``flock`` time-slicing, one step at a
    time). Here ``--sim-scale 8``: one simulated GPU does

        D = 7.23 caption images/s at saturation (57.9/s at scale 1), and 13.0 fusions/s,

    so one GPU's row capacity (caption + fusion of a row on the same GPU) is
    ``1 / (1/C_caption + f/C_fusion)`` = 4.65 rows/s (f: fusion requests per row, 1 here), and
    a fleet of N does N times that. Scale 8 keeps vecap's CPU well inside the 2 cores at N = 4
    (about 18.6 rows/s x 21-24 ms of steady-state CPU a row = 0.4 core, plus ~0.18 core for
    the 8 simulator processes).

Figures per N (from the servers' ``/sim/stats``, written to ``VECAP_SIM_STATS_DIR`` every
second and when vecap stops them, and from the ``vecap run`` process tree)
    - rows: caption requests answered (the rows that reach the models; the sample's fault rows,
      about 8 %, fail at download and pass through); ``window_s``: from the first request any
      server received to the last answer; ``rows_per_s`` = rows / window_s;
      ``rows_per_s_wall`` = rows / the ``vecap run`` process's lifetime (``wall_s``: start-up,
      the serving window, teardown);
    - ``fleet_capacity`` = N x one GPU's row capacity (above) with C = ``capacity()`` at the
      mean prompt and output tokens the servers actually saw; ``fleet_utilization`` =
      rows_per_s / fleet_capacity. It factors exactly as ``gpu_busy x step_efficiency``:
      ``gpu_busy`` = simulated GPU time of the 2N servers / (N x window) (below 1: a GPU had
      nothing to run, vecap did not feed it), ``step_efficiency`` = the GPU-seconds the rows
      take at saturation / the GPU-seconds they took (below 1: steps ran with fewer than B
      sequences, i.e. too few requests in flight: the fill at the start, the drain at the end,
      or a job with fewer rows per GPU than B);
    - ``mean_in_flight``: each server's time-weighted mean of requests in flight over its own
      window (first request to last answer), averaged over the 2N engines (and per model);
    - ``cpu_ms_per_row``: CPU of the ``vecap run`` process tree (``getrusage`` of the reaped
      tree, the simulators included) minus the simulators' own CPU (their ``cpu_s``), per
      row; it includes a run's fixed cost (imports, Beam, the two worker processes, model
      tokenizers: ~30 CPU-s). ``cpu_ms_per_row_window``: the tree's CPU inside the serving
      window only (psutil every 0.5 s, simulator processes excluded), the steady-state cost
      that bounds the rate on these 2 cores; ``window_cpu_cores`` = that CPU / window.

Targets: ``fleet_utilization >= 0.9`` at N = 4 and ``scaling_4`` (rows/s at N = 4 over N = 1)
``>= 3.6``. ``--quick``: 60 rows per GPU, a smoke run whose figures are dominated by the fill
and drain. The whole benchmark takes 4-5 minutes here (each run 20-35 s of start-up and
teardown around a ~52 s window). Last line: one JSON object (``fleet_utilization``,
``scaling_4``, ``cpu_ms_per_row`` at N = 4, D, the scale, and every N's figures).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' network tripwire, for every child process
from tests.net_tripwire import child_env  # noqa: E402

SIM_SCRIPT = ROOT / "bench" / "sim_gpu_server.py"
_spec = importlib.util.spec_from_file_location("sim_gpu_server", SIM_SCRIPT)
sim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sim)

FLEET_SIZES = (1, 2, 4)
WORKERS = 2  # the local runner's SDK worker processes (one per core here)
MAX_NEW_TOKENS = 40


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: fewer rows")
    p.add_argument("--rows-per-gpu", type=int, default=None)
    p.add_argument("--shards-per-worker", type=int, default=2)
    p.add_argument("--sim-scale", type=float, default=8.0)
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--max-in-flight", type=int, default=None)
    p.add_argument("--sim-startup-s", type=float, default=0.5)
    p.add_argument("--fleet-sizes", default=",".join(map(str, FLEET_SIZES)))
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    a = p.parse_args(argv)
    if a.rows_per_gpu is None:
        a.rows_per_gpu = 60 if a.quick else 250
    a.fleet_sizes = tuple(int(x) for x in a.fleet_sizes.split(","))
    return a


# --------------------------------------------------------------------------- input


def _write_table(base_url: str, dest: Path, rows: int, work: Path) -> Path:
    from pipeline.sample.server import sample_input_table

    sample = list(csv.DictReader(sample_input_table(base_url, work / "sample.csv").open()))
    with dest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["url", "caption"])
        for i in range(rows):
            r = sample[i % len(sample)]
            w.writerow([r["url"], f"{r['caption']} (row {i})"])  # one alt text per row
    return dest


def _vecap(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "run", *args]


def download_once(work: Path, rows: int, shard_size: int, env: dict[str, str]) -> Path:
    from pipeline.sample.server import SAMPLE_DIR, SampleServer

    out = work / "downloaded"
    with SampleServer(root_dir=SAMPLE_DIR) as server:
        table = _write_table(server.base_url, work / "in.csv", rows, work)
        argv = _vecap(
            "--input", str(table), "--output", str(out), "--stages", "download",
            "--shard-size", str(shard_size), "--allow-private-networks", "--no-progress",
            "--set", "download.retries=0",
        )  # fmt: skip
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"download failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return out


def source_view(downloaded: Path, shard_ids: list[int], dest: Path) -> Path:
    """An earlier output holding only ``shard_ids`` of ``downloaded`` (hard links)."""
    from pipeline.io.writer import finished_shards

    stats = finished_shards(str(downloaded))
    (dest / "shards").mkdir(parents=True)
    shutil.copy2(downloaded / "manifest.json", dest / "manifest.json")
    for sid in shard_ids:
        s = stats[sid]
        for name in (s.parquet, f"part-{sid:05d}.stats.json"):
            os.link(downloaded / "shards" / name, dest / "shards" / name)
    return dest


# --------------------------------------------------------------------------- one fleet size


class TreeCPU:
    """CPU seconds of a process tree, sampled: per pid the largest figure seen (a process that
    exits between two samples keeps its last one), the simulator servers set apart."""

    def __init__(self, root: int) -> None:
        import psutil

        self.root = psutil.Process(root)
        self.seen: dict[int, float] = {}
        self.sims: set[int] = set()
        self.samples: list[tuple[float, float, float]] = []  # (time, launcher, workers)

    def sample(self) -> None:
        import psutil

        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for p in procs:
            try:
                t = p.cpu_times()
                if p.pid not in self.seen and SIM_SCRIPT.name in " ".join(p.cmdline()):
                    self.sims.add(p.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            self.seen[p.pid] = max(self.seen.get(p.pid, 0.0), t.user + t.system)
        launcher = self.seen.get(self.root.pid, 0.0)
        others = sum(t for pid, t in self.seen.items() if pid not in self.sims) - launcher
        self.samples.append((time.time(), launcher, others))

    def at(self, t: float) -> tuple[float, float]:
        """(launcher, other vecap processes) CPU so far at time ``t``, linear between samples."""
        s = self.samples
        if not s:
            return 0.0, 0.0
        if t <= s[0][0]:
            return s[0][1], s[0][2]
        for prev, cur in zip(s, s[1:], strict=False):
            if t <= cur[0]:
                f = (t - prev[0]) / (cur[0] - prev[0]) if cur[0] > prev[0] else 1.0
                return (prev[1] + f * (cur[1] - prev[1]), prev[2] + f * (cur[2] - prev[2]))
        return s[-1][1], s[-1][2]


def run_fleet(
    n: int, source: Path, models, work: Path, a: argparse.Namespace, tripwire_log: Path
) -> dict:
    out = work / f"out-{n}"
    stats_dir, gpu_dir, engine_dir = (work / f"{k}-{n}" for k in ("stats", "gpu", "engines"))
    for d in (stats_dir, gpu_dir, engine_dir):
        d.mkdir()
    sim_cmd = [
        sys.executable, str(SIM_SCRIPT), "--sim-scale", str(a.sim_scale),
        "--sim-startup-s", str(a.sim_startup_s),
    ]  # fmt: skip
    env = child_env(tripwire_log)
    env.update(
        CUDA_VISIBLE_DEVICES=",".join(str(i) for i in range(n)),
        VECAP_ENGINE_SERVER_CMD=" ".join(sim_cmd),
        VECAP_ENGINE_DIR=str(engine_dir),
        VECAP_SIM_GPU_DIR=str(gpu_dir),
        VECAP_SIM_STATS_DIR=str(stats_dir),
    )
    argv = _vecap(
        "--from", str(source), "--output", str(out), "--stages", "caption,fuse",
        "--backend", "vllm", "--caption-model", str(models.llava),
        "--fusion-model", str(models.llm), "--max-new-tokens", str(MAX_NEW_TOKENS),
        "--no-progress",
        # the same process shape at every N (the local runner's own default would run the
        # smaller jobs, under 1,000 rows, in one process)
        "--direct_running_mode=multi_processing", f"--direct_num_workers={WORKERS}",
    )  # fmt: skip
    if a.max_in_flight is not None:
        argv += ["--max-in-flight", str(a.max_in_flight)]
    if a.max_num_seqs is not None:
        for stage in ("caption", "fusion"):
            argv += ["--set", f"{stage}.generation.max_num_seqs={a.max_num_seqs}"]
    log_path = work / f"vecap-{n}.log"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        cpu = TreeCPU(proc.pid)
        while True:
            cpu.sample()
            try:
                proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                continue
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = log_path.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"vecap run (N={n}) failed ({proc.returncode}):\n{text[-4000:]}")
    servers = [json.loads(p.read_text()) for p in sorted(stats_dir.glob("sim-*.json"))]
    if len(servers) != 2 * n:
        raise SystemExit(f"N={n}: {len(servers)} simulator stats files, expected {2 * n}")
    tree_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return summarize(n, servers, models, t0, wall, tree_cpu, cpu, text, out)


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def _model_figures(group: list[dict], n: int, kind: str) -> dict:
    if len(group) != n:
        raise SystemExit(f"N={n}: {len(group)} {kind} servers, expected {n}")
    done = sum(s["requests_done"] for s in group)
    if done == 0:
        raise SystemExit(f"N={n}: the {kind} servers answered no request")
    s0 = group[0]
    cap_args = sim.default_args(
        sim_scale=s0["sim_scale"],
        max_num_seqs=s0["max_num_seqs"],
        max_num_batched_tokens=s0["max_num_batched_tokens"],
    )
    prompt = sum(s["prefill_tokens"] for s in group) / done
    output = sum(s["output_tokens"] for s in group) / done
    return {
        "requests": done,
        "failed": sum(s["requests_failed"] for s in group),
        "prompt_tokens": prompt,
        "output_tokens": output,
        "capacity": sim.capacity(prompt, output, cap_args),  # requests/s of one GPU, saturated
        "mean_in_flight": _mean(s["mean_in_flight"] for s in group),
        "max_in_flight": max(s["max_in_flight"] for s in group),
        "mean_running": _mean(s["mean_running"] for s in group),
        "busy_s": sum(s["busy_s"] for s in group),
        "cpu_s": sum(s["cpu_s"] for s in group),
        "window_s": _mean(s["window_s"] for s in group),
        "first": min(s["first_request_unix"] for s in group),
        "end": max(s["end_unix"] for s in group),
        "max_num_seqs": s0["max_num_seqs"],
    }


def fleet_figures(n: int, servers: list[dict], caption_model: str, fusion_model: str) -> dict:
    """The serving figures of one run from its 2N servers' stats (the module doc's
    definitions); ``*_model``: the served model names of the two stages."""
    per = {
        "caption": _model_figures([s for s in servers if s["model"] == caption_model], n, "caption"),
        "fusion": _model_figures([s for s in servers if s["model"] == fusion_model], n, "fusion"),
    }  # fmt: skip
    cap, fus = per["caption"], per["fusion"]
    rows = cap["requests"]  # a row = one image through caption (and fusion)
    first, last = min(cap["first"], fus["first"]), max(cap["end"], fus["end"])
    window = last - first
    # one GPU's seconds per row at saturation: its caption, the row's share of fusions
    gpu_s_per_row = 1 / cap["capacity"] + (fus["requests"] / rows) / fus["capacity"]
    fleet_capacity = n / gpu_s_per_row
    busy = cap["busy_s"] + fus["busy_s"]
    return {
        "n": n,
        "rows": rows,
        "failed_requests": cap["failed"] + fus["failed"],
        "first": first,
        "last": last,
        "window_s": window,
        "fusion_starts_after_s": fus["first"] - cap["first"],
        "rows_per_s": rows / window,
        "fleet_capacity": fleet_capacity,
        "fleet_utilization": rows / window / fleet_capacity,
        # utilization = gpu_busy x step_efficiency
        "gpu_busy": busy / (n * window),
        "step_efficiency": rows * gpu_s_per_row / busy,
        "mean_in_flight": _mean(s["mean_in_flight"] for s in servers),
        "sim_cpu_s": cap["cpu_s"] + fus["cpu_s"],
        "models": per,
    }


def summarize(n, servers, models, t0, wall, tree_cpu, cpu: TreeCPU, text, out) -> dict:
    from pipeline.io.writer import finished_shards

    f = fleet_figures(n, servers, str(models.llava), str(models.llm))
    rows, first, last = f["rows"], f.pop("first"), f.pop("last")
    vecap_cpu = tree_cpu - f["sim_cpu_s"]
    (l0, w0), (l1, w1) = cpu.at(first), cpu.at(last)
    window_cpu = (l1 - l0) + (w1 - w0)
    sampled = cpu.samples[-1][1] + cpu.samples[-1][2] if cpu.samples else 0.0
    shards = finished_shards(str(out))
    return f | {
        "rows_written": sum(s.rows for s in shards.values()),
        "shards": len(shards),
        "wall_s": wall,
        "startup_s": first - t0,  # launch to the first request
        "teardown_s": t0 + wall - last,  # the last answer to the process's exit
        "rows_per_s_wall": rows / wall,
        "cpu_ms_per_row": 1000 * vecap_cpu / rows,
        "cpu_ms_per_row_sampled": 1000 * sampled / rows,
        "cpu_ms_per_row_window": 1000 * window_cpu / rows,
        "launcher_ms_per_row_window": 1000 * (l1 - l0) / rows,
        "window_cpu_cores": window_cpu / f["window_s"],
        "fixed_cpu_s": vecap_cpu - window_cpu,
        "sim_cpu_ms_per_row": 1000 * f["sim_cpu_s"] / rows,
        "cpu_cores_wall": tree_cpu / wall,
        "engines_ready": [line for line in text.splitlines() if "engine(s) on" in line],
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    from llava_recap.tiny_models import build_tiny_models

    a = parse_args(argv)
    t_start = time.time()
    work = Path(tempfile.mkdtemp(prefix="vecap-bench-gpu-fleet-"))
    tripwire_log = work / "tripwire.log"
    env = child_env(tripwire_log)
    os.environ.update({k: env[k] for k in ("PYTHONPATH", "VECAP_NET_TRIPWIRE_LOG")})
    d = sim.capacity(577, 33.3, sim.default_args(sim_scale=a.sim_scale))
    print(
        f"simulated GPU: --sim-scale {a.sim_scale:g}, max_num_seqs "
        f"{a.max_num_seqs or 256}: D = {d:.2f} caption images/s at saturation "
        f"(577 prompt tokens, 33.3 output); {a.rows_per_gpu} rows per GPU per run",
        flush=True,
    )
    results: list[dict] = []
    try:
        models = build_tiny_models(work / "models")
        shard_size = max(1, a.rows_per_gpu * min(a.fleet_sizes) // (WORKERS * a.shards_per_worker))
        shards_per_gpu = a.rows_per_gpu // shard_size
        total_shards = shards_per_gpu * max(a.fleet_sizes)
        t0 = time.time()
        downloaded = download_once(work, total_shards * shard_size, shard_size, env)
        print(
            f"download (once): {total_shards * shard_size} rows in {total_shards} shards of "
            f"{shard_size} in {time.time() - t0:.1f} s; each N continues its first "
            f"{shards_per_gpu} x N shards",
            flush=True,
        )
        for n in a.fleet_sizes:
            view = source_view(downloaded, list(range(shards_per_gpu * n)), work / f"from-{n}")
            r = run_fleet(n, view, models, work, a, tripwire_log)
            results.append(r)
            for line in r["engines_ready"]:
                print(f"  N={n}: {line.replace(str(work), '<work>')}")
            print(f"N={n}: {json.dumps(_rounded(r))}", flush=True)
    finally:
        if a.keep:
            print(f"work dir kept: {work}")
        violations = tripwire_log.read_text() if tripwire_log.exists() else ""
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    if violations.strip():
        raise SystemExit(f"network tripwire: non-loopback traffic was attempted:\n{violations}")
    report(results, a, d, time.time() - t_start)


def _rounded(r: dict) -> dict:
    out = {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
    out.pop("engines_ready", None)
    out["models"] = {
        kind: {
            k: round(v, 3) if isinstance(v, float) else v
            for k, v in m.items()
            if k not in ("first", "end")  # wall-clock instants
        }
        for kind, m in r["models"].items()
    }
    return out


def report(results: list[dict], a: argparse.Namespace, d: float, total_s: float) -> None:
    by_n = {r["n"]: r for r in results}
    print()
    cols = (
        ("N", "n", 3, "d"), ("rows", "rows", 6, "d"), ("rows/s", "rows_per_s", 8, ".2f"),
        ("capacity", "fleet_capacity", 10, ".2f"), ("util", "fleet_utilization", 7, ".3f"),
        ("busy", "gpu_busy", 7, ".3f"), ("step_eff", "step_efficiency", 10, ".3f"),
        ("in_flight", "mean_in_flight", 11, ".1f"), ("cpu_ms/row", "cpu_ms_per_row", 12, ".1f"),
        ("window_ms/row", "cpu_ms_per_row_window", 15, ".1f"),
        ("window_s", "window_s", 10, ".1f"), ("wall_s", "wall_s", 8, ".1f"),
        ("rows/s_wall", "rows_per_s_wall", 13, ".2f"),
    )  # fmt: skip
    print("".join(f"{h:>{w}}" for h, _, w, _ in cols))
    for r in results:
        print("".join(f"{r[k]:>{w}{f}}" for _, k, w, f in cols))
    print(
        "in flight per model (caption / fusion): "
        + "; ".join(
            f"N={r['n']}: {r['models']['caption']['mean_in_flight']:.0f} / "
            f"{r['models']['fusion']['mean_in_flight']:.0f}"
            for r in results
        )
    )
    base = by_n.get(1)
    scaling = {n: r["rows_per_s"] / base["rows_per_s"] for n, r in by_n.items() if base and n != 1}
    for n, x in scaling.items():
        print(f"scaling_{n} = rows/s at N={n} / N=1 = {x:.2f} (ideal {n})")
    top = by_n[max(by_n)]
    summary = {
        "fleet_utilization": round(top["fleet_utilization"], 3),
        "scaling_4": round(scaling[4], 3) if 4 in scaling else None,
        "cpu_ms_per_row": round(top["cpu_ms_per_row"], 1),
        "cpu_ms_per_row_window": round(top["cpu_ms_per_row_window"], 1),
        "at_n": top["n"],
        "d_images_per_s_per_gpu": round(d, 3),
        "sim_scale": a.sim_scale,
        "max_num_seqs": top["models"]["caption"]["max_num_seqs"],
        "rows_per_gpu": a.rows_per_gpu,
        "targets": {"fleet_utilization": 0.9, "scaling_4": 3.6},
        "targets_met": bool(
            top["n"] == 4 and top["fleet_utilization"] >= 0.9 and scaling.get(4, 0.0) >= 3.6
        ),
        "total_s": round(total_s, 1),
        "by_n": {
            str(r["n"]): {
                k: round(r[k], 3)
                for k in (
                    "rows_per_s",
                    "fleet_capacity",
                    "fleet_utilization",
                    "gpu_busy",
                    "step_efficiency",
                    "mean_in_flight",
                    "cpu_ms_per_row",
                    "cpu_ms_per_row_window",
                    "sim_cpu_ms_per_row",
                    "window_cpu_cores",
                    "window_s",
                    "wall_s",
                    "startup_s",
                    "teardown_s",
                    "rows_per_s_wall",
                )  # fmt: skip
            }
            | {"rows": r["rows"]}
            for r in results
        },
        "quick": a.quick,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
