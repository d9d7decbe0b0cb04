"""VeCLIP's mixed caption sampling: frequencies, fallbacks, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clip_trainer.sampling import CaptionSampler, CaptionSource, clean_caption, count_sources

ROW = {"fused_caption": "a red circle", "alt_text": "IMG_0042.jpg"}


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9, 1.0])
def test_vec_frequency_matches_p(p: float) -> None:
    # n draws of a Bernoulli(p): the observed share is within 4 standard errors
    # (sqrt(p(1-p)/n) <= 0.0035 for n = 20000), i.e. a false failure about once in 16000 runs;
    # the seeds are fixed, so the test is also deterministic.
    n = 20_000
    sampler = CaptionSampler(vec_prob=p)
    sources = [sampler.choose(ROW, np.random.default_rng([7, i]))[1] for i in range(n)]
    share = sum(s is CaptionSource.VEC for s in sources) / n
    tolerance = 4 * math.sqrt(p * (1 - p) / n)
    assert abs(share - p) <= tolerance
    if p in (0.0, 1.0):  # the baselines are exact
        assert share == p


def test_choice_texts() -> None:
    sampler = CaptionSampler(vec_prob=0.5)
    seen = {sampler.choose(ROW, np.random.default_rng(i)) for i in range(50)}
    assert seen == {("a red circle", CaptionSource.VEC), ("IMG_0042.jpg", CaptionSource.ALT)}


def test_missing_vec_falls_back_to_alt_and_is_counted() -> None:
    sampler = CaptionSampler(vec_prob=1.0)
    for missing in (None, "", "   "):
        row = {"fused_caption": missing, "alt_text": "  a   red circle "}
        assert sampler.choose(row, np.random.default_rng(0)) == (
            "a red circle",
            CaptionSource.ALT_FALLBACK,
        )
    alt_only = CaptionSampler(vec_prob=0.0)
    assert alt_only.choose(
        {"fused_caption": "vec", "alt_text": None}, np.random.default_rng(0)
    ) == (
        "vec",
        CaptionSource.VEC_FALLBACK,
    )
    assert (
        sampler.choose({"fused_caption": None, "alt_text": None}, np.random.default_rng(0)) is None
    )


def test_vec_field_is_configurable() -> None:
    row = {"fused_caption": "fused", "visual_caption": "visual", "alt_text": "alt"}
    sampler = CaptionSampler(vec_prob=1.0, vec_field="visual_caption")
    assert sampler.choose(row, np.random.default_rng(0)) == ("visual", CaptionSource.VEC)


def test_same_rng_same_choice_even_when_a_caption_is_missing() -> None:
    # The draw is made whatever the row holds, so later draws from the same generator
    # (the crop) do not shift with the data.
    sampler = CaptionSampler(vec_prob=0.5)
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    sampler.choose(ROW, a)
    sampler.choose({"fused_caption": None, "alt_text": "x"}, b)
    assert a.random() == b.random()


def test_invalid_config() -> None:
    with pytest.raises(ValueError, match="vec_prob"):
        CaptionSampler(vec_prob=1.5)
    with pytest.raises(ValueError, match="both"):
        CaptionSampler(vec_field="alt_text")


def test_count_sources_and_clean() -> None:
    assert count_sources([0, 0, 1, 2]) == {"vec": 2, "alt": 1, "alt_fallback": 1, "vec_fallback": 0}
    assert clean_caption(" a \n b ") == "a b"
    assert clean_caption(3) is None
