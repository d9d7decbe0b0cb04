"""`vecap run --dedup` and the caption cache: every row out, canonical captions, one model call per
distinct image / pair, resume, and a cache that never serves another model's or prompt's entry.

Real tiny models on the loopback sample server; model calls are counted at the transformers
generator (the local runner runs the model stages in this process).
"""

from __future__ import annotations

import collections
import csv
import io
import json
import threading
from pathlib import Path

import pytest

from pipeline.config import ConfigError, build_pipeline_config
from pipeline.dedup import cache as caption_cache
from pipeline.dedup.keys import normalize_url
from pipeline.io.shard_files import committed_shards
from pipeline.io.stats_summary import output_stats
from pipeline.manifest import read_manifest
from pipeline.run import run_pipeline
from pipeline.sample.server import SAMPLE_DIR, SampleServer
from tests.pipeline.test_run import rows_of

pytestmark = pytest.mark.slow
IMAGES = sorted(p.name for p in SAMPLE_DIR.glob("*.jpg"))


@pytest.fixture(scope="module")
def server():
    with SampleServer(root_dir=SAMPLE_DIR) as s:
        yield s


class CallCounter:
    """Prompts each transformers generator was asked: {'caption': n, 'text': n}."""

    def __init__(self, monkeypatch) -> None:
        from pipeline.generation.transformers_backend import TransformersGenerator

        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        original = TransformersGenerator.generate
        counter = self

        def counting(gen, prompts, images=None):
            with counter._lock:
                counter.calls["caption" if images is not None else "text"] += len(prompts)
            return original(gen, prompts, images)

        monkeypatch.setattr(TransformersGenerator, "generate", counting)


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["url", "caption"])
        w.writerows(rows)
    return path


def _config(tiny_models, inp: str, out: Path, **extra) -> dict:
    return {
        "input": inp,
        "output": str(out),
        "stages": ["download", "caption", "fuse"],
        "progress": False,
        "reader": {"shard_size": 4},
        "dedup": True,
        "download": {"allow_private_networks": True, "threads": 4, "retries": 0},
        "caption": {
            "generation": {"model": str(tiny_models.llava), "device": "cpu", "max_new_tokens": 6}
        },
        "fusion": {
            "generation": {"model": str(tiny_models.llm), "device": "cpu", "max_new_tokens": 6}
        },
        **extra,
    }


def _run(data: dict):
    return run_pipeline(build_pipeline_config(data), stream=io.StringIO())


def _by_uid(out: Path) -> dict[str, dict]:
    return {r["uid"]: r for r in rows_of(str(out))}


def _dup_table(base: str, tmp: Path) -> tuple[Path, Path]:
    """Two input files (a directory): the same URL across files and shards, the same URL
    written differently, the same bytes behind another URL, a repeated 404."""
    a, b, c = (f"{base}/{IMAGES[i]}" for i in range(3))
    host = base.split("://", 1)[1]
    first = [
        (a, "a dog on grass"),  # 0000000 canonical of a
        (b, "a red car"),  # 0000001 canonical of b
        (c, "a small boat"),  # 0000002 canonical of c
        (f"{base}/missing.jpg", "gone"),  # 0000003 404, canonical of missing
        (a, "a dog on grass"),  # shard 1: url + pair duplicate of 0
        (f"HTTP://{host.upper()}/{IMAGES[1]}#top", "another text for b"),  # url dup of 1, new pair
    ]
    second = [
        (f"{c}?copy=1", "a small boat"),  # other URL, same bytes as c, same alt: image + pair dup
        (f"{base}/missing.jpg", "gone too"),  # url duplicate of a failed canonical
        (a, "a dog on grass"),  # file 2: url + pair duplicate of 0 again
    ]
    folder = tmp / "input"
    folder.mkdir()
    _write_csv(folder / "part-1.csv", first)
    _write_csv(folder / "part-2.csv", second)
    return folder, folder


def test_normalize_url_keeps_what_servers_may_distinguish():
    assert normalize_url("HTTP://Example.COM:80/A/b?Q=1#frag") == "http://example.com/A/b?Q=1"
    assert normalize_url("https://example.com:443") == "https://example.com/"
    assert normalize_url("https://example.com:8443/x") == "https://example.com:8443/x"
    assert normalize_url("http://[::1]:8080/x") == "http://[::1]:8080/x"
    assert normalize_url("http://a.com/x") != normalize_url("http://a.com/X")
    assert normalize_url("http://bad:port/x") == "http://bad:port/x"  # kept as given


def test_dedup_within_a_job(tiny_models, server, tmp_path, monkeypatch):
    counter = CallCounter(monkeypatch)
    folder, _ = _dup_table(server.base_url, tmp_path)
    out = tmp_path / "out"
    result = _run(_config(tiny_models, str(folder), out))
    assert result.status == "succeeded"
    rows = _by_uid(out)
    # rows in == rows out, per shard, in their own shards
    stats = committed_shards(str(out))
    assert sum(s.rows for s in stats.values()) == len(rows) == 9
    assert {sid: s.rows for sid, s in stats.items()} == {0: 4, 1: 4, 2: 1}
    uid = sorted(rows)
    canon_a, canon_b, canon_c, missing = uid[0], uid[1], uid[2], uid[3]
    url_dup_a, url_dup_b, bytes_dup_c, missing_dup, url_dup_a2 = uid[4:]
    assert rows[url_dup_a]["shard_id"] != rows[canon_a]["shard_id"]  # across shards
    assert rows[url_dup_a2]["shard_id"] == 2  # across input files
    # URL duplicates: not downloaded (no bytes of their own), the canonical's image fields
    for dup, canon in ((url_dup_a, canon_a), (url_dup_b, canon_b), (url_dup_a2, canon_a)):
        r, c = rows[dup], rows[canon]
        assert (r["duplicate_of"], r["duplicate_kind"]) == (canon, "url")
        assert r["jpg"] is None and r["status"] == "ok"
        assert (r["sha256"], r["width"], r["height"]) == (c["sha256"], c["width"], c["height"])
        assert r["visual_caption"] == c["visual_caption"] and r["visual_caption"]
        assert r["caption_engine"] == c["caption_engine"]
    # the same bytes behind another URL: downloaded (its own bytes), captioned once
    r, c = rows[bytes_dup_c], rows[canon_c]
    assert (r["duplicate_of"], r["duplicate_kind"]) == (canon_c, "image")
    assert r["jpg"] and r["sha256"] == c["sha256"] and r["url"] != c["url"]
    assert r["visual_caption"] == c["visual_caption"]
    # pairs: the same image and AltText are fused once; a new AltText is fused on its own
    for dup, canon in ((url_dup_a, canon_a), (url_dup_a2, canon_a), (bytes_dup_c, canon_c)):
        assert rows[dup]["fusion_of"] == canon
        assert rows[dup]["fused_caption"] == rows[canon]["fused_caption"]
        assert rows[dup]["fusion_source"] == rows[canon]["fusion_source"]
    assert rows[url_dup_b]["fusion_of"] is None and rows[url_dup_b]["fused_caption"]
    # canonical rows carry no dedup marks
    for canon in (canon_a, canon_b, canon_c):
        assert rows[canon]["duplicate_of"] is None and rows[canon]["fusion_of"] is None
    # a repeated URL whose canonical failed inherits the failure, saying whose
    assert rows[missing]["status"] == "http_error" and rows[missing]["duplicate_of"] is None
    assert rows[missing_dup]["status"] == "http_error"
    assert rows[missing_dup]["duplicate_of"] == missing
    assert f"duplicate of {missing} (same URL)" in rows[missing_dup]["error"]
    # one model call per distinct image and per distinct (caption, AltText) pair
    assert counter.calls["caption"] == 3
    llm_pairs = {
        (r["visual_caption"], r["alt_text"])
        for r in rows.values()
        if r["fusion_source"] == "llm" and r["fusion_of"] is None
    }
    assert counter.calls["text"] == len(llm_pairs)
    # counted in the stats, `vecap stats` and the manifest
    summary = output_stats(str(out)).dedup_counts
    assert summary["url_duplicates"] == 4 and summary["image_duplicates"] == 1
    assert summary["pair_duplicates"] == 3
    assert summary["caption_calls_saved"] == 4  # 3 URL dups with an image + 1 bytes dup
    from pipeline.io.stats_summary import format_stats

    assert "caption_calls_saved" in format_stats(output_stats(str(out)))
    manifest = read_manifest(str(out))
    assert manifest["dedup"]["counts"] == summary
    from pipeline.report.build import ReportConfig, build_report

    page = Path(build_report(ReportConfig(output_dir=str(out))).path).read_text()
    assert "caption calls saved" in page and "downloads saved (repeated URLs)" in page
    from pipeline.job_status import format_status, job_status

    st = job_status(str(out), cache_dir=str(tmp_path / "status-cache"))
    assert st.dedup_counts == summary and "url_duplicates 4" in format_status(st)
    # `vecap estimate OUT` says where the model phases' figures are
    from pipeline.estimate import estimate_output

    notes = " ".join(estimate_output(str(out)).notes)
    assert "a --dedup output" in notes and str(out / "dedup" / "caption") in notes
    assert manifest["stages"] == ["download", "caption", "fuse"]
    assert manifest["stages_done"] == ["download", "caption", "fuse"]
    # the release export works as before: one caption per URL, from its own row
    from pipeline.io.export_json import ExportConfig, export_json

    res = export_json(ExportConfig(source=str(out), splits=1))
    assert res.entries == 5  # a, b, c, c?copy=1, and the normalised spelling of b's URL


def test_canonical_is_a_row_that_succeeded(tiny_models, server, tmp_path, monkeypatch):
    """The smallest uid of a URL is not its canonical when that row failed validation: the
    next valid row is fetched, and its duplicates get its image, not the failure."""
    counter = CallCounter(monkeypatch)
    a = f"{server.base_url}/{IMAGES[0]}"
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        "\n".join(
            json.dumps(r)
            for r in (
                {"url": a, "caption": 17},  # invalid_row: an AltText that is not text
                {"url": a, "caption": "a photo"},
                {"url": a, "caption": "a photo"},
            )
        )
        + "\n"
    )
    out = tmp_path / "out"
    _run(_config(tiny_models, str(inp), out))
    rows = [r for _, r in sorted(_by_uid(out).items())]
    assert rows[0]["status"] == "invalid_row" and rows[0]["duplicate_of"] is None
    assert rows[1]["status"] == "ok" and rows[1]["duplicate_of"] is None and rows[1]["jpg"]
    assert rows[2]["status"] == "ok" and rows[2]["duplicate_of"] == rows[1]["uid"]
    assert rows[2]["fusion_of"] == rows[1]["uid"]
    assert rows[2]["fused_caption"] == rows[1]["fused_caption"]
    assert counter.calls["caption"] == 1


def _comparable(out: Path) -> dict[str, dict]:
    return {
        uid: {k: v for k, v in r.items() if k not in ("download_attempts",)}
        for uid, r in _by_uid(out).items()
    }


def test_killed_dedup_job_resumes_without_redoing_paid_work(
    tiny_models, server, tmp_path, monkeypatch
):
    folder, _ = _dup_table(server.base_url, tmp_path)
    reference = tmp_path / "reference"
    _run(_config(tiny_models, str(folder), reference))

    import pipeline.dedup.phases as phases

    out = tmp_path / "out"
    original = phases.DedupRun.index

    def dies_at_fusion_fill(self, name, build):
        if name == "fusion-fill":
            raise KeyboardInterrupt("killed")
        return original(self, name, build)

    monkeypatch.setattr(phases.DedupRun, "index", dies_at_fusion_fill)
    with pytest.raises(KeyboardInterrupt):
        _run(_config(tiny_models, str(folder), out))
    assert not (out / "shards").exists() or not committed_shards(str(out))
    monkeypatch.setattr(phases.DedupRun, "index", original)
    counter = CallCounter(monkeypatch)
    _run(_config(tiny_models, str(folder), out))
    assert counter.calls == {}  # captions and fusions were committed before the kill
    assert _comparable(out) == _comparable(reference)

    # killed inside an index job, after it wrote some patch files: redone, same output
    out2 = tmp_path / "out2"
    from pipeline.dedup import index_jobs

    real_write = index_jobs.write_shard_patches
    calls = {"n": 0}

    def dies_after_one_file(folder_, shard_id, patches):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker lost")
        return real_write(folder_, shard_id, patches)

    monkeypatch.setattr(index_jobs, "write_shard_patches", dies_after_one_file)
    with pytest.raises(Exception, match="worker lost"):
        _run(_config(tiny_models, str(folder), out2))
    monkeypatch.setattr(index_jobs, "write_shard_patches", real_write)
    _run(_config(tiny_models, str(folder), out2))
    assert _comparable(out2) == _comparable(reference)


def test_caption_cache_across_jobs(tiny_models, server, tmp_path, monkeypatch):
    """A second job over an input half new calls the models only for what is new; another
    prompt never uses the entries."""
    cache = tmp_path / "cache"
    urls = [f"{server.base_url}/{n}" for n in IMAGES[:8]]
    first = _write_csv(tmp_path / "first.csv", [(u, f"alt {i}") for i, u in enumerate(urls[:4])])
    second = _write_csv(
        tmp_path / "second.csv", [(u, f"alt {i}") for i, u in enumerate(urls[2:], start=2)]
    )
    counter = CallCounter(monkeypatch)
    _run(_config(tiny_models, str(first), tmp_path / "job1", caption_cache=str(cache)))
    assert counter.calls["caption"] == 4
    assert len(caption_cache.list_segments(str(cache), caption_cache.CAPTIONS)) == 1
    job1 = {r["url"]: r for r in rows_of(str(tmp_path / "job1"))}
    counter.calls.clear()
    _run(_config(tiny_models, str(second), tmp_path / "job2", caption_cache=str(cache)))
    assert counter.calls["caption"] == 4  # urls[4:8]; urls[2:4] come from the cache
    job2 = {r["url"]: r for r in rows_of(str(tmp_path / "job2"))}
    for u in urls[2:4]:
        assert job2[u]["caption_cached"] is True and job2[u]["fusion_cached"] is True
        assert job2[u]["visual_caption"] == job1[u]["visual_caption"]
        assert job2[u]["fused_caption"] == job1[u]["fused_caption"]
    for u in urls[4:]:
        assert not job2[u]["caption_cached"]
    stats = output_stats(str(tmp_path / "job2")).dedup_counts
    assert stats["caption_cache_hits"] == 2 and stats["caption_calls_saved"] == 2

    # another prompt (or model): no entry is used
    counter.calls.clear()
    other = _config(tiny_models, str(second), tmp_path / "job3", caption_cache=str(cache))
    other["caption"]["prompt_id"] = "other-v1"
    other["caption"]["prompt_text"] = "Say what is in this picture."
    _run(other)
    assert counter.calls["caption"] == 6
    assert not any(r["caption_cached"] for r in rows_of(str(tmp_path / "job3")))


def test_two_jobs_add_to_one_cache_at_once(tiny_models, server, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    urls = [f"{server.base_url}/{n}" for n in IMAGES[:6]]
    tables = [
        _write_csv(tmp_path / "a.csv", [(u, "x") for u in urls[:4]]),
        _write_csv(tmp_path / "b.csv", [(u, "x") for u in urls[2:]]),
    ]
    errors: list[BaseException] = []

    def job(i: int) -> None:
        try:
            _run(
                _config(tiny_models, str(tables[i]), tmp_path / f"job{i}", caption_cache=str(cache))
            )
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    # every caption either job computed is in the cache, each segment whole and readable
    entries = collections.defaultdict(list)
    for seg in caption_cache.list_segments(str(cache), caption_cache.CAPTIONS):
        for key, (_url, fields) in caption_cache.read_segment(seg, caption_cache.CAPTIONS):
            entries[key].append(fields)
    assert len(entries) == 6  # six distinct images, whichever job captioned them
    # a third job over all six images calls no model for captions
    counter = CallCounter(monkeypatch)
    every = _write_csv(tmp_path / "c.csv", [(u, "x") for u in urls])
    _run(_config(tiny_models, str(every), tmp_path / "job3", caption_cache=str(cache)))
    assert counter.calls["caption"] == 0
    rows = rows_of(str(tmp_path / "job3"))
    assert all(r["caption_cached"] for r in rows)


def test_a_tampered_cache_entry_is_never_used(tmp_path):
    """Belt and braces beside the key: an entry recorded by another model is refused."""
    entry = {"visual_caption": "x", "caption_model": "other", "caption_prompt_id": "p"}
    assert not caption_cache.entry_matches(caption_cache.CAPTIONS, entry, "mine", "p")
    assert caption_cache.entry_matches(
        caption_cache.CAPTIONS, {**entry, "caption_model": "mine"}, "mine", "p"
    )
    # ties between two jobs' entries for one key: the smallest segment name wins, for everyone
    assert caption_cache.pick_entry([("s/b", {"v": 2}), ("s/a", {"v": 1})]) == {"v": 1}


def test_dedup_refuses_what_it_cannot_do(tmp_path):
    base = {"input": str(tmp_path / "x.csv"), "output": str(tmp_path / "o"), "dedup": True}
    with pytest.raises(ConfigError, match="pilot"):
        build_pipeline_config({**base, "max_shards": 1})
    with pytest.raises(ConfigError, match="--from"):
        build_pipeline_config(
            {"from": str(tmp_path / "e"), "output": str(tmp_path / "o"), "dedup": True}
        )
    # the cache implies dedup
    cfg = build_pipeline_config(
        {**{k: v for k, v in base.items() if k != "dedup"}, "caption_cache": "memory://c"}
    )
    assert cfg.run.dedup


@pytest.mark.portable
@pytest.mark.timeout(900)
def test_dedup_on_prism_with_external_workers(tiny_models, server, tmp_path):
    """Every phase, index jobs included, on Prism with SDK workers in separate processes (the
    FlinkRunner launcher's flags): the same output as the local runner's."""
    import signal
    import subprocess
    import sys

    from pipeline.portable_local import find_prism, runner_args, start_job_server, start_worker_pool
    from tests.pipeline.test_portable import REPO, _env

    find_prism()
    folder, _ = _dup_table(server.base_url, tmp_path)
    local = tmp_path / "local"
    _run(_config(tiny_models, str(folder), local, caption_cache=str(tmp_path / "cache-local")))
    services = []
    try:
        pool = start_worker_pool(tmp_path / "worker-pool")
        services.append(pool)
        job_server = start_job_server("prism", tmp_path / "job-server")
        services.append(job_server)
        out = tmp_path / "prism"
        argv = [
            sys.executable, "-m", "pipeline.cli", "run", "--input", str(folder), "--output", str(out),
            "--stages", "download,caption,fuse", "--shard-size", "4", "--dedup",
            "--caption-cache", str(tmp_path / "cache-prism"),
            "--allow-private-networks", "--no-progress", "--threads", "4",
            "--caption-model", str(tiny_models.llava), "--fusion-model", str(tiny_models.llm),
            "--device", "cpu", "--max-new-tokens", "6", "--set", "download.retries=0",
            *runner_args("prism", job_server, pool, parallelism=2),
        ]  # fmt: skip
        done = subprocess.run(
            argv, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        assert "fusion-fill:" in done.stderr
    finally:
        for service in reversed(services):
            service.kill(signal.SIGKILL)
    assert _comparable(out) == _comparable(local)
    assert output_stats(str(out)).dedup_counts == output_stats(str(local)).dedup_counts
    for kind in (caption_cache.CAPTIONS, caption_cache.FUSIONS):
        assert len(caption_cache.list_segments(str(tmp_path / "cache-prism"), kind)) == len(
            caption_cache.list_segments(str(tmp_path / "cache-local"), kind)
        )


def test_dedup_on_engine_servers_streams_only_canonical_rows(
    tiny_models, server, tmp_path, monkeypatch, sim_fleet_env
):
    """The server backend (rows streamed to one engine per GPU, pipeline.inflight): requests
    each engine answered == distinct images / distinct pairs; duplicates carry the canonical's
    captions (the simulated engine's text is a function of the request, so a caption on the
    wrong row would show)."""
    stats_dir = tmp_path / "sim-stats"
    monkeypatch.setenv("VECAP_SIM_STATS_DIR", str(stats_dir))
    folder, _ = _dup_table(server.base_url, tmp_path)
    out = tmp_path / "out"
    data = _config(tiny_models, str(folder), out)
    for stage in ("caption", "fusion"):
        data[stage]["generation"].update(backend="vllm", gpus="0,1", max_new_tokens=40)
    assert _run(data).status == "succeeded"
    requests = collections.Counter()
    for f in stats_dir.glob("sim-*.json"):
        s = json.loads(f.read_text())
        requests[s["model"]] += s["requests_done"]
    rows = _by_uid(out)
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert requests[str(tiny_models.llava)] == len({r["sha256"] for r in ok}) == 3
    llm_pairs = {(r["sha256"], r["alt_text"]) for r in ok if r["fusion_source"] == "llm"}
    assert requests[str(tiny_models.llm)] == len(llm_pairs)
    for r in ok:
        if r["duplicate_of"]:
            assert r["visual_caption"] == rows[r["duplicate_of"]]["visual_caption"]
        if r["fusion_of"]:
            assert r["fused_caption"] == rows[r["fusion_of"]]["fused_caption"]


def test_kill_9_in_the_caption_phase_then_resume(tiny_models, server, tmp_path):
    """A real crash of the launcher while the caption phase commits shards: the same command
    again resumes that phase (its committed shards are not captioned again) and the output
    equals an uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.pipeline.test_portable import REPO, _env

    folder, _ = _dup_table(server.base_url, tmp_path)
    reference = tmp_path / "reference"
    _run({**_config(tiny_models, str(folder), reference), "reader": {"shard_size": 2}})
    out = tmp_path / "killed"
    argv = [
        sys.executable, "-m", "pipeline.cli", "run", "--input", str(folder), "--output", str(out),
        "--stages", "download,caption,fuse", "--shard-size", "2", "--dedup", "--local-wave-shards", "1",
        "--allow-private-networks", "--no-progress", "--threads", "4",
        "--caption-model", str(tiny_models.llava), "--fusion-model", str(tiny_models.llm),
        "--device", "cpu", "--max-new-tokens", "6", "--set", "download.retries=0",
    ]  # fmt: skip
    caption_shards = out / "dedup" / "caption" / "shards"
    proc = subprocess.Popen(
        argv, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if caption_shards.exists() and list(caption_shards.glob("part-*.stats.json")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    committed = len(list(caption_shards.glob("part-*.stats.json")))
    assert 1 <= committed < 5, committed
    resumed = subprocess.run(
        argv, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "urls: committed earlier" in resumed.stderr
    assert f"{committed} already finished" in resumed.stderr
    assert _comparable(out) == _comparable(reference)


def test_resume_accepts_speed_settings_and_refuses_content_settings(server, tmp_path):
    """A dedup job resumed with other batch sizes, threads or runner options goes on; one that
    would make other rows (here: another image size) is refused before anything changes."""
    a = f"{server.base_url}/{IMAGES[0]}"
    table = _write_csv(tmp_path / "in.csv", [(a, "x"), (a, "y")])
    base = {
        "input": str(table), "output": str(tmp_path / "out"), "stages": ["download"],
        "progress": False, "dedup": True,
        "download": {"allow_private_networks": True, "threads": 2, "retries": 0},
    }  # fmt: skip
    assert _run(base).status == "succeeded"
    rows = [r for _, r in sorted(_by_uid(tmp_path / "out").items())]
    assert rows[1]["duplicate_of"] == rows[0]["uid"] and rows[1]["jpg"] is None
    again = _run({**base, "download": {**base["download"], "threads": 8}})
    assert again.status == "nothing_to_do"
    with pytest.raises(ConfigError, match="dedup index"):
        _run({**base, "download": {**base["download"], "image_size": 128}})


def test_canonical_is_first_in_input_order_past_shard_99999(tmp_path):
    """uids grow a digit at shard 100,000 ("100000..." < "99999..." as strings): the canonical
    is still the first row in input order, and each patch lands in its row's own shard file."""
    import apache_beam as beam

    from pipeline.dedup.index_jobs import UrlIndex
    from pipeline.dedup.patches import PatchCommit, read_shard_patches
    from schemas.record import Record, make_uid

    rows = [
        Record(make_uid(99_999, 3), 99_999, 3, url="http://a.example/x.jpg"),
        Record(make_uid(100_000, 0), 100_000, 0, url="http://A.example/x.jpg#f"),
        Record(make_uid(123_456, 9), 123_456, 9, url="http://a.example/x.jpg"),
    ]
    assert rows[1].uid < rows[0].uid  # the trap
    folder = str(tmp_path / "urls")
    from pipeline.runner_options import make_pipeline, pipeline_options

    p = make_pipeline(pipeline_options([]))
    _ = p | beam.Create(rows) | UrlIndex(folder)
    p.run().wait_until_finish()
    assert sorted(f.name for f in (tmp_path / "urls").iterdir()) == [
        "part-100000.parquet",
        "part-123456.parquet",
    ]
    commit = PatchCommit("urls", folder, frozenset({100_000, 123_456}), "", {})
    for r in rows[1:]:
        patches = read_shard_patches(commit, r.shard_id)
        assert patches == {r.uid: {"duplicate_of": rows[0].uid, "duplicate_kind": "url"}}


def test_phases_without_a_model_rent_no_gpu(tiny_models, tmp_path, monkeypatch):
    """On Dataflow, the index jobs, download and assemble run without the job's GPU options;
    the caption and fuse phases keep them."""
    import types

    import pipeline.dedup.phases as phases

    accelerator = "--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1"
    data = {
        "input": str(tmp_path / "in.csv"), "output": str(tmp_path / "out"), "dedup": True,
        "beam_args": [accelerator, "--experiments=no_use_multiple_sdk_containers"],
        "caption": {"generation": {"model": str(tiny_models.llava)}},
        "fusion": {"generation": {"model": str(tiny_models.llm)}},
    }  # fmt: skip
    seen: dict[str, tuple[str, ...]] = {}

    def run_phase(config, **_kwargs):
        seen[config.run.output.rsplit("/", 1)[-1]] = config.run.beam_args
        return types.SimpleNamespace(status="succeeded", rows_written=0)

    indexed: list[list[str]] = []

    def index(self, name, build):
        indexed.append(list(self.cpu_beam_args))

    monkeypatch.setattr(phases.DedupRun, "index", index)
    monkeypatch.setattr(phases, "committed_parquet_urls", lambda _out: {})
    stream = io.StringIO()
    phases.run_dedup(build_pipeline_config(data), run_phase=run_phase, stream=stream)
    assert "without the GPU options" in stream.getvalue()
    assert seen["download"] == seen["out"] == ()  # assemble writes OUT itself
    assert seen["caption"] == seen["fuse"] == tuple(data["beam_args"])
    assert indexed == [[]] * 4


def test_dedup_and_cache_on_an_object_store(tiny_models, server, tmp_path, monkeypatch, request):
    """Output and caption cache on S3 (the loopback S3 server, through s3fs as users reach S3):
    index commits, patches and cache segments are created only if absent there; a second job
    finds the first job's captions."""
    import time

    request.getfixturevalue("s3_server")
    root = f"s3://vecap-test/dedup-{time.time_ns()}"
    cache = f"{root}/cache"
    counter = CallCounter(monkeypatch)
    folder, _ = _dup_table(server.base_url, tmp_path)
    first = _run(_config(tiny_models, str(folder), f"{root}/job1", caption_cache=cache))
    assert first.status == "succeeded" and counter.calls["caption"] == 3
    rows = rows_of(f"{root}/job1")
    assert len(rows) == 9 and sum(bool(r["duplicate_of"]) for r in rows) == 5
    assert len(caption_cache.list_segments(cache, caption_cache.CAPTIONS)) >= 1
    assert all(
        s.startswith("s3://") for s in caption_cache.list_segments(cache, caption_cache.CAPTIONS)
    )
    counter.calls.clear()
    _run(_config(tiny_models, str(folder), f"{root}/job2", caption_cache=cache))
    assert counter.calls == {}  # every caption and fusion from the cache
    again = {r["uid"]: r for r in rows_of(f"{root}/job2")}
    for r in rows:
        assert again[r["uid"]]["visual_caption"] == r["visual_caption"]
        assert again[r["uid"]]["fused_caption"] == r["fused_caption"]


def test_duplicates_of_an_image_whose_caption_failed_inherit_it(
    tiny_models, server, tmp_path, monkeypatch
):
    """The same bytes through the same greedy captioner fail the same way: the duplicate gets
    caption_failed naming its canonical row, keeps its own image (a later --retry can caption
    both), and costs no call of its own."""
    from pipeline.generation.transformers_backend import TransformersGenerator

    original = TransformersGenerator.generate
    doomed: list[bytes] = []  # the first image asked for, whenever it is asked again

    def failing(gen, prompts, images=None):
        if images is not None:
            pixels = [im.tobytes() for im in images]
            if not doomed:
                doomed.append(pixels[0])
            if doomed[0] in pixels:
                raise ValueError("the processor rejected this image")  # a row error, not the engine
        return original(gen, prompts, images)

    monkeypatch.setattr(TransformersGenerator, "generate", failing)
    folder, _ = _dup_table(server.base_url, tmp_path)
    out = tmp_path / "out"
    _run({**_config(tiny_models, str(folder), out), "caption": {"generation": {
        "model": str(tiny_models.llava), "device": "cpu", "max_new_tokens": 6, "batch_size": 1}}})  # fmt: skip
    rows = _by_uid(out)
    failed = [u for u, r in rows.items() if r["status"] == "caption_failed"]
    canon = [u for u in failed if rows[u]["duplicate_of"] is None]
    assert len(canon) == 1, failed
    dups = [u for u, r in rows.items() if r["duplicate_of"] == canon[0]]
    assert dups and sorted(failed) == sorted(canon + dups)
    for u in dups:
        assert rows[u]["error"].startswith(f"duplicate of {canon[0]} (same image): ")
        # a duplicate behind another URL keeps its own image; a URL duplicate never had one
        assert bool(rows[u]["jpg"]) == (rows[u]["duplicate_kind"] == "image")
    assert rows[canon[0]]["jpg"]  # kept for a later --retry caption_failed
    ok = [r for r in rows.values() if r["status"] == "ok"]
    assert len(ok) == 7 - len(failed) and all(r["visual_caption"] for r in ok)  # 2 are 404s


def test_a_live_phase_refuses_a_second_launcher_before_anything_changes(server, tmp_path):
    """A phase of this output is being run by a live launcher: another `vecap run --dedup`
    (even with --overwrite) is refused before it deletes or writes anything."""
    from pipeline.manifest import write_manifest
    from pipeline.run_lease import OutputBusy, new_run_record

    a = f"{server.base_url}/{IMAGES[0]}"
    table = _write_csv(tmp_path / "in.csv", [(a, "x"), (a, "y")])
    out = tmp_path / "out"
    caption_phase = out / "dedup" / "caption"
    caption_phase.mkdir(parents=True)
    write_manifest(str(caption_phase), {"status": "running", "run": new_run_record(30.0)})
    data = {
        "input": str(table), "output": str(out), "stages": ["download"], "progress": False,
        "dedup": True, "overwrite": True, "download": {"allow_private_networks": True},
    }  # fmt: skip
    with pytest.raises(OutputBusy):
        _run(data)
    assert caption_phase.exists() and not (out / "dedup" / "urls.commit.json").exists()


def test_a_duplicate_with_nothing_to_take_gets_a_status_not_a_pass(tmp_path):
    """A duplicate whose canonical row (or its result) is missing from the phase's output, as
    in an output altered by hand, ends internal_error naming it: never an ok row that skipped
    the model as another's duplicate and holds no caption."""
    import apache_beam as beam

    from pipeline.dedup.index_jobs import _FillCaptions, _FillFusions, _InheritDownload
    from schemas.record import Record, make_uid

    dup = Record(make_uid(1, 0), 1, 0, url="http://a.example/x.jpg", duplicate_of="000000000007")
    for fn, row in (
        (_InheritDownload(), dup.replace(duplicate_kind="url")),
        (_FillCaptions(None, None), dup.replace(duplicate_kind="image")),
        (_FillFusions(None, None), dup.replace(fusion_of="000000000007")),
    ):
        out = list(fn.process(("000000000007", [row])))
        patches = [o.value for o in out if isinstance(o, beam.pvalue.TaggedOutput)]
        assert len(patches) == 1, (fn, out)
        shard, (uid, fields) = patches[0]
        assert (shard, uid, fields["status"]) == (1, row.uid, "internal_error")
        assert "duplicate of 000000000007" in fields["error"]
