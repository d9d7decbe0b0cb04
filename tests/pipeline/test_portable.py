"""`vecap run` on portable Beam runners: a job server, SDK workers in separate processes.

Each case starts a job server (Beam's Flink job server jar with an embedded Flink cluster, or
Prism, Beam's Go runner) and Beam's SDK worker pool (``worker_pool_main``: every SDK worker is a
separate Python process, with the network tripwire loaded through PYTHONPATH), then drives the
real CLI in subprocesses with the Flink launcher's flags for both (``--runner FlinkRunner
--parallelism 2 --job_endpoint ... --environment_type=EXTERNAL``: FlinkRunner submits to the given
job service, so against Prism the launcher side of a Flink run is exercised too):

- download -> caption -> fuse -> write with the tiny models; rows in == rows out, no duplicate
  uid, every planned shard has its parquet and stats file and they agree;
- the output equals the local runner's (FnApiRunner) output of the same input;
- the same command again does no work (every shard skipped, no file rewritten);
- kill -9 of the launcher and the job server mid-run, then the same command on a fresh job
  server, gives the same output as the uninterrupted run.

The job servers come from ``make portable-runners`` (``~/.cache/vecap``). The Flink case skips,
with the fetch script's reason, where no job-server jar could be fetched; Prism must be there.
Every URL is on the loopback sample server; the job servers are given loopback addresses.
"""

from __future__ import annotations

import collections
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.io.writer import finished_shards, parquet_path, read_shard_records
from pipeline.portable_local import (
    PortableUnavailable,
    find_flink_jar,
    find_prism,
    runner_args,
    start_job_server,
    start_worker_pool,
)
from pipeline.sample.server import SAMPLE_DIR, SampleServer, sample_input_table
from tests.pipeline.test_run import rows_of

REPO = Path(__file__).resolve().parents[2]
SHARD_SIZE = 4
ROWS = 16  # 4 shards
SLOW_SECS = 4.0  # the last shard's images trickle in: the kill lands while they download


def _table(server: SampleServer, dest: Path) -> tuple[Path, list[str]]:
    """24 sample rows (a few of them deliberate failures); the last shard's URLs are slow."""
    full = sample_input_table(server.base_url, dest.with_name("full.csv"))
    with full.open(newline="") as f:
        rows = list(csv.DictReader(f))[:ROWS]
    slow_paths = []
    with dest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["url", "caption"])
        for i, row in enumerate(rows):
            url = row["url"]
            if i >= ROWS - SHARD_SIZE and "/_fault/" not in url:
                base, name = url.rsplit("/", 1)
                url = f"{base}/_fault/slow/{name}?secs={SLOW_SECS}&i={i}"
                slow_paths.append(f"/_fault/slow/{name.split('?', 1)[0]}")
            w.writerow([url, row["caption"]])
    assert all(r["url"].startswith("http://127.0.0.1:") for r in rows)
    assert slow_paths, "the last shard must hold slow rows"
    return dest, slow_paths


def _argv(table: Path, out: Path, models, beam_args: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "pipeline.cli", "run", "--input", str(table), "--output", str(out),
        "--stages", "download,caption,fuse", "--shard-size", str(SHARD_SIZE),
        "--allow-private-networks", "--no-progress", "--threads", "4",
        "--caption-model", str(models.llava), "--fusion-model", str(models.llm),
        "--device", "cpu", "--max-new-tokens", "8", "--set", "download.retries=0",
        *beam_args,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    # conftest put the tripwire's sitecustomize on PYTHONPATH; the repo goes first
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": pythonpath}


def _run(argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(
        argv, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def _check_output(out: Path, n_rows: int) -> list[dict]:
    """Rows in == rows out, no duplicate uid, each planned shard's parquet and stats agree."""
    n_shards = -(-n_rows // SHARD_SIZE)
    stats = finished_shards(str(out))
    assert sorted(stats) == list(range(n_shards))
    for sid, st in stats.items():
        records = list(read_shard_records(parquet_path(str(out), sid)))
        assert len(records) == st.rows == SHARD_SIZE, sid
        assert dict(collections.Counter(r.status for r in records)) == st.status_counts, sid
        assert {r.shard_id for r in records} == {sid}
    rows = rows_of(str(out))
    assert len(rows) == n_rows == len({r["uid"] for r in rows})
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) >= n_rows - 4, [(r["uid"], r["status"], r["error"]) for r in rows]
    assert all(r["visual_caption"] and r["fused_caption"] for r in ok)
    return rows


def _same_rows(got: list[dict], want: list[dict]) -> None:
    key = ("uid", "status", "visual_caption", "fused_caption")
    assert [tuple(r[k] for k in key) for r in got] == [tuple(r[k] for k in key) for r in want]
    assert got == want  # and every other column: image bytes, models, errors


def _stats_mtimes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}


@pytest.mark.slow
@pytest.mark.portable
@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind", ["prism", pytest.param("flink", marks=pytest.mark.flink)])
def test_vecap_run_on_a_portable_runner(kind, tiny_models, tmp_path):
    if kind == "flink":
        try:
            find_flink_jar()
        except PortableUnavailable as e:
            pytest.skip(str(e))
    else:
        find_prism()  # make test builds it: missing is a failure, not a skip
    t0 = time.time()
    services = []
    try:
        with SampleServer(root_dir=SAMPLE_DIR) as server:
            table, slow_paths = _table(server, tmp_path / "in.csv")
            local = tmp_path / "local"
            _run(_argv(table, local, tiny_models, []))
            want = _check_output(local, ROWS)

            pool = start_worker_pool(tmp_path / "worker-pool")
            services.append(pool)
            job_server = start_job_server(kind, tmp_path / "job-server-1")
            services.append(job_server)
            beam_args = runner_args(kind, job_server, pool, parallelism=2)

            # 1. the whole job on the portable runner
            out = tmp_path / "portable"
            first = _run(_argv(table, out, tiny_models, beam_args))
            assert (
                f"{ROWS // SHARD_SIZE} shards planned, 0 already finished, {ROWS // SHARD_SIZE} to do"
                in first.stderr
            )
            _same_rows(_check_output(out, ROWS), want)

            # 2. the same command again: nothing to do, no file rewritten
            before = _stats_mtimes(out)
            again = _run(_argv(table, out, tiny_models, beam_args))
            assert f"{ROWS // SHARD_SIZE} already finished, 0 to do" in again.stderr, again.stderr[
                -2000:
            ]
            assert _stats_mtimes(out) == before

            # 3. kill -9 the launcher and the job server while the slow shard downloads
            killed = tmp_path / "killed"
            argv = _argv(table, killed, tiny_models, beam_args)
            hits_before = sum(server.hits(p) for p in slow_paths)
            proc = subprocess.Popen(
                argv, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            try:
                deadline = time.time() + 240
                while time.time() < deadline and proc.poll() is None:
                    if sum(server.hits(p) for p in slow_paths) > hits_before:
                        break
                    time.sleep(0.05)
                assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
                os.kill(proc.pid, signal.SIGKILL)
                job_server.kill(signal.SIGKILL)
                proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=30)
            assert proc.returncode == -signal.SIGKILL
            partial = finished_shards(str(killed))
            assert len(partial) < ROWS // SHARD_SIZE, (
                "the kill must land before the last shard is committed"
            )

            # ... then the same command on a fresh job server
            job_server = start_job_server(kind, tmp_path / "job-server-2")
            services.append(job_server)
            argv = _argv(table, killed, tiny_models, runner_args(kind, job_server, pool))
            resumed = _run(argv)
            assert f"{len(partial)} already finished" in resumed.stderr, resumed.stderr[-2000:]
            _same_rows(_check_output(killed, ROWS), want)
            after = finished_shards(str(killed))
            assert all(after[s].finished_at == partial[s].finished_at for s in partial)
    finally:
        for service in reversed(services):
            service.kill(signal.SIGKILL)
    elapsed = time.time() - t0
    assert elapsed < 600, f"took {elapsed:.0f} s; the suite budget for this test is ~5 min"
