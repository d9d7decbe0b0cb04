"""Composition, resume and --stages chaining on the local runner (fake model stages: fast)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import ConfigError, build_pipeline_config
from pipeline.io.writer import finished_shards, parquet_path, read_shard_records, stats_path
from pipeline.manifest import read_manifest
from pipeline.run import plan_run, run_pipeline
from pipeline.sample.server import SAMPLE_DIR, SampleServer, sample_input_table
from schemas import Record


def fake_caption(record: Record) -> Record:
    if not record.ok:
        return record
    assert record.jpg, "the caption stage needs image bytes"
    return record.replace(
        visual_caption=f"vc of {record.uid}", caption_model="fake-llava", caption_prompt_id="p1"
    )


def fake_fuse(record: Record) -> Record:
    if not record.ok:
        return record
    return record.replace(
        fused_caption=f"{record.alt_text} + {record.visual_caption}",
        fusion_model="fake-llm",
        fusion_source="llm",
    )


FAKES = {"caption": beam.Map(fake_caption), "fuse": beam.Map(fake_fuse)}


def rows_of(out: str, drop: tuple[str, ...] = ()) -> list[dict]:
    rows = []
    for sid in sorted(finished_shards(out)):
        for r in read_shard_records(parquet_path(out, sid)):
            d = r.to_dict()
            for k in drop:
                d.pop(k, None)
            rows.append(d)
    return rows


@pytest.fixture(scope="module")
def sample_table(tmp_path_factory):
    with SampleServer(root_dir=SAMPLE_DIR) as server:
        path = sample_input_table(server.base_url, tmp_path_factory.mktemp("in") / "sample.csv")
        yield str(path)


def _config(table: str, out: str, **extra) -> dict:
    data = {
        "input": table,
        "output": out,
        "stages": ["download"],
        "progress": False,
        "reader": {"shard_size": 10},
        "download": {"allow_private_networks": True, "threads": 4, "retries": 0},
        "caption": {"generation": {"model": "unused-fake"}},
        "fusion": {"generation": {"model": "unused-fake"}},
    }
    data.update(extra)
    return data


def test_download_only_run_resume_and_manifest(sample_table, tmp_path):
    out = str(tmp_path / "out")
    n_input = len(Path(sample_table).read_text().strip().splitlines()) - 1
    res = run_pipeline(build_pipeline_config(_config(sample_table, out)), stream=io.StringIO())
    assert res.status == "succeeded"
    done = finished_shards(out)
    assert len(done) == res.plan.shards_total == -(-n_input // 10)
    assert sum(s.rows for s in done.values()) == n_input  # rows in == rows out
    assert all("download" in s.stage_seconds and "read" in s.stage_seconds for s in done.values())
    first = rows_of(out)
    assert [r["uid"] for r in first] == sorted(r["uid"] for r in first)
    ok = [r for r in first if r["status"] == "ok"]
    assert ok and all(r["jpg"] and r["width"] for r in ok)
    manifest = read_manifest(out)
    assert manifest["status"] == "succeeded" and manifest["stages_done"] == ["download"]
    assert manifest["versions"]["apache-beam"] and len(manifest["runs"]) == 1
    # every shard was written by the bounded fused path, none needed the regroup shuffle
    assert manifest["runs"][0]["shards_fused"] == len(done)
    from pipeline.io.stats_summary import format_stats, output_stats

    assert f"shards finished: {len(done)} of {len(done)} planned" in format_stats(output_stats(out))
    assert not manifest["runs"][0].get("rows_regrouped")

    # a rerun with everything finished does nothing
    again = run_pipeline(build_pipeline_config(_config(sample_table, out)), stream=io.StringIO())
    assert again.status == "nothing_to_do" and again.plan.todo == []

    # lose one shard's done marker (a crash before its commit): only that shard is redone
    lost = Path(parquet_path(out, 1))
    Path(stats_path(out, 1)).unlink()
    lost.write_bytes(b"half a file")
    redo = run_pipeline(build_pipeline_config(_config(sample_table, out)), stream=io.StringIO())
    assert redo.plan.todo == [1] and set(redo.written) == {1}
    assert not lost.exists()  # the uncommitted attempt went when every shard was committed
    assert rows_of(out, ("jpg",)) == [{k: v for k, v in r.items() if k != "jpg"} for r in first]
    assert len(read_manifest(out)["runs"]) == 3

    # resuming with another shard plan would mix different rows under the same uids
    with pytest.raises(ConfigError, match="different input, shard size"):
        plan_run(build_pipeline_config(_config(sample_table, out, reader={"shard_size": 7})))
    # --overwrite redoes everything with the new plan
    over = run_pipeline(
        build_pipeline_config(_config(sample_table, out, reader={"shard_size": 7}, overwrite=True)),
        stream=io.StringIO(),
    )
    assert len(over.written) == -(-n_input // 7) == len(finished_shards(out))


def test_stages_chain_through_from(sample_table, tmp_path):
    out1, out2, out3 = (str(tmp_path / n) for n in ("dl", "cap", "fused"))
    run_pipeline(build_pipeline_config(_config(sample_table, out1)), stream=io.StringIO())
    # fuse needs visual captions: out1 has none
    with pytest.raises(ConfigError, match="needs 'caption'"):
        plan_run(
            build_pipeline_config(
                _config(None, out2, input=None, **{"from": out1}, stages=["fuse"])
            )
        )
    cfg2 = build_pipeline_config(
        _config(None, out2, input=None, **{"from": out1}, stages=["caption"])
    )
    run_pipeline(cfg2, stream=io.StringIO(), stage_overrides=FAKES)
    cfg3 = build_pipeline_config(_config(None, out3, input=None, **{"from": out2}, stages=["fuse"]))
    run_pipeline(cfg3, stream=io.StringIO(), stage_overrides=FAKES)
    assert read_manifest(out3)["stages_done"] == ["download", "caption", "fuse"]
    assert read_manifest(out3)["source"] == out2
    r1, r3 = rows_of(out1), rows_of(out3)
    assert [r["uid"] for r in r1] == [r["uid"] for r in r3]  # same rows, same ids, no loss
    for a, c in zip(r1, r3, strict=True):
        assert a["status"] == c["status"] and a["jpg"] == c["jpg"]
        if a["status"] == "ok":
            assert c["visual_caption"] == f"vc of {a['uid']}"
            assert c["fused_caption"] == f"{a['alt_text']} + vc of {a['uid']}"
        else:
            assert c["visual_caption"] is None and c["fused_caption"] is None
    s = finished_shards(out3)[0]
    assert s.fusion_source_counts == {"llm": s.status_counts["ok"]} and s.fusion_models == [
        "fake-llm"
    ]


def test_caption_without_download_needs_image_inputs(sample_table, tmp_path):
    with pytest.raises(ConfigError, match="carry no image bytes"):
        plan_run(
            build_pipeline_config(_config(sample_table, str(tmp_path / "o"), stages=["caption"]))
        )


def test_img2dataset_input_skips_the_download(tmp_path):
    photos = sorted(SAMPLE_DIR.glob("*.jpg"))[:6]
    table = pa.table(
        {
            "url": [f"http://127.0.0.1:9/{p.name}" for p in photos],
            "caption": [p.stem for p in photos],
            "key": [f"{i:09d}" for i in range(len(photos))],
            "status": ["success"] * len(photos),
            "error_message": [None] * len(photos),
            "width": [0] * len(photos),
            "height": [0] * len(photos),
            "jpg": [p.read_bytes() for p in photos],
        }
    )
    src = tmp_path / "i2d" / "00000.parquet"
    src.parent.mkdir()
    pq.write_table(table, src)
    out = str(tmp_path / "out")
    cfg = build_pipeline_config(
        _config(
            str(src),
            out,
            stages=["download", "caption", "fuse"],
            reader={"shard_size": 4, "input_format": "img2dataset"},
        )
    )
    # the download stage is listed but must not fetch anything: the URL's port 9 is closed
    res = run_pipeline(cfg, stream=io.StringIO(), stage_overrides=FAKES)
    rows = rows_of(out)
    assert res.status == "succeeded" and len(rows) == len(photos)
    assert all(r["status"] == "ok" and r["fused_caption"] for r in rows), [r["error"] for r in rows]
    assert [r["jpg"] for r in rows] == [p.read_bytes() for p in photos]


def test_run_cli_reports_config_errors(tmp_path, capsys):
    from pipeline.cli import main

    assert main(["run", "--output", str(tmp_path)]) == 2
    assert "an input is required" in capsys.readouterr().err


def test_manifest_records_models_and_prompts(sample_table, tmp_path):
    out = str(tmp_path / "o")
    cfg = build_pipeline_config(_config(sample_table, out, stages=["download", "caption", "fuse"]))
    run_pipeline(cfg, stream=io.StringIO(), stage_overrides=FAKES)
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert (
        m["models"]["caption"]["model"] == "unused-fake" and m["models"]["caption"]["prompt_text"]
    )
    assert m["models"]["fusion"]["prompt_id"] and "{" not in m["models"]["fusion"]["prompt_id"]
    assert m["config"]["reader"]["shard_size"] == 10 and m["runs"][0]["status"] == "succeeded"


def test_ethics_stage_with_a_blocklist_flags_and_export_excludes(sample_table, tmp_path):
    from pipeline.io.export_json import ExportConfig, export_json

    out = str(tmp_path / "o")
    rows = list(csv.DictReader(open(sample_table, encoding="utf-8")))  # noqa: SIM115
    word = rows[0]["caption"].split()[-1].strip(".,").lower()  # a word of the first AltText
    cfg = build_pipeline_config(
        _config(
            sample_table,
            out,
            stages=["download", "caption", "ethics", "fuse"],
            ethics={"blocklist": [word], "policy": "exclude"},
        )
    )
    run_pipeline(cfg, stream=io.StringIO(), stage_overrides=FAKES)
    got = rows_of(out)
    flagged = [r for r in got if r["ethics_flagged"]]
    assert flagged and all(r["status"] == "ethics_excluded" for r in flagged)
    assert sum(s.ethics_flagged for s in finished_shards(out).values()) == len(flagged)
    res = export_json(ExportConfig(source=out, splits=2))
    exported = {}
    for f in res.files:
        exported.update(json.loads(Path(f).read_text()))
    assert not {r["url"] for r in flagged} & exported.keys()
    assert len(exported) == len({r["url"] for r in got if r["status"] == "ok"})


def test_serve_sample_command(tmp_path):
    import subprocess
    import sys
    import urllib.request

    table = tmp_path / "t.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve-sample", "--write-table", str(table)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "serving" in line and "http://127.0.0.1:" in line, line
        base = line.split(" at ", 1)[1].split()[0]
        assert "wrote" in proc.stdout.readline()
        first = next(csv.DictReader(table.open()))
        assert first["url"].startswith(base)
        with urllib.request.urlopen(first["url"], timeout=10) as resp:  # loopback only
            assert resp.read(3) == b"\xff\xd8\xff"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_from_with_retry_sends_failed_rows_through_the_stages_again(tmp_path):
    files = {
        "a.jpg": (SAMPLE_DIR / sorted(p.name for p in SAMPLE_DIR.glob("*.jpg"))[0]).read_bytes()
    }
    with SampleServer(files=files) as server:
        table = tmp_path / "in.csv"
        table.write_text(
            "url,caption\n"
            f"{server.base_url}/a.jpg,fine\n"
            f"{server.base_url}/_fault/flaky/k1/a.jpg?fail=1&code=404,gone once\n"
        )
        out1, out2 = str(tmp_path / "o1"), str(tmp_path / "o2")
        run_pipeline(build_pipeline_config(_config(str(table), out1)), stream=io.StringIO())
        assert [r["status"] for r in rows_of(out1)] == ["ok", "http_error"]
        # without --retry the failed row passes through untouched
        with pytest.raises(ConfigError, match="use it with --from"):
            build_pipeline_config(_config(str(table), str(tmp_path / "x"), retry="http_error"))
        with pytest.raises(ConfigError, match="not failure statuses"):
            build_pipeline_config(_config(None, out2, input=None, **{"from": out1}, retry="ok"))
        cfg = build_pipeline_config(
            _config(
                None,
                out2,
                input=None,
                **{"from": out1},
                stages=["download", "caption"],
                retry="http_error",
            )
        )
        run_pipeline(cfg, stream=io.StringIO(), stage_overrides=FAKES)
    rows = rows_of(out2)
    assert [r["status"] for r in rows] == ["ok", "ok"]  # the 404 was transient: downloaded now
    assert all(r["visual_caption"] and r["jpg"] for r in rows)
    assert rows[0]["jpg"] == rows_of(out1)[0]["jpg"]  # the ok row was not downloaded again


def test_local_runner_runs_in_waves_and_commits_each(sample_table, tmp_path):
    from pipeline.run import plan_waves

    out = str(tmp_path / "o")
    cfg = build_pipeline_config(
        _config(sample_table, out, stages=["download", "caption", "fuse"], local_wave_shards=1)
    )
    plan = plan_run(cfg)
    waves = plan_waves(plan, 1)
    assert [w.todo for w in waves] == [[s] for s in plan.todo]
    assert [[s.shard_id for s in w.input_shards] for w in waves] == [[s] for s in plan.todo]
    assert plan_waves(plan, None) == [plan] and plan_waves(plan, 99) == [plan]
    stream = io.StringIO()
    # the same fake transforms serve every wave's pipeline
    res = run_pipeline(cfg, stream=stream, stage_overrides=FAKES)
    assert f"{len(plan.todo)} waves" in stream.getvalue()
    assert res.status == "succeeded" and len(res.written) == len(plan.todo)
    assert read_manifest(out)["runs"][-1]["shards_fused"] == len(plan.todo)
    assert all(r["fused_caption"] for r in rows_of(out) if r["status"] == "ok")


def drop_row_3(record: Record) -> bool:
    return record.row_index != 3


def test_a_stage_that_loses_rows_fails_the_run_loudly(sample_table, tmp_path):
    out = str(tmp_path / "o")
    cfg = build_pipeline_config(_config(sample_table, out, stages=["download", "caption"]))
    with pytest.raises(Exception, match="refusing to mark the shard done"):
        run_pipeline(
            cfg, stream=io.StringIO(), stage_overrides={"caption": beam.Filter(drop_row_3)}
        )
    # the shard that lost a row was never committed; the manifest says the run failed
    assert 0 not in finished_shards(out)
    manifest = read_manifest(out)
    assert manifest["status"] == "failed" and manifest["runs"][-1]["status"] == "failed"


def test_a_large_plan_reaches_the_runner_as_a_file(sample_table, tmp_path, monkeypatch):
    """Above PLAN_FILE_MIN_SHARDS the shard plan is read from OUT/plan/, not the job graph."""
    import pipeline.run as run_module

    embedded = str(tmp_path / "embedded")
    run_pipeline(build_pipeline_config(_config(sample_table, embedded)), stream=io.StringIO())
    monkeypatch.setattr(run_module, "PLAN_FILE_MIN_SHARDS", 1)
    from_file = str(tmp_path / "from-file")
    res = run_pipeline(
        build_pipeline_config(_config(sample_table, from_file)), stream=io.StringIO()
    )
    assert res.status == "succeeded"
    # one plan file per local wave, together the whole plan
    lines = [
        ln
        for f in Path(from_file, "plan").glob("shards-*.jsonl")
        for ln in f.read_text().splitlines()
    ]
    assert sorted(json.loads(ln)["shard_id"] for ln in lines) == list(range(res.plan.shards_total))
    assert not Path(embedded, "plan").exists()
    assert rows_of(from_file, ("download_attempts",)) == rows_of(embedded, ("download_attempts",))


def test_a_large_earlier_output_reaches_the_runner_as_a_file(sample_table, tmp_path, monkeypatch):
    """--from over many shards: the committed parquets are listed in OUT/plan/earlier-*.jsonl
    (read on a worker), not embedded in the job graph; the rows are the same."""
    import pipeline.io.readers as readers_module

    first = str(tmp_path / "first")
    run_pipeline(build_pipeline_config(_config(sample_table, first)), stream=io.StringIO())

    def chained(out: str) -> dict:
        return {"from": first, "output": out, "stages": [], "progress": False}

    embedded = str(tmp_path / "embedded")
    run_pipeline(build_pipeline_config(chained(embedded)), stream=io.StringIO())
    monkeypatch.setattr(readers_module, "PLAN_FILE_MIN_SHARDS", 1)
    from_file = str(tmp_path / "from-file")
    res = run_pipeline(build_pipeline_config(chained(from_file)), stream=io.StringIO())
    assert res.status == "succeeded"
    listed = [
        json.loads(ln)[0]
        for f in Path(from_file, "plan").glob("earlier-*.jsonl")
        for ln in f.read_text().splitlines()
    ]
    assert sorted(listed) == list(range(res.plan.shards_total))
    assert not Path(embedded, "plan").exists()
    assert rows_of(from_file) == rows_of(embedded)
