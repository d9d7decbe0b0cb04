"""Output cleaning, table-driven."""

from __future__ import annotations

import pytest

from llava_recap.cleaning import clean_caption

PROMPT = "Describe the image concisely, less than 20 words."


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  A dog on a beach.  ", "A dog on a beach."),
        ("A dog\n\n on   a\tbeach.", "A dog on a beach."),
        ("a dog on a beach", "a dog on a beach"),  # no sentence end at all: kept whole
        ("A dog on a beach. Two kids play with a", "A dog on a beach."),
        ("A dog runs! The sun is", "A dog runs!"),
        ('He said "hi." And then', 'He said "hi."'),
        ("A man (in red.) walks by the", "A man (in red.)"),
        ("The price is 3.5 dollars", "The price is 3.5 dollars"),  # decimal point is no end
        (f"{PROMPT} A cat on a sofa.", "A cat on a sofa."),
        (f"{PROMPT.upper()}  A cat on a sofa.", "A cat on a sofa."),
        ("ASSISTANT: A cat on a sofa.", "A cat on a sofa."),
        ("Assistant: Caption: A cat on a sofa.", "A cat on a sofa."),
        (f"ASSISTANT: {PROMPT} ASSISTANT: A red car.", "A red car."),
        ("", ""),
        ("   \n\t ", ""),
        (PROMPT, ""),  # only an echo: nothing left, the stage marks the row failed
        ("A photo of a cat?", "A photo of a cat?"),
    ],
)
def test_clean_caption(raw, expected):
    assert clean_caption(raw, PROMPT) == expected


def test_clean_caption_without_prompt_keeps_text():
    assert clean_caption(f"{PROMPT} x.") == f"{PROMPT} x."
