"""A simulated GPU behind an OpenAI-compatible HTTP server, started the way vLLM's server is.

Benchmarks and tests replace ``<python> -m vllm.entrypoints.openai.api_server`` with
``<python> bench/sim_gpu_server.py`` and keep vLLM's flags (unknown ones are ignored) and
``CUDA_VISIBLE_DEVICES``. It listens on loopback only, answers ``/health`` (503 for
``--sim-startup-s``, the "model load", then 200), ``/v1/models``, ``/v1/completions`` and
``/v1/chat/completions`` in OpenAI's format, plus ``GET /sim/stats`` and ``POST /sim/reset``.
Imports only the standard library and aiohttp; run it by path.

Output text
    Deterministic per request content: a hash of the served model name and the prompt (for chat:
    the canonical JSON of the messages, each image's data URL replaced by the hash of its decoded
    bytes, plus chat_template and chat_template_kwargs) picks a 12-word lowercase sentence with a
    9-digit number, e.g. ``a photo of a small red bicycle number 482193716 near the wall.`` The
    number of output tokens simulated (and reported in ``usage``) is
    ``O = max(min_tokens, min(max_tokens, L))`` with L in [25, 40] from the same hash;
    finish_reason is "length" when O hit max_tokens, else "stop".

Prompt tokens
    completions: ``len(prompt) // 4 + 1`` (about 4 characters a token; a list of token ids counts
    its length); chat: (characters of all text parts) // 4 + 1, plus ``--sim-image-tokens``
    (576, LLaVA-1.5's 24 x 24 patches) per image.

Latency model: one GPU, continuous batching, vLLM-style
    A scheduler loop admits waiting requests to the running batch while it has fewer than
    ``max_num_seqs`` (B) sequences. Each step has a budget of ``max_num_batched_tokens`` (K)
    tokens: every decoding sequence first gets one token, then prefill chunks of the admitted
    sequences fill the rest in arrival order (chunked prefill: a long prompt may span steps).
    The step that finishes a prompt's prefill also yields its first output token (as vLLM's
    does); the sequence then decodes one token per step and is answered at the end of the step
    that produced its O-th token. A step takes

        step_s = scale * (t_step + prefill_tokens_in_step * t_prefill_token
                          + decode_seqs_in_step * t_decode_seq)

    and runs whenever a request is waiting or running; an idle GPU sleeps on an event. CPU time
    the server spends between back-to-back steps is absorbed into the simulated GPU clock, up to
    ``--sim-slack-s`` (0.02 s) per step, so the simulator's own Python overhead does not show as
    lost GPU time unless the CPU is badly overloaded.

    Calibration (the defaults): LLaVA-1.5-7B or a 7B LLM in bf16 on an H100:
    t_prefill_token = 23e-6 s (about 14 GFLOP a token at ~600 TFLOP/s effective),
    t_step = 6e-3 s (reading 14 GB of weights at ~2.5 TB/s), t_decode_seq = 0.1e-3 s (one
    sequence's KV cache a step). ``--sim-scale`` (default ``$VECAP_SIM_SCALE`` or 1.0) multiplies
    every step time, so a CPU machine can simulate slower GPUs.

Saturated rate (``capacity()``)
    In steady state each request costs P prompt tokens, one prefill-finishing step and O - 1
    decode steps, so a batch of b = min(in_flight, B) sequences completes
    ``n = min(b / O, K / (P + O - 1))`` requests a step (the second term when the token budget,
    not the batch, binds), each step taking ``scale * (t_step + n*P*t_prefill_token +
    n*(O-1)*t_decode_seq)``:

        rate = n / (scale * (t_step + n * P * t_prefill_token + n * (O - 1) * t_decode_seq))

    A caption, P = 600 and O = 32, with B = 256 and K = 8192: n = 8, step 0.141 s, about 57
    images/s per GPU. With only 16 in flight: n = 0.5, step 14.5 ms, about 35/s; with 4 in flight
    about 15/s.

GPU time shared between processes
    Processes started with the same ``CUDA_VISIBLE_DEVICES`` (a caption and a fusion model on
    one GPU) share one simulated GPU as CUDA time-slices two contexts: each step holds an
    exclusive ``fcntl.flock`` on ``$VECAP_SIM_GPU_DIR/sim-gpu-<CUDA_VISIBLE_DEVICES>.lock``
    (default: the temp dir) for its simulated duration, in a worker thread so the event loop keeps
    serving. A process that had to wait leaves a marker file in ``<lock>.waiters/``; the holder,
    seeing one, lets that waiter take the lock before it takes it again, so two saturated
    processes alternate steps. The lock file also carries the end time of the last step, the
    shared GPU clock. Without ``CUDA_VISIBLE_DEVICES`` nothing is shared.

Stats files
    ``GET /sim/stats`` reports the counters (requests, tokens, busy time, the time-weighted mean
    in flight over the window from the first request to the last answer), ``cpu_s`` (the
    server's own CPU time) and the window on the wall clock. With ``--sim-stats-dir D`` (or
    ``$VECAP_SIM_STATS_DIR``) the server also writes them to ``D/sim-<pid>.json`` every second
    and when it stops (SIGTERM), so a benchmark can read them after whoever started the server
    has stopped it.

Fault injection
    With ``VECAP_SIM_DIE_AFTER=N`` and ``VECAP_SIM_DIE_ONCE_FILE=<path>``: when the file does not
    exist the server creates it and, once it has admitted N requests to the batch, calls
    ``os._exit(137)`` in the middle of a step (connections drop, as when a CUDA error kills
    vLLM's server). A restarted server (file exists) runs normally.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import signal
import struct
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

T_STEP_S = 6e-3
T_PREFILL_TOKEN_S = 23e-6
T_DECODE_SEQ_S = 0.1e-3
IMAGE_TOKENS = 576

# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Simulated GPU behind an OpenAI-compatible server (vLLM's flags accepted).",
        allow_abbrev=False,  # an unknown vLLM flag must not match one of ours by its prefix
    )
    p.add_argument("--model", default="sim-model")
    p.add_argument("--served-model-name", nargs="+", default=None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--max-num-batched-tokens", type=int, default=8192)
    p.add_argument("--api-key", default=None)
    # accepted and ignored, as vLLM's
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--load-format", default="auto")
    p.add_argument("--limit-mm-per-prompt", default=None)
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    p.add_argument("--trust-remote-code", action="store_true")
    # the simulation
    p.add_argument(
        "--sim-scale",
        type=float,
        default=float(os.environ.get("VECAP_SIM_SCALE") or 1.0),
        help="multiplies every simulated GPU time (default $VECAP_SIM_SCALE or 1.0)",
    )
    p.add_argument("--sim-startup-s", type=float, default=1.0)
    p.add_argument("--sim-t-step", type=float, default=T_STEP_S)
    p.add_argument("--sim-t-prefill-token", type=float, default=T_PREFILL_TOKEN_S)
    p.add_argument("--sim-t-decode-seq", type=float, default=T_DECODE_SEQ_S)
    p.add_argument("--sim-image-tokens", type=int, default=IMAGE_TOKENS)
    p.add_argument("--sim-slack-s", type=float, default=0.02)
    p.add_argument(
        "--sim-stats-dir",
        default=os.environ.get("VECAP_SIM_STATS_DIR") or None,
        help="write /sim/stats as JSON to <dir>/sim-<pid>.json every second and at exit "
        "(default $VECAP_SIM_STATS_DIR; none)",
    )
    return p


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args, _unknown = parser.parse_known_args(argv)
    if not _is_loopback(args.host):
        parser.error(f"--host {args.host!r}: the simulator binds loopback only")
    if args.max_num_seqs < 1 or args.max_num_batched_tokens < args.max_num_seqs:
        parser.error("need 1 <= --max-num-seqs <= --max-num-batched-tokens (as vLLM)")
    if args.sim_scale <= 0:
        parser.error("--sim-scale must be > 0")
    if not args.served_model_name:
        args.served_model_name = [args.model]
    return args


def default_args(**overrides) -> argparse.Namespace:
    """The server's defaults (``--port 0``) with attribute overrides, for :func:`capacity`."""
    args = parse_args(["--port", "0"])
    for k, v in overrides.items():
        setattr(args, k, v)
    return args


# --------------------------------------------------------------------------- the model


def capacity(
    prompt_tokens: float,
    output_tokens: float,
    args: argparse.Namespace | None = None,
    *,
    in_flight: float | None = None,
) -> float:
    """Requests/s of one simulated GPU at saturation (the module docstring's formula), or with
    ``in_flight`` requests kept in flight (closed loop); ``args`` as :func:`parse_args` returns
    (``None``: the defaults)."""
    a = args if args is not None else default_args()
    p, o = float(prompt_tokens), max(1.0, float(output_tokens))
    b = float(a.max_num_seqs) if in_flight is None else min(float(in_flight), a.max_num_seqs)
    n = min(b / o, a.max_num_batched_tokens / (p + o - 1.0))
    step = a.sim_t_step + n * p * a.sim_t_prefill_token + n * (o - 1.0) * a.sim_t_decode_seq
    return n / (a.sim_scale * step)


def text_prompt_tokens(prompt: str | list) -> int:
    if isinstance(prompt, str):
        return len(prompt) // 4 + 1
    return len(prompt)  # token ids


def chat_prompt_tokens(messages: list, image_tokens: int = IMAGE_TOKENS) -> int:
    chars, images = 0, 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "text":
                    chars += len(str(part.get("text", "")))
                elif part.get("type") == "image_url":
                    images += 1
    return chars // 4 + 1 + images * image_tokens


_ADJ = "small large old new bright quiet busy tall wooden shiny dusty modern tiny worn clean wet"
_COLOR = "red blue green yellow white black brown gray orange purple pink silver golden dark pale"
_NOUN = "bicycle dog cat car house tree boat chair lamp bird horse table clock bench kite train"
_PREP = "near beside behind under above inside outside along"
_PLACE = "wall road river park window garden beach field street hill door fence lake bridge sea"
_WORDS = [w.split() for w in (_ADJ, _COLOR, _NOUN, _PREP, _PLACE)]


def sentence(digest: bytes) -> tuple[str, int]:
    """The output sentence and L (25..40) a digest stands for."""
    x = int.from_bytes(digest, "big")
    picks = []
    for words in _WORDS:
        picks.append(words[x % len(words)])
        x //= len(words)
    number = x % 10**9
    x //= 10**9
    adj, color, noun, prep, place = picks
    text = f"a photo of a {adj} {color} {noun} number {number:09d} {prep} the {place}."
    return text, 25 + x % 16


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _image_digest(url: str) -> str:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        raw = base64.b64decode(data, validate=False) if ";base64" in header else data.encode()
        return "image:" + hashlib.blake2b(raw, digest_size=16).hexdigest()
    return "image-url:" + url


def canonical_messages(messages: list) -> list:
    """Messages with each image's data URL replaced by the hash of its decoded bytes."""
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    iu = part.get("image_url")
                    url = iu.get("url", "") if isinstance(iu, dict) else str(iu)
                    part = {**part, "image_url": _image_digest(url)}
                parts.append(part)
            m = {**m, "content": parts}
        out.append(m)
    return out


# --------------------------------------------------------------------------- the GPU


class SimGPU:
    """Runs one step's simulated time in the calling (worker) thread, under the shared lock of
    its ``CUDA_VISIBLE_DEVICES`` when it has one."""

    def __init__(self, device: str | None, lock_dir: str, slack_s: float):
        self.slack_s = slack_s
        self.free_at = 0.0  # monotonic end of this process's last step
        self.fd: int | None = None
        self._handoff: list[str] = []
        self._me = str(os.getpid())
        if device:
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in device)
            path = os.path.join(lock_dir, f"sim-gpu-{safe}.lock")
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            self.waiters = path + ".waiters"
            os.makedirs(self.waiters, exist_ok=True)
            self.marker = os.path.join(self.waiters, self._me)

    def run(self, dur: float, ready: float, die: bool) -> None:
        if self.fd is None:
            self.free_at = self._sleep(dur, ready, 0.0, die)
            return
        self._yield_to_waiters()
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(os.open(self.marker, os.O_WRONLY | os.O_CREAT, 0o666))
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            finally:
                os.unlink(self.marker)
        try:
            raw = os.pread(self.fd, 8, 0)
            shared_end = struct.unpack("d", raw)[0] if len(raw) == 8 else 0.0
            self.free_at = self._sleep(dur, ready, shared_end, die)
            os.pwrite(self.fd, struct.pack("d", self.free_at), 0)
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        try:
            self._handoff = [n for n in os.listdir(self.waiters) if n != self._me]
        except OSError:
            self._handoff = []

    def _sleep(self, dur: float, ready: float, shared_end: float, die: bool) -> float:
        now = time.monotonic()
        start = max(ready, shared_end, now - self.slack_s)
        end = start + dur
        if die:
            time.sleep(max(0.0, start + dur / 2 - now))
            os._exit(137)
        if end > now:
            time.sleep(end - now)
        return end

    def _yield_to_waiters(self) -> None:
        """Let a process that waited for our last step take the GPU before we take it again."""
        if not self._handoff:
            return
        pending = [os.path.join(self.waiters, n) for n in self._handoff]
        self._handoff = []
        deadline = time.monotonic() + 0.05
        while pending and time.monotonic() < deadline:
            pending = [p for p in pending if os.path.exists(p)]
            if pending:
                time.sleep(0.0002)
        for p in pending:  # a waiter that died waiting leaves its marker behind
            try:
                os.kill(int(os.path.basename(p)), 0)
            except (ValueError, ProcessLookupError):
                with contextlib.suppress(OSError):
                    os.unlink(p)
            except PermissionError:
                pass


# --------------------------------------------------------------------------- the scheduler

WAITING, PREFILL, DECODE, FINISHING, DONE, ABORTED = range(6)


class Seq:
    __slots__ = ("prompt_left", "out_left", "future", "state")

    def __init__(self, prompt_tokens: int, output_tokens: int, future: asyncio.Future):
        self.prompt_left = max(1, prompt_tokens)
        self.out_left = max(1, output_tokens)
        self.future = future
        self.state = WAITING


class TimeAvg:
    """A counter's time-weighted integral and maximum."""

    __slots__ = ("value", "area", "t", "max")

    def __init__(self, value: int = 0, t: float | None = None):
        self.value, self.area, self.t, self.max = value, 0.0, t, value

    def set(self, value: int, now: float) -> None:
        if self.t is not None:
            self.area += self.value * (now - self.t)
        self.t, self.value = now, value
        if value > self.max:
            self.max = value

    def area_until(self, end: float) -> float:
        return self.area + (self.value * (end - self.t) if self.t is not None else 0.0)


class Engine:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.device = os.environ.get("CUDA_VISIBLE_DEVICES")
        lock_dir = os.environ.get("VECAP_SIM_GPU_DIR") or tempfile.gettempdir()
        self.gpu = SimGPU(self.device, lock_dir, args.sim_slack_s)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim-gpu")
        self.waiting: collections.deque[Seq] = collections.deque()
        self.prefilling: collections.deque[Seq] = collections.deque()
        self.n_decoding = 0
        self.finish_at: dict[int, list[Seq]] = {}
        self.step_no = 0
        self.admitted = 0
        self._wake = asyncio.Event()
        self.die_after: int | None = None
        die_after, once = (
            os.environ.get("VECAP_SIM_DIE_AFTER"),
            os.environ.get("VECAP_SIM_DIE_ONCE_FILE"),
        )
        if die_after and once:
            try:
                os.close(os.open(once, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                self.die_after = int(die_after)
            except FileExistsError:
                pass
        self.reset()

    def reset(self) -> None:
        now = time.monotonic()
        in_flight = getattr(self, "in_flight", None)
        busy = in_flight is not None and in_flight.value > 0
        self.requests_done = self.requests_failed = 0
        self.busy_s = 0.0
        self.prefill_tokens = self.decode_tokens = self.output_tokens = self.steps = 0
        self.first_request: float | None = now if busy else None
        self.last_answer: float | None = None
        self.in_flight = TimeAvg(in_flight.value if busy else 0, now if busy else None)
        self.running = TimeAvg(self.n_running if busy else 0, now if busy else None)

    @property
    def n_running(self) -> int:
        return self.n_decoding + len(self.prefilling)

    # requests ------------------------------------------------------------------------

    def request_started(self) -> None:
        now = time.monotonic()
        if self.first_request is None:
            self.first_request = now
            self.in_flight.t = now
            self.running.t = now
        self.in_flight.set(self.in_flight.value + 1, now)

    def request_ended(self, ok: bool) -> None:
        now = time.monotonic()
        self.in_flight.set(self.in_flight.value - 1, now)
        self.last_answer = now
        if ok:
            self.requests_done += 1
        else:
            self.requests_failed += 1

    async def generate(self, prompt_tokens: int, output_tokens: int) -> None:
        seq = Seq(prompt_tokens, output_tokens, asyncio.get_running_loop().create_future())
        self.waiting.append(seq)
        self._wake.set()
        try:
            await seq.future
        except asyncio.CancelledError:
            self._abort(seq)
            raise

    def _abort(self, seq: Seq) -> None:
        if seq.state == WAITING:
            self.waiting.remove(seq)
        elif seq.state == PREFILL:
            self.prefilling.remove(seq)
        elif seq.state == DECODE:
            self.n_decoding -= 1  # stays in its finish bucket, skipped there
        if seq.state != DONE:  # FINISHING: in the step under way, left out of the counts already
            seq.state = ABORTED

    # the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        a = self.args
        scale, K = a.sim_scale, a.max_num_batched_tokens
        continued = False
        ready = 0.0
        while True:
            if not self.waiting and not self.n_running:
                if continued:
                    self.running.set(0, time.monotonic())
                continued = False
                self._wake.clear()
                await self._wake.wait()
                ready = time.monotonic()
                continue
            if continued:
                ready = self.gpu.free_at
            # admit
            while self.waiting and self.n_running < a.max_num_seqs:
                s = self.waiting.popleft()
                s.state = PREFILL
                self.prefilling.append(s)
                self.admitted += 1
            self.running.set(self.n_running, time.monotonic())
            self.step_no += 1
            step = self.step_no
            # decode first: every decoding sequence gets a token (K >= max_num_seqs)
            d = self.n_decoding
            finished = [s for s in self.finish_at.pop(step, ()) if s.state == DECODE]
            self.n_decoding -= len(finished)
            for s in finished:
                s.state = FINISHING
            # then prefill chunks in arrival order
            budget, prefill = K - d, 0
            first_tokens = 0
            while self.prefilling and budget > 0:
                s = self.prefilling[0]
                c = min(s.prompt_left, budget)
                s.prompt_left -= c
                budget -= c
                prefill += c
                if s.prompt_left:
                    break
                self.prefilling.popleft()
                first_tokens += 1
                s.out_left -= 1
                if s.out_left <= 0:
                    s.state = FINISHING
                    finished.append(s)
                else:
                    s.state = DECODE
                    self.n_decoding += 1
                    self.finish_at.setdefault(step + s.out_left, []).append(s)
            dur = scale * (a.sim_t_step + prefill * a.sim_t_prefill_token + d * a.sim_t_decode_seq)
            die = self.die_after is not None and self.admitted >= self.die_after
            await loop.run_in_executor(self.pool, self.gpu.run, dur, ready, die)
            self.busy_s += dur
            self.steps += 1
            self.prefill_tokens += prefill
            self.decode_tokens += d
            self.output_tokens += d + first_tokens
            for s in finished:
                if s.state == FINISHING:
                    s.state = DONE
                    if not s.future.done():
                        s.future.set_result(None)
            continued = True

    def stats(self) -> dict:
        now = time.monotonic()
        first = self.first_request
        end = now if self.in_flight.value > 0 or self.last_answer is None else self.last_answer
        window = (end - first) if first is not None else 0.0

        def mean(avg: TimeAvg) -> float:
            return avg.area_until(end) / window if window > 0 else 0.0

        return {
            "cuda_visible_devices": self.device,
            "pid": os.getpid(),
            "model": self.args.served_model_name[0],
            "sim_scale": self.args.sim_scale,
            "max_num_seqs": self.args.max_num_seqs,
            "max_num_batched_tokens": self.args.max_num_batched_tokens,
            "requests_done": self.requests_done,
            "requests_failed": self.requests_failed,
            "busy_s": self.busy_s,
            "elapsed_s": (now - first) if first is not None else 0.0,
            "window_s": window,
            "mean_in_flight": mean(self.in_flight),
            "max_in_flight": self.in_flight.max,
            "in_flight": self.in_flight.value,
            "mean_running": mean(self.running),
            "running": self.n_running,
            "waiting": len(self.waiting),
            "prefill_tokens": self.prefill_tokens,
            "decode_tokens": self.decode_tokens,
            "output_tokens": self.output_tokens,
            "steps": self.steps,
            # this process's own CPU (every thread), and the window on the wall clock, so a
            # benchmark can subtract the simulator's CPU and merge several servers' windows
            "cpu_s": time.process_time(),
            "first_request_unix": (first - now + time.time()) if first is not None else None,
            "end_unix": (end - now + time.time()) if first is not None else None,
        }


# --------------------------------------------------------------------------- HTTP


def _error(status: int, message: str, type_: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": status}}
    return web.json_response(body, status=status)


class BadRequest(Exception):
    pass


def _int_field(body: dict, name: str, default: int | None, minimum: int) -> int | None:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise BadRequest(f"{name} must be an integer >= {minimum}, got {v!r}")
    return v


class Server:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.engine = Engine(args)
        self.names = list(args.served_model_name)
        self.ready_at = float("inf")
        self.created = int(time.time())

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024**2, middlewares=[self._guard])
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/sim/stats", self.sim_stats)
        app.router.add_post("/sim/reset", self.sim_reset)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if request.path.startswith("/v1"):
            key = self.args.api_key
            if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
                return web.json_response({"error": "Unauthorized"}, status=401)
            if time.monotonic() < self.ready_at:
                return _error(503, "the model is loading", "ServiceUnavailableError")
        return await handler(request)

    async def health(self, request: web.Request) -> web.Response:
        if time.monotonic() < self.ready_at:
            return web.Response(status=503)
        return web.Response(status=200)

    async def models(self, request: web.Request) -> web.Response:
        data = [
            {
                "id": name,
                "object": "model",
                "created": self.created,
                "owned_by": "vllm",
                "root": self.args.model,
                "parent": None,
                "max_model_len": self.args.max_model_len,
            }
            for name in self.names
        ]
        return web.json_response({"object": "list", "data": data})

    async def sim_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.engine.stats())

    async def sim_reset(self, request: web.Request) -> web.Response:
        self.engine.reset()
        return web.json_response({"ok": True})

    # generation --------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"malformed JSON body: {e}") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        if body.get("stream"):
            raise BadRequest("stream=true is not supported by the simulator")
        if body.get("n", 1) != 1:
            raise BadRequest("only n=1 is supported by the simulator")
        return body

    def _check_model(self, body: dict) -> web.Response | None:
        model = body.get("model")
        if model is not None and model not in self.names:
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        return None

    def _lengths(self, body: dict, digest: bytes) -> tuple[str, int, str]:
        max_tokens = _int_field(body, "max_tokens", None, 1)
        if max_tokens is None:
            max_tokens = _int_field(body, "max_completion_tokens", None, 1)
        min_tokens = _int_field(body, "min_tokens", 0, 0)
        if max_tokens is not None and min_tokens > max_tokens:
            raise BadRequest(f"min_tokens ({min_tokens}) must be <= max_tokens ({max_tokens})")
        text, natural = sentence(digest)
        n = natural if max_tokens is None else min(max_tokens, natural)
        n = max(min_tokens, n)
        finish = "length" if max_tokens is not None and n >= max_tokens else "stop"
        return text, n, finish

    async def _serve(self, request: web.Request, chat: bool) -> web.Response:
        eng = self.engine
        eng.request_started()
        ok = False
        try:
            try:
                body = await self._body(request)
                if (resp := self._check_model(body)) is not None:
                    return resp
                model_key = self.names[0].encode() + b"\0"
                if chat:
                    messages = body.get("messages")
                    if not isinstance(messages, list) or not messages:
                        raise BadRequest("messages must be a non-empty list")
                    if not all(isinstance(m, dict) for m in messages):
                        raise BadRequest("each message must be an object")
                    try:
                        canon = canonical_messages(messages)
                    except (binascii.Error, ValueError) as e:
                        raise BadRequest(f"cannot decode an image: {e}") from None
                    key = _canonical(
                        [canon, body.get("chat_template"), body.get("chat_template_kwargs")]
                    )
                    n_prompt = chat_prompt_tokens(messages, self.args.sim_image_tokens)
                else:
                    prompt = body.get("prompt")
                    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                        prompt = prompt[0]
                    if isinstance(prompt, str):
                        key = prompt.encode("utf-8", "surrogatepass")
                    elif (
                        isinstance(prompt, list)
                        and prompt
                        and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
                    ):
                        key = _canonical(prompt)
                    else:
                        raise BadRequest("prompt must be a string or a list of token ids")
                    n_prompt = text_prompt_tokens(prompt)
                digest = hashlib.blake2b(model_key + key, digest_size=24).digest()
                text, n_out, finish = self._lengths(body, digest)
            except BadRequest as e:
                return _error(400, str(e), "BadRequestError")
            await eng.generate(n_prompt, n_out)
            rid = body.get("request_id") or request.headers.get("X-Request-Id")
            rid = str(rid) if rid else uuid.uuid4().hex
            usage = {
                "prompt_tokens": n_prompt,
                "completion_tokens": n_out,
                "total_tokens": n_prompt + n_out,
            }
            model = body.get("model") or self.names[0]
            if chat:
                choice = {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "tool_calls": []},
                    "logprobs": None,
                    "finish_reason": finish,
                    "stop_reason": None,
                }
                out = {"id": f"chatcmpl-{rid}", "object": "chat.completion"}
            else:
                choice = {
                    "index": 0,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": finish,
                    "stop_reason": None,
                }
                out = {"id": f"cmpl-{rid}", "object": "text_completion"}
            out.update(created=int(time.time()), model=model, choices=[choice], usage=usage)
            ok = True
            return web.json_response(out)
        finally:
            eng.request_ended(ok)

    async def completions(self, request: web.Request) -> web.Response:
        return await self._serve(request, chat=False)

    async def chat(self, request: web.Request) -> web.Response:
        return await self._serve(request, chat=True)


def _write_stats(engine: Engine, stats_dir: str | None) -> None:
    """/sim/stats as ``<stats_dir>/sim-<pid>.json``, replaced atomically."""
    if not stats_dir:
        return
    path = os.path.join(stats_dir, f"sim-{os.getpid()}.json")
    tmp = path + ".tmp"
    with contextlib.suppress(OSError):
        with open(tmp, "w") as f:
            json.dump(engine.stats(), f)
        os.replace(tmp, path)


async def _write_stats_every_second(engine: Engine, stats_dir: str | None) -> None:
    if not stats_dir:
        return
    os.makedirs(stats_dir, exist_ok=True)
    while True:
        _write_stats(engine, stats_dir)
        await asyncio.sleep(1.0)


async def serve(args: argparse.Namespace) -> None:
    server = Server(args)
    runner = web.AppRunner(server.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, backlog=1024, reuse_address=True)
    await site.start()
    server.ready_at = time.monotonic() + args.sim_startup_s
    print(
        f"sim-gpu-server: {server.names[0]} on http://{args.host}:{args.port} "
        f"(CUDA_VISIBLE_DEVICES={server.engine.device}, scale {args.sim_scale}, pid {os.getpid()})",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    scheduler = asyncio.create_task(server.engine.run())
    stopped = asyncio.create_task(stop.wait())
    writer = asyncio.create_task(_write_stats_every_second(server.engine, args.sim_stats_dir))
    await asyncio.wait({scheduler, stopped}, return_when=asyncio.FIRST_COMPLETED)
    crashed = scheduler.done() and not scheduler.cancelled() and scheduler.exception()
    scheduler.cancel()
    stopped.cancel()
    writer.cancel()
    _write_stats(server.engine, args.sim_stats_dir)
    await runner.cleanup()
    server.engine.pool.shutdown(wait=False, cancel_futures=True)
    if crashed:
        raise crashed


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
