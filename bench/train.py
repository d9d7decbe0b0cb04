"""CLIP trainer benchmark, all measured side by side in one run on this machine (CPU):

1. Data loader vs model step, samples/s: the training loader (parquet -> JPEG decode -> random
   resized crop -> normalise -> tokenize) in one process at 224 px, against a ViT-B/16 (VeCLIP's
   model) forward+backward+AdamW step at 224 px; and the same pair for the tiny model at 32 px.
   The loader must out-run the step, or GPUs wait: the ratio says how many loader workers one
   model replica needs.
2. VeCLIP's effect in miniature: a coloured-shapes set whose AltTexts are wrong 70% of the time
   (another colour/shape, or web junk like "IMG_0042.jpg") while the VeCs are right; the tiny
   CLIP trained for the same steps with p = 0, 0.5 and 1 (chance of the VeC), then retrieval
   R@1 on held-out images with true captions.

Ends with one JSON line. Local files only; no network. Env VECAP_BENCH_TRAIN_STEPS overrides
the miniature's steps (default 150).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clip_trainer.data import DataConfig, build_train_loader  # noqa: E402
from clip_trainer.evaluate import EvalConfig, evaluate  # noqa: E402
from clip_trainer.loss import clip_loss  # noqa: E402
from clip_trainer.model import ModelConfig, build_model  # noqa: E402
from clip_trainer.optim import OptimConfig, build_optimizer  # noqa: E402
from clip_trainer.synthetic import write_shapes_dataset, write_shapes_eval_set  # noqa: E402
from clip_trainer.tokenizer import build_tiny_tokenizer, load_tokenizer  # noqa: E402
from clip_trainer.train import TrainConfig, train  # noqa: E402

STEPS = int(os.environ.get("VECAP_BENCH_TRAIN_STEPS", "150"))
ALT_WRONG = 0.7


def loader_rate(data: Path, tokenizer, image_size: int, samples: int, workers: int = 0) -> float:
    config = DataConfig(paths=(str(data),), shuffle_buffer=256)
    loader, _ = build_train_loader(
        config,
        tokenizer,
        image_size=image_size,
        context_length=77,
        batch_size=32,
        num_workers=workers,
    )
    it = iter(loader)
    next(it)  # start-up (worker fork, first buffer fill) is not throughput
    start = time.perf_counter()
    n = 0
    while n < samples:
        n += next(it)["pixel_values"].shape[0]
    return n / (time.perf_counter() - start)


def step_rate(arch: str, tokenizer, batch: int, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch), tokenizer).train()
    optimizer = build_optimizer(model, OptimConfig())
    size = model.config.vision_config.image_size
    pixels = torch.randn(batch, 3, size, size)
    tokens = tokenizer(
        ["a photo of a red circle on a grey background"] * batch, return_tensors="pt"
    )

    def one_step() -> None:
        out = model(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            pixel_values=pixels,
        )
        loss = clip_loss(out.image_embeds, out.text_embeds, model.logit_scale.exp())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    one_step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    return steps * batch / (time.perf_counter() - start)


def miniature(root: Path, data: Path, eval_set: Path, p: float) -> dict:
    config = TrainConfig(
        data=DataConfig(paths=(str(data),), vec_prob=p, shuffle_buffer=256, hflip_prob=0.0),
        model=ModelConfig(arch="tiny"),
        optim=OptimConfig(lr=2e-3, warmup_steps=15, weight_decay=0.1),
        output_dir=str(root / f"run-p{p}"),
        steps=STEPS,
        batch_size=64,
        num_workers=0,
        log_every=STEPS,
        save_every=10 * STEPS,
        seed=0,
    )
    start = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - start
    scores = evaluate(EvalConfig(model=str(result.model_dir), retrieval=str(eval_set)))["retrieval"]
    r1 = (scores["image_to_text_R@1"] + scores["text_to_image_R@1"]) / 2
    return {
        "r1": r1,
        "r5": (scores["image_to_text_R@5"] + scores["text_to_image_R@5"]) / 2,
        "seconds": seconds,
        "samples_per_s": result.last_metrics["samples_per_s"],
        "data_wait_frac": result.last_metrics["data_wait_frac"],
        "vec_frac": result.last_metrics["vec_frac"],
    }


def main() -> None:
    # One intra-op thread: on a shared, busy machine OpenMP threads spinning against other
    # processes made steps many times slower; one thread gives repeatable figures.
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tokenizer = load_tokenizer(build_tiny_tokenizer(root / "tok"))

        # 1. loader vs step
        photos = root / "photos"
        write_shapes_dataset(photos, 512, rows_per_shard=128, image_size=256, seed=0)
        small = root / "small"
        write_shapes_dataset(small, 512, rows_per_shard=128, image_size=32, seed=0)
        loader_224 = loader_rate(photos, tokenizer, 224, 768)
        loader_32 = loader_rate(small, tokenizer, 32, 2048)
        step_b16 = step_rate("ViT-B-16", tokenizer, batch=4, steps=2)
        step_tiny = step_rate("tiny", tokenizer, batch=64, steps=20)
        print("== data loader vs model step (1 process, 1 torch thread, CPU)")
        print(f"  loader 256px JPEG -> 224 crop : {loader_224:8.1f} samples/s")
        print(
            f"  ViT-B/16 train step @224      : {step_b16:8.1f} samples/s   loader/step = {loader_224 / step_b16:.1f}x"
        )
        print(f"  loader 32px                   : {loader_32:8.1f} samples/s")
        print(
            f"  tiny CLIP train step @32      : {step_tiny:8.1f} samples/s   loader/step = {loader_32 / step_tiny:.1f}x"
        )
        print("  (a GPU step is far faster than these CPU steps: give each GPU about")
        print("   gpu_samples_per_s / loader_samples_per_s DataLoader workers)")

        # 2. VeCLIP in miniature
        noisy = root / "noisy"
        write_shapes_dataset(
            noisy, 1024, rows_per_shard=128, image_size=32, seed=0, alt_wrong_prob=ALT_WRONG
        )
        eval_set = write_shapes_eval_set(root / "eval.parquet", image_size=32)
        runs = {p: miniature(root, noisy, eval_set, p) for p in (0.0, 0.5, 1.0)}
        print(
            f"== VeCLIP in miniature: AltText wrong {ALT_WRONG:.0%}, VeC right; {STEPS} steps x 64, tiny CLIP"
        )
        print("  p (VeC share)   R@1     R@5    train s   data wait")
        for p, r in runs.items():
            print(
                f"  {p:>4}           {r['r1']:.3f}   {r['r5']:.3f}   {r['seconds']:6.1f}    {r['data_wait_frac']:.0%}"
            )
        print(f"  chance R@1 = {1 / 24:.3f} (24 distinct captions)")

    print(
        json.dumps(
            {
                "loader_samples_per_s": round(loader_224, 1),
                "step_samples_per_s": round(step_b16, 2),
                "loader_over_step": round(loader_224 / step_b16, 1),
                "loader_32px_samples_per_s": round(loader_32, 1),
                "tiny_step_samples_per_s": round(step_tiny, 1),
                "r1_p0": round(runs[0.0]["r1"], 4),
                "r1_p05": round(runs[0.5]["r1"], 4),
                "r1_p1": round(runs[1.0]["r1"], 4),
                "r1_chance": round(1 / 24, 4),
                "steps": STEPS,
                "alt_wrong_prob": ALT_WRONG,
            }
        )
    )


if __name__ == "__main__":
    main()
