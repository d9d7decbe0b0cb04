"""`vecap report OUT`: write the HTML inspection report of a vecap output."""

from __future__ import annotations

import argparse
import sys

from pipeline.cli.common import add_dest_argument, add_output_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="write a self-contained HTML report (sample gallery, failures, figures, manifest)",
        description="Write one self-contained HTML page for a vecap output: a random sample of "
        "images beside their AltText, visual caption and fused caption; failures by status; "
        "figures; the run's manifest. Reads only finished shards, so it works during a run.",
    )
    add_output_argument(p)
    add_dest_argument(
        p, "where to write the page (default: OUT/report.html)", dest="report_path", old="--out"
    )
    p.add_argument("--sample", type=int, default=48, help="rows in the random gallery (default 48)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random sample (default 0)")
    p.add_argument(
        "--failure-examples",
        type=int,
        default=5,
        help="example rows shown per failure status (default 5)",
    )
    p.add_argument("--thumbnail-px", type=int, default=192, help="thumbnail size (default 192)")
    p.add_argument("--workers", type=int, default=4, help="shards read at once (default 4)")
    p.add_argument("--title", default="vecap report", help="page title")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from pipeline.report import ReportConfig, build_report

    try:
        config = ReportConfig(
            output_dir=args.output,
            report_path=args.report_path,
            sample_size=args.sample,
            seed=args.seed,
            failure_examples=args.failure_examples,
            thumbnail_px=args.thumbnail_px,
            workers=args.workers,
            title=args.title,
        )
        result = build_report(config)
    except (ValueError, FileNotFoundError) as exc:
        print(f"vecap report: {exc}", file=sys.stderr)
        return 2
    for problem in result.problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(
        f"report: {result.path} ({result.finished_shards} finished shards, {result.rows:,} rows, "
        f"{result.sampled} sampled, {result.seconds:.1f} s)"
    )
    return 0
