"""Dedup benchmark: model calls per distinct item with and without ``--dedup``, the dedup's own
cost per row, and a second job through the caption cache.

Input (generated, served on loopback): ``--images`` distinct images, one row each, plus
``--dup-urls`` (a fraction of those rows) rows repeating a URL with its AltText, plus
``--dup-images`` rows whose distinct URL (``?copy=k``) serves an existing image's bytes, with a
new AltText. Through download + caption + fuse with the tiny models on the local runner:

- ``caption_calls_per_distinct``: prompts sent to the captioner / distinct images (target 1.0);
- ``fusion_calls_per_distinct``: prompts sent to the fusion LLM / distinct (image, AltText)
  pairs the LLM fuses (target 1.0); both also without dedup, side by side;
- ``dedup_cpu_ms_per_row``: what dedup adds per row at scale, measured on ``--synthetic-rows``
  (20,000) rows with the same duplicate shares through CPU stand-ins for the three stages (a
  download that derives the image from the URL, captions and fusions from the row's content,
  each skipping what the real stage's router skips): the wall time of the same job with and
  without ``--dedup`` side by side, their difference per row (index jobs, the extra phase
  outputs, assemble), and the index jobs and assemble alone per row. With the tiny models'
  small input the same phases are shown too, mostly their fixed start-up;
- a second job over an input half new (half its rows repeat the first job's images and
  AltTexts) sharing the caption cache: calls / new items (target 1.0).

Prompts are counted at the transformers generator (the local runner runs the model stages in
this process). Last line: one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import collections
import csv
import io
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _images(folder: Path, n: int, seed: int) -> list[str]:
    from PIL import Image

    rnd = random.Random(seed)
    names = []
    for i in range(n):
        img = Image.new("RGB", (96, 72), tuple(rnd.randrange(256) for _ in range(3)))
        for _ in range(6):  # a few blocks, so every image's bytes differ
            x, y = rnd.randrange(80), rnd.randrange(56)
            img.paste(tuple(rnd.randrange(256) for _ in range(3)), (x, y, x + 16, y + 16))
        name = f"img-{seed}-{i:04d}.jpg"
        img.save(folder / name, quality=90)
        names.append(name)
    return names


def _table(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["url", "caption"])
        w.writerows(rows)


def _input(base: str, names: list[str], dup_urls: float, dup_images: float, seed: int):
    rnd = random.Random(seed)
    rows = [(f"{base}/{n}", f"a photo number {i} of the {seed} set") for i, n in enumerate(names)]
    originals = list(rows)
    for _ in range(round(dup_urls * len(originals))):
        # the same URL and AltText: one download, one call of each model
        rows.append(rnd.choice(originals))
    for k in range(round(dup_images * len(originals))):
        url, _alt = rnd.choice(originals)
        # the same bytes behind another URL, with a new AltText: one caption, its own fusion
        rows.append((f"{url}?copy={k}", f"another page showing picture {k}"))
    rnd.shuffle(rows)
    return rows


class Counter:
    def __init__(self) -> None:
        from pipeline.generation.transformers_backend import TransformersGenerator

        self.calls: collections.Counter[str] = collections.Counter()
        original = TransformersGenerator.generate
        counter = self

        def counting(gen, prompts, images=None):
            counter.calls["caption" if images is not None else "fusion"] += len(prompts)
            return original(gen, prompts, images)

        TransformersGenerator.generate = counting


def _timed_phases():
    """Wall seconds per dedup phase, by wrapping DedupRun's two phase runners."""
    import pipeline.dedup.phases as phases

    seconds: dict[str, float] = {}
    for method in ("index", "run_phase"):
        original = getattr(phases.DedupRun, method)

        def wrapped(self, name, *args, _original=original, **kwargs):
            t0 = time.perf_counter()
            try:
                return _original(self, name, *args, **kwargs)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0

        setattr(phases.DedupRun, method, wrapped)
    return seconds


# ----------------------------------------------------------------------------- at scale, no models


def _stand_in(kind: str, config):
    """A CPU stand-in for one stage, skipping what the real stage skips (its router)."""
    import apache_beam as beam

    return beam.Map(_stand_in_row, kind, config)


def _stand_in_row(r, kind: str, config):
    import hashlib

    from pipeline.generation.precision import engine_label

    if not r.ok:
        return r
    if kind == "download":
        if r.jpg is not None or (config.inherit_duplicates and r.duplicate_kind == "url"):
            return r
        name = r.url.rsplit("/", 1)[1].split("?", 1)[0]  # ?copy=k: the same image
        data = hashlib.sha256(name.encode()).digest() * 64
        return r.replace(jpg=data, image_format="jpeg", width=64, height=48,
                         original_width=64, original_height=48,
                         sha256=hashlib.sha256(data).hexdigest())  # fmt: skip
    if kind == "caption":
        if (config.inherit_duplicates and r.duplicate_of) or r.visual_caption:
            return r
        return r.replace(visual_caption=f"a picture {r.sha256[:12]}",
                         caption_model=config.recorded_model, caption_prompt_id=config.prompt_id,
                         caption_engine=engine_label(config.generation))  # fmt: skip
    if (config.inherit_duplicates and r.fusion_of) or r.fusion_source:
        return r
    return r.replace(fused_caption=f"{r.visual_caption}, {r.alt_text}", fusion_source="llm",
                     fusion_model=config.model_name or config.generation.model,
                     fusion_prompt_id=config.prompt_id,
                     fusion_engine=engine_label(config.generation))  # fmt: skip


def _synthetic_overhead(args, tmp: Path, models, phase_seconds: dict) -> dict:
    import pipeline.run as run_module
    from pipeline.config import build_pipeline_config

    n_images = round(args.synthetic_rows / (1 + args.dup_urls + args.dup_images))
    names = [f"img-{i:07d}.jpg" for i in range(n_images)]
    rows = _input("http://127.0.0.1:9", names, args.dup_urls, args.dup_images, seed=5)
    table = tmp / "synthetic.csv"
    _table(table, rows)
    real_stage = run_module.stage_transform

    def stand_in_stage(stage, config):
        kind = {"download": "download", "caption": "caption", "fuse": "fuse"}[stage]
        cfg = {"download": config.download, "caption": config.caption, "fuse": config.fusion}[kind]
        return _stand_in(kind, cfg)

    run_module.stage_transform = stand_in_stage
    try:
        timings = {}
        for label, extra in (("plain", {}), ("dedup", {"dedup": True})):
            data = {
                "input": str(table), "output": str(tmp / f"synthetic-{label}"),
                "stages": ["download", "caption", "fuse"], "progress": False,
                "reader": {"shard_size": 1000}, "local_wave_shards": 1000,
                "caption": {"generation": {"model": str(models.llava), "device": "cpu"}},
                "fusion": {"generation": {"model": str(models.llm), "device": "cpu"}},
                **extra,
            }  # fmt: skip
            phase_seconds.clear()
            t0 = time.perf_counter()
            result = run_module.run_pipeline(build_pipeline_config(data), stream=io.StringIO())
            assert result.status == "succeeded"
            timings[label] = time.perf_counter() - t0
            index = _extra(phase_seconds)
            phases = {k: round(v, 2) for k, v in phase_seconds.items()}
    finally:
        run_module.stage_transform = real_stage
    n = len(rows)
    return {
        "synthetic_rows": n,
        "synthetic_plain_s": round(timings["plain"], 2),
        "synthetic_dedup_s": round(timings["dedup"], 2),
        "dedup_cpu_ms_per_row": round(1000 * (timings["dedup"] - timings["plain"]) / n, 3),
        "dedup_index_ms_per_row": round(1000 * index / n, 3),
        "synthetic_phase_s": phases,
    }


def _extra(seconds: dict[str, float]) -> float:
    """Seconds of the phases a run without dedup does not have: index jobs and assemble."""
    return sum(v for k, v in seconds.items() if k not in ("download", "caption", "fuse"))


def _distinct(out: str) -> tuple[int, int]:
    """(distinct images, distinct (image, AltText) pairs fused by the LLM) among ok rows."""
    from tests.pipeline.test_run import rows_of

    rows = [r for r in rows_of(out) if r["status"] == "ok"]
    images = {r["sha256"] for r in rows}
    pairs = {(r["sha256"], r["alt_text"]) for r in rows if r["fusion_source"] == "llm"}
    return len(images), len(pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--dup-urls", type=float, default=0.1)
    ap.add_argument("--dup-images", type=float, default=0.1)
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--synthetic-rows", type=int, default=20_000)
    args = ap.parse_args()

    from llava_recap.tiny_models import build_tiny_models
    from pipeline.config import build_pipeline_config
    from pipeline.run import run_pipeline
    from pipeline.sample.server import SampleServer

    counter = Counter()
    phase_seconds = _timed_phases()
    with tempfile.TemporaryDirectory(prefix="vecap-bench-dedup-") as tmp_dir:
        tmp = Path(tmp_dir)
        models = build_tiny_models(tmp / "models")
        served = tmp / "served"
        served.mkdir()
        first_names = _images(served, args.images, seed=1)
        new_names = _images(served, args.images // 2, seed=2)

        def config(inp: Path, out: str, **extra) -> dict:
            return {
                "input": str(inp), "output": str(tmp / out), "stages": ["download", "caption", "fuse"],
                "progress": False, "reader": {"shard_size": args.shard_size},
                "download": {"allow_private_networks": True, "threads": 8, "retries": 0},
                "caption": {"generation": {"model": str(models.llava), "device": "cpu",
                                           "max_new_tokens": args.max_new_tokens, "batch_size": 16}},
                "fusion": {"generation": {"model": str(models.llm), "device": "cpu",
                                          "max_new_tokens": args.max_new_tokens, "batch_size": 16}},
                **extra,
            }  # fmt: skip

        def run(data: dict) -> tuple[float, dict[str, int]]:
            counter.calls.clear()
            phase_seconds.clear()
            t0 = time.perf_counter()
            result = run_pipeline(build_pipeline_config(data), stream=io.StringIO())
            assert result.status == "succeeded", result.status
            return time.perf_counter() - t0, dict(counter.calls)

        with SampleServer(root_dir=served) as server:
            rows = _input(server.base_url, first_names, args.dup_urls, args.dup_images, seed=1)
            first = tmp / "first.csv"
            _table(first, rows)
            plain_s, plain_calls = run(config(first, "plain"))
            dedup_s, dedup_calls = run(config(first, "dedup", caption_cache=str(tmp / "cache")))
            extra = _extra(phase_seconds)
            phases = dict(phase_seconds)
            images, pairs = _distinct(str(tmp / "dedup"))
            # job 2: half its rows are job 1's (same URL and AltText), half new images
            half = random.Random(3).sample(
                [r for r in rows if "?copy=" not in r[0]], len(new_names)
            )
            second_rows = half + [
                (f"{server.base_url}/{n}", f"a new photo {i}") for i, n in enumerate(new_names)
            ]
            second = tmp / "second.csv"
            _table(second, second_rows)
            second_s, second_calls = run(config(second, "second", caption_cache=str(tmp / "cache")))
            new_images = len(new_names)
            new_pairs = len(new_names)  # each new image's own AltText (all fused by the LLM)

        synthetic = _synthetic_overhead(args, tmp, models, phase_seconds)
    n = len(rows)
    figures = {
        "rows": n,
        "distinct_images": images,
        "distinct_llm_pairs": pairs,
        "caption_calls_per_distinct": round(dedup_calls.get("caption", 0) / images, 3),
        "fusion_calls_per_distinct": round(dedup_calls.get("fusion", 0) / pairs, 3),
        "plain_caption_calls_per_distinct": round(plain_calls.get("caption", 0) / images, 3),
        "plain_fusion_calls_per_distinct": round(plain_calls.get("fusion", 0) / pairs, 3),
        "small_input_dedup_phases_ms_per_row": round(1000 * extra / n, 2),
        **synthetic,
        "plain_wall_s": round(plain_s, 2),
        "dedup_wall_s": round(dedup_s, 2),
        "second_job_rows": len(second_rows),
        "second_caption_calls_per_new": round(second_calls.get("caption", 0) / new_images, 3),
        "second_fusion_calls_per_new": round(second_calls.get("fusion", 0) / new_pairs, 3),
        "second_wall_s": round(second_s, 2),
    }
    print(f"input: {n} rows: {args.images} images, {args.dup_urls:.0%} repeated URLs, "
          f"{args.dup_images:.0%} repeated images behind new URLs")  # fmt: skip
    print(f"{'':28}{'caption calls':>15}{'fusion calls':>14}{'wall s':>9}")
    print(
        f"{'without dedup':28}{plain_calls.get('caption', 0):>15}{plain_calls.get('fusion', 0):>14}{plain_s:>9.1f}"
    )
    print(
        f"{'--dedup':28}{dedup_calls.get('caption', 0):>15}{dedup_calls.get('fusion', 0):>14}{dedup_s:>9.1f}"
    )
    print(f"{'distinct items':28}{images:>15}{pairs:>14}")
    print(
        f"{'second job (half new)':28}{second_calls.get('caption', 0):>15}{second_calls.get('fusion', 0):>14}{second_s:>9.1f}"
    )
    print(f"{'new items in it':28}{new_images:>15}{new_pairs:>14}")
    print("dedup phases (wall s): " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
    print(f"index jobs + assemble: {extra:.2f} s = {figures['small_input_dedup_phases_ms_per_row']} "
          "ms per row (mostly the eight Beam jobs' fixed start-up at this size)")  # fmt: skip
    s = synthetic
    print(f"at scale ({s['synthetic_rows']} rows, CPU stand-ins for the stages): without dedup "
          f"{s['synthetic_plain_s']} s, --dedup {s['synthetic_dedup_s']} s: "
          f"{s['dedup_cpu_ms_per_row']} ms per row added; index jobs + assemble "
          f"{s['dedup_index_ms_per_row']} ms per row")  # fmt: skip
    print("  phases (wall s): " + ", ".join(f"{k} {v}" for k, v in s["synthetic_phase_s"].items()))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
