"""Streamed aggregates whose memory does not grow with the number of rows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LengthHistogram:
    """Caption lengths in words, one bin per length; lengths >= ``cap`` share the last bin.

    The exact sum is kept beside the bins so the mean stays exact when long captions are capped.
    """

    cap: int = 200
    counts: np.ndarray = field(default=None)  # type: ignore[assignment]
    total_words: int = 0
    missing: int = 0  # rows considered that had no text at all (null)

    def __post_init__(self) -> None:
        if self.cap < 1:
            raise ValueError(f"cap must be >= 1, got {self.cap}")
        if self.counts is None:
            self.counts = np.zeros(self.cap + 1, dtype=np.int64)

    def add(self, lengths: np.ndarray) -> None:
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.size == 0:
            return
        if lengths.min() < 0:
            raise ValueError("negative length")
        self.total_words += int(lengths.sum())
        self.counts += np.bincount(np.minimum(lengths, self.cap), minlength=self.cap + 1)

    def merge(self, other: LengthHistogram) -> None:
        if other.cap != self.cap:
            raise ValueError("cannot merge histograms with different caps")
        self.counts += other.counts
        self.total_words += other.total_words
        self.missing += other.missing

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def mean(self) -> float:
        return self.total_words / self.n if self.n else 0.0

    def quantile(self, q: float) -> int:
        """Smallest length L with at least ``q`` of the rows <= L (``cap`` means ``>= cap``)."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q}")
        if self.n == 0:
            return 0
        cumulative = np.cumsum(self.counts)
        return int(np.searchsorted(cumulative, max(q * self.n, 1), side="left"))

    @property
    def capped(self) -> int:
        """Rows whose length reached the cap (shown as ``>= cap``)."""
        return int(self.counts[-1])


@dataclass
class BoundedCounter:
    """Counts of distinct strings, keeping at most ``max_keys`` of them.

    Error messages may embed a URL or a byte count, so their variety is unbounded: past the cap,
    new messages are counted together under ``other`` instead of growing the dict.
    """

    max_keys: int = 200
    counts: Counter = field(default_factory=Counter)
    other: int = 0

    def add(self, key: str, n: int = 1) -> None:
        if key in self.counts or len(self.counts) < self.max_keys:
            self.counts[key] += n
        else:
            self.other += n

    @property
    def total(self) -> int:
        return sum(self.counts.values()) + self.other

    def most_common(self, n: int) -> list[tuple[str, int]]:
        return self.counts.most_common(n)
