"""The CLI's terminal filter and failure log (pipeline.cli.logs), in process."""

from __future__ import annotations

import datetime
import logging

import fsspec

from pipeline.cli.logs import NoiseFilter, TerminalFormatter, failure_summary, write_failure_log


def _record(message: str, name: str = "root", level: int = logging.WARNING, exc_info=None):
    return logging.LogRecord(name, level, __file__, 1, message, None, exc_info)


def test_noise_is_dropped_and_the_rest_kept():
    keep = NoiseFilter().filter
    assert not keep(_record("Resource module is not available for current platform, memory ..."))
    assert not keep(_record("apitools not found, and bigquery client libraries are not available"))
    assert not keep(
        _record("boom [while running 'Stage[x]']", name="apache_beam.runners.common", level=40)
    )
    assert keep(_record("boom [while running 'Stage[x]']", name="pipeline.download.stage"))
    assert keep(_record("shard 3: 12 rows failed to download"))


def test_terminal_lines_carry_no_traceback():
    try:
        raise ValueError("inner")
    except ValueError:
        import sys

        record = _record("it broke", level=logging.ERROR, exc_info=sys.exc_info())
    text = TerminalFormatter("%(levelname)s:%(message)s").format(record)
    assert text == "ERROR:it broke"
    assert record.exc_info is not None  # the failure log's handler still gets it
    embedded = _record("Worker error\nTraceback (most recent call last):\n  File x\nValueError: y")
    shown = TerminalFormatter("%(message)s").format(embedded)
    assert "Traceback" not in shown and shown.startswith("Worker error")


def test_failure_summary_is_the_last_line_of_the_message():
    exc = RuntimeError(
        "Traceback (most recent call last):\n  File x\nValueError: bad row [while x]"
    )
    assert failure_summary(exc) == "ValueError: bad row [while x]"
    assert failure_summary(OSError("no such model")) == "OSError: no such model"
    assert len(failure_summary(RuntimeError("x" * 1000))) == 300


def test_failure_log_on_an_fsspec_url():
    try:
        raise RuntimeError("the job broke")
    except RuntimeError as e:
        exc = e
    started = datetime.datetime(2026, 12, 1, 2, 55, 12, tzinfo=datetime.timezone.utc)
    url = write_failure_log("memory://vecap-logs/out", exc, started, ["vecap", "run", "--x"])
    assert url == "memory://vecap-logs/out/logs/20261201T025512Z.log"
    with fsspec.open(url, "r") as f:
        text = f.read()
    assert "command: vecap run --x" in text
    assert "Traceback (most recent call last)" in text and "RuntimeError: the job broke" in text


def test_main_called_in_process_leaves_logging_as_it_found_it(tmp_path, capsys):
    import os
    import warnings

    from pipeline.cli.logs import QUIET_ENV
    from pipeline.cli.main import main

    root = logging.getLogger()
    before = (list(root.handlers), root.level, list(warnings.filters))
    env = {name: os.environ.get(name) for name in QUIET_ENV}
    code = main(["run", "--input", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.csv" in err[0] and "does not exist" in err[0]
    assert (list(root.handlers), root.level, list(warnings.filters)) == before
    assert {name: os.environ.get(name) for name in QUIET_ENV} == env


def test_records_held_while_planning_show_once_the_job_starts_or_never(capsys):
    from pipeline.cli.logs import (
        configure_logging,
        hold_terminal,
        logging_state,
        release_terminal,
        restore_logging,
    )

    saved = logging_state()
    log = logging.getLogger("pipeline.test_hold")
    try:
        configure_logging(0)
        hold_terminal()
        log.warning("about the job that may start")
        assert capsys.readouterr().err == ""
        release_terminal(show=True)  # the job started
        assert "about the job that may start" in capsys.readouterr().err
        hold_terminal()
        log.warning("about a job that never starts")
        release_terminal(show=False)  # a one-line error instead
        log.warning("after")
        err = capsys.readouterr().err
        assert "never starts" not in err and "after" in err
    finally:
        restore_logging(saved)
