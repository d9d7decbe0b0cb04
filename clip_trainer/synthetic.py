"""A synthetic VeCap dataset of coloured shapes, written as real vecap shards.

For tests, the benchmark and trying the trainer without a recaptioning run: every row has a
JPEG of one coloured shape, a VeC naming colour and shape correctly, and an AltText that is
right, or (with ``alt_wrong_prob``) names another colour/shape or is web junk ("IMG_0042.jpg")
— the situation VeCLIP's visual-enriched captions fix.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from schemas.record import RECORD_SCHEMA, Record, make_uid
from schemas.stats import ShardStats, shard_stem
from schemas.status import Status

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (245, 215, 20),
    "purple": (140, 40, 180),
    "orange": (250, 130, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
_JUNK_ALT = ("IMG_0042.jpg", "image", "photo", "click here", "untitled", "DSC01234")


@dataclass(frozen=True)
class ShapeSpec:
    colour: str
    shape: str

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape}"


def all_specs() -> list[ShapeSpec]:
    return [ShapeSpec(c, s) for c in COLOURS for s in SHAPES]


def draw_shape(spec: ShapeSpec, size: int, rng: np.random.Generator) -> Image.Image:
    """One shape at a random place and scale on a random light-grey background."""
    grey = int(rng.integers(170, 235))
    image = Image.new("RGB", (size, size), (grey, grey, grey))
    draw = ImageDraw.Draw(image)
    extent = int(rng.integers(size // 2, int(size * 0.8)))
    left = int(rng.integers(0, size - extent + 1))
    top = int(rng.integers(0, size - extent + 1))
    box = (left, top, left + extent - 1, top + extent - 1)
    fill = COLOURS[spec.colour]
    if spec.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif spec.shape == "square":
        draw.rectangle(box, fill=fill)
    elif spec.shape == "triangle":
        draw.polygon([(left, box[3]), (box[2], box[3]), (left + extent // 2, top)], fill=fill)
    elif spec.shape == "cross":
        bar = max(extent // 3, 1)
        mid = extent // 2 - bar // 2
        draw.rectangle((left + mid, top, left + mid + bar, box[3]), fill=fill)
        draw.rectangle((left, top + mid, box[2], top + mid + bar), fill=fill)
    else:
        raise ValueError(f"unknown shape {spec.shape!r}")
    return image


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _wrong_alt(spec: ShapeSpec, rng: np.random.Generator) -> str:
    kind = rng.integers(3)
    if kind == 0:
        return str(_JUNK_ALT[rng.integers(len(_JUNK_ALT))])
    specs = [s for s in all_specs() if s != spec]
    return specs[int(rng.integers(len(specs)))].caption.removeprefix("a ")


def write_shapes_dataset(
    out_dir: str | Path,
    rows: int,
    *,
    rows_per_shard: int = 64,
    image_size: int = 48,
    seed: int = 0,
    alt_wrong_prob: float = 0.0,
    vec_missing_prob: float = 0.0,
    failed_prob: float = 0.0,
    unfinished_shards: int = 0,
    row_group_size: int | None = None,
) -> list[Path]:
    """Write ``rows`` rows as vecap shards under ``out_dir/shards``; returns the parquet paths.

    ``failed_prob`` rows get a download failure status and no image (the trainer must skip
    them); the last ``unfinished_shards`` shards get no stats file (the trainer must not read
    them yet).
    """
    if rows < 1 or rows_per_shard < 1:
        raise ValueError("rows and rows_per_shard must be >= 1")
    rng = np.random.default_rng(seed)
    specs = all_specs()
    shard_dir = Path(out_dir) / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    n_shards = -(-rows // rows_per_shard)
    paths = []
    for shard_id in range(n_shards):
        started = time.time()
        records = []
        for row_index in range(min(rows_per_shard, rows - shard_id * rows_per_shard)):
            spec = specs[int(rng.integers(len(specs)))]
            uid = make_uid(shard_id, row_index)
            alt = (
                _wrong_alt(spec, rng)
                if rng.random() < alt_wrong_prob
                else spec.caption.removeprefix("a ")
            )
            record = Record(
                uid=uid,
                shard_id=shard_id,
                row_index=row_index,
                url=f"http://127.0.0.1/shapes/{uid}.jpg",
                alt_text=alt,
            )
            if rng.random() < failed_prob:
                records.append(record.fail(Status.HTTP_ERROR, "404 Not Found"))
                continue
            image = draw_shape(spec, image_size, rng)
            vec = None if rng.random() < vec_missing_prob else spec.caption
            records.append(
                record.replace(
                    jpg=_jpeg(image),
                    image_format="jpeg",
                    width=image_size,
                    height=image_size,
                    visual_caption=None if vec is None else f"{spec.colour} {spec.shape} on grey",
                    fused_caption=vec,
                    fusion_source=None if vec is None else "llm",
                )
            )
        table = pa.Table.from_pylist([r.to_dict() for r in records], schema=RECORD_SCHEMA)
        path = shard_dir / f"{shard_stem(shard_id)}.parquet"
        pq.write_table(table, path, row_group_size=row_group_size)
        paths.append(path)
        if shard_id < n_shards - unfinished_shards:
            counts: dict[str, int] = {}
            for r in records:
                counts[r.status] = counts.get(r.status, 0) + 1
            stats = ShardStats(
                shard_id=shard_id,
                rows=len(records),
                status_counts=counts,
                started_at=started,
                finished_at=time.time(),
            )
            (shard_dir / f"{shard_stem(shard_id)}.stats.json").write_text(stats.to_json())
    return paths


def write_shapes_eval_set(
    out_path: str | Path, *, image_size: int = 48, seed: int = 1, copies: int = 1
) -> Path:
    """A retrieval/zero-shot set: ``copies`` images of every colour x shape, captioned correctly
    (``fused_caption`` and ``alt_text`` both hold the true caption). One parquet file."""
    rng = np.random.default_rng(seed)
    records = []
    for copy in range(copies):
        for i, spec in enumerate(all_specs()):
            uid = make_uid(copy, i)
            records.append(
                Record(
                    uid=uid,
                    shard_id=copy,
                    row_index=i,
                    url=f"http://127.0.0.1/eval/{uid}.jpg",
                    alt_text=spec.caption,
                    jpg=_jpeg(draw_shape(spec, image_size, rng)),
                    image_format="jpeg",
                    width=image_size,
                    height=image_size,
                    visual_caption=spec.caption,
                    fused_caption=spec.caption,
                    fusion_source="llm",
                ).to_dict()
            )
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records, schema=RECORD_SCHEMA), path)
    return path


__all__ = [
    "COLOURS",
    "SHAPES",
    "ShapeSpec",
    "all_specs",
    "draw_shape",
    "write_shapes_dataset",
    "write_shapes_eval_set",
]
