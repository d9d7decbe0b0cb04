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


def _make_tiny_models(args: argparse.Namespace) -> int:
    from llava_recap.tiny_models import build_tiny_models

    paths = build_tiny_models(args.dir, overwrite=args.overwrite)
    print(f"tiny LLaVA: {paths.llava}")
    print(f"tiny Llama: {paths.llm}")
    return 0
