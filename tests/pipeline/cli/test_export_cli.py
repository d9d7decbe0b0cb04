"""`vecap export-json`, `vecap validate-json`, `vecap stats` through the CLI parser."""

from __future__ import annotations

import json

from pipeline.cli import build_parser
from pipeline.io.stats_summary import LengthSummary, output_stats
from pipeline.io.writer import WriterConfig, write_shard
from schemas import Record, make_uid
from tests.pipeline.synthetic import write_synthetic_output


def _main(argv: list[str]) -> int:
    parser = build_parser(("pipeline.cli.export",))
    args = parser.parse_args(argv)
    return args.func(args)


def test_export_validate_stats_cli(tmp_path, capsys):
    out = str(tmp_path / "out")
    exportable, unique = write_synthetic_output(out, 2000, 500, dup_every=9, fail_every=11)
    assert _main(["export-json", out, "--splits", "4", "--name", "demo"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {unique} entries into 4 files" in printed
    assert _main(["validate-json", f"{out}/release"]) == 0
    assert f"OK: 4 files, {unique} entries, 0 errors" in capsys.readouterr().out
    # corrupt one split: validation fails with a non-zero exit
    split = tmp_path / "out" / "release" / "demo-02-of-04.json"
    split.write_text(split.read_text()[:-5])
    assert _main(["validate-json", f"{out}/release/demo-*-of-04.json"]) == 1
    captured = capsys.readouterr()
    assert "INVALID" in captured.out and "error:" in captured.err

    assert _main(["stats", out, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rows"] == 2000 and data["shards"] == 4
    assert data["status_counts"]["http_error"] == sum(1 for i in range(2000) if i % 11 == 1)
    assert data["caption_lengths"]["fused"]["count"] == exportable
    assert _main(["stats", out]) == 0
    table = capsys.readouterr().out
    assert "http_error" in table and "caption words" in table


def test_export_cli_errors_are_clear(tmp_path, capsys):
    assert _main(["export-json", str(tmp_path / "nothing")]) == 2
    assert "no finished shards" in capsys.readouterr().err
    assert _main(["stats", str(tmp_path / "nothing")]) == 1


def test_stats_counts_sources_and_lengths(tmp_path):
    out = str(tmp_path)
    rows = [
        Record(
            uid=make_uid(0, i),
            shard_id=0,
            row_index=i,
            url=f"http://127.0.0.1/{i}",
            fused_caption=" ".join(["w"] * (i + 1)),
            fusion_source="llm" if i % 2 else "visual",
        )
        for i in range(10)
    ]
    write_shard(
        WriterConfig(output=out), 0, rows, 10, stage_seconds={"caption": 2.0}, started_at=1.0
    )
    s = output_stats(out)
    assert s.fusion_source_counts == {"llm": 5, "visual": 5}
    assert s.stage_rows_per_s["caption"] == 5.0
    assert s.caption_lengths["fused"] == LengthSummary(10, 5.5, 5, 9, 10, 10)
    assert s.caption_lengths["visual"].count == 0
