"""``vecap train`` and ``vecap eval``: argparse -> frozen configs -> the clip_trainer library.

Multi-GPU / multi-node: ``accelerate launch -m pipeline.cli train ...`` (or ``torchrun``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    _register_train(subparsers)
    _register_eval(subparsers)


def _register_train(subparsers: Any) -> None:
    from clip_trainer.model import MODEL_CONFIGS

    p = subparsers.add_parser(
        "train",
        help="train CLIP on vecap shards with VeCLIP's mixed VeC/AltText sampling",
        description="Train a CLIPModel on finished vecap shards. Resumes from the latest checkpoint in --output by default.",
    )
    p.add_argument(
        "data",
        nargs="+",
        help="vecap output dirs, shard dirs, parquet files or globs (fsspec URLs)",
    )
    p.add_argument(
        "--output",
        "-o",
        required=True,
        help="run directory: checkpoints, metrics.jsonl, tensorboard/",
    )
    p.add_argument("--steps", type=int, required=True, help="optimizer steps for the whole run")
    g = p.add_argument_group("model")
    g.add_argument("--arch", default="ViT-B-16", choices=sorted(MODEL_CONFIGS))
    g.add_argument("--init-from", help="CLIPModel directory to start from (ours or VeCLIP's)")
    g.add_argument("--tokenizer", help="local tokenizer dir (CLIP BPE or T5), or 'tiny'")
    g.add_argument("--tokenizer-kind", default="auto", choices=("auto", "clip", "t5"))
    g.add_argument(
        "--context-length", type=int, help="text tokens (default: the architecture's, 77)"
    )
    g.add_argument("--image-size", type=int, help="input resolution (default: the architecture's)")
    g = p.add_argument_group("data")
    g.add_argument(
        "--vec-prob",
        type=float,
        default=0.5,
        help="VeCLIP's p: chance of the VeC over the AltText (1: VeC only, 0: AltText only)",
    )
    g.add_argument(
        "--vec-field",
        default="fused_caption",
        help="column holding the VeC (fused_caption or visual_caption)",
    )
    g.add_argument(
        "--alt-field", default="alt_text", help="column holding the AltText (img2dataset: caption)"
    )
    g.add_argument("--image-column", default="jpg")
    g.add_argument(
        "--status-column", default="status", help="rows count when this column is ok/success"
    )
    g.add_argument(
        "--status-filter",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep only rows whose status is ok/success (--no-status-filter: every row with an image)",
    )
    g.add_argument(
        "--skip-duplicates",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="outputs of `vecap run --dedup`: train on each image once, skipping rows that name "
        "a canonical row in duplicate_of (default off: every row, as VeCLIP sampled them)",
    )
    g.add_argument(
        "--require-finished",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="only shards whose stats file exists",
    )
    g.add_argument(
        "--shuffle-buffer", type=int, default=5_000, help="rows held per process x worker"
    )
    g.add_argument("--units-per-block", type=int, default=4)
    g.add_argument("--hflip-prob", type=float, default=0.5)
    g.add_argument("--workers", type=int, default=4, help="DataLoader workers per process")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=256, help="per process and micro-step")
    g.add_argument("--grad-accum", type=int, default=1)
    g.add_argument("--lr", type=float, default=5e-4)
    g.add_argument("--weight-decay", type=float, default=0.2)
    g.add_argument("--warmup", type=int, default=2000, help="warmup steps")
    g.add_argument("--grad-clip", type=float, help="max gradient norm")
    g.add_argument("--precision", default="auto", choices=("auto", "no", "fp16", "bf16"))
    g.add_argument(
        "--cpu",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="train on CPU even when CUDA is present",
    )
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("run")
    g.add_argument("--log-every", type=int, default=10)
    g.add_argument("--save-every", type=int, default=1000)
    g.add_argument("--keep-checkpoints", type=int, default=2)
    g.add_argument(
        "--resume",
        default="auto",
        help="'auto' (latest checkpoint in --output), a checkpoint dir, or 'none'",
    )
    g.add_argument(
        "--stop-after",
        type=int,
        help="stop after N steps in this invocation (wall-time limits); resume later",
    )
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=False)
    g.add_argument(
        "--eval-data", help="retrieval set (parquet or image folder) scored during training"
    )
    g.add_argument(
        "--eval-every", type=int, default=0, help="steps between evaluations (0: at the end only)"
    )
    g.add_argument("--eval-caption-field", default="fused_caption")
    p.set_defaults(func=run_train)


def _register_eval(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="zero-shot retrieval and classification of any HF CLIPModel directory",
        description="Image<->text retrieval R@1/5/10 and zero-shot top-1/top-5 for a CLIPModel directory.",
    )
    p.add_argument("model", help="CLIPModel directory (a checkpoint's model/ dir, or VeCLIP's)")
    p.add_argument("--tokenizer", help="tokenizer dir (default: the model dir's)")
    p.add_argument("--retrieval", help="parquet file/dir/glob, or a folder of images with captions")
    p.add_argument(
        "--caption-field", default="fused_caption", help="caption column of a parquet retrieval set"
    )
    p.add_argument("--image-column", default="jpg")
    p.add_argument("--max-items", type=int, help="evaluate the first N pairs only")
    p.add_argument("--zeroshot", help="ImageFolder root (one subfolder per class)")
    p.add_argument(
        "--classnames", help="file: 'folder<TAB>name' lines, or one name per class folder"
    )
    p.add_argument(
        "--templates",
        help="file with one '{}' prompt template per line (default: OpenAI's ensemble)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--output", help="also write the results JSON here")
    p.set_defaults(func=run_eval)


def train_config_from_args(args: argparse.Namespace) -> Any:
    from clip_trainer.data import DataConfig
    from clip_trainer.model import ModelConfig
    from clip_trainer.optim import OptimConfig
    from clip_trainer.train import TrainConfig

    return TrainConfig(
        data=DataConfig(
            paths=tuple(args.data),
            vec_prob=args.vec_prob,
            vec_field=args.vec_field,
            alt_field=args.alt_field,
            image_column=args.image_column,
            status_column=args.status_column if args.status_filter else None,
            skip_duplicates=args.skip_duplicates,
            require_finished=args.require_finished,
            shuffle_buffer=args.shuffle_buffer,
            units_per_block=args.units_per_block,
            hflip_prob=args.hflip_prob,
            seed=args.seed,
        ),
        model=ModelConfig(
            arch=args.arch,
            init_from=args.init_from,
            tokenizer=args.tokenizer,
            tokenizer_kind=args.tokenizer_kind,
            context_length=args.context_length,
            image_size=args.image_size,
        ),
        optim=OptimConfig(
            lr=args.lr,
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup,
            grad_clip_norm=args.grad_clip,
        ),
        output_dir=args.output,
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum_steps=args.grad_accum,
        num_workers=args.workers,
        mixed_precision=args.precision,
        log_every=args.log_every,
        save_every=args.save_every,
        keep_checkpoints=args.keep_checkpoints,
        resume=None if args.resume.lower() == "none" else args.resume,
        stop_after=args.stop_after,
        tensorboard=args.tensorboard,
        eval_data=args.eval_data,
        eval_every=args.eval_every,
        eval_caption_field=args.eval_caption_field,
        seed=args.seed,
        cpu=args.cpu,
    )


def run_train(args: argparse.Namespace) -> int:
    from clip_trainer.train import train

    try:
        config = train_config_from_args(args)
    except ValueError as exc:
        print(f"vecap train: {exc}", file=sys.stderr)
        return 2
    try:
        result = train(config)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as exc:
        print(f"vecap train: {exc}", file=sys.stderr)
        return 1
    if not result.main_process:
        return 0  # rank 0 reports for the whole job
    state = "finished" if result.finished else "stopped (resume with the same command)"
    print(
        f"{state} at step {result.step}; model: {result.model_dir}; metrics: {result.metrics_path}"
    )
    if result.last_metrics:
        print(json.dumps(result.last_metrics))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from clip_trainer.evaluate import DEFAULT_TEMPLATES, EvalConfig, evaluate

    try:
        templates = DEFAULT_TEMPLATES
        if args.templates:
            templates = tuple(
                line.strip()
                for line in Path(args.templates).read_text(encoding="utf-8").splitlines()
                if line.strip()
            )
        config = EvalConfig(
            model=args.model,
            tokenizer=args.tokenizer,
            retrieval=args.retrieval,
            caption_field=args.caption_field,
            image_column=args.image_column,
            zeroshot=args.zeroshot,
            classnames=args.classnames,
            templates=templates,
            batch_size=args.batch_size,
            device=args.device,
            max_items=args.max_items,
        )
        results = evaluate(config)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        print(f"vecap eval: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


__all__ = ["register", "run_eval", "run_train", "train_config_from_args"]
