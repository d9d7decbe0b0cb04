"""`vecap inspect-input` and the reader's CLI flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pipeline.cli import build_parser
from pipeline.io.reader_config import ReaderConfig, add_reader_arguments, reader_config_from_args
from pipeline.io.readers import plan_from_json


def test_flags_build_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_reader_arguments(parser)
    args = parser.parse_args(
        ["--input", "a/*.csv", "--input", "gs://b/c.parquet", "--url-column", "link",
         "--caption-column", "", "--extra-columns", "lang, score", "--shard-size", "500",
         "--column-names", "caption,url", "--verify-images"]
    )  # fmt: skip
    assert reader_config_from_args(args) == ReaderConfig(
        input=("a/*.csv", "gs://b/c.parquet"),
        url_column="link",
        caption_column=None,
        extra_columns=("lang", "score"),
        column_names=("caption", "url"),
        shard_size=500,
        verify_images=True,
    )
    with pytest.raises(ValueError, match="input must be"):
        reader_config_from_args(parser.parse_args([]))


def _main(argv: list[str]) -> int:
    args = build_parser(modules=("pipeline.cli.inspect_input",)).parse_args(argv)
    return args.func(args)


def test_inspect_input_plans_and_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        "url,caption\n" + "".join(f"https://e.com/{i}.jpg,cap {i}\n" for i in range(7)) + ",x\n"
    )
    plan = tmp_path / "plan.json"
    assert (
        _main(
            [
                "inspect-input",
                "--input",
                str(path),
                "--shard-size",
                "3",
                "--show",
                "2",
                "--plan-out",
                str(plan),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "1 files, 8 rows, 3 shards of up to 3" in out
    assert "sample of 8 rows: ok: 7, invalid_row: 1" in out
    assert "https://e.com/1.jpg" in out and "https://e.com/2.jpg" not in out
    assert [s.rows for s in plan_from_json(plan.read_text())] == [3, 3, 2]


def test_inspect_input_reports_column_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.csv"
    path.write_text("link,alt\nhttps://e.com/0.jpg,x\n")
    assert _main(["inspect-input", "--input", str(path)]) == 2
    assert "columns found: 'link', 'alt'" in capsys.readouterr().err
