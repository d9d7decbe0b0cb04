"""The progress watch and the runner-specific branches of `run_pipeline`.

The bar counts committed shards (stats files) from the launcher. On the local runner it is drawn
and the job runs in waves; on any other runner (Flink, Prism, Dataflow: the job runs elsewhere,
the output may be an object store) there is one pipeline, no bar and no polling of the output.
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import apache_beam as beam
import pytest

from pipeline.config import build_pipeline_config
from pipeline.io.writer import WriterConfig, write_shard
from pipeline.progress import ShardProgress
from pipeline.run import run_pipeline


def _count_polls(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = ShardProgress.poll

    def counting(self):
        calls.append(1)
        return real(self)

    monkeypatch.setattr(ShardProgress, "poll", counting)
    return calls


def test_a_disabled_watch_never_polls_the_output(tmp_path, monkeypatch):
    calls = _count_polls(monkeypatch)
    with ShardProgress(str(tmp_path / "out"), [0, 1], interval_s=0.01, enabled=False):
        time.sleep(0.2)
    assert calls == []
    assert not [t for t in threading.enumerate() if t.name == "vecap-progress"]


def test_the_bar_counts_shards_committed_while_it_watches(tmp_path):
    out = str(tmp_path / "out")
    seen: list[tuple[int, int]] = []
    stream = io.StringIO()
    with ShardProgress(
        out,
        [0, 1, 2],
        interval_s=0.02,
        stream=stream,
        on_update=lambda d, t, _: seen.append((d, t)),
    ) as progress:
        for sid in (0, 2):
            write_shard(WriterConfig(output=out), sid, [], 0)
            time.sleep(0.1)
    assert sorted(progress.done) == [0, 2]
    assert seen[-1] == (2, 3)
    assert "2/3" in stream.getvalue()


def _identity(record):
    return record


@pytest.mark.parametrize(
    ("beam_args", "local"),
    [([], True), (["--runner=PortableRunner", "--job_endpoint=127.0.0.1:1"], False)],
)
def test_waves_and_bar_only_on_the_local_runner(beam_args, local, tmp_path, monkeypatch):
    """A non-local runner gets the whole job as one pipeline and no watch; the pipeline itself
    runs on the FnApiRunner here (make_pipeline is swapped), the branches are what is tested."""
    import pipeline.runner_options as runner_options

    table = tmp_path / "in.csv"
    table.write_text(
        "url,caption\n" + "".join(f"http://127.0.0.1:9/{i}.jpg,c{i}\n" for i in range(6))
    )
    built: list[int] = []

    def local_pipeline(options):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        built.append(1)
        return beam.Pipeline(runner=FnApiRunner())

    monkeypatch.setattr(runner_options, "make_pipeline", local_pipeline)
    calls = _count_polls(monkeypatch)
    cfg = build_pipeline_config(
        {
            "input": str(table),
            "output": str(tmp_path / "out"),
            # a model stage: a download-only job runs in one wave on the local runner too
            "stages": ["download", "caption"],
            "caption": {"generation": {"model": "unused-fake"}},
            "progress": True,
            "local_wave_shards": 1,
            "reader": {"shard_size": 2},
            "beam_args": beam_args,
        }
    )
    stream = io.StringIO()
    res = run_pipeline(
        cfg,
        stream=stream,
        stage_overrides={"download": beam.Map(_identity), "caption": beam.Map(_identity)},
    )
    assert res.status == "succeeded" and len(res.written) == 3
    text = stream.getvalue()
    if local:
        assert len(built) == 3 and "3 waves" in text and "shards: 100%" in text and calls
    else:
        assert len(built) == 1 and "waves" not in text and "shards:" not in text and not calls
    assert Path(tmp_path / "out" / "manifest.json").is_file()
