"""`vecap export-hf OUT DEST`: a Hugging Face datasets folder (Hub-ready) from an output."""

from __future__ import annotations

import argparse

from pipeline.cli.common import add_dest_positional, add_output_argument, resolve_dest


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export-hf",
        help="write a Hugging Face datasets folder (parquet with an Image column + dataset card)",
        description=(
            "Write DEST/data/SPLIT-00000-of-000NN.parquet, one file per committed shard of OUT "
            "(uncommitted attempt files are never read), with an `image` column datasets decodes "
            "to PIL and a `caption` column, then DEST/README.md, a dataset card declaring the "
            "features, models, prompts and counts. Every row is kept (failed rows: null image, "
            "status and error say why). A rerun skips files already complete. "
            "Load with datasets.load_dataset(DEST) or upload DEST to the Hub."
        ),
    )
    add_output_argument(p)
    add_dest_positional(p, "the dataset folder to write (directory or fsspec URL)")
    p.add_argument(
        "--caption",
        choices=("fused", "visual", "alt"),
        default="fused",
        help="what the `caption` column holds: fused (VeC, default), visual (VC) or alt (AltText)",
    )
    p.add_argument("--split", default="train", help="the split these rows form (default train)")
    p.add_argument(
        "--include-flagged",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="give ethics-flagged rows a caption too (default no; the rows are kept either way)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=4,
        metavar="N",
        help="data files exported at once (default 4; the files are the same for any N)",
    )
    p.set_defaults(func=_export_hf)


def _export_hf(args: argparse.Namespace) -> int:
    from pipeline.io.export_hf import HFExportConfig, export_hf

    config = HFExportConfig(
        source=args.output,
        dest=resolve_dest(args),
        caption=args.caption,
        split=args.split,
        include_flagged=args.include_flagged,
        workers=args.workers,
    )
    result = export_hf(config)
    counts = ", ".join(f"{k} {v:,}" for k, v in result.status_counts.items())
    print(
        f"split {result.split}: {len(result.files)} files under {config.dest}/data "
        f"({result.written} written, {result.skipped} already complete), {result.rows:,} rows "
        f"({counts}); card {result.card} ({result.seconds:.1f} s)"
    )
    return 0
