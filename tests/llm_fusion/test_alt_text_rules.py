"""Table-driven test of the AltText skip rules and the AltText bound."""

from __future__ import annotations

import pytest

from llm_fusion.alt_text_rules import (
    SkipReason,
    alt_text_in_visual_caption,
    skip_reason,
    truncate_alt_text,
)

SKIP_CASES = [
    (None, SkipReason.EMPTY),
    ("", SkipReason.EMPTY),
    ("   \t\n ", SkipReason.EMPTY),
    ("IMG_1234.jpg", SkipReason.FILE_NAME),
    ("DSC0001.JPG", SkipReason.FILE_NAME),
    ("dscn0042", SkipReason.FILE_NAME),
    ("IMG_20190512_101010", SkipReason.FILE_NAME),
    ("PXL_20230101_123456789", SkipReason.FILE_NAME),
    ("P1010001", SkipReason.FILE_NAME),
    ("Screenshot 2023-04-01 at 10.11.12", SkipReason.FILE_NAME),
    ("photo-2.PNG", SkipReason.FILE_NAME),
    ("banner_home_v2.webp", SkipReason.FILE_NAME),
    ("https://example.com/images/cat.jpg", SkipReason.URL),
    ("http://example.com", SkipReason.URL),
    ("www.example.org/page", SkipReason.URL),
    ("example.com", SkipReason.URL),
    ("image", SkipReason.BOILERPLATE),
    ("Image", SkipReason.BOILERPLATE),
    ("photo", SkipReason.BOILERPLATE),
    ("Photo 3 of 12", SkipReason.BOILERPLATE),
    ("image001", SkipReason.BOILERPLATE),
    ("Click here!", SkipReason.BOILERPLATE),
    ("click to enlarge", SkipReason.BOILERPLATE),
    ("Untitled", SkipReason.BOILERPLATE),
    ("untitled-1", SkipReason.BOILERPLATE),
    ("thumbnail", SkipReason.BOILERPLATE),
    ("No image available", SkipReason.BOILERPLATE),
    ("placeholder", SkipReason.BOILERPLATE),
    ("1234", SkipReason.NO_WORDS),
    ("---", SkipReason.NO_WORDS),
    ("B07XJ8C8F3", SkipReason.NO_WORDS),
    ("5f2a9c1e-77b0-4d2e", SkipReason.NO_WORDS),
]


@pytest.mark.parametrize(("alt_text", "reason"), SKIP_CASES)
def test_skip_reason(alt_text: str | None, reason: SkipReason) -> None:
    assert skip_reason(alt_text) == reason


KEEP_CASES = [
    "Rustic bathroom style.",
    "Paris",
    "Eiffel Tower at night",
    "Nike Air Max 90",
    "P-38 Lightning at the airshow",
    "Sam and Anna at their wedding",
    "Photo of the Golden Gate Bridge",
    "My dog.jpg collection: Max on the beach",
    "東京タワー",
    "iPhone 15 Pro in blue",
    "Image of the day: a comet over Arizona",
]


@pytest.mark.parametrize("alt_text", KEEP_CASES)
def test_informative_alt_text_goes_to_the_llm(alt_text: str) -> None:
    assert skip_reason(alt_text) is None


def test_extra_boilerplate_is_configurable() -> None:
    assert skip_reason("Product shot") is None
    assert (
        skip_reason("Product shot", extra_boilerplate=("product shot",)) == SkipReason.BOILERPLATE
    )


def test_truncate_alt_text_cuts_at_a_word() -> None:
    text = "word " * 200
    out = truncate_alt_text(text, 50)
    assert len(out) <= 50
    assert out.split() == ["word"] * len(out.split())
    assert truncate_alt_text("  a\n b  ", 50) == "a b"


def test_truncate_alt_text_without_spaces_cuts_hard() -> None:
    assert truncate_alt_text("x" * 100, 30) == "x" * 30


@pytest.mark.parametrize(
    ("alt_text", "covered"),
    [
        ("dog", True),
        ("Dogs on the beach", True),
        ("a brown dog", True),
        ("Max the dog", False),
        ("dog at Brighton", False),
        ("Labrador", False),
    ],
)
def test_alt_text_already_in_the_visual_caption(alt_text: str, covered: bool) -> None:
    vc = "A brown dog running on a sandy beach near the water."
    assert alt_text_in_visual_caption(alt_text, vc) is covered


def test_truncate_decodes_html_entities() -> None:
    assert truncate_alt_text("Tom &amp; Jerry&#39;s  house", 100) == "Tom & Jerry's house"
