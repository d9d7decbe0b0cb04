"""Fusion throughput on the tiny Llama: Beam pipeline vs raw batched generate; LLM skip share.

Measured side by side in one run (the machine is noisy), raw and pipeline interleaved in each of
``--repeats`` rounds, medians over rounds:

- raw: ``Generator.generate`` on the already-rendered fusion prompts (default prompt
  ``veclip-fuse-v1``, the model's chat template) in batches of ``--batch-size``;
- pipeline: ``FusionStage`` on records on the FnApiRunner (routing, prompt rendering, Beam
  batching, cleaning, fallback, flatten included). Pipeline start-up and model load are fixed
  costs a real job pays once per worker, so the pipeline's rate is taken from the *difference*
  between a large and a small run: extra pairs / extra seconds. The end-to-end rate of the large
  run is printed too. ``pipeline_ratio`` = pipeline rate / raw rate of the same round.
  Because the machine's speed drifts between runs, the model calls inside the pipeline are timed
  as well: ``generate_share`` = seconds inside ``generate`` / pipeline seconds (large minus small
  run), i.e. the pipeline's own overhead measured on the very same batches.

The skip share: how many rows of a web-like AltText mix never reach the LLM (skip rules), run
through ``FusionStage`` with a fake model that counts nothing but rows. The mix is an assumed
composition, modelled on raw crawled ``<img alt>`` attributes (not on a filtered set such as
LAION, which already drops short AltText): 30% empty or whitespace, 8% camera/file names,
3% URLs, 9% boilerplate ("image", "click here", "untitled", ...), 5% generic AltText that only
repeats what the visual caption says ("red car"), 45% real descriptions (some of them tricky:
"Photo of the Golden Gate Bridge", "P-38 Lightning").

Everything is local: tiny models built offline, no network. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VISUAL_CAPTIONS = (
    "A stone bridge over a river with people walking across it.",
    "A brown dog running on a sandy beach near the water.",
    "A red car parked on a busy city street.",
    "A bowl of fruit on a wooden table in a kitchen.",
    "A small boat floating on a quiet lake at sunset.",
)
DESCRIPTIONS = (
    "Charles Bridge in Prague at dawn",
    "Max the golden retriever at Brighton beach",
    "1967 Ford Mustang fastback in candy apple red",
    "Organic fruit bowl by Studio Lisa, oak table",
    "Sunset over Lake Bled, Slovenia",
    "Photo of the Golden Gate Bridge",
    "P-38 Lightning at the Chino airshow",
    "Nike Air Max 90 in white and red",
    "Rustic bathroom style.",
    "Eiffel Tower at night from the Trocadero",
)
BOILERPLATE = (
    "image",
    "Photo",
    "click here",
    "untitled",
    "thumbnail",
    "Image 3",
    "logo",
    "read more",
)


# Generic AltText that only repeats what the image shows, one per visual caption above.
GENERIC = ("stone bridge", "Dog on the beach", "red car", "bowl of fruit", "Boat on a lake")


def alt_text_mix(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(kind, alt_text, visual_caption) rows in the stated composition, shuffled."""
    rng = random.Random(seed)
    shares = (
        ("empty", 0.30),
        ("file_name", 0.08),
        ("url", 0.03),
        ("boilerplate", 0.09),
        ("generic", 0.05),
    )
    rows: list[tuple[str, str, str]] = []
    for kind, share in shares:
        for i in range(round(n * share)):
            vc = VISUAL_CAPTIONS[i % len(VISUAL_CAPTIONS)]
            if kind == "empty":
                alt = rng.choice(["", " ", "\n"])
            elif kind == "file_name":
                alt = rng.choice([f"IMG_{i:04d}.jpg", f"DSC{i:05d}.JPG", f"photo-{i}.png"])
            elif kind == "url":
                alt = f"https://example.com/images/{i}.jpg"
            elif kind == "boilerplate":
                alt = rng.choice(BOILERPLATE)
            else:
                alt = GENERIC[i % len(GENERIC)]
            rows.append((kind, alt, vc))
    while len(rows) < n:
        i = len(rows)
        vc = VISUAL_CAPTIONS[i % len(VISUAL_CAPTIONS)]
        rows.append(("description", DESCRIPTIONS[i % len(DESCRIPTIONS)], vc))
    rng.shuffle(rows)
    return rows


def make_records(alts: list[str], visual_captions: list[str] | None = None):
    from schemas import Record, make_uid

    return [
        Record(
            uid=make_uid(0, i),
            shard_id=0,
            row_index=i,
            alt_text=alt,
            visual_caption=(
                visual_captions[i] if visual_captions else VISUAL_CAPTIONS[i % len(VISUAL_CAPTIONS)]
            ),
        )
        for i, alt in enumerate(alts)
    ]


def run_stage(stage, records, out_file: Path) -> tuple[float, list]:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.testing.util import assert_that

    def dump(elements) -> None:
        out_file.write_bytes(pickle.dumps(list(elements)))

    start = time.perf_counter()
    with beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions()) as p:
        out = p | beam.Create(records, reshuffle=False) | stage
        assert_that(out, dump)
    return time.perf_counter() - start, pickle.loads(out_file.read_bytes())


class TimedGenerator:
    """Wraps the real generator; appends "rows seconds" of each call to a log file.

    A file, not a list: Beam pickles the loader, and the pipeline's copy must report back.
    """

    multimodal = False

    def __init__(self, inner, log_path: str) -> None:
        self.inner = inner
        self.config = inner.config
        self.log_path = log_path

    @property
    def processor(self):
        return self.inner.processor

    def generate(self, prompts, images=None):
        start = time.perf_counter()
        out = self.inner.generate(prompts)
        with open(self.log_path, "a") as f:
            f.write(f"{len(prompts)} {time.perf_counter() - start}\n")
        return out

    def resolve_chat_template(self, choice):
        return self.inner.resolve_chat_template(choice)

    def chat(self, user_texts, *, system=None, chat_template=None):
        kwargs = {} if chat_template is None else {"chat_template": chat_template}
        return self.generate(self.inner.render_prompts(user_texts, system=system, **kwargs))


class TimedLoader:
    def __init__(self, log_path: str) -> None:
        self.log_path = log_path

    def __call__(self, config):
        from pipeline.generation import load_generator

        return TimedGenerator(load_generator(config, multimodal=False), self.log_path)


def generate_seconds(log_path: Path) -> float:
    """Seconds spent in generate since the last call (the log is consumed)."""
    if not log_path.exists():
        return 0.0
    total = sum(float(line.split()[1]) for line in log_path.read_text().splitlines())
    log_path.unlink()
    return total


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


class CountingGenerator:
    """Stands in for the LLM in the skip-share run: answers every prompt with a fixed caption."""

    multimodal = False
    processor = None

    def __init__(self, config) -> None:
        self.config = config

    def generate(self, prompts, images=None):
        return ["A caption."] * len(prompts)

    def chat(self, user_texts, **_):
        return self.generate(user_texts)


def load_counting(config):
    return CountingGenerator(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256, help="pairs in the large pipeline run")
    parser.add_argument("--small", type=int, default=32, help="pairs in the small pipeline run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--mix-rows", type=int, default=2000)
    args = parser.parse_args()

    from llava_recap.tiny_models import build_tiny_models
    from llm_fusion.config import FusionConfig
    from llm_fusion.stage import FusionStage
    from pipeline.generation import GenerationConfig, load_generator

    tmp = Path(tempfile.mkdtemp(prefix="vecap-bench-fusion-"))
    models = build_tiny_models(tmp / "models")
    gen = GenerationConfig(
        model=str(models.llm),
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        min_batch_size=args.batch_size,
    )
    config = FusionConfig(generation=gen)
    alts = [DESCRIPTIONS[i % len(DESCRIPTIONS)] + f" #{i}" for i in range(args.rows)]
    records = make_records(alts)

    # raw: the same prompts the stage renders, generated in batches
    stage = FusionStage(config)
    generator = load_generator(gen, multimodal=False)
    prompts = generator.render_prompts([stage.rules.user_text(r) for r in records])
    generator.generate(prompts[: args.batch_size])  # warm-up

    log = tmp / "generate.log"
    loader = TimedLoader(str(log))
    raw_rates, pipe_rates, ratios, shares, end_to_end_rates = [], [], [], [], []
    sources: dict[str, int] = {}
    for _ in range(args.repeats):
        start = time.perf_counter()
        for i in range(0, len(prompts), args.batch_size):
            generator.generate(prompts[i : i + args.batch_size])
        raw_rate = len(prompts) / (time.perf_counter() - start)
        small = FusionStage(config, generator_loader=loader)
        t_small, _ = run_stage(small, records[: args.small], tmp / "small.pkl")
        g_small = generate_seconds(log)
        large = FusionStage(config, generator_loader=loader)
        t_large, out = run_stage(large, records, tmp / "large.pkl")
        g_large = generate_seconds(log)
        assert len(out) == len(records), "rows in != rows out"
        extra_s = t_large - t_small
        pipe_rate = (args.rows - args.small) / extra_s if extra_s > 0 else float("nan")
        raw_rates.append(raw_rate)
        pipe_rates.append(pipe_rate)
        ratios.append(pipe_rate / raw_rate)
        shares.append((g_large - g_small) / extra_s if extra_s > 0 else float("nan"))
        end_to_end_rates.append(args.rows / t_large)
        sources = {}
        for r in out:
            key = r.fusion_source or r.status
            sources[key] = sources.get(key, 0) + 1

    raw_rate, pipe_rate = median(raw_rates), median(pipe_rates)
    ratio, share, end_to_end = median(ratios), median(shares), median(end_to_end_rates)

    # the stage's own per-row CPU work (route, user text, chat template, clean, reject), timed
    # outside Beam: an upper bound on what the stage adds to each generate call's rows
    rules = stage.rules
    raw_outputs = [f"Sure, here is the caption: {r.alt_text} by the water." for r in records]
    start = time.perf_counter()
    for _ in range(10):
        for record, raw in zip(records, raw_outputs, strict=True):
            rules.plan(record)
            generator.render_prompts([rules.user_text(record)])
            rules.apply_output(record, raw, "m")
    cpu_us = (time.perf_counter() - start) / (10 * len(records)) * 1e6
    generate_us = 1e6 / raw_rate

    # skip share on the AltText mix (a counting model: the LLM's speed is not measured here)
    mix = alt_text_mix(args.mix_rows)
    mix_records = make_records([alt for _, alt, _ in mix], [vc for _, _, vc in mix])
    t_mix, mix_out = run_stage(
        FusionStage(config, generator_loader=load_counting), mix_records, tmp / "mix.pkl"
    )
    skipped = sum(1 for r in mix_out if (r.fusion_reason or "").startswith("alt_"))
    by_kind: dict[str, list[int]] = {}
    for (kind, _, _), r in zip(mix, sorted(mix_out, key=lambda r: r.uid), strict=True):
        hit = by_kind.setdefault(kind, [0, 0])
        hit[0] += (r.fusion_reason or "").startswith("alt_")
        hit[1] += 1
    skip_share = skipped / len(mix_out)

    def rounds(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    print(
        f"tiny Llama, prompt {stage.prompt_id}, batch {args.batch_size}, "
        f"{args.max_new_tokens} new tokens, median of {args.repeats} rounds"
    )
    print(f"raw batched generate : {raw_rate:8.2f} pairs/s  (rounds: {rounds(raw_rates)})")
    print(
        f"fusion pipeline      : {pipe_rate:8.2f} pairs/s  ({args.rows}-{args.small} extra pairs / "
        f"extra s; rounds: {rounds(pipe_rates)})"
    )
    print(f"pipeline end-to-end  : {end_to_end:8.2f} pairs/s  (start-up and model load included)")
    print(f"pipeline / raw       : {ratio:8.3f}  (target >= 0.85; rounds: {rounds(ratios)})")
    print(
        f"generate share       : {share:8.3f}  of the pipeline's extra seconds were spent in "
        f"generate (rounds: {rounds(shares)})"
    )
    print(
        f"stage CPU work       : {cpu_us:8.0f} us/row  (vs {generate_us:.0f} us/row in generate: "
        f"{cpu_us / generate_us:.2%})"
    )
    print(f"caption sources (large run, random-weight model): {sources}")
    print(
        f"AltText mix of {len(mix_out)} rows: {skip_share:.1%} skip the LLM "
        f"(pipeline with a counting model: {len(mix_out) / t_mix:.0f} rows/s end-to-end)"
    )
    for kind, (hit, total) in sorted(by_kind.items()):
        print(f"  {kind:12s} {hit:5d}/{total:<5d} skipped")
    print(
        json.dumps(
            {
                "pipeline_pairs_per_s": round(pipe_rate, 3),
                "raw_pairs_per_s": round(raw_rate, 3),
                "pipeline_ratio": round(ratio, 3),
                "pipeline_end_to_end_pairs_per_s": round(end_to_end, 3),
                "generate_share": round(share, 3),
                "stage_cpu_us_per_row": round(cpu_us, 1),
                "llm_skip_share": round(skip_share, 4),
                "mix_rows": len(mix_out),
                "batch_size": args.batch_size,
                "max_new_tokens": args.max_new_tokens,
            }
        )
    )


if __name__ == "__main__":
    main()
