"""`vecap engines`: the engine servers running on this machine, and stopping them.

A launcher stops the servers it started when its job ends; one that was killed leaves them
running (the next `vecap run` on the machine attaches to them: no reload). This lists what the
machine's fleet registry (``VECAP_ENGINE_DIR``) holds and, with ``--stop``, stops it all.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "engines",
        help="list the engine servers (vLLM, one per GPU per model) running on this machine",
        description=__doc__,
    )
    parser.add_argument("--stop", action="store_true", help="stop every listed server")
    parser.set_defaults(func=engines)


def engines(args: argparse.Namespace) -> int:
    import glob
    import json
    import os

    from pipeline.generation.engine_server import is_alive, is_healthy, stop_server
    from pipeline.generation.fleet import engine_dir

    where = engine_dir()
    records = []
    for path in sorted(glob.glob(os.path.join(where, "*.json"))):
        try:
            with open(path) as f:
                records.append((path, json.load(f)))
        except (OSError, ValueError):
            continue  # a record being replaced right now
    if not records:
        print(f"no engine servers recorded in {where}")
        return 0
    for path, r in records:
        pid = int(r["pid"])
        alive = is_alive(pid)
        state = (
            "healthy" if alive and is_healthy(f"http://127.0.0.1:{r['port']}") else
            "starting or broken" if alive else "gone"
        )  # fmt: skip
        print(
            f"{r.get('slot', '?'):<10} pid {pid:<8} port {r['port']:<6} gen {r['generation']} "
            f"restarts {r.get('restarts', 0)}  {state:<18} {r.get('model', '?')}"
        )
        if args.stop:
            stop_server(pid)
            os.unlink(path)
    if args.stop:
        print(f"stopped {len(records)} server(s)")
    return 0
