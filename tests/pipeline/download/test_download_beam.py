"""The download stage inside a Beam pipeline on the in-process FnApiRunner, from an input file."""

from __future__ import annotations

import csv
import dataclasses
import pickle
from collections import Counter

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that

from pipeline.download.address_guard import StaticResolver
from pipeline.download.stage import DownloadConfig, DownloadStage, _DownloadFn
from pipeline.io.readers import ReaderConfig, ReadInput
from pipeline.sample.server import SAMPLE_TABLE, sample_input_table
from schemas import Record, Status

ROUTES = [
    ("photo.jpg", Status.OK),
    ("photo.png", Status.OK),
    ("photo.webp", Status.OK),
    ("rotated.jpg", Status.OK),
    ("_fault/redirect/cmyk.jpg", Status.OK),
    ("_fault/flaky/beam/photo.jpg?fail=1", Status.OK),
    ("_fault/status/404", Status.HTTP_ERROR),
    ("_fault/status/500", Status.HTTP_ERROR),
    ("_fault/hang?secs=10", Status.TIMEOUT),
    ("_fault/truncated/photo.jpg", Status.CONNECTION_ERROR),
    ("_fault/corrupt", Status.DECODE_ERROR),
    ("_fault/html", Status.NOT_AN_IMAGE),
    ("_fault/bomb", Status.DECOMPRESSION_BOMB),
    ("tiny.png", Status.TOO_SMALL),
    ("_fault/loop", Status.TOO_MANY_REDIRECTS),
    ("_fault/oversized?size=5000000&lie=1", Status.TOO_LARGE),
    ("_fault/robots/photo.jpg?value=vecapbot:+noai", Status.OPTED_OUT),
]
EXTRA_URLS = [
    ("not a url", Status.INVALID_URL),
    ("ftp://example.com/a.jpg", Status.UNSUPPORTED_SCHEME),
    ("http://169.254.169.254/latest/meta-data/", Status.BLOCKED_ADDRESS),
    ("http://intranet.test/a.jpg", Status.BLOCKED_ADDRESS),
]


def _check(expected: dict[str, Status]):
    def check(records: list[Record]) -> None:
        assert len(records) == len(expected), f"{len(records)} rows out, {len(expected)} in"
        by_url = {r.url: r for r in records}
        assert len({r.uid for r in records}) == len(records)
        for url, status in expected.items():
            row = by_url[url]
            assert row.status == status, f"{url}: {row.status} ({row.error})"
            if status == Status.OK:
                assert row.jpg and row.width and row.sha256 and row.error is None
            else:
                assert row.error and row.jpg is None

    return check


def test_stage_in_a_beam_pipeline_from_an_input_file(tmp_path, http_server, fast_download_config):
    table = tmp_path / "urls.csv"
    expected: dict[str, Status] = {}
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["url", "caption"])
        for route, status in ROUTES:
            expected[http_server.url(route)] = status
        for url, status in EXTRA_URLS:
            expected[url] = status
        for i, url in enumerate(expected):
            writer.writerow([url, f"caption {i}"])
    config = dataclasses.replace(
        fast_download_config, resolver=StaticResolver({"intranet.test": ("10.9.8.7",)}), threads=4
    )
    reader = ReaderConfig(input=str(table), shard_size=8)  # several shards, several bundles
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        records = p | ReadInput(reader) | DownloadStage(config)
        assert_that(records, _check(expected))


def test_bundled_sample_through_beam(tmp_path, http_server, fast_download_config):
    table = sample_input_table(http_server.base_url, tmp_path / "sample.csv")
    with table.open() as f:
        rows = list(csv.DictReader(f))
    with SAMPLE_TABLE.open() as f:
        assert len(rows) == len(list(csv.DictReader(f))) >= 35
    assert all(r["url"].startswith(http_server.base_url) for r in rows)

    def tally(records: list[Record]) -> None:
        assert len(records) == len(rows)
        assert Counter(r.status for r in records) == Counter(
            {"ok": len(rows) - 3, "http_error": 1, "not_an_image": 1, "opted_out": 1}
        ), Counter(r.status for r in records)

    with BeamTestPipeline(runner=FnApiRunner()) as p:
        records = (
            p | ReadInput(ReaderConfig(input=str(table))) | DownloadStage(fast_download_config)
        )
        assert_that(records, tally)


def test_rows_stream_out_of_bundles_and_pass_through(http_server, fast_download_config):
    """Already-failed rows and rows with bytes go straight through; the rest come back once."""
    carried = Record(uid="c", shard_id=0, row_index=0, url="http://10.0.0.1/x", jpg=b"\xff\xd8\xff")
    failed = Record(uid="f", shard_id=0, row_index=1, url=None).fail(Status.INVALID_ROW, "no url")
    todo = [
        Record(uid=f"r{i}", shard_id=0, row_index=i + 2, url=http_server.url("photo.jpg"))
        for i in range(40)
    ]
    config = dataclasses.replace(fast_download_config, threads=3, max_in_flight=4)

    def check(records: list[Record]) -> None:
        by_uid = {r.uid: r for r in records}
        assert len(records) == 42 and len(by_uid) == 42
        assert by_uid["c"].jpg == b"\xff\xd8\xff" and by_uid["c"].status == "ok"
        assert by_uid["f"].status == "invalid_row"
        assert all(by_uid[f"r{i}"].status == "ok" for i in range(40))

    with BeamTestPipeline(runner=FnApiRunner()) as p:
        records = p | beam.Create([carried, failed, *todo]) | DownloadStage(config)
        assert_that(records, check)


def test_config_and_dofn_pickle():
    config = DownloadConfig(resolver=StaticResolver({"a.test": ("10.0.0.1",)}))
    assert pickle.loads(pickle.dumps(config)) == config
    fn = pickle.loads(pickle.dumps(_DownloadFn(config)))
    fn.setup()
    fn.teardown()


def test_dofn_emits_every_row_once_across_bundles(http_server, fast_download_config):
    """Driven by hand: rows submitted in one bundle come out by that bundle's end, once each,
    with the timestamp and window they came in with, even when they finish out of order."""
    from apache_beam.transforms.window import GlobalWindow, IntervalWindow
    from apache_beam.utils.windowed_value import WindowedValue

    config = dataclasses.replace(fast_download_config, threads=4, max_in_flight=3)
    fn = _DownloadFn(config)
    fn.setup()
    try:
        for bundle in range(2):
            fn.start_bundle()
            out = []
            urls = ["_fault/slow/photo.jpg?secs=0.3", "photo.png", "_fault/status/404", "wide.jpg"]
            for i, route in enumerate(urls):
                row = Record(
                    uid=f"{bundle}-{i}", shard_id=bundle, row_index=i, url=http_server.url(route)
                )
                window = GlobalWindow() if i % 2 else IntervalWindow(0, 10)
                out.extend(fn.process(row, timestamp=i, window=window))
            out.extend(fn.finish_bundle())
            assert all(isinstance(v, WindowedValue) for v in out)
            by_uid = {v.value.uid: v for v in out}
            assert sorted(by_uid) == [f"{bundle}-{i}" for i in range(4)] and len(out) == 4
            for i in range(4):
                assert by_uid[f"{bundle}-{i}"].timestamp == i
            assert by_uid[f"{bundle}-0"].windows == (IntervalWindow(0, 10),)
            assert by_uid[f"{bundle}-2"].value.status == Status.HTTP_ERROR
            assert fn._pending == {}
    finally:
        fn.teardown()
