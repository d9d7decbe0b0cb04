"""Dead-letter errors as one readable line, for the reason and error columns."""

from __future__ import annotations


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


__all__ = ["describe_error"]
