"""Sniffing, guarding, decoding, orienting, converting, resizing and encoding images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.download.image_processing import (
    ImageConfig,
    ImageError,
    process_image,
    sniff_format,
)
from pipeline.sample.server import make_png_bomb
from schemas import Status


def _decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def _diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute pixel difference of two RGB images of the same size."""
    assert a.size == b.size
    return float(
        np.abs(np.asarray(a, dtype=float) - np.asarray(b.convert("RGB"), dtype=float)).mean()
    )


@pytest.mark.parametrize(
    "name,fmt",
    [
        ("photo.jpg", "JPEG"),
        ("photo.png", "PNG"),
        ("photo.webp", "WEBP"),
        ("palette.gif", "GIF"),
        ("cmyk.jpg", "JPEG"),
    ],
)
def test_sniff_real_images(fixture_images, name, fmt):
    assert sniff_format(fixture_images[name]) == fmt


@pytest.mark.parametrize(
    "data,fmt",
    [
        (b"BM" + b"\x00" * 40, "BMP"),
        (b"II*\x00" + b"\x00" * 10, "TIFF"),
        (b"\x00\x00\x00\x1cftypavif" + b"\x00" * 8, "AVIF"),
        (b"\x00\x00\x00\x18ftypheic" + b"\x00" * 8, "HEIF"),
        (b"<!DOCTYPE html><html>", None),
        (b"", None),
        (b"GIF", None),
    ],
)
def test_sniff_magic_bytes(data, fmt):
    assert sniff_format(data) == fmt


def test_keep_ratio_sets_smallest_side(fixture_images):
    out = process_image(fixture_images["photo.jpg"], ImageConfig(image_size=128))
    assert (out.width, out.height) == (128, 150)
    assert (out.original_width, out.original_height) == (256, 300)
    assert out.image_format == "jpg"
    assert _decode(out.data).size == (128, 150)


@pytest.mark.parametrize(
    "mode,size",
    [
        ("no", (256, 300)),
        ("keep_ratio", (128, 150)),
        ("keep_ratio_largest", (109, 128)),
        ("center_crop", (128, 128)),
        ("border", (128, 128)),
    ],
)
def test_resize_modes(fixture_images, mode, size):
    out = process_image(fixture_images["photo.jpg"], ImageConfig(image_size=128, resize_mode=mode))
    assert (out.width, out.height) == size
    assert _decode(out.data).size == size


def test_border_pads_with_white(fixture_images):
    out = process_image(
        fixture_images["wide.jpg"], ImageConfig(image_size=120, resize_mode="border")
    )
    img = _decode(out.data).convert("RGB")
    assert img.size == (120, 120)
    assert min(img.getpixel((60, 2))) > 245  # padding above the 120x40 picture
    assert min(img.getpixel((60, 117))) > 245


def test_center_crop_keeps_the_middle(fixture_images):
    out = process_image(
        fixture_images["wide.jpg"], ImageConfig(image_size=90, resize_mode="center_crop")
    )
    ref = Image.open(io.BytesIO(fixture_images["wide.jpg"])).convert("RGB").resize((270, 90))
    assert _diff(_decode(out.data), ref.crop((90, 0, 180, 90))) < 12


def test_resize_only_if_bigger(fixture_images):
    small = fixture_images["photo.jpg"]  # 256 x 300
    kept = process_image(small, ImageConfig(image_size=336, resize_only_if_bigger=True))
    assert (kept.width, kept.height) == (256, 300)
    grown = process_image(small, ImageConfig(image_size=336, resize_only_if_bigger=False))
    assert (grown.width, grown.height) == (336, 394)
    shrunk = process_image(small, ImageConfig(image_size=128, resize_only_if_bigger=True))
    assert (shrunk.width, shrunk.height) == (128, 150)


def test_jpeg_draft_downscale_matches_full_decode(fixture_images):
    """The reduced-scale JPEG decode must give the exact size and nearly the same pixels."""
    big = fixture_images["big.jpg"]  # 2048 x 2400
    out = process_image(big, ImageConfig(image_size=336))
    assert (out.width, out.height) == (336, 394)
    assert (out.original_width, out.original_height) == (2048, 2400)
    ref = Image.open(io.BytesIO(big)).convert("RGB").resize((336, 394), Image.Resampling.LANCZOS)
    assert _diff(_decode(out.data), ref) < 4


def _mse(a: Image.Image, b: Image.Image) -> float:
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


@pytest.mark.parametrize(("name", "size"), [("big.jpg", (336, 394)), ("photo.jpg", (200, 234))])
def test_default_downscale_is_at_least_as_faithful_as_img2datasets(fixture_images, name, size):
    """The quality bar: img2dataset's downscale (OpenCV INTER_AREA on the full decode, which is
    Pillow's BOX filter) re-encoded at the same quality. Our default (draft decode + bicubic)
    must stay at least as close to a full-decode Lanczos resize (bilinear would not, on big.jpg)."""
    data = fixture_images[name]
    full = Image.open(io.BytesIO(data)).convert("RGB")
    ref = full.resize(size, Image.Resampling.LANCZOS)
    ours = process_image(data, ImageConfig(image_size=min(size)))
    assert (ours.width, ours.height) == size
    buf = io.BytesIO()
    full.resize(size, Image.Resampling.BOX).save(buf, "JPEG", quality=95)
    assert _mse(_decode(ours.data), ref) <= _mse(_decode(buf.getvalue()), ref)


def test_downscale_filter_is_validated():
    with pytest.raises(ValueError, match="downscale_filter"):
        ImageConfig(downscale_filter="nearest")
    fast = ImageConfig(image_size=128, downscale_filter="bilinear")
    assert fast.downscale_filter == "bilinear"


def test_exif_orientation_is_applied(fixture_images):
    out = process_image(fixture_images["rotated.jpg"], ImageConfig(image_size=128))
    assert (out.original_width, out.original_height) == (256, 300)  # as displayed
    assert (out.width, out.height) == (128, 150)
    upright = process_image(fixture_images["photo.jpg"], ImageConfig(image_size=128))
    assert _diff(_decode(out.data), _decode(upright.data)) < 8
    assert _decode(out.data).getexif().get(0x0112) in (None, 1)


def test_exif_orientation_with_draft(fixture_images):
    rotated = Image.open(io.BytesIO(fixture_images["big.jpg"])).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    rotated.save(buf, "JPEG", quality=85, exif=exif)
    out = process_image(buf.getvalue(), ImageConfig(image_size=336))
    assert (out.original_width, out.original_height) == (2048, 2400)
    assert (out.width, out.height) == (336, 394)


def test_alpha_is_composited_over_white(fixture_images):
    out = process_image(fixture_images["photo.png"], ImageConfig(resize_mode="no"))
    img = _decode(out.data).convert("RGB")
    assert img.mode == "RGB"
    left = np.asarray(img)[:, :100].mean()
    right = np.asarray(img)[:, 160:].mean()
    assert left > 245 and right < 200  # transparent half white, opaque half the photo


def test_cmyk_is_converted(fixture_images):
    out = process_image(fixture_images["cmyk.jpg"], ImageConfig(resize_mode="no"))
    ref = _decode(fixture_images["photo.jpg"])
    assert _diff(_decode(out.data), ref) < 12


def test_16_bit_grey_keeps_its_tones(fixture_images):
    out = process_image(fixture_images["gray16.png"], ImageConfig(resize_mode="no"))
    arr = np.asarray(_decode(out.data).convert("L"), dtype=float)
    assert arr[:10].mean() < 20 and arr[-10:].mean() > 235  # a ramp, not clipped to white
    assert 100 < arr.mean() < 155


def test_palette_with_transparency(fixture_images):
    out = process_image(fixture_images["palette.gif"], ImageConfig(resize_mode="no"))
    assert _decode(out.data).mode == "RGB"


def test_webp_encoding(fixture_images):
    out = process_image(
        fixture_images["photo.jpg"],
        ImageConfig(image_size=64, encode_format="webp", encode_quality=80),
    )
    assert out.image_format == "webp"
    assert sniff_format(out.data) == "WEBP"
    assert _decode(out.data).size == (64, 75)


def test_skip_reencode_keeps_original_bytes(fixture_images):
    data = fixture_images["photo.jpg"]
    out = process_image(data, ImageConfig(resize_mode="no", skip_reencode=True))
    assert out.data == data
    again = process_image(data, ImageConfig(resize_mode="no", skip_reencode=False))
    assert again.data != data


def test_too_small(fixture_images):
    with pytest.raises(ImageError) as err:
        process_image(fixture_images["tiny.png"], ImageConfig(min_image_size=32))
    assert err.value.status is Status.TOO_SMALL
    assert "16x16" in err.value.message


def test_decompression_bomb_is_refused_from_the_header():
    bomb = make_png_bomb(8_000, 8_000)
    assert len(bomb) < 100_000
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError) as err:
        process_image(bomb, ImageConfig(max_image_pixels=40_000_000))
    assert err.value.status is Status.DECOMPRESSION_BOMB
    assert "8000x8000" in err.value.message
    assert before == Image.MAX_IMAGE_PIXELS  # the global is left alone


def test_pillow_global_bomb_limit_maps_to_status():
    with pytest.raises(ImageError) as err:
        process_image(make_png_bomb(20_000, 20_000), ImageConfig(max_image_pixels=10**12))
    assert err.value.status is Status.DECOMPRESSION_BOMB


@pytest.mark.parametrize(
    "data,status,fragment",
    [
        (b"<!DOCTYPE html><html><body>hi</body></html>", Status.NOT_AN_IMAGE, "HTML page"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", Status.NOT_AN_IMAGE, "SVG"),
        (b"", Status.NOT_AN_IMAGE, "empty body"),
        (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20, Status.DECODE_ERROR, "JPEG"),
        (
            b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64,
            Status.DECODE_ERROR,
            "HEIF images are not supported",
        ),
    ],
)
def test_bad_bytes(data, status, fragment):
    with pytest.raises(ImageError) as err:
        process_image(data, ImageConfig())
    assert err.value.status is status
    assert fragment in err.value.message


def test_truncated_jpeg_is_a_decode_error(fixture_images):
    data = fixture_images["photo.jpg"]
    with pytest.raises(ImageError) as err:
        process_image(data[: len(data) // 2], ImageConfig())
    assert err.value.status is Status.DECODE_ERROR


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"resize_mode": "stretch"}, "resize_mode"),
        ({"encode_format": "png"}, "encode_format"),
        ({"image_size": 0}, "image_size"),
        ({"encode_quality": 0}, "encode_quality"),
        ({"min_image_size": -1}, "min_image_size"),
        ({"max_image_pixels": 0}, "max_image_pixels"),
    ],
)
def test_config_validation(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        ImageConfig(**kwargs)


def _icc_profile(red, green, blue, name: bytes) -> bytes:
    """A minimal ICC v2 RGB matrix/TRC display profile (gamma 2.2) with the given primaries."""
    import struct

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x, y, z) -> bytes:
        return b"XYZ " + b"\0" * 4 + s15(x) + s15(y) + s15(z)

    text = name + b"\0"
    desc = b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text + b"\0" * (4 + 4 + 2 + 1 + 67)
    curve = b"curv" + b"\0" * 4 + struct.pack(">I", 1) + struct.pack(">H", 0x0233) + b"\0\0"
    d50 = (0.9642, 1.0, 0.8249)
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(*d50)),
        (b"rXYZ", xyz(*red)),
        (b"gXYZ", xyz(*green)),
        (b"bXYZ", xyz(*blue)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (
        struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
        + b"\0" * 12 + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + s15(d50[0]) + s15(d50[1])
        + s15(d50[2]) + b"\0" * 48
    )  # fmt: skip
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


SRGB_RED, SRGB_GREEN, SRGB_BLUE = (
    (0.4361, 0.2225, 0.0139),
    (0.3851, 0.7169, 0.0971),
    (0.1431, 0.0606, 0.7141),
)


def test_embedded_icc_profile_is_converted_to_srgb():
    # A profile whose first channel is the sRGB *blue* primary: pure "red" pixel values mean blue.
    swapped = _icc_profile(SRGB_BLUE, SRGB_GREEN, SRGB_RED, b"swapped primaries")
    img = Image.new("RGB", (64, 64), (255, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG", icc_profile=swapped)
    out = _decode(process_image(buf.getvalue(), ImageConfig(resize_mode="no")).data)
    r, g, b = out.getpixel((32, 32))
    assert b > 200 and r < 60, (r, g, b)


def test_srgb_and_broken_profiles_leave_pixels_alone(fixture_images):
    plain = _icc_profile(SRGB_RED, SRGB_GREEN, SRGB_BLUE, b"sRGB IEC61966-2.1")
    for profile in (plain, b"not a profile at all"):
        img = Image.new("RGB", (64, 64), (200, 30, 30))
        buf = io.BytesIO()
        img.save(buf, "PNG", icc_profile=profile)
        out = _decode(process_image(buf.getvalue(), ImageConfig(resize_mode="no")).data)
        r, g, b = out.getpixel((32, 32))
        assert abs(r - 200) < 6 and g < 40 and b < 40
