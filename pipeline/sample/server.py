"""A loopback HTTP server that vecap starts itself: the demo's image host and the tests' web.

``SampleServer(root_dir=...)`` or ``SampleServer(files={"a.jpg": b"..."})`` serves files on
``127.0.0.1`` at a free port (HTTP/1.1, keep-alive, one thread per connection), and the fault
routes below, so every failure a crawler meets on the web can be met on loopback:

=====================================  ===============================================
``_fault/status/<code>[?retry_after=]``  that HTTP status (404, 500, 429, ...), tiny body
``_fault/flaky/<key>/<file>?fail=N``     fails N times (``code=``, default 503), then serves
``_fault/slow/<file>?secs=S``            the file, trickled over S seconds
``_fault/hang?secs=S``                   reads the request, never answers (until S or stop)
``_fault/reset``                         closes the connection without a response
``_fault/truncated/<file>``              full Content-Length, half the body, then close
``_fault/corrupt``                       JPEG magic + garbage, labelled image/jpeg
``_fault/garbage``                       random bytes labelled image/jpeg
``_fault/html``                          an HTML page with 200
``_fault/bomb``                          an 8000x8000 PNG, a few KB on the wire
``_fault/redirect/<file>[?code=]``       a redirect to ``/<file>``
``_fault/redirect-to?url=U``             a redirect to any URL (e.g. a private address)
``_fault/chain/<n>/<file>``              n redirects, then the file
``_fault/loop``, ``_fault/pingpong/a``   a redirect loop (self, and a -> b -> a)
``_fault/oversized?size=N[&lie=1]``      N bytes chunked; ``lie=1`` also claims
                                         ``Content-Length: 1000``; ``honest=1`` tells N
``_fault/robots/<file>?value=V``         the file with ``X-Robots-Tag: V`` (repeatable)
=====================================  ===============================================
"""

from __future__ import annotations

import csv
import mimetypes
import os
import random
import ssl
import struct
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urljoin, urlsplit

SAMPLE_DIR = Path(__file__).parent / "data"
SAMPLE_TABLE = SAMPLE_DIR / "sample.csv"


def make_png_bomb(width: int = 8_000, height: int = 8_000) -> bytes:
    """A real decompression bomb: a 1-bit PNG of ``width x height`` zeros, tiny once deflated."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    parts = [comp.compress(row * 500) for _ in range(height // 500)]
    parts.append(comp.compress(row * (height % 500)))
    parts.append(comp.flush())
    idat = b"".join(parts)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request, client_address) -> None:
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return  # clients hang up mid-request on purpose (caps, timeouts): not news
        super().handle_error(request, client_address)


class SampleServer:
    """Serve files and fault routes on loopback; use as a context manager (or start/stop)."""

    def __init__(
        self,
        root_dir: str | os.PathLike[str] | None = None,
        files: Mapping[str, bytes] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"the sample server binds to loopback only, not {host!r}")
        self._files: dict[str, bytes] = {}
        if root_dir is not None:
            root = Path(root_dir)
            if not root.is_dir():
                raise FileNotFoundError(f"sample server root {root} is not a directory")
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    self._files[path.relative_to(root).as_posix()] = path.read_bytes()
        self._files.update(files or {})
        self._host = host
        self._port = port
        self._ssl_context = ssl_context  # serve HTTPS (tests of TLS verification and pinning)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._flaky: Counter[str] = Counter()
        self._hits: Counter[str] = Counter()
        self._headers: deque[tuple[str, dict[str, str]]] = deque(maxlen=1000)
        self._connections = 0
        self._active: Counter[str] = Counter()
        self._peak_active: Counter[str] = Counter()
        self._bomb: bytes | None = None
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> SampleServer:
        handler = type("Handler", (_Handler,), {"sample": self})
        self._httpd = _Server((self._host, self._port), handler)
        if self._ssl_context is not None:
            self._httpd.socket = self._ssl_context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> SampleServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # addresses
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}/"

    def url(self, name: str) -> str:
        """Absolute URL of a served file or fault route (``name`` may carry a query)."""
        path, _, query = name.lstrip("/").partition("?")
        return self.base_url + quote(path) + (f"?{query}" if query else "")

    @property
    def names(self) -> list[str]:
        return sorted(self._files)

    def hits(self, path: str) -> int:
        """How many requests reached ``path`` (without query), e.g. to count retries."""
        with self._lock:
            return self._hits["/" + path.lstrip("/")]

    @property
    def total_hits(self) -> int:
        with self._lock:
            return sum(self._hits.values())

    @property
    def connections(self) -> int:
        """TCP connections accepted so far (shows whether clients reuse connections)."""
        with self._lock:
            return self._connections

    def peak_concurrency(self, path: str) -> int:
        """Most requests to ``path`` in progress at once so far (checks connection caps)."""
        with self._lock:
            return self._peak_active["/" + path.lstrip("/")]

    def request_headers(self, path: str) -> list[dict[str, str]]:
        """Headers of the recent requests to ``path`` (last 1000 requests are kept)."""
        want = "/" + path.lstrip("/")
        with self._lock:
            return [h for p, h in self._headers if p == want]

    # internals used by the handler
    def _count(self, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self._hits[path] += 1
            self._headers.append((path, headers))

    def _enter(self, path: str) -> None:
        with self._lock:
            self._active[path] += 1
            self._peak_active[path] = max(self._peak_active[path], self._active[path])

    def _leave(self, path: str) -> None:
        with self._lock:
            self._active[path] -= 1

    def _connected(self) -> None:
        with self._lock:
            self._connections += 1

    def _flaky_count(self, key: str) -> int:
        with self._lock:
            self._flaky[key] += 1
            return self._flaky[key]

    def _bomb_bytes(self) -> bytes:
        with self._lock:
            if self._bomb is None:
                self._bomb = make_png_bomb()
            return self._bomb


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients can reuse connections
    server_version = "vecap-sample/1"
    sample: SampleServer  # set on the per-server subclass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass  # quiet: tests and the demo print their own summaries

    def setup(self) -> None:
        super().setup()
        self.sample._connected()

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        # "//x" would parse as a host name; clients that join base_url + "/x" still mean "/x"
        parts = urlsplit("/" + self.path.lstrip("/"))
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        self.sample._count(path, {k.lower(): v for k, v in self.headers.items()})
        self.sample._enter(path)
        try:
            if path.startswith("/_fault/"):
                self._fault(path[len("/_fault/") :], query)
            else:
                self._serve_file(path.lstrip("/"))
        finally:
            self.sample._leave(path)

    # helpers
    def _send(self, code: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            for v in value if isinstance(value, list) else [value]:
                self.send_header(key, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _file(self, name: str) -> tuple[bytes, str] | None:
        data = self.sample._files.get(name)
        if data is None:
            return None
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return data, ctype

    def _serve_file(self, name: str, headers: dict | None = None) -> None:
        found = self._file(name)
        if found is None:
            self._send(404, b"not found\n", "text/plain", headers)
            return
        self._send(200, found[0], found[1], headers)

    def _redirect(self, location: str, code: int = 302) -> None:
        self._send(code, b"", "text/plain", {"Location": location})

    def _close_now(self) -> None:
        self.close_connection = True

    def _fault(self, route: str, query: dict[str, list[str]]) -> None:
        head, _, rest = route.partition("/")
        q = {k: v[-1] for k, v in query.items()}
        if head == "status":
            code = int(rest or q.get("code", "500"))
            headers = {"Retry-After": q["retry_after"]} if "retry_after" in q else None
            self._send(code, f"status {code}\n".encode(), "text/plain", headers)
        elif head == "flaky":
            key, _, name = rest.partition("/")
            if self.sample._flaky_count(key) <= int(q.get("fail", "1")):
                headers = {"Retry-After": q["retry_after"]} if "retry_after" in q else None
                self._send(int(q.get("code", "503")), b"try again\n", "text/plain", headers)
            else:
                self._serve_file(name)
        elif head == "slow":
            self._slow(rest, float(q.get("secs", "2")))
        elif head == "hang":
            self.sample._stop.wait(float(q.get("secs", "30")))
            self._close_now()
        elif head == "reset":
            self._close_now()
        elif head == "truncated":
            found = self._file(rest)
            data = found[0] if found else b"\xff\xd8\xff" + b"\x00" * 4000
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self._close_now()
        elif head == "corrupt":
            rng = random.Random(7)
            body = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + rng.randbytes(5000)
            self._send(200, body, "image/jpeg")
        elif head == "garbage":
            self._send(200, random.Random(8).randbytes(5000), "image/jpeg")
        elif head == "html":
            page = b"<!DOCTYPE html><html><head><title>Image</title></head><body>hi</body></html>"
            self._send(200, page, "text/html; charset=utf-8")
        elif head == "bomb":
            self._send(200, self.sample._bomb_bytes(), "image/png")
        elif head == "redirect":
            self._redirect("/" + quote(rest), int(q.get("code", "302")))
        elif head == "redirect-to":
            self._redirect(q["url"], int(q.get("code", "302")))
        elif head == "chain":
            n, _, name = rest.partition("/")
            hops = int(n)
            target = f"/_fault/chain/{hops - 1}/{name}" if hops > 1 else "/" + name
            self._redirect(quote(target))
        elif head == "loop":
            self._redirect("/_fault/loop")
        elif head == "pingpong":
            self._redirect("/_fault/pingpong/" + ("b" if rest == "a" else "a"))
        elif head == "oversized":
            self._oversized(int(q.get("size", "30000000")), q.get("lie") == "1", q)
        elif head == "robots":
            values = query.get("value", ["noai"])
            self._serve_file(rest, {"X-Robots-Tag": values})
        else:
            self._send(404, f"unknown fault route {route!r}\n".encode(), "text/plain")

    def _slow(self, name: str, secs: float) -> None:
        found = self._file(name)
        data, ctype = found if found else (b"\xff\xd8\xff" + b"\x00" * 2000, "image/jpeg")
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        pieces = 20
        step = max(1, len(data) // pieces)
        try:
            for start in range(0, len(data), step):
                if self.sample._stop.wait(secs / pieces):
                    break
                self.wfile.write(data[start : start + step])
                self.wfile.flush()
        except OSError:
            pass  # the client gave up, as it should
        self._close_now()

    def _oversized(self, size: int, lie: bool, q: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        if q.get("honest") == "1":
            self.send_header("Content-Length", str(size))
        else:
            self.send_header("Transfer-Encoding", "chunked")
            if lie:
                self.send_header("Content-Length", "1000")
        self.end_headers()
        block = b"\xff\xd8\xff\xe0" + b"\x00" * (64 * 1024 - 4)
        sent = 0
        try:
            while sent < size:
                piece = block[: min(len(block), size - sent)]
                if q.get("honest") == "1":
                    self.wfile.write(piece)
                else:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
            if q.get("honest") != "1":
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass  # the client stopped reading at its cap, as it should
        self._close_now()


def sample_input_table(base_url: str, dest_path: str | os.PathLike[str]) -> Path:
    """Write the bundled sample's ``url,caption`` table with absolute URLs under ``base_url``."""
    dest = Path(dest_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    base = base_url if base_url.endswith("/") else base_url + "/"
    with SAMPLE_TABLE.open(newline="", encoding="utf-8") as src:
        rows = list(csv.DictReader(src))
    with dest.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=["url", "caption"])
        writer.writeheader()
        for row in rows:
            url = urljoin(base, quote(row["url"], safe="/?=&:+%"))  # keep fault-route queries
            writer.writerow({"url": url, "caption": row["caption"]})
    return dest


def serve(root_dir: str | os.PathLike[str] = SAMPLE_DIR, port: int = 0) -> None:
    """Serve a directory until interrupted (used by ``vecap serve-sample`` and the benchmark)."""
    with SampleServer(root_dir=root_dir, port=port) as server:
        print(server.base_url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


__all__ = [
    "SAMPLE_DIR",
    "SAMPLE_TABLE",
    "SampleServer",
    "make_png_bomb",
    "sample_input_table",
    "serve",
]
