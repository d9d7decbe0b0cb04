"""A kept-alive connection the server closed while idle is our pool's problem, not a failure."""

from __future__ import annotations

import socket
import threading

from pipeline.download.http_fetch import FetchConfig, Fetcher
from schemas import Status

_OK = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 4\r\n\r\n\xff\xd8\xff\xd9"


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk


def _serve(server: socket.socket, plan: list[str], served: list[str]) -> None:
    """Per connection: 'keepalive-then-drop' answers one request, then closes on the next
    request without a response; 'drop' closes on the first request; 'ok' answers."""
    for mode in plan:
        conn, _ = server.accept()
        with conn:
            _read_request(conn)
            if mode == "drop":
                served.append("drop")
                continue
            conn.sendall(_OK)
            served.append("ok")
            if mode == "keepalive-then-drop":
                _read_request(conn)  # the reused connection: die without a byte
                served.append("drop")


def _fetcher() -> Fetcher:
    return Fetcher(
        FetchConfig(allow_private_networks=True, retries=0, connect_timeout=2, read_timeout=2)
    )


def _server(plan: list[str]) -> tuple[socket.socket, list[str], threading.Thread]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    served: list[str] = []
    thread = threading.Thread(target=_serve, args=(server, plan, served), daemon=True)
    thread.start()
    return server, served, thread


def test_dead_keepalive_connection_is_resent_on_a_fresh_one_without_an_attempt():
    server, served, thread = _server(["keepalive-then-drop", "ok"])
    url = f"http://127.0.0.1:{server.getsockname()[1]}/a.jpg"
    fetcher = _fetcher()
    try:
        first = fetcher.fetch(url)
        second = fetcher.fetch(url)  # reuses the kept-alive connection, which the server drops
        thread.join(5)
    finally:
        server.close()
    assert first.status is Status.OK and second.status is Status.OK, second.error
    assert second.attempts == 1
    assert served == ["ok", "drop", "ok"]


def test_server_that_drops_fresh_connections_still_fails():
    server, served, thread = _server(["drop", "drop", "drop"])
    url = f"http://127.0.0.1:{server.getsockname()[1]}/a.jpg"
    try:
        result = _fetcher().fetch(url)
    finally:
        server.close()
    assert result.status is Status.CONNECTION_ERROR
    assert "RemoteDisconnected" in (result.error or "")
    assert served.count("drop") == 2  # the first send and the one free resend, no more
