"""What the ``vecap`` command shows on the terminal, and the log a failed job leaves behind.

- :func:`configure_logging`: library warnings that say nothing to a vecap user (Beam's
  "apitools not found", "Resource module is not available", transformers' deprecation notes,
  Python deprecation warnings) are hidden; ``-v`` shows them again, ``-vv`` adds INFO. Every
  record at WARNING or above, hidden or not, is also kept in memory for the failure log.
- :func:`write_failure_log`: a job that fails after it started leaves ``OUT/logs/<time>.log``
  (any fsspec URL) with the command, the traceback and the kept records; the terminal gets one
  line that points at it.

Only logging levels, handlers and filters, and the libraries' own settings for quiet
(:data:`QUIET_ENV`: read by them, in Beam's worker processes too) are touched here; no library
code is changed.
"""

from __future__ import annotations

import collections
import datetime
import logging
import os
import platform
import re
import sys
import traceback
import warnings
from collections.abc import Sequence

# Library messages hidden without -v: true, and of no use to someone running vecap.
NOISE: tuple[str, ...] = (
    # Beam, at import: no BigQuery client libraries (vecap reads no BigQuery)
    "apitools not found, and bigquery client libraries are not available",
    # Beam RunInference, once per batch: cannot measure its own memory on this platform
    "Resource module is not available for current platform",
    # transformers: notes about its own API and defaults, not about the captions
    "`torch_dtype` is deprecated",
    "The following generation flags are not valid and may be ignored",
    "Setting `pad_token_id` to `eos_token_id`",
    "Using a slow image processor as `use_fast` is unset",
)
# Python warnings of these categories are notes for developers of the library that raises them.
DEVELOPER_WARNINGS: tuple[type[Warning], ...] = (
    DeprecationWarning,
    PendingDeprecationWarning,
    FutureWarning,
)
# The -v count, for the command's worker processes (pipeline.local_worker).
VERBOSITY_ENV = "VECAP_LOG_VERBOSITY"
# Environment settings for quiet libraries (without -v; a value already set is kept).
QUIET_ENV: dict[str, str] = {
    # Python warnings of DEVELOPER_WARNINGS' categories, in child processes too
    "PYTHONWARNINGS": ",".join(f"ignore::{c.__name__}" for c in DEVELOPER_WARNINGS),
    # transformers' "advisory" warnings (logger.warning_advice): tips for model developers
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    # vLLM logs dozens of INFO lines (engine config, memory profiling) per model load
    "VLLM_LOGGING_LEVEL": "WARNING",
}
_NOISE_RE = re.compile("|".join(re.escape(n) for n in NOISE))
_KEPT_RECORDS = 2000
_FORMAT = "%(levelname)s:%(name)s:%(message)s"


class NoiseFilter(logging.Filter):
    """Drops the records of :data:`NOISE`, and Beam's report of a step's exception that it
    raises right after (vecap reports that exception once, its traceback in the failure log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge: let it through
            return True
        if (
            record.name in _JOB_ERROR_LOGGERS
            and record.levelno >= logging.ERROR
            and any(marker in message for marker in _JOB_ERROR_MARKERS)
        ):
            return False
        return _NOISE_RE.search(message) is None


# Beam logs a failing step's exception where it happens, then raises it as the job's error (which
# vecap reports once, its traceback in the failure log): DoFnRunner._reraise_augmented in the
# worker, the SDK harness's "Error processing instruction", and the runner's relay of both.
_JOB_ERROR_LOGGERS = (
    "apache_beam.runners.common",
    "apache_beam.runners.worker.sdk_worker",
    "apache_beam.runners.portability.local_job_service",
)
# (the relay quotes the worker's message: "[while running \\'step\\']")
_JOB_ERROR_MARKERS = ("[while running ", "Error processing instruction")


class TerminalFormatter(logging.Formatter):
    """Records without tracebacks: those belong in the failure log, not on the terminal."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            text = super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        head, sep, _ = text.partition("Traceback (most recent call last)")
        return head.rstrip() + (" (traceback not shown; -v shows it)" if sep else "")


class _KeptRecords(logging.Handler):
    """The last records (formatted), for the failure log: what the terminal did not show too."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: collections.deque[str] = collections.deque(maxlen=_KEPT_RECORDS)
        self.setFormatter(logging.Formatter("%(asctime)s " + _FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # never let the failure log's helper break a run
            self.handleError(record)


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (a test may swap it), not the one at creation;
    while ``held`` is a list, records wait there instead (see :func:`hold_terminal`)."""

    held: list[logging.LogRecord] | None = None

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        if self.held is not None:
            self.held.append(record)
        else:
            super().emit(record)


_terminal: _Stderr | None = None


def hold_terminal() -> None:
    """Keep log records off the terminal until :func:`release_terminal`: while a run is checked
    and planned, a mistake must print as one line, not after warnings about a job that never
    starts (they still reach the failure log's records)."""
    if _terminal is not None and _terminal.held is None:
        _terminal.held = []


def release_terminal(show: bool) -> None:
    """Print the held records (``show``, or always with -v) or drop them; then print as usual."""
    if _terminal is None or _terminal.held is None:
        return
    held, _terminal.held = _terminal.held, None
    if show or _verbosity > 0:
        for record in held:
            _terminal.emit(record)


_kept = _KeptRecords()
_verbosity = 0


def configure_logging(verbosity: int = 0) -> None:
    """Set up the root logger for the ``vecap`` process (called once, before any command)."""
    global _terminal, _verbosity
    _verbosity = verbosity
    root = logging.getLogger()
    for handler in list(root.handlers):
        # ours from an earlier call, or the stderr handler logging.basicConfig gives the root
        # logger when a library logs before any is set (Beam does, at import): the command owns
        # the terminal
        if getattr(handler, "_vecap", False) or (
            type(handler) is logging.StreamHandler and handler.stream in (sys.stderr, sys.stdout)
        ):
            root.removeHandler(handler)
    terminal = _terminal = _Stderr()
    terminal._vecap = True  # type: ignore[attr-defined]
    if verbosity == 0:
        terminal.setFormatter(TerminalFormatter(_FORMAT))
        terminal.addFilter(NoiseFilter())
    else:
        terminal.setFormatter(logging.Formatter(_FORMAT))
    _kept._vecap = True  # type: ignore[attr-defined]
    root.addHandler(terminal)
    root.addHandler(_kept)
    # a root logger with handlers is never given logging.basicConfig's own by a library
    root.setLevel(
        logging.DEBUG if verbosity >= 3 else logging.INFO if verbosity == 2 else logging.WARNING
    )
    logging.captureWarnings(True)  # Python warnings become records: kept, and filtered below
    if verbosity == 0:
        for category in DEVELOPER_WARNINGS:
            warnings.filterwarnings("ignore", category=category)
        # read by the libraries when they load, here and in Beam's worker processes; a value the
        # user set wins
        for name, value in QUIET_ENV.items():
            os.environ.setdefault(name, value)
    os.environ[VERBOSITY_ENV] = str(verbosity)


def worker_handler() -> logging.Handler:
    """The stderr handler of a local SDK worker process (:mod:`pipeline.local_worker`): errors
    only (warnings reach the terminal through the runner's relay), and without -v the same
    filter and one-line records as the command's own terminal."""
    handler = logging.StreamHandler()
    handler.setLevel(logging.ERROR)
    if os.environ.get(VERBOSITY_ENV, "0") == "0":
        handler.setFormatter(TerminalFormatter(_FORMAT))
        handler.addFilter(NoiseFilter())
    else:
        handler.setFormatter(logging.Formatter(_FORMAT))
    return handler


class _WithoutBareTracebacks:
    """A worker's stderr without the traceback Beam's SDK harness prints bare (``print`` in
    ``SdkWorker._execute``) when a bundle fails: it logs the same traceback right after, and
    that record reaches the vecap command (and its failure log) through the runner's relay."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if text.startswith("Traceback (most recent call last)"):
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def quiet_worker_stderr() -> None:
    """In a local SDK worker process (:mod:`pipeline.local_worker`), without -v."""
    if os.environ.get(VERBOSITY_ENV, "0") == "0" and not isinstance(
        sys.stderr, _WithoutBareTracebacks
    ):
        sys.stderr = _WithoutBareTracebacks(sys.stderr)


def logging_state() -> dict:
    """What :func:`configure_logging` changes, to put back when ``main`` is called in a process
    that goes on (tests): root handlers and level, warning filters and capture, QUIET_ENV."""
    root = logging.getLogger()
    return {
        "handlers": list(root.handlers),
        "level": root.level,
        "filters": list(warnings.filters),
        "capturing": getattr(warnings.showwarning, "__module__", "") == "logging",
        "env": {name: os.environ.get(name) for name in (*QUIET_ENV, VERBOSITY_ENV)},
        "verbosity": _verbosity,
    }


def restore_logging(state: dict) -> None:
    global _terminal, _verbosity
    _terminal = None
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in state["handlers"]:
        root.addHandler(handler)
    root.setLevel(state["level"])
    warnings.filters[:] = state["filters"]
    warnings._filters_mutated()  # type: ignore[attr-defined]
    logging.captureWarnings(state["capturing"])
    for name, value in state["env"].items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    _verbosity = state["verbosity"]


def quiet_model_libraries() -> None:
    """transformers logs through its own handler (not the root logger): give it the same
    filter, and hide its weight-loading progress bars, unless -v. Download bars stay."""
    if _verbosity > 0:
        return
    try:
        import huggingface_hub.utils as hub_utils
        from transformers.utils import logging as hf_logging
    except ImportError:  # the model stages need transformers; without it there is nothing to quiet
        return
    hf_logging.disable_progress_bar()
    hub_utils.enable_progress_bars()  # a first run downloads GBs of weights: keep that bar
    library_root = hf_logging.get_logger("transformers")  # creates transformers' handler
    for handler in library_root.handlers:
        if not any(isinstance(f, NoiseFilter) for f in handler.filters):
            handler.addFilter(NoiseFilter())


def run_time_stamp(when: datetime.datetime) -> str:
    """``20261201T025512Z``: the log file's name, sortable, no characters an object store minds."""
    return when.astimezone(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


_NAMED_ERROR = re.compile(r"[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning): ")


def failure_summary(exc: BaseException, limit: int = 300) -> str:
    """One line for the terminal: the exception type and the last line of its message (Beam puts
    the worker's own traceback inside the message; its last line is the error itself)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    if _NAMED_ERROR.match(text):  # a worker's error relayed as text: its own type is there
        summary = text
    else:
        summary = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return summary if len(summary) <= limit else summary[: limit - 3] + "..."


def write_failure_log(
    output: str, exc: BaseException, started: datetime.datetime, argv: Sequence[str]
) -> str:
    """Write ``OUT/logs/<run-time>.log``; returns its URL. Raises OSError if it cannot."""
    import fsspec

    from pipeline.manifest import package_versions

    url = f"{output.rstrip('/')}/logs/{run_time_stamp(started)}.log"
    now = datetime.datetime.now(datetime.timezone.utc)
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items() if v)
    text = "\n".join(
        [
            f"vecap run failed at {now.isoformat(timespec='seconds')} "
            f"(started {started.astimezone(datetime.timezone.utc).isoformat(timespec='seconds')})",
            "command: " + " ".join(argv),
            f"python {platform.python_version()} on {platform.platform()}; {versions}",
            "",
            "".join(traceback.format_exception(exc)).rstrip(),
            "",
            f"--- log records at WARNING and above (the last {_KEPT_RECORDS}, hidden ones too) ---",
            *_kept.lines,
            "",
        ]
    )
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "w") as f:
        f.write(text)
    return url


__all__ = [
    "DEVELOPER_WARNINGS",
    "NOISE",
    "QUIET_ENV",
    "NoiseFilter",
    "configure_logging",
    "logging_state",
    "restore_logging",
    "failure_summary",
    "hold_terminal",
    "quiet_model_libraries",
    "quiet_worker_stderr",
    "release_terminal",
    "run_time_stamp",
    "worker_handler",
    "write_failure_log",
]
