"""Dead-letter errors as one readable line, for the reason and error columns."""

from __future__ import annotations

import logging

from schemas import Record, Status

_LOG = logging.getLogger(__name__)


def describe_error(error: object, limit: int = 300) -> str:
    """One line for a dead-letter error: an exception, or Beam's (type, repr, traceback) tuple."""
    if isinstance(error, BaseException):
        text = f"{type(error).__name__}: {error}"
    elif isinstance(error, tuple) and error and isinstance(error[0], type):
        lines = [line.strip() for line in (error[2] if len(error) > 2 else []) if line.strip()]
        text = lines[-1] if lines else f"{error[0].__name__}: {error[1] if len(error) > 1 else ''}"
    else:
        text = str(error)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def internal_error_record(record: Record, stage: str, exc: BaseException, **reason: str) -> Record:
    """A row that hit a bug in our own code: logged with its traceback, kept as a failed row.

    ``reason`` names the stage's reason column (``fusion_reason=...`` or ``ethics_reason=...``).
    """
    _LOG.exception("%s failed on row %s", stage, record.uid)
    return record.fail(Status.INTERNAL_ERROR, f"{stage}: {type(exc).__name__}: {exc}").replace(
        **reason
    )


__all__ = ["describe_error", "internal_error_record"]
