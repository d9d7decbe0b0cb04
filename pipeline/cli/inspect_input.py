"""`vecap inspect-input`: check an input before paying for a run.

Plans the input exactly as `vecap run` would (files, formats, row counts, shards; column errors
surface here) and reads a sample of rows, so a wrong column name or a broken file shows up in
seconds instead of after the GPUs have started.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from pipeline.io.reader_config import add_reader_arguments, reader_config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect-input",
        help="plan an input (files, formats, rows, shards) and read a sample of its rows",
        description=__doc__,
    )
    add_reader_arguments(parser)
    parser.add_argument(
        "--sample", type=int, default=1000, help="rows to read from the first shards (default 1000)"
    )
    parser.add_argument("--show", type=int, default=5, help="sample rows to print (default 5)")
    parser.add_argument(
        "--plan-out", metavar="URL", help="write the shard plan as JSON here (fsspec URL)"
    )
    parser.set_defaults(func=inspect_input)


def _short(text: str | None, limit: int = 60) -> str:
    if text is None:
        return "-"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def inspect_input(args: argparse.Namespace) -> int:
    import fsspec

    from pipeline.io.readers import plan_files, read_shard
    from pipeline.io.shard_plan import build_shards, plan_to_json

    try:
        config = reader_config_from_args(args)
        files = plan_files(config)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    shards = build_shards(files, config.shard_size)
    width = max((len(f.path) for f in files), default=4)
    print(f"{'file':{width}}  {'format':11}  {'rows':>12}")
    for f in files:
        print(f"{f.path:{width}}  {f.file_format:11}  {f.rows:12,}")
    total = sum(f.rows for f in files)
    print(
        f"{len(files)} files, {total:,} rows, {len(shards)} shards of up to {config.shard_size:,}"
    )

    statuses: Counter[str] = Counter()
    shown = 0
    for shard in shards:
        if sum(statuses.values()) >= args.sample:
            break
        for record in read_shard(shard, config):
            if sum(statuses.values()) >= args.sample:
                break
            statuses[record.status] += 1
            if shown < args.show:
                shown += 1
                detail = record.error if record.error else _short(record.alt_text)
                print(f"  {record.uid}  {record.status:12} {_short(record.url)}  {detail}")
    if statuses:
        counts = ", ".join(f"{s}: {n:,}" for s, n in statuses.most_common())
        print(f"sample of {sum(statuses.values()):,} rows: {counts}")
    if args.plan_out:
        with fsspec.open(args.plan_out, "w") as out:
            out.write(plan_to_json(shards))
        print(f"plan written to {args.plan_out}")
    return 0


__all__ = ["inspect_input", "register"]
