"""`vecap estimate OUT`: the whole job's wall time and GPU-hours, from a pilot's committed shards."""

from __future__ import annotations

import argparse

from pipeline.cli.common import add_output_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "estimate",
        help="project the whole job's wall time and GPU-hours from the shards committed so far",
        description=(
            "From the committed shards of OUT (a pilot: vecap run ... --sample-shards N) project "
            "wall time and GPU-hours per stage for every planned row, printing the figures used. "
            "Scaling is linear in rows and in GPUs; another GPU type than the pilot's is refused "
            "(run the pilot on it). GPU-hours = GPUs x wall-clock hours, not utilisation."
        ),
    )
    add_output_argument(p)  # OUT or --output OUT
    # counts are checked by pipeline.estimate: one line that says what a count must be
    p.add_argument(
        "--gpus", default=None, metavar="N", help="GPUs of the full run (default: the pilot's)"
    )
    p.add_argument(
        "--gpu-type",
        default=None,
        metavar="T",
        help="GPU type of the full run; must be the pilot's (default: the pilot's)",
    )
    p.add_argument(
        "--pilot-gpus",
        default=None,
        metavar="N",
        help="GPUs the committed shards ran on, where the manifest cannot tell (e.g. Dataflow "
        "with autoscaling); 0: the models ran on the CPU",
    )
    p.add_argument(
        "--run",
        default=None,
        metavar="RUN_ID",
        help="measure the fleet of this run (its run id, or its number in the manifest's runs); "
        "default: the latest run that committed shards. Runs on other fleets are left out",
    )
    p.add_argument(
        "--json", action=argparse.BooleanOptionalAction, default=False, help="print JSON"
    )
    p.set_defaults(func=_estimate)


def _estimate(args: argparse.Namespace) -> int:
    import json

    from pipeline.estimate import estimate_output, format_estimate

    estimate = estimate_output(
        args.output,
        gpus=args.gpus,
        gpu_type=args.gpu_type,
        pilot_gpus=args.pilot_gpus,
        run=args.run,
    )
    print(json.dumps(estimate.to_dict(), indent=2) if args.json else format_estimate(estimate))
    return 0
