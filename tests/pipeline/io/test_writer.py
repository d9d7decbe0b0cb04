"""The shard writer: atomic, checked, sorted, stats last, resumable, bounded by shard."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.io.writer import (
    ShardIntegrityError,
    WriterConfig,
    WriteShards,
    finished_shards,
    make_stage_clock,
    new_clock,
    parquet_path,
    read_shard_records,
    remove_stale_temporaries,
    stage_seconds_from_marks,
    stats_path,
    write_shard,
)
from schemas import RECORD_SCHEMA, Record, Status, make_uid
from schemas.stats import ShardStats


def _records(shard_id: int, n: int, *, fail_every: int = 0) -> list[Record]:
    out = []
    for i in range(n):
        r = Record(
            uid=make_uid(shard_id, i),
            shard_id=shard_id,
            row_index=i,
            url=f"http://127.0.0.1/{shard_id}/{i}.jpg",
            alt_text=f"alt {i}",
            jpg=b"\xff\xd8fake" * 3,
            image_format="jpeg",
            visual_caption=f"vc {i}",
            fused_caption=f"vec {i}",
            fusion_source="llm",
            caption_model="tiny-llava",
            fusion_model="tiny-llama",
        )
        if fail_every and i % fail_every == 0:
            r = r.fail(Status.HTTP_ERROR, "404")
            r = r.replace(fusion_source=None, fused_caption=None)
        out.append(r)
    return out


def test_write_shard_sorted_schema_and_stats_last(tmp_path):
    cfg = WriterConfig(output=str(tmp_path), rows_per_row_group=4)
    rows = _records(3, 10, fail_every=3)[::-1]  # arrives out of order
    stats = write_shard(cfg, 3, rows, 10, stage_seconds={"download": 1.5}, started_at=1.0)
    table = pq.read_table(parquet_path(str(tmp_path), 3))
    assert table.schema.equals(RECORD_SCHEMA, check_metadata=False)
    assert table.column("uid").to_pylist() == sorted(r.uid for r in rows)
    assert pq.ParquetFile(parquet_path(str(tmp_path), 3)).num_row_groups == 3
    assert (
        pq.ParquetFile(parquet_path(str(tmp_path), 3)).metadata.row_group(0).column(0).compression
        == "ZSTD"
    )
    on_disk = ShardStats.from_json(Path(stats_path(str(tmp_path), 3)).read_text())
    assert on_disk.rows == 10 == stats.rows
    assert on_disk.status_counts == {"http_error": 4, "ok": 6}
    assert on_disk.fusion_source_counts == {"llm": 6}
    assert on_disk.stage_seconds["download"] == 1.5 and "write" in on_disk.stage_seconds
    assert on_disk.caption_models == ["tiny-llava"]
    assert finished_shards(str(tmp_path)).keys() == {3}
    back = list(read_shard_records(parquet_path(str(tmp_path), 3)))
    assert [r.uid for r in back] == sorted(r.uid for r in rows)
    assert back[1].jpg == b"\xff\xd8fake" * 3 and back[0].jpg is None  # failed rows drop bytes
    # the stats file names this attempt's parquet with its size; no temporaries left behind
    parquet = tmp_path / "shards" / on_disk.parquet
    assert on_disk.parquet == f"part-00003.{on_disk.attempt}.parquet" and len(on_disk.attempt) == 16
    assert on_disk.parquet_bytes == parquet.stat().st_size
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        on_disk.parquet,
        "part-00003.stats.json",
    ]


@pytest.mark.parametrize(("compression", "level"), [("zstd", None), ("zstd", 5), ("none", None)])
def test_image_bytes_are_stored_uncompressed_the_rest_compressed(tmp_path, compression, level):
    """JPEG bytes do not shrink: compressing them costs CPU per row and saves nothing."""
    cfg = WriterConfig(output=str(tmp_path), compression=compression, compression_level=level)
    rows = _records(0, 6)
    write_shard(cfg, 0, rows, 6)
    meta = pq.ParquetFile(parquet_path(str(tmp_path), 0)).metadata.row_group(0)
    codecs = {
        meta.column(i).path_in_schema: meta.column(i).compression for i in range(meta.num_columns)
    }
    assert codecs["jpg"] == "UNCOMPRESSED"
    expected = "UNCOMPRESSED" if compression == "none" else compression.upper()
    assert codecs["url"] == codecs["uid"] == codecs["alt_text"] == expected
    back = list(read_shard_records(parquet_path(str(tmp_path), 0)))
    assert [r.jpg for r in back] == [r.jpg for r in sorted(rows, key=lambda r: r.uid)]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda rows: rows[:-1], "9 rows reached the writer, 10 were read"),
        (lambda rows: rows + [rows[0]], "duplicate uids"),
        (lambda rows: rows[:-1] + [_records(4, 1)[0]], "belong to another shard"),
    ],
)
def test_short_or_duplicated_shard_is_never_marked_done(tmp_path, mutate, message):
    cfg = WriterConfig(output=str(tmp_path))
    with pytest.raises(ShardIntegrityError, match=message):
        write_shard(cfg, 3, mutate(_records(3, 10)), 10)
    assert not (tmp_path / "shards" / "part-00003.stats.json").exists()
    assert finished_shards(str(tmp_path)) == {}


def test_a_committed_shard_is_never_rewritten_and_stale_temporaries_go(tmp_path):
    cfg = WriterConfig(output=str(tmp_path))
    first = write_shard(cfg, 0, _records(0, 3), 3)
    (tmp_path / "shards" / ".part-00001.x.parquet.tmp-abc").write_bytes(b"half")
    assert remove_stale_temporaries(str(tmp_path)) == 1
    with pytest.raises(ShardIntegrityError):
        write_shard(cfg, 0, _records(0, 2), 3)
    # a failed redo is refused before touching anything: the earlier complete shard stays valid
    assert finished_shards(str(tmp_path))[0].rows == 3
    assert len(list(read_shard_records(parquet_path(str(tmp_path), 0)))) == 3
    # a second attempt of a committed shard (a retried bundle) writes nothing and gets the commit
    again = write_shard(cfg, 0, _records(0, 4), 4)
    assert again == first and finished_shards(str(tmp_path))[0].rows == 3
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        first.parquet,
        "part-00000.stats.json",
    ]


def test_keep_images_false_and_memory_filesystem():
    cfg = WriterConfig(output="memory://vecap-writer-test/out", keep_images=False)
    write_shard(cfg, 1, _records(1, 5), 5)
    assert finished_shards(cfg.output).keys() == {1}
    back = list(read_shard_records(parquet_path(cfg.output, 1)))
    assert len(back) == 5 and all(r.jpg is None for r in back)


def test_config_validation():
    with pytest.raises(ValueError):
        WriterConfig(output="")
    with pytest.raises(ValueError):
        WriterConfig(output="x", rows_per_row_group=0)
    with pytest.raises(ValueError):
        WriterConfig(output="x", compression="zip")


def test_stage_seconds_are_a_critical_path():
    marks = {"read": [10.0, 11.0], "download": [10.5, 14.0], "fuse": [15.0, 20.0]}
    seconds, started = stage_seconds_from_marks(marks, ["read", "download", "caption", "fuse"])
    assert started == 10.0
    assert seconds == {"read": 1.0, "download": 3.0, "fuse": 6.0}
    assert sum(seconds.values()) == 20.0 - 10.0


def _stats_tuple(s: ShardStats):
    return (s.shard_id, s.rows, json.dumps(s.status_counts, sort_keys=True))


def _run_counters(p) -> dict:
    from pipeline.run import writer_counters

    result = p.run()
    result.wait_until_finish()
    return writer_counters(result)


def test_write_shards_in_beam_fused_path(tmp_path):
    """As in a real run: one element per shard read into rows, so every shard reaches the writer
    whole in one bundle and is written by the fused path, with the stage clock's timings."""
    out = str(tmp_path)
    expected = {0: 7, 1: 5}
    clock = new_clock()
    p = BeamTestPipeline(runner=FnApiRunner())
    shards = p | beam.Create([0, 1]) | beam.Reshuffle()
    records = shards | beam.FlatMap(lambda sid: _records(sid, expected[sid], fail_every=2))
    records = records | "clock_read" >> make_stage_clock("read", clock)
    stats = records | WriteShards(WriterConfig(output=out), expected, stages=["read"], clock=clock)
    assert_that(
        stats | beam.Map(_stats_tuple),
        equal_to(
            [
                (0, 7, json.dumps({"http_error": 4, "ok": 3})),
                (1, 5, json.dumps({"http_error": 3, "ok": 2})),
            ]
        ),
    )
    assert _run_counters(p) == {"shards_fused": 2}
    done = finished_shards(out)
    assert done.keys() == {0, 1}
    assert "read" in done[0].stage_seconds and done[0].started_at > 0
    for sid, n in expected.items():
        uids = [r.uid for r in read_shard_records(parquet_path(out, sid))]
        assert uids == [make_uid(sid, i) for i in range(n)]


def test_write_shards_in_beam_regroups_shards_split_across_bundles(tmp_path):
    """Rows of one shard spread over bundles (two workers splitting a Create of rows, as a stage
    that redistributes rows would) are completed through the GroupByKey path, never lost."""
    from apache_beam.options.pipeline_options import PipelineOptions

    out = str(tmp_path)
    options = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_threading"])
    p = beam.Pipeline(runner=FnApiRunner(), options=options)
    rows = _records(0, 7) + _records(1, 50)
    _ = p | beam.Create(rows) | WriteShards(WriterConfig(output=out), {0: 7, 1: 50})
    counters = _run_counters(p)
    assert counters.get("shards_regrouped", 0) >= 1 and counters.get("rows_regrouped", 0) >= 1
    assert counters.get("shards_regrouped", 0) + counters.get("shards_fused", 0) == 2
    done = finished_shards(out)
    assert {s: d.rows for s, d in done.items()} == {0: 7, 1: 50}
    uids = [r.uid for r in read_shard_records(parquet_path(out, 1))]
    assert uids == [make_uid(1, i) for i in range(50)]


def test_write_shards_in_beam_fails_loudly_on_lost_rows(tmp_path):
    with pytest.raises(Exception, match="5 were read"), BeamTestPipeline(runner=FnApiRunner()) as p:
        (p | beam.Create(_records(0, 4)) | WriteShards(WriterConfig(output=str(tmp_path)), {0: 5}))
    assert finished_shards(str(tmp_path)) == {}


def test_commit_without_hard_links_is_still_exclusive(tmp_path, monkeypatch):
    """Filesystems without link(2) (some FUSE mounts) fall back to O_EXCL creation."""
    import errno
    import os

    from pipeline.io.shard_files import fs_and_path, put_if_absent

    def no_links(src, dst):
        raise OSError(errno.EPERM, "links not supported")

    monkeypatch.setattr(os, "link", no_links)
    fs, root = fs_and_path(str(tmp_path))
    assert put_if_absent(fs, f"{root}/c.json", b"first") is True
    assert put_if_absent(fs, f"{root}/c.json", b"second") is False
    assert (tmp_path / "c.json").read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]  # no temporaries left


def test_a_commit_whose_answer_was_lost_keeps_its_parquet(tmp_path, monkeypatch):
    """S3 clients retry a PUT whose response was lost: the retry meets the attempt's own commit
    (412) and reports it lost. The attempt must see its own name in the stats file and keep
    its parquet, not delete the file the commit names."""
    import pipeline.io.writer as writer

    real = writer.put_if_absent

    def created_but_answer_lost(fs, path, data):
        assert real(fs, path, data) is True
        return False  # what the retried request says

    monkeypatch.setattr(writer, "put_if_absent", created_but_answer_lost)
    cfg = WriterConfig(output=str(tmp_path))
    stats = write_shard(cfg, 2, _records(2, 4), 4)
    assert finished_shards(str(tmp_path))[2] == stats
    assert len(list(read_shard_records(parquet_path(str(tmp_path), 2)))) == 4
