"""Run a function over items on a few threads, with no more queued than can run at once.

The exports (``export-wds``, ``export-hf``) write one file per shard, a few at a time, so uploads
to an object store overlap. Submitting every shard up front would leave a pool that, after an
error or a Ctrl-C, drains 100,000 queued shards before the call returns; here at most
``workers`` items are ever submitted, and on any error nothing more is started, what is running
finishes (each file is published whole or not at all), and the error is raised.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def run_bounded(
    fn: Callable[[Any], Any], items: Iterable[Any], workers: int, name: str
) -> Iterator[Any]:
    """``fn(item)`` for every item, ``workers`` at a time, results as they finish (threads
    named ``name``); see the module doc."""
    if workers == 1:  # no threads: tracebacks and debuggers see the plain call
        yield from map(fn, items)
        return
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix=name)
    pending: set[concurrent.futures.Future] = set()
    try:
        queue = iter(items)
        while True:
            for item in queue:
                pending.add(pool.submit(fn, item))
                if len(pending) >= workers:
                    break
            if not pending:
                return
            finished, pending = concurrent.futures.wait(
                pending, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for future in finished:
                yield future.result()  # raises the item's error
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)


__all__ = ["run_bounded"]
