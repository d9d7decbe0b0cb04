"""Exactly-once shard commits, one job per output, on the local disk and on a real S3 server.

The S3 cases reach moto's S3 server (tests/fixtures/s3_server.py, its own process on 127.0.0.1)
through s3fs with the endpoint in ``AWS_ENDPOINT_URL``, as users reach S3; ``store_root``
parametrizes every test over ``local`` and ``s3``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

import pipeline.io.writer as writer
from pipeline.config import build_pipeline_config
from pipeline.io.shard_files import list_shards, uncommitted_files
from pipeline.io.writer import (
    WriterConfig,
    finished_shards,
    parquet_path,
    read_shard_records,
    write_shard,
)
from pipeline.manifest import read_manifest, write_manifest
from pipeline.run import run_pipeline
from pipeline.run_lease import OutputBusy
from schemas import Record, make_uid

ROWS = 23  # 5 shards of 5 rows, the last one short
SHARDS = 5
REPO = Path(__file__).resolve().parents[2]


def _rows(shard: int, n: int, caption: str = "vec") -> list[Record]:
    return [
        Record(
            uid=make_uid(shard, i), shard_id=shard, row_index=i, url=f"http://127.0.0.1/{i}"
        ).replace(fused_caption=f"{caption} {i}", visual_caption=caption)
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("in") / "in.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["url", "caption"])
        for i in range(ROWS):
            w.writerow([f"http://127.0.0.1:9/img/{i}.jpg", f"alt text {i}"])
    return str(path)


def _config(table: str, out: str, **extra):
    data = {
        "input": table,
        "output": out,
        "stages": [],
        "progress": False,
        "reader": {"shard_size": 5},
    }
    data.update(extra)
    return build_pipeline_config(data)


def _rows_of(out: str) -> list[dict]:
    """Every committed row, read from the parquet each stats file names, in uid order."""
    rows = []
    for sid in sorted(finished_shards(out)):
        rows.extend(r.to_dict() for r in read_shard_records(parquet_path(out, sid)))
    return rows


def _glob_dataset_rows(out: str) -> list[dict]:
    """What a tool that globs files sees: ``OUT/shards/*.parquet`` through pyarrow.dataset."""
    fs, root = fsspec.core.url_to_fs(out)
    files = sorted(fs.glob(f"{root.rstrip('/')}/shards/*.parquet"))
    dataset = ds.dataset(
        files, format="parquet", filesystem=pafs.PyFileSystem(pafs.FSSpecHandler(fs))
    )
    return sorted(dataset.to_table().to_pylist(), key=lambda r: r["uid"])


def _parquet_names(out: str) -> list[str]:
    _, listing = list_shards(out)
    return sorted(p.rsplit("/", 1)[-1] for files in listing.parquets.values() for p in files)


def _child_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }


# --------------------------------------------------------------------------- the writer


@pytest.mark.parametrize("root", ["memory://vecap-commit-test", "s3", "local"])
def test_a_write_that_fails_midway_uploads_nothing(root, tmp_path, monkeypatch, request):
    """fsspec's buffered file finishes its upload on __exit__ even while an exception
    propagates, and pyarrow's writer closes with a footer: a truncated but valid parquet."""
    if root == "s3":
        request.getfixturevalue("s3_server")
        root = "s3://vecap-test/failed-midway"
    elif root == "local":
        root = str(tmp_path)
    out = f"{root}/out-{time.time_ns()}"
    calls = []
    real = writer.records_table

    def records_table(rows, keep_images=True):
        calls.append(len(rows))
        if len(calls) == 2:  # the second row group: the first one is already in the file
            raise OSError("disk full")
        return real(rows, keep_images)

    monkeypatch.setattr(writer, "records_table", records_table)
    with pytest.raises(OSError, match="disk full"):
        write_shard(WriterConfig(output=out, rows_per_row_group=4), 1, _rows(1, 10), 10)
    fs, listing = list_shards(out)
    assert listing.stats == {} and listing.parquets == {}, "a failed write left files behind"
    assert finished_shards(out) == {}


def test_a_committed_shard_is_never_replaced_or_uncommitted(store_root):
    out = f"{store_root}/out"
    cfg = WriterConfig(output=out)
    first = write_shard(cfg, 3, _rows(3, 5, "first"), 5)
    # a late second attempt of the same shard with other content (model outputs differ)
    second = write_shard(cfg, 3, _rows(3, 5, "second"), 5)
    assert second == first
    assert finished_shards(out)[3] == first
    assert [r.fused_caption for r in read_shard_records(parquet_path(out, 3))][0] == "first 0"
    assert _parquet_names(out) == [first.parquet]


def test_two_processes_racing_on_one_shard_commit_exactly_once(store_root, tmp_path):
    out = f"{store_root}/race"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.pipeline.commit_driver",
                "race",
                out,
                "7",
                tag,
                str(barrier),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_child_env(),
            cwd=REPO,
        )
        for tag in ("alpha", "beta")
    ]
    results = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    # both uploaded their own parquet, met at the barrier, then tried to commit
    assert len(os.listdir(barrier)) == 2
    assert results[0]["mine"] != results[1]["mine"]
    winners = [r for r in results if r["mine"] == r["committed"]]
    assert len(winners) == 1, results
    # the loser got the winner's commit back, and readers see exactly the winner's rows
    assert results[0]["committed"] == results[1]["committed"] == winners[0]["committed"]
    stats = finished_shards(out)[7]
    assert stats.parquet == winners[0]["committed"] and stats.rows == 5
    captions = {r.visual_caption for r in read_shard_records(parquet_path(out, 7))}
    assert captions == {winners[0]["caption"]}
    # the loser's attempt is an uncommitted file (deleted by the loser itself): never read
    assert _parquet_names(out) == [winners[0]["committed"]]
    assert uncommitted_files(out).all == []
    assert {r["visual_caption"] for r in _glob_dataset_rows(out)} == {winners[0]["caption"]}


# --------------------------------------------------------------------------- whole runs


@pytest.fixture(scope="module")
def clean_rows(table, tmp_path_factory) -> list[dict]:
    out = str(tmp_path_factory.mktemp("clean") / "out")
    res = run_pipeline(_config(table, out), stream=io.StringIO())
    assert res.status == "succeeded" and res.rows_written == ROWS
    return _rows_of(out)


def test_a_failure_between_upload_and_commit_then_a_rerun(
    table, store_root, clean_rows, monkeypatch
):
    out = f"{store_root}/out"
    real = writer.put_if_absent

    def fail_shard_2(fs, path, data):
        if path.endswith("part-00002.stats.json"):
            raise ConnectionError("injected: the worker died after its upload")
        return real(fs, path, data)

    monkeypatch.setattr(writer, "put_if_absent", fail_shard_2)
    with pytest.raises(Exception, match="injected"):
        run_pipeline(_config(table, out), stream=io.StringIO())
    assert 2 not in finished_shards(out)
    assert uncommitted_files(out).of_open, "the failed attempt's parquet should be uploaded"
    assert read_manifest(out)["status"] == "failed"

    monkeypatch.setattr(writer, "put_if_absent", real)
    res = run_pipeline(_config(table, out), stream=io.StringIO())
    assert res.status == "succeeded" and 2 in res.plan.todo
    done = finished_shards(out)
    assert sorted(done) == list(range(SHARDS))
    # one committed parquet per shard and nothing else: the failed attempt was removed
    assert _parquet_names(out) == sorted(s.parquet for s in done.values())
    assert _rows_of(out) == clean_rows
    assert _glob_dataset_rows(out) == clean_rows


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}): {proc.stderr.read()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("the run never reached the fault")
        time.sleep(0.05)


def _start_run(out: str, table: str, *fault: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.pipeline.commit_driver", "run", out, table, *fault],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(),
        cwd=REPO,
    )


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["--hang-before-commit", "--hang-mid-write"])
def test_kill_9_mid_write_then_rerun_is_identical(table, store_root, clean_rows, tmp_path, fault):
    out = f"{store_root}/killed"
    marker = tmp_path / "at-fault"
    proc = _start_run(out, table, fault, "2", str(marker))
    _wait_for(marker, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = finished_shards(out)
    assert 2 not in done and len(done) < SHARDS  # killed before shard 2's commit
    assert read_manifest(out)["status"] == "running"  # the launcher died mid-run

    # the rerun sees the launcher's process gone and resumes: no --takeover needed here
    rerun = _start_run(out, table)
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert "died unfinished" in stderr
    done = finished_shards(out)
    assert sorted(done) == list(range(SHARDS))
    assert _parquet_names(out) == sorted(s.parquet for s in done.values())
    assert _rows_of(out) == clean_rows
    assert _glob_dataset_rows(out) == clean_rows
    assert uncommitted_files(out).all == []


@pytest.mark.slow
def test_a_second_concurrent_run_on_one_output_is_refused(table, store_root, tmp_path):
    out = f"{store_root}/busy"
    marker = tmp_path / "at-fault"
    first = _start_run(out, table, "--hang-before-commit", "3", str(marker))
    try:
        _wait_for(marker, first)
        run = read_manifest(out)["run"]
        second = subprocess.run(
            [sys.executable, "-m", "pipeline.cli.main", "run", "--input", table, "--output", out,
             "--stages", "", "--shard-size", "5", "--no-progress"],
            capture_output=True, text=True, env=_child_env(), cwd=REPO, timeout=300,
        )  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert f"in use by run {run['run_id']} on host {run['host']}" in second.stderr
        assert "started 20" in second.stderr and "--takeover" in second.stderr
        # the refused run touched nothing: the first run's claim and shards are intact
        assert read_manifest(out)["run"]["run_id"] == run["run_id"]
        assert 3 not in finished_shards(out)
    finally:
        first.kill()
        first.wait(timeout=30)


def test_a_live_run_elsewhere_refuses_until_takeover(table, store_root):
    out = f"{store_root}/lease"
    first = run_pipeline(_config(table, out), stream=io.StringIO())
    manifest = read_manifest(out)
    run = manifest["run"]
    assert run["run_id"] and run["host"] and run["started_at"] <= run["heartbeat_at"]
    assert manifest["status"] == "succeeded"
    # a launcher on another machine is running on this output, heartbeat fresh
    now = time.time()
    manifest.update(status="running")
    manifest["run"] = {**run, "run_id": "other-run", "host": "elsewhere", "heartbeat_at": now}
    write_manifest(out, manifest)
    with pytest.raises(OutputBusy, match="in use by run other-run on host elsewhere"):
        run_pipeline(_config(table, out, overwrite=True), stream=io.StringIO())
    assert sorted(finished_shards(out)) == sorted(first.plan.todo)  # --overwrite touched nothing
    # its heartbeat goes stale (4 intervals without renewal): presumed dead, the run proceeds
    manifest["run"]["heartbeat_at"] = now - 4 * run["heartbeat_s"] - 1
    write_manifest(out, manifest)
    stream = io.StringIO()
    assert run_pipeline(_config(table, out), stream=stream).status == "nothing_to_do"
    assert "stopped renewing its heartbeat" in stream.getvalue()
    # fresh again: --takeover proceeds
    manifest["run"]["heartbeat_at"] = time.time()
    write_manifest(out, manifest)
    stream = io.StringIO()
    res = run_pipeline(_config(table, out, takeover=True), stream=stream)
    assert res.status == "nothing_to_do" and "--takeover" in stream.getvalue()
    assert read_manifest(out)["run"]["host"] != "elsewhere"


def test_the_heartbeat_is_renewed_while_the_run_goes_on(table, tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    beats: list[float] = []
    real = writer.put_if_absent

    def slow_commit(fs, path, data):
        beats.append(read_manifest(out)["run"]["heartbeat_at"])
        time.sleep(0.3)
        return real(fs, path, data)

    monkeypatch.setattr(writer, "put_if_absent", slow_commit)
    run_pipeline(_config(table, out, heartbeat_s=0.05), stream=io.StringIO())
    assert len(set(beats)) >= 3 and beats == sorted(beats)


# --------------------------------------------------------------------------- readers and gc


def _plant_orphan(out: str, shard: int, like: int) -> str:
    """An uncommitted attempt of ``shard``: shard ``like``'s rows with ORPHAN alt texts."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    fs, root = fsspec.core.url_to_fs(out)
    with fs.open(fsspec.core.url_to_fs(parquet_path(out, like))[1], "rb") as f:
        table = pq.read_table(f)
    table = table.set_column(
        table.schema.get_field_index("alt_text"),
        "alt_text",
        pc.binary_join_element_wise("ORPHAN ", table.column("alt_text"), ""),
    )
    name = f"part-{shard:05d}.0123456789abcdef.parquet"
    with fs.open(f"{root.rstrip('/')}/shards/{name}", "wb") as f:
        pq.write_table(table, f)
    return name


def test_every_reader_reads_only_what_stats_files_name_and_gc(table, store_root, clean_rows):
    from clip_trainer.data import find_parquet_files
    from pipeline.cli.main import main as vecap
    from pipeline.io.export_json import ExportConfig, export_json
    from pipeline.io.stats_summary import output_stats
    from pipeline.report.outputs import scan_output

    out = f"{store_root}/readers"
    run_pipeline(_config(table, out), stream=io.StringIO())
    committed = {sid: parquet_path(out, sid) for sid in range(SHARDS)}
    orphans = [_plant_orphan(out, 1, like=1), _plant_orphan(out, 9, like=2)]

    # --from: the next run reads the committed parquet of each shard
    out2 = f"{store_root}/readers-from"
    run_pipeline(
        build_pipeline_config({"from": out, "output": out2, "stages": [], "progress": False}),
        stream=io.StringIO(),
    )
    assert _rows_of(out2) == clean_rows
    # export-json
    exported = export_json(ExportConfig(source=out, caption="alt", splits=2, dest=f"{out2}/rel"))
    assert exported.rows_read == ROWS and exported.entries == ROWS
    for path in exported.files:
        fs, p = fsspec.core.url_to_fs(path)
        assert "ORPHAN" not in fs.cat_file(p).decode()
    # stats: counts from the commits, the orphans reported
    stats = output_stats(out)
    assert stats.rows == ROWS and stats.caption_lengths["alt"].count == ROWS
    assert stats.uncommitted_files == 2 and stats.uncommitted_bytes > 0
    # report
    scan = scan_output(out)
    assert [f.shard_id for f in scan.finished] == list(range(SHARDS)) and scan.in_progress == [9]
    fs, _ = fsspec.core.url_to_fs(out)
    assert [fs.unstrip_protocol(f.parquet_path) for f in scan.finished] == [
        fs.unstrip_protocol(fsspec.core.url_to_fs(p)[1]) for p in committed.values()
    ]
    # the trainer
    trained = find_parquet_files([out])
    assert len(trained) == SHARDS and not any(o in t for t in trained for o in orphans)

    # vecap stats says so; vecap gc removes exactly the orphans, never a commit
    import contextlib

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert vecap(["stats", out, "--no-caption-lengths"]) == 0
        assert vecap(["gc", out]) == 0
    assert "uncommitted attempt files: 2" in buf.getvalue()
    assert "removed 2 uncommitted files" in buf.getvalue()
    assert _parquet_names(out) == sorted(s.parquet for s in finished_shards(out).values())
    assert _glob_dataset_rows(out) == clean_rows


def test_gc_keeps_open_attempts_while_a_run_is_live(table, tmp_path):
    out = str(tmp_path / "out")
    run_pipeline(_config(table, out), stream=io.StringIO())
    orphans = [_plant_orphan(out, 1, like=1), _plant_orphan(out, 9, like=2)]
    manifest = read_manifest(out)
    manifest["status"] = "running"
    manifest["run"] = {**manifest["run"], "host": "elsewhere", "heartbeat_at": time.time()}
    write_manifest(out, manifest)
    from pipeline.cli.main import main as vecap

    assert vecap(["gc", out]) == 0
    # shard 9 is not committed: a live run may be about to commit that very file
    names = _parquet_names(out)
    assert orphans[1] in names and orphans[0] not in names


def test_a_run_taken_over_stops_writing_its_manifest(table, tmp_path, monkeypatch):
    """The old launcher, still alive after a --takeover elsewhere, must not overwrite the new
    run's record (that would make the live new run look finished)."""
    out = str(tmp_path / "out")
    real = writer.put_if_absent
    seen: list[str] = []

    def taken_over_meanwhile(fs, path, data):
        if not seen:  # another launcher takes the output over while this run writes
            manifest = read_manifest(out)
            seen.append(manifest["run"]["run_id"])
            manifest["run"] = {**manifest["run"], "run_id": "successor", "host": "elsewhere"}
            write_manifest(out, manifest)
        return real(fs, path, data)

    monkeypatch.setattr(writer, "put_if_absent", taken_over_meanwhile)
    stream = io.StringIO()
    run_pipeline(_config(table, out, heartbeat_s=0.05), stream=stream)
    after = read_manifest(out)
    assert after["run"]["run_id"] == "successor" and after["status"] == "running"
    assert "was taken over by run successor on host elsewhere" in stream.getvalue()
