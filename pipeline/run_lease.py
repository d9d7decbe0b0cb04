"""One job per output: the run that owns an output, recorded in its manifest with a heartbeat.

``vecap run`` records in ``OUT/manifest.json`` who is running (``run``: run id, host, pid,
start time) and renews ``run.heartbeat_at`` from a background thread while the job runs.
Another ``vecap run`` on the same output refuses while that run is live:

- the manifest says ``running`` and the heartbeat is fresher than ``stale_after_s``, and
- the run is not provably dead: on the same host, a launcher whose process is gone (a kill -9,
  a crash) is dead at once, whatever its last heartbeat.

A stale heartbeat (the launcher stopped renewing it: crashed, killed, its machine lost) lets the
next run proceed, saying so; ``--takeover`` proceeds even over a fresh heartbeat (a launcher on
another machine known to be dead). Either way the shard commits stay exactly-once: a zombie job
of the old run can never replace a committed shard (``pipeline.io.shard_files``), only waste
work.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

DEFAULT_HEARTBEAT_S = 30.0
STALE_AFTER_BEATS = 4  # a heartbeat older than 4 intervals is stale


class OutputBusy(RuntimeError):
    """Another run is live on this output."""


def _process_started(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # no such process, or no permission to look: treated as unknown
        return None


def new_run_record(heartbeat_s: float) -> dict[str, Any]:
    """Who this run is: stored as ``manifest["run"]``."""
    now = time.time()
    pid = os.getpid()
    return {
        "run_id": f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}-{uuid.uuid4().hex[:8]}",
        "host": socket.gethostname(),
        "pid": pid,
        "pid_started_at": _process_started(pid),
        "started_at": now,
        "heartbeat_at": now,
        "heartbeat_s": heartbeat_s,
    }


def _fmt_time(t: float | None) -> str:
    if not t:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def describe(run: dict[str, Any]) -> str:
    return (
        f"run {run.get('run_id', '?')} on host {run.get('host', '?')} (pid {run.get('pid', '?')}), "
        f"started {_fmt_time(run.get('started_at'))}"
    )


def launcher_gone(run: dict[str, Any]) -> bool:
    """True when the run's launcher was on this host and its process no longer exists."""
    if run.get("host") != socket.gethostname() or not isinstance(run.get("pid"), int):
        return False
    started = _process_started(run["pid"])
    if started is None:
        return True
    recorded = run.get("pid_started_at")
    # the pid was reused by another process: the launcher is gone
    return recorded is not None and abs(started - recorded) > 1.0


def liveness(
    manifest: dict[str, Any] | None, now: float | None = None
) -> tuple[str, dict[str, Any] | None, float]:
    """(state, run, heartbeat age in s) of the last run recorded in ``manifest``; state is
    ``free`` (finished, or nothing recorded), ``dead`` (its launcher's process is gone from this
    host), ``stale`` (no heartbeat for STALE_AFTER_BEATS intervals) or ``live``."""
    if not manifest or manifest.get("status") != "running":
        return "free", None, 0.0
    run = manifest.get("run")
    if not isinstance(run, dict):
        return "free", None, 0.0  # written before runs were recorded: nothing to check against
    now = time.time() if now is None else now
    age = now - float(run.get("heartbeat_at") or 0.0)
    interval = float(run.get("heartbeat_s") or DEFAULT_HEARTBEAT_S)
    if launcher_gone(run):
        return "dead", run, age
    if age > STALE_AFTER_BEATS * interval:
        return "stale", run, age
    return "live", run, age


def check_output_free(
    output: str,
    manifest: dict[str, Any] | None,
    *,
    takeover: bool,
    now: float | None = None,
    stream: TextIO | None = None,
) -> None:
    """Raise :class:`OutputBusy` if ``manifest`` (the output's) names a live run; say so when
    a dead or stale run is taken over."""
    stream = stream or sys.stderr
    state, run, age = liveness(manifest, now)
    if run is None:
        return
    who = describe(run)
    if state == "dead":
        print(f"vecap run: the last {who} died unfinished (its process is gone)", file=stream)
    elif state == "stale":
        print(
            f"vecap run: the last {who} stopped renewing its heartbeat {age:.0f} s ago; "
            "presumed dead",
            file=stream,
        )
    elif takeover:
        print(f"vecap run: --takeover: taking {output} over from {who}", file=stream)
    else:
        interval = float(run.get("heartbeat_s") or DEFAULT_HEARTBEAT_S)
        raise OutputBusy(
            f"{output} is in use by {who}; its heartbeat is {max(age, 0):.0f} s old (renewed "
            f"every {interval:.0f} s). Wait for it to finish, or pass --takeover if that run "
            "is dead (e.g. its launcher crashed on another machine)"
        )


@dataclass
class ManifestKeeper:
    """Owns the run's manifest: every write goes through it, under one lock, and a background
    thread renews ``run.heartbeat_at`` every ``heartbeat_s`` until :meth:`stop`."""

    output: str
    manifest: dict[str, Any]
    write: Callable[[str, dict[str, Any]], None]
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    stream: TextIO | None = None
    # reads the output's manifest as it is now: before each write after the claim, so a run
    # taken over (--takeover, a stale heartbeat) stops writing over its successor's record
    read: Callable[[str], dict[str, Any] | None] | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.beats = 0
        self.taken_over_by: dict[str, Any] | None = None

    def _run_id(self) -> Any:
        return (self.manifest.get("run") or {}).get("run_id")

    def replace(self, manifest: dict[str, Any], *, claim: bool = False) -> bool:
        """Write ``manifest`` with a fresh heartbeat; False (nothing written) when another run
        has taken the output over since this one claimed it."""
        with self._lock:
            if self.taken_over_by is not None:
                return False
            if not claim and self.read is not None:
                now = self.read(self.output) or {}
                other = now.get("run") or {}
                if other.get("run_id") != self._run_id():
                    self.taken_over_by = other
                    self._stop.set()
                    print(
                        f"vecap run: {self.output} was taken over by {describe(other)}; "
                        "this run stops recording itself in its manifest",
                        file=self.stream or sys.stderr,
                    )
                    return False
            manifest = dict(manifest)
            run = manifest.get("run")
            if isinstance(run, dict):
                manifest["run"] = {**run, "heartbeat_at": time.time()}
            self.manifest = manifest
            self.write(self.output, manifest)
            return True

    def beat(self) -> None:
        if self.replace(self.manifest):
            self.beats += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.beat()
            except Exception as e:  # the run goes on; a stale heartbeat only lets others in
                print(f"vecap run: could not renew the heartbeat: {e}", file=self.stream)

    def start(self) -> ManifestKeeper:
        self._thread = threading.Thread(target=self._loop, name="vecap-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


__all__ = [
    "DEFAULT_HEARTBEAT_S",
    "ManifestKeeper",
    "OutputBusy",
    "check_output_free",
    "describe",
    "launcher_gone",
    "liveness",
    "new_run_record",
]
