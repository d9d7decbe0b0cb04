"""``vecap make-tiny-models DIR`` and ``vecap caption``: the captioner's subcommands."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    tiny = subparsers.add_parser(
        "make-tiny-models",
        help="build the tiny offline LLaVA and Llama test models (no network)",
        description="Build DIR/tiny-llava and DIR/tiny-llama: random weights, fixed seed, "
        "loadable with from_pretrained and by vLLM.",
    )
    tiny.add_argument("dir", help="output directory")
    tiny.add_argument(
        "--overwrite",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="rebuild even when the models already exist",
    )
    tiny.set_defaults(func=_make_tiny_models)

    cap = subparsers.add_parser(
        "caption",
        help="caption a few image files (no Beam): try a model or prompt before a job",
        description="Print one JSON line per image: caption, raw output, or error. "
        "Exit status 1 when any image failed.",
    )
    cap.add_argument("images", nargs="+", help="image files or fsspec URLs")
    cap.add_argument("--model", required=True, help="hub id or local directory")
    cap.add_argument("--backend", choices=("transformers", "vllm"), default="transformers")
    cap.add_argument("--device", default="auto")
    cap.add_argument("--dtype", default="auto")
    cap.add_argument("--prompt-id", default=None, help="versioned prompt id (default: VeCLIP's)")
    cap.add_argument("--prompt-text", default=None, help="custom words (needs a new --prompt-id)")
    cap.add_argument("--max-new-tokens", type=int, default=77)
    cap.add_argument("--batch-size", type=int, default=8)
    cap.add_argument(
        "--image-aspect",
        choices=("auto", "pad", "crop", "native"),
        default="auto",
        help="pad to a mean-colour square (auto for LLaVA-1.5), centre-crop, or as stored",
    )
    cap.set_defaults(func=_caption)


def _caption(args: argparse.Namespace) -> int:
    import json
    import sys

    from llava_recap.config import CaptionConfig
    from llava_recap.files import caption_files
    from llava_recap.prompts import DEFAULT_PROMPT_ID
    from pipeline.generation import GenerationConfig

    try:
        config = CaptionConfig(
            generation=GenerationConfig(
                model=args.model,
                backend=args.backend,
                device=args.device,
                dtype=args.dtype,
                max_new_tokens=args.max_new_tokens,
                batch_size=args.batch_size,
            ),
            prompt_id=args.prompt_id or DEFAULT_PROMPT_ID,
            prompt_text=args.prompt_text,
            image_aspect=args.image_aspect,
        )
    except (ValueError, TypeError) as exc:
        print(f"vecap caption: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for row in caption_files(config, args.images):
        failed += "error" in row
        print(json.dumps(row, ensure_ascii=False), flush=True)
    return 1 if failed else 0


def _make_tiny_models(args: argparse.Namespace) -> int:
    from llava_recap.tiny_models import build_tiny_models

    paths = build_tiny_models(args.dir, overwrite=args.overwrite)
    print(f"tiny LLaVA: {paths.llava}")
    print(f"tiny Llama: {paths.llm}")
    return 0
