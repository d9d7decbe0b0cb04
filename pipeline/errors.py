"""The errors a user fixes before a job can start, one type per place they are found.

Every one of them is a :class:`UsageError`: its message is one line that says what is wrong and
what to do, and the ``vecap`` command prints just that line (exit status 2, no traceback). Errors
that happen while the job runs are not usage errors: they keep their traceback (the CLI writes it
to ``OUT/logs/``). An exception of another type raised before the job starts is a bug in vecap
and keeps its traceback too.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Found before the job starts; the message is one line: what is wrong and what to do."""


class ConfigError(UsageError):
    """A config file or flag combination that cannot work; the message says what to change."""


class InputError(UsageError):
    """The input cannot be planned: a missing file, an unknown format, a missing column."""


class InputNotFoundError(InputError, FileNotFoundError):
    """An input file, glob or directory that does not exist or matches no files."""


class OutputError(UsageError):
    """The output cannot be used: an existing file, or a directory vecap cannot read or write."""


class ModelNotAvailableError(UsageError):
    """A model that is neither a local directory nor a hub id that can be loaded."""


__all__ = [
    "ConfigError",
    "InputError",
    "InputNotFoundError",
    "ModelNotAvailableError",
    "OutputError",
    "UsageError",
]
