"""The input shard plan: every input row gets a global position, rows are cut into shards of a
fixed size, and each shard lists the file ranges it reads.

The plan is a pure function of the sorted file list and each file's row count, so the same input
gives the same shard ids and uids every run; it is also what the pipeline resumes by (a shard
whose output exists is not read again) and what the writer checks rows in == rows out against.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class FilePart:
    """Rows ``[start_row, stop_row)`` of one input file (row numbers local to the file)."""

    path: str
    start_row: int
    stop_row: int
    file_format: str = ""  # resolved at planning; "" means: decide from the extension when read
    # Where to jump before reading, when planning recorded it (text formats, webdataset tars):
    # the byte offset (in the decompressed stream) at which file row ``offset_row`` starts, the
    # nearest checkpoint at or before start_row. A shard deep in a big file starts there
    # instead of re-parsing everything before it.
    start_offset: int | None = None
    offset_row: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.start_row <= self.stop_row:
            raise ValueError(f"bad row range [{self.start_row}, {self.stop_row}) for {self.path}")
        if (self.start_offset is None) != (self.offset_row is None):
            raise ValueError("start_offset and offset_row go together")
        if self.offset_row is not None and not 0 <= self.offset_row <= self.start_row:
            raise ValueError(f"offset_row {self.offset_row} is after start_row {self.start_row}")

    @property
    def seek(self) -> tuple[int, int] | None:
        """(byte offset, row) for the format readers, or None to read from the file's start."""
        if self.start_offset is None or self.offset_row is None:
            return None
        return self.start_offset, self.offset_row

    @property
    def rows(self) -> int:
        return self.stop_row - self.start_row


@dataclass(frozen=True)
class InputShard:
    """One unit of work and of output: ``rows`` input rows, read from ``parts`` in order."""

    shard_id: int
    rows: int
    parts: tuple[FilePart, ...]

    def __post_init__(self) -> None:
        if sum(p.rows for p in self.parts) != self.rows:
            raise ValueError(
                f"shard {self.shard_id}: parts hold {sum(p.rows for p in self.parts)} rows, not {self.rows}"
            )

    def to_dict(self) -> dict:
        return {
            "shard_id": self.shard_id,
            "rows": self.rows,
            "parts": [asdict(p) for p in self.parts],
        }

    @classmethod
    def from_dict(cls, data: dict) -> InputShard:
        return cls(
            shard_id=int(data["shard_id"]),
            rows=int(data["rows"]),
            parts=tuple(FilePart(**p) for p in data["parts"]),
        )


@dataclass(frozen=True)
class PlannedFile:
    """A scanned input file: its rows and checkpoints (file row -> byte offset where it starts)."""

    path: str
    file_format: str
    rows: int
    offsets: dict[int, int]


def checkpoint_every(shard_size: int) -> int:
    """Rows between recorded offsets while planning a text file.

    Files are scanned independently (in parallel), before their global position is known, so
    offsets are kept at fixed local intervals: never sparser than a shard (a reader skips less
    than one shard's rows after jumping), never denser than every 1,000 rows (the plan of a
    100M-row file holds at most 100k offsets).
    """
    return min(shard_size, max(1_000, shard_size // 10))


def build_shards(files: Iterable[PlannedFile], shard_size: int) -> list[InputShard]:
    """Cut the concatenated rows of ``files`` into shards of ``shard_size`` (the last may be short).

    A shard can span the end of one file and the start of the next; a big file can hold many.
    Empty files contribute no parts.
    """
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    parts: dict[int, list[FilePart]] = {}
    global_pos = 0
    for f in files:
        checkpoints = sorted(f.offsets)
        row = 0
        while row < f.rows:
            shard_id = (global_pos + row) // shard_size
            stop = min(f.rows, (shard_id + 1) * shard_size - global_pos)
            i = bisect.bisect_right(checkpoints, row) - 1
            if i >= 0:
                at = checkpoints[i]
                part = FilePart(f.path, row, stop, f.file_format, f.offsets[at], at)
            else:
                part = FilePart(f.path, row, stop, f.file_format)
            parts.setdefault(shard_id, []).append(part)
            row = stop
        global_pos += f.rows
    return [
        InputShard(shard_id=sid, rows=sum(p.rows for p in ps), parts=tuple(ps))
        for sid, ps in sorted(parts.items())
    ]


def plan_to_json(shards: Sequence[InputShard]) -> str:
    """The plan as JSON, for the output manifest: a resumed job can reuse it instead of rescanning."""
    return json.dumps([s.to_dict() for s in shards], separators=(",", ":"))


def plan_from_json(text: str) -> list[InputShard]:
    return [InputShard.from_dict(d) for d in json.loads(text)]


__all__ = [
    "FilePart",
    "InputShard",
    "PlannedFile",
    "build_shards",
    "checkpoint_every",
    "plan_from_json",
    "plan_to_json",
]
