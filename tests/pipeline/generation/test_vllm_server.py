"""vecap's vLLM engine servers for real (vLLM's CPU build, in .venv-vllm): many concurrent
callers on one server each get their own rows' outputs, equal to one offline ``LLM.generate``
on the same inputs — captions too, whose prompt reaches the server through the
``{{ vecap_prompt }}`` request template."""

from __future__ import annotations

import importlib.util
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

if importlib.util.find_spec("vllm") is None:  # checked without importing: env comes first
    pytest.skip("vLLM lives in .venv-vllm (make test builds it)", allow_module_level=True)

from tests.vllm_env import configure_vllm_for_tests  # noqa: E402

configure_vllm_for_tests("vecap-vllm-server-")  # before vLLM is imported

from pipeline.generation import GenerationConfig, load_generator, render_chat  # noqa: E402
from tests.fixtures.sim_engines import stop_all  # noqa: E402
from tests.llava_recap.conftest import jpeg_bytes, make_image  # noqa: E402

PROMPT = "Describe the image concisely, less than 20 words."
THREADS = 8


def _cfg(model, engine: str) -> GenerationConfig:
    return GenerationConfig(
        model=str(model),
        backend="vllm",
        vllm_engine=engine,
        device="cpu",
        dtype="float32",
        max_new_tokens=16,
        enforce_eager=True,
        max_model_len=512,
        server_start_timeout_s=600,
    )


@pytest.fixture(scope="module")
def servers(tiny_models, tmp_path_factory):
    """Both tiny models' servers, started together (each takes ~50 s on CPU)."""
    engines = tmp_path_factory.mktemp("engines")
    os.environ["VECAP_ENGINE_DIR"] = str(engines)
    os.environ.pop("VECAP_ENGINE_SERVER_CMD", None)
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)  # a CPU machine: one engine
    try:
        with ThreadPoolExecutor(2) as pool:
            llava = pool.submit(load_generator, _cfg(tiny_models.llava, "server"), True)
            llm = pool.submit(load_generator, _cfg(tiny_models.llm, "server"), False)
            yield llava.result(), llm.result()
    finally:
        stop_all(engines)
        os.environ.pop("VECAP_ENGINE_DIR", None)


def _together(call, jobs: list) -> list:
    barrier = threading.Barrier(len(jobs))

    def run(job):
        barrier.wait()
        return call(job)

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(run, jobs))


def test_concurrent_caption_callers_equal_one_offline_generate(servers, tiny_models):
    from llava_recap.caption_rows import decode_image

    server, _ = servers
    offline = load_generator(_cfg(tiny_models.llava, "offline"), multimodal=True)
    prompt = render_chat(server.processor, PROMPT, image=True, fallback_template="x")
    images = [
        decode_image(jpeg_bytes(make_image(700 + i, (40 + 3 * i, 36 + i)))) for i in range(16)
    ]
    expected = offline.generate([prompt] * len(images), images)  # every prompt in one call
    jobs = [images[i::THREADS] for i in range(THREADS)]  # each thread its own rows
    got = _together(lambda ims: server.generate([prompt] * len(ims), ims), jobs)
    for t, ims in enumerate(jobs):
        assert got[t] == [expected[images.index(im)] for im in ims]
    assert len(set(expected)) > 1  # distinct images, distinct captions: a swap would show


def test_concurrent_text_callers_equal_one_offline_generate(servers, tiny_models):
    _, server = servers
    offline = load_generator(_cfg(tiny_models.llm, "offline"), multimodal=False)
    users = [f"Merge 'photo {i}' with 'a red bicycle number {i}'." for i in range(32)]
    prompts = server.render_prompts(users)
    assert prompts == offline.render_prompts(users)  # one template on both paths
    expected = offline.generate(prompts)
    jobs = [prompts[i::THREADS] for i in range(THREADS)]
    got = _together(server.generate, jobs)
    for t, job in enumerate(jobs):
        assert got[t] == [expected[prompts.index(p)] for p in job]
    peak = max(s["peak_in_flight"] for s in server.stats().values())
    assert peak > THREADS  # the engine saw many requests at once, not one batch at a time
