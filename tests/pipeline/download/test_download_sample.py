"""The bundled demo sample: enough small real-looking JPEGs, each with an AltText, plus failures."""

from __future__ import annotations

import csv
import io

import numpy as np
from PIL import Image

from pipeline.sample.server import SAMPLE_DIR, SAMPLE_TABLE, sample_input_table


def _rows() -> list[dict[str, str]]:
    with SAMPLE_TABLE.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_sample_has_enough_small_jpeg_photos():
    photos = sorted(SAMPLE_DIR.glob("*.jpg"))
    assert len(photos) >= 32
    assert sum(p.stat().st_size for p in photos) < 3_000_000
    for path in photos:
        img = Image.open(io.BytesIO(path.read_bytes()))
        img.load()
        assert img.format == "JPEG" and img.mode == "RGB"
        assert min(img.size) >= 200
        # photo-like: many distinct colours, not a flat test card
        arr = np.asarray(img, dtype=np.int64).reshape(-1, 3)
        assert len(np.unique(arr @ np.array([1 << 16, 1 << 8, 1]))) > 2000


def test_every_photo_is_listed_with_an_alt_text():
    rows = _rows()
    listed = {r["url"] for r in rows}
    for path in SAMPLE_DIR.glob("*.jpg"):
        assert path.name in listed
    assert all(r["caption"].strip() for r in rows)
    assert len(listed) == len(rows)  # no duplicate URLs


def test_sample_includes_failing_rows():
    urls = [r["url"] for r in _rows()]
    missing = [u for u in urls if not u.startswith("_fault/") and not (SAMPLE_DIR / u).exists()]
    assert missing, "a 404 row"
    assert any(u.endswith(".html") and (SAMPLE_DIR / u).exists() for u in urls)
    assert any(u.startswith("_fault/robots/") for u in urls)


def test_sample_input_table_writes_absolute_urls(tmp_path):
    dest = sample_input_table("http://127.0.0.1:8123", tmp_path / "nested" / "in.csv")
    with dest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(_rows())
    assert rows[0]["url"].startswith("http://127.0.0.1:8123/")
    robots = [r["url"] for r in rows if "_fault/robots/" in r["url"]]
    assert robots and robots[0].endswith("?value=noai")  # the query survives quoting
