"""Small JPEG thumbnails as data URIs, so the page carries its images inside itself."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError


@dataclass(frozen=True)
class Thumbnail:
    data_uri: str | None  # None when the bytes could not be decoded
    width: int = 0
    height: int = 0
    error: str | None = None


def make_thumbnail(image_bytes: bytes | None, max_px: int = 192, quality: int = 80) -> Thumbnail:
    """Decode, shrink to fit ``max_px``, re-encode as JPEG; never raises for bad bytes."""
    if not image_bytes:
        return Thumbnail(None, error="no image bytes")
    try:
        with Image.open(io.BytesIO(image_bytes)) as img:
            img.draft("RGB", (max_px, max_px))  # JPEG: decode at reduced scale, much faster
            img = img.convert("RGB")
            img.thumbnail((max_px, max_px), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=quality, optimize=True)
            size = img.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return Thumbnail(None, error=f"image could not be decoded: {exc}")
    encoded = base64.b64encode(buf.getvalue()).decode("ascii")
    return Thumbnail(f"data:image/jpeg;base64,{encoded}", size[0], size[1])
