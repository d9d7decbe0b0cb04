"""VeCLIP's mixed caption sampling: each time a sample is seen, train on its VeC with
probability ``p`` and on its AltText otherwise (``p=1`` / ``p=0`` are the single-caption
baselines). A row that lacks the chosen caption falls back to the other one, and that is counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class CaptionSource(IntEnum):
    """Where a training caption came from; the int goes into the batch tensor ``caption_source``."""

    VEC = 0  # VeC was drawn and present
    ALT = 1  # AltText was drawn and present
    ALT_FALLBACK = 2  # VeC was drawn but the row has none: AltText used
    VEC_FALLBACK = 3  # AltText was drawn but the row has none: VeC used

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class CaptionSampler:
    """Picks the caption of one sample view. Stateless: the caller passes the RNG, so a resumed
    run that regenerates the same per-sample RNG makes the same choice."""

    vec_prob: float = 0.5
    vec_field: str = "fused_caption"
    alt_field: str = "alt_text"

    def __post_init__(self) -> None:
        if not 0.0 <= self.vec_prob <= 1.0:
            raise ValueError(f"vec_prob must be in [0, 1], got {self.vec_prob}")
        if not self.vec_field or not self.alt_field:
            raise ValueError("vec_field and alt_field must be column names")
        if self.vec_field == self.alt_field:
            raise ValueError(f"vec_field and alt_field are both {self.vec_field!r}")

    def choose(
        self, row: Mapping[str, object], rng: np.random.Generator
    ) -> tuple[str, CaptionSource] | None:
        """(caption, source), or None when the row has neither caption.

        The draw happens even for rows that have only one caption, so the RNG stream (and with it
        every later augmentation) does not depend on which captions happen to be missing.
        """
        want_vec = bool(rng.random() < self.vec_prob)
        vec = clean_caption(row.get(self.vec_field))
        alt = clean_caption(row.get(self.alt_field))
        if want_vec:
            if vec is not None:
                return vec, CaptionSource.VEC
            if alt is not None:
                return alt, CaptionSource.ALT_FALLBACK
        else:
            if alt is not None:
                return alt, CaptionSource.ALT
            if vec is not None:
                return vec, CaptionSource.VEC_FALLBACK
        return None


def clean_caption(value: object) -> str | None:
    """A caption worth training on, whitespace-normalised, or None for missing/blank values."""
    if not isinstance(value, str):
        return None
    text = " ".join(value.split())
    return text or None


def count_sources(codes: np.ndarray | list[int]) -> dict[str, int]:
    """Histogram of caption-source codes as ``{"vec": n, "alt": n, ...}`` (all keys present)."""
    counts = np.bincount(np.asarray(codes, dtype=np.int64), minlength=len(CaptionSource))
    return {source.label: int(counts[source.value]) for source in CaptionSource}


__all__ = ["CaptionSampler", "CaptionSource", "clean_caption", "count_sources"]
