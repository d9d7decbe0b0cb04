"""ReadInput in a Beam pipeline on the in-process FnApiRunner."""

from __future__ import annotations

import pickle
from pathlib import Path

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.io.readers import ReaderConfig, ReadInput, plan_shards
from schemas import make_uid


def _write_inputs(tmp_path: Path) -> ReaderConfig:
    (tmp_path / "a.csv").write_text(
        "url,caption\n" + "".join(f"https://e.com/{i}.jpg,cap {i}\n" for i in range(13)) + ",\n"
    )
    (tmp_path / "b.jsonl").write_text(
        "".join(
            f'{{"url": "https://e.com/{i}.jpg", "caption": "cap {i}"}}\n' for i in range(14, 20)
        )
    )
    return ReaderConfig((str(tmp_path / "a.csv"), str(tmp_path / "b.jsonl")), shard_size=5)


def _summary(record) -> tuple[str, str | None, str]:
    return record.uid, record.url, record.status


def test_read_input_yields_every_row_once(tmp_path: Path) -> None:
    config = _write_inputs(tmp_path)
    expected = [
        (
            make_uid(i // 5, i % 5),
            f"https://e.com/{i}.jpg" if i != 13 else None,
            "ok" if i != 13 else "invalid_row",
        )
        for i in range(20)
    ]
    p = BeamTestPipeline(runner=FnApiRunner())
    records = p | ReadInput(config)
    assert_that(records | beam.Map(_summary), equal_to(expected))
    result = p.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("vecap.readers"))["counters"]
    }
    assert counters == {"rows": 20, "invalid_rows": 1, "shards": 4}


def test_read_input_reads_only_the_given_shards(tmp_path: Path) -> None:
    config = _write_inputs(tmp_path)
    todo = [s for s in plan_shards(config) if s.shard_id in (1, 3)]
    expected = [
        (make_uid(i // 5, i % 5), f"https://e.com/{i}.jpg", "ok")
        for i in (*range(5, 10), *range(15, 20))
    ]
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        assert_that(p | ReadInput(config, todo) | beam.Map(_summary), equal_to(expected))
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        assert_that(p | ReadInput(config, []), equal_to([]))


def test_config_and_transform_pickle(tmp_path: Path) -> None:
    config = _write_inputs(tmp_path)
    assert pickle.loads(pickle.dumps(config)) == config
    shards = plan_shards(config)
    assert pickle.loads(pickle.dumps(shards)) == shards
    pickle.dumps(ReadInput(config, shards))


def test_read_input_from_a_plan_file_equals_the_embedded_plan(tmp_path: Path) -> None:
    from pipeline.io.readers import write_plan_file

    config = _write_inputs(tmp_path)
    todo = [s for s in plan_shards(config) if s.shard_id != 2]
    plan_file = write_plan_file(todo, str(tmp_path / "plan" / "shards.jsonl"))
    assert len(Path(plan_file).read_text().splitlines()) == len(todo)
    results = []
    for source in ({"shards": todo}, {"plan_file": plan_file}):
        p = BeamTestPipeline(runner=FnApiRunner())
        records = p | ReadInput(config, **source)
        out = tmp_path / f"out-{len(results)}.pkl"
        assert_that(
            records | beam.Map(_summary),
            lambda got, out=out: out.write_bytes(pickle.dumps(sorted(got))),
        )
        p.run().wait_until_finish()
        results.append(pickle.loads(out.read_bytes()))
    assert results[0] == results[1] and len(results[0]) == 15
    assert not any(uid.startswith(make_uid(2, 0)[:5]) for uid, _, _ in results[1])


def test_read_input_reads_a_plan_file_under_a_non_local_fsspec_url(tmp_path: Path) -> None:
    """The plan file goes through fsspec on both sides (written by the launcher, read by the
    pipeline), so any fsspec URL works: here memory://, which Beam's own filesystems lack (as
    they lack gs:// or s3:// without apache-beam[gcp]/[aws]). The in-process runner shares the
    launcher's memory filesystem."""
    import fsspec

    from pipeline.io.readers import write_plan_file

    config = _write_inputs(tmp_path)
    todo = [s for s in plan_shards(config) if s.shard_id in (0, 3)]
    url = f"memory://vecap-test-{tmp_path.name}/plan/shards.jsonl"
    try:
        assert write_plan_file(todo, url) == url
        expected = [
            (make_uid(i // 5, i % 5), f"https://e.com/{i}.jpg", "ok")
            for i in (*range(0, 5), *range(15, 20))
        ]
        with BeamTestPipeline(runner=FnApiRunner()) as p:
            records = p | ReadInput(config, plan_file=url)
            assert_that(records | beam.Map(_summary), equal_to(expected))
    finally:
        fsspec.filesystem("memory").rm(f"/vecap-test-{tmp_path.name}", recursive=True)


def test_a_damaged_plan_file_fails_with_its_line_number(tmp_path: Path) -> None:
    import pytest

    from pipeline.io.readers import read_plan_file, write_plan_file

    config = _write_inputs(tmp_path)
    path = write_plan_file(plan_shards(config), str(tmp_path / "plan.jsonl"))
    assert list(read_plan_file(path)) == plan_shards(config)
    Path(path).write_text(Path(path).read_text() + '{"shard_id": 9}\n')
    with pytest.raises(ValueError, match=r"plan.jsonl:5: not a shard plan line"):
        list(read_plan_file(path))
