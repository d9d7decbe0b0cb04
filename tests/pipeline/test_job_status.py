"""`vecap status`: the figures of a job read from its output alone, and what each look reads.

Outputs are built here as the writer and the launcher leave them mid-job: stats files created
with the writer's create-only commit, attempt parquets beside them (the status never reads a
parquet, so a few bytes stand in), a manifest as ``vecap run`` writes it with a run record and
heartbeat. The same cases run on the local disk and on the loopback S3 server (``store_root``).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest

import pipeline.job_status as job_status_mod
from pipeline.io.shard_files import (
    attempt_parquet_name,
    fs_and_path,
    is_local,
    new_attempt_id,
    put_bytes,
    put_if_absent,
    shards_dir,
    stats_path,
)
from pipeline.job_status import StatsCache, cache_path, format_status, job_status
from pipeline.manifest import finish_manifest, start_manifest, write_manifest
from pipeline.run_lease import new_run_record
from schemas.stats import ShardStats

# the run started an hour ago, on a whole second (stats files of equal size: see the overwrite
# test); commits are stamped after it
T0 = float(int(time.time()) - 3600)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(job_status_mod.CACHE_ENV, str(tmp_path / "status-cache"))


@pytest.fixture
def reads(monkeypatch):
    """Every stats file the status reads, counted where it reads them."""
    seen: list[str] = []
    real = job_status_mod.read_stats_files

    def counting(fs, paths):
        seen.extend(paths.values())
        return real(fs, paths)

    monkeypatch.setattr(job_status_mod, "read_stats_files", counting)
    return seen


def _status_cli(monkeypatch):
    """``vecap``'s main (the status command is one of COMMAND_MODULES)."""
    cli_main = importlib.import_module("pipeline.cli.main")
    assert "pipeline.cli.status" in cli_main.COMMAND_MODULES
    return cli_main.main


def commit(
    out: str,
    sid: int,
    rows: int = 100,
    *,
    at: float,
    failed: int = 10,
    fallback: int = 10,
    attempt: str | None = None,
) -> ShardStats:
    """Commit shard ``sid`` as the writer does: its attempt parquet, then the stats file,
    created only if absent. ``at``: when it was committed (the local file's mtime too)."""
    fs, root = fs_and_path(shards_dir(out))
    fs.makedirs(root, exist_ok=True)
    attempt = attempt or new_attempt_id()
    name = attempt_parquet_name(sid, attempt)
    put_bytes(fs, f"{root}/{name}", b"p" * rows)
    ok = rows - failed
    stats = ShardStats(
        shard_id=sid,
        rows=rows,
        status_counts={k: v for k, v in (("ok", ok), ("http_error", failed)) if v},
        fusion_source_counts={
            k: v for k, v in (("llm", ok - fallback), ("fallback_visual", fallback)) if v
        },
        stage_seconds={"download": 1.0, "caption": 3.0},
        started_at=at - 5.0,
        finished_at=at,
        parquet=name,
        parquet_bytes=rows,
        attempt=attempt,
    )
    _, path = fs_and_path(stats_path(out, sid))
    assert put_if_absent(fs, path, stats.to_json().encode())
    if is_local(fs):
        os.utime(path, (at, at))  # as if written then
    return stats


def stray_attempt(out: str, sid: int, size: int) -> None:
    """An attempt parquet no stats file names (a failed, killed or in-flight attempt)."""
    fs, root = fs_and_path(shards_dir(out))
    fs.makedirs(root, exist_ok=True)
    put_bytes(fs, f"{root}/{attempt_parquet_name(sid, new_attempt_id())}", b"s" * size)


def manifest(
    out: str,
    *,
    planned: int = 10,
    rows_todo: int = 1000,
    status: str = "running",
    heartbeat_age: float = 1.0,
    started_at: float = T0,
    pid: int | None = None,
) -> None:
    """The manifest a ``vecap run`` keeps: the plan summary, the run appended, the launcher's
    record with its heartbeat (renewed ``heartbeat_age`` seconds ago)."""
    plan = {
        "shards_planned": planned,
        "shards_todo": planned,
        "shards_skipped": 0,
        "rows_todo": rows_todo,
        "plan_fingerprint": "f" * 24,
    }
    m = start_manifest(
        None,
        config_dict={},
        models={},
        stages=["download", "caption", "fuse"],
        source_stages=[],
        source=None,
        plan=plan,
    )
    m["runs"][-1]["started_at"] = started_at
    run = new_run_record(30.0)
    run.update(started_at=started_at, heartbeat_at=time.time() - heartbeat_age)
    if pid is not None:
        run.update(pid=pid, pid_started_at=None)
    m["run"] = run
    if status != "running":
        m = finish_manifest(m, status=status, summary={"rows_written": 0})
    write_manifest(out, m)


def mid_job(out: str) -> None:
    """4 of 10 shards committed 10, 20, 25 and 30 s into the run; an extra attempt of a
    committed shard (50 bytes) and one of an open shard (70 bytes)."""
    manifest(out)
    for sid, dt in zip(range(4), (10, 20, 25, 30), strict=True):
        commit(out, sid, at=T0 + dt)
    stray_attempt(out, 0, 50)
    stray_attempt(out, 5, 70)


def test_mid_job_figures_and_json(store_root, monkeypatch, capsys, reads):
    out = f"{store_root}/job"
    mid_job(out)
    main = _status_cli(monkeypatch)
    assert main(["status", out, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["shards_planned"] == 10
    assert got["shards_committed"] == 4
    assert got["shards_to_go"] == 6
    assert got["percent"] == pytest.approx(40.0)
    assert got["rows_committed"] == 400
    assert got["status_counts"] == {"ok": 360, "http_error": 40}
    assert got["fusion_sources"] == {"llm": 320, "fallback_visual": 40}
    assert got["stage_seconds"] == {"caption": 12.0, "download": 4.0}
    assert got["stage_shares"] == {"caption": pytest.approx(0.75), "download": pytest.approx(0.25)}
    # the run's 4 commits since its start: 400 rows in 30 s; 600 planned rows to go
    assert got["rate_rows_s"] == pytest.approx(400 / 30, rel=1e-3)
    assert got["rate_window_commits"] == 4
    assert got["rows_to_go"] == 600
    assert got["eta_s"] == pytest.approx(600 / (400 / 30), rel=1e-3)
    assert got["launcher"]["state"] == "live"
    assert got["launcher"]["alive"] is True
    assert got["finished"] is False
    assert got["uncommitted_files"] == 2
    assert got["uncommitted_bytes"] == 120
    assert got["uncommitted_of_committed"] == 1
    assert got["uncommitted_of_open"] == 1
    assert got["stats_read"] == 4 and len(reads) == 4

    # the screen says the same
    assert main(["status", "--output", out]) == 0
    screen = capsys.readouterr().out
    assert "4 of 10 committed (40.0%), 6 to go" in screen
    assert "ok 360 (90.0%), http_error 40 (10.0%)" in screen
    assert "llm 320 (88.9%), fallback_visual 40 (11.1%)" in screen
    assert "13.3 rows/s" in screen and "ETA 45s" in screen
    assert "caption 75.0%, download 25.0%" in screen
    assert "alive:" in screen
    assert "2 uncommitted files (120 B): 1 of committed shards" in screen


def test_rate_is_over_the_last_commits(tmp_path):
    out = str(tmp_path / "job")
    mid_job(out)
    # the last 2 commits, measured from the one before them: 200 rows in 10 s
    st = job_status(out, window=2)
    assert st.rate_window_commits == 2
    assert st.rate_rows_s == pytest.approx(20.0)
    assert st.eta_s == pytest.approx(600 / 20.0)


def test_stale_heartbeat_is_reported_dead(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "job")
    mid_job(out)
    manifest(out, heartbeat_age=1000.0)  # 4 intervals of 30 s are 120 s
    st = job_status(out)
    assert st.launcher.state == "stale" and st.launcher.alive is False
    assert st.launcher.heartbeat_age_s == pytest.approx(1000.0, abs=5)
    assert "presumed dead" in format_status(st)
    main = _status_cli(monkeypatch)
    assert main(["status", out, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["launcher"]["alive"] is False


def test_launcher_process_gone_from_this_host_is_dead(tmp_path):
    out = str(tmp_path / "job")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    mid_job(out)
    manifest(out, pid=gone.pid)  # a fresh heartbeat, but the process no longer exists
    st = job_status(out)
    assert st.launcher.state == "dead" and st.launcher.alive is False
    assert "died unfinished" in format_status(st)


def test_finished_job_is_100_percent_without_eta(store_root, monkeypatch, capsys):
    out = f"{store_root}/done"
    manifest(out, planned=3, rows_todo=300, status="succeeded")
    for sid in range(3):
        commit(out, sid, at=T0 + 10 * (sid + 1))
    main = _status_cli(monkeypatch)
    assert main(["status", out, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["percent"] == 100.0 and got["shards_to_go"] == 0
    assert got["eta_s"] is None and got["rows_to_go"] == 0
    assert got["finished"] is True
    assert got["launcher"]["state"] == "finished" and got["launcher"]["status"] == "succeeded"
    assert main(["status", out]) == 0
    screen = capsys.readouterr().out
    assert "3 of 3 committed (100.0%), 0 to go" in screen
    assert "ETA" not in screen and "finished: succeeded" in screen


def test_a_failed_run_has_no_eta(tmp_path):
    out = str(tmp_path / "job")
    mid_job(out)
    manifest(out, status="failed")
    st = job_status(out)
    assert st.finished and st.shards_to_go == 6 and st.eta_s is None


def test_second_look_reads_only_new_stats_files(store_root, reads):
    out = f"{store_root}/job"
    mid_job(out)
    first = job_status(out)
    assert first.stats_read == 4 and len(reads) == 4
    commit(out, 4, at=T0 + 40)
    commit(out, 5, at=T0 + 50)
    reads.clear()
    second = job_status(out)
    assert sorted(os.path.basename(p) for p in reads) == [
        "part-00004.stats.json",
        "part-00005.stats.json",
    ]
    assert second.stats_read == 2 and second.stats_cached == 4
    assert second.shards_committed == 6 and second.rows_committed == 600
    # 6 commits, none read since: the figures come from the cache alone
    reads.clear()
    third = job_status(out)
    assert reads == [] and third.stats_cached == 6
    assert third.to_dict() | {"looked_at": 0, "launcher": None} == second.to_dict() | {
        "looked_at": 0,
        "launcher": None,
        "stats_read": 0,
        "stats_cached": 6,
    }


def test_a_stats_file_rewritten_by_an_overwrite_is_read_again(store_root, reads):
    """An --overwrite deletes every shard file and commits again: a cached shard whose stats file
    was written again must come from the new file, even at the same size."""
    out = f"{store_root}/job"
    mid_job(out)
    assert job_status(out).rows_committed == 400
    fs, path = fs_and_path(stats_path(out, 1))
    old = fs.cat_file(path)
    fs.rm(path)
    # the same number of digits everywhere: the same size, other figures
    new = commit(out, 1, failed=20, fallback=20, at=T0 + 60)
    assert len(new.to_json().encode()) == len(old)
    reads.clear()
    st = job_status(out)
    assert [os.path.basename(p) for p in reads] == ["part-00001.stats.json"]
    assert st.rows_committed == 400
    assert st.status_counts == {"ok": 350, "http_error": 50}
    assert st.fusion_sources == {"llm": 300, "fallback_visual": 50}
    # and again from the cache, the new figures
    reads.clear()
    assert job_status(out).status_counts == {"ok": 350, "http_error": 50} and reads == []


def test_a_shard_gone_from_the_output_is_not_served_from_the_cache(tmp_path, reads):
    out = str(tmp_path / "job")
    mid_job(out)
    job_status(out)
    fs, path = fs_and_path(stats_path(out, 3))
    fs.rm(path)
    reads.clear()
    st = job_status(out)
    assert st.shards_committed == 3 and st.rows_committed == 300 and reads == []


def test_a_fresh_local_stats_file_is_not_cached_until_settled(tmp_path, reads):
    """A local mtime ticks coarsely: a file written in the last SETTLE_S is read on every look
    (a rewrite within one tick could otherwise look unchanged)."""
    out = str(tmp_path / "job")
    mid_job(out)
    fs, path = fs_and_path(stats_path(out, 2))
    os.utime(path)  # just now
    job_status(out)
    reads.clear()
    job_status(out)
    assert [os.path.basename(p) for p in reads] == ["part-00002.stats.json"]


def test_a_torn_cache_line_is_only_a_miss(tmp_path, reads):
    out = str(tmp_path / "job")
    mid_job(out)
    first = job_status(out)
    fs, root = fs_and_path(shards_dir(out))
    cache = cache_path(fs.unstrip_protocol(root.rstrip("/")))
    with open(cache, "a") as f:
        f.write('{"id": 3, "ident": "x", "sta')  # a look killed mid-append
    reads.clear()
    st = job_status(out)
    assert reads == [] and st.rows_committed == first.rows_committed
    assert len(StatsCache(cache, fs.unstrip_protocol(root.rstrip("/"))).load().entries) == 4


def test_cache_off_reads_everything_each_look(tmp_path, reads, monkeypatch):
    monkeypatch.setenv(job_status_mod.CACHE_ENV, "off")
    out = str(tmp_path / "job")
    mid_job(out)
    job_status(out)
    job_status(out)
    assert len(reads) == 8


def test_watch_stops_when_the_job_finishes(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "job")
    mid_job(out)
    main = _status_cli(monkeypatch)
    result: list[int] = []

    def watch():
        result.append(main(["status", out, "--watch", "0.05", "--json"]))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive()  # still running: the job is not finished
    for sid in range(4, 10):
        commit(out, sid, at=T0 + 40 + sid)
    manifest(out, status="succeeded")
    thread.join(timeout=20)
    assert not thread.is_alive(), "--watch did not stop when the job finished"
    assert result == [0]
    frames = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(frames) >= 2
    assert frames[0]["shards_committed"] == 4 and not frames[0]["finished"]
    assert frames[-1]["finished"] and frames[-1]["percent"] == 100.0
    assert frames[-1]["eta_s"] is None


def test_watch_stops_when_the_launcher_died(tmp_path, monkeypatch, capsys):
    """A launcher gone from this host leaves its run 'running' forever: --watch must not."""
    out = str(tmp_path / "job")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    mid_job(out)
    manifest(out, pid=gone.pid)
    main = _status_cli(monkeypatch)
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(main(["status", out, "--watch", "0.05", "--json"])),
        daemon=True,
    )
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive() and result == [0]
    assert "launcher died unfinished" in capsys.readouterr().err


def test_watch_before_the_output_reads_it_as_the_output(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "done")
    manifest(out, planned=1, rows_todo=100, status="succeeded")
    commit(out, 0, at=T0 + 1)
    main = _status_cli(monkeypatch)
    assert main(["status", "--watch", out]) == 0  # finished: one frame, no wait
    assert "1 of 1 committed (100.0%)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "manifest_text",
    [
        None,  # nothing there
        "",  # an empty directory
        '{"format": "something-else"}',
        "{not json",
    ],
)
def test_not_a_vecap_output_is_one_line_exit_2(tmp_path, monkeypatch, capsys, manifest_text):
    out = str(tmp_path / "nope")
    if manifest_text is not None:
        os.makedirs(out)
    if manifest_text:
        with open(f"{out}/manifest.json", "w") as f:
            f.write(manifest_text)
    main = _status_cli(monkeypatch)
    assert main(["status", out]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vecap status: ")
    assert "not a vecap" in lines[0] or "manifest" in lines[0]


def test_an_unknown_protocol_is_one_line_exit_2(monkeypatch, capsys):
    main = _status_cli(monkeypatch)
    assert main(["status", "nosuchprotocol://bucket/out"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nosuchprotocol" in err[0]


def test_bad_arguments_are_one_line_exit_2(tmp_path, monkeypatch, capsys):
    main = _status_cli(monkeypatch)
    assert main(["status"]) == 2
    assert "give the output directory" in capsys.readouterr().err
    out = str(tmp_path / "job")
    mid_job(out)
    assert main(["status", out, "--watch", "0"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
