"""Child process of test_vllm_concurrency.py: 8 threads call one ``VllmGenerator`` at once.

Run as ``python -m tests.pipeline.generation.vllm_threads_probe TINY_LLM_DIR``; prints one JSON
line. A separate process because the failure this guards against is a segmentation fault of
the in-process engine, which would take the test session down with it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

THREADS = 8
ROUNDS = 3
WORDS = ("a dog", "a red car", "two people", "a bird", "a train", "a chef", "a horse", "a boat")


def text_jobs(processor) -> list[list[str]]:
    """One job per thread: distinct rendered prompts, t + 1 of them for thread t (a result
    handed to the wrong caller shows in its length too). Shared with test_concurrency.py."""
    from pipeline.generation import render_chat

    users = [f"{w}{extra}" for w in WORDS for extra in ("", " near the old bridge", " in the park")]
    return [
        [
            render_chat(
                processor, users[(7 * t + i) % len(users)], image=False, fallback_template="{user}"
            )
            for i in range(t + 1)
        ]
        for t in range(THREADS)
    ]


def main(model_dir: str) -> None:
    from pipeline.generation.vllm_backend import cpu_offline_env

    for key, value in cpu_offline_env(tempfile.mkdtemp(prefix="vecap-vllm-threads-")).items():
        os.environ.setdefault(key, value)
    from pipeline.generation import GenerationConfig, load_generator

    gen = load_generator(
        GenerationConfig(
            model=model_dir,
            backend="vllm",
            vllm_engine="offline",
            device="cpu",
            dtype="float32",
            max_new_tokens=8,
            enforce_eager=True,
            max_model_len=512,
        ),
        multimodal=False,
    )
    jobs = text_jobs(gen.processor)
    alone = [gen.generate(prompts) for prompts in jobs]

    # how many callers are inside the engine at once
    state = {"active": 0, "peak": 0}
    guard = threading.Lock()
    engine_generate = gen.llm.generate

    def spy(*args, **kwargs):
        with guard:
            state["active"] += 1
            state["peak"] = max(state["peak"], state["active"])
        try:
            return engine_generate(*args, **kwargs)
        finally:
            with guard:
                state["active"] -= 1

    gen.llm.generate = spy
    rounds = []
    for _ in range(ROUNDS):
        barrier = threading.Barrier(THREADS)

        def run(prompts, barrier=barrier):
            barrier.wait(timeout=120)
            return gen.generate(prompts)

        with ThreadPoolExecutor(THREADS) as pool:
            rounds.append(list(pool.map(run, jobs)))
    print(json.dumps({"alone": alone, "rounds": rounds, "peak": state["peak"]}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
