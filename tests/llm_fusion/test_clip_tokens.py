"""The CLIP token bound: the estimate against counts from CLIP's real BPE, and the exact counter."""

from __future__ import annotations

import pickle

import pytest

from llm_fusion.clip_tokens import ApproxClipTokenCounter, HFTokenCounter, make_token_counter

# Real counts from OpenAI CLIP's BPE (bpe_simple_vocab_16e6, measured once offline; the vocab is
# not a dependency). The estimate must never be far below (a bounded caption must fit CLIP).
REAL_CLIP_COUNTS = [
    ("a photo of a cat", 5),
    (
        "The rustic bathroom style features a well-decorated space with a window, sink, toilet, "
        "and shelves, creating comfort and charm.",
        26,
    ),
    ("A golden retriever named Max runs on Brighton beach at sunset.", 12),
    ("Nike Air Max 90 sneakers in white and red, 2019 edition!", 17),
    ("photosynthesis in chloroplasts", 6),
]


@pytest.mark.parametrize(("text", "real"), REAL_CLIP_COUNTS)
def test_estimate_is_close_to_clip_and_not_below(text: str, real: int) -> None:
    estimate = ApproxClipTokenCounter().count(text)
    assert real <= estimate <= round(real * 1.3)


def test_digits_are_one_token_each_like_clip() -> None:
    assert ApproxClipTokenCounter().count("2019") == 4


def test_truncate_keeps_whole_pretokens() -> None:
    counter = ApproxClipTokenCounter()
    text = "a photo of a cat on a mat"
    assert counter.truncate(text, 5) == "a photo of a cat"
    assert counter.truncate(text, 100) == text
    assert counter.truncate(text, 0) == ""


@pytest.mark.slow  # builds the tiny models (shared session fixture)
def test_exact_counter_with_a_real_tokenizer(tiny_models) -> None:
    # the tiny Llama's tokenizer stands in for a CLIP tokenizer directory here
    counter = make_token_counter(str(tiny_models.llm))
    assert isinstance(counter, HFTokenCounter)
    text = "a dog running along the beach near the old bridge"
    n = counter.count(text)
    assert n >= 5
    cut = counter.truncate(text, 5)
    assert counter.count(cut) <= 5 and text.startswith(cut)
    clone = pickle.loads(pickle.dumps(counter))  # the loaded tokenizer is not pickled
    assert clone._tokenizer is None and clone.count(text) == n
