"""The one record that flows through every stage, and the pyarrow schema derived from it.

The dataclass is the single source of truth: :func:`record_schema` maps each annotated field
to an arrow type, so adding a field here adds the parquet column.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from schemas.status import Status

# Bump when a field is added, removed or changes meaning; written into parquet metadata.
SCHEMA_VERSION = "1.2"  # 1.1: caption_engine, fusion_engine; 1.2: dedup columns

_ARROW_TYPES: dict[Any, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    bool: pa.bool_(),
    bytes: pa.binary(),
}


@dataclass
class Record:
    """One input row on its way to a visual-enriched caption.

    Failures are data: a row that fails anywhere keeps its ``uid`` and gets a ``status`` other
    than ``ok`` plus an ``error``; later stages pass it through untouched.
    """

    # identity and input
    uid: str
    shard_id: int
    row_index: int
    url: str | None = None
    alt_text: str | None = None
    extra: str | None = None  # JSON object of the extra input columns the user asked to keep
    status: str = Status.OK.value
    error: str | None = None
    # download
    jpg: bytes | None = None  # re-encoded image bytes (JPEG or WebP, see image_format)
    image_format: str | None = None
    width: int | None = None
    height: int | None = None
    original_width: int | None = None
    original_height: int | None = None
    sha256: str | None = None  # of the original downloaded bytes
    http_status: int | None = None
    download_attempts: int | None = None
    # visual caption
    visual_caption: str | None = None
    caption_model: str | None = None
    caption_prompt_id: str | None = None
    caption_engine: str | None = None  # backend/dtype that wrote it, e.g. vllm/bfloat16
    # ethics check
    ethics_flagged: bool | None = None
    ethics_reason: str | None = None
    # fusion
    fused_caption: str | None = None
    fusion_model: str | None = None
    fusion_prompt_id: str | None = None
    fusion_engine: str | None = None  # backend/dtype, when the LLM was asked
    fusion_source: str | None = None  # llm | visual | alt
    fusion_reason: str | None = None  # why the caption did not come from the LLM
    # dedup (pipeline.dedup, `vecap run --dedup`): set only on rows that reused another's work
    # the canonical row (the first in input order) with the same image, whose download and visual caption
    # this row carries; duplicate_kind says how it was found: "url" (same normalised URL: not
    # downloaded, so no image bytes of its own) or "image" (same bytes behind another URL)
    duplicate_of: str | None = None
    duplicate_kind: str | None = None
    # the canonical row of the same (image, AltText) pair, whose ethics verdict and fused
    # caption this row carries
    fusion_of: str | None = None
    # the visual / fused caption came from the caption cache (`--caption-cache`), not a model
    caption_cached: bool | None = None
    fusion_cached: bool | None = None

    @property
    def ok(self) -> bool:
        return self.status == Status.OK.value

    def fail(self, status: Status | str, error: str) -> Record:
        """A copy of this record marked failed; image bytes are dropped, identity kept."""
        return dataclasses.replace(self, status=str(status), error=error, jpg=None)

    def without_fusion(self) -> Record:
        """This record with no fused caption: what fusion starts from, and what a new visual
        caption leaves (a fused caption made from the old one would silently disagree)."""
        if self.fusion_source is None and self.fused_caption is None and not self.fusion_cached:
            return self
        return dataclasses.replace(
            self,
            fused_caption=None,
            fusion_model=None,
            fusion_prompt_id=None,
            fusion_engine=None,
            fusion_source=None,
            fusion_reason=None,
            fusion_cached=None,
        )

    def replace(self, **changes: Any) -> Record:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Record:
        """Build from a dict (a parquet row); unknown keys are ignored so old readers survive new columns."""
        names = _field_names()
        return cls(**{k: v for k, v in row.items() if k in names})


def _field_names() -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(Record))


def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """(arrow type, nullable) for a resolved field annotation such as ``str | None``."""
    args = typing.get_args(annotation)
    if args:
        non_null = [a for a in args if a is not type(None)]
        if len(non_null) != 1:
            raise TypeError(f"unsupported annotation {annotation!r}")
        return _ARROW_TYPES[non_null[0]], True
    return _ARROW_TYPES[annotation], False


def record_schema() -> pa.Schema:
    hints = typing.get_type_hints(Record)
    fields = []
    for f in dataclasses.fields(Record):
        arrow_type, nullable = _arrow_type(hints[f.name])
        fields.append(pa.field(f.name, arrow_type, nullable=nullable))
    return pa.schema(fields, metadata={b"vecap_schema_version": SCHEMA_VERSION.encode()})


RECORD_SCHEMA: pa.Schema = record_schema()


def make_uid(shard_id: int, row_index: int) -> str:
    """Stable id from the input shard and the row's position in it; sorts in input order."""
    return f"{shard_id:05d}{row_index:07d}"


__all__ = ["RECORD_SCHEMA", "SCHEMA_VERSION", "Record", "make_uid", "record_schema"]
