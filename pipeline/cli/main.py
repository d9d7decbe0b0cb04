"""The `vecap` command line: one subcommand per job, each registered by the module that owns it.

Library code never sees the argparse namespace: each command's ``func`` builds its frozen
config dataclasses from the arguments and calls the library.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that own subcommands. Each exposes ``register(subparsers)`` and keeps heavy imports
# (torch, transformers, beam) inside the command functions so `vecap --help` stays fast.
COMMAND_MODULES: tuple[str, ...] = (
    "pipeline.cli.run",  # vecap run, vecap demo, vecap serve-sample
    "pipeline.cli.export",  # vecap export-json, validate-json, stats, gc
    "pipeline.cli.export_hf",  # vecap export-hf
    "pipeline.cli.export_wds",  # vecap export-wds
    "pipeline.cli.estimate",  # vecap estimate
    "pipeline.cli.status",  # vecap status
    "pipeline.cli.report",  # vecap report
    "pipeline.cli.inspect_input",  # vecap inspect-input
    "pipeline.cli.engines",  # vecap engines
    "llava_recap.cli",  # vecap make-tiny-models, vecap caption
    "llm_fusion.cli",  # vecap fuse-preview
    "clip_trainer.cli",  # vecap train, vecap eval
)


_VERBOSE_HELP = "show library warnings vecap hides (-vv: also INFO messages)"


def build_parser(modules: Sequence[str] = COMMAND_MODULES) -> argparse.ArgumentParser:
    from pipeline.cli.common import OneLineParser, VersionAction

    parser = OneLineParser(
        prog="vecap",
        description="Recaption image/alt-text data with LLaVA visual captions fused into VeCs.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help=_VERBOSE_HELP)
    parser.add_argument(
        "--version",
        action=VersionAction,
        help="vecap's version and those of Beam, torch, transformers and vLLM where installed",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in modules:
        importlib.import_module(name).register(subparsers)
    # `vecap run ... -v` as well as `vecap -v run ...`; SUPPRESS keeps the subcommand from
    # resetting a count given before it
    for sub in subparsers.choices.values():
        sub.add_argument(
            "-v", "--verbose", action="count", default=argparse.SUPPRESS, help=_VERBOSE_HELP
        )
    return parser


def _verbosity_hint(argv: Sequence[str]) -> int:
    """-v flags before any "--", counted before argparse has run."""
    count = 0
    for arg in argv:
        if arg == "--":
            break
        if arg == "--verbose":
            count += 1
        elif arg.startswith("-v") and set(arg[1:]) == {"v"}:
            count += len(arg) - 1
    return count


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.cli.logs import configure_logging, logging_state, restore_logging

    saved = logging_state()
    # quiet from the start (a command module may import a library that logs at import time);
    # set again from the parsed -v count
    configure_logging(_verbosity_hint(sys.argv[1:] if argv is None else argv))
    try:
        return _main(argv)
    finally:
        if argv is not None:  # called with arguments from code that goes on (tests): no trace
            restore_logging(saved)


def _main(argv: Sequence[str] | None) -> int:
    from pipeline.cli.logs import configure_logging
    from pipeline.errors import UsageError

    parser = build_parser()
    # Commands that run a Beam pipeline (set_defaults(accepts_beam_args=True)) receive the
    # arguments they do not define as Beam pipeline options; every other command refuses them.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "accepts_beam_args", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra_args = extra
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed, for failure logs
    configure_logging(args.verbose)
    try:
        if getattr(args, "output_error", None):
            raise UsageError(args.output_error)
        code = args.func(args)
    except UsageError as e:  # found before any work started: one line, what is wrong and what to do
        print(f"vecap {args.command}: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
