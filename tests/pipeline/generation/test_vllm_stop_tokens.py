"""Both backends stop at ``<|eot_id|>`` on a tiny Llama-3-style model (in .venv-vllm).

Its tokenizer's and generation config's eos is ``<|end_of_text|>``; the model ends its answer
with ``<|eot_id|>`` (tests/fixtures/tiny_llama3.py). Without one explicit stop set vLLM and
transformers both run past the answer.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM lives in .venv-vllm (make test builds it)", allow_module_level=True)

from tests.vllm_env import configure_vllm_for_tests  # noqa: E402

configure_vllm_for_tests("vecap-vllm-stop-")  # before vLLM is imported

from pipeline.generation import GenerationConfig, load_generator  # noqa: E402


def _config(model, backend: str) -> GenerationConfig:
    return GenerationConfig(
        model=str(model),
        backend=backend,
        device="cpu",
        dtype="float32",
        max_new_tokens=12,
        enforce_eager=True,
        max_model_len=256,
        vllm_engine="offline",  # in-process (tests/pipeline/generation/test_vllm_server.py: servers)
    )


def test_vllm_and_transformers_stop_at_the_same_token(tiny_llama3):
    meta = json.loads((tiny_llama3 / "vecap-stop.json").read_text())
    vl = load_generator(_config(tiny_llama3, "vllm"), multimodal=False)
    hf = load_generator(_config(tiny_llama3, "transformers"), multimodal=False)
    expected = hf.tokenizer.decode(meta["before_stop"], skip_special_tokens=True)
    out = vl.llm.generate([meta["prompt"]], vl._sampling, use_tqdm=False)[0].outputs[0]
    assert list(out.token_ids)[: len(meta["before_stop"])] == meta["before_stop"]
    # stopped at <|eot_id|> (the stop token itself is the last id, if vLLM reports it)
    assert out.finish_reason == "stop", out
    assert len(out.token_ids) <= len(meta["before_stop"]) + 1, list(out.token_ids)
    # vLLM's incremental detokenizer keeps the Metaspace's leading space; the stages strip it
    texts = [t.strip() for t in vl.generate([meta["prompt"]]) + hf.generate([meta["prompt"]])]
    assert texts == [expected, expected]
    assert vl.stop_token_ids == hf.stop_token_ids
    assert meta["eot_id"] in vl.stop_token_ids
