"""bench/sim_gpu_server.py: the OpenAI-compatible answers, and the latency model's figures.

Every server is the script run by path in a child process, with the network tripwire's env.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import importlib.util
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.net_tripwire import LOG_ENV, REPO_ROOT, child_env

SCRIPT = REPO_ROOT / "bench" / "sim_gpu_server.py"
_spec = importlib.util.spec_from_file_location("sim_gpu_server", SCRIPT)
sim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sim)

KEY = "secret-key"
PROMPT_600 = "x" * 2396  # 2396 // 4 + 1 = 600 prompt tokens, a caption's (576 image + text)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k != "CUDA_VISIBLE_DEVICES" and not k.startswith("VECAP_SIM_")
    }
    env = child_env(os.environ.get(LOG_ENV, os.devnull), base)
    env.update(extra)
    return env


class Server:
    def __init__(self, log_dir: Path, *flags: str, wait: bool = True, **env: str):
        self.port = _free_port()
        self.log = log_dir / f"sim-{self.port}.log"
        cmd = [sys.executable, str(SCRIPT), "--port", str(self.port), *flags]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                cmd, env=_env(**env), stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT
            )
        if wait:
            self.wait_healthy()

    def get(self, path: str, headers: dict | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def post(self, path: str, body, key: str | None = KEY) -> tuple[int, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()

    def wait_listening(self, timeout: float = 20.0) -> int:
        """The first /health status once the port accepts connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                return self.get("/health")[0]
            except OSError:
                time.sleep(0.02)
        raise AssertionError(f"not listening after {timeout}s: {self.log.read_text()}")

    def wait_healthy(self, timeout: float = 20.0) -> None:
        self.wait_listening(timeout)
        deadline = time.monotonic() + timeout
        while self.get("/health")[0] != 200:
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.02)

    def stats(self) -> dict:
        status, body = self.get("/sim/stats")
        assert status == 200
        return json.loads(body)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def servers(tmp_path):
    started: list[Server] = []

    def start(*flags: str, wait: bool = True, **env: str) -> Server:
        s = Server(tmp_path, *flags, wait=wait, **env)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """One fast server for the format tests: scale from $VECAP_SIM_SCALE, vLLM's extra flags."""
    s = Server(
        tmp_path_factory.mktemp("sim"),
        "--model", "/models/llava-1.5-7b-hf",
        "--served-model-name", "sim-llava",
        "--api-key", KEY,
        "--sim-startup-s", "0.05",
        "--dtype", "bfloat16",
        "--enable-prefix-caching",
        "--disable-log-requests",
        "--chat-template", "template.jinja",
        "--limit-mm-per-prompt", '{"image": 1}',
        VECAP_SIM_SCALE="0.01",
    )  # fmt: skip
    yield s
    s.stop()


def _completion(api: Server, prompt: str, **fields) -> dict:
    status, body = api.post("/v1/completions", {"model": "sim-llava", "prompt": prompt, **fields})
    assert status == 200, body
    return body


def _image_url(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def _chat_body(text: str, *images: str, **fields) -> dict:
    parts = [{"type": "text", "text": text}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in images]
    return {"model": "sim-llava", "messages": [{"role": "user", "content": parts}], **fields}


SENTENCE = re.compile(r"[a-z0-9 ]+\.")


# --------------------------------------------------------------------------- format


def test_health_is_503_during_the_startup_then_200(servers):
    s = servers("--model", "m", "--sim-startup-s", "1.0", wait=False)
    first = s.wait_listening()
    t0 = time.monotonic()
    assert first == 503
    assert s.post("/v1/completions", {"prompt": "a"}, key=None)[0] == 503
    s.wait_healthy()
    assert time.monotonic() - t0 > 0.7
    status, body = s.get("/v1/models")
    assert status == 200
    assert [m["id"] for m in json.loads(body)["data"]] == ["m"]  # served name defaults to --model


def test_refuses_a_host_that_is_not_loopback(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--port", "1", "--host", "0.0.0.0"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2 and "loopback" in out.stderr


def test_completions_in_openai_format(api):
    body = _completion(api, "hello there, a cat", request_id="req-17")
    assert body["id"] == "cmpl-req-17"
    assert body["object"] == "text_completion" and body["model"] == "sim-llava"
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert SENTENCE.fullmatch(choice["text"]) and 10 <= len(choice["text"].split()) <= 14
    usage = body["usage"]
    assert usage["prompt_tokens"] == len("hello there, a cat") // 4 + 1
    assert 25 <= usage["completion_tokens"] <= 40
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # max_tokens caps (finish "length"); min_tokens raises the count
    short = _completion(api, "hello there, a cat", max_tokens=5)
    assert short["usage"]["completion_tokens"] == 5
    assert short["choices"][0]["finish_reason"] == "length"
    forced = _completion(api, "hello there, a cat", max_tokens=60, min_tokens=60)
    assert forced["usage"]["completion_tokens"] == 60
    assert forced["choices"][0]["finish_reason"] == "length"
    long = _completion(api, "hello there, a cat", min_tokens=45, max_tokens=100)
    assert long["usage"]["completion_tokens"] == 45
    assert long["choices"][0]["finish_reason"] == "stop"
    assert short["id"] != long["id"] and short["id"].startswith("cmpl-")
    # unknown fields are ignored, the text depends on the prompt only
    assert long["choices"][0]["text"] == choice["text"]
    odd = _completion(api, "hello there, a cat", temperature=0.0, seed=3, stop_token_ids=[2],
                      skip_special_tokens=True, some_new_field={"x": 1})  # fmt: skip
    assert odd["choices"][0]["text"] == choice["text"]


def test_same_input_same_text_different_input_different_text(api):
    texts = [_completion(api, f"alt text number {i}")["choices"][0]["text"] for i in range(30)]
    assert len(set(texts)) == 30
    assert _completion(api, "alt text number 7")["choices"][0]["text"] == texts[7]


def test_chat_completions_hash_the_image_bytes(api):
    jpeg_a, jpeg_b = b"\xff\xd8 image a \xff\xd9", b"\xff\xd8 image b \xff\xd9"
    status, body = api.post(
        "/v1/chat/completions", _chat_body("Describe the image.", _image_url(jpeg_a),
                                           request_id="uid-9", max_tokens=77)
    )  # fmt: skip
    assert status == 200, body
    assert body["id"] == "chatcmpl-uid-9" and body["object"] == "chat.completion"
    (choice,) = body["choices"]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "stop"
    text = choice["message"]["content"]
    assert SENTENCE.fullmatch(text)
    assert body["usage"]["prompt_tokens"] == len("Describe the image.") // 4 + 1 + 576

    def chat_text(*args, **fields) -> str:
        status, body = api.post("/v1/chat/completions", _chat_body(*args, **fields))
        assert status == 200, body
        return body["choices"][0]["message"]["content"]

    # the same bytes under another data URL header: the same answer; other bytes: another
    assert chat_text("Describe the image.", _image_url(jpeg_a, "image/png")) == text
    assert chat_text("Describe the image.", _image_url(jpeg_b)) != text
    assert chat_text("Describe the photo.", _image_url(jpeg_a)) != text
    assert chat_text("Describe the image.", _image_url(jpeg_a),
                     chat_template_kwargs={"add_generation_prompt": True}) != text  # fmt: skip
    # a string content works too
    status, plain = api.post(
        "/v1/chat/completions",
        {"model": "sim-llava", "messages": [{"role": "user", "content": "Fuse these captions."}]},
    )
    assert status == 200 and plain["usage"]["prompt_tokens"] == len("Fuse these captions.") // 4 + 1


def test_api_key_wrong_model_and_malformed_bodies(api):
    body = {"model": "sim-llava", "prompt": "a"}
    assert api.post("/v1/completions", body, key=None)[0] == 401
    assert api.post("/v1/completions", body, key="wrong")[0] == 401
    assert api.get("/v1/models")[0] == 401
    assert api.get("/health")[0] == 200  # as vLLM's, /health needs no key
    status, models = api.get("/v1/models", {"Authorization": f"Bearer {KEY}"})
    assert status == 200 and [m["id"] for m in json.loads(models)["data"]] == ["sim-llava"]

    status, err = api.post("/v1/completions", {"model": "llava", "prompt": "a"})
    assert status == 404
    assert err["error"]["type"] == "NotFoundError" and "llava" in err["error"]["message"]
    assert api.post("/v1/chat/completions", {**_chat_body("a"), "model": "x"})[0] == 404
    for bad in (b"{not json", b"[1, 2]", json.dumps({"model": "sim-llava"}).encode()):
        status, err = api.post("/v1/completions", bad)
        assert status == 400 and err["error"]["type"] == "BadRequestError"
    assert api.post("/v1/completions", {"prompt": "a", "max_tokens": "many"})[0] == 400
    assert api.post("/v1/completions", {"prompt": "a", "max_tokens": 4, "min_tokens": 9})[0] == 400
    assert api.post("/v1/chat/completions", {"model": "sim-llava", "messages": "hi"})[0] == 400


def test_stats_and_reset(api):
    api.post("/sim/reset", {})
    for i in range(3):
        _completion(api, f"stats {i}", max_tokens=8, min_tokens=8)
    stats = api.stats()
    assert stats["cuda_visible_devices"] is None and stats["pid"] == api.proc.pid
    assert stats["model"] == "sim-llava" and stats["sim_scale"] == 0.01  # from $VECAP_SIM_SCALE
    assert stats["requests_done"] == 3 and stats["requests_failed"] == 0
    assert stats["max_in_flight"] == 1 and 0 < stats["mean_in_flight"] <= 1
    assert stats["prefill_tokens"] == 3 * (len("stats 0") // 4 + 1)
    assert stats["decode_tokens"] == 3 * 7  # the prefill step yields each first token
    assert stats["steps"] == 3 * 8
    # a step: scale * (t_step + prefill * t_prefill + decoders * t_decode)
    busy = 0.01 * (24 * sim.T_STEP_S + 6 * sim.T_PREFILL_TOKEN_S + 21 * sim.T_DECODE_SEQ_S)
    assert stats["busy_s"] == pytest.approx(busy)
    assert stats["elapsed_s"] >= stats["window_s"] > 0
    assert api.post("/sim/reset", {})[0] == 200
    zero = api.stats()
    assert zero["requests_done"] == 0 and zero["busy_s"] == 0 and zero["steps"] == 0


def test_stats_file_every_second_and_at_sigterm(servers, tmp_path):
    stats_dir = tmp_path / "stats"
    s = servers("--sim-startup-s", "0", "--sim-scale", "0.01", VECAP_SIM_STATS_DIR=str(stats_dir))
    path = stats_dir / f"sim-{s.proc.pid}.json"
    deadline = time.monotonic() + 10
    while not path.exists():  # written at start, then every second
        assert time.monotonic() < deadline, s.log.read_text()
        time.sleep(0.05)
    assert json.loads(path.read_text())["requests_done"] == 0
    t0 = time.time()
    for i in range(2):
        assert (
            s.post("/v1/completions", {"prompt": f"file {i}", "max_tokens": 4}, key=None)[0] == 200
        )
    t1 = time.time()
    s.stop()  # SIGTERM: the last figures are written on the way out
    assert s.proc.returncode == 0, s.log.read_text()
    stats = json.loads(path.read_text())
    assert stats["pid"] == s.proc.pid and stats["requests_done"] == 2
    assert t0 - 0.05 <= stats["first_request_unix"] <= stats["end_unix"] <= t1 + 0.05
    assert stats["end_unix"] - stats["first_request_unix"] == pytest.approx(
        stats["window_s"], abs=0.01
    )
    assert 0 < stats["cpu_s"] < 60
    assert not list(stats_dir.glob("*.tmp"))


def test_capacity_formula():
    args = sim.default_args()
    assert (args.max_num_seqs, args.max_num_batched_tokens) == (256, 8192)
    caption = sim.capacity(600, 32, args)
    assert 55 <= caption <= 60  # LLaVA-1.5-7B on an H100, full batch
    assert sim.capacity(600, 32, args, in_flight=16) < 0.65 * caption
    assert sim.capacity(600, 32, sim.default_args(sim_scale=2.0)) == pytest.approx(caption / 2)
    # the token budget binds when prompts are long
    assert sim.capacity(8000, 32, args) == pytest.approx(
        (8192 / 8031) / (6e-3 + 8192 / 8031 * (8000 * 23e-6 + 31 * 1e-4))
    )


# --------------------------------------------------------------------------- load


async def _closed_loop(
    ports: list[int], concurrency: int, warmup: float, window: float, seed: int = 0
) -> tuple[list[float], list[dict]]:
    """``concurrency`` clients per port, each sending its next request when its last one is
    answered: 600 prompt tokens, output tokens uniform in 16..48 (mean 32; the mix keeps the
    batch from moving in lockstep waves). Returns each port's completions/s in the window after
    the warm-up (its counters reset at the warm-up's end) and its /sim/stats at the window's end,
    taken while still loaded."""
    rng = random.Random(seed)
    done: dict[int, list[float]] = {p: [] for p in ports}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=120)
    ) as session:

        async def client(port: int, c: int) -> None:
            i = 0
            while True:
                n = rng.randint(16, 48)
                body = {"prompt": f"{port} {c} {i} " + PROMPT_600[: 2396 - 20],
                        "max_tokens": n, "min_tokens": n, "request_id": f"{c}-{i}"}  # fmt: skip
                async with session.post(
                    f"http://127.0.0.1:{port}/v1/completions", json=body, headers=headers
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    out = await resp.json()
                assert out["id"] == f"cmpl-{c}-{i}"
                done[port].append(time.monotonic())
                i += 1

        tasks = [asyncio.create_task(client(p, c)) for p in ports for c in range(concurrency)]
        await asyncio.sleep(warmup)
        for p in ports:
            async with session.post(f"http://127.0.0.1:{p}/sim/reset") as resp:
                assert resp.status == 200
        t0 = time.monotonic()
        await asyncio.sleep(window)
        t1 = time.monotonic()
        stats = []
        for p in ports:
            async with session.get(f"http://127.0.0.1:{p}/sim/stats") as resp:
                stats.append(await resp.json())
        for t in tasks:
            assert not t.done() or t.cancelled(), t.exception()
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    rates = [sum(t0 <= t < t1 for t in done[p]) / (t1 - t0) for p in ports]
    return rates, stats


SAT_FLAGS = ("--model", "m", "--sim-startup-s", "0.05", "--api-key", KEY, "--max-num-seqs", "32")
SCALE = 2.0  # a GPU half as fast: ~22 requests/s at saturation, little CPU on 2 cores


@pytest.mark.slow
def test_saturated_rate_matches_capacity_and_4_in_flight_is_far_below(servers):
    s = servers(*SAT_FLAGS, "--sim-scale", str(SCALE))
    args = sim.parse_args(["--port", "0", *SAT_FLAGS, "--sim-scale", str(SCALE)])
    predicted = sim.capacity(600, 32, args)

    (rate,), (stats,) = asyncio.run(_closed_loop([s.port], 128, warmup=2.0, window=4.0))
    print(f"saturated: {rate:.1f}/s vs capacity {predicted:.1f}/s; stats {stats}")
    assert 0.75 * predicted <= rate <= 1.25 * predicted
    assert stats["requests_done"] / stats["elapsed_s"] == pytest.approx(rate, rel=0.15)
    assert stats["busy_s"] >= 0.9 * stats["elapsed_s"]  # the GPU never idles
    assert 115 <= stats["mean_in_flight"] <= 128 and stats["max_in_flight"] == 128
    assert 30 <= stats["mean_running"] <= 32

    deadline = time.monotonic() + 20  # the cancelled requests leave (aborted) before the next
    while (st := s.stats())["in_flight"] or st["running"]:
        assert time.monotonic() < deadline, st
        time.sleep(0.05)
    (rate4,), (stats4,) = asyncio.run(_closed_loop([s.port], 4, warmup=0.5, window=3.0, seed=1))
    predicted4 = sim.capacity(600, 32, args, in_flight=4)
    print(f"4 in flight: {rate4:.1f}/s vs model {predicted4:.1f}/s; stats {stats4}")
    assert rate4 < 0.5 * predicted
    assert 0.7 * predicted4 <= rate4 <= 1.3 * predicted4
    assert 3.5 <= stats4["mean_in_flight"] <= 4.0 and stats4["max_in_flight"] == 4
    assert stats4["mean_running"] <= 4.0


@pytest.mark.slow
def test_two_processes_on_one_gpu_share_its_time(servers, tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": "3", "VECAP_SIM_GPU_DIR": str(tmp_path)}
    a = servers(*SAT_FLAGS, "--sim-scale", str(SCALE), **env)
    b = servers(*SAT_FLAGS, "--sim-scale", str(SCALE), "--served-model-name", "fusion", **env)
    args = sim.parse_args(["--port", "0", *SAT_FLAGS, "--sim-scale", str(SCALE)])
    predicted = sim.capacity(600, 32, args)

    rates, stats = asyncio.run(_closed_loop([a.port, b.port], 64, warmup=3.0, window=4.0))
    busy = [st["busy_s"] for st in stats]
    shares = [x / sum(busy) for x in busy]
    print(f"shared GPU: rates {rates} (sum {sum(rates):.1f}/s, one GPU {predicted:.1f}/s), "
          f"busy shares {shares}; stats {stats}")  # fmt: skip
    assert [st["cuda_visible_devices"] for st in stats] == ["3", "3"]
    assert all(0.35 <= x <= 0.65 for x in shares)
    assert 0.75 * predicted <= sum(rates) <= 1.25 * predicted  # one GPU's rate, not two
    assert sum(busy) <= 1.1 * max(st["elapsed_s"] for st in stats)  # never both at once
    assert (tmp_path / "sim-gpu-3.lock").exists()


def test_die_after_kills_once_then_the_restart_lives(servers, tmp_path):
    once = tmp_path / "died-once"
    env = {"VECAP_SIM_DIE_AFTER": "3", "VECAP_SIM_DIE_ONCE_FILE": str(once)}
    flags = ("--model", "m", "--sim-startup-s", "0.05", "--sim-scale", "0.2")

    async def send(port: int, n: int) -> list:
        async with aiohttp.ClientSession() as session:

            async def one(i: int):
                url = f"http://127.0.0.1:{port}/v1/completions"
                body = {"prompt": f"row {i}", "max_tokens": 30, "min_tokens": 30}
                async with session.post(url, json=body) as resp:
                    return resp.status

            return await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)

    first = servers(*flags, **env)
    assert once.exists()
    results = asyncio.run(send(first.port, 5))
    assert first.proc.wait(10) == 137
    assert all(isinstance(r, aiohttp.ClientError) for r in results), results

    second = servers(*flags, **env)
    assert asyncio.run(send(second.port, 5)) == [200] * 5
    assert second.proc.poll() is None and second.stats()["requests_done"] == 5
