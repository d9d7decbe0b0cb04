"""Entry point of the local runner's SDK worker processes: Beam's own worker, started quietly.

Beam's ``sdk_worker_main`` logs its start-up at INFO to stderr (twenty lines per process) before
it reads any option. Here the worker's stderr shows errors only; its warnings still reach the
user through the runner, which relays every worker log record of WARNING and above.

Memory: a download worker's 32 threads each decode a full-size photo now and then; glibc gives
every thread its own malloc arena (up to 8 per core) and each arena keeps its high-water mark,
which costs ~60 MB of RSS per worker for nothing. Two arenas are plenty for threads that spend
their time in Pillow and sockets. A fixed mmap threshold hands each shard's big buffers back
when freed (measured on bench/download.py: ~500 -> ~455 MB peak per worker).
"""

from __future__ import annotations

import logging
import sys


def limit_malloc_arenas(arenas: int = 2, mmap_threshold: int = 8 << 20) -> None:
    """glibc's ``mallopt`` for M_ARENA_MAX and M_MMAP_THRESHOLD, before any thread starts; a
    no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl or another libc: nothing to tune
        return
    m_arena_max, m_mmap_threshold = -8, -3
    libc.mallopt(m_arena_max, arenas)
    # A fixed threshold (glibc otherwise raises it up to 32 MB as big blocks are freed): a
    # shard's parquet bytes and row-group buffers (tens of MB) are mapped and handed back to
    # the system when freed, instead of fragmenting the heap shard after shard. Decoded photos
    # (a few MB) stay on the heap, where their memory is reused without page faults.
    libc.mallopt(m_mmap_threshold, mmap_threshold)


def main() -> None:
    from pipeline.cli.logs import quiet_worker_stderr, worker_handler

    limit_malloc_arenas()
    quiet_worker_stderr()
    # A root handler now makes the implicit logging.basicConfig() of Beam's imports a no-op.
    # Errors only, and without -v one line each: a failing step's traceback is the job's error,
    # which the vecap command reports once, with the traceback in OUT/logs/.
    logging.getLogger().addHandler(worker_handler())
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
    main()
