"""Whole-pipeline benchmark: end-to-end rows/s, memory vs dataset size, export-json rows/s.

Measured side by side in one run (the machine is shared and noisy):

1. end to end on the tiny models: the bundled sample photos on a loopback server, repeated to
   ``E2E_ROWS`` rows, through download -> caption -> fuse -> write on the FnApiRunner (the tiny
   models are CPU-bound: this measures the machinery, a GPU runs real models);
2. peak RSS of the whole job at 1,000 and at 10,000 rows, each in a fresh process: read ->
   download -> caption -> fuse -> write of small loopback JPEGs, 1,000 rows per shard, with the
   real caption and fusion stages around an instant stand-in model (a tiny model captions ~1
   row/s on 2 cores, too slow for 10,000 rows). Target: the 10k run needs <= 1.2x the 1k run;
3. export-json rows/s from 300,000 synthetic rows (shards without images), and validate-json.

Loopback only. The last line is one JSON object.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

E2E_ROWS = 48
RSS_SIZES = (1_000, 10_000)
EXPORT_ROWS = 300_000


def _quiet() -> None:
    logging.disable(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")


def _small_jpegs() -> dict[str, bytes]:
    """A few 96x72 JPEGs cut from the bundled sample photos (about 3 KB each)."""
    from PIL import Image

    from pipeline.sample.server import SAMPLE_DIR

    files = {}
    for i, path in enumerate(sorted(SAMPLE_DIR.glob("*.jpg"))[:8]):
        img = Image.open(path).convert("RGB").resize((96, 72))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        files[f"s{i}.jpg"] = buf.getvalue()
    return files


def _table(base_url: str, names: list[str], rows: int, dest: Path) -> Path:
    with dest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["url", "caption"])
        for i in range(rows):
            # a distinct URL per row (the query is ignored by the server)
            w.writerow([f"{base_url}/{names[i % len(names)]}?row={i}", f"photo number {i}"])
    return dest


class InstantGenerator:
    """A stand-in model that answers at once: the real caption and fusion stages (routing,
    RunInference, batching, dead letters, flattens) run around it, only the model is free."""

    processor = None  # no chat template: the stages use their fallback prompt layout

    def __init__(self, config, multimodal: bool = False) -> None:
        self.config = config
        self.multimodal = multimodal

    def generate(self, prompts: list[str], images=None) -> list[str]:
        return ["A small photo of a quiet street with a red door and green plants."] * len(prompts)

    def chat(self, user_texts: list[str], **_) -> list[str]:
        return self.generate(user_texts)


def _instant_stages(cfg) -> dict:
    from llava_recap.stage import CaptionStage
    from llm_fusion.stage import FusionStage

    return {
        "caption": lambda: CaptionStage(cfg.caption, generator_factory=InstantGenerator),
        "fuse": lambda: FusionStage(cfg.fusion, generator_loader=InstantGenerator),
    }


def rss_child(table: str, out: str) -> None:
    """Run the job (model stages with instant stand-in models) in this fresh process and print
    its peak RSS."""
    import resource

    _quiet()
    from pipeline.config import build_pipeline_config
    from pipeline.run import run_pipeline

    cfg = build_pipeline_config(
        {
            "input": table,
            "output": out,
            "stages": ["download", "caption", "fuse"],
            "caption": {"generation": {"model": "instant-stand-in", "batch_size": 32}},
            "fusion": {"generation": {"model": "instant-stand-in", "batch_size": 32}},
            "progress": False,
            "reader": {"shard_size": 1000},
            "download": {
                "allow_private_networks": True,
                "threads": 16,
                "retries": 0,
                "image_size": 64,
                "min_image_size": 16,
            },
        }
    )
    t0 = time.time()
    res = run_pipeline(cfg, stream=io.StringIO(), stage_overrides=_instant_stages(cfg))
    seconds = time.time() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "rows": res.rows_written,
                "seconds": seconds,
                "peak_rss_mb": peak_kb / 1024,
                "ok": res.status == "succeeded",
            }
        )
    )


def _measure_rss(base_url: str, names: list[str], rows: int, work: Path) -> dict:
    table = _table(base_url, names, rows, work / f"rss-{rows}.csv")
    proc = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(table), str(work / f"rss-out-{rows}")],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"rss child failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _e2e(work: Path) -> dict:
    from llava_recap.tiny_models import build_tiny_models
    from pipeline.cli.run import demo_config_dict
    from pipeline.config import build_pipeline_config
    from pipeline.run import run_pipeline
    from pipeline.sample.server import SAMPLE_DIR, SampleServer, sample_input_table

    models = build_tiny_models(Path.home() / ".cache" / "vecap" / "tiny-models")
    with SampleServer(root_dir=SAMPLE_DIR) as server:
        sample = sample_input_table(server.base_url, work / "sample.csv")
        lines = sample.read_text().splitlines()
        header, body = lines[0], lines[1:]
        rows = [
            f"{body[i % len(body)].split(',', 1)[0]}?row={i},{body[i % len(body)].split(',', 1)[1]}"
            for i in range(E2E_ROWS)
        ]
        table = work / "e2e.csv"
        table.write_text("\n".join([header, *rows]) + "\n")
        data = demo_config_dict(str(table), str(work / "e2e-out"), models, shard_size=16)
        data["progress"] = False
        t0 = time.time()
        res = run_pipeline(build_pipeline_config(data), stream=io.StringIO())
        seconds = time.time() - t0
    ok = sum(s.status_counts.get("ok", 0) for s in res.written.values())
    return {
        "rows": res.rows_written,
        "ok_rows": ok,
        "seconds": seconds,
        "rows_per_s": res.rows_written / seconds,
    }


def _export(work: Path) -> dict:
    from pipeline.io.export_json import ExportConfig, export_json, validate_json
    from tests.pipeline.synthetic import write_synthetic_output

    out = work / "synthetic"
    write_synthetic_output(str(out), EXPORT_ROWS, 10_000, dup_every=10, fail_every=13)
    t0 = time.time()
    res = export_json(ExportConfig(source=str(out), splits=10))
    export_s = time.time() - t0
    t0 = time.time()
    rep = validate_json(res.files)
    validate_s = time.time() - t0
    if not rep.ok:
        raise RuntimeError(f"export did not validate: {rep.errors[:3]}")
    return {
        "rows": res.rows_read,
        "entries": res.entries,
        "export_s": export_s,
        "export_rows_per_s": res.rows_read / export_s,
        "validate_entries_per_s": rep.entries / validate_s,
    }


def main() -> int:
    _quiet()
    from pipeline.sample.server import SampleServer

    with tempfile.TemporaryDirectory(prefix="vecap-bench-pipeline-") as tmp:
        work = Path(tmp)
        print("== export-json on synthetic shards", flush=True)
        export = _export(work)
        print(
            f"export-json: {export['rows']} rows -> {export['entries']} entries in {export['export_s']:.2f} s "
            f"= {export['export_rows_per_s']:,.0f} rows/s (target >= 200,000); "
            f"validate-json {export['validate_entries_per_s']:,.0f} entries/s",
            flush=True,
        )
        print(
            "== peak RSS vs rows (download -> caption -> fuse -> write, instant stand-in models, fresh process each)",
            flush=True,
        )
        files = _small_jpegs()
        with SampleServer(files=files) as server:
            rss = {n: _measure_rss(server.base_url, sorted(files), n, work) for n in RSS_SIZES}
        for n, r in rss.items():
            print(
                f"{n:>6} rows: peak RSS {r['peak_rss_mb']:.0f} MB, {r['seconds']:.1f} s "
                f"({n / r['seconds']:.0f} rows/s), succeeded={r['ok']}",
                flush=True,
            )
        ratio = rss[RSS_SIZES[1]]["peak_rss_mb"] / rss[RSS_SIZES[0]]["peak_rss_mb"]
        print(f"rss ratio 10k/1k: {ratio:.3f} (target <= 1.2)", flush=True)
        print(
            f"== end to end on the tiny models ({E2E_ROWS} rows, download -> caption -> fuse)",
            flush=True,
        )
        e2e = _e2e(work)
        print(
            f"end to end: {e2e['rows']} rows ({e2e['ok_rows']} ok) in {e2e['seconds']:.1f} s = "
            f"{e2e['rows_per_s']:.2f} rows/s on CPU tiny models (model load included)",
            flush=True,
        )
    result = {
        "rows_per_s": round(e2e["rows_per_s"], 3),
        "e2e_rows": e2e["rows"],
        "peak_rss_mb_1k": round(rss[1_000]["peak_rss_mb"], 1),
        "peak_rss_mb_10k": round(rss[10_000]["peak_rss_mb"], 1),
        "rss_ratio": round(ratio, 3),
        "rss_target_met": ratio <= 1.2,
        "pipeline_rows_per_s_10k_instant_models": round(10_000 / rss[10_000]["seconds"], 1),
        "export_rows_per_s": round(export["export_rows_per_s"]),
        "export_target_met": export["export_rows_per_s"] >= 200_000,
        "validate_entries_per_s": round(export["validate_entries_per_s"]),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--rss-child":
        rss_child(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main())
