"""The download stage: rows with a URL become records with re-encoded image bytes or a status.

``DownloadStage(config)`` is a Beam PTransform Record -> Record that keeps every row. Each worker
runs one thread pool and one set of connection pools (:class:`~pipeline.download.http_fetch.Fetcher`);
a bundle's rows stream through the pool (results are emitted as they complete, so one hanging
host never idles the other threads), and ``finish_bundle`` waits for the rest, so no row is
lost at a bundle boundary. Rows that are not ``ok`` or that already carry image bytes (inputs
that were img2dataset shards) pass through untouched.
"""

from __future__ import annotations

import hashlib
import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, fields
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.utils.windowed_value import WindowedValue

from pipeline.download.address_guard import Resolver
from pipeline.download.http_fetch import DEFAULT_OPT_OUT_DIRECTIVES, FetchConfig, Fetcher
from pipeline.download.image_processing import ImageConfig, ImageError, process_image
from schemas.record import Record
from schemas.status import Status

log = logging.getLogger(__name__)

_METRICS_NAMESPACE = "vecap.download"


@dataclass(frozen=True)
class DownloadConfig:
    """Everything the download stage does, in one flat, validated place (the CLI maps onto it)."""

    # concurrency
    threads: int = 32  # per worker process; downloads are I/O bound, decode releases the GIL
    max_in_flight: int | None = None  # rows queued per worker; None = 2 x threads
    # transfer
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 30.0
    retries: int = 2
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    max_retry_after: float = 10.0
    max_redirects: int = 5
    max_bytes: int = 20_000_000
    verify_tls: bool = True
    ca_certs: str | None = None  # CA bundle file; None: the system's trust store
    max_connections_per_host: int = 0  # politeness cap; 0 = up to `threads`
    # politeness and opt-out
    user_agent_token: str = "vecapbot"
    user_agent: str | None = None
    opt_out_directives: tuple[str, ...] = DEFAULT_OPT_OUT_DIRECTIVES
    # security
    allowed_schemes: tuple[str, ...] = ("http", "https")
    allow_private_networks: bool = False
    allowed_networks: tuple[str, ...] = ()  # CIDRs let through even when private
    resolver: Resolver | None = None  # injectable for tests; must pickle
    dns_cache_seconds: float = 60.0  # reuse vetted DNS answers this long (0: off)
    # image
    image_size: int = 336
    resize_mode: str = "keep_ratio"
    resize_only_if_bigger: bool = False
    min_image_size: int = 32
    max_image_pixels: int = 40_000_000
    encode_format: str = "jpg"
    encode_quality: int = 95
    skip_reencode: bool = False
    downscale_filter: str = "bicubic"  # bicubic | bilinear | lanczos (image_processing)
    # set by the dedup phases (pipeline.dedup) only: rows marked as another row's duplicate
    # pass through untouched, to take that row's result afterwards
    inherit_duplicates: bool = False

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {self.max_in_flight}")
        object.__setattr__(self, "opt_out_directives", tuple(self.opt_out_directives))
        object.__setattr__(self, "allowed_schemes", tuple(self.allowed_schemes))
        object.__setattr__(self, "allowed_networks", tuple(self.allowed_networks))
        self.fetch_config()  # the sub-configs validate their own fields
        self.image_config()

    def fetch_config(self) -> FetchConfig:
        names = {f.name for f in fields(FetchConfig)}
        kwargs: dict[str, Any] = {n: getattr(self, n) for n in names if hasattr(self, n)}
        # one kept-alive connection per thread to a busy host
        kwargs["pool_maxsize"] = max(1, self.threads)
        return FetchConfig(**kwargs)

    def image_config(self) -> ImageConfig:
        names = {f.name for f in fields(ImageConfig)}
        return ImageConfig(**{n: getattr(self, n) for n in names})

    @property
    def in_flight_limit(self) -> int:
        return self.max_in_flight or 2 * self.threads


def download_record(record: Record, fetcher: Fetcher, image_config: ImageConfig) -> Record:
    """Fetch and process one row; never raises for a bad URL, server or image."""
    if not record.ok or record.jpg is not None:
        return record
    result = fetcher.fetch(record.url or "")
    row = record.replace(http_status=result.http_status, download_attempts=result.attempts)
    if not result.ok or result.body is None:
        return row.fail(result.status, result.error or str(result.status))
    body = result.body
    row = row.replace(sha256=hashlib.sha256(body).hexdigest())
    try:
        image = process_image(body, image_config, result.content_type)
    except ImageError as exc:
        return row.fail(exc.status, exc.message)
    return row.replace(
        jpg=image.data,
        image_format=image.image_format,
        width=image.width,
        height=image.height,
        original_width=image.original_width,
        original_height=image.original_height,
        error=None,
    )


class Downloader:
    """``download_record`` with the worker's fetcher and image settings; never raises."""

    def __init__(self, config: DownloadConfig) -> None:
        self.config = config
        self.fetcher = Fetcher(config.fetch_config())
        self.image_config = config.image_config()

    def __call__(self, record: Record) -> Record:
        try:
            return download_record(record, self.fetcher, self.image_config)
        except Exception as exc:  # a bug must cost one row, not the bundle
            log.exception("download of %s (uid %s) failed unexpectedly", record.url, record.uid)
            return record.fail(Status.INTERNAL_ERROR, f"download: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        self.fetcher.close()


class _DownloadFn(beam.DoFn):
    """Streams a bundle's rows through a per-worker thread pool; emits rows as they complete."""

    def __init__(self, config: DownloadConfig) -> None:
        self._config = config
        self._downloader: Downloader | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: dict[Future[Record], tuple[Any, Any]] = {}
        self._seconds = Metrics.distribution(_METRICS_NAMESPACE, "row_ms")
        self._rows = Metrics.counter(_METRICS_NAMESPACE, "rows")

    def setup(self) -> None:
        self._downloader = Downloader(self._config)
        self._executor = ThreadPoolExecutor(
            max_workers=self._config.threads, thread_name_prefix="vecap-download"
        )

    def start_bundle(self) -> None:
        self._pending = {}

    def process(
        self, record: Record, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam
    ):
        if not record.ok or record.jpg is not None or self._inherits(record):
            yield record
            return
        assert self._executor is not None, "setup() was not called"
        future = self._executor.submit(self._timed, record)
        self._pending[future] = (timestamp, window)
        if len(self._pending) >= self._config.in_flight_limit:
            wait(self._pending, return_when=FIRST_COMPLETED)
        yield from self._completed()

    def finish_bundle(self):
        if self._pending:
            wait(self._pending)
        yield from self._completed()

    def teardown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._downloader is not None:
            self._downloader.close()

    def _inherits(self, record: Record) -> bool:
        """A repeated URL (dedup phases): its canonical row's fetch stands for it."""
        return self._config.inherit_duplicates and record.duplicate_kind == "url"

    def _timed(self, record: Record) -> Record:
        assert self._downloader is not None
        start = time.perf_counter()
        result = self._downloader(record)
        self._seconds.update(int((time.perf_counter() - start) * 1000))
        return result

    def _completed(self):
        done = [f for f in self._pending if f.done()]
        for future in done:
            timestamp, window = self._pending.pop(future)
            record = future.result()  # _timed never raises
            self._rows.inc()
            Metrics.counter(_METRICS_NAMESPACE, f"status_{record.status}").inc()
            # Rows finish out of order, so each carries the timestamp/window it came in with.
            yield WindowedValue(record, timestamp, (window,))


class DownloadStage(beam.PTransform):
    """PCollection[Record] -> PCollection[Record]: download, vet, decode, resize, re-encode."""

    def __init__(self, config: DownloadConfig | None = None, label: str | None = None) -> None:
        super().__init__(label)
        self.config = config or DownloadConfig()

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return records | "DownloadImages" >> beam.ParDo(_DownloadFn(self.config))


__all__ = ["DownloadConfig", "DownloadStage", "Downloader", "download_record"]
