"""One generator called from 8 threads at once, as Beam's shared-model server calls it.

Beam's ``MultiProcessShared`` answers every SDK process on its own thread, so N processes call
``generate`` on one model at the same time. Each caller must get exactly what a call of its own
prompts alone gives, and the calls must reach the model one at a time (vLLM's engine crashes
or crosses outputs otherwise; see the vLLM half in test_vllm_concurrency.py).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline.generation import GenerationConfig, load_generator, render_chat
from tests.llava_recap.conftest import make_image
from tests.pipeline.generation.vllm_threads_probe import THREADS, text_jobs


@pytest.fixture(autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(model) -> GenerationConfig:
    return GenerationConfig(model=str(model), device="cpu", dtype="float32", max_new_tokens=8)


class _OverlapSpy:
    """Wraps a callable; records how many calls were inside it at once (at most)."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.active = 0
        self.peak = 0
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, *args, **kwargs):
        with self._lock:
            self.active += 1
            self.calls += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(0.02)  # widen the window so overlapping callers really overlap
            return self.fn(*args, **kwargs)
        finally:
            with self._lock:
                self.active -= 1


def _hammer(call, jobs: list) -> list:
    """``call(job)`` for every job, all threads released at once by a barrier."""
    barrier = threading.Barrier(len(jobs))

    def run(job):
        barrier.wait(timeout=60)
        return call(job)

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(run, jobs))


def test_text_generator_serves_concurrent_callers_their_own_outputs(tiny_models, monkeypatch):
    gen = load_generator(_config(tiny_models.llm), multimodal=False)
    jobs = text_jobs(gen.processor)
    alone = [gen.generate(prompts) for prompts in jobs]
    assert len({text for answers in alone for text in answers}) > THREADS  # varied answers
    spy = _OverlapSpy(gen.model.generate)
    monkeypatch.setattr(gen.model, "generate", spy)
    for _round in range(2):
        assert _hammer(gen.generate, jobs) == alone
    assert spy.calls == 2 * THREADS
    assert spy.peak == 1, f"{spy.peak} generate calls were inside the model at once"


def test_image_generator_serves_concurrent_callers_their_own_outputs(tiny_models, monkeypatch):
    gen = load_generator(_config(tiny_models.llava), multimodal=True)
    prompt = render_chat(gen.processor, "Describe the image.", image=True, fallback_template="x")
    jobs = [[make_image(100 + 10 * t + i) for i in range(1 + t % 3)] for t in range(THREADS)]
    alone = [gen.generate([prompt] * len(images), images) for images in jobs]
    spy = _OverlapSpy(gen.model.generate)
    monkeypatch.setattr(gen.model, "generate", spy)
    got = _hammer(lambda images: gen.generate([prompt] * len(images), images), jobs)
    assert got == alone
    assert spy.peak == 1, f"{spy.peak} generate calls were inside the model at once"
