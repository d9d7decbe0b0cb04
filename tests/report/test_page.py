"""The written page: self-contained, escaped, complete; the CLI; empty and partial outputs."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.cli import build_parser
from pipeline.report import ReportConfig, build_report, collect_content
from pipeline.report.html import _manifest, esc
from pipeline.report.synthetic import HOSTILE_ALT_TEXT, make_jpeg, write_synthetic_output
from pipeline.report.thumbnails import make_thumbnail


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    root = tmp_path_factory.mktemp("page") / "out"
    return write_synthetic_output(root, shards=3, rows_per_shard=20, seed=4)


def test_page_is_self_contained_and_escaped(output) -> None:
    result = build_report(ReportConfig(str(output.root), sample_size=500))
    page = Path(result.path).read_text()
    assert result.path == f"{output.root}/report.html"
    assert result.problems == []
    # Untrusted AltText is shown as text, never as markup.
    assert esc(HOSTILE_ALT_TEXT) in page
    assert "<script" not in page.lower() and "onerror=" not in page.replace("onerror=&quot;", "")
    assert "<b>not bold</b>" not in page and "&lt;b&gt;not bold&lt;/b&gt;" in page
    # Nothing the browser would fetch: every image inline, no stylesheet or script link.
    assert re.findall(r'<img[^>]+src="(?!data:image/jpeg;base64,)', page) == []
    assert "<link" not in page and "@import" not in page and "url(http" not in page
    assert 'http-equiv="Content-Security-Policy"' in page
    # Every ok row is sampled when the sample is larger than the data, one thumbnail each.
    ok = output.status_counts["ok"]
    assert result.sampled == ok and page.count('<article class="item">') == ok
    assert page.count("<img ") == ok
    for status, n in output.status_counts.items():
        if status != "ok":
            assert f">{status}</span> {n:,} rows" in page
    assert len(re.findall(r'<svg [^>]*class="figure"', page)) == 4
    assert "tiny-llava" in page and "Describe the image in one sentence." in page
    assert "2026-09-21" in page  # unix start time of the manifest shown as a date


def test_sample_size_and_seed(output) -> None:
    a = collect_content(ReportConfig(str(output.root), sample_size=7, seed=1))
    b = collect_content(ReportConfig(str(output.root), sample_size=7, seed=1))
    c = collect_content(ReportConfig(str(output.root), sample_size=7, seed=2))
    assert [g.uid for g in a.gallery] == [g.uid for g in b.gallery]
    assert [g.uid for g in a.gallery] != [g.uid for g in c.gallery]
    assert len(a.gallery) == 7 and all(g.status == "ok" for g in a.gallery)
    assert all(g.thumbnail.data_uri and g.thumbnail.width > 0 for g in a.gallery)
    assert a.sample_eligible == output.status_counts["ok"]
    for group in a.failures:
        assert group.count == output.status_counts[group.status]
        assert sum(n for _, n in group.messages) + group.other_messages == group.count
        assert all(e.error for e in group.examples) and len(group.examples) <= 5


def test_empty_output_says_nothing_finished(tmp_path: Path) -> None:
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "part-00000.parquet").write_bytes(b"PAR1 half written")
    result = build_report(ReportConfig(str(tmp_path), report_path=str(tmp_path / "r" / "x.html")))
    page = Path(result.path).read_text()
    assert result.rows == 0 and result.finished_shards == 0
    assert "No shard of this output has finished yet" in page
    assert "1 shard(s) are being written" in page
    assert "manifest.json not found" in page


def test_mismatch_between_stats_and_parquet_is_flagged(tmp_path: Path) -> None:
    out = write_synthetic_output(tmp_path / "out", shards=2, rows_per_shard=10, seed=0)
    path = out.root / "shards" / "part-00001.parquet"
    pq.write_table(pq.read_table(path).slice(0, 7), path)  # 3 rows lost
    content = collect_content(ReportConfig(str(out.root)))
    assert any("part-00001" in p and "10 rows, parquet has 7" in p for p in content.problems)


def test_thumbnail_of_bad_bytes_is_an_error_not_a_crash() -> None:
    bad = make_thumbnail(b"\xff\xd8 not really a jpeg")
    assert bad.data_uri is None and "could not be decoded" in bad.error
    assert make_thumbnail(None).error == "no image bytes"
    good = make_thumbnail(make_jpeg(1, size=(640, 320)), max_px=192)
    assert (good.width, good.height) == (192, 96)


def test_manifest_rendering_is_generic_and_highlights_models_and_prompts() -> None:
    manifest = {
        "stages": [{"name": "caption", "model": "llava-hf/llava-1.5-7b-hf"}, {"name": "fuse"}],
        "prompts": {"vc": "Describe <this> image.\nBriefly."},
        "models": {"fusion": {"model": "tiny-llama", "backend": "vllm", "prompt_text": "Fuse."}},
        "generation": {"max_model_len": 4096, "model_name": None, "caption_model": "m2"},
        "timing": {"started_at": 1_790_000_000, "seconds": 12.5},
        "flags": [True, None, 3],
        "empty": {},
    }
    html = _manifest(manifest, None)
    models = html[html.index("<h3>Models</h3>") : html.index("<h3>Prompts</h3>")]
    prompts = html[html.index("<h3>Prompts</h3>") :]
    assert "stages[0].model" in models and "llava-hf/llava-1.5-7b-hf" in models
    assert "models.fusion.model" in models and "models.fusion.backend" not in models
    assert "generation.caption_model" in models and "max_model_len" not in models
    assert "model_name" not in models  # unset values are left out of the highlights
    assert "models.fusion.prompt_text" in prompts and "prompts.vc" in prompts
    assert "<pre>Describe &lt;this&gt; image.\nBriefly.</pre>" in html
    assert "2026-09-21 14:13:20 UTC" in html
    assert "<code>true</code>, <code>null</code>, <code>3</code>" in html
    assert "<code>{}</code>" in html
    assert "manifest.json is broken" in _manifest(None, "manifest.json is broken")


def test_cli_writes_report_and_prints_path(output, tmp_path: Path, capsys) -> None:
    parser = build_parser(("pipeline.cli.report",))
    dest = tmp_path / "report.html"
    args = parser.parse_args(
        ["report", str(output.root), "--out", str(dest), "--sample", "3", "--seed", "9"]
    )
    assert args.func(args) == 0
    assert str(dest) in capsys.readouterr().out
    assert Path(dest).read_text().count('<article class="item">') == 3

    args = parser.parse_args(["report", str(tmp_path / "nope")])
    assert args.func(args) == 2
    assert "not found" in capsys.readouterr().err
    args = parser.parse_args(["report", str(output.root), "--sample", "-1"])
    assert args.func(args) == 2


def test_shard_table_lists_noted_and_slowest_first_when_long() -> None:
    from pipeline.report.html import ReportContent, ShardRow, _shards

    rows = [ShardRow(i, 10, 10, 10.0, 100.0 + i, 1.79e9) for i in range(250)]
    rows[200] = ShardRow(200, 10, 7, 10.0, 900.0, 1.79e9, note="stats file says 10 rows")
    html = _shards(ReportContent("t", "out", 0.0, shards=rows))
    assert "200 of 250, noted and slowest first" in html
    assert html.count("<tr>") == 201  # header + 200 shards
    listed = re.findall(r'<tr><td class="num">(\d+)</td>', html)
    assert listed[:3] == ["200", "0", "1"] and "249" not in listed
    short = _shards(ReportContent("t", "out", 0.0, shards=rows[:3]))
    assert "<h3>Finished shards</h3>" in short
