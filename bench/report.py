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

ROWS_PER_SHARD = int(os.environ.get("VECAP_BENCH_REPORT_ROWS_PER_SHARD", "4000"))
SHARDS_SMALL = int(os.environ.get("VECAP_BENCH_REPORT_SHARDS", "4"))
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


def _baseline_rss() -> float:
    """Peak RSS of a process that only imports the report: the floor both numbers share."""
    return _run(
        "import json, resource; import pipeline.report, pyarrow.parquet, matplotlib.figure;"
        "print(json.dumps({'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
    )["peak_rss_mb"]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="vecap-bench-report-"))
    try:
        results = {}
        for label, shards in (("1x", SHARDS_SMALL), (f"{GROWTH}x", SHARDS_SMALL * GROWTH)):
            out = work / label
            t = time.perf_counter()
            # ~1.5 KB images: realistic row counts at a size this machine's disk takes quickly.
            write_synthetic_output(
                out,
                shards=shards,
                rows_per_shard=ROWS_PER_SHARD,
                seed=1,
                shared_image=True,
                image_size=(48, 36),
                row_group_size=256,
            )
            made = time.perf_counter() - t
            size_mb = sum(p.stat().st_size for p in (out / "shards").iterdir()) / 2**20
            report = _run(_REPORT, str(out), str(work / f"{label}.html"))
            naive = _run(_NAIVE, str(out))
            results[label] = {
                "rows": report["rows"],
                "output_mb": size_mb,
                "report": report,
                "naive": naive,
                "synth_seconds": made,
            }
        base = _baseline_rss()
        print(f"import-only baseline peak RSS: {base:.0f} MB")
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

        def growth(kind: str) -> float:
            # Memory above the import floor, so the ratio shows what the data costs.
            lo = max(small[kind]["peak_rss_mb"] - base, 1.0)
            return (big[kind]["peak_rss_mb"] - base) / lo

        summary = {
            "bench": "report",
            "rows_1x": small["rows"],
            "rows_4x": big["rows"],
            "report_rows_per_s_4x": round(big["rows"] / big["report"]["seconds"]),
            "report_seconds_4x": round(big["report"]["seconds"], 2),
            "report_peak_rss_mb_1x": round(small["report"]["peak_rss_mb"]),
            "report_peak_rss_mb_4x": round(big["report"]["peak_rss_mb"]),
            "naive_peak_rss_mb_1x": round(small["naive"]["peak_rss_mb"]),
            "naive_peak_rss_mb_4x": round(big["naive"]["peak_rss_mb"]),
            "baseline_rss_mb": round(base),
            "report_mem_growth_4x_rows": round(growth("report"), 2),
            "naive_mem_growth_4x_rows": round(growth("naive"), 2),
        }
        print(
            f"memory above baseline when rows grow {GROWTH}x: report x{summary['report_mem_growth_4x_rows']}, "
            f"naive read x{summary['naive_mem_growth_4x_rows']}"
        )
        print(json.dumps(summary))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
