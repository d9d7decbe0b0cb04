"""The text-LLM ModelHandler: batching controls, alignment, batch isolation, error lines."""

from __future__ import annotations

import pickle

import pytest

from llm_fusion.errors import describe_error
from llm_fusion.handler import TextLLMHandler
from pipeline.generation import GenerationConfig
from tests.llm_fusion.fakes import EchoGenerator, load_echo
from tests.llm_fusion.test_fusion_stage import rec

GEN = GenerationConfig(model="fake-llm", batch_size=8, min_batch_size=2, max_batch_duration_secs=3)


def _user_text(record) -> str:
    return f"<alt_text>{record.alt_text}</alt_text> Caption:"


def test_batching_controls_come_from_the_generation_config() -> None:
    handler = TextLLMHandler(GEN, _user_text, share_model_across_processes=True)
    assert handler.batch_elements_kwargs() == {
        "min_batch_size": 2,
        "max_batch_size": 8,
        "max_batch_duration_secs": 3,
    }
    assert handler.share_model_across_processes() is True
    assert handler.get_num_bytes([rec(1, "abc", vc="de")]) == 5  # text only, not image bytes
    pickle.loads(pickle.dumps(handler))  # Beam ships it to workers


def test_results_stay_aligned_with_their_rows() -> None:
    handler = TextLLMHandler(GEN, _user_text, generator_loader=load_echo)
    model = handler.load_model()
    rows = [rec(i, f"row {i}") for i in range(5)]
    results = handler.run_inference(rows, model)
    assert [r.example for r in results] == rows
    assert [r.inference for r in results] == [
        f"Sure, here is the merged caption: A photo of row {i} on a sunny day." for i in range(5)
    ]
    assert {r.model_id for r in results} == {"fake-llm"}


def test_isolation_fails_only_the_poison_row() -> None:
    handler = TextLLMHandler(GEN, _user_text, generator_loader=load_echo)
    rows = [rec(0, "fine"), rec(1, "BOOM"), rec(2, "also fine")]
    results = handler.run_inference(rows, handler.load_model())
    assert isinstance(results[1].inference, RuntimeError)
    assert isinstance(results[0].inference, str) and isinstance(results[2].inference, str)


def test_without_isolation_the_batch_raises() -> None:
    handler = TextLLMHandler(
        GEN, _user_text, generator_loader=load_echo, isolate_failed_batches=False
    )
    with pytest.raises(RuntimeError, match="out of memory"):
        handler.run_inference([rec(0, "fine"), rec(1, "BOOM")], handler.load_model())


class _ShortGenerator(EchoGenerator):
    def generate(self, prompts, images=None):
        return super().generate(prompts)[:-1]


def test_a_generator_that_drops_outputs_is_an_error() -> None:
    handler = TextLLMHandler(
        GEN, _user_text, generator_loader=_ShortGenerator, isolate_failed_batches=False
    )
    with pytest.raises(RuntimeError, match="2 outputs for 3 prompts"):
        handler.run_inference([rec(i, "x") for i in range(3)], handler.load_model())


def test_describe_error_forms() -> None:
    assert describe_error(ValueError("bad")) == "ValueError: bad"
    beam_tuple = (RuntimeError, "RuntimeError('x')", ["Traceback ...\n", "RuntimeError: x\n"])
    assert describe_error(beam_tuple) == "RuntimeError: x"
    assert describe_error("plain\nmessage") == "plain message"
    assert len(describe_error("y" * 1000)) == 300
