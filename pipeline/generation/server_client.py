"""Sending requests to a model's engine servers: many in flight, each answer to its own caller.

One event loop thread per process (:func:`loop`) carries every request of every model stage
in the process over aiohttp; callers on any thread get a ``concurrent.futures.Future`` per
request and never block each other (no lock around the engine: the server's scheduler batches
whatever is in flight). :class:`EnginePool` spreads a model's requests over its engines, the
least loaded first, with at most ``max_in_flight`` from this process in each engine.

Each request carries its own ``request_id`` and is answered on its own HTTP exchange, so an
answer can only reach the request it belongs to; the pool also checks that the id vLLM echoes
in the response is the one sent.

Failures:

- the server is gone or broken (connection refused or dropped, a 5xx, a time-out): the pool
  asks ``recover`` for the slot's server (the fleet restarts it if it is dead) and sends the
  request again, so rows in flight when an engine dies are neither lost nor failed. A healthy
  server that fails one request ``max_request_attempts`` times fails that row only;
- 400/413/422 (a prompt too long, an image the server rejects): that row fails, with the
  server's message;
- 401/403/404 (wrong key, wrong model name): :class:`EngineFatalError`, as every row would fail.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipeline.generation.fleet import Endpoint
from pipeline.generation.recovery import EngineFatalError

log = logging.getLogger(__name__)

_FATAL_STATUSES = (401, 403, 404)


class ServerRequestError(RuntimeError):
    """One request the server refused or kept failing: that row fails, the job goes on."""


class _LoopThread:
    """An asyncio loop on a daemon thread, recreated in a forked child."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="vecap-engine-client", daemon=True
        )
        self.thread.start()
        self.session: Any = None

    async def get_session(self) -> Any:
        import aiohttp

        if self.session is None:
            # no connection cap of aiohttp's own: the pool's per-engine limit is the cap
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=False),
                trust_env=False,  # loopback engines: never through an HTTP proxy
            )
        return self.session


_LOOP: _LoopThread | None = None
_LOOP_LOCK = threading.Lock()


def loop() -> _LoopThread:
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None or _LOOP.pid != os.getpid():
            _LOOP = _LoopThread()
            atexit.register(shutdown)  # close the session quietly at exit
        return _LOOP


@dataclass
class _EngineState:
    endpoint: Endpoint
    in_flight: int = 0
    # time-weighted in-flight, for EnginePool.stats()
    area: float = 0.0
    since: float = field(default_factory=time.monotonic)
    peak: int = 0
    sent: int = 0

    def change(self, delta: int) -> None:
        now = time.monotonic()
        self.area += self.in_flight * (now - self.since)
        self.since = now
        self.in_flight += delta
        self.peak = max(self.peak, self.in_flight)


class EnginePool:
    """The engines of one model, seen from this process (see the module doc)."""

    def __init__(
        self,
        endpoints: list[Endpoint],
        *,
        max_in_flight: int,
        recover: Callable[[Endpoint], Endpoint] | None = None,
        headers: dict[str, str] | None = None,
        request_timeout_s: float = 600.0,
        max_request_attempts: int = 3,
        name: str = "model",
    ) -> None:
        if not endpoints:
            raise ValueError("an engine pool needs at least one endpoint")
        self.name = name
        self.max_in_flight = max_in_flight
        self._recover = recover
        self._headers = dict(headers or {})
        self._timeout = request_timeout_s
        self._attempts = max_request_attempts
        self._engines = [_EngineState(e) for e in endpoints]
        self._started = time.monotonic()
        self._cond: asyncio.Condition | None = None
        # requests submitted and not yet answered, from every thread of this process
        self._outstanding = 0
        self._outstanding_lock = threading.Lock()
        self._reported: set[tuple[str, int]] = set()

    # ------------------------------------------------------------------ callers' side

    def submit(self, route: str, payload: dict[str, Any]) -> concurrent.futures.Future:
        """POST ``payload`` to ``route`` of the least loaded engine; the future holds the
        response's JSON (or the error). ``payload`` gets a fresh ``request_id``."""
        body = dict(payload)
        body.setdefault("request_id", f"vecap-{uuid.uuid4().hex}")
        with self._outstanding_lock:
            self._outstanding += 1
        future = asyncio.run_coroutine_threadsafe(self._request(route, body), loop().loop)
        future.add_done_callback(self._answered)
        return future

    def _answered(self, _future: concurrent.futures.Future) -> None:
        with self._outstanding_lock:
            self._outstanding -= 1

    @property
    def capacity(self) -> int:
        """Requests this process keeps in flight when every engine is full."""
        return self.max_in_flight * len(self._engines)

    def saturated(self) -> bool:
        """Every engine has its ``max_in_flight`` from this process and more wait: callers
        (threads of any stage instance) should stop preparing rows until answers come back."""
        return self._outstanding >= self.capacity + self.capacity // 4

    def stats(self) -> dict[str, Any]:
        """Per engine: requests sent, mean and peak in flight from this process."""
        out = {}
        now = time.monotonic()
        for e in self._engines:
            area = e.area + e.in_flight * (now - e.since)
            out[e.endpoint.slot] = {
                "sent": e.sent,
                "mean_in_flight": area / max(now - self._started, 1e-9),
                "peak_in_flight": e.peak,
                "generation": e.endpoint.generation,
            }
        return out

    @property
    def endpoints(self) -> list[Endpoint]:
        return [e.endpoint for e in self._engines]

    # ------------------------------------------------------------------ loop side

    async def _acquire(self) -> _EngineState:
        if self._cond is None:
            self._cond = asyncio.Condition()
        async with self._cond:
            while True:
                free = [e for e in self._engines if e.in_flight < self.max_in_flight]
                if free:
                    engine = min(free, key=lambda e: e.in_flight)
                    engine.change(+1)
                    engine.sent += 1
                    return engine
                await self._cond.wait()

    async def _release(self, engine: _EngineState) -> None:
        assert self._cond is not None
        async with self._cond:
            engine.change(-1)
            self._cond.notify()

    async def _request(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        import aiohttp

        session = await loop().get_session()
        request_failures = 0
        while True:
            engine = await self._acquire()
            endpoint = engine.endpoint
            problem: str
            try:
                async with session.post(
                    endpoint.base_url + route,
                    json=body,
                    headers=self._headers,
                    timeout=aiohttp.ClientTimeout(total=self._timeout),
                ) as response:
                    if response.status == 200:
                        data = await response.json()
                        _check_id(data, body["request_id"])
                        return data
                    text = (await response.text())[:500]
                    if response.status in _FATAL_STATUSES:
                        raise EngineFatalError(
                            f"{self.name}: the server at {endpoint.base_url} answered "
                            f"{response.status} ({text}); check the model name and API key"
                        )
                    if response.status < 500:
                        raise ServerRequestError(f"server answered {response.status}: {text}")
                    problem = f"server answered {response.status}: {text}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            finally:
                await self._release(engine)
            # the engine may be gone: get a live one for its slot, then send again
            replacement = await self._replace(endpoint, problem)
            if replacement.generation == endpoint.generation:
                request_failures += 1  # the same server, alive: the request itself fails
                if request_failures >= self._attempts:
                    raise ServerRequestError(
                        f"request failed {request_failures} times on a healthy server: {problem}"
                    )

    async def _replace(self, failed: Endpoint, problem: str) -> Endpoint:
        if self._recover is None:  # a server vecap does not own: wait, then try it again
            await asyncio.sleep(1.0)
            return failed
        if (failed.slot, failed.generation) not in self._reported:  # once per incarnation
            self._reported.add((failed.slot, failed.generation))
            log.warning("%s: engine %s failed (%s)", self.name, failed.slot, problem[:200])
        try:
            replacement = await asyncio.get_running_loop().run_in_executor(
                None, self._recover, failed
            )
        except EngineFatalError:
            raise
        except Exception as exc:  # a server that cannot start again: no row may fail for it
            raise EngineFatalError(
                f"{self.name}: engine {failed.slot} could not be restarted: {exc}"
            ) from exc
        for e in self._engines:  # the state of the slot points at the live server from now on
            if (
                e.endpoint.slot == replacement.slot
                and e.endpoint.generation < replacement.generation
            ):
                e.endpoint = replacement
        return replacement


def _check_id(data: dict[str, Any], request_id: str) -> None:
    """vLLM names the response after the request (``cmpl-<id>``, ``chatcmpl-<id>``): an answer
    that names another request is refused rather than attached to this row."""
    got = data.get("id")
    vecap_id = isinstance(got, str) and got.startswith(("cmpl-vecap-", "chatcmpl-vecap-"))
    if vecap_id and request_id not in got:
        raise EngineFatalError(f"the server answered request {got!r} to {request_id!r}")


def completion_text(data: dict[str, Any]) -> str:
    """The generated text of a completions or chat-completions response."""
    choices = data.get("choices") or []
    if not choices:
        raise ServerRequestError("the server answered without a choice")
    choice = choices[0]
    if "message" in choice:
        return (choice["message"] or {}).get("content") or ""
    return choice.get("text") or ""


def shutdown() -> None:
    """Close this process's client session (tests)."""
    global _LOOP
    with _LOOP_LOCK:
        current, _LOOP = _LOOP, None
    if current is None or current.pid != os.getpid():
        return
    if current.session is not None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(current.session.close(), current.loop).result(5)
    current.loop.call_soon_threadsafe(current.loop.stop)


__all__ = [
    "EnginePool",
    "ServerRequestError",
    "completion_text",
    "loop",
    "shutdown",
]
