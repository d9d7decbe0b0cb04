"""Child-process driver for the commit-protocol tests: a real ``vecap run`` or a single shard
write, with a fault injected where the test needs the process to stop or meet another.

    python -m tests.pipeline.commit_driver run OUT INPUT [--hang-before-commit N MARKER]
                                                         [--hang-mid-write N MARKER]
    python -m tests.pipeline.commit_driver race OUT SHARD CAPTION BARRIER_DIR

``run`` runs the CLI (``vecap run --stages ''``: read -> write); a hang touches MARKER and
sleeps, so the test can kill -9 the process there (or start a second run meanwhile).
``race`` writes one shard whose rows carry CAPTION, meeting the other racer at BARRIER_DIR
after both uploaded their parquet and before both commit; prints a JSON line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

HANG_S = 600


def _hang(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(HANG_S)


def _install_faults(argv: list[str]) -> list[str]:
    import pipeline.io.writer as writer

    rest: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--hang-before-commit":
            shard, marker = int(argv[i + 1]), argv[i + 2]
            real_commit = writer.put_if_absent

            def commit(fs, path, data, _real=real_commit, _shard=shard, _marker=marker):
                if path.endswith(f"part-{_shard:05d}.stats.json"):
                    _hang(_marker)  # the parquet is uploaded; the commit never happens
                return _real(fs, path, data)

            writer.put_if_absent = commit
            i += 3
        elif argv[i] == "--hang-mid-write":
            shard, marker = int(argv[i + 1]), argv[i + 2]
            real_put = writer.put_bytes

            def put(fs, path, data, _real=real_put, _shard=shard, _marker=marker):
                if f"/part-{_shard:05d}." in path:
                    # half the bytes sent, as a killed upload leaves them: local disks a
                    # partial temporary, object stores an unfinished multipart upload
                    with fs.open(path, "wb", block_size=5 * 2**20, autocommit=True) as f:
                        f.write(data[: len(data) // 2])
                        f.flush()
                        _hang(_marker)
                return _real(fs, path, data)

            writer.put_bytes = put
            i += 3
        else:
            rest.append(argv[i])
            i += 1
    return rest


def _run(argv: list[str]) -> int:
    from pipeline.cli.main import main

    out, table, *extra = _install_faults(argv)
    return main(
        [
            "run",
            "--input",
            table,
            "--output",
            out,
            "--stages",
            "",
            "--shard-size",
            "5",
            "--no-progress",
            *extra,
        ]
    )


def _race(out: str, shard: int, caption: str, barrier: str) -> int:
    import pipeline.io.writer as writer
    from schemas import Record, make_uid

    real = writer.put_if_absent

    def commit(fs, path, data):
        Path(barrier, caption).touch()
        deadline = time.time() + 60
        while len(os.listdir(barrier)) < 2 and time.time() < deadline:
            time.sleep(0.005)
        return real(fs, path, data)

    writer.put_if_absent = commit
    rows = [
        Record(
            uid=make_uid(shard, i), shard_id=shard, row_index=i, url=f"http://127.0.0.1/{i}"
        ).replace(fused_caption=f"{caption} {i}", visual_caption=caption)
        for i in range(5)
    ]
    mine: list[str] = []
    real_put = writer.put_bytes

    def put(fs, path, data):
        mine.append(path.rsplit("/", 1)[-1])
        return real_put(fs, path, data)

    writer.put_bytes = put
    stats = writer.write_shard(writer.WriterConfig(output=out), shard, rows, 5)
    print(json.dumps({"caption": caption, "mine": mine[0], "committed": stats.parquet}))
    return 0


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "run":
        sys.exit(_run(args))
    if cmd == "race":
        sys.exit(_race(args[0], int(args[1]), args[2], args[3]))
    sys.exit(f"unknown command {cmd}")
