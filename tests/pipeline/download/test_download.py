"""The download stage against every fault the loopback server can produce (no Beam here)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import time

import pytest
from PIL import Image

from pipeline.download.http_fetch import parse_retry_after, robots_opt_out
from pipeline.download.stage import DownloadConfig, Downloader
from schemas import Record, Status


def _row(url: str | None, index: int = 0) -> Record:
    return Record(uid=f"00000{index:07d}", shard_id=0, row_index=index, url=url, alt_text="alt")


@pytest.fixture
def download(fast_download_config):
    downloader = Downloader(fast_download_config)
    yield lambda url: downloader(_row(url))
    downloader.close()


@pytest.mark.parametrize(
    "name",
    [
        "photo.jpg",
        "photo.png",
        "photo.webp",
        "rotated.jpg",
        "cmyk.jpg",
        "gray16.png",
        "palette.gif",
        "big.jpg",
    ],
)
def test_images_download_and_normalise(http_server, download, fixture_images, name):
    row = download(http_server.url(name))
    assert row.status == Status.OK, row.error
    assert row.error is None
    assert row.http_status == 200 and row.download_attempts == 1
    assert row.sha256 == hashlib.sha256(fixture_images[name]).hexdigest()  # of the original bytes
    assert row.image_format == "jpg"
    img = Image.open(io.BytesIO(row.jpg))
    assert img.format == "JPEG" and img.mode == "RGB"
    assert img.size == (row.width, row.height)
    assert min(row.width, row.height) == 336  # keep_ratio default
    assert row.original_width and row.original_height
    assert row.uid == "000000000000" and row.alt_text == "alt"  # identity kept


def test_demo_sample_photos_download(http_server, download):
    row = download(http_server.url("grace-hopper-00.jpg"))
    assert row.status == Status.OK, row.error
    # base_url ends with "/"; a doubled slash still reaches the same file and fault routes
    assert download(http_server.base_url + "/grace-hopper-01.jpg").status == Status.OK
    row = download(http_server.base_url + "/_fault/status/404")
    assert row.http_status == 404


@pytest.mark.parametrize(
    "route,status,fragment,attempts",
    [
        ("_fault/status/404", Status.HTTP_ERROR, "HTTP 404 Not Found after 1 attempt", 1),
        ("_fault/status/403", Status.HTTP_ERROR, "HTTP 403 Forbidden after 1 attempt", 1),
        (
            "_fault/status/500",
            Status.HTTP_ERROR,
            "HTTP 500 Internal Server Error after 3 attempts",
            3,
        ),
        (
            "_fault/status/503",
            Status.HTTP_ERROR,
            "HTTP 503 Service Unavailable after 3 attempts",
            3,
        ),
        ("_fault/reset", Status.CONNECTION_ERROR, "connection failed", 3),
        ("_fault/truncated/photo.jpg", Status.CONNECTION_ERROR, "body truncated after", 3),
        ("_fault/corrupt", Status.DECODE_ERROR, "cannot decode JPEG", 1),
        ("_fault/garbage", Status.NOT_AN_IMAGE, "Content-Type image/jpeg", 1),
        ("_fault/html", Status.NOT_AN_IMAGE, "an HTML page", 1),
        ("_fault/bomb", Status.DECOMPRESSION_BOMB, "8000x8000 = 64000000 pixels", 1),
        ("tiny.png", Status.TOO_SMALL, "16x16 is smaller than the minimum side of 32 px", 1),
        ("_fault/loop", Status.TOO_MANY_REDIRECTS, "redirect loop", 1),
        ("_fault/pingpong/a", Status.TOO_MANY_REDIRECTS, "redirect loop", 1),
        ("_fault/chain/9/photo.jpg", Status.TOO_MANY_REDIRECTS, "more than 5 redirects", 1),
        ("_fault/oversized?size=5000000", Status.TOO_LARGE, "body exceeded 2000000 bytes", 1),
        ("_fault/oversized?size=5000000&lie=1", Status.TOO_LARGE, "body exceeded 2000000 bytes", 1),
        (
            "_fault/oversized?size=5000000&honest=1",
            Status.TOO_LARGE,
            "Content-Length 5000000 exceeds",
            1,
        ),
        ("_fault/robots/photo.jpg?value=noai", Status.OPTED_OUT, "X-Robots-Tag: noai", 1),
        ("_fault/robots/photo.jpg?value=noimageai", Status.OPTED_OUT, "noimageai", 1),
        ("_fault/robots/photo.jpg?value=noindex,+nofollow", Status.OPTED_OUT, "noindex", 1),
        ("_fault/robots/photo.jpg?value=none", Status.OPTED_OUT, "none", 1),
        ("_fault/robots/photo.jpg?value=vecapbot:+noai", Status.OPTED_OUT, "vecapbot: noai", 1),
        (
            "_fault/robots/photo.jpg?value=nofollow&value=noimageindex",
            Status.OPTED_OUT,
            "noimageindex",
            1,
        ),
    ],
)
def test_faults_end_in_the_right_status(http_server, download, route, status, fragment, attempts):
    row = download(http_server.url(route))
    assert row.status == status, row.error
    assert fragment in row.error
    assert row.download_attempts == attempts
    assert row.jpg is None and row.width is None
    assert row.uid == "000000000000"


def test_no_retry_for_404(http_server, download):
    before = http_server.hits("_fault/status/410")
    download(http_server.url("_fault/status/410"))
    assert http_server.hits("_fault/status/410") - before == 1


def test_opt_out_for_another_agent_does_not_apply(http_server, download):
    row = download(http_server.url("_fault/robots/photo.jpg?value=otherbot:+noai"))
    assert row.status == Status.OK, row.error
    row = download(http_server.url("_fault/robots/photo.jpg?value=nofollow"))
    assert row.status == Status.OK, row.error


def test_opt_out_directives_and_token_are_configurable(http_server, fast_download_config):
    lax = Downloader(dataclasses.replace(fast_download_config, opt_out_directives=("noimageai",)))
    assert lax(_row(http_server.url("_fault/robots/photo.jpg?value=noai"))).status == Status.OK
    mine = Downloader(dataclasses.replace(fast_download_config, user_agent_token="mybot"))
    row = mine(_row(http_server.url("_fault/robots/photo.jpg?value=mybot:+noai")))
    assert row.status == Status.OPTED_OUT
    row = mine(_row(http_server.url("_fault/robots/photo.jpg?value=vecapbot:+noai")))
    assert row.status == Status.OK


def test_user_agent_identifies_the_crawler(http_server, download):
    download(http_server.url("photo.webp"))
    agent = http_server.request_headers("photo.webp")[-1]["user-agent"]
    assert "vecapbot/" in agent and "compatible" in agent


def test_flaky_server_is_retried_until_it_works(http_server, download):
    row = download(http_server.url("_fault/flaky/fl1/photo.jpg?fail=2&code=503"))
    assert row.status == Status.OK, row.error
    assert row.download_attempts == 3
    assert http_server.hits("_fault/flaky/fl1/photo.jpg") == 3


def test_429_honours_retry_after(http_server, download):
    start = time.perf_counter()
    row = download(http_server.url("_fault/flaky/fl2/photo.jpg?fail=1&code=429&retry_after=1"))
    elapsed = time.perf_counter() - start
    assert row.status == Status.OK, row.error
    assert row.download_attempts == 2
    assert elapsed >= 0.95  # waited as told, not the 20 ms backoff


def test_retry_after_beyond_the_bound_gives_up_at_once(http_server, download):
    start = time.perf_counter()
    row = download(http_server.url("_fault/status/429?retry_after=3600"))
    assert time.perf_counter() - start < 5.0  # did not sleep an hour (nor the 2 s bound)
    assert row.status == Status.HTTP_ERROR
    assert row.http_status == 429 and row.download_attempts == 1
    assert "Retry-After 3600 s exceeds the 2 s bound" in row.error


def test_retry_after_holds_back_the_other_rows_for_that_host(http_server, fast_download_config):
    downloader = Downloader(dataclasses.replace(fast_download_config, retries=0))
    first = downloader(_row(http_server.url("_fault/status/429?retry_after=1")))
    assert first.status == Status.HTTP_ERROR and first.http_status == 429
    start = time.perf_counter()
    second = downloader(_row(http_server.url("photo.jpg")))
    assert second.status == Status.OK, second.error
    assert time.perf_counter() - start >= 0.9  # waited for the host's Retry-After


def test_long_retry_after_fails_the_other_rows_without_a_request(http_server, fast_download_config):
    downloader = Downloader(dataclasses.replace(fast_download_config, retries=0))
    downloader(_row(http_server.url("_fault/status/429?retry_after=3600")))
    before = http_server.hits("palette.gif")
    row = downloader(_row(http_server.url("palette.gif")))
    assert row.status == Status.HTTP_ERROR
    assert "asked crawlers to come back in 3600 s" in row.error
    assert row.download_attempts == 0
    assert http_server.hits("palette.gif") == before  # the host was left alone


def test_hang_times_out(http_server, download):
    start = time.perf_counter()
    row = download(http_server.url("_fault/hang?secs=10"))
    elapsed = time.perf_counter() - start
    assert row.status == Status.TIMEOUT
    assert "no response within" in row.error and "after" in row.error
    assert elapsed < 8.0  # the server hangs for 10 s


def test_slow_body_hits_the_total_deadline(http_server, fast_download_config):
    """A server that trickles bytes never trips the read timeout; the deadline still holds."""
    config = dataclasses.replace(fast_download_config, total_timeout=1.0)
    start = time.perf_counter()
    row = Downloader(config)(_row(http_server.url("_fault/slow/photo.jpg?secs=6")))
    elapsed = time.perf_counter() - start
    assert row.status == Status.TIMEOUT
    assert "deadline of 1 s exceeded while reading the body" in row.error
    assert elapsed < 4.0  # the server trickles for 6 s


def test_redirect_is_followed(http_server, download, fixture_images):
    row = download(http_server.url("_fault/redirect/photo.png?code=301"))
    assert row.status == Status.OK, row.error
    assert row.sha256 == hashlib.sha256(fixture_images["photo.png"]).hexdigest()
    row = download(http_server.url("_fault/chain/3/photo.jpg"))
    assert row.status == Status.OK, row.error
    assert row.download_attempts == 1  # redirect hops are not retries


@pytest.mark.parametrize(
    "url,status",
    [
        (None, Status.INVALID_URL),
        ("", Status.INVALID_URL),
        ("   ", Status.INVALID_URL),
        ("not a url", Status.INVALID_URL),
        ("http://", Status.INVALID_URL),
        ("http://[::1/x.jpg", Status.INVALID_URL),
        ("http://exa mple.com/x.jpg", Status.INVALID_URL),
        ("http://example.com:99999/x.jpg", Status.INVALID_URL),
        ("//example.com/x.jpg", Status.INVALID_URL),
        ("ftp://example.com/x.jpg", Status.UNSUPPORTED_SCHEME),
        ("file:///etc/passwd", Status.UNSUPPORTED_SCHEME),
        ("data:image/png;base64,iVBORw0KGgo=", Status.UNSUPPORTED_SCHEME),
        ("javascript:alert(1)", Status.UNSUPPORTED_SCHEME),
        ("gopher://example.com/", Status.UNSUPPORTED_SCHEME),
    ],
)
def test_bad_urls(download, url, status, network_violations):
    before = len(network_violations)
    row = download(url)
    assert row.status == status
    assert row.error
    assert row.download_attempts == 0
    assert len(network_violations) == before


def test_https_only_config(http_server, fast_download_config):
    config = dataclasses.replace(fast_download_config, allowed_schemes=("https",))
    row = Downloader(config)(_row(http_server.url("photo.jpg")))
    assert row.status == Status.UNSUPPORTED_SCHEME
    assert "allowed: https" in row.error


def test_non_ascii_and_spaces_in_path_are_encoded(http_server, download):
    before = http_server.hits("no such photo é.jpg")
    row = download(http_server.base_url + "no such photo é.jpg")
    assert row.status == Status.HTTP_ERROR and row.http_status == 404
    assert http_server.hits("no such photo é.jpg") == before + 1  # arrived, decoded intact


def test_rows_that_failed_earlier_or_carry_bytes_pass_through(download, fast_download_config):
    downloader = Downloader(fast_download_config)
    failed = _row("http://10.0.0.1/x.jpg").fail(Status.INVALID_ROW, "bad row")
    assert downloader(failed) is failed
    carried = _row("http://10.0.0.1/x.jpg").replace(jpg=b"\xff\xd8\xff", image_format="jpg")
    assert downloader(carried) is carried


def test_connections_are_reused(http_server, fast_download_config):
    downloader = Downloader(fast_download_config)
    before = http_server.connections
    for name in ["photo.jpg", "photo.png", "photo.webp", "wide.jpg", "cmyk.jpg"] * 2:
        assert downloader(_row(http_server.url(name))).status == Status.OK
    assert http_server.connections - before == 1


@pytest.mark.parametrize("cap,name", [(1, "photo.webp"), (0, "wide.jpg")])
def test_connections_per_host_cap(http_server, fast_download_config, cap, name):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    config = dataclasses.replace(
        fast_download_config, max_connections_per_host=cap, total_timeout=10.0
    )
    downloader = Downloader(config)
    url = http_server.url(f"_fault/slow/{name}?secs=0.6")
    start = threading.Barrier(3)

    def fetch(i: int) -> Record:
        start.wait()  # all three ask at once
        return downloader(_row(url, i))

    with ThreadPoolExecutor(3) as pool:
        rows = list(pool.map(fetch, range(3)))
    assert [r.status for r in rows] == [Status.OK] * 3, [r.error for r in rows]
    peak = http_server.peak_concurrency(f"_fault/slow/{name}")
    if cap:
        assert peak == 1
    else:
        assert peak >= 2  # uncapped requests overlap


def test_retry_moves_on_to_the_next_address(http_server, fast_download_config):
    """A host with a dead address (nothing listens on 127.0.0.2's port) and a live one."""
    from pipeline.download.address_guard import StaticResolver

    resolver = StaticResolver({"multi.test": ("127.0.0.2", "127.0.0.1")})
    config = dataclasses.replace(fast_download_config, resolver=resolver)
    # 127.0.0.2 is loopback too, but the server listens on 127.0.0.1 only
    row = Downloader(config)(_row(f"http://multi.test:{http_server.port}/photo.jpg"))
    assert row.status == Status.OK, row.error
    assert row.download_attempts >= 2  # the first try went to the dead address


def test_unexpected_bug_costs_one_row_not_the_job(fast_download_config, monkeypatch):
    downloader = Downloader(fast_download_config)
    monkeypatch.setattr(downloader.fetcher, "fetch", lambda url: 1 / 0)
    row = downloader(_row("http://127.0.0.1:9/x.jpg"))
    assert row.status == Status.INTERNAL_ERROR
    assert "ZeroDivisionError" in row.error


def test_robots_header_parsing():
    d = ("noai", "noimageai", "noindex", "noimageindex")
    assert robots_opt_out(["noai"], "vecapbot", d) == "noai"
    assert robots_opt_out(["NoAI"], "vecapbot", d) == "noai"
    assert robots_opt_out(["googlebot: noindex, vecapbot: noai"], "vecapbot", d) == "vecapbot: noai"
    assert robots_opt_out(["vecapbot: nofollow, otherbot: noai"], "vecapbot", d) is None
    assert robots_opt_out(["unavailable_after: 25 Jun 2010 15:00:00 PST"], "vecapbot", d) is None
    assert robots_opt_out(["unavailable_after: 25 Jun 2010, noai"], "vecapbot", d) == "noai"
    assert robots_opt_out([], "vecapbot", d) is None


def test_retry_after_parsing():
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"threads": 0}, "threads"),
        ({"read_timeout": 0}, "read_timeout"),
        ({"retries": -1}, "retries"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"user_agent_token": "vecap bot"}, "user_agent_token"),
        ({"allowed_schemes": ("ftp",)}, "allowed_schemes"),
        ({"allowed_networks": ("nope",)}, "allowed_networks"),
        ({"resize_mode": "squash"}, "resize_mode"),
    ],
)
def test_config_validation(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        DownloadConfig(**kwargs)
