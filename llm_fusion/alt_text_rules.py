"""When an AltText carries no knowledge, skip the LLM; when it is very long, bound it.

Web alt text is often empty, a camera file name, a URL or CMS boilerplate ("image", "click
here"), or says nothing the visual caption does not ("dog" beside "A brown dog on a beach").
Fusing those with the visual caption costs an LLM call and can only add noise, so such rows take
the visual caption directly, with the reason recorded in ``fusion_reason``.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections.abc import Iterable
from enum import Enum


class SkipReason(str, Enum):
    """Why an AltText was not sent to the LLM (the value goes into ``fusion_reason``)."""

    EMPTY = "alt_empty"
    FILE_NAME = "alt_file_name"
    URL = "alt_url"
    BOILERPLATE = "alt_boilerplate"
    NO_WORDS = "alt_no_words"
    IN_VISUAL_CAPTION = "alt_in_visual_caption"

    def __str__(self) -> str:
        return self.value


_IMAGE_EXTENSIONS = (
    "jpg|jpeg|jpe|jfif|png|gif|webp|bmp|tif|tiff|svg|heic|heif|avif|ico|raw|cr2|nef|arw|dng"
)
# One token (no spaces) ending in an image extension: "IMG_1234.jpg", "photo-2.PNG".
_FILE_NAME = re.compile(rf"^\S+\.(?:{_IMAGE_EXTENSIONS})$", re.IGNORECASE)
# Camera / phone / screenshot names without an extension: "DSC0001", "IMG_20190512_101010",
# "PXL_20230101_123456789", "Screenshot 2023-04-01 at 10.11.12".
_CAMERA_NAME = re.compile(
    r"^(?:(?:img|dsc|dscn|dscf|dcim|pxl|mvimg|sam|gopr|gh|dji|vid|pict|wp|screenshot|"
    r"screen shot)[\s_-]?\d{3}|p\d{5})[\d\s_.:-]*(?:at[\s\d.:_-]*)?(?:[ap]m)?$",
    re.IGNORECASE,
)
# A single opaque identifier ("B07XJ8C8F3", "5f2a9c1e-77b0"): letters and many digits, no words.
_IDENTIFIER = re.compile(r"^[A-Za-z0-9_-]{8,}$")
_URL = re.compile(
    r"^(?:(?:https?|ftp)://\S+|www\.\S+|[\w-]+(?:\.[\w-]+)*\.(?:com|org|net|io|co|de|uk|fr|jp|ru|"
    r"cn|info|biz|edu|gov)(?:/\S*)?)$",
    re.IGNORECASE,
)

# Compared after normalisation (lower case, punctuation -> space, trailing numbers dropped).
DEFAULT_BOILERPLATE: frozenset[str] = frozenset(
    {
        "image", "images", "photo", "photos", "picture", "pictures", "pic", "pics", "img",
        "photograph", "thumbnail", "thumb", "thumbnails", "figure", "fig", "untitled",
        "untitled image", "untitled photo", "untitled design", "screenshot", "screen shot",
        "slide", "icon", "logo", "banner", "header", "header image", "hero image", "spacer",
        "blank", "placeholder", "placeholder image", "loading", "loader", "default",
        "default image", "featured image", "feature image", "product image", "main image",
        "cover image", "cover", "gallery", "gallery image", "click here", "click to enlarge",
        "click to zoom", "click for larger image", "view larger", "view larger image",
        "view image", "enlarge", "zoom", "read more", "more", "see more", "learn more",
        "alt", "alt text", "alttext", "image alt", "image description", "description",
        "no image", "no image available", "no photo", "no photo available", "image not found",
        "image not available", "image unavailable", "image coming soon", "photo coming soon",
        "coming soon", "null", "none", "undefined", "nan", "n a", "na", "tbd", "todo",
        "stock photo", "stock image", "stock photography", "royalty free", "free image",
        "download", "preview", "avatar", "profile picture", "user avatar", "advertisement",
        "ad", "sponsored", "button", "arrow", "close", "menu", "search", "home",
    }
)  # fmt: skip


def normalize_for_matching(text: str) -> str:
    """Lower case, NFKC, punctuation to spaces, collapsed whitespace, trailing numbers dropped."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[\W_]+", " ", text)
    # "image001" -> "image 001", so the number rule below sees it.
    text = re.sub(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])", " ", text).strip()
    # "image 3", "photo 12 of 20": the number does not make boilerplate informative.
    text = re.sub(r"(?:\s+(?:of\s+)?\d+)+$", "", text)
    return re.sub(r"^\d+\s+", "", text).strip()


@functools.lru_cache(maxsize=16)
def _normalized_phrases(phrases: tuple[str, ...]) -> frozenset[str]:
    return frozenset(normalize_for_matching(p) for p in phrases)


def skip_reason(alt_text: str | None, extra_boilerplate: Iterable[str] = ()) -> SkipReason | None:
    """Why ``alt_text`` should not go to the LLM, or None when it may carry knowledge."""
    if alt_text is None:
        return SkipReason.EMPTY
    text = alt_text.strip()
    if not text:
        return SkipReason.EMPTY
    if _URL.match(text):
        return SkipReason.URL
    if _FILE_NAME.match(text) or _CAMERA_NAME.match(text):
        return SkipReason.FILE_NAME
    if not re.search(r"[^\W\d_]", text):  # digits and punctuation only: "1234", "---"
        return SkipReason.NO_WORDS
    normalized = normalize_for_matching(text)
    if not normalized:
        return SkipReason.NO_WORDS
    if normalized in DEFAULT_BOILERPLATE:
        return SkipReason.BOILERPLATE
    if normalized in _normalized_phrases(tuple(extra_boilerplate)):
        return SkipReason.BOILERPLATE
    if _IDENTIFIER.match(text) and sum(c.isdigit() for c in text) >= 0.3 * len(text):
        return SkipReason.NO_WORDS
    return None


def truncate_alt_text(alt_text: str, max_chars: int) -> str:
    """Decode HTML entities, collapse whitespace and bound the length at a word boundary.

    Scraped alt attributes often keep their entities ("Tom &amp; Jerry"); the LLM and CLIP
    should see the text itself.
    """
    text = re.sub(r"\s+", " ", html.unescape(alt_text)).strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ")
    # Cut at the last space unless that loses more than a fifth (one giant token, e.g. CJK).
    if space >= max_chars * 0.8:
        cut = cut[:space]
    return cut.rstrip(" ,;:-")


# Function words that carry no knowledge: an AltText made only of these and of words the visual
# caption already has adds nothing the LLM could fuse.
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "with",
        "by",
        "and",
        "or",
        "but",
        "is",
        "are",
        "was",
        "were",
        "be",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "my",
        "our",
        "your",
        "their",
        "his",
        "her",
        "some",
        "very",
    ]
)


def _content_words(text: str) -> set[str]:
    words = re.findall(r"[^\W_]+", unicodedata.normalize("NFKC", html.unescape(text)).lower())
    # crude plural folding ("dogs" ~ "dog"): enough to see that "Dogs" is in "a dog running"
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words if w not in _STOPWORDS}


def alt_text_in_visual_caption(alt_text: str, visual_caption: str) -> bool:
    """True when every content word of the AltText is already in the visual caption."""
    return _content_words(alt_text) <= _content_words(visual_caption)


__all__ = [
    "DEFAULT_BOILERPLATE",
    "SkipReason",
    "alt_text_in_visual_caption",
    "normalize_for_matching",
    "skip_reason",
    "truncate_alt_text",
]
