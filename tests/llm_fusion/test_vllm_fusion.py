"""The fusion stage on the vLLM backend, for real on CPU, in .venv-vllm (``make test`` runs it).

Skipped where vLLM is not importable (the main .venv). Under greedy decoding the vLLM backend
must give the same fused captions as transformers, inside the Beam stage; a prompt over the
model's context, which vLLM refuses, must fail only its own row.
"""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

# checked without importing, and before the vLLM environment is set: a skipped module must not
# leave HF_HUB_OFFLINE and friends in the environment of the tests that run after it
if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM lives in .venv-vllm (make test builds it)", allow_module_level=True)

from tests.vllm_env import configure_vllm_for_tests  # noqa: E402

configure_vllm_for_tests("vecap-vllm-fusion-")  # before vLLM is imported

pytest.importorskip("vllm", reason="vLLM lives in .venv-vllm (make test builds it)")

from llm_fusion.config import FusionConfig  # noqa: E402
from llm_fusion.stage import FusionStage  # noqa: E402
from pipeline.generation import GenerationConfig  # noqa: E402
from schemas import Status  # noqa: E402
from tests.llm_fusion.fakes import run_transform  # noqa: E402
from tests.llm_fusion.test_fusion_stage import rec  # noqa: E402

# The tiny Llama's context is 512 positions and its small BPE splits words finely: a short
# user prompt keeps every normal row inside it.
SHORT_PROMPT = "Merge {alt_text} and {visual_caption} into one caption.\nCaption:"


def _config(model, backend: str, prompt_file: str) -> FusionConfig:
    gen = GenerationConfig(
        model=str(model),
        backend=backend,
        device="cpu",
        dtype="float32",
        max_new_tokens=16,
        enforce_eager=True,
        max_model_len=512,
        batch_size=4,
        vllm_engine="offline",  # in-process (tests/pipeline/generation/test_vllm_server.py: servers)
    )
    # the long-AltText bound is lifted so one row can overflow the context on purpose
    return FusionConfig(generation=gen, prompt_file=prompt_file, max_alt_text_chars=20_000)


def test_vllm_fuses_like_transformers_and_isolates_an_overlong_row(tiny_models, tmp_path):
    prompt_file = tmp_path / "short.txt"
    prompt_file.write_text(SHORT_PROMPT)
    rows = [
        rec(i, alt)
        for i, alt in enumerate(
            [
                "The old bridge in Prague",
                "Max the dog at Brighton beach",
                "A red car in Rome",
                "Big Ben at noon",
                "Lake Bled in Slovenia",
            ]
        )
    ]
    rows.append(rec(5, "IMG_0001.jpg"))
    rows.append(rec(6, "x", status=Status.TIMEOUT.value, vc=None))
    rows.append(rec(7, "the old bridge " * 400))  # far over 512 tokens: vLLM refuses it

    results = {}
    for backend in ("transformers", "vllm"):
        stage = FusionStage(_config(tiny_models.llm, backend, str(prompt_file)))
        (tmp_path / backend).mkdir()
        out = run_transform(stage, rows, tmp_path / backend)
        assert sorted(r.uid for r in out) == [r.uid for r in rows]
        results[backend] = {r.uid: r for r in out}

    vl, hf = results["vllm"], results["transformers"]
    for row in rows[:5]:
        assert vl[row.uid].status == "ok"
        assert vl[row.uid].fusion_prompt_id.startswith("short-")
        # greedy: same tokens, same cleaning, same caption and source
        assert (vl[row.uid].fused_caption, vl[row.uid].fusion_source) == (
            hf[row.uid].fused_caption,
            hf[row.uid].fusion_source,
        )
    # the comparison covered real generated text, not only fallbacks
    assert any(vl[row.uid].fusion_source == "llm" for row in rows[:5])
    assert vl[rows[5].uid].fusion_reason == "alt_file_name"
    assert vl[rows[6].uid] == rows[6]
    overlong = vl[rows[7].uid]
    assert overlong.fusion_source == "visual" and overlong.fusion_reason.startswith("llm_error")


@pytest.mark.parametrize("family", ["vicuna_v1.1", "llama-3"])
def test_vllm_renders_the_family_fallback_like_transformers(chat_family_models, family):
    """A checkpoint without a template on vLLM: its family's template, one BOS, as transformers."""
    from pipeline.generation import load_generator
    from tests.llm_fusion.test_chat_families import EXPECTED, U

    path = chat_family_models[family].without_template
    generator = load_generator(
        GenerationConfig(
            model=str(path),
            backend="vllm",
            vllm_engine="offline",
            dtype="float32",
            max_new_tokens=4,
            enforce_eager=True,
            max_model_len=512,
        ),
        multimodal=False,
    )
    assert generator.resolve_chat_template().source == f"fallback:{family}"
    (prompt,) = generator.render_prompts([U])
    assert prompt == EXPECTED[family]
    tokenizer = generator.processor
    ids = tokenizer(prompt)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    assert [isinstance(t, str) for t in generator.chat(["A dog.", "hi"])] == [True, True]
