"""Turn downloaded bytes into a normalised RGB image: sniff, guard, decode, orient, resize, encode.

Pure CPU work with Pillow (which releases the GIL while decoding, resizing and encoding, so a
thread pool uses every core). Resize modes follow img2dataset's: ``keep_ratio`` (smallest side =
size), ``keep_ratio_largest``, ``center_crop`` and ``border`` (white padding), optionally only
when the image is bigger. JPEG downscales decode at reduced scale (``Image.draft``: the DCT does
most of the shrinking for free), which is what makes a 336-px recaption corpus CPU-cheap.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from schemas.status import Status

RESIZE_MODES: tuple[str, ...] = ("no", "keep_ratio", "keep_ratio_largest", "center_crop", "border")
# Downscaling filters, after the JPEG draft decode. Bicubic (the default) stays closer to a
# full-decode Lanczos resize than img2dataset's OpenCV INTER_AREA output on every test photo.
# Bilinear costs ~1 CPU-ms less per photo (the resize is the largest part of the image work) but
# blurs visibly more on some photos: an opt-in for throughput (download.downscale_filter).
DOWNSCALE_FILTERS: dict[str, Image.Resampling] = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
ENCODE_FORMATS: dict[str, str] = {"jpg": "JPEG", "webp": "WEBP"}  # image_format -> Pillow name
# Formats we let Pillow open: raster formats seen on the web. Pillow's other plugins (EPS runs
# Ghostscript, PSD, ...) are attack surface with no captioning value.
DECODABLE_FORMATS: tuple[str, ...] = (
    "JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "ICO", "AVIF", "JPEG2000",
)  # fmt: skip
_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = frozenset({5, 6, 7, 8})  # EXIF orientations that transpose width and height
_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class ImageConfig:
    image_size: int = 336
    resize_mode: str = "keep_ratio"
    resize_only_if_bigger: bool = False
    min_image_size: int = 32  # smaller sides are icons and spacer pixels, not captionable
    max_image_pixels: int = 40_000_000  # checked from the header, before any pixel is decoded
    encode_format: str = "jpg"
    encode_quality: int = 95
    skip_reencode: bool = False  # keep the original bytes when nothing would change
    downscale_filter: str = "bicubic"  # see DOWNSCALE_FILTERS

    def __post_init__(self) -> None:
        if self.downscale_filter not in DOWNSCALE_FILTERS:
            raise ValueError(
                f"downscale_filter must be one of {tuple(DOWNSCALE_FILTERS)}, "
                f"got {self.downscale_filter!r}"
            )
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if self.encode_format not in ENCODE_FORMATS:
            raise ValueError(
                f"encode_format must be one of {tuple(ENCODE_FORMATS)}, got {self.encode_format!r}"
            )
        if self.image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {self.image_size}")
        if self.min_image_size < 0:
            raise ValueError(f"min_image_size must be >= 0, got {self.min_image_size}")
        if self.max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be >= 1, got {self.max_image_pixels}")
        if not 1 <= self.encode_quality <= 100:
            raise ValueError(f"encode_quality must be in 1..100, got {self.encode_quality}")


@dataclass(frozen=True)
class ProcessedImage:
    data: bytes
    image_format: str  # "jpg" | "webp"
    width: int
    height: int
    original_width: int  # as displayed, i.e. after EXIF orientation
    original_height: int


class ImageError(Exception):
    """Why bytes did not become an image; carries the row's status."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def sniff_format(data: bytes) -> str | None:
    """The image format from magic bytes (Pillow's name), or None when it is not an image."""
    head = data[:32]
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:2] == b"BM" and len(head) >= 14:
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:4] == b"\x00\x00\x01\x00":
        return "ICO"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIF"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xff\x4f\xff\x51"):
        return "JPEG2000"
    return None


def describe_non_image(data: bytes, content_type: str | None) -> str:
    """A human-readable reason, e.g. ``not an image: Content-Type text/html, starts with '<html'``."""
    if not data:
        return "not an image: empty body"
    head = data[:24]
    text = head.lstrip().lower()
    kind = ""
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        kind = " (an HTML page)"
    elif text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in data[:512].lower()):
        kind = " (an SVG vector image, which is not decoded)"
    ctype = f"Content-Type {content_type}, " if content_type else ""
    return f"not an image{kind}: {ctype}starts with {head!r}"


def process_image(
    data: bytes, config: ImageConfig, content_type: str | None = None
) -> ProcessedImage:
    """Decode, guard, orient, convert to RGB, resize and re-encode; raises :class:`ImageError`."""
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError(Status.NOT_AN_IMAGE, describe_non_image(data, content_type))
    if fmt not in DECODABLE_FORMATS:
        raise ImageError(Status.DECODE_ERROR, f"{fmt} images are not supported (no decoder)")
    try:
        # Pillow's own bomb check (2x its global limit) may fire in open(); ours is tighter
        # and per call, so the global MAX_IMAGE_PIXELS is left alone.
        img = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as exc:
        raise ImageError(Status.DECOMPRESSION_BOMB, str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise ImageError(
            Status.DECODE_ERROR, f"cannot decode {fmt}: corrupt data (starts like {fmt})"
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(Status.DECODE_ERROR, f"cannot read {fmt} header: {exc}") from exc
    with img:
        return _process_open_image(img, fmt, data, config)


def _process_open_image(
    img: Image.Image, fmt: str, data: bytes, config: ImageConfig
) -> ProcessedImage:
    raw_w, raw_h = img.size
    pixels = raw_w * raw_h
    if pixels > config.max_image_pixels:
        raise ImageError(
            Status.DECOMPRESSION_BOMB,
            f"{raw_w}x{raw_h} = {pixels} pixels exceeds the {config.max_image_pixels}-pixel limit",
        )
    try:
        orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block only costs the orientation
        orientation = 1
    orig_w, orig_h = (raw_h, raw_w) if orientation in _SWAPS_AXES else (raw_w, raw_h)
    if min(orig_w, orig_h) < config.min_image_size:
        raise ImageError(
            Status.TOO_SMALL,
            f"{orig_w}x{orig_h} is smaller than the minimum side of {config.min_image_size} px",
        )
    target = _resize_target(orig_w, orig_h, config)
    if target is not None and fmt == "JPEG" and img.mode in ("RGB", "L", "CMYK"):
        # Decode at 1/2, 1/4 or 1/8 scale, never below the target size.
        want = target if orientation not in _SWAPS_AXES else (target[1], target[0])
        img.draft(None, want)
    try:
        img.load()
        if orientation != 1:
            ImageOps.exif_transpose(img, in_place=True)
        rgb = to_rgb(to_srgb(img))
    except Image.DecompressionBombError as exc:
        raise ImageError(Status.DECOMPRESSION_BOMB, str(exc)) from exc
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise ImageError(Status.DECODE_ERROR, f"cannot decode {fmt}: {exc}") from exc

    unchanged = target is None and orientation == 1 and rgb is img
    if target is not None:
        rgb = _apply_resize(rgb, target, config)
    if (
        config.skip_reencode
        and unchanged
        and ENCODE_FORMATS[config.encode_format] == fmt
        and rgb.size == (orig_w, orig_h)
    ):
        out = data
    else:
        out = encode(rgb, config.encode_format, config.encode_quality)
    return ProcessedImage(out, config.encode_format, rgb.width, rgb.height, orig_w, orig_h)


def _resize_target(w: int, h: int, config: ImageConfig) -> tuple[int, int] | None:
    """Size to scale to before any crop/pad, or None when the image keeps its size."""
    size = config.image_size
    mode = config.resize_mode
    if mode == "no":
        return None
    # keep_ratio/center_crop fit the smallest side; keep_ratio_largest/border the largest
    side = min(w, h) if mode in ("keep_ratio", "center_crop") else max(w, h)
    if config.resize_only_if_bigger and side <= size:
        return None
    if side == size:
        # already the right scale; center_crop/border still need their square
        return None if mode in ("keep_ratio", "keep_ratio_largest") or w == h else (w, h)
    scale = size / side
    return (max(1, round(w * scale)), max(1, round(h * scale)))


def _apply_resize(img: Image.Image, target: tuple[int, int], config: ImageConfig) -> Image.Image:
    if img.size != target:
        if img.width > target[0]:
            # Pillow's thumbnail recipe: box-reduce by an integer factor, then the filter over
            # the last <2x (the JPEG draft decode has usually done the integer part already).
            img = img.resize(target, DOWNSCALE_FILTERS[config.downscale_filter], reducing_gap=2.0)
        else:  # upscaling: Lanczos, as img2dataset
            img = img.resize(target, Image.Resampling.LANCZOS)
    size = config.image_size
    if config.resize_mode == "center_crop" and img.size != (size, size):
        left = (img.width - size) // 2
        top = (img.height - size) // 2
        img = img.crop((left, top, left + size, top + size))
    elif config.resize_mode == "border" and img.size != (size, size):
        canvas = Image.new("RGB", (size, size), _WHITE)
        canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
        img = canvas
    return img


def to_srgb(img: Image.Image) -> Image.Image:
    """Apply the embedded ICC profile (Display P3, Adobe RGB, a print CMYK, ...) into sRGB.

    Models are trained on sRGB pixels; a wide-gamut photo taken at face value looks washed out,
    and a CMYK one converted without its profile gets the wrong colours. Returns ``img`` itself
    when there is no profile, it already is sRGB, or it cannot be used.
    """
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "CMYK"):
        return img
    transform = _srgb_transform(bytes(icc), img.mode)
    if transform is None:
        return img
    return ImageCms.applyTransform(img, transform)


@lru_cache(maxsize=1)
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@lru_cache(maxsize=64)  # web images share a handful of profiles; building one costs ~1 ms
def _srgb_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        name = (ImageCms.getProfileDescription(source) or "").lower()
        if "srgb" in name or "61966-2" in name:
            return None  # already sRGB: no work, no rounding
        return ImageCms.buildTransform(
            source, _srgb_profile(), mode, "RGB", flags=ImageCms.Flags.NOCACHE
        )  # NOCACHE: lcms2's one-pixel cache is not thread-safe
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None  # a broken or exotic profile: keep the pixel values as they are


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB: alpha composited over white, palettes expanded, CMYK converted, 16-bit scaled.

    Returns ``img`` itself when it already is RGB without transparency.
    """
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode.startswith("I") or mode == "F":
        img = _high_depth_to_l(img)
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB", "1") and "transparency" in img.info
    ):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, _WHITE)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit integer or float grey to 8-bit grey, keeping the picture (not clipping to white)."""
    arr = np.asarray(img)
    if img.mode == "F":
        peak = float(np.nanmax(arr)) if arr.size else 1.0
        scale = 255.0 if peak <= 1.0 else 255.0 / max(peak, 1e-9)
        out = np.nan_to_num(arr * scale)
    else:
        out = arr.astype(np.float64) / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "L")


def encode(img: Image.Image, image_format: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if image_format == "jpg":
        img.save(buf, "JPEG", quality=quality)
    else:
        img.save(buf, "WEBP", quality=quality, method=4)
    return buf.getvalue()


__all__ = [
    "DECODABLE_FORMATS",
    "DOWNSCALE_FILTERS",
    "ENCODE_FORMATS",
    "RESIZE_MODES",
    "ImageConfig",
    "ImageError",
    "ProcessedImage",
    "describe_non_image",
    "encode",
    "process_image",
    "sniff_format",
    "to_rgb",
    "to_srgb",
]
