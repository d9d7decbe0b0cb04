"""Rebuild the bundled demo sample: ``python -m pipeline.sample.data.make_sample``.

Writes photo-like JPEGs (procedural scenes: skies, suns, hills, seas, cities at night, fruit on
a table, ...; plus crops of the public-domain Grace Hopper portrait that matplotlib ships) and
``sample.csv`` (``url,caption``) whose AltTexts read like real web alt text: some descriptive,
some terse, some junk ("IMG_0042"), which is what VeCLIP's fusion step is for. A few rows point
at failures (a missing file, an HTML page, an opted-out image) so the demo shows statuses.
Deterministic: same script, same bytes.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).parent
SIZE = (480, 360)


def _gradient(size: tuple[int, int], top: tuple, bottom: tuple) -> np.ndarray:
    w, h = size
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    return (np.array(top)[None, None, :] * (1 - t) + np.array(bottom)[None, None, :] * t).repeat(
        w, axis=1
    )


def _grain(arr: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    return arr + rng.normal(0.0, amount, arr.shape)


def _to_image(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _ridge(w: int, rng: np.random.Generator, base: float, amp: float) -> np.ndarray:
    x = np.arange(w)
    y = np.full(w, base, dtype=float)
    for k in range(1, 5):
        y += amp / k * np.sin(x * (0.004 + 0.006 * k * rng.random()) + rng.random() * math.tau)
    return y


def _fill_below(arr: np.ndarray, ridge: np.ndarray, color: tuple, rng, shade: float = 0.25):
    h = arr.shape[0]
    rows = np.arange(h)[:, None]
    mask = rows >= ridge[None, :]
    depth = np.clip((rows - ridge[None, :]) / h, 0, 1)[..., None]
    layer = np.array(color)[None, None, :] * (1 - shade * depth)
    layer = _grain(layer, rng, 6.0)
    arr[mask] = layer[mask]


def landscape(rng: np.random.Generator) -> Image.Image:
    w, h = SIZE
    arr = _gradient(SIZE, (70, 130, 200), (190, 220, 240))
    img = _to_image(arr)
    d = ImageDraw.Draw(img)
    sx, sy = rng.integers(60, w - 60), rng.integers(30, 110)
    for r, a in ((48, 60), (34, 120), (24, 255)):
        d.ellipse((sx - r, sy - r, sx + r, sy + r), fill=(255, 240, 180 + a // 4))
    arr = np.asarray(img, dtype=float)
    for base, color in (
        (h * 0.55, (90, 120, 150)),
        (h * 0.65, (60, 130, 60)),
        (h * 0.8, (80, 160, 60)),
    ):
        _fill_below(arr, _ridge(w, rng, base, 25), color, rng)
    return _to_image(_grain(arr, rng, 4.0)).filter(ImageFilter.GaussianBlur(0.8))


def sunset(rng: np.random.Generator) -> Image.Image:
    w, h = SIZE
    horizon = int(h * rng.uniform(0.55, 0.7))
    arr = _gradient(SIZE, (60, 40, 110), (250, 140, 60))
    sea = _gradient((w, h - horizon), (200, 110, 70), (30, 30, 70))
    arr[horizon:] = sea
    img = _to_image(_grain(arr, rng, 3.0))
    d = ImageDraw.Draw(img)
    sx, r = int(rng.integers(100, w - 100)), int(rng.integers(25, 45))
    d.ellipse((sx - r, horizon - r - 10, sx + r, horizon + r - 10), fill=(255, 210, 120))
    for y in range(horizon + 4, h, 6):  # the sun's broken reflection on the water
        half = int(r * (1 - (y - horizon) / (h - horizon)) * rng.uniform(0.6, 1.2))
        d.line((sx - half, y, sx + half, y), fill=(250, 180, 100), width=2)
    d.rectangle((0, horizon, w, horizon + 1), fill=(120, 60, 60))
    return img.filter(ImageFilter.GaussianBlur(1.0))


def night_city(rng: np.random.Generator) -> Image.Image:
    w, h = SIZE
    arr = _gradient(SIZE, (5, 8, 30), (40, 40, 80))
    for _ in range(150):  # stars
        x, y = rng.integers(0, w), rng.integers(0, h // 2)
        arr[y, x] = 200 + rng.integers(0, 55)
    img = _to_image(arr)
    d = ImageDraw.Draw(img)
    mx, my = rng.integers(50, w - 50), rng.integers(30, 90)
    d.ellipse((mx - 22, my - 22, mx + 22, my + 22), fill=(240, 240, 215))
    x = 0
    while x < w:
        bw, bh = int(rng.integers(30, 70)), int(rng.integers(80, 230))
        shade = int(rng.integers(15, 40))
        d.rectangle((x, h - bh, x + bw, h), fill=(shade, shade, shade + 10))
        for wy in range(h - bh + 8, h - 8, 12):
            for wx in range(x + 5, x + bw - 6, 10):
                if rng.random() < 0.45:
                    d.rectangle(
                        (wx, wy, wx + 4, wy + 6), fill=(255, 220, int(rng.integers(90, 160)))
                    )
        x += bw + int(rng.integers(0, 6))
    return _to_image(_grain(np.asarray(img, dtype=float), rng, 5.0))


def sea_boat(rng: np.random.Generator) -> Image.Image:
    w, h = SIZE
    horizon = int(h * 0.5)
    arr = _gradient(SIZE, (110, 170, 230), (220, 235, 245))
    yy = np.arange(h - horizon)[:, None]
    xx = np.arange(w)[None, :]
    waves = 12 * np.sin(xx * 0.05 + yy * 0.9 + rng.random() * 6)[..., None]
    sea = _gradient((w, h - horizon), (30, 90, 140), (10, 50, 90)) + waves
    arr[horizon:] = sea
    img = _to_image(_grain(arr, rng, 4.0))
    d = ImageDraw.Draw(img)
    bx, by = int(rng.integers(80, w - 140)), horizon + int(rng.integers(20, 60))
    d.polygon(
        [(bx, by), (bx + 110, by), (bx + 90, by + 22), (bx + 15, by + 22)], fill=(120, 40, 30)
    )
    d.polygon([(bx + 55, by - 90), (bx + 55, by - 4), (bx + 100, by - 4)], fill=(245, 245, 240))
    d.line((bx + 55, by - 95, bx + 55, by), fill=(60, 40, 30), width=3)
    return img.filter(ImageFilter.GaussianBlur(0.7))


def snowy_forest(rng: np.random.Generator) -> Image.Image:
    w, h = SIZE
    arr = _gradient(SIZE, (160, 170, 185), (215, 220, 228))
    _fill_below(arr, _ridge(w, rng, h * 0.7, 15), (245, 248, 252), rng, shade=0.1)
    img = _to_image(arr)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(8, 16))):
        tx, base = int(rng.integers(0, w)), int(h * rng.uniform(0.68, 0.95))
        th = int(rng.integers(60, 150))
        green = (20, int(rng.integers(60, 90)), 40)
        for k in range(4):
            top = base - th + k * th // 5
            half = (k + 1) * th // 9
            d.polygon(
                [(tx, top), (tx - half, top + th // 3), (tx + half, top + th // 3)], fill=green
            )
        d.rectangle((tx - 3, base - 10, tx + 3, base), fill=(70, 50, 30))
    return _to_image(_grain(np.asarray(img, dtype=float), rng, 5.0)).filter(
        ImageFilter.GaussianBlur(0.6)
    )


def desert(rng: np.random.Generator) -> Image.Image:
    w, h = SIZE
    arr = _gradient(SIZE, (90, 150, 220), (230, 210, 170))
    for base, color in (
        (h * 0.6, (210, 170, 110)),
        (h * 0.72, (225, 185, 120)),
        (h * 0.85, (200, 150, 90)),
    ):
        _fill_below(arr, _ridge(w, rng, base, 18), color, rng, shade=0.35)
    img = _to_image(_grain(arr, rng, 5.0))
    d = ImageDraw.Draw(img)
    cx, cy = int(rng.integers(60, w - 60)), int(h * 0.82)
    d.rounded_rectangle((cx - 8, cy - 80, cx + 8, cy), radius=8, fill=(50, 110, 50))
    d.rounded_rectangle((cx - 30, cy - 60, cx - 20, cy - 25), radius=5, fill=(50, 110, 50))
    d.rectangle((cx - 30, cy - 30, cx - 8, cy - 22), fill=(50, 110, 50))
    return img.filter(ImageFilter.GaussianBlur(0.6))


def fruit_bowl(rng: np.random.Generator) -> Image.Image:
    w, h = SIZE
    xx = np.arange(w)[None, :, None]
    wood = np.array((150, 100, 60))[None, None, :] * (
        0.85 + 0.15 * np.sin(xx * 0.07 + np.arange(h)[:, None, None] * 0.01)
    )
    arr = _grain(np.broadcast_to(wood, (h, w, 3)).copy(), rng, 7.0)
    img = _to_image(arr)
    d = ImageDraw.Draw(img)
    d.ellipse((60, 170, w - 60, 330), fill=(235, 235, 230))
    colors = [(200, 30, 30), (240, 150, 20), (230, 210, 40), (90, 160, 40), (120, 30, 90)]
    for _ in range(int(rng.integers(5, 9))):
        r = int(rng.integers(28, 45))
        fx, fy = int(rng.integers(120, w - 120)), int(rng.integers(190, 280))
        c = colors[int(rng.integers(0, len(colors)))]
        d.ellipse((fx - r, fy - r, fx + r, fy + r), fill=c)
        d.ellipse(
            (fx - r // 2, fy - r // 2, fx - r // 5, fy - r // 5),
            fill=tuple(min(255, v + 70) for v in c),
        )
    return img.filter(ImageFilter.GaussianBlur(1.1))


SCENES = {
    "landscape": (
        landscape,
        [
            "green hills under a blue sky",
            "Beautiful countryside view",
            "IMG_2041",
            "hills and sunshine, summer 2019",
        ],
    ),
    "sunset": (
        sunset,
        [
            "sunset over the sea",
            "Evening at the beach - free wallpaper",
            "DSC00417.JPG",
            "orange sky at dusk",
        ],
    ),
    "night-city": (
        night_city,
        [
            "city skyline at night",
            "Downtown lights",
            "night",
            "skyscrapers under a starry sky with the moon",
        ],
    ),
    "sea-boat": (
        sea_boat,
        ["sailing boat on the ocean", "Boat trip!!", "photo 3", "a small sailboat on blue water"],
    ),
    "snowy-forest": (
        snowy_forest,
        [
            "pine trees in the snow",
            "Winter wonderland",
            "IMG_0042",
            "snow covered forest on a grey day",
        ],
    ),
    "desert": (
        desert,
        ["cactus in the desert", "Arizona road trip", "dunes", "sand dunes under a clear sky"],
    ),
    "fruit-bowl": (
        fruit_bowl,
        [
            "bowl of fresh fruit on a wooden table",
            "Healthy breakfast ideas",
            "fruit",
            "apples and oranges",
        ],
    ),
}

GRACE_CAPTIONS = [
    "Grace Hopper portrait",
    "Rear Admiral Grace M. Hopper, 1984",
    "computer pioneer in uniform",
    "Official US Navy photo",
    "Grace Hopper",
    "portrait photograph of a woman in naval uniform",
]

FAILING_ROWS = [
    ("missing-photo.jpg", "a photo that is no longer online"),
    ("about.html", "click here for more pictures"),
    ("_fault/robots/landscape-00.jpg?value=noai", "a landscape whose host opted out of AI use"),
]


def grace_hopper_crops() -> list[Image.Image]:
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        src = Image.open(f).convert("RGB")
    w, h = src.size  # 512 x 600
    boxes = [
        (0, 0, w, h),
        (56, 40, 456, 440),
        (0, 100, w, 500),
        (100, 60, 420, 380),
        (30, 200, 510, 560),
        (150, 0, 450, 300),
    ]
    out = []
    for i, box in enumerate(boxes):
        img = src.crop(box)
        if i % 2:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img.thumbnail((480, 480))
        out.append(img)
    return out


def build(out_dir: Path = HERE) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for kind, (draw, captions) in SCENES.items():
        for i, caption in enumerate(captions):
            rng = np.random.default_rng([ord(c) for c in kind] + [i])
            name = f"{kind}-{i:02d}.jpg"
            draw(rng).save(out_dir / name, "JPEG", quality=85)
            rows.append((name, caption))
    for i, (img, caption) in enumerate(zip(grace_hopper_crops(), GRACE_CAPTIONS, strict=True)):
        name = f"grace-hopper-{i:02d}.jpg"
        img.save(out_dir / name, "JPEG", quality=85)
        rows.append((name, caption))
    (out_dir / "about.html").write_text(
        "<!DOCTYPE html><html><body><p>More pictures on our website!</p></body></html>\n"
    )
    with (out_dir / "sample.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["url", "caption"])
        writer.writerows(rows + FAILING_ROWS)
    return rows


if __name__ == "__main__":
    made = build()
    total = sum((HERE / name).stat().st_size for name, _ in made)
    print(f"wrote {len(made)} photos ({total / 1e6:.2f} MB) and sample.csv to {HERE}")
