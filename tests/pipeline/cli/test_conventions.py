"""CLI conventions: --version, one spelling of the output directory, choices on every
enumerated flag, run reads what inspect-input reads, Beam's options listed, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.cli.main import build_parser, main


def _vecap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_version_names_vecap_and_its_engines():
    done = _vecap("--version")
    assert done.returncode == 0
    line = done.stdout.strip()
    assert "\n" not in line and line.startswith("vecap ") and "apache-beam 2.77.0" in line
    assert "torch" in line and "transformers" in line and "vllm" in line  # or "not installed"


def _run_action(flag: str):
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    return next(a for a in run._actions if flag in a.option_strings)


@pytest.mark.parametrize(
    "flag, values",
    [
        ("--backend", ("transformers", "vllm", "openai")),
        ("--dtype", ("auto", "float32", "float16", "bfloat16")),
        ("--fallback", ("visual", "alt", "none")),
        ("--ethics-policy", ("fuse", "keep_unfused", "exclude")),
        ("--resize-mode", ("no", "keep_ratio", "keep_ratio_largest", "center_crop", "border")),
        ("--input-format",
         ("parquet", "jsonl", "json", "csv", "tsv", "img2dataset", "webdataset")),
    ],
)  # fmt: skip
def test_enumerated_run_flags_have_choices_and_list_every_value(flag, values):
    action = _run_action(flag)
    assert tuple(action.choices) == values
    assert all(v in action.help for v in values)


def test_a_bad_choice_or_flag_is_one_line_and_exit_2():
    for args in (
        ["run", "--input", "x.csv", "--output", "o", "--backend", "tensorrt"],
        ["stats", "o", "--no-such-flag"],
        ["run", "--input", "x.csv", "--output", "o", "--no-such-flag", "1"],
    ):
        done = _vecap(*args)
        assert done.returncode == 2, args
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_run_takes_the_reader_flags_inspect_input_takes(tmp_path):
    from pipeline.cli.run import config_dict_from_args
    from pipeline.config import build_pipeline_config

    parser = build_parser()
    args, extra = parser.parse_known_args(
        ["run", "--input", "in.tsv", "--output", str(tmp_path / "o"), "--column-names",
         "caption,url", "--verify-images", "--input-format", "tsv"]
    )  # fmt: skip
    config = build_pipeline_config(config_dict_from_args(args, extra))
    assert config.reader.column_names == ("caption", "url") and config.reader.verify_images
    inspect = parser.parse_args(["inspect-input", "--input", "in.tsv"])
    assert inspect.shard_size == config.reader.shard_size  # the same plan as vecap run's


def test_help_beam_lists_beams_pipeline_options():
    done = _vecap("run", "--help-beam")
    assert done.returncode == 0
    for option in ("--runner", "--project", "--temp_location", "--environment_type"):
        assert option in done.stdout
    assert "--help-beam" in _vecap("run", "--help").stdout


def test_the_output_directory_is_output_on_every_command(tmp_path, capsys):
    from pipeline.report.synthetic import write_synthetic_output

    out = str(tmp_path / "out")
    write_synthetic_output(out, shards=2, rows_per_shard=4)
    assert main(["stats", out, "--json"]) == 0
    positional = capsys.readouterr().out
    assert main(["stats", "--output", out, "--json"]) == 0
    assert capsys.readouterr().out == positional
    assert main(["stats", out, "--output", str(tmp_path / "other")]) == 2
    assert "two outputs given" in capsys.readouterr().err
    assert main(["gc", "--output", out, "--dry-run"]) == 0
    assert main(["export-json", "--output", out, "--dest", str(tmp_path / "rel")]) == 0
    assert main(["stats"]) == 2 and "give the output directory" in capsys.readouterr().err


def test_report_dest_and_its_old_spelling(tmp_path, capsys):
    from pipeline.report.synthetic import write_synthetic_output

    out = str(tmp_path / "out")
    write_synthetic_output(out, shards=1, rows_per_shard=4)
    assert main(["report", out, "--dest", str(tmp_path / "a.html"), "--sample", "2"]) == 0
    assert (tmp_path / "a.html").exists()
    capsys.readouterr()
    assert main(["report", out, "--out", str(tmp_path / "b.html"), "--sample", "2"]) == 0
    assert (tmp_path / "b.html").exists() and "--out is deprecated" in capsys.readouterr().err
