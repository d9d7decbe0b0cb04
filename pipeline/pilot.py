"""A pilot run: only a few shards of the full plan, to measure the job before paying for all of it.

``--max-shards N`` picks the first N shards of the plan, ``--sample-shards N`` N shards spread
evenly over it (positions ``i * total // N``, i = 0..N-1, of the plan's shard ids in order: 2 of 6
are shards 0 and 3), so a pilot sees the start, middle and end of the input, not just its first
files. The selection is made from the FULL plan, never from what is left to do: rerunning the
pilot command redoes nothing, and the job's fingerprint stays the full job's, so the same command
without the flag continues the job and skips the pilot's committed shards. `vecap estimate OUT`
projects the whole job from what the pilot measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def pilot_selection(
    shard_ids: Sequence[int], max_shards: int | None, sample_shards: int | None
) -> dict[str, Any] | None:
    """The pilot's shards of the plan ``shard_ids`` (the manifest record), or None: no pilot.

    N at or above the plan's size selects the whole plan (still recorded as a pilot)."""
    if max_shards is None and sample_shards is None:
        return None
    ids = sorted(shard_ids)
    if max_shards is not None:
        flag, n = "--max-shards", max_shards
        chosen = ids[:n]
    else:
        assert sample_shards is not None
        flag, n = "--sample-shards", sample_shards
        total = len(ids)
        chosen = ids if n >= total else [ids[i * total // n] for i in range(n)]
    return {"flag": flag, "n": n, "shards": chosen}


def describe_pilot(pilot: dict[str, Any], shards_total: int) -> str:
    """``pilot (--sample-shards 2): shards 0, 3 of 6 planned``."""
    shown = pilot["shards"][:10]
    more = f" and {len(pilot['shards']) - len(shown)} more" if len(pilot["shards"]) > 10 else ""
    return (
        f"pilot ({pilot['flag']} {pilot['n']}): shards {', '.join(map(str, shown))}{more} of "
        f"{shards_total} planned"
    )


__all__ = ["describe_pilot", "pilot_selection"]
