"""`vecap export-json`, `vecap validate-json`, `vecap stats`, `vecap gc`: working with a finished
output."""

from __future__ import annotations

import argparse
import sys

from pipeline.cli.common import add_output_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export-json",
        help="write the VeCap release JSON splits (URL -> caption) of an output",
        description=(
            "Write NAME-00-of-NN.json ... files, each one JSON object mapping image URL to "
            "caption, from the finished shards of OUT. Rows: status ok with a non-blank caption; "
            "split = a stable 64-bit hash of the URL modulo NN; a duplicate URL is kept once (first in uid order)."
        ),
    )
    add_output_argument(p)
    p.add_argument("--splits", type=int, default=10, help="number of files (default 10)")
    p.add_argument("--name", default="wit_300m", help="file name stem (default wit_300m)")
    p.add_argument(
        "--caption",
        choices=("fused", "visual", "alt"),
        default="fused",
        help="which caption: fused (VeC, default), visual (VC) or alt (AltText)",
    )
    p.add_argument("--dest", default=None, help="directory for the files (default OUT/release)")
    p.add_argument(
        "--include-flagged",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also export rows the ethics check flagged but did not exclude (default no)",
    )
    p.add_argument(
        "--bucket-rows",
        type=int,
        default=500_000,
        help="URLs deduplicated in memory at once; bounds memory (default 500000)",
    )
    p.set_defaults(func=_export_json)

    v = subparsers.add_parser(
        "validate-json",
        help="check release JSON splits, streaming",
        description="Each file one JSON object of URL -> non-empty caption, every URL in the "
        "split its hash assigns (so in no other), no duplicates, counts as the export recorded.",
    )
    v.add_argument("paths", nargs="+", help="split files, a directory holding them, or a glob")
    v.add_argument("--max-errors", type=int, default=20, help="errors printed (default 20)")
    v.set_defaults(func=_validate_json)

    s = subparsers.add_parser(
        "stats",
        help="totals per status, rows/s per stage, caption lengths, fusion_source shares",
    )
    add_output_argument(s)
    s.add_argument(
        "--json", action=argparse.BooleanOptionalAction, default=False, help="print JSON"
    )
    s.add_argument(
        "--caption-lengths",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="read the caption columns for length percentiles (default yes)",
    )
    s.set_defaults(func=_stats)

    g = subparsers.add_parser(
        "gc",
        help="remove uncommitted attempt files (parquets no stats file names); never a commit",
        description=(
            "Delete the parquet files of OUT/shards that no stats file names (failed, killed or "
            "losing write attempts) and local temporaries, in one listing and one bulk delete. "
            "While a run is live on OUT (fresh heartbeat in manifest.json), only the attempts of "
            "shards already committed are removed: the others may be in flight."
        ),
    )
    add_output_argument(g)
    g.add_argument(
        "--dry-run",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="list what would be removed, remove nothing",
    )
    g.set_defaults(func=_gc)


def _export_json(args: argparse.Namespace) -> int:
    from pipeline.io.export_json import ExportConfig, export_json

    try:
        config = ExportConfig(
            source=args.output,
            dest=args.dest,
            name=args.name,
            splits=args.splits,
            caption=args.caption,
            include_flagged=args.include_flagged,
            bucket_rows=args.bucket_rows,
        )
        result = export_json(config)
    except (ValueError, FileNotFoundError) as e:
        print(f"vecap export-json: {e}", file=sys.stderr)
        return 2
    rate = result.rows_read / result.seconds if result.seconds else 0.0
    print(
        f"wrote {result.entries} entries into {result.splits} files under {config.destination} "
        f"({result.rows_read} rows read, {result.duplicates} duplicate URLs, "
        f"{result.skipped_not_ok} not ok, {result.skipped_no_caption} without a caption, "
        f"{result.skipped_flagged} flagged; {rate:,.0f} rows/s)"
    )
    return 0


def _validate_json(args: argparse.Namespace) -> int:
    from pipeline.io.export_json import find_split_files, validate_json

    files: list[str] = []
    for path in args.paths:
        files.extend(find_split_files(path))
    files = sorted(set(files))
    report = validate_json(files, max_errors=args.max_errors)
    for err in report.errors:
        print(f"error: {err}", file=sys.stderr)
    if report.errors_total > len(report.errors):
        print(f"... and {report.errors_total - len(report.errors)} more errors", file=sys.stderr)
    verdict = "OK" if report.ok else "INVALID"
    print(f"{verdict}: {len(files)} files, {report.entries} entries, {report.errors_total} errors")
    return 0 if report.ok else 1


def _stats(args: argparse.Namespace) -> int:
    from pipeline.io.stats_summary import format_stats, output_stats, stats_json

    stats = output_stats(args.output, caption_lengths=args.caption_lengths)
    if stats.shards == 0:
        print(f"vecap stats: no finished shards under {args.output}", file=sys.stderr)
        return 1
    print(stats_json(stats) if args.json else format_stats(stats))
    return 0


def _gc(args: argparse.Namespace) -> int:
    from pipeline.io.shard_files import remove_uncommitted, uncommitted_files
    from pipeline.manifest import read_manifest
    from pipeline.run_lease import describe, liveness

    state, run, _ = liveness(read_manifest(args.output))
    live = state == "live"
    if live:
        print(
            f"vecap gc: {describe(run or {})} is live on {args.output}: removing only attempt "
            "files of committed shards",
            file=sys.stderr,
        )
    if args.dry_run:
        found = uncommitted_files(args.output)
        paths = found.of_committed if live else found.all
        for path in paths:
            print(path)
        print(f"would remove {len(paths)} uncommitted files", file=sys.stderr)
        return 0
    removed = remove_uncommitted(args.output, include_open=not live)
    print(f"removed {len(removed.all)} uncommitted files ({removed.bytes:,} bytes)")
    return 0
