"""Table-driven tests of the output cleaner and the rejection rules."""

from __future__ import annotations

import pytest

from llm_fusion.cleaning import (
    RejectReason,
    bound_length,
    clean_output,
    cut_unfinished_sentence,
    rejection_reason,
)
from llm_fusion.clip_tokens import ApproxClipTokenCounter
from llm_fusion.prompts import VECLIP_FUSE_V1

CLEAN_CASES = [
    ("A dog on a beach.", "A dog on a beach."),
    ("  A dog   on a\tbeach. ", "A dog on a beach."),
    ("Sure, here is the merged caption: A dog on a beach.", "A dog on a beach."),
    ("Sure! Here's a fused caption that keeps both:\nA dog on a beach.", "A dog on a beach."),
    ("Certainly. New caption: A dog on a beach.", "A dog on a beach."),
    ("New caption: A dog on a beach.", "A dog on a beach."),
    ("Caption: A dog on a beach.", "A dog on a beach."),
    ("New Sentence: A dog on a beach.", "A dog on a beach."),
    ("**Merged caption:** A dog on a beach.", "A dog on a beach."),
    ("ASSISTANT: A dog on a beach.", "A dog on a beach."),
    ('"A dog on a beach."', "A dog on a beach."),
    ("\u201cA dog on a beach.\u201d", "A dog on a beach."),
    ('"A dog on a beach".', "A dog on a beach."),
    ("'A dog on a beach.'", "A dog on a beach."),
    ('Caption: "A dog on a beach."', "A dog on a beach."),
    ("A **golden** dog on a *sandy* beach.", "A golden dog on a sandy beach."),
    ("# A dog on a beach.", "A dog on a beach."),
    ("- A dog on a beach.", "A dog on a beach."),
    ("`A dog on a beach.`", "A dog on a beach."),
    (
        "A dog on a beach.\n\nThis caption combines the AltText with the visual caption.",
        "A dog on a beach.",
    ),
    ("A dog on a beach.\nNote: I kept the breed from the AltText.", "A dog on a beach."),
    ("A dog on a beach. It runs towards the", "A dog on a beach."),
    ("A dog on a beach with a red", "A dog on a beach with a red"),
    ("A dog on a beach with a red,", "A dog on a beach with a red"),
    ("A dog in St. Louis near the", "A dog in St. Louis near the"),
    ("Tom &amp; Jerry on a sofa.", "Tom & Jerry on a sofa."),
    ("A dog on a beach\nwith a ball.", "A dog on a beach with a ball."),
    ('"Hello" and "goodbye" signs on a door.', '"Hello" and "goodbye" signs on a door.'),
    ("Sure-footed goat on a cliff.", "Sure-footed goat on a cliff."),
    ("Here is a dog: a golden retriever.", "Here is a dog: a golden retriever."),
    ("Description-free art on a wall.", "Description-free art on a wall."),
    ("", ""),
    ("   \n  ", ""),
]


@pytest.mark.parametrize(("raw", "expected"), CLEAN_CASES)
def test_clean_output(raw: str, expected: str) -> None:
    assert clean_output(raw) == expected


def test_clean_output_bounds_length_in_clip_tokens() -> None:
    counter = ApproxClipTokenCounter()
    sentence = "A golden dog runs along a sandy beach at sunset near the old harbour. "
    raw = sentence * 10
    cleaned = clean_output(raw, max_tokens=40, counter=counter)
    assert counter.count(cleaned) <= 40
    assert cleaned.endswith("harbour.")  # cut at a sentence end, not mid-word
    assert cleaned.startswith("A golden dog")


def test_bound_length_cuts_at_word_when_no_sentence_end() -> None:
    counter = ApproxClipTokenCounter()
    text = " ".join(["dog"] * 100)
    out = bound_length(text, 20, counter)
    assert counter.count(out) == 20
    assert out.split() == ["dog"] * 20


def test_cut_unfinished_sentence_keeps_finished_text() -> None:
    assert cut_unfinished_sentence("One. Two!") == "One. Two!"
    assert cut_unfinished_sentence('He said "hi."') == 'He said "hi."'
    assert cut_unfinished_sentence("Dr. Who on a sofa. The") == "Dr. Who on a sofa."


REJECT_CASES = [
    ("", RejectReason.EMPTY),
    ("...", RejectReason.EMPTY),
    ("I'm sorry, but I cannot help with that.", RejectReason.REFUSAL),
    ("I am sorry, I can't merge these.", RejectReason.REFUSAL),
    ("As an AI language model, I cannot see images.", RejectReason.REFUSAL),
    ("I cannot combine these sentences.", RejectReason.REFUSAL),
    ("Unfortunately, I do not have enough information.", RejectReason.REFUSAL),
    ("A dog on a beach, as an AI would describe it.", RejectReason.REFUSAL),
    ("<alt_text>A dog</alt_text>", RejectReason.PROMPT_COPY),
    (
        "The rustic bathroom style features a well-decorated space with a window, sink, "
        "toilet, and shelves, creating comfort and charm.",
        RejectReason.PROMPT_COPY,
    ),
    # the in-context example's visual caption is part of the prompt, too
    (
        "The bathroom is well-decorated with a window, sink, toilet, and shelves.",
        RejectReason.PROMPT_COPY,
    ),
    (
        "Merge the two descriptions of the same image below into one concise, fluent caption.",
        RejectReason.PROMPT_COPY,
    ),
    ("#$% &&& 1x2z ### @@@ ~~~", RejectReason.NON_WORDS),
    ("xkcdq brrtzl qwrtp dog mnbvc", RejectReason.NON_WORDS),
    ("dog dog dog dog dog dog dog dog dog dog", RejectReason.REPETITION),
    ("b ligh acrombin withying withying withying withying withying", RejectReason.REPETITION),
    ("a dog with a ball and a ball and a ball and a ball", RejectReason.REPETITION),
]


@pytest.mark.parametrize(("cleaned", "reason"), REJECT_CASES)
def test_rejection_reason(cleaned: str, reason: RejectReason) -> None:
    got = rejection_reason(cleaned, instruction_text=VECLIP_FUSE_V1.instruction_text())
    assert got == reason


ACCEPT_CASES = [
    "A golden retriever named Max runs on Brighton beach at sunset.",
    "The Eiffel Tower in Paris at night, lit up against a dark sky.",
    "Nike Air Max 90 sneakers in white and red on a wooden floor.",
    "Eine Katze schläft auf einem Sofa.",
    "東京タワーの夜景",
    "A 1967 Ford Mustang, 289 V8, parked at 5th Avenue.",
    # the row's own data is not part of the instruction text: repeating it is no echo
    "A small dog sits on a red sofa next to a window with white curtains.",
    # sharing one short phrase with the instructions is not an echo
    "Merge of two rivers seen from a bridge in Koblenz, with boats on the water.",
    # a little repetition is language, not a loop
    "New York, New York: the skyline at night with the moon, the moon over the river.",
    "Bang bang bang: a poster of the 1966 song on a brick wall.",
]


@pytest.mark.parametrize("cleaned", ACCEPT_CASES)
def test_rejection_accepts_real_captions(cleaned: str) -> None:
    assert rejection_reason(cleaned, instruction_text=VECLIP_FUSE_V1.instruction_text()) is None
