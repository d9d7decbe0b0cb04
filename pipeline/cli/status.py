"""`vecap status OUT [--watch [SECONDS]] [--json]`: where a job stands, on any runner, read from
its output alone (see :mod:`pipeline.job_status`)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from pipeline.cli.common import add_output_argument, resolve_output
from pipeline.errors import UsageError

DEFAULT_WATCH_S = 10.0
_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "status",
        help="shards committed of planned, rows by status, rows/s and ETA, launcher alive",
        description=(
            "One screen on a job, from its output alone, so it works for a job on any runner "
            "(local, Dataflow, Flink) and from any machine: shards committed of planned, rows by "
            "status, fusion sources, rows/s over recent commits and an ETA, the stages' shares "
            "of time, whether the launcher is alive (its heartbeat in manifest.json), and "
            "uncommitted attempt files. One listing of OUT/shards per look; stats files already "
            "read are kept in a local cache (~/.cache/vecap/status, or $VECAP_STATUS_CACHE; "
            "'off' for none), so a look reads only those committed since."
        ),
    )
    add_output_argument(p)
    p.add_argument(
        "--watch",
        nargs="?",
        const=str(DEFAULT_WATCH_S),
        default=None,
        metavar="SECONDS",
        help=f"redraw every SECONDS (default {DEFAULT_WATCH_S:.0f}) until the job's last run "
        "has finished, or Ctrl-C",
    )
    p.add_argument(
        "--json",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="print one JSON object of the same figures (with --watch: one per line per look)",
    )
    p.add_argument(
        "--rate-window",
        type=int,
        default=None,
        metavar="N",
        help="measure rows/s over the last N commits of the last run (default 50)",
    )
    # OUT is resolved here, not by main: `vecap status --watch OUT` hands OUT to --watch first
    p.set_defaults(func=run_status, resolve_output=False)


def _watch_interval(args: argparse.Namespace) -> float | None:
    """--watch's SECONDS; ``vecap status --watch OUT`` reads OUT as the output, not SECONDS."""
    if args.watch is None:
        return None
    try:
        seconds = float(args.watch)
    except ValueError:
        if args.output_positional is None and args.output is None:
            args.output_positional = args.watch
            return DEFAULT_WATCH_S
        raise UsageError(f"--watch {args.watch!r}: give SECONDS as a number") from None
    if not seconds > 0:
        raise UsageError(f"--watch {args.watch}: SECONDS must be more than 0")
    return seconds


def run_status(args: argparse.Namespace) -> int:
    from pipeline.job_status import RATE_WINDOW, format_status, job_status

    interval = _watch_interval(args)
    output = resolve_output(args)
    window = RATE_WINDOW if args.rate_window is None else args.rate_window
    if window < 1:
        raise UsageError(f"--rate-window {window}: give at least 1")
    redraw = interval is not None and not args.json and sys.stdout.isatty()
    while True:
        status = job_status(output, window=window)
        if args.json:
            print(json.dumps(status.to_dict(), sort_keys=True), flush=True)
        else:
            print((_CLEAR if redraw else "") + format_status(status), flush=True)
        if interval is None or status.finished:
            return 0
        if status.launcher.state == "dead":  # its process is gone from this host: no more frames
            print("vecap status: the launcher died unfinished; stopped watching", file=sys.stderr)
            return 0
        if not redraw and not args.json:
            print(flush=True)  # frames apart when stdout is a file or a pipe
        time.sleep(interval)
