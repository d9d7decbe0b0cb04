"""`vecap export-wds OUT DEST`: an output's committed shards as webdataset tar shards."""

from __future__ import annotations

import argparse

from pipeline.cli.common import add_dest_positional, add_output_argument, resolve_dest


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export-wds",
        help="write webdataset tar shards (what open_clip trains from) of an output",
        description=(
            "Write DEST/part-NNNNN.tar for every committed shard of OUT: per row {uid}.jpg "
            "(or .webp/.png: the stored bytes, named by their format), {uid}.txt (the caption) "
            "and {uid}.json (metadata). Rows: status ok with image bytes and a non-blank caption "
            "of the chosen kind, not ethics-flagged unless asked; the others are counted. "
            "DEST/part-NNNNN.count.json commits each tar; a rerun exports only what is missing."
        ),
    )
    add_output_argument(p)
    add_dest_positional(p, "where the tars go (directory or fsspec URL)")
    p.add_argument(
        "--caption",
        choices=("fused", "visual", "alt"),
        default="fused",
        help="the .txt: fused (VeC, default), visual (VC) or alt (AltText)",
    )
    p.add_argument(
        "--include-flagged",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also export rows the ethics check flagged but did not exclude (default no)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=4,
        help="shards exported at once (default 4; more helps uploads to object stores)",
    )
    p.set_defaults(func=_export_wds)


def _export_wds(args: argparse.Namespace) -> int:
    from pipeline.io.export_wds import WdsExportConfig, export_wds

    dest = resolve_dest(args)
    config = WdsExportConfig(
        source=args.output,
        dest=dest,
        caption=args.caption,
        include_flagged=args.include_flagged,
        workers=args.workers,
    )
    result = export_wds(config)
    skipped = ", ".join(f"{n} {r}" for r, n in result.skipped.items()) or "none"
    rate = result.samples_now / result.seconds if result.seconds else 0.0
    print(
        f"{result.samples} samples in {result.shards} tars under {dest} "
        f"({result.written_now} written now, {result.already_done} already there; "
        f"rows left out: {skipped}; {result.tar_bytes:,} bytes; {rate:,.0f} samples/s now)"
    )
    return 0
