"""Download-stage benchmark: vecap end to end against img2dataset and a fixed Pillow ceiling.

One run, side by side, on the same real photographs served on loopback:

- **vecap** through its real CLI, ``vecap run --stages download`` (start-up included), with the
  default settings a newcomer gets and with the best local settings found (``BEST_ARGS``);
- **img2dataset 1.47** itself, installed by this script in its own venv
  (``~/.cache/vecap/img2dataset-venv``), on the same URLs with the same resize (336 keep_ratio,
  jpg, quality 95), 2 processes x 64 threads, parquet output like vecap's;
- a **fixed ceiling**: a plain Pillow loop (JPEG draft decode + 336 keep-ratio resize + JPEG
  encode at quality 95) over the same bytes, in the same number of processes, already started,
  no HTTP, no files written. It does not use vecap's code, so it does not move with it.

For each it prints images/s, CPU-ms per image (all its processes, from ``getrusage``) and the
peak RSS of its largest process (a "worker"). The loopback web server runs in its own process;
its CPU is reported apart.

The photographs: real photos shipped inside pip packages (scikit-image's data folder and
scikit-learn's sample images, taken from their wheels with ``pip download --no-deps``, plus
matplotlib's Grace Hopper portrait), cut into distinct JPEGs by random crops, scales (500-1000 px
on the long side), flips, colour/exposure changes, mild sensor grain and JPEG qualities; median
about 60 KB. Built once and cached under ``~/.cache/vecap/bench``.

Network: loopback only. Every child process (vecap, its Beam workers, img2dataset and its
processes) starts with the test tripwire (``tests/tripwire_site``) on PYTHONPATH, which refuses
and logs any non-loopback connect or name lookup; the run fails if anything was logged.

``VECAP_BENCH_IMAGES`` (default 6000) sets the corpus size; ``VECAP_BENCH_SKIP`` a comma list of
``img2dataset,vecap_best,ceiling`` to skip while iterating. The last line is one JSON object.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import multiprocessing as mp
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' network tripwire, for every child process
from tests.net_tripwire import child_env  # noqa: E402

CACHE = Path(os.environ.get("VECAP_BENCH_CACHE", Path.home() / ".cache" / "vecap"))
N_IMAGES = int(os.environ.get("VECAP_BENCH_IMAGES", "6000"))
SKIP = {s.strip() for s in os.environ.get("VECAP_BENCH_SKIP", "").split(",") if s.strip()}
PROCESSES = 2  # the machine's cores; img2dataset's processes and the ceiling's pool
I2D_THREADS = 64
I2D_VERSION = "1.47.0"
I2D_VENV = CACHE / "img2dataset-venv"
IMAGE_SIZE = 336
QUALITY = 95  # vecap's and img2dataset's default re-encode quality
# The best local settings found for vecap. The default run already runs one worker process per
# core (the local runner's default for a download-only job); what a flag can add is the faster
# bilinear downscale (~1 CPU-ms per photo less, a little softer on some photos).
BEST_ARGS: list[str] = ["--set", "download.downscale_filter=bilinear"]
CORPUS_VERSION = "photos-v1"
# Real photographs inside wheels: (package==version, member paths). Greyscale ones stay grey.
PHOTO_WHEELS = {
    "scikit-image==0.26.0": [
        "skimage/data/astronaut.png",
        "skimage/data/chelsea.png",
        "skimage/data/coffee.png",
        "skimage/data/motorcycle_left.png",
        "skimage/data/motorcycle_right.png",
        "skimage/data/rocket.jpg",
        "skimage/data/hubble_deep_field.jpg",
        "skimage/data/retina.jpg",
        "skimage/data/camera.png",
        "skimage/data/coins.png",
        "skimage/data/moon.png",
        "skimage/data/grass.png",
        "skimage/data/gravel.png",
        "skimage/data/brick.png",
    ],
    "scikit-learn==1.9.1": [
        "sklearn/datasets/images/china.jpg",
        "sklearn/datasets/images/flower.jpg",
    ],
}
ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3, 5 / 4)


# --------------------------------------------------------------------------- corpus


def _photo_bases(cache: Path) -> list[tuple[str, bytes]]:
    """(name, encoded bytes) of the real photographs: pip wheels' data plus matplotlib's."""
    import matplotlib.cbook

    wheels = cache / "bench" / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    out: list[tuple[str, bytes]] = []
    for spec, members in PHOTO_WHEELS.items():
        name = spec.split("==")[0].replace("-", "_")
        found = sorted(wheels.glob(f"{name}-{spec.split('==')[1]}-*.whl"))
        if not found:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                 "--only-binary=:all:", spec, "-d", str(wheels)],
                check=True,
            )  # fmt: skip
            found = sorted(wheels.glob(f"{name}-{spec.split('==')[1]}-*.whl"))
        with zipfile.ZipFile(found[0]) as z:
            out += [(m.rsplit("/", 1)[1], z.read(m)) for m in members]
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        out.append(("grace_hopper.jpg", f.read()))
    return out


_BASES: list[Image.Image] = []


def _init_corpus_worker(bases: list[tuple[str, bytes]]) -> None:
    global _BASES
    _BASES = []
    for _, data in bases:
        img = Image.open(io.BytesIO(data))
        _BASES.append(img.convert("L" if img.mode in ("L", "I", "I;16") else "RGB"))


def _make_photo(index: int) -> tuple[bytes, int, int]:
    """One distinct JPEG: crop, scale, flip, exposure/colour, grain and quality from the index."""
    rng = np.random.default_rng(1000 + index)
    # colour photos 6x as often as grey ones, as on the web
    weights = np.array([1.0 if b.mode == "RGB" else 0.17 for b in _BASES])
    base = _BASES[int(rng.choice(len(_BASES), p=weights / weights.sum()))]
    aspect = ASPECTS[int(rng.integers(0, len(ASPECTS)))]
    bw, bh = base.size
    frac = float(rng.uniform(0.55, 1.0))
    cw = min(bw, round(bh * aspect)) * frac
    ch = cw / aspect
    if ch > bh:
        ch, cw = bh * frac, bh * frac * aspect
    cw, ch = max(64, round(cw)), max(64, round(ch))
    x0, y0 = int(rng.integers(0, bw - cw + 1)), int(rng.integers(0, bh - ch + 1))
    long_side = int(rng.integers(500, 1001))
    w, h = (long_side, round(long_side / aspect)) if aspect >= 1 else (
        round(long_side * aspect), long_side)  # fmt: skip
    img = base.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.LANCZOS)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img = ImageEnhance.Brightness(img).enhance(float(rng.uniform(0.8, 1.2)))
    if img.mode == "RGB":
        img = ImageEnhance.Color(img).enhance(float(rng.uniform(0.7, 1.3)))
    arr = np.asarray(img, dtype=np.float32)
    sigma = float(rng.uniform(0.8, 4.0))  # sensor grain: upscaled crops are too smooth otherwise
    grain = rng.standard_normal(arr.shape[:2], dtype=np.float32)[..., None] if arr.ndim == 3 else (
        rng.standard_normal(arr.shape, dtype=np.float32))  # fmt: skip
    pic = Image.fromarray(np.clip(arr + sigma * grain, 0, 255).astype(np.uint8))
    quality = int(rng.integers(66, 91))
    buf = io.BytesIO()
    pic.save(buf, "JPEG", quality=quality, optimize=bool(rng.random() < 0.5))
    data = buf.getvalue()
    for _ in range(3):  # keep web-photo sizes: 15-250 KB
        if len(data) <= 250_000 and len(data) >= 15_000:
            break
        quality = max(40, quality - 15) if len(data) > 250_000 else min(97, quality + 6)
        buf = io.BytesIO()
        pic.save(buf, "JPEG", quality=quality)
        data = buf.getvalue()
    return data, w, h


def build_corpus(n: int) -> Path:
    """``n`` distinct photos in the cache (built once; a larger cached corpus is reused)."""
    root = CACHE / "bench" / CORPUS_VERSION
    stamp = root / "done.json"
    if stamp.exists() and json.loads(stamp.read_text())["count"] >= n:
        return root
    root.mkdir(parents=True, exist_ok=True)
    bases = _photo_bases(CACHE)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(
        PROCESSES, mp_context=mp.get_context("spawn"), initializer=_init_corpus_worker,
        initargs=(bases,),
    ) as pool:  # fmt: skip
        for i, (data, _, _) in enumerate(pool.map(_make_photo, range(n), chunksize=32)):
            (root / f"img-{i:05d}.jpg").write_bytes(data)
    stamp.write_text(json.dumps({"count": n, "bases": [name for name, _ in bases]}))
    print(f"corpus: built {n} photos in {time.perf_counter() - t0:.0f} s under {root}")
    return root


# --------------------------------------------------------------------------- loopback server


class _Http(asyncio.Protocol):
    """Minimal HTTP/1.1 keep-alive file server over in-memory bytes (GET only)."""

    files: dict[str, bytes] = {}

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = line.split(" ")
            path = parts[1].lstrip("/").split("?", 1)[0] if len(parts) > 1 else ""
            body = self.files.get(path)
            if body is None:
                body, status, ctype = b"not found", "404 Not Found", "text/plain"
            else:
                status, ctype = "200 OK", "image/jpeg"
            self.transport.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                f"Connection: keep-alive\r\n\r\n".encode("latin-1")
            )
            self.transport.write(body)


def _serve(root: str, port_queue) -> None:
    _Http.files = {p.name: p.read_bytes() for p in sorted(Path(root).glob("*.jpg"))}

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Http, "127.0.0.1", 0, backlog=1024)
        port_queue.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())


# --------------------------------------------------------------------------- measuring


class PeakRss:
    """Peak RSS of the largest process (a worker) and of the whole tree, sampled every 50 ms."""

    def __init__(self, root_pid: int, exclude: set[int]) -> None:
        self.root, self.exclude = root_pid, exclude
        self.worker = self.tree = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                root = psutil.Process(self.root)
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                continue
            total = 0
            for p in procs:
                if p.pid in self.exclude:
                    continue
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                self.worker = max(self.worker, rss)
            self.tree = max(self.tree, total)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_command(cmd: list[str], env: dict[str, str], log: Path, server_pid: int) -> dict:
    """Run a command to its end: wall seconds, CPU seconds of its process tree, peak RSS."""
    server = psutil.Process(server_pid)
    server_cpu = sum(server.cpu_times()[:2])
    cpu = _children_cpu()
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        with PeakRss(proc.pid, {server_pid}) as peak:
            rc = proc.wait()
    seconds = time.perf_counter() - start
    if rc != 0:
        raise RuntimeError(f"{cmd[0]} exited {rc}; see {log}:\n{log.read_text()[-3000:]}")
    return {
        "seconds": seconds,
        "cpu_seconds": _children_cpu() - cpu,  # waited-for descendants, workers included
        "server_cpu_seconds": sum(server.cpu_times()[:2]) - server_cpu,
        "peak_rss_mb": peak.worker / 2**20,
        "tree_peak_rss_mb": peak.tree / 2**20,
    }


def _summary(name: str, run: dict, ok: int, total: int) -> dict:
    run = dict(run)
    run.update(
        images=ok,
        rows=total,
        images_per_s=ok / run["seconds"],
        cpu_ms_per_image=1000 * run["cpu_seconds"] / max(ok, 1),
        server_cpu_ms_per_image=1000 * run["server_cpu_seconds"] / max(ok, 1),
    )
    print(
        f"{name:<34} {run['images_per_s']:7.1f} images/s  {run['cpu_ms_per_image']:5.2f} CPU-ms/image"
        f"  peak RSS/worker {run['peak_rss_mb']:5.0f} MB (all {run['tree_peak_rss_mb']:.0f} MB)"
        f"  {ok}/{total} ok in {run['seconds']:.1f} s (+{run['server_cpu_ms_per_image']:.2f} "
        "CPU-ms/image in the loopback server)",
        flush=True,
    )
    return run


# --------------------------------------------------------------------------- vecap


def run_vecap(
    name: str, table: Path, work: Path, extra: list[str], env: dict[str, str], server_pid: int
) -> dict:
    out = work / f"out-{name}"
    vecap = shutil.which("vecap", path=str(Path(sys.executable).parent)) or "vecap"
    cmd = [vecap, "run", "--input", str(table), "--output", str(out), "--stages", "download",
           "--allow-private-networks", *extra]  # fmt: skip
    run = timed_command(cmd, env, work / f"{name}.log", server_pid)
    counts: dict[str, int] = {}
    for stats in (out / "shards").glob("*.stats.json"):
        for status, n in json.loads(stats.read_text())["status_counts"].items():
            counts[status] = counts.get(status, 0) + n
    shutil.rmtree(out, ignore_errors=True)
    run["statuses"] = counts
    return _summary(f"vecap [{name}]", run, counts.get("ok", 0), sum(counts.values()))


# --------------------------------------------------------------------------- img2dataset


def img2dataset_bin() -> Path:
    exe = I2D_VENV / "bin" / "img2dataset"
    stamp = I2D_VENV / f".vecap-bench-{I2D_VERSION}"
    if not stamp.exists():
        print(f"installing img2dataset {I2D_VERSION} into {I2D_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(I2D_VENV)], check=True)
        subprocess.run(
            [str(I2D_VENV / "bin" / "pip"), "install", "-q", f"img2dataset=={I2D_VERSION}"],
            check=True,
        )
        stamp.touch()
    return exe


def run_img2dataset(table: Path, work: Path, env: dict[str, str], server_pid: int) -> dict:
    out = work / "out-img2dataset"
    cmd = [
        str(img2dataset_bin()), "--url_list", str(table), "--input_format", "csv",
        "--url_col", "url", "--caption_col", "caption", "--output_folder", str(out),
        "--output_format", "parquet", "--processes_count", str(PROCESSES),
        "--thread_count", str(I2D_THREADS), "--number_sample_per_shard", "1000",
        "--image_size", str(IMAGE_SIZE), "--resize_mode", "keep_ratio", "--encode_format", "jpg",
        "--encode_quality", str(QUALITY), "--timeout", "10", "--retries", "0",
        "--distributor", "multiprocessing", "--enable_wandb", "False",
    ]  # fmt: skip
    # albumentations (an img2dataset dependency) asks PyPI for a newer version on import
    env = {**env, "NO_ALBUMENTATIONS_UPDATE": "1"}
    run = timed_command(cmd, env, work / "img2dataset.log", server_pid)
    ok = total = 0
    for stats in out.glob("*_stats.json"):
        data = json.loads(stats.read_text())
        ok += data["successes"]
        total += data["count"]
    shutil.rmtree(out, ignore_errors=True)
    return _summary(f"img2dataset {I2D_VERSION} [{PROCESSES}x{I2D_THREADS}]", run, ok, total)


# --------------------------------------------------------------------------- fixed ceiling


def _ceiling_chunk(paths: list[str]) -> tuple[int, float, float, float, int]:
    """The fixed ceiling's loop: draft decode, 336 keep-ratio resize, JPEG encode (no vecap code).

    Bicubic after the draft decode, as Pillow's thumbnail() does: the output quality of vecap's
    default (a bilinear loop is ~25% faster and softer)."""
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    for path in paths:
        data = Path(path).read_bytes()  # from the page cache: ~20 us, not held in memory
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        scale = IMAGE_SIZE / min(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        img.draft("RGB", size)  # DCT-domain downscale by 1/2, 1/4 or 1/8, never below size
        if img.mode != "RGB":
            img = img.convert("RGB")
        img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
        out = io.BytesIO()
        img.save(out, "JPEG", quality=QUALITY)
    end = time.perf_counter()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    return len(paths), start, end, cpu, ru1.ru_maxrss


def ceiling(paths: list[Path]) -> dict:
    """The loop in PROCESSES already-started processes over an equal share of the bytes each."""
    chunks = [[str(p) for p in paths[i::PROCESSES]] for i in range(PROCESSES)]
    with ProcessPoolExecutor(PROCESSES, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(_ceiling_chunk, [c[:4] for c in chunks]))  # start and warm the workers
        results = list(pool.map(_ceiling_chunk, chunks))
    done = sum(r[0] for r in results)
    seconds = max(r[2] for r in results) - min(r[1] for r in results)
    cpu = sum(r[3] for r in results)
    return {
        "images": done,
        "seconds": seconds,
        "images_per_s": done / seconds,
        "cpu_ms_per_image": 1000 * cpu / done,
        "peak_rss_mb": max(r[4] for r in results) / 1024,
    }


# --------------------------------------------------------------------------- main


def main() -> None:
    corpus = build_corpus(N_IMAGES)
    paths = sorted(corpus.glob("img-*.jpg"))[:N_IMAGES]
    sizes = [p.stat().st_size for p in paths]
    dims = [Image.open(p).size for p in paths[:: max(1, len(paths) // 500)]]
    print(
        f"corpus: {len(paths)} distinct JPEGs from real photographs ({corpus}); bytes median "
        f"{statistics.median(sizes) / 1e3:.0f} KB (p10 {np.percentile(sizes, 10) / 1e3:.0f}, "
        f"p90 {np.percentile(sizes, 90) / 1e3:.0f}); long side median "
        f"{statistics.median(max(d) for d in dims):.0f} px ({min(max(d) for d in dims)}-"
        f"{max(max(d) for d in dims)})",
        flush=True,
    )
    i2d = None if "img2dataset" in SKIP else img2dataset_bin()  # install before timing anything

    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_serve, args=(str(corpus), ports), daemon=True)
    server.start()
    port = ports.get(timeout=120)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="vecap-bench-dl-") as tmp:
        work = Path(tmp)
        table = work / "urls.csv"
        with table.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["url", "caption"])
            for p in paths:
                writer.writerow([f"http://127.0.0.1:{port}/{p.name}", f"photo {p.stem}"])
        tripwire_log = work / "tripwire.log"
        env = child_env(tripwire_log)
        ceilings = []
        if "ceiling" not in SKIP:
            ceilings.append(ceiling(paths))
            print(
                f"{'ceiling [Pillow loop, ' + str(PROCESSES) + ' processes]':<34} "
                f"{ceilings[-1]['images_per_s']:7.1f} images/s  "
                f"{ceilings[-1]['cpu_ms_per_image']:5.2f} CPU-ms/image  "
                f"peak RSS/worker {ceilings[-1]['peak_rss_mb']:5.0f} MB",
                flush=True,
            )
        results["vecap_default"] = run_vecap("default", table, work, [], env, server.pid)
        if i2d is not None:
            results["img2dataset"] = run_img2dataset(table, work, env, server.pid)
        if "vecap_best" not in SKIP:
            results["vecap_best"] = run_vecap("best", table, work, BEST_ARGS, env, server.pid)
        if "ceiling" not in SKIP:
            ceilings.append(ceiling(paths))
            print(
                f"{'ceiling again':<34} {ceilings[-1]['images_per_s']:7.1f} images/s  "
                f"{ceilings[-1]['cpu_ms_per_image']:5.2f} CPU-ms/image",
                flush=True,
            )
        violations = tripwire_log.read_text() if tripwire_log.exists() else ""
    server.terminate()
    server.join(5)
    if violations:
        raise SystemExit(f"network tripwire: non-loopback traffic was attempted:\n{violations}")

    chosen = results["vecap_default"]
    i2d_rate = results["img2dataset"]["images_per_s"] if "img2dataset" in results else None
    ceiling_rate = statistics.mean(c["images_per_s"] for c in ceilings) if ceilings else None
    best = results.get("vecap_best", chosen)
    summary = {
        "images_per_s": round(chosen["images_per_s"], 1),
        "img2dataset_images_per_s": round(i2d_rate, 1) if i2d_rate else None,
        "ratio_vs_img2dataset": round(chosen["images_per_s"] / i2d_rate, 3) if i2d_rate else None,
        "ceiling_images_per_s": round(ceiling_rate, 1) if ceiling_rate else None,
        "ceiling_ratio": round(chosen["images_per_s"] / ceiling_rate, 3) if ceiling_rate else None,
        "cpu_ms_per_image": round(chosen["cpu_ms_per_image"], 2),
        # The same ratios by CPU time (load-independent): on a shared, oversubscribed machine
        # wall-clock shares follow thread counts more than efficiency.
        "cpu_ratio_vs_img2dataset": round(
            results["img2dataset"]["cpu_ms_per_image"] / chosen["cpu_ms_per_image"], 3
        )
        if i2d_rate
        else None,
        "ceiling_cpu_ratio": round(
            statistics.mean(c["cpu_ms_per_image"] for c in ceilings) / chosen["cpu_ms_per_image"],
            3,
        )
        if ceilings
        else None,
        "peak_rss_mb": round(chosen["peak_rss_mb"], 1),
        "best_images_per_s": round(best["images_per_s"], 1),
        "best_ratio_vs_img2dataset": round(best["images_per_s"] / i2d_rate, 3)
        if i2d_rate
        else None,
        "best_cpu_ms_per_image": round(best["cpu_ms_per_image"], 2),
        "best_peak_rss_mb": round(best["peak_rss_mb"], 1),
        "best_args": BEST_ARGS,
        "img2dataset_cpu_ms_per_image": round(results["img2dataset"]["cpu_ms_per_image"], 2)
        if i2d_rate
        else None,
        "img2dataset_peak_rss_mb": round(results["img2dataset"]["peak_rss_mb"], 1)
        if i2d_rate
        else None,
        "ceiling_cpu_ms_per_image": round(
            statistics.mean(c["cpu_ms_per_image"] for c in ceilings), 2
        )
        if ceilings
        else None,
        "ceiling_runs": [round(c["images_per_s"], 1) for c in ceilings],
        "success_rate": round(chosen["images"] / max(chosen["rows"], 1), 4),
        "images": len(paths),
        "median_bytes": int(statistics.median(sizes)),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "tripwire_violations": 0,
        "runs": {
            k: {kk: (round(vv, 3) if isinstance(vv, float) else vv) for kk, vv in v.items()}
            for k, v in results.items()
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
