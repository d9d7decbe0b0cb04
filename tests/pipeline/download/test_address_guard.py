"""The SSRF guard: every non-public address is refused before a packet is sent, even via DNS."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from pipeline.download.address_guard import (
    AddressGuard,
    BlockedAddressError,
    ResolutionError,
    StaticResolver,
    refusal_reason,
)
from pipeline.download.stage import DownloadConfig, Downloader
from schemas import Record, Status

REFUSED = [
    "127.0.0.1",
    "127.8.9.10",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # carrier-grade NAT
    "0.0.0.0",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "198.18.0.1",  # benchmarking
    "192.0.2.1",  # documentation
    "::",
    "::1",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "ff02::1",
    "2001:db8::1",
    "::ffff:10.0.0.1",  # IPv4-mapped
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2002:a00:1::",  # 6to4 of 10.0.0.1
    "::10.0.0.1",  # deprecated IPv4-compatible
]
PUBLIC = ["8.8.8.8", "93.184.216.34", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address):
    assert refusal_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert refusal_reason(ipaddress.ip_address(address)) is None


def test_reason_names_the_class_of_address():
    assert refusal_reason(ipaddress.ip_address("169.254.169.254")) == "is link-local"
    assert "embeds 10.0.0.1" in refusal_reason(ipaddress.ip_address("::ffff:10.0.0.1"))


def test_hostname_resolving_to_metadata_is_blocked_without_real_dns():
    guard = AddressGuard(resolver=StaticResolver({"metadata.test": ("169.254.169.254",)}))
    with pytest.raises(BlockedAddressError, match="metadata.test resolves to 169.254.169.254"):
        guard.vetted_addresses("metadata.test", 80)


def test_one_private_answer_among_public_ones_blocks_the_host():
    resolver = StaticResolver({"mixed.test": ("93.184.216.34", "10.0.0.1")})
    with pytest.raises(BlockedAddressError, match="10.0.0.1"):
        AddressGuard(resolver=resolver).vetted_addresses("mixed.test", 443)


def test_public_answer_is_returned_for_pinning():
    resolver = StaticResolver({"cdn.test": ("93.184.216.34",)})
    assert AddressGuard(resolver=resolver).vetted_addresses("cdn.test", 443) == ["93.184.216.34"]


def test_allow_private_networks_lets_everything_through():
    resolver = StaticResolver({"intranet.test": ("10.0.0.7",)})
    guard = AddressGuard(allow_private_networks=True, resolver=resolver)
    assert guard.vetted_addresses("intranet.test", 80) == ["10.0.0.7"]
    assert guard.vetted_addresses("127.0.0.1", 80) == ["127.0.0.1"]


def test_allowed_networks_open_only_the_listed_cidrs():
    guard = AddressGuard(allowed_networks=("127.0.0.0/8",))
    assert guard.vetted_addresses("127.0.0.1", 80) == ["127.0.0.1"]
    with pytest.raises(BlockedAddressError):
        guard.vetted_addresses("10.0.0.1", 80)
    with pytest.raises(BlockedAddressError):
        guard.vetted_addresses("::1", 80)  # an IPv4 network does not admit IPv6 loopback
    with pytest.raises(ValueError, match="allowed_networks"):
        AddressGuard(allowed_networks=("not-a-cidr",))


def test_unknown_name_is_a_resolution_error():
    with pytest.raises(ResolutionError):
        AddressGuard(resolver=StaticResolver({})).vetted_addresses("nowhere.test", 80)


def _row(url: str) -> Record:
    return Record(uid="0000000000001", shard_id=0, row_index=1, url=url, alt_text="x")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://10.0.0.1/image.jpg",
        "https://10.20.30.40:8443/image.jpg",
        "http://[::ffff:169.254.169.254]/x.jpg",
        "http://[fd00::1]/x.jpg",
    ],
)
def test_private_url_is_blocked_before_any_connection(url, network_violations):
    before = len(network_violations)
    row = Downloader(DownloadConfig())(_row(url))
    assert row.status == Status.BLOCKED_ADDRESS
    assert "refused to connect" in row.error and "--allow-private-networks" in row.error
    assert row.download_attempts == 0 and row.http_status is None and row.jpg is None
    assert len(network_violations) == before  # nothing reached the socket layer


def test_loopback_is_blocked_without_allow_private_networks(http_server):
    hits = http_server.total_hits
    row = Downloader(DownloadConfig())(_row(http_server.url("photo.jpg")))
    assert row.status == Status.BLOCKED_ADDRESS
    assert "127.0.0.1 is loopback" in row.error
    assert http_server.total_hits == hits  # the server never saw a request


def test_hostname_resolving_private_is_blocked_with_injected_resolver(network_violations):
    before = len(network_violations)
    config = DownloadConfig(resolver=StaticResolver({"images.example": ("10.0.0.1",)}))
    row = Downloader(config)(_row("http://images.example/cat.jpg"))
    assert row.status == Status.BLOCKED_ADDRESS
    assert "images.example resolves to 10.0.0.1" in row.error
    assert len(network_violations) == before


def test_connection_is_pinned_to_the_vetted_address(http_server, fast_download_config):
    """The name is resolved once, by the guard; the socket connects to that address.

    If urllib3 resolved ``photos.test`` itself, the test tripwire would fire on the lookup.
    The server still sees the original Host header (virtual hosting keeps working).
    """
    calls = []

    class CountingResolver(StaticResolver):
        def __call__(self, host, port):
            calls.append(host)
            return super().__call__(host, port)

    resolver = CountingResolver({"photos.test": ("127.0.0.1",)})
    config = dataclasses.replace(fast_download_config, resolver=resolver)
    url = f"http://photos.test:{http_server.port}/photo.jpg"
    row = Downloader(config)(_row(url))
    assert row.status == Status.OK, row.error
    assert calls == ["photos.test"]
    assert http_server.request_headers("photo.jpg")[-1]["host"] == f"photos.test:{http_server.port}"


def test_rebinding_after_the_check_cannot_redirect_the_connection(
    http_server, fast_download_config
):
    """A resolver that answers loopback (allowed) once and 10.0.0.1 afterwards: only the vetted
    first answer is ever connected to, and a second resolution never happens mid-request."""
    answers = iter([("127.0.0.1",), ("10.0.0.1",), ("10.0.0.1",)])

    class RebindingResolver(StaticResolver):
        def __call__(self, host, port):
            return list(next(answers))

    config = dataclasses.replace(
        fast_download_config, resolver=RebindingResolver(), dns_cache_seconds=0
    )
    downloader = Downloader(config)
    first = downloader(_row(f"http://rebind.test:{http_server.port}/photo.jpg"))
    assert first.status == Status.OK, first.error
    second = downloader(_row(f"http://rebind.test:{http_server.port}/photo.jpg"))
    assert second.status == Status.BLOCKED_ADDRESS  # the next lookup is vetted again


def test_redirect_to_a_private_address_is_blocked(
    http_server, fast_download_config, network_violations
):
    before = len(network_violations)
    target = "http://169.254.169.254/latest/meta-data/"
    row = Downloader(fast_download_config)(
        _row(http_server.url(f"_fault/redirect-to?url={target}"))
    )
    assert row.status == Status.BLOCKED_ADDRESS
    assert "redirected to http://169.254.169.254/latest/meta-data/" in row.error
    assert row.http_status == 302
    assert len(network_violations) == before


def test_redirect_to_a_name_resolving_private_is_blocked(http_server, fast_download_config):
    resolver = StaticResolver({"internal.test": ("10.1.1.1",)})
    config = dataclasses.replace(fast_download_config, resolver=resolver)
    row = Downloader(config)(_row(http_server.url("_fault/redirect-to?url=http://internal.test/a")))
    assert row.status == Status.BLOCKED_ADDRESS
    assert "internal.test resolves to 10.1.1.1" in row.error


def test_vetted_answers_are_cached_and_reused(http_server, fast_download_config):
    calls = []

    class CountingResolver(StaticResolver):
        def __call__(self, host, port):
            calls.append(host)
            return super().__call__(host, port)

    resolver = CountingResolver({"cdn.test": ("127.0.0.1",), "evil.test": ("10.0.0.1",)})
    downloader = Downloader(dataclasses.replace(fast_download_config, resolver=resolver))
    for name in ("photo.jpg", "photo.png", "photo.webp"):
        row = downloader(_row(f"http://cdn.test:{http_server.port}/{name}"))
        assert row.status == Status.OK, row.error
    assert calls == ["cdn.test"]
    for _ in range(2):  # a refusal is not cached as an answer: it is re-vetted every time
        assert downloader(_row("http://evil.test/x.jpg")).status == Status.BLOCKED_ADDRESS
    assert calls == ["cdn.test", "evil.test", "evil.test"]
