"""Local runner vs portable runners: the same 1,000-row `vecap run`, side by side in one run.

Two jobs, each through the real CLI on the same input (the bundled sample photos on a loopback
server, 1,000 distinct URLs, 10 shards of 100 rows):

- ``download``: download only;
- ``download+caption``: download, then the tiny LLaVA captioner (CPU, 8 new tokens).

Each job runs on the in-process FnApiRunner (one pipeline: ``--local-wave-shards`` covers every
shard) and on each portable runner available: Flink (Beam's job server jar, embedded cluster,
``--parallelism 2``) and Prism (Beam's portable Go runner), both with SDK workers in a separate
worker-pool process (``--environment_type=EXTERNAL``); the job server and the pool are started
once, before the timed runs, as a cluster would be.

Figures per run, from the launcher's wall clock and the shards' stats files:

- ``wall_s``: the `vecap run` process, start to exit;
- ``startup_s``: from launch to the first row read (launcher imports, planning, job submission,
  SDK worker start, artifact staging): min(started_at) of the stats files minus the launch time;
- ``work_s``: from the first row read to the last shard committed; ``rows_per_s`` = rows / work_s
  (start-up excluded), ``rows_per_s_wall`` = rows / wall_s.

``*_ratio`` = portable rows_per_s / local rows_per_s, per job; the goal is >= 0.8 (a portable run
costs start-up, not throughput). The machine (2 cores) is shared with other work: figures move,
so each run is repeated ``VECAP_BENCH_FLINK_REPEATS`` times (default 2), interleaved with the
order reversed every other time, and the medians are reported with each repeat's rows/s.
The last line is one JSON object (``local_rows_per_s``, ``flink_rows_per_s``, ``flink_ratio``,
``flink_startup_s`` for the download+caption job; null where no Flink job server is available,
with the reason in ``flink_unavailable``; the same for Prism as ``prism_*``).

Network: loopback only; every child process loads the test tripwire (``tests/tripwire_site``).
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' network tripwire, for every child process
from tests.net_tripwire import child_env  # noqa: E402

ROWS = int(os.environ.get("VECAP_BENCH_FLINK_ROWS", "1000"))
SHARD_SIZE = 100
REPEATS = int(os.environ.get("VECAP_BENCH_FLINK_REPEATS", "2"))
JOBS = {"download": "download", "download+caption": "download,caption"}


def _table(base_url: str, dest: Path) -> Path:
    from pipeline.sample.server import SAMPLE_DIR

    names = sorted(p.name for p in SAMPLE_DIR.glob("*.jpg"))
    with dest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["url", "caption"])
        for i in range(ROWS):
            w.writerow([f"{base_url.rstrip('/')}/{names[i % len(names)]}?i={i}", f"photo {i}"])
    return dest


def _run(argv: list[str], env: dict[str, str], out: Path) -> dict:
    from pipeline.io.writer import finished_shards

    t0 = time.time()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.time() - t0
    if done.returncode != 0:
        raise SystemExit(f"vecap run failed ({done.returncode}):\n{done.stderr[-4000:]}")
    stats = finished_shards(str(out))
    rows = sum(s.rows for s in stats.values())
    ok = sum(s.status_counts.get("ok", 0) for s in stats.values())
    if rows != ROWS or len(stats) != -(-ROWS // SHARD_SIZE):
        raise SystemExit(f"{out}: {len(stats)} shards, {rows} rows; expected {ROWS} rows")
    first = min(s.started_at for s in stats.values() if s.started_at)
    last = max(s.finished_at for s in stats.values())
    work = max(last - first, 1e-9)
    return {
        "rows": rows,
        "ok": ok,
        "wall_s": round(wall, 2),
        "startup_s": round(first - t0, 2),
        "work_s": round(work, 2),
        "rows_per_s": round(rows / work, 1),
        "rows_per_s_wall": round(rows / wall, 1),
    }


def main() -> None:
    from llava_recap.tiny_models import build_tiny_models
    from pipeline.portable_local import (
        PortableUnavailable,
        find_flink_jar,
        find_prism,
        runner_args,
        start_job_server,
        start_worker_pool,
    )
    from pipeline.sample.server import SAMPLE_DIR, SampleServer

    work = Path(tempfile.mkdtemp(prefix="vecap-bench-flink-"))
    tripwire_log = work / "tripwire.log"
    env = child_env(tripwire_log)
    os.environ.update({k: env[k] for k in ("PYTHONPATH", "VECAP_NET_TRIPWIRE_LOG")})
    models = build_tiny_models(work / "models")
    unavailable: dict[str, str] = {}
    kinds = []
    for kind, find in (("flink", find_flink_jar), ("prism", find_prism)):
        try:
            find()
            kinds.append(kind)
        except PortableUnavailable as e:
            unavailable[kind] = str(e)
            print(f"{kind}: unavailable: {e}", flush=True)
    results: dict[str, dict[str, dict]] = {job: {} for job in JOBS}
    services = []
    try:
        with SampleServer(root_dir=SAMPLE_DIR) as server:
            table = _table(server.base_url, work / "in.csv")
            portable: dict[str, list[str]] = {}
            if kinds:
                pool = start_worker_pool(work / "pool")
                services.append(pool)
                for kind in kinds:
                    t0 = time.time()
                    js = start_job_server(kind, work / f"js-{kind}", parallelism=2)
                    services.append(js)
                    print(f"{kind}: job server up in {time.time() - t0:.1f} s", flush=True)
                    portable[kind] = runner_args(kind, js, pool, parallelism=2)
            for job, stages in JOBS.items():
                # repeats interleaved, the order reversed every other one (the machine is
                # shared: its load drifts); per runner the median of the repeats is reported
                order = [
                    runner
                    for rep in range(REPEATS)
                    for runner in (["local", *kinds] if rep % 2 == 0 else [*kinds, "local"])
                ]
                runs: dict[str, list[dict]] = {}
                for i, runner in enumerate(order):
                    out = work / f"out-{job.replace('+', '-')}-{runner}-{i}"
                    argv = [
                        sys.executable, "-m", "pipeline.cli", "run", "--input", str(table),
                        "--output", str(out), "--stages", stages,
                        "--shard-size", str(SHARD_SIZE),
                        "--local-wave-shards", str(-(-ROWS // SHARD_SIZE)),
                        "--allow-private-networks", "--no-progress",
                        "--caption-model", str(models.llava), "--device", "cpu",
                        "--max-new-tokens", "8", "--set", "download.retries=0",
                        *portable.get(runner, []),
                    ]  # fmt: skip
                    r = _run(argv, env, out)
                    runs.setdefault(runner, []).append(r)
                    print(f"{job:<17} {runner:<6} {json.dumps(r)}", flush=True)
                for runner, rs in runs.items():
                    results[job][runner] = {
                        k: round(statistics.median(r[k] for r in rs), 2) for k in rs[0]
                    } | {"repeats": [r["rows_per_s"] for r in rs]}
    finally:
        for service in reversed(services):
            service.kill()
    violations = tripwire_log.read_text() if tripwire_log.exists() else ""
    if violations.strip():
        raise SystemExit(f"network tripwire: non-loopback traffic was attempted:\n{violations}")

    print()
    print(f"{'job':<17}{'runner':<8}{'rows/s':>9}{'ratio':>7}{'start-up s':>12}{'wall s':>9}")
    for job, by_runner in results.items():
        base = by_runner["local"]["rows_per_s"]
        for runner, r in by_runner.items():
            ratio = r["rows_per_s"] / base if base else 0.0
            print(
                f"{job:<17}{runner:<8}{r['rows_per_s']:>9.1f}{ratio:>7.2f}"
                f"{r['startup_s']:>12.1f}{r['wall_s']:>9.1f}"
            )
    head = results["download+caption"]
    summary: dict = {
        "rows": ROWS,
        "repeats": REPEATS,
        "local_rows_per_s_repeats": head["local"]["repeats"],
        "job": "download+caption",
        "local_rows_per_s": head["local"]["rows_per_s"],
        "local_startup_s": head["local"]["startup_s"],
    }
    for kind in ("flink", "prism"):
        r = head.get(kind)
        summary[f"{kind}_rows_per_s"] = r["rows_per_s"] if r else None
        summary[f"{kind}_ratio"] = (
            round(r["rows_per_s"] / head["local"]["rows_per_s"], 3) if r else None
        )
        summary[f"{kind}_startup_s"] = r["startup_s"] if r else None
        summary[f"{kind}_rows_per_s_repeats"] = r["repeats"] if r else None
        if kind in unavailable:
            summary[f"{kind}_unavailable"] = unavailable[kind]
    summary["download_only"] = {
        runner: {k: r[k] for k in ("rows_per_s", "startup_s", "wall_s", "repeats")}
        for runner, r in results["download"].items()
    }
    summary["tripwire_violations"] = 0
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
