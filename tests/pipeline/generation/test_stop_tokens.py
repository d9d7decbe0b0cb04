"""Stop tokens: one explicit set for both backends (the vLLM half: test_vllm_stop_tokens.py)."""

from __future__ import annotations

import json

import pytest

from pipeline.generation import GenerationConfig, load_generator
from pipeline.generation.stops import stop_token_ids


@pytest.fixture(autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_transformers_stops_at_eot_id_though_eos_is_end_of_text(tiny_llama3):
    meta = json.loads((tiny_llama3 / "vecap-stop.json").read_text())
    gen = load_generator(
        GenerationConfig(model=str(tiny_llama3), device="cpu", dtype="float32", max_new_tokens=12),
        multimodal=False,
    )
    assert gen.tokenizer.eos_token == "<|end_of_text|>"
    text = gen.generate([meta["prompt"]])[0]
    assert text == gen.tokenizer.decode(meta["before_stop"], skip_special_tokens=True)
    assert meta["eot_id"] in gen.stop_token_ids


def test_stop_set_holds_eos_end_of_turn_tokens_and_generation_config_eos(tiny_llama3):
    from transformers import AutoTokenizer
    from transformers import GenerationConfig as HFGenerationConfig

    tok = AutoTokenizer.from_pretrained(str(tiny_llama3))
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    assert stop_token_ids(tok) == [tok.eos_token_id, eot]
    gc = HFGenerationConfig(eos_token_id=[7, tok.eos_token_id])
    assert stop_token_ids(tok, gc) == [tok.eos_token_id, eot, 7]

    class ChatML:  # Qwen-style: eos <|endoftext|>, turns end with <|im_end|>
        eos_token_id = 151643
        unk_token_id = None

        def get_vocab(self):
            return {"<|endoftext|>": 151643, "<|im_end|>": 151645, "hi": 5}

    assert stop_token_ids(ChatML(), HFGenerationConfig(eos_token_id=151645)) == [151643, 151645]
