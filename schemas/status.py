"""Status vocabulary: every row ends with exactly one of these, plus an error message when not ok."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """Why a row is where it is. A ``str`` enum so values go straight into parquet and JSON."""

    OK = "ok"
    # reading
    INVALID_ROW = "invalid_row"
    # download: the URL itself
    INVALID_URL = "invalid_url"
    UNSUPPORTED_SCHEME = "unsupported_scheme"
    BLOCKED_ADDRESS = "blocked_address"
    # download: the transfer
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    TOO_MANY_REDIRECTS = "too_many_redirects"
    TOO_LARGE = "too_large"
    OPTED_OUT = "opted_out"
    # download: the bytes
    NOT_AN_IMAGE = "not_an_image"
    DECODE_ERROR = "decode_error"
    DECOMPRESSION_BOMB = "decompression_bomb"
    TOO_SMALL = "too_small"
    # model stages
    CAPTION_FAILED = "caption_failed"
    FUSION_FAILED = "fusion_failed"
    ETHICS_EXCLUDED = "ethics_excluded"
    # anything a stage did not foresee; the error column says what
    INTERNAL_ERROR = "internal_error"

    def __str__(self) -> str:  # f"{Status.OK}" -> "ok"
        return self.value


FAILURE_STATUSES: frozenset[str] = frozenset(s.value for s in Status if s is not Status.OK)
ALL_STATUSES: tuple[str, ...] = tuple(s.value for s in Status)


def is_ok(status: str | Status | None) -> bool:
    return status == Status.OK.value
