"""A realistic synthetic vecap output (real JPEGs, mixed statuses) for tests and benchmarks.

It follows the writer's layout exactly: ``shards/part-NNNNN.parquet`` with
``schemas.RECORD_SCHEMA``, then ``part-NNNNN.stats.json`` written last, plus ``manifest.json``.
"""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from schemas import RECORD_SCHEMA, Status, make_uid
from schemas.stats import ShardStats, shard_stem

_WORDS = [
    "a",
    "red",
    "bicycle",
    "leaning",
    "against",
    "brick",
    "wall",
    "in",
    "the",
    "afternoon",
    "sun",
    "two",
    "dogs",
    "playing",
    "on",
    "sandy",
    "beach",
    "near",
    "blue",
    "water",
    "mountain",
    "lake",
    "with",
    "pine",
    "trees",
    "and",
    "snowy",
    "peaks",
    "old",
    "wooden",
    "boat",
    "tied",
    "to",
    "dock",
    "at",
    "sunset",
    "bowl",
    "of",
    "fresh",
    "fruit",
    "on",
    "kitchen",
    "table",
    "city",
    "street",
    "at",
    "night",
    "with",
    "neon",
    "signs",
    "child",
    "flying",
    "kite",
    "in",
    "green",
    "park",
]
# (status, error) of the failures, with their weights among failed rows.
_FAILURES = (
    (Status.HTTP_ERROR.value, "HTTP 404 Not Found", 5),
    (Status.HTTP_ERROR.value, "HTTP 403 Forbidden", 2),
    (Status.TIMEOUT.value, "read timed out after 10.0 s", 2),
    (Status.DECODE_ERROR.value, "cannot identify image file", 1),
    (Status.CAPTION_FAILED.value, "generation returned an empty caption", 1),
)
HOSTILE_ALT_TEXT = (
    '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'"> & a cat'
)


@dataclass(frozen=True)
class SyntheticOutput:
    root: Path
    rows: int  # in finished shards
    status_counts: dict[str, int]
    finished_shards: list[int]
    in_progress_shards: list[int]


def make_jpeg(seed: int, size: tuple[int, int] = (96, 72)) -> bytes:
    """A small, distinct, real JPEG: a gradient with a coloured disc."""
    rnd = random.Random(seed)
    w, h = size
    base = (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256))
    img = Image.linear_gradient("L").resize((w, h)).convert("RGB")
    img = Image.blend(img, Image.new("RGB", (w, h), base), 0.6)
    draw = ImageDraw.Draw(img)
    r = min(w, h) // 4
    cx, cy = rnd.randrange(r, w - r), rnd.randrange(r, h - r)
    draw.ellipse(
        (cx - r, cy - r, cx + r, cy + r), fill=(255 - base[0], 255 - base[1], 255 - base[2])
    )
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _sentence(rnd: random.Random, lo: int, hi: int) -> str:
    return " ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(lo, hi)))


def _row(
    shard_id: int,
    i: int,
    rnd: random.Random,
    ok_share: float,
    images: list[bytes] | None,
    size: tuple[int, int] = (96, 72),
) -> dict:
    row = dict.fromkeys(RECORD_SCHEMA.names)
    row.update(
        uid=make_uid(shard_id, i),
        shard_id=shard_id,
        row_index=i,
        url=f"https://images.example.org/{shard_id}/{i}.jpg",
        alt_text=_sentence(rnd, 1, 12) if rnd.random() > 0.05 else None,
    )
    if rnd.random() >= ok_share:
        weights = [w for *_, w in _FAILURES]
        status, error, _ = rnd.choices(_FAILURES, weights)[0]
        row.update(status=status, error=error)
        return row
    source = rnd.choices(["llm", "visual", "alt"], [8, 1, 1])[0]
    if images:
        # A pool of distinct images, cycled, plus distinct trailing bytes (decoders ignore data
        # after the JPEG end marker): parquet can neither dictionary-encode nor snappy-compress
        # them away, so file sizes stay like real images'.
        jpg = images[i % len(images)] + rnd.randbytes(16)
    else:
        jpg = make_jpeg(shard_id * 1_000_003 + i, size)
    vc = _sentence(rnd, 8, 30)
    row.update(
        status=Status.OK.value,
        jpg=jpg,
        image_format="jpeg",
        width=size[0],
        height=size[1],
        original_width=size[0] * 10,
        original_height=size[1] * 10,
        sha256=f"{shard_id:032x}{i:032x}",
        http_status=200,
        download_attempts=1,
        visual_caption=vc,
        caption_model="tiny-llava",
        caption_prompt_id="llava-short-v1",
        ethics_flagged=rnd.random() < 0.05,
        fused_caption=_sentence(rnd, 10, 40)
        if source == "llm"
        else (vc if source == "visual" else row["alt_text"]),
        fusion_model="tiny-llama",
        fusion_prompt_id="vecap-fuse-v1",
        fusion_source=source,
        fusion_reason=None if source == "llm" else "LLM output rejected: too short",
    )
    if row["ethics_flagged"]:
        row["ethics_reason"] = "mentions a person's name"
    return row


def write_synthetic_output(
    root: str | Path,
    shards: int = 3,
    rows_per_shard: int = 24,
    in_progress: int = 1,
    seed: int = 0,
    ok_share: float = 0.7,
    hostile_alt_text: bool = True,
    shared_image: bool = False,
    image_size: tuple[int, int] = (96, 72),
    row_group_size: int | None = None,
    start_time: float = 1_790_000_000.0,
) -> SyntheticOutput:
    """Write ``shards`` finished shards, ``in_progress`` half-written ones, and a manifest.

    ``shared_image`` cycles a pool of 32 JPEGs over the ok rows (fast, for large outputs).
    A half-written shard is a parquet file cut in the middle, with no stats file.
    """
    root = Path(root)
    shard_dir = root / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(seed)
    images = [make_jpeg(seed + k, image_size) for k in range(32)] if shared_image else None
    total = Counter()
    t = start_time
    for shard_id in range(shards + in_progress):
        rows = [_row(shard_id, i, rnd, ok_share, images, image_size) for i in range(rows_per_shard)]
        if hostile_alt_text and shard_id == 0 and rows:
            rows[0]["alt_text"] = HOSTILE_ALT_TEXT
            rows[0].update(
                status=Status.OK.value,
                error=None,
                jpg=rows[0]["jpg"] or make_jpeg(seed + 7),
                fusion_source="alt",
                fused_caption=HOSTILE_ALT_TEXT,
                visual_caption="a cat on a sofa",
            )
        table = pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)
        parquet = shard_dir / f"{shard_stem(shard_id)}.parquet"
        pq.write_table(table, parquet, row_group_size=row_group_size or max(rows_per_shard, 1))
        if shard_id >= shards:  # in progress: a torn file and no stats
            data = parquet.read_bytes()
            parquet.write_bytes(data[: len(data) // 2])
            continue
        counts = Counter(r["status"] for r in rows)
        total.update(counts)
        seconds = 20.0 + rnd.random() * 10
        stats = ShardStats(
            shard_id=shard_id,
            rows=len(rows),
            status_counts=dict(counts),
            fusion_source_counts=dict(
                Counter(r["fusion_source"] for r in rows if r["fusion_source"])
            ),
            ethics_flagged=sum(bool(r["ethics_flagged"]) for r in rows),
            stage_seconds={
                "download": seconds * 0.2,
                "caption": seconds * 0.6,
                "fuse": seconds * 0.2,
            },
            started_at=t,
            finished_at=t + seconds,
            caption_models=["tiny-llava"],
            fusion_models=["tiny-llama"],
        )
        (shard_dir / f"{shard_stem(shard_id)}.stats.json").write_text(stats.to_json())
        t += seconds * 0.5  # shards overlap, as with several workers
    manifest = {
        "vecap_version": "0.1.0",
        "started_at": start_time,
        "finished_at": t + 30,
        "config": {
            "input": "sample.csv",
            "caption": {
                "generation": {"model": "tiny-llava", "max_new_tokens": 77, "batch_size": 8},
                "prompt_id": "llava-short-v1",
            },
            "fusion": {
                "generation": {"model": "tiny-llama", "max_new_tokens": 77},
                "fallback": "visual",
                "prompt_id": "vecap-fuse-v1",
            },
        },
        "prompts": {
            "llava-short-v1": "Describe the image in one sentence.",
            "vecap-fuse-v1": "Merge the two descriptions into one caption.\nAltText: {alt}\nVisual: {vc}",
        },
        "versions": {"python": "3.11", "apache-beam": "2.77.0", "transformers": "5.24"},
        "note": "<b>not bold</b>",
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return SyntheticOutput(
        root=root,
        rows=sum(total.values()),
        status_counts=dict(total),
        finished_shards=list(range(shards)),
        in_progress_shards=list(range(shards, shards + in_progress)),
    )
