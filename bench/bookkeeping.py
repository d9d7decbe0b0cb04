"""Launcher bookkeeping at scale: 100,000 committed shards on a loopback S3 server and on disk.

An output of ``N`` committed shards (each a stats file naming a small fake parquet, plus the
manifest) is created on moto's S3 server (tests/fixtures/s3_server.py, its own process on
127.0.0.1, reached through s3fs as users reach S3) and on the local disk; then timed:

- ``resume plan``: ``plan_run`` of a resume over those N shards (input planned from a CSV of N
  rows, 1 row per shard; the committed ids come from one listing), input planning timed apart;
- ``stats files``: all N stats files read back (one listing, one batched ``cat``): what
  ``--from`` planning and the end-of-run summary do; the per-file reads main did, on 2,000;
- ``vecap stats``: ``output_stats`` without caption lengths (those read every parquet);
- ``--overwrite`` cleanup: every shard file deleted (one listing, bulk deletes).

``--shards N`` overrides N (default 100,000). The S3 server is moto's (``VECAP_S3_SERVER=minio``:
MinIO's, from ``make minio``). Its objects are created in bulk: loaded into moto's store by the
server process before it listens, or sent to MinIO as tar archives it extracts
(``Snowball-Auto-Extract``), because 200,000 single PUTs would take ~10-20 minutes at the few
hundred requests/s either server answers here (that PUT rate is measured on 2,000 objects and
reported); everything timed goes through HTTP and s3fs. The machine's 2 cores are shared with the server
(moto is one Python process): its request rate bounds every S3 figure. Loopback only. Last
line: one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE_PER_FILE = 2_000  # stats files read one by one, the way main read them


def _stats_json(shard_id: int, name: str, attempt: str, size: int) -> bytes:
    from schemas.stats import ShardStats

    now = time.time()
    return (
        ShardStats(
            shard_id=shard_id,
            rows=1,
            status_counts={"ok": 1},
            stage_seconds={"read": 0.001, "write": 0.002},
            started_at=now - 1,
            finished_at=now,
            parquet=name,
            parquet_bytes=size,
            attempt=attempt,
        )
        .to_json()
        .encode()
    )


def _objects(out: str, n: int) -> dict[str, bytes]:
    """Every file of an output of ``n`` committed shards, by path on its filesystem."""
    from pipeline.io.shard_files import attempt_parquet_name, new_attempt_id, stats_name

    fake = b"PAR1" + b"\0" * 60 + b"PAR1"  # small fake parquets: only the stats files are read
    files: dict[str, bytes] = {}
    for sid in range(n):
        attempt = new_attempt_id()
        name = attempt_parquet_name(sid, attempt)
        files[f"{out}/shards/{name}"] = fake
        files[f"{out}/shards/{stats_name(sid)}"] = _stats_json(sid, name, attempt, len(fake))
    return files


def create_local_output(out: str, n: int) -> float:
    t0 = time.time()
    os.makedirs(f"{out}/shards", exist_ok=True)
    for path, data in _objects(out, n).items():
        with open(path, "wb") as f:
            f.write(data)
    return time.time() - t0


def preload_file(bucket_path: str, n: int, dest: str) -> float:
    """The S3 output's objects, pickled for the server to load before it listens."""
    import pickle

    t0 = time.time()
    with open(dest, "wb") as f:
        pickle.dump(_objects(bucket_path, n), f, protocol=pickle.HIGHEST_PROTOCOL)
    return time.time() - t0


def snowball_upload(bucket_path: str, n: int, per_tar: int = 20_000) -> None:
    """MinIO's bulk PUT: tar archives it extracts into objects (``Snowball-Auto-Extract``)."""
    import io
    import tarfile

    import fsspec

    fs, _ = fsspec.core.url_to_fs("s3://")
    bucket, prefix = bucket_path.split("/", 1)
    items = list(_objects(prefix, n).items())
    for start in range(0, len(items), per_tar):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for key, data in items[start : start + per_tar]:
                info = tarfile.TarInfo(key)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        fs.pipe_file(
            f"{bucket}/snowball-{start}.tar",
            buf.getvalue(),
            Metadata={"Snowball-Auto-Extract": "true"},
        )


def put_rate(url: str, n: int = SAMPLE_PER_FILE) -> float:
    """PUTs/s through s3fs's concurrent pipe (what creating the output over HTTP would run at)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    files = {f"{root}/f{i:06d}.json": b"{}" for i in range(n)}
    t0 = time.time()
    fs.pipe(files, batch_size=64)
    rate = n / (time.time() - t0)
    fs.rm(list(files))
    return rate


def _input_table(path: Path, n: int) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["url", "caption"])
        for i in range(n):
            w.writerow([f"http://127.0.0.1:9/{i}.jpg", f"alt {i}"])


def measure(url: str, table: str, n: int) -> dict[str, float]:
    import fsspec

    from pipeline.config import build_pipeline_config
    from pipeline.io.readers import plan_shards
    from pipeline.io.shard_files import committed_shards, list_shards, remove_all_shard_files
    from pipeline.io.stats_summary import output_stats
    from pipeline.run import plan_run

    config = build_pipeline_config(
        {"input": table, "output": url, "stages": [], "reader": {"shard_size": 1}}
    )
    r: dict[str, float] = {}
    t0 = time.time()
    plan_shards(config.reader)
    r["input_plan_s"] = time.time() - t0
    t0 = time.time()
    plan = plan_run(config)
    r["resume_plan_s"] = time.time() - t0
    assert plan.todo == [] and len(plan.skipped) == n, (len(plan.todo), len(plan.skipped))
    t0 = time.time()
    _, listing = list_shards(url)
    r["listing_s"] = time.time() - t0
    assert len(listing.stats) == n
    t0 = time.time()
    done = committed_shards(url)
    r["stats_files_s"] = time.time() - t0
    assert len(done) == n and sum(s.rows for s in done.values()) == n
    r["stats_files_per_s"] = n / r["stats_files_s"]
    # main's way: one exists() + open() per stats file, on a sample
    fs, _ = fsspec.core.url_to_fs(url)
    sample = list(listing.stats.values())[:SAMPLE_PER_FILE]
    t0 = time.time()
    for path in sample:
        if fs.exists(path):
            with fs.open(path, "r") as f:
                f.read()
    r["per_file_stats_files_per_s"] = len(sample) / (time.time() - t0)
    t0 = time.time()
    stats = output_stats(url, caption_lengths=False)
    r["vecap_stats_s"] = time.time() - t0
    assert stats.shards == n and stats.rows == n
    t0 = time.time()
    removed = remove_all_shard_files(url)
    r["overwrite_cleanup_s"] = time.time() - t0
    assert removed == 2 * n, removed
    return r


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=100_000)
    args = ap.parse_args()
    n = args.shards
    logging.disable(logging.WARNING)
    from tests.fixtures.s3_server import BUCKET, make_bucket, server_kind, start_s3_server

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="vecap-bookkeeping-") as tmp:
        table = Path(tmp) / "in.csv"
        _input_table(table, n)
        local_out = f"{tmp}/out"
        created = create_local_output(local_out, n)
        print(f"local: created {n:,} committed shards ({2 * n:,} files) in {created:.1f} s")
        results["local"] = {**measure(local_out, str(table), n), "create_s": created}

        s3_path = f"{BUCKET}/bench-{uuid.uuid4().hex[:8]}/out"
        t0 = time.time()
        if server_kind() == "minio":
            server = start_s3_server()
        else:
            preload = f"{tmp}/preload.pickle"
            preload_file(s3_path, n, preload)
            server = start_s3_server(timeout_s=600, preload=preload)
        os.environ.update(server.env)
        try:
            make_bucket(server)
            if server.kind == "minio":
                snowball_upload(s3_path, n)
            created = time.time() - t0
            print(
                f"s3 ({server.kind}): created {n:,} committed shards ({2 * n:,} objects) in "
                f"{created:.1f} s"
            )
            rate = put_rate(f"s3://{BUCKET}/put-rate")
            results["s3"] = {**measure(f"s3://{s3_path}", str(table), n), "create_s": created}
            results["s3"]["http_puts_per_s"] = rate
        finally:
            server.stop()
        for store, r in results.items():
            for k, v in r.items():
                print(f"  {store:<6}{k:<28}{v:>12,.2f}")
    s3, local = results["s3"], results["local"]
    print(
        f"resume planning of {n:,} shards on the loopback S3 server: {s3['resume_plan_s']:.1f} s "
        f"(target < 30 s), of which input planning {s3['input_plan_s']:.1f} s and the listing "
        f"{s3['listing_s']:.1f} s"
    )
    print(
        json.dumps(
            {
                "shards": n,
                "s3_server": os.environ.get("VECAP_S3_SERVER", "moto"),
                "stats_files_per_s_s3": round(s3["stats_files_per_s"]),
                "stats_files_per_s_local": round(local["stats_files_per_s"]),
                "per_file_stats_files_per_s_s3": round(s3["per_file_stats_files_per_s"]),
                "per_file_stats_files_per_s_local": round(local["per_file_stats_files_per_s"]),
                f"resume_plan_s_{n // 1000}k": round(s3["resume_plan_s"], 2),
                "resume_plan_s_local": round(local["resume_plan_s"], 2),
                "resume_plan_target_met": s3["resume_plan_s"] < 30,
                "listing_s_s3": round(s3["listing_s"], 2),
                "summary_s_s3": round(s3["stats_files_s"], 2),
                "vecap_stats_s_s3": round(s3["vecap_stats_s"], 2),
                "vecap_stats_s_local": round(local["vecap_stats_s"], 2),
                "overwrite_cleanup_s_s3": round(s3["overwrite_cleanup_s"], 2),
                "overwrite_cleanup_s_local": round(local["overwrite_cleanup_s"], 2),
                "create_s_s3": round(s3["create_s"], 1),
                "http_puts_per_s_s3": round(s3["http_puts_per_s"]),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
