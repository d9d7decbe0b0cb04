"""Fetch one URL's bytes the way a polite, careful crawler does.

One :class:`Fetcher` per worker, shared by its download threads (urllib3 pools are thread-safe):
connection reuse per (address, port, TLS name), connect + read timeouts and a total deadline per
URL, retries with exponential backoff only for failures that may pass (timeouts, resets, 408,
429, 5xx) honouring ``Retry-After`` up to a bound, bounded redirects with every hop re-vetted by
the address guard, a byte cap enforced while streaming, and ``X-Robots-Tag`` opt-outs.

Every outcome is a :class:`FetchResult` with a :class:`~schemas.status.Status`; nothing raises
for a bad URL or a bad server.
"""

from __future__ import annotations

import email.utils
import http.client
import random
import re
import socket
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import quote, urljoin, urlsplit

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    EmptyPoolError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from pipeline.download.address_guard import (
    AddressGuard,
    BlockedAddressError,
    ResolutionError,
    Resolver,
    parse_ip,
)
from schemas.status import Status

DEFAULT_OPT_OUT_DIRECTIVES: tuple[str, ...] = ("noai", "noimageai", "noindex", "noimageindex")
SUPPORTED_SCHEMES: frozenset[str] = frozenset({"http", "https"})
# Worth another try: the server or the path may recover. Other 4xx will not.
RETRYABLE_HTTP_STATUSES: frozenset[int] = frozenset({408, 429, 500, 502, 503, 504})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Failure kinds whose message tells how many attempts were made (the others never retry).
_RETRIED_KINDS = frozenset({Status.HTTP_ERROR, Status.TIMEOUT, Status.CONNECTION_ERROR})
_CHUNK = 64 * 1024
# Small error/redirect bodies are read off so the kept-alive connection can be reused.
_DRAIN_LIMIT = 64 * 1024
# X-Robots-Tag rules that take a value; "unavailable_after: date" is not a user-agent prefix.
_PARAM_DIRECTIVES = frozenset(
    {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}
)
_AGENT_PREFIX = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*:\s*(.*)$")
VECAP_VERSION = "0.1.0"


@dataclass(frozen=True)
class FetchConfig:
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 30.0  # deadline per URL, retries and redirects included
    retries: int = 2  # extra attempts after the first, for retryable failures only
    backoff_base: float = 0.5  # seconds; doubles each retry, with jitter
    backoff_max: float = 8.0
    max_retry_after: float = 10.0  # a longer Retry-After gives up instead of parking a thread
    max_redirects: int = 5
    max_bytes: int = 20_000_000
    user_agent_token: str = "vecapbot"
    user_agent: str | None = None  # full override; must still contain the token to be fair
    opt_out_directives: tuple[str, ...] = DEFAULT_OPT_OUT_DIRECTIVES
    allowed_schemes: tuple[str, ...] = ("http", "https")
    allow_private_networks: bool = False
    allowed_networks: tuple[str, ...] = ()  # CIDRs let through even if private
    resolver: Resolver | None = None  # None: the OS resolver; must pickle
    # Vetted answers are reused this long: a CDN host serves thousands of rows, and a lookup
    # blocks a thread. Safe against rebinding: what is reused is what was vetted. 0: off.
    dns_cache_seconds: float = 60.0
    verify_tls: bool = True
    ca_certs: str | None = None  # CA bundle file; None: the system's trust store
    pool_maxsize: int = 16  # kept-alive connections per host
    # Politeness cap on simultaneous connections to one host (0: no cap beyond the threads);
    # threads over the cap wait for a free connection, within the URL's deadline.
    max_connections_per_host: int = 0
    num_pools: int = 256  # hosts whose connections are kept

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "total_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("backoff_base", "backoff_max", "max_retry_after", "dns_cache_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.retries < 0 or self.max_redirects < 0:
            raise ValueError("retries and max_redirects must be >= 0")
        if self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {self.max_bytes}")
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", self.user_agent_token):
            raise ValueError(
                f"user_agent_token must be a bare product token, got {self.user_agent_token!r}"
            )
        if not self.allowed_schemes or not set(self.allowed_schemes) <= SUPPORTED_SCHEMES:
            raise ValueError(
                f"allowed_schemes must be a non-empty subset of {sorted(SUPPORTED_SCHEMES)}, "
                f"got {self.allowed_schemes!r}"
            )
        AddressGuard(allowed_networks=tuple(self.allowed_networks))  # validates the CIDRs
        if self.pool_maxsize < 1 or self.num_pools < 1:
            raise ValueError("pool_maxsize and num_pools must be >= 1")
        if self.max_connections_per_host < 0:
            raise ValueError(
                f"max_connections_per_host must be >= 0, got {self.max_connections_per_host}"
            )
        object.__setattr__(
            self, "opt_out_directives", tuple(d.strip().lower() for d in self.opt_out_directives)
        )

    def user_agent_string(self) -> str:
        if self.user_agent:
            return self.user_agent
        return (
            f"Mozilla/5.0 (compatible; {self.user_agent_token}/{VECAP_VERSION}; "
            f"+https://github.com/vecap/vecap; honours X-Robots-Tag noai)"
        )


@dataclass(frozen=True)
class FetchResult:
    status: Status
    error: str | None = None
    body: bytes | None = None
    http_status: int | None = None
    attempts: int = 0  # tries: 1 + retries made (redirect hops are not extra attempts)
    final_url: str | None = None
    content_type: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is Status.OK


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # IDNA-encoded name or bare IP
    port: int
    request_target: str  # path?query, percent-encoded
    host_header: str


class _Failure(Exception):
    def __init__(self, status: Status, message: str, *, retryable: bool = False,
                 http_status: int | None = None, retry_after: float | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.status = status
        self.message = message
        self.retryable = retryable
        self.http_status = http_status
        self.retry_after = retry_after
        self.note = ""  # why no retry was made, appended after the attempt count


@dataclass(frozen=True)
class _Redirect:
    location: str
    http_status: int


@dataclass(frozen=True)
class _Body:
    data: bytes
    http_status: int
    content_type: str | None


def parse_target(url: str, allowed_schemes: tuple[str, ...]) -> _Target:
    """Validate and normalise a URL; raises ``_Failure`` with invalid_url / unsupported_scheme."""
    text = (url or "").strip()
    if not text:
        raise _Failure(Status.INVALID_URL, "empty URL")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise _Failure(Status.INVALID_URL, f"malformed URL {text[:200]!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if not scheme:
        raise _Failure(Status.INVALID_URL, f"URL has no scheme: {text[:200]!r}")
    if scheme not in allowed_schemes:
        raise _Failure(
            Status.UNSUPPORTED_SCHEME,
            f"scheme {scheme!r} is not allowed (allowed: {', '.join(allowed_schemes)})",
        )
    raw_host = parts.hostname
    if not raw_host:
        raise _Failure(Status.INVALID_URL, f"URL has no host: {text[:200]!r}")
    ip = parse_ip(raw_host)
    if ip is not None:
        host = str(ip)
    else:
        try:
            host = raw_host.rstrip(".").encode("idna").decode("ascii").lower()
        except UnicodeError as exc:
            raise _Failure(Status.INVALID_URL, f"invalid host name {raw_host!r}: {exc}") from exc
        if not host or any(c in host for c in " /\\@"):
            raise _Failure(Status.INVALID_URL, f"invalid host name {raw_host!r}")
    default_port = 443 if scheme == "https" else 80
    port = port or default_port
    # Browsers send spaces and non-ASCII characters percent-encoded; so do we.
    safe = "/%:@!$&'()*+,;=-._~"
    path = quote(parts.path or "/", safe=safe)
    query = quote(parts.query, safe=safe + "?")
    request_target = path + (f"?{query}" if parts.query else "")
    host_text = f"[{host}]" if ip is not None and ip.version == 6 else host
    host_header = host_text if port == default_port else f"{host_text}:{port}"
    return _Target(scheme, host, port, request_target, host_header)


def robots_opt_out(header_values: list[str], token: str, directives: tuple[str, ...]) -> str | None:
    """The X-Robots-Tag rule that opts this image out for us, or ``None``.

    Handles several headers, comma lists, and the user-agent-scoped form
    (``vecapbot: noai`` applies to us, ``otherbot: noai`` does not; a scope runs until the next
    ``agent:`` prefix, as in ``googlebot: noindex, otherbot: nofollow``). ``none`` counts as
    ``noindex`` (it means noindex, nofollow).
    """
    token = token.lower()
    wanted = set(directives)
    for value in header_values:
        agent: str | None = None
        for raw in value.split(","):
            part = raw.strip()
            match = _AGENT_PREFIX.match(part)
            if match and match.group(1).lower() not in _PARAM_DIRECTIVES:
                agent, part = match.group(1).lower(), match.group(2).strip()
            rule = part.lower()
            if not rule or (agent is not None and agent != token):
                continue
            if rule in wanted or (rule == "none" and "noindex" in wanted):
                scope = f"{agent}: " if agent else ""
                return f"{scope}{rule}"
    return None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _reason(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return "Unknown Status"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class Fetcher:
    """Fetches URLs for one worker; thread-safe, holds the connection pools."""

    def __init__(self, config: FetchConfig) -> None:
        self.config = config
        self.guard = AddressGuard(
            config.allow_private_networks, config.resolver, tuple(config.allowed_networks)
        )
        self._headers = {
            "User-Agent": config.user_agent_string(),
            "Accept": "image/avif,image/webp,image/apng,image/*,*/*;q=0.8",
            "Accept-Encoding": "identity",
        }
        capped = config.max_connections_per_host > 0
        self._pools = urllib3.PoolManager(
            num_pools=config.num_pools,
            maxsize=config.max_connections_per_host if capped else config.pool_maxsize,
            block=capped,
            retries=False,
            cert_reqs="CERT_REQUIRED" if config.verify_tls else "CERT_NONE",
            ca_certs=config.ca_certs,
        )
        # host -> monotonic time before which the host asked us (Retry-After) not to come back;
        # shared by all threads, so one 429 spares the host the other threads' requests too.
        self._cooldown: dict[tuple[str, int], float] = {}
        self._cooldown_lock = threading.Lock()
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._dns_lock = threading.Lock()

    def close(self) -> None:
        self._pools.clear()

    def fetch(self, url: str) -> FetchResult:
        cfg = self.config
        deadline = time.monotonic() + cfg.total_timeout
        current = (url or "").strip()
        visited = {current}
        requested = False
        retries_used = redirects = 0
        last_http: int | None = None
        while True:
            target: _Target | None = None
            try:
                target = parse_target(current, cfg.allowed_schemes)
                try:
                    addresses = self._vetted_addresses(target)
                except BlockedAddressError as exc:
                    raise _Failure(Status.BLOCKED_ADDRESS, str(exc)) from exc
                except ResolutionError as exc:
                    raise _Failure(Status.CONNECTION_ERROR, str(exc)) from exc
                # IPv4 first (many worker fleets have no IPv6 route); each retry tries the next
                # vetted address, so one dead address of a multi-homed host is not fatal.
                addresses = sorted(addresses, key=lambda a: ":" in a)
                self._respect_cooldown(target, deadline)
                requested = True
                address = addresses[retries_used % len(addresses)]
                outcome = self._request(target, address, deadline)
            except _Failure as failure:
                attempts = retries_used + 1 if requested else 0
                last_http = failure.http_status or last_http
                if target is not None and failure.retry_after is not None:
                    self._start_cooldown(target, failure.retry_after)
                wait = self._retry_wait(failure, retries_used, deadline)
                if wait is None:
                    return self._failed(failure, attempts, last_http, current, url)
                time.sleep(wait)
                retries_used += 1
                continue
            attempts = retries_used + 1
            if isinstance(outcome, _Redirect):
                last_http = outcome.http_status
                nxt = urljoin(current, outcome.location)
                redirects += 1
                if nxt in visited:
                    return FetchResult(
                        Status.TOO_MANY_REDIRECTS,
                        f"redirect loop: {current} -> {nxt}",
                        http_status=last_http, attempts=attempts, final_url=current,
                    )  # fmt: skip
                if redirects > cfg.max_redirects:
                    return FetchResult(
                        Status.TOO_MANY_REDIRECTS,
                        f"more than {cfg.max_redirects} redirects (stopped at {current} -> {nxt})",
                        http_status=last_http, attempts=attempts, final_url=current,
                    )  # fmt: skip
                visited.add(nxt)
                current = nxt
                continue
            return FetchResult(
                Status.OK,
                None,
                body=outcome.data,
                http_status=outcome.http_status,
                attempts=attempts,
                final_url=current,
                content_type=outcome.content_type,
            )

    def _vetted_addresses(self, target: _Target) -> list[str]:
        ttl = self.config.dns_cache_seconds
        if ttl <= 0 or parse_ip(target.host) is not None:
            return self.guard.vetted_addresses(target.host, target.port)
        key = (target.host, target.port)
        now = time.monotonic()
        with self._dns_lock:
            hit = self._dns.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        addresses = self.guard.vetted_addresses(target.host, target.port)  # raises if refused
        with self._dns_lock:
            if len(self._dns) > 50_000:  # bound memory on a long crawl: start afresh
                self._dns.clear()
            self._dns[key] = (now + ttl, addresses)
        return addresses

    def _start_cooldown(self, target: _Target, seconds: float) -> None:
        key = (target.host, target.port)
        until = time.monotonic() + seconds
        with self._cooldown_lock:
            self._cooldown[key] = max(self._cooldown.get(key, 0.0), until)
            if len(self._cooldown) > 10_000:  # a long job meets many hosts: forget expired ones
                now = time.monotonic()
                self._cooldown = {k: t for k, t in self._cooldown.items() if t > now}

    def _respect_cooldown(self, target: _Target, deadline: float) -> None:
        """Wait out a host's Retry-After; give up on the row if it outlasts the deadline."""
        with self._cooldown_lock:
            until = self._cooldown.get((target.host, target.port), 0.0)
        wait = until - time.monotonic()
        if wait <= 0:
            return
        if time.monotonic() + wait >= deadline:
            raise _Failure(
                Status.HTTP_ERROR,
                f"not requested: {target.host} asked crawlers to come back in {wait:.0f} s "
                "(Retry-After), after this URL's deadline",
            )
        time.sleep(wait)

    def _retry_wait(self, failure: _Failure, retries_used: int, deadline: float) -> float | None:
        """Seconds to sleep before the next attempt, or None to give up now."""
        cfg = self.config
        if not failure.retryable or retries_used >= cfg.retries:
            return None
        if failure.retry_after is not None:
            if failure.retry_after > cfg.max_retry_after:
                failure.note = (
                    f" (Retry-After {failure.retry_after:g} s exceeds the "
                    f"{cfg.max_retry_after:g} s bound)"
                )
                return None
            wait = failure.retry_after
        else:
            backoff = min(cfg.backoff_max, cfg.backoff_base * (2**retries_used))
            # Jitter spreads the retries of many threads hitting one sick host.
            wait = backoff * random.uniform(0.5, 1.0)
        if time.monotonic() + wait >= deadline:
            failure.note = " (no time left for a retry before the deadline)"
            return None
        return wait

    @staticmethod
    def _failed(
        failure: _Failure, attempts: int, http_status: int | None, current: str, url: str
    ) -> FetchResult:
        message = failure.message
        if attempts and failure.status in _RETRIED_KINDS:
            message += f" after {_plural(attempts, 'attempt')}"
        message += failure.note
        if current != url and failure.status is not Status.BLOCKED_ADDRESS:
            message += f" (at {current})"
        elif current != url:
            message += f" (redirected to {current})"
        return FetchResult(
            failure.status, message, http_status=http_status, attempts=attempts, final_url=current
        )

    def _request(self, target: _Target, address: str, deadline: float) -> _Redirect | _Body:
        cfg = self.config
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Failure(Status.TIMEOUT, f"deadline of {cfg.total_timeout:g} s exceeded")
        pool_kwargs: dict[str, object] = {}
        if target.scheme == "https":
            # Pinned: connect to the vetted address, but verify TLS for the name in the URL.
            pool_kwargs = {"server_hostname": target.host, "assert_hostname": target.host}
        pool = self._pools.connection_from_host(
            address, target.port, target.scheme, pool_kwargs=pool_kwargs
        )
        headers = dict(self._headers)
        headers["Host"] = target.host_header
        timeout = urllib3.Timeout(
            connect=min(cfg.connect_timeout, remaining), read=min(cfg.read_timeout, remaining)
        )
        try:
            response = _urlopen_fresh_on_stale(
                pool,
                "GET",
                target.request_target,
                headers=headers,
                retries=False,
                redirect=False,
                preload_content=False,
                timeout=timeout,
                pool_timeout=remaining,
                assert_same_host=False,
            )
        except EmptyPoolError as exc:
            raise _Failure(
                Status.TIMEOUT,
                f"no free connection to {target.host} within {remaining:.3g} s "
                f"(max_connections_per_host={cfg.max_connections_per_host})",
            ) from exc
        except NewConnectionError as exc:
            raise _Failure(
                Status.CONNECTION_ERROR,
                f"cannot connect to {address}: {_root(exc)}",
                retryable=True,
            ) from exc
        except ConnectTimeoutError as exc:
            raise _Failure(
                Status.TIMEOUT, f"connect timed out after {timeout.connect_timeout:.3g} s",
                retryable=True,
            ) from exc  # fmt: skip
        except ReadTimeoutError as exc:
            raise _Failure(
                Status.TIMEOUT, f"no response within {timeout.read_timeout:.3g} s", retryable=True
            ) from exc
        except SSLError as exc:
            raise _Failure(Status.CONNECTION_ERROR, f"TLS error: {_root(exc)}") from exc
        except (ProtocolError, HTTPError, OSError) as exc:
            raise _Failure(
                Status.CONNECTION_ERROR, f"connection failed: {_root(exc)}", retryable=True
            ) from exc
        try:
            return self._read_response(response, deadline)
        finally:
            response.release_conn()

    def _read_response(
        self, response: urllib3.BaseHTTPResponse, deadline: float
    ) -> _Redirect | _Body:
        cfg = self.config
        code = response.status
        if code in _REDIRECT_STATUSES:
            location = response.headers.get("Location")
            _finish(response)
            if not location:
                raise _Failure(
                    Status.HTTP_ERROR, f"HTTP {code} {_reason(code)} without a Location header",
                    http_status=code,
                )  # fmt: skip
            return _Redirect(location, code)
        if not 200 <= code < 300:
            _finish(response)
            raise _Failure(
                Status.HTTP_ERROR,
                f"HTTP {code} {_reason(code)}",
                retryable=code in RETRYABLE_HTTP_STATUSES,
                http_status=code,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        opt_out = robots_opt_out(
            response.headers.getlist("X-Robots-Tag"), cfg.user_agent_token, cfg.opt_out_directives
        )
        if opt_out is not None:
            _discard(response)
            raise _Failure(Status.OPTED_OUT, f"X-Robots-Tag: {opt_out}", http_status=code)
        declared = response.headers.get("Content-Length", "")
        if declared.strip().isdigit() and int(declared) > cfg.max_bytes:
            _discard(response)
            raise _Failure(
                Status.TOO_LARGE,
                f"Content-Length {int(declared)} exceeds the {cfg.max_bytes}-byte cap",
                http_status=code,
            )
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                if time.monotonic() > deadline:
                    _discard(response)
                    raise _Failure(
                        Status.TIMEOUT,
                        f"deadline of {cfg.total_timeout:g} s exceeded while reading the body "
                        f"({size} bytes received)",
                        http_status=code,
                    )
                # read1: return what has arrived, so a trickling server meets the deadline check
                chunk = response.read1(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > cfg.max_bytes:  # never trust Content-Length
                    _discard(response)
                    raise _Failure(
                        Status.TOO_LARGE, f"body exceeded {cfg.max_bytes} bytes", http_status=code
                    )
                chunks.append(chunk)
        except ReadTimeoutError as exc:
            _discard(response)
            raise _Failure(
                Status.TIMEOUT,
                f"read timed out after {size} bytes of the body",
                retryable=True,
                http_status=code,
            ) from exc
        except (ProtocolError, HTTPError, OSError) as exc:
            _discard(response)
            raise _Failure(
                Status.CONNECTION_ERROR,
                f"body truncated after {size} bytes: {_root(exc)}",
                retryable=True,
                http_status=code,
            ) from exc
        return _Body(b"".join(chunks), code, response.headers.get("Content-Type"))


_STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def _urlopen_fresh_on_stale(pool: urllib3.HTTPConnectionPool, *args, **kwargs):
    """``pool.urlopen``, sent once more on a new connection if a kept-alive one was dead.

    A server may close an idle keep-alive connection just as we reuse it: the request then dies
    before any response byte. That is our pool's fault, not the server's, so it neither counts
    as an attempt nor waits for a backoff (browsers and urllib3's own Retry do the same). The
    failed connection is discarded by urllib3, so the second send opens a fresh one; a server
    that drops fresh connections too still fails, as a retryable connection error.
    """
    try:
        return pool.urlopen(*args, **kwargs)
    except ProtocolError as exc:
        if not isinstance(exc.__context__ or exc.__cause__, _STALE_CONNECTION_ERRORS) and not (
            exc.args and isinstance(exc.args[-1], _STALE_CONNECTION_ERRORS)
        ):
            raise
    return pool.urlopen(*args, **kwargs)


def _root(exc: BaseException) -> str:
    """The innermost cause's message: urllib3 wraps socket errors two or three deep."""
    seen = exc
    while True:
        nxt = seen.__cause__ or seen.__context__
        if nxt is None or nxt is seen:
            break
        seen = nxt
    if isinstance(seen, socket.timeout | TimeoutError):
        return "timed out"
    text = str(seen) or type(seen).__name__
    return text if seen is exc else f"{type(seen).__name__}: {text}"


def _finish(response: urllib3.BaseHTTPResponse) -> None:
    """Read off a small body so the connection can be reused; close the connection otherwise."""
    declared = response.headers.get("Content-Length", "")
    if declared.strip().isdigit() and int(declared) <= _DRAIN_LIMIT:
        response.drain_conn()  # swallows transfer errors itself: a broken drain costs the socket
        return
    _discard(response)


def _discard(response: urllib3.BaseHTTPResponse) -> None:
    """Close the connection: unread body bytes must not reach the next request on it."""
    response.close()


__all__ = [
    "DEFAULT_OPT_OUT_DIRECTIVES",
    "FetchConfig",
    "FetchResult",
    "Fetcher",
    "parse_retry_after",
    "parse_target",
    "robots_opt_out",
]
