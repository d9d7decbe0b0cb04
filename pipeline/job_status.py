"""Where a job stands, from its output alone: works for a job on any runner (local, Dataflow,
Flink), read from the launcher's machine or any other.

Everything comes from files the job writes anyway: ``OUT/manifest.json`` (the plan's size, the
last run's status and heartbeat) and ``OUT/shards/`` (each ``part-NNNNN.stats.json`` is a
shard's commit and carries its rows by status, fusion sources and seconds per stage).

One look costs one bulk listing of ``OUT/shards`` plus one read of the manifest, and reads only
the stats files that are new since the last look: the stats already read are kept in a small
local cache (``~/.cache/vecap/status/<hash of OUT>.jsonl``, or ``$VECAP_STATUS_CACHE``), keyed
by shard id and the stats file's identity in the listing (ETag / generation / size and mtime),
so a stats file an ``--overwrite`` run wrote again is read again, never served stale.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import fsspec

from pipeline.errors import OutputError
from pipeline.io.shard_files import (
    ShardListing,
    is_local,
    list_shards,
    read_stats_files,
    uncommitted_from_listing,
)
from pipeline.manifest import read_manifest
from pipeline.run_lease import DEFAULT_HEARTBEAT_S, describe, liveness
from schemas.stats import ShardStats

CACHE_ENV = "VECAP_STATUS_CACHE"  # a directory; "off" keeps no cache
RATE_WINDOW = 50  # rows/s is measured over this many of the last run's latest commits
# worker clocks and the launcher's differ a little: a commit this much before the run's start
# still counts as the run's
CLOCK_SLACK_S = 2.0
# the ShardStats fields a look needs (the rest of a stats file is not cached)
_CACHED_FIELDS = (
    "shard_id",
    "rows",
    "status_counts",
    "fusion_source_counts",
    "ethics_flagged",
    "dedup_counts",
    "stage_seconds",
    "started_at",
    "finished_at",
    "parquet",
)
_CACHE_VERSION = 2  # 2: dedup_counts


# --------------------------------------------------------------------------- the listing


def list_shards_with_identity(
    output: str, now: float | None = None
) -> tuple[fsspec.AbstractFileSystem, ShardListing, dict[int, str | None]]:
    """:func:`pipeline.io.shard_files.list_shards` (one bulk listing) plus each stats file's
    identity: what changes when the file is written again (None: unknown or too fresh to
    trust, never cached)."""
    now = time.time() if now is None else now
    fs, listing = list_shards(output)
    local = is_local(fs)
    identity = {
        sid: _local_identity(name, now)
        if local
        else _entry_identity(listing.stats_entries.get(sid, {}), now)
        for sid, name in listing.stats.items()
    }
    return fs, listing, identity


# A file's modification time ticks coarsely (a few ms on Linux, 1 s on S3), so a file written
# again within one tick, at the same size (and locally in a reused inode), would look the same.
# An identity made of a time is therefore trusted only once the file is older than this: a
# later rewrite then has a later time.
SETTLE_S = 2.0


def _local_identity(path: str, now: float) -> str | None:
    """Size, mtime (ns) and inode: an --overwrite deletes and recreates the stats files, so a
    file written again differs in its mtime. A local listing carries no stat: this is one stat
    per stats file, a local call, no request."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None  # gone since the listing; its read skips it too
    if now - st.st_mtime < SETTLE_S:
        return None
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


_CONTENT_KEYS = ("ETag", "etag", "generation", "md5Hash")  # change whenever the content does
_TIME_KEYS = ("LastModified", "mtime", "updated", "created")


def _entry_identity(entry: Mapping[str, Any], now: float) -> str | None:
    """An object store's listing entry: S3's ETag (the content's MD5 for a single PUT), GCS's
    generation; else a modification time (see SETTLE_S); with the size."""
    for key in _CONTENT_KEYS:
        value = entry.get(key)
        if value not in (None, ""):
            return f"{entry.get('size')}:{key}={value}"
    for key in _TIME_KEYS:
        stamp = _timestamp(entry.get(key))
        if stamp is not None:
            return None if now - stamp < SETTLE_S else f"{entry.get('size')}:{key}={stamp}"
    return None


def _timestamp(value: Any) -> float | None:
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return _timestamp(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


# --------------------------------------------------------------------------- the cache


def cache_path(output: str, cache_dir: str | None = None) -> str | None:
    """Where the stats read from ``output`` are kept; None when caching is off."""
    base = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV)
    if base == "off":
        return None
    if not base:
        home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(home, "vecap", "status")
    return os.path.join(
        base, f"{hashlib.blake2b(output.encode(), digest_size=12).hexdigest()}.jsonl"
    )


class StatsCache:
    """Stats already read, one JSON line each (``{"id", "ident", "stats"}``), appended as new
    ones are read; the last line of a shard wins. A line that does not parse (a look killed
    mid-append) is only a miss: that shard's stats file is read again."""

    def __init__(self, path: str | None, output: str, stream: TextIO | None = None) -> None:
        self.path = path
        self.output = output
        self.stream = stream or sys.stderr
        self.entries: dict[int, tuple[str, ShardStats]] = {}
        self.lines = 0  # lines in the file, dead ones included (compaction)
        self._header_ok = False

    def load(self) -> StatsCache:
        if self.path is None or not os.path.exists(self.path):
            return self
        with open(self.path, encoding="utf-8") as f:
            for number, line in enumerate(f):
                try:
                    item = json.loads(line)
                except ValueError:
                    continue  # a torn last line: a miss, see the class doc
                if number == 0:
                    # another output whose name hashed alike, or another format: start afresh
                    self._header_ok = item == self._header()
                    if not self._header_ok:
                        return self
                    continue
                self.lines += 1
                try:
                    stats = ShardStats(**item["stats"])
                    self.entries[int(item["id"])] = (str(item["ident"]), stats)
                except (KeyError, TypeError, ValueError):
                    continue  # a line of another shape: a miss
        return self

    def _header(self) -> dict[str, Any]:
        return {"vecap_status_cache": _CACHE_VERSION, "output": self.output}

    def get(self, shard_id: int, ident: str | None) -> ShardStats | None:
        if ident is None:
            return None
        hit = self.entries.get(shard_id)
        return hit[1] if hit is not None and hit[0] == ident else None

    def update(
        self, fresh: Mapping[int, tuple[str | None, ShardStats]], live: Iterable[int]
    ) -> None:
        """Add the stats just read; rewrite the file when it holds more dead lines (shards
        gone or written again) than live ones, else append."""
        new = {sid: (ident, s) for sid, (ident, s) in fresh.items() if ident is not None}
        self.entries.update(new)
        if self.path is None:
            return
        live_ids = set(live)
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            if not self._header_ok or self.lines + len(new) > 2 * len(live_ids) + 100:
                keep = {sid: e for sid, e in self.entries.items() if sid in live_ids}
                self._rewrite(keep)
            elif new:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write("".join(self._line(sid, *e) for sid, e in sorted(new.items())))
                self.lines += len(new)
        except OSError as e:  # the figures stand; only the next look reads more
            print(f"vecap status: cannot write the cache {self.path}: {e}", file=self.stream)
            self.path = None

    def _rewrite(self, keep: Mapping[int, tuple[str, ShardStats]]) -> None:
        assert self.path is not None
        tmp = f"{self.path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(self._header()) + "\n")
            f.write("".join(self._line(sid, *e) for sid, e in sorted(keep.items())))
        os.replace(tmp, self.path)
        self.entries = dict(keep)
        self.lines = len(keep)
        self._header_ok = True

    @staticmethod
    def _line(sid: int, ident: str, stats: ShardStats) -> str:
        slim = {k: getattr(stats, k) for k in _CACHED_FIELDS}
        return json.dumps({"id": sid, "ident": ident, "stats": slim}, separators=(",", ":")) + "\n"


# --------------------------------------------------------------------------- the figures


@dataclass
class Launcher:
    """The manifest's last run: ``state`` is live | stale (no heartbeat for a while: presumed
    dead) | dead (its process is gone from this host) | finished | unknown (a running manifest
    that records no run)."""

    state: str
    status: str | None
    run_id: str | None = None
    who: str | None = None
    heartbeat_age_s: float | None = None
    heartbeat_s: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def alive(self) -> bool | None:
        return {"live": True, "stale": False, "dead": False}.get(self.state)


@dataclass
class JobStatus:
    output: str
    launcher: Launcher
    shards_planned: int | None
    shards_committed: int
    rows_committed: int
    status_counts: dict[str, int]
    fusion_sources: dict[str, int]
    ethics_flagged: int
    stage_seconds: dict[str, float]
    dedup_counts: dict[str, int]  # `vecap run --dedup`; {} otherwise
    rate_rows_s: float | None  # over the window below; None: too few commits in the last run
    rate_window_commits: int
    rate_window_s: float | None
    rows_to_go: int | None
    eta_s: float | None  # None when finished, not running, or no rate yet
    uncommitted_files: int
    uncommitted_bytes: int
    uncommitted_of_committed: int  # garbage for sure (vecap gc)
    uncommitted_of_open: int  # in flight, or garbage of a failed attempt
    stats_read: int  # stats files read in this look
    stats_cached: int  # served from the cache
    looked_at: float = field(default_factory=time.time)

    @property
    def shards_to_go(self) -> int | None:
        if self.shards_planned is None:
            return None
        return max(self.shards_planned - self.shards_committed, 0)

    @property
    def percent(self) -> float | None:
        if not self.shards_planned:
            return None if self.shards_planned is None else 100.0
        return min(100.0 * self.shards_committed / self.shards_planned, 100.0)

    @property
    def finished(self) -> bool:
        """The last run ended (succeeded, failed or nothing to do)."""
        return self.launcher.status != "running"

    @property
    def stage_shares(self) -> dict[str, float]:
        total = sum(self.stage_seconds.values())
        return {k: v / total for k, v in self.stage_seconds.items()} if total > 0 else {}

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["launcher"]["alive"] = self.launcher.alive
        out.update(
            shards_to_go=self.shards_to_go,
            percent=self.percent,
            finished=self.finished,
            stage_shares=self.stage_shares,
        )
        return out


def _read_output_manifest(output: str) -> dict[str, Any]:
    try:
        manifest = read_manifest(output)
    except (ValueError, ImportError) as e:  # unknown protocol, a missing fs extra, bad JSON
        raise OutputError(f"{output}: cannot read its manifest.json ({e})") from e
    except OSError as e:
        raise OutputError(f"{output}: cannot read its manifest.json: {e}") from e
    if manifest is None:
        raise OutputError(
            f"{output} is not a vecap output (no manifest.json); give the --output of a vecap run"
        )
    if not isinstance(manifest, dict) or manifest.get("format", "vecap-output") != "vecap-output":
        raise OutputError(f"{output}/manifest.json is not a vecap manifest")
    return manifest


def _launcher(manifest: Mapping[str, Any], now: float) -> Launcher:
    state, run, age = liveness(dict(manifest), now)
    status = manifest.get("status")
    runs = manifest.get("runs") or [{}]
    last = runs[-1] if isinstance(runs[-1], dict) else {}
    rec = run or (manifest.get("run") if isinstance(manifest.get("run"), dict) else None) or {}
    if state == "free":
        state = "unknown" if status == "running" else "finished"
    return Launcher(
        state=state,
        status=status,
        run_id=rec.get("run_id"),
        who=describe(rec) if rec else None,
        heartbeat_age_s=round(age, 3) if run is not None else None,
        heartbeat_s=float(rec.get("heartbeat_s") or DEFAULT_HEARTBEAT_S) if rec else None,
        started_at=last.get("started_at") or rec.get("started_at"),
        finished_at=last.get("finished_at"),
    )


def _add(total: dict[str, Any], part: Mapping[str, Any]) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0) + v


def _rate(
    run_commits: list[ShardStats], run_started: float | None, window: int
) -> tuple[float | None, int, float | None]:
    """(rows/s, commits, seconds) over the last ``window`` commits of the run: from the commit
    before the window to the last one (a run's first commit is measured from the run's start,
    so model loading counts once, in the first window only)."""
    if not run_commits:
        return None, 0, None
    recent = sorted(run_commits, key=lambda s: s.finished_at)[-(window + 1) :]
    if len(recent) > window or (len(recent) >= 2 and run_started is None):
        start, counted = recent[0].finished_at, recent[1:]
    elif run_started is not None:
        start, counted = run_started, recent
    else:
        return None, len(recent), None
    span = recent[-1].finished_at - start
    if span <= 0:
        return None, len(counted), None
    return sum(s.rows for s in counted) / span, len(counted), span


def job_status(
    output: str,
    *,
    cache_dir: str | None = None,
    window: int = RATE_WINDOW,
    now: float | None = None,
    stream: TextIO | None = None,
) -> JobStatus:
    """One look at ``output``: its manifest, one listing, the stats files new since the last
    look (``cache_dir``: where looks keep what they read; default ``$VECAP_STATUS_CACHE`` or
    ``~/.cache/vecap/status``; "off": none)."""
    now = time.time() if now is None else now
    manifest = _read_output_manifest(output)
    fs, listing, identity = list_shards_with_identity(output, now)
    key = fs.unstrip_protocol(listing.root)  # one cache per output, however OUT was spelled
    cache = StatsCache(cache_path(key, cache_dir), key, stream).load()

    stats: dict[int, ShardStats] = {}
    to_read: dict[int, str] = {}
    for sid, path in listing.stats.items():
        hit = cache.get(sid, identity.get(sid))
        if hit is not None:
            stats[sid] = hit
        else:
            to_read[sid] = path
    fresh = read_stats_files(fs, to_read)  # one batched read; vanished files are skipped
    stats.update(fresh)
    cache.update({sid: (identity.get(sid), s) for sid, s in fresh.items()}, listing.stats)

    status_counts: dict[str, int] = {}
    fusion: dict[str, int] = {}
    stage_seconds: dict[str, float] = {}
    dedup: dict[str, int] = {}
    for s in stats.values():
        _add(dedup, s.dedup_counts)
        _add(status_counts, s.status_counts)
        _add(fusion, s.fusion_source_counts)
        _add(stage_seconds, s.stage_seconds)
    rows = sum(s.rows for s in stats.values())

    launcher = _launcher(manifest, now)
    plan = manifest.get("plan") or {}
    planned = plan.get("shards_planned")
    run_started = launcher.started_at
    run_commits = [
        s
        for s in stats.values()
        if run_started is None or s.finished_at >= run_started - CLOCK_SLACK_S
    ]
    rate, window_commits, window_s = _rate(run_commits, run_started, window)

    to_go = None if planned is None else max(int(planned) - len(stats), 0)
    rows_to_go: int | None = None
    if to_go is not None:
        if to_go == 0:
            rows_to_go = 0
        elif plan.get("rows_todo") is not None and run_started is not None:
            # the run planned rows_todo rows; what its commits hold is done
            rows_to_go = max(int(plan["rows_todo"]) - sum(s.rows for s in run_commits), 0)
        elif stats:
            rows_to_go = round(to_go * rows / len(stats))
    eta = None
    if launcher.status == "running" and to_go and rate and rows_to_go is not None:
        eta = rows_to_go / rate

    garbage = uncommitted_from_listing(listing, stats)
    return JobStatus(
        output=output,
        launcher=launcher,
        shards_planned=None if planned is None else int(planned),
        shards_committed=len(stats),
        rows_committed=rows,
        status_counts=dict(sorted(status_counts.items(), key=lambda kv: -kv[1])),
        fusion_sources=dict(sorted(fusion.items(), key=lambda kv: -kv[1])),
        ethics_flagged=sum(s.ethics_flagged for s in stats.values()),
        stage_seconds={k: round(v, 3) for k, v in sorted(stage_seconds.items())},
        dedup_counts=dedup,
        rate_rows_s=None if rate is None else round(rate, 3),
        rate_window_commits=window_commits,
        rate_window_s=None if window_s is None else round(window_s, 3),
        rows_to_go=rows_to_go,
        eta_s=None if eta is None else round(eta, 1),
        uncommitted_files=len(garbage.all),
        uncommitted_bytes=garbage.bytes,
        uncommitted_of_committed=len(garbage.of_committed),
        uncommitted_of_open=len(garbage.of_open),
        stats_read=len(to_read),
        stats_cached=len(stats) - len(fresh),
        looked_at=now,
    )


# --------------------------------------------------------------------------- the screen


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m:02d}m"
    return f"{m}m {s:02d}s" if m else f"{s}s"


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def _shares(counts: Mapping[str, float], total: float, unit: str = "") -> str:
    if not counts:
        return "none"
    return ", ".join(
        f"{k} {v:,.0f}{unit} ({100.0 * v / total:.1f}%)" if total else f"{k} {v:,}"
        for k, v in counts.items()
    )


def _launcher_line(launcher: Launcher) -> str:
    who = launcher.who or "a run"
    age = launcher.heartbeat_age_s or 0.0
    if launcher.state == "live":
        return f"alive: {who}; heartbeat {max(age, 0):.0f} s ago"
    if launcher.state == "stale":
        return (
            f"presumed dead: {who} has not renewed its heartbeat for {age:.0f} s (every "
            f"{launcher.heartbeat_s or DEFAULT_HEARTBEAT_S:.0f} s); a remote runner's workers "
            "may still commit shards, or run again to resume"
        )
    if launcher.state == "dead":
        return f"dead: {who} died unfinished (its process is gone); run again to resume"
    if launcher.state == "unknown":
        return "running (the manifest records no launcher to check)"
    return f"finished: {launcher.status}"


def format_status(st: JobStatus) -> str:
    lines = [f"vecap status {st.output}"]
    lines.append(f"  launcher   {_launcher_line(st.launcher)}")
    if st.shards_planned is None:
        shards = f"{st.shards_committed:,} committed (the manifest records no plan)"
    else:
        shards = (
            f"{st.shards_committed:,} of {st.shards_planned:,} committed ({st.percent:.1f}%), "
            f"{st.shards_to_go:,} to go"
        )
    lines.append(f"  shards     {shards}")
    lines.append(
        f"  rows       {st.rows_committed:,}: {_shares(st.status_counts, st.rows_committed)}"
    )
    if st.fusion_sources:
        total = sum(st.fusion_sources.values())
        lines.append(f"  fusion     {_shares(st.fusion_sources, total)}")
    if st.ethics_flagged:
        lines.append(f"  flagged    {st.ethics_flagged:,} rows by the ethics check")
    if any(st.dedup_counts.values()):
        found = ", ".join(f"{k} {v:,}" for k, v in st.dedup_counts.items() if v)
        lines.append(f"  dedup      {found}")
    if st.rate_rows_s is not None:
        rate = (
            f"{st.rate_rows_s:,.1f} rows/s over the last run's last {st.rate_window_commits} "
            f"commits ({_duration(st.rate_window_s or 0)})"
        )
    else:
        rate = "no rate yet (the last run has committed no shard)"
    if st.eta_s is not None:
        rate += f"; ETA {_duration(st.eta_s)} (~{st.rows_to_go:,} rows to go)"
    elif st.shards_to_go == 0:
        rate += "; done"
    lines.append(f"  rate       {rate}")
    shares = st.stage_shares
    if shares:
        stages = ", ".join(
            f"{k} {100 * v:.1f}%" for k, v in sorted(shares.items(), key=lambda kv: -kv[1])
        )
        lines.append(f"  time       {stages} (of the shards' stage seconds)")
    if st.uncommitted_files:
        lines.append(
            f"  attempts   {st.uncommitted_files:,} uncommitted files ({_bytes(st.uncommitted_bytes)}):"
            f" {st.uncommitted_of_committed:,} of committed shards (garbage: vecap gc), "
            f"{st.uncommitted_of_open:,} of open shards (in flight, or failed attempts)"
        )
    else:
        lines.append("  attempts   no uncommitted files")
    lines.append(
        f"  looked     {time.strftime('%H:%M:%S', time.localtime(st.looked_at))}: one listing, "
        f"{st.stats_read:,} stats files read, {st.stats_cached:,} from the cache"
    )
    return "\n".join(lines)


__all__ = [
    "CACHE_ENV",
    "JobStatus",
    "Launcher",
    "StatsCache",
    "cache_path",
    "format_status",
    "job_status",
    "list_shards_with_identity",
]
