"""Download-stage benchmark: the Beam pipeline against the CPU ceiling, side by side, one run.

Builds a loopback corpus of realistic JPEG photos (30-150 KB, varied sizes and aspect ratios,
derived from the bundled sample photos and matplotlib's Grace Hopper photograph, with sensor-like
grain), serves it from a loopback server in its own process, and measures:

- the CPU ceiling: ``process_image`` (decode + keep_ratio 336 + re-encode) over the same bytes
  in a pool of as many processes as the pipeline uses (threads inside, like the pipeline's
  worker), run before and after the pipelines;
- CPU seconds per image for both, which a shared, busy machine does not distort;
- the download stage in a Beam pipeline on the FnApiRunner (csv -> ReadInput -> DownloadStage),
  in-process (one SDK worker, threads) and with ``--direct_running_mode=multi_processing``.
  Its headline rate is the steady state: (large run's images - small run's) / (difference of
  their wall times), so the fixed start-up every run pays once (Beam, planning, pools) is not
  charged per image, just as the ceiling is timed on an already-started process pool. The
  end-to-end rate and ratio of the large run are reported beside it.

Loopback only. The last line is one JSON object.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.download.image_processing import ImageConfig, process_image  # noqa: E402
from pipeline.sample.server import SAMPLE_DIR, SampleServer  # noqa: E402

N_IMAGES = int(os.environ.get("VECAP_BENCH_IMAGES", "1200"))
N_SMALL = 150  # rows of the run that prices start-up (see main)
PROCESSES = 2
THREADS = 32  # download threads per worker (the DownloadConfig default)
# The mode the JSON headline reports: one SDK worker with a thread pool. Pillow releases the GIL
# while decoding, resizing and encoding, so threads use both cores without a second process's
# memory and start-up (the figures for multi_processing are printed beside it).
DEFAULT_MODE = "in_process"
IMAGE_CONFIG = ImageConfig(image_size=336, resize_mode="keep_ratio")
MIN_BYTES, MAX_BYTES = 30_000, 150_000
ASPECTS = (4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3)


# --------------------------------------------------------------------------- corpus


def _bases() -> list[np.ndarray]:
    import matplotlib.cbook

    paths = sorted(SAMPLE_DIR.glob("*.jpg"))
    bases = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        bases.append(np.asarray(Image.open(f).convert("RGB")))
    return bases


VARIANTS = 12  # photos derived from each master (crop, flip, quality), to build the corpus fast


def _encode(arr: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _make_master(index: int) -> tuple[np.ndarray, int]:
    """A photo of random size and aspect with sensor-like grain, calibrated to 30-150 KB."""
    rng = np.random.default_rng(index)
    base = Image.fromarray(_BASES[index % len(_BASES)])
    long_side = int(rng.integers(480, 1400))
    aspect = ASPECTS[int(rng.integers(0, len(ASPECTS)))]
    if aspect >= 1:
        w, h = long_side, round(long_side / aspect)
    else:
        w, h = round(long_side * aspect), long_side
    # random crop of the base at the target aspect, then scale to the target size
    bw, bh = base.size
    cw = min(bw, round(bh * w / h))
    ch = min(bh, round(cw * h / w))
    x0, y0 = int(rng.integers(0, bw - cw + 1)), int(rng.integers(0, bh - ch + 1))
    img = base.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32)
    nx, ny = int(rng.integers(0, _NOISE.shape[1] - w)), int(rng.integers(0, _NOISE.shape[0] - h))
    grain = _NOISE[ny : ny + h, nx : nx + w, None]  # luminance grain, like a sensor's
    sigma = float(rng.uniform(2.0, 7.0))
    quality = int(rng.integers(78, 93))
    for _ in range(6):  # steer into 30-150 KB like real web photos
        pic = np.clip(arr + sigma * grain, 0, 255).astype(np.uint8)
        size = len(_encode(pic, quality))
        if size < MIN_BYTES * 1.3:
            sigma *= 1.6
            quality = min(95, quality + 3)
        elif size > MAX_BYTES * 0.75:
            quality = max(50, quality - 12)
            sigma *= 0.7
        else:
            break
    return pic, quality


def _make_group(args: tuple[int, str, int]) -> list[int]:
    """One master and its variants; returns the variants' byte sizes."""
    master_index, out_dir, count = args
    pic, quality = _make_master(master_index)
    rng = np.random.default_rng(10_000 + master_index)
    h, w = pic.shape[:2]
    sizes = []
    for v in range(count):
        dx, dy = int(rng.integers(0, w // 12 + 1)), int(rng.integers(0, h // 12 + 1))
        x1, y1 = w - int(rng.integers(0, w // 12 + 1)), h - int(rng.integers(0, h // 12 + 1))
        variant = pic[dy:y1, dx:x1]
        if rng.random() < 0.5:
            variant = variant[:, ::-1]
        q = int(np.clip(quality + rng.integers(-4, 5), 50, 95))
        data = _encode(np.ascontiguousarray(variant), q)
        if not MIN_BYTES <= len(data) <= MAX_BYTES:  # a crop can tip it out of range
            q = min(97, q + 8) if len(data) < MIN_BYTES else max(40, q - 12)
            data = _encode(np.ascontiguousarray(variant), q)
        Path(out_dir, f"img-{master_index * count + v:05d}.jpg").write_bytes(data)
        sizes.append(len(data))
    return sizes


_BASES: list[np.ndarray] = []
_NOISE = np.zeros((1, 1), np.float32)


def _init_worker() -> None:
    global _BASES, _NOISE
    _BASES = _bases()
    _NOISE = np.random.default_rng(0).standard_normal((1500, 1500), dtype=np.float32)


def build_corpus(out_dir: Path, n: int) -> list[int]:
    groups = [(m, str(out_dir), VARIANTS) for m in range(-(-n // VARIANTS))]
    with ProcessPoolExecutor(PROCESSES, initializer=_init_worker) as pool:
        sizes = [size for group in pool.map(_make_group, groups) for size in group]
    for extra in sorted(out_dir.glob("*.jpg"))[n:]:  # trim to exactly n
        extra.unlink()
    return sizes[:n]


# --------------------------------------------------------------------------- ceiling


def _process_one(path: str) -> int:
    process_image(Path(path).read_bytes(), IMAGE_CONFIG)
    return 1


def _process_files(paths: list[str]) -> int:
    # As many threads per process as the pipeline's worker runs: on an idle machine this is the
    # same CPU-bound ceiling (Pillow releases the GIL), and on a shared one the ceiling gets the
    # same scheduler share as the pipeline instead of losing to its 32 threads.
    with ThreadPoolExecutor(max(1, THREADS // PROCESSES)) as pool:
        return sum(pool.map(_process_one, paths))


def ceiling(paths: list[Path], server_pid: int) -> dict:
    """Decode + resize + re-encode of the same bytes in PROCESSES processes: images/s, CPU."""
    chunks = [[str(p) for p in paths[i :: PROCESSES * 8]] for i in range(PROCESSES * 8)]
    with ProcessPoolExecutor(PROCESSES) as pool:
        list(pool.map(_process_files, [c[:2] for c in chunks[:PROCESSES]]))  # warm the workers
        with Monitor(exclude={server_pid}) as mon:
            start = time.perf_counter()
            done = sum(pool.map(_process_files, chunks))
            seconds = time.perf_counter() - start
    return {"images_per_s": done / seconds, "cpu_ms_per_image": 1000 * mon.cpu_seconds / done}


# --------------------------------------------------------------------------- pipeline


def _serve(root: str, port_queue) -> None:
    server = SampleServer(root_dir=root).start()
    port_queue.put(server.port)
    threading.Event().wait()


class Monitor:
    """Peak RSS and CPU seconds of this process and its children (minus ``exclude``).

    CPU seconds make a second, load-independent comparison: other jobs on a shared machine
    steal wall-clock time unevenly (a 32-thread pipeline gets more scheduler share than a
    2-process pool), but not CPU time.
    """

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.peak = 0
        self._cpu_start: dict[int, float] = {}
        self._cpu_last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _procs(self) -> list[psutil.Process]:
        me = psutil.Process()
        return [me] + [c for c in me.children(recursive=True) if c.pid not in self.exclude]

    def _sample(self, first: bool = False) -> None:
        rss = 0
        for proc in self._procs():
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    t = proc.cpu_times()
            except psutil.Error:
                continue
            cpu = t.user + t.system
            if first:
                self._cpu_start[proc.pid] = cpu
            self._cpu_start.setdefault(proc.pid, 0.0)
            self._cpu_last[proc.pid] = cpu
        self.peak = max(self.peak, rss)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    @property
    def cpu_seconds(self) -> float:
        return sum(self._cpu_last[p] - self._cpu_start[p] for p in self._cpu_last)

    def __enter__(self) -> Monitor:
        self._sample(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def run_pipeline(table: Path, beam_args: list[str], threads: int) -> dict:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from pipeline.download.stage import DownloadConfig, DownloadStage
    from pipeline.io.readers import ReaderConfig, ReadInput

    config = DownloadConfig(
        threads=threads,
        allowed_networks=("127.0.0.0/8",),
        image_size=IMAGE_CONFIG.image_size,
        resize_mode=IMAGE_CONFIG.resize_mode,
    )
    start = time.perf_counter()
    p = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions(beam_args))
    statuses = (
        p
        | ReadInput(ReaderConfig(input=str(table), shard_size=100))
        | DownloadStage(config)
        | beam.Map(lambda r: r.status)
        | beam.combiners.Count.PerElement()
    )
    out_dir = tempfile.mkdtemp(prefix="vecap-bench-out-")
    statuses | beam.Map(json.dumps) | beam.io.WriteToText(f"{out_dir}/statuses")
    p.run().wait_until_finish()
    wall = time.perf_counter() - start
    counts: dict[str, int] = {}
    for f in Path(out_dir).glob("statuses*"):
        for line in f.read_text().splitlines():
            status, n = json.loads(line)
            counts[status] = counts.get(status, 0) + n
    return {"seconds": wall, "counts": counts}


def _mean_run(runs: list[dict]) -> dict:
    """Mean of repeated runs of one mode (peak RSS: the max)."""
    out = dict(runs[-1])
    for key in (
        "images_per_s",
        "end_to_end_images_per_s",
        "steady_cpu_ms_per_image",
        "cpu_ms_per_image",
        "server_cpu_ms_per_image",
        "success_rate",
        "seconds",
    ):
        out[key] = statistics.mean(r[key] for r in runs)
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    out["repeats"] = len(runs)
    return out


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("apache_beam").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="vecap-bench-") as tmp:
        corpus = Path(tmp, "corpus")
        corpus.mkdir()
        t0 = time.perf_counter()
        sizes = build_corpus(corpus, N_IMAGES)
        paths = sorted(corpus.glob("*.jpg"))
        dims = [Image.open(p).size for p in paths[:200]]
        print(
            f"corpus: {len(paths)} JPEGs in {time.perf_counter() - t0:.1f} s; bytes "
            f"min {min(sizes) / 1e3:.0f} KB, median {statistics.median(sizes) / 1e3:.0f} KB, "
            f"max {max(sizes) / 1e3:.0f} KB; "
            f"sizes {min(d[0] for d in dims)}-{max(d[0] for d in dims)} px wide"
        )

        ctx = mp.get_context("spawn")
        ports = ctx.Queue()
        server = ctx.Process(target=_serve, args=(str(corpus), ports), daemon=True)
        server.start()
        port = ports.get(timeout=60)
        table = Path(tmp, "urls.csv")
        small_table = Path(tmp, "urls-small.csv")
        for dest, subset in ((table, paths), (small_table, paths[:N_SMALL])):
            with dest.open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["url", "caption"])
                for p in subset:
                    writer.writerow([f"http://127.0.0.1:{port}/{p.name}", p.stem])

        before = ceiling(paths, server.pid)
        print(
            f"ceiling (Pillow decode + resize + encode, {PROCESSES} processes): "
            f"{before['images_per_s']:.1f} images/s, {before['cpu_ms_per_image']:.1f} CPU-ms/image"
        )
        modes = {
            "in_process": [],
            "multi_processing": [
                f"--direct_num_workers={PROCESSES}",
                "--direct_running_mode=multi_processing",
                "--default_sdk_harness_log_level=WARNING",
            ],
        }
        # The headline mode runs twice, around the other, to even out the shared machine's noise.
        schedule = [DEFAULT_MODE] + [m for m in modes if m != DEFAULT_MODE] + [DEFAULT_MODE]
        measured: dict[str, list[dict]] = {}
        server_proc = psutil.Process(server.pid)
        for name in schedule:
            # the small run prices what every run pays once (Beam start-up, planning, the
            # worker's pools): the steady-state rate is the large run's extra images / seconds,
            # as the ceiling is timed on an already-started pool
            with Monitor(exclude={server.pid}) as mon_small:
                small = run_pipeline(small_table, modes[name], THREADS)
            server_cpu = sum(server_proc.cpu_times()[:2])
            with Monitor(exclude={server.pid}) as mon:
                result = run_pipeline(table, modes[name], THREADS)
            server_cpu = sum(server_proc.cpu_times()[:2]) - server_cpu
            ok = result["counts"].get("ok", 0)
            total = sum(result["counts"].values())
            extra_ok = ok - small["counts"].get("ok", 0)
            r = {
                "images_per_s": extra_ok / max(result["seconds"] - small["seconds"], 1e-9),
                "end_to_end_images_per_s": ok / result["seconds"],
                "steady_cpu_ms_per_image": 1000
                * (mon.cpu_seconds - mon_small.cpu_seconds)
                / max(extra_ok, 1),
                "cpu_ms_per_image": 1000 * mon.cpu_seconds / max(ok, 1),
                # the loopback web server shares the 2 cores (not counted in cpu_ms_per_image)
                "server_cpu_ms_per_image": 1000 * server_cpu / max(ok, 1),
                "success_rate": ok / max(total, 1),
                "rows": total,
                "seconds": result["seconds"],
                "peak_rss_mb": mon.peak / 2**20,
                "statuses": result["counts"],
            }
            measured.setdefault(name, []).append(r)
            print(
                f"pipeline [{name}, {THREADS} threads/worker]: {r['images_per_s']:.1f} images/s "
                f"steady state ({N_SMALL}-row run's start-up subtracted; end to end "
                f"{r['end_to_end_images_per_s']:.1f}: {total} rows in {r['seconds']:.1f} s), "
                f"{r['cpu_ms_per_image']:.1f} CPU-ms/image (+{r['server_cpu_ms_per_image']:.1f} in "
                f"the loopback server), success {r['success_rate']:.3f}, "
                f"peak RSS {r['peak_rss_mb']:.0f} MB, statuses {result['counts']}"
            )
        runs = {name: _mean_run(rs) for name, rs in measured.items()}
        after = ceiling(paths, server.pid)
        print(
            f"ceiling again: {after['images_per_s']:.1f} images/s, "
            f"{after['cpu_ms_per_image']:.1f} CPU-ms/image"
        )
        server.terminate()
        server.join(5)

    ceiling_rate = (before["images_per_s"] + after["images_per_s"]) / 2
    ceiling_cpu = (before["cpu_ms_per_image"] + after["cpu_ms_per_image"]) / 2
    for name, run in runs.items():
        run["ceiling_ratio"] = run["images_per_s"] / ceiling_rate
        run["end_to_end_ceiling_ratio"] = run["end_to_end_images_per_s"] / ceiling_rate
        run["cpu_efficiency"] = ceiling_cpu / run["steady_cpu_ms_per_image"]
        print(
            f"[{name}] ratio to ceiling: {run['ceiling_ratio']:.2f} by wall clock in steady "
            f"state ({run['end_to_end_ceiling_ratio']:.2f} end to end, start-up included), "
            f"{run['cpu_efficiency']:.2f} by CPU time (ceiling CPU-ms / pipeline CPU-ms per image)"
        )
    chosen = runs[DEFAULT_MODE]
    summary = {
        "images_per_s": round(chosen["images_per_s"], 1),
        "ceiling_images_per_s": round(ceiling_rate, 1),
        "ceiling_ratio": round(chosen["ceiling_ratio"], 3),
        "end_to_end_images_per_s": round(chosen["end_to_end_images_per_s"], 1),
        "end_to_end_ceiling_ratio": round(chosen["end_to_end_ceiling_ratio"], 3),
        "cpu_efficiency": round(chosen["cpu_efficiency"], 3),
        "success_rate": round(chosen["success_rate"], 4),
        "peak_rss_mb": round(chosen["peak_rss_mb"], 1),
        "mode": DEFAULT_MODE,
        "images": N_IMAGES,
        "processes": PROCESSES,
        "threads_per_worker": THREADS,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "ceiling_runs": [round(before["images_per_s"], 1), round(after["images_per_s"], 1)],
        "runs": {
            k: {kk: (round(vv, 3) if isinstance(vv, float) else vv) for kk, vv in v.items()}
            for k, v in runs.items()
        },
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
