"""Conventions every `vecap` command shares (no heavy imports: `vecap --help` stays fast).

- The output directory is ``--output OUT`` on every command; commands that read an output also
  take it as the first positional argument (``vecap stats OUT``).
- Where a command writes somewhere else, that is ``--dest`` (``--out``, the report's old
  spelling, still works and says so).
- A bad invocation is one line on stderr and exit 2 (:class:`OneLineParser`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipeline.errors import UsageError


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors as one line naming the command and where help is, exit 2."""

    def error(self, message: str) -> Any:  # argparse's signature: never returns
        self.exit(2, f"{self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        # OUT given either way becomes args.output here, so every caller of the parser sees it
        ns, extra = super().parse_known_args(args, namespace)
        if getattr(ns, "resolve_output", False):
            try:
                ns.output = resolve_output(ns)
            except UsageError as e:  # main reports it as the command's one line, exit 2
                ns.output_error = str(e)
            ns.resolve_output = False
        return ns, extra


def add_output_argument(parser: argparse.ArgumentParser, what: str = "a vecap output") -> None:
    """``OUT`` positionally or as ``--output OUT`` (see the module doc)."""
    parser.add_argument(
        "output_positional", nargs="?", default=None, metavar="OUT",
        help=f"{what} (directory or fsspec URL); or --output OUT",
    )  # fmt: skip
    parser.add_argument("--output", default=None, metavar="OUT", help=argparse.SUPPRESS)
    parser.set_defaults(resolve_output=True)


def resolve_output(args: argparse.Namespace) -> str:
    positional, flag = getattr(args, "output_positional", None), getattr(args, "output", None)
    if positional and flag and positional != flag:
        raise UsageError(f"two outputs given ({positional!r} and --output {flag!r}); give one")
    out = flag or positional
    if not out:
        raise UsageError("give the output directory: OUT, or --output OUT")
    return out


class _DeprecatedAlias(argparse.Action):
    """An old flag spelling: works as the new one, with a note on stderr."""

    def __init__(self, *args: Any, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{parser.prog}: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_dest_argument(
    parser: argparse.ArgumentParser, help: str, *, dest: str = "dest", old: str | None = None
) -> None:
    """``--dest PATH``, and ``old`` (e.g. ``--out``) as its deprecated spelling."""
    parser.add_argument("--dest", dest=dest, default=None, metavar="PATH", help=help)
    if old:
        parser.add_argument(
            old, dest=dest, action=_DeprecatedAlias, new="--dest", help=argparse.SUPPRESS
        )


def add_dest_positional(parser: argparse.ArgumentParser, help: str) -> None:
    """``DEST`` after ``OUT``, or as ``--dest DEST`` (the exports)."""
    parser.add_argument("dest_positional", nargs="?", default=None, metavar="DEST", help=help)
    parser.add_argument("--dest", default=None, metavar="DEST", help="DEST, as an option")


def resolve_dest(args: argparse.Namespace) -> str:
    positional, flag = args.dest_positional, args.dest
    if positional and flag and positional != flag:
        raise UsageError(f"two destinations given ({positional!r} and --dest {flag!r}); give one")
    if not (positional or flag):
        raise UsageError(f"give the destination: vecap {args.command} OUT DEST (or --dest DEST)")
    return positional or flag


def versions() -> dict[str, str | None]:
    """vecap's and its engines' versions, from package metadata (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in ("vecap", "apache-beam", "torch", "transformers", "vllm"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


class VersionAction(argparse.Action):
    """``--version``: one unwrapped line (argparse's own action re-wraps the text)."""

    def __init__(
        self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None
    ):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version_text())
        parser.exit(0)


class BeamHelpAction(argparse.Action):
    """``--help-beam``: Beam's pipeline options, by options class, as Beam defines them
    (every argument vecap does not define is passed to Beam)."""

    def __init__(
        self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None
    ):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(beam_options_help())
        parser.exit(0)


def beam_options_help() -> str:
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    classes: list[type] = []

    def walk(cls: type) -> None:
        for sub in cls.__subclasses__():
            if sub not in classes and not sub.__name__.startswith("Test"):
                classes.append(sub)
                walk(sub)

    walk(PipelineOptions)
    out = ["Beam pipeline options (vecap run passes every argument it does not define to Beam):"]
    for cls in classes:
        p = _BeamArgumentParser(prog="", add_help=False, usage=argparse.SUPPRESS)
        cls._add_argparse_args(p)
        text = p.format_help().strip()
        if text:
            body = text.split("\n", 1)[1] if text.startswith("options:") else text
            out += ["", f"{cls.__name__}:", body.rstrip()]
    return "\n".join(out)


def version_text() -> str:
    v = versions()
    parts = [f"vecap {v.pop('vecap') or 'unknown'}"]
    parts += [f"{k} {val}" for k, val in v.items() if val is not None]
    missing = [k for k, val in v.items() if val is None]
    if missing:
        parts.append(f"(not installed: {', '.join(missing)})")
    return ", ".join(parts)


__all__ = [
    "OneLineParser",
    "add_dest_argument",
    "add_dest_positional",
    "add_output_argument",
    "resolve_dest",
    "resolve_output",
    "BeamHelpAction",
    "VersionAction",
    "beam_options_help",
    "version_text",
    "versions",
]
