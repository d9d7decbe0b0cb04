"""Captioner throughput on the tiny LLaVA: Beam pipeline vs raw batched generate, batch sweep.

Measured side by side in one run (the machine is noisy): each of ``--repeats`` runs the pipeline
between two raw runs, and the medians (of rates and of per-repeat ratios) are reported.

- raw: the same JPEG bytes decoded with Pillow, then ``Generator.generate`` in batches of
  ``--batch-size`` — the plain script a user would write from the same records. Beside it,
  ``generate`` alone on pre-decoded pixels (``pipeline_ratio_vs_generate_only``), which charges
  the pipeline for decoding the raw run skipped;
- pipeline: ``CaptionStage`` on JPEG records on the FnApiRunner (decode, Beam batching,
  partition/flatten included). Pipeline start-up and model load are fixed costs a real job pays
  once per worker, so the pipeline's rate is taken from the *difference* between a large and a
  small run: extra images / extra seconds (``pipeline_ratio``, harness included). The same
  pipeline without the stage is timed as a control; subtracting it gives ``stage_ratio``, the
  captioner's own cost. The end-to-end rate of the large run is printed too;
- a batch-size sweep (1, 8, 32) of raw generate for transformers and, when ``.venv-vllm``
  exists, for vLLM (run as a subprocess in that venv with this same file).

Everything is local: tiny models built offline, no network. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
VLLM_STAMP = ROOT / ".venv-vllm" / ".vecap-vllm-stamp"  # written last by setup_vllm_venv.sh
PROMPT = "Describe the image concisely, less than 20 words."


def make_images(n: int, seed: int = 0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (96 + i % 5 * 8, 128, 3), dtype=np.uint8), "RGB")
        for i in range(n)
    ]


def jpeg(image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def gen_config(model: Path, backend: str, batch: int, max_new: int):
    from pipeline.generation import GenerationConfig

    return GenerationConfig(
        model=str(model),
        backend=backend,
        device="cpu",
        dtype="float32",
        max_new_tokens=max_new,
        batch_size=batch,
        min_batch_size=batch,
        enforce_eager=True,
        max_model_len=512,
    )


def raw_rate(generator, images, batch: int, *, decode: bool = False) -> float:
    """Images/s of plain batched ``generate``; ``decode``: ``images`` are JPEG bytes, decoded
    inside the timed loop (what a raw script starting from the records' bytes must do too)."""
    from llava_recap.handler import decode_image
    from pipeline.generation import render_chat

    prompt = render_chat(generator.processor, PROMPT, image=True, fallback_template="x")
    warm = [decode_image(b) for b in images[:batch]] if decode else images[:batch]
    generator.generate([prompt] * len(warm), warm)  # warm-up
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        chunk = images[i : i + batch]
        if decode:
            chunk = [decode_image(b) for b in chunk]
        out = generator.generate([prompt] * len(chunk), chunk)
        assert len(out) == len(chunk)
    return len(images) / (time.perf_counter() - start)


def sweep(model: Path, backend: str, images, batches, max_new: int) -> dict[str, float]:
    from pipeline.generation import load_generator

    generator = load_generator(gen_config(model, backend, max(batches), max_new), True)
    return {str(b): round(raw_rate(generator, images, b), 2) for b in batches}


def read_record(path: str):
    """The bench's source: one JPEG file -> one ok Record (stands in for the reader/download)."""
    from schemas import Record, make_uid

    index = int(Path(path).stem)
    return Record(
        uid=make_uid(0, index),
        shard_id=0,
        row_index=index,
        jpg=Path(path).read_bytes(),
        image_format="jpeg",
    )


def pipeline_seconds(
    model: Path, jpg_paths: list[str], batch: int, max_new: int, *, caption: bool = True
) -> float:
    """Wall time of read -> CaptionStage -> status count on the FnApiRunner.

    Elements enter as file paths (not as records embedded in ``beam.Create``, whose pickling
    and bz2 of every image would be charged to the captioner), and only statuses leave.
    ``caption=False`` runs the same pipeline without the stage: the harness's own cost.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from llava_recap.config import CaptionConfig
    from llava_recap.stage import CaptionStage

    config = CaptionConfig(generation=gen_config(model, "transformers", batch, max_new))
    fd, counts = tempfile.mkstemp(suffix=".pkl")
    os.close(fd)

    def capture(pairs, path=counts):
        Path(path).write_bytes(pickle.dumps(dict(pairs)))

    start = time.perf_counter()
    with beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions()) as p:
        _ = (
            p
            | beam.Create(jpg_paths)
            | "Read" >> beam.Map(read_record)
            | (CaptionStage(config) if caption else "NoStage" >> beam.Map(lambda r: r))
            | "Status" >> beam.Map(lambda r: r.status)
            | beam.combiners.Count.PerElement()
            | beam.combiners.ToList()
            | beam.Map(capture)
        )
    seconds = time.perf_counter() - start
    statuses = pickle.loads(Path(counts).read_bytes())
    os.unlink(counts)
    if statuses != {"ok": len(jpg_paths)}:
        raise SystemExit(f"pipeline lost or failed rows: {statuses} for {len(jpg_paths)} inputs")
    return seconds


def vllm_sweep(models_dir: Path, n: int, batches, max_new: int) -> dict | str:
    """Run this file's --vllm-sweep in .venv-vllm; a string says why it did not run."""
    if not (VLLM_PY.exists() and VLLM_STAMP.exists()):
        return "skipped: .venv-vllm not built (make vllm-venv)"
    with tempfile.TemporaryDirectory(prefix="vecap-bench-vllm-") as cache:
        from pipeline.generation.vllm_backend import cpu_offline_env

        env = {**os.environ, **cpu_offline_env(cache)}
        cmd = [
            str(VLLM_PY),
            __file__,
            "--vllm-sweep",
            str(models_dir),
            "--images",
            str(n),
            "--max-new-tokens",
            str(max_new),
            "--batches",
            *map(str, batches),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        return f"failed: rc={proc.returncode}: {proc.stderr[-800:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=960, help="extra images of the large run")
    parser.add_argument("--small", type=int, default=32, help="images of the small run")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--sweep-images", type=int, default=32)
    parser.add_argument("--vllm", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--vllm-sweep", metavar="MODELS_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.vllm_sweep:  # child mode, inside .venv-vllm
        images = make_images(args.images)
        rates = sweep(
            Path(args.vllm_sweep) / "tiny-llava", "vllm", images, args.batches, args.max_new_tokens
        )
        print(json.dumps(rates))
        return 0
    with tempfile.TemporaryDirectory(prefix="vecap-bench-caption-") as tmp:
        return measure(args, Path(tmp))


def measure(args: argparse.Namespace, work: Path) -> int:
    """The parent run: models, images and pipeline outputs all live under ``work``."""
    import torch

    from llava_recap.tiny_models import build_tiny_models
    from pipeline.generation import load_generator

    # One intra-op thread by default: on a shared, oversubscribed CPU, OpenMP's spin-waiting
    # threads collapse (measured here: ~8 img/s with 2 threads vs ~60 with 1 at load 8).
    torch.set_num_threads(args.threads)
    models = build_tiny_models(work / "models")
    n_big = args.small + args.images
    images = make_images(n_big)
    jpgs = [jpeg(im) for im in images]
    # raw sees the same decoded pixels the pipeline's handler will see
    from llava_recap.handler import decode_image

    decoded = [decode_image(b) for b in jpgs]
    jpg_dir = work / "images"
    jpg_dir.mkdir()
    paths = []
    for i, data in enumerate(jpgs):
        paths.append(str(jpg_dir / f"{i:06d}.jpg"))
        Path(paths[-1]).write_bytes(data)
    generator = load_generator(
        gen_config(models.llava, "transformers", args.batch_size, args.max_new_tokens), True
    )

    # warm-up: Beam's and the model's first-run costs must not land in the small run
    pipeline_seconds(models.llava, paths[:8], args.batch_size, args.max_new_tokens)
    # Each repeat brackets the pipeline runs between two raw runs (their combined rate), so a
    # load swing on the shared machine hits both sides; the ratio is taken per repeat and the
    # median reported.
    raw_rates, pipe_rates, e2e_rates, ratios, stage_ratios = [], [], [], [], []
    gen_only_rates, gen_only_ratios = [], []
    extra = jpgs[args.small :]
    for rep in range(args.repeats):
        before = raw_rate(generator, extra, args.batch_size, decode=True)
        t_small = pipeline_seconds(
            models.llava, paths[: args.small], args.batch_size, args.max_new_tokens
        )
        t_big = pipeline_seconds(models.llava, paths, args.batch_size, args.max_new_tokens)
        after = raw_rate(generator, extra, args.batch_size, decode=True)
        # generate alone on pre-decoded pixels: the upper bound, decoding not charged
        gen_only = raw_rate(generator, decoded[args.small :], args.batch_size)
        # control: the same pipeline without the stage (source, status count, Beam start-up)
        c_small = pipeline_seconds(
            models.llava, paths[: args.small], args.batch_size, args.max_new_tokens, caption=False
        )
        c_big = pipeline_seconds(
            models.llava, paths, args.batch_size, args.max_new_tokens, caption=False
        )
        stage_seconds = max((t_big - t_small) - (c_big - c_small), 1e-9)
        raw_rates.append(2 / (1 / before + 1 / after))
        pipe_rates.append(args.images / max(t_big - t_small, 1e-9))
        e2e_rates.append(n_big / t_big)
        ratios.append(pipe_rates[-1] / raw_rates[-1])
        gen_only_rates.append(gen_only)
        gen_only_ratios.append(pipe_rates[-1] / gen_only)
        stage_ratios.append(args.images / stage_seconds / raw_rates[-1])
        print(
            f"repeat {rep}: raw (decode + generate) {before:.1f} / {after:.1f} img/s, "
            f"generate alone {gen_only:.1f} img/s, pipeline {pipe_rates[-1]:.1f} "
            f"img/s (small run {t_small:.2f}s, large run {t_big:.2f}s, end-to-end "
            f"{e2e_rates[-1]:.1f} img/s), ratio {ratios[-1]:.3f}; harness alone "
            f"{c_big - c_small:.2f}s for the extra images, stage-only ratio {stage_ratios[-1]:.3f}",
            flush=True,
        )
    raw, pipe = statistics.median(raw_rates), statistics.median(pipe_rates)
    ratio = statistics.median(ratios)
    print(f"pipeline / raw = {ratio:.3f} (median of {len(ratios)} repeats; target >= 0.85)")
    gen_only_ratio = statistics.median(gen_only_ratios)
    print(f"pipeline / generate alone (decoding not charged to raw) = {gen_only_ratio:.3f}")
    stage_ratio = statistics.median(stage_ratios)
    print(f"stage only (harness time subtracted) / raw = {stage_ratio:.3f}")

    sweep_images = decoded[: args.sweep_images]
    hf_sweep = sweep(models.llava, "transformers", sweep_images, args.batches, args.max_new_tokens)
    print(f"transformers sweep (images/s by batch size): {hf_sweep}")
    vl_sweep: dict | str = "skipped: --no-vllm"
    if args.vllm:
        vl_sweep = vllm_sweep(work / "models", args.sweep_images, args.batches, args.max_new_tokens)
    print(f"vllm sweep (images/s by batch size): {vl_sweep}")

    print(
        json.dumps(
            {
                "pipeline_images_per_s": round(pipe, 2),
                "raw_images_per_s": round(raw, 2),
                "pipeline_ratio": round(ratio, 3),
                "pipeline_end_to_end_images_per_s": round(statistics.median(e2e_rates), 2),
                "pipeline_ratio_per_repeat": [round(r, 3) for r in ratios],
                "stage_ratio": round(stage_ratio, 3),
                "generate_only_images_per_s": round(statistics.median(gen_only_rates), 2),
                "pipeline_ratio_vs_generate_only": round(gen_only_ratio, 3),
                "images": args.images,
                "batch_size": args.batch_size,
                "max_new_tokens": args.max_new_tokens,
                "sweep_transformers": hf_sweep,
                "sweep_vllm": vl_sweep,
                "torch_threads": args.threads,
                "model": "tiny-llava (random weights, CPU)",
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
