"""Report benchmark: time and peak memory of `vecap report` on an output and on one 4x larger.

Side by side in the same run, each in a fresh subprocess so peak RSS is its own: the report
(streamed counting pass + reservoir sample, images read only for sampled rows) against the naive
way (read every finished shard whole with pyarrow). The report's memory should stay flat when
the output grows 4x; the naive read's grows with it.

Prints a table and ends with one JSON line. Local files only; no network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.report.synthetic import write_synthetic_output  # noqa: E402

ROWS_PER_SHARD = int(os.environ.get("VECAP_BENCH_REPORT_ROWS_PER_SHARD", "500"))
# More shards than the report keeps in flight (2 x 4 workers) even at 1x, so the comparison
# measures rows, not the read-ahead window filling up.
SHARDS_SMALL = int(os.environ.get("VECAP_BENCH_REPORT_SHARDS", "24"))
GROWTH = 4

_REPORT = """
import json, resource, sys, time
from pipeline.report import ReportConfig, build_report
t = time.perf_counter()
r = build_report(ReportConfig(sys.argv[1], report_path=sys.argv[2], sample_size=48))
print(json.dumps({"seconds": time.perf_counter() - t, "rows": r.rows, "sampled": r.sampled,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
_NAIVE = """
import glob, json, resource, sys, time
import pyarrow as pa, pyarrow.parquet as pq
t = time.perf_counter()
paths = sorted(p.replace(".stats.json", ".parquet")
               for p in glob.glob(sys.argv[1] + "/shards/*.stats.json"))
table = pa.concat_tables(pq.read_table(p) for p in paths)
print(json.dumps({"seconds": time.perf_counter() - t, "rows": table.num_rows,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _run(code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _best(runs) -> dict:
    runs = list(runs)
    best = dict(runs[0])
    for key in ("seconds", "peak_rss_mb"):
        best[key] = min(r[key] for r in runs)
    return best


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="vecap-bench-report-"))
    try:
        results = {}
        for label, shards in (("1x", SHARDS_SMALL), (f"{GROWTH}x", SHARDS_SMALL * GROWTH)):
            out = work / label
            t = time.perf_counter()
            # ~5 KB images (real ones are ~30 KB): enough for memory to show, small enough for
            # this machine's disk.
            write_synthetic_output(
                out,
                shards=shards,
                rows_per_shard=ROWS_PER_SHARD,
                seed=1,
                shared_image=True,
                image_size=(320, 240),
                row_group_size=256,
            )
            made = time.perf_counter() - t
            size_mb = sum(p.stat().st_size for p in (out / "shards").iterdir()) / 2**20
            # Best of two: a process's peak RSS and time wobble with thread arenas and a busy host.
            report = _best(_run(_REPORT, str(out), str(work / f"{label}.html")) for _ in range(2))
            naive = _best(_run(_NAIVE, str(out)) for _ in range(2))
            results[label] = {
                "rows": report["rows"],
                "output_mb": size_mb,
                "report": report,
                "naive": naive,
                "synth_seconds": made,
            }
        print(
            f"{'output':>6} {'rows':>9} {'MB':>7} | {'report s':>8} {'rows/s':>9} {'RSS MB':>7} "
            f"| {'naive s':>7} {'RSS MB':>7}"
        )
        for label, r in results.items():
            rep, nai = r["report"], r["naive"]
            print(
                f"{label:>6} {r['rows']:>9,} {r['output_mb']:>7.1f} | {rep['seconds']:>8.2f} "
                f"{r['rows'] / rep['seconds']:>9,.0f} {rep['peak_rss_mb']:>7.0f} | "
                f"{nai['seconds']:>7.2f} {nai['peak_rss_mb']:>7.0f}"
            )
        small, big = results["1x"], results[f"{GROWTH}x"]

        def mb_per_100k_rows(kind: str) -> float:
            # What memory the data costs: peak RSS growth per 100k more rows.
            grown = big[kind]["peak_rss_mb"] - small[kind]["peak_rss_mb"]
            return grown / (big["rows"] - small["rows"]) * 100_000

        report_cost, naive_cost = mb_per_100k_rows("report"), mb_per_100k_rows("naive")
        summary = {
            "bench": "report",
            "rows_1x": small["rows"],
            "rows_4x": big["rows"],
            "report_seconds_4x": round(big["report"]["seconds"], 2),
            "report_rows_per_s_4x": round(big["rows"] / big["report"]["seconds"]),
            "report_peak_rss_mb_1x": round(small["report"]["peak_rss_mb"]),
            "report_peak_rss_mb_4x": round(big["report"]["peak_rss_mb"]),
            "naive_peak_rss_mb_1x": round(small["naive"]["peak_rss_mb"]),
            "naive_peak_rss_mb_4x": round(big["naive"]["peak_rss_mb"]),
            "report_rss_mb_per_100k_rows": round(report_cost, 1),
            "naive_rss_mb_per_100k_rows": round(naive_cost, 1),
        }
        print(
            f"peak memory per 100k more rows: report {report_cost:.1f} MB, "
            f"naive whole read {naive_cost:.1f} MB (images here ~5 KB; real ones ~30 KB)"
        )
        print(json.dumps(summary))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
