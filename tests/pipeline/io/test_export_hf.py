"""`vecap export-hf`: a Hugging Face datasets folder from an output's committed shards, read back
with `datasets` itself (offline), exactly once across crashes, on a local disk and on S3."""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

import pipeline.io.bounded_pool as bounded_pool
import pipeline.io.export_hf as export_hf_module
from pipeline.errors import ConfigError, OutputError
from pipeline.io.export_hf import HFExportConfig, data_file_name, export_hf
from pipeline.io.shard_files import attempt_parquet_name, committed_parquet_urls
from pipeline.report.synthetic import HOSTILE_ALT_TEXT, write_synthetic_output
from schemas import RECORD_SCHEMA, Status

TEXT_COLUMNS = (
    "uid", "url", "alt_text", "caption", "visual_caption", "fused_caption", "status", "error",
    "sha256", "caption_model", "caption_prompt_id", "caption_engine", "fusion_model",
    "fusion_prompt_id", "fusion_engine", "fusion_source", "fusion_reason",
)  # fmt: skip

REAL_MANIFEST = {  # the shape `vecap run` writes (pipeline.manifest.start_manifest)
    "format": "vecap-output",
    "versions": {"vecap": "9.8.7", "python": "3.11"},
    "models": {
        "caption": {
            "model": "tiny-llava",
            "backend": "vllm",
            "dtype": "bfloat16",
            "prompt_id": "llava-short-v1",
            "prompt_text": "Describe the image in one sentence.",
        },
        "fusion": {
            "model": "tiny-llama",
            "backend": "transformers",
            "dtype": "float32",
            "prompt_id": "vecap-fuse-v1",
            "prompt_text": "Merge the two.\nAltText: {alt}\nVisual: {vc} ```fenced```",
        },
    },
}


@pytest.fixture
def hf_offline(tmp_path, monkeypatch):
    """`datasets` with no network and every cache under tmp_path."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets
    import huggingface_hub.constants

    # read at import: an earlier test may have imported datasets before these were set
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    datasets.disable_progress_bars()
    return home


@pytest.fixture
def source(tmp_path) -> Path:
    """3 committed shards of 24 rows (real JPEGs, failures, flagged rows), 1 torn shard with no
    stats file, and an uncommitted attempt file of shard 0 whose captions are all wrong."""
    out = tmp_path / "out"
    write_synthetic_output(out, shards=3, rows_per_shard=24, in_progress=1, seed=3)
    (out / "manifest.json").write_text(json.dumps(REAL_MANIFEST))
    shard0 = pq.read_table(out / "shards" / "part-00000.parquet")
    wrong = shard0.set_column(
        shard0.schema.get_field_index("fused_caption"),
        "fused_caption",
        pa.array(["WRONG: an uncommitted attempt"] * shard0.num_rows),
    )
    pq.write_table(wrong, out / "shards" / attempt_parquet_name(0, "deadbeef00000000"))
    return out


def _source_rows(out: Path) -> dict[str, dict]:
    rows = {}
    for url in committed_parquet_urls(str(out)).values():
        for row in pq.read_table(url).to_pylist():
            rows[row["uid"]] = row
    return rows


def _expected_caption(row: dict, column: str = "fused_caption", flagged: bool = False):
    text = row[column]
    ok = row["status"] == Status.OK.value and text is not None and text.strip()
    return text if ok and (flagged or not row["ethics_flagged"]) else None


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def _files(dest: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((dest / "data").iterdir())}


def _check_dataset(ds, source_rows: dict[str, dict]) -> None:
    import datasets

    assert isinstance(ds.features["image"], datasets.Image)
    for name in TEXT_COLUMNS:
        assert ds.features[name] == datasets.Value("string"), name
    assert ds.features["width"] == datasets.Value("int64")
    assert ds.num_rows == len(source_rows) == 72  # committed rows only, each once
    assert sorted(ds["uid"]) == sorted(source_rows)
    images = 0
    for row in ds:
        src = source_rows[row["uid"]]
        assert row["caption"] == _expected_caption(src)  # its own row's caption
        assert row["fused_caption"] == src["fused_caption"]
        assert row["alt_text"] == src["alt_text"] and row["url"] == src["url"]
        assert (row["status"], row["error"]) == (src["status"], src["error"])
        if src["jpg"] is None:
            assert row["image"] is None  # a failed row stays, without an image
        else:
            images += 1
            with io.BytesIO(src["jpg"]) as f, Image.open(f) as original:
                assert row["image"].size == original.size
                assert row["image"].tobytes() == original.tobytes()
        assert (row["width"], row["sha256"]) == (src["width"], src["sha256"])
    assert 0 < images < ds.num_rows


def test_export_loads_with_datasets_parquet_and_folder(source, tmp_path, hf_offline):
    import datasets

    dest = tmp_path / "hf"
    result = export_hf(HFExportConfig(source=str(source), dest=str(dest)))
    names = [data_file_name("train", i, 3) for i in range(3)]
    assert names == ["train-00000-of-00003.parquet", "train-00001-of-00003.parquet",
                     "train-00002-of-00003.parquet"]  # fmt: skip
    assert sorted(os.listdir(dest / "data")) == names  # nothing else a glob could read
    assert (result.written, result.skipped, result.rows) == (3, 0, 72)
    src = _source_rows(source)
    with_caption = sum(_expected_caption(r) is not None for r in src.values())
    assert 0 < with_caption < len(src)  # both kinds of row are exercised

    # file i holds shard i's rows, in uid order; the features are declared in each file
    features = export_hf_module.hf_features(datasets)
    for i, name in enumerate(names):
        table = pq.read_table(dest / "data" / name)
        assert table.column("uid").to_pylist() == sorted(u for u in src if u.startswith(f"{i:05d}"))
        meta = json.loads(table.schema.metadata[b"huggingface"])
        assert datasets.Features.from_dict(meta["info"]["features"]) == features
        assert table.schema.field("image").type == pa.struct(
            [("bytes", pa.binary()), ("path", pa.string())]
        )

    by_glob = datasets.load_dataset(
        "parquet", data_files=str(dest / "data" / "*.parquet"), cache_dir=str(hf_offline / "c1")
    )
    _check_dataset(by_glob["train"], src)
    by_folder = datasets.load_dataset(str(dest), cache_dir=str(hf_offline / "c2"))
    assert list(by_folder) == ["train"]
    _check_dataset(by_folder["train"], src)
    assert by_folder["train"].features == by_glob["train"].features

    card = (dest / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}
    ]
    declared = {f["name"]: f["dtype"] for f in meta["dataset_info"]["features"]}
    assert declared["image"] == "image" and declared["caption"] == "string"
    assert declared["width"] == "int64" and declared["ethics_flagged"] == "bool"
    assert meta["dataset_info"]["splits"] == [
        {"name": "train", "num_bytes": meta["dataset_info"]["dataset_size"], "num_examples": 72}
    ]
    assert meta["vecap"]["models"] == {"caption": ["tiny-llava"], "fusion": ["tiny-llama"]}
    assert meta["vecap"]["version"] == "9.8.7"
    assert meta["vecap"]["prompts"] == ["llava-short-v1", "vecap-fuse-v1"]
    body = card.split("---\n", 2)[2]
    assert "vecap 9.8.7" in body
    for stage in REAL_MANIFEST["models"].values():
        assert stage["model"] in body and f"`{stage['prompt_id']}`" in body
        assert stage["prompt_text"] in body
    assert "````text\n" in body  # the fence is longer than the prompt's own ```
    assert "vllm / bfloat16" in body
    statuses = {}
    for row in src.values():
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    for status, n in statuses.items():
        assert f"| {status} | {n} |" in body
    sources = {}
    for row in src.values():
        if row["fusion_source"]:
            sources[row["fusion_source"]] = sources.get(row["fusion_source"], 0) + 1
    for name, n in sources.items():
        assert f"| {name} | {n} |" in body
    assert HOSTILE_ALT_TEXT not in card  # row text never reaches the card


def test_caption_choice_and_flagged_rows(source, tmp_path):
    src = _source_rows(source)
    assert any(r["ethics_flagged"] and r["status"] == "ok" for r in src.values())
    for caption, column in (("visual", "visual_caption"), ("alt", "alt_text")):
        for flagged in (False, True):
            dest = tmp_path / f"{caption}-{flagged}"
            export_hf(
                HFExportConfig(
                    source=str(source), dest=str(dest), caption=caption, include_flagged=flagged
                )
            )
            table = pq.read_table(dest / "data", columns=["uid", "caption"])
            got = dict(zip(table["uid"].to_pylist(), table["caption"].to_pylist(), strict=True))
            assert got == {u: _expected_caption(r, column, flagged) for u, r in src.items()}
            meta = _front_matter((dest / "README.md").read_text())
            assert meta["vecap"]["splits"]["train"]["caption"] == caption


class _Crash(RuntimeError):
    pass


@pytest.mark.parametrize("where", ["mid-file", "after-publish"])
def test_crash_then_rerun_gives_the_same_files(source, tmp_path, monkeypatch, where):
    clean = tmp_path / "clean"
    export_hf(HFExportConfig(source=str(source), dest=str(clean), row_group_rows=10))
    dest = tmp_path / "crashed"
    calls = {"n": 0}
    if where == "mid-file":  # the 2nd file's 2nd batch (24 rows: 3 batches a file)
        real = export_hf_module.export_batch

        def crashing(*a, **kw):
            calls["n"] += 1
            if calls["n"] == 5:
                raise _Crash("killed")
            return real(*a, **kw)

        monkeypatch.setattr(export_hf_module, "export_batch", crashing)
    else:  # the 2nd file published, its marker not yet created
        real = export_hf_module._create_marker

        def crashing(fs, path, data):
            calls["n"] += 1
            if calls["n"] == 2:
                raise _Crash("killed")
            return real(fs, path, data)

        monkeypatch.setattr(export_hf_module, "_create_marker", crashing)
    with pytest.raises(_Crash):  # one file at a time: the crash point is deterministic
        export_hf(HFExportConfig(source=str(source), dest=str(dest), row_group_rows=10, workers=1))
    published = sorted(os.listdir(dest / "data"))
    expect = ["train-00000-of-00003.parquet"]
    if where == "after-publish":
        expect.append("train-00001-of-00003.parquet")
    assert published == expect  # whole files only: no partial, no temporary left
    assert not (dest / "README.md").exists()  # the card comes last
    for name in published:
        assert (dest / "data" / name).read_bytes() == (clean / "data" / name).read_bytes()

    monkeypatch.undo()
    rerun = export_hf(HFExportConfig(source=str(source), dest=str(dest), row_group_rows=10))
    assert (rerun.written, rerun.skipped) == (2, 1)
    assert _files(dest) == _files(clean)
    assert (dest / "README.md").read_bytes() == (clean / "README.md").read_bytes()
    again = export_hf(HFExportConfig(source=str(source), dest=str(dest), row_group_rows=10))
    assert (again.written, again.skipped, again.rows) == (0, 3, 72)
    assert _files(dest) == _files(clean)


def test_rerun_refuses_a_changed_plan_and_a_damaged_file(source, tmp_path):
    dest = tmp_path / "hf"
    export_hf(HFExportConfig(source=str(source), dest=str(dest)))
    with pytest.raises(OutputError, match="caption 'fused' then, 'alt' now"):
        export_hf(HFExportConfig(source=str(source), dest=str(dest), caption="alt"))
    # another split into the same folder is fine, and the card then declares both
    export_hf(HFExportConfig(source=str(source), dest=str(dest), split="validation"))
    meta = _front_matter((dest / "README.md").read_text())
    assert [d["split"] for d in meta["configs"][0]["data_files"]] == ["train", "validation"]
    # a shard committed since: the file count changes, so the names would
    torn = source / "shards" / "part-00003.parquet"
    torn.unlink()
    shutil.copy(source / "shards" / "part-00002.parquet", source / "shards" / "part-00003.parquet")
    stats = json.loads((source / "shards" / "part-00002.stats.json").read_text())
    stats["shard_id"] = 3
    (source / "shards" / "part-00003.stats.json").write_text(json.dumps(stats))
    with pytest.raises(OutputError, match="3 committed shards then, 4 now"):
        export_hf(HFExportConfig(source=str(source), dest=str(dest)))
    (source / "shards" / "part-00003.stats.json").unlink()
    # a file cut short after the export: never taken for complete
    damaged = dest / "data" / "train-00001-of-00003.parquet"
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(OutputError, match="train-00001-of-00003.parquet: 100 bytes"):
        export_hf(HFExportConfig(source=str(source), dest=str(dest)))


def test_a_shard_with_fewer_rows_than_its_commit_is_not_published(source, tmp_path):
    stats_file = source / "shards" / "part-00001.stats.json"
    stats = json.loads(stats_file.read_text())
    stats["rows"] += 1
    stats_file.write_text(json.dumps(stats))
    dest = tmp_path / "hf"
    with pytest.raises(RuntimeError, match="24 rows read, its stats file commits 25"):
        export_hf(HFExportConfig(source=str(source), dest=str(dest), workers=1))
    assert sorted(os.listdir(dest / "data")) == ["train-00000-of-00003.parquet"]
    with pytest.raises(RuntimeError, match="24 rows read, its stats file commits 25"):
        export_hf(HFExportConfig(source=str(source), dest=str(dest)))  # the others in parallel
    published = sorted(os.listdir(dest / "data"))
    assert "train-00001-of-00003.parquet" not in published and len(published) == 2
    assert not (dest / ".vecap-export" / "train-00001-of-00003.parquet.done.json").exists()
    assert not (dest / "README.md").exists()


def _meta(dest: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((dest / ".vecap-export").iterdir())}


@pytest.fixture
def many(tmp_path) -> Path:
    """12 committed shards of 6 rows: enough files for a pool of 4 to be busy."""
    out = tmp_path / "many"
    write_synthetic_output(out, shards=12, rows_per_shard=6, in_progress=0, seed=5)
    (out / "manifest.json").write_text(json.dumps(REAL_MANIFEST))
    return out


class _StoreReads:
    """Counts the destination's reads of JSON records: the batched ``fs.cat`` calls (with the
    paths each asked for) and the ``cat_file`` calls made outside of them (one round trip each)."""

    def __init__(self, monkeypatch, dest: Path):
        fs, _ = export_hf_module.fs_and_path(str(dest))  # fsspec's cached instance: the export's
        self.batches: list[list[str]] = []
        self.single: list[str] = []
        self.every: list[str] = []
        inside = threading.local()
        cat, cat_file = fs.cat, fs.cat_file

        def batched(paths, **kw):
            self.batches.append(list(paths))
            inside.on = True
            try:
                return cat(paths, **kw)
            finally:
                inside.on = False

        def one(path, *a, **kw):
            self.every.append(path)
            if not getattr(inside, "on", False):
                self.single.append(path)
            return cat_file(path, *a, **kw)

        monkeypatch.setattr(fs, "cat", batched)
        monkeypatch.setattr(fs, "cat_file", one)

    def markers(self, paths: list[str]) -> list[str]:
        return [p for p in paths if p.endswith(".done.json")]


def test_markers_are_read_in_one_batch_and_never_again_for_the_card(many, tmp_path, monkeypatch):
    dest = tmp_path / "hf"
    reads = _StoreReads(monkeypatch, dest)
    first = export_hf(HFExportConfig(source=str(many), dest=str(dest)))
    assert first.written == 12
    assert reads.markers(reads.every) == []  # the card is built from this run's markers in memory

    reads = _StoreReads(monkeypatch, dest)
    rerun = export_hf(HFExportConfig(source=str(many), dest=str(dest)))
    assert (rerun.written, rerun.skipped, rerun.rows) == (0, 12, 72)
    assert reads.markers(reads.single) == []  # no marker read on its own
    batches = [b for b in reads.batches if reads.markers(b)]
    assert len(batches) == 1 and len(batches[0]) == 12  # one call for all of them
    assert sorted(reads.markers(reads.every)) == sorted(batches[0])  # each read once, card too

    # another split in DEST: its records for the card come in batches as well
    export_hf(HFExportConfig(source=str(many), dest=str(dest), split="validation"))
    card = (dest / "README.md").read_bytes()
    reads = _StoreReads(monkeypatch, dest)
    export_hf(HFExportConfig(source=str(many), dest=str(dest)))
    assert (dest / "README.md").read_bytes() == card
    assert reads.markers(reads.single) == []
    batches = [b for b in reads.batches if reads.markers(b)]
    assert sorted(len(b) for b in batches) == [12, 12]  # train's to skip, validation's for the card
    assert len(reads.markers(reads.every)) == 24


def test_workers_give_the_same_bytes_and_run_files_at_once(many, tmp_path, monkeypatch):
    one = tmp_path / "one"
    export_hf(HFExportConfig(source=str(many), dest=str(one), row_group_rows=4, workers=1))
    real = export_hf_module._write_file
    active, peak, lock = [0], [0], threading.Lock()

    def slow(*a, **kw):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        try:
            return real(*a, **kw)
        finally:
            with lock:
                active[0] -= 1

    outstanding, most = [0], [0]  # submitted and not yet done: the window, not the whole plan

    class Pool(bounded_pool.concurrent.futures.ThreadPoolExecutor):
        def submit(self, *a, **kw):
            with lock:
                outstanding[0] += 1
                most[0] = max(most[0], outstanding[0])
            future = super().submit(*a, **kw)
            future.add_done_callback(lambda _: outstanding.__setitem__(0, outstanding[0] - 1))
            return future

    monkeypatch.setattr(export_hf_module, "_write_file", slow)
    monkeypatch.setattr(bounded_pool.concurrent.futures, "ThreadPoolExecutor", Pool)
    four = tmp_path / "four"
    result = export_hf(HFExportConfig(source=str(many), dest=str(four), row_group_rows=4))
    assert result.written == 12 and 1 < peak[0] <= 4  # parallel, never more than 4 running
    assert most[0] <= 4  # and never more than 4 submitted ahead
    assert result.files == [str(four / "data" / data_file_name("train", i, 12)) for i in range(12)]
    assert _files(four) == _files(one)
    assert _meta(four) == _meta(one)
    assert (four / "README.md").read_bytes() == (one / "README.md").read_bytes()
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        HFExportConfig(source=str(many), dest=str(four), workers=0)


@pytest.mark.parametrize("how", ["a file fails", "interrupted"])
def test_a_failure_with_workers_stops_the_export_and_leaves_no_card(
    many, tmp_path, monkeypatch, how
):
    clean = tmp_path / "clean"
    export_hf(HFExportConfig(source=str(many), dest=str(clean), workers=1))
    real = export_hf_module._write_file
    started, lock = [], threading.Lock()

    def failing(source_url, stats, *a, **kw):
        with lock:
            started.append(stats.shard_id)
        if how == "a file fails" and stats.shard_id == 2:
            raise _Crash("shard 2 cannot be read")
        time.sleep(0.2)  # the others are still running when the failure is seen
        return real(source_url, stats, *a, **kw)

    monkeypatch.setattr(export_hf_module, "_write_file", failing)
    if how == "interrupted":  # Ctrl-C while the export waits for its files
        monkeypatch.setattr(
            bounded_pool.concurrent.futures,
            "wait",
            lambda *a, **kw: (_ for _ in ()).throw(KeyboardInterrupt()),
        )
    dest = tmp_path / "hf"
    with pytest.raises(_Crash if how == "a file fails" else KeyboardInterrupt):
        export_hf(HFExportConfig(source=str(many), dest=str(dest), workers=4))
    assert sorted(started) == [0, 1, 2, 3]  # the first window only: nothing submitted after it
    assert not [t for t in threading.enumerate() if t.name.startswith("vecap-export-hf")]
    assert not (dest / "README.md").exists()
    published = sorted(os.listdir(dest / "data"))  # whole files only, each with its marker
    expect = [0, 1, 3] if how == "a file fails" else [0, 1, 2, 3]
    assert published == [data_file_name("train", i, 12) for i in expect]
    for name in published:
        assert (dest / "data" / name).read_bytes() == (clean / "data" / name).read_bytes()
        assert (dest / ".vecap-export" / f"{name}.done.json").exists()

    monkeypatch.undo()
    rerun = export_hf(HFExportConfig(source=str(many), dest=str(dest)))
    assert (rerun.written, rerun.skipped) == (12 - len(expect), len(expect))
    assert _files(dest) == _files(clean) and _meta(dest) == _meta(clean)
    assert (dest / "README.md").read_bytes() == (clean / "README.md").read_bytes()


def test_older_outputs_without_engine_columns(tmp_path):
    out = tmp_path / "old"
    write_synthetic_output(out, shards=1, rows_per_shard=8, in_progress=0)
    path = out / "shards" / "part-00000.parquet"
    table = pq.read_table(path).drop_columns(["caption_engine", "fusion_engine"])
    pq.write_table(table, path)
    export_hf(HFExportConfig(source=str(out), dest=str(tmp_path / "hf")))
    got = pq.read_table(tmp_path / "hf" / "data")
    assert got.num_rows == 8 and got.column("caption_engine").null_count == 8
    assert got.schema.field("caption_engine").type == pa.string()


def test_s3_destination(source, tmp_path, s3_server, hf_offline, monkeypatch):
    import datasets
    import s3fs

    from tests.fixtures.s3_server import BUCKET

    local = tmp_path / "local"
    export_hf(HFExportConfig(source=str(source), dest=str(local)))
    dest = f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}/hf"
    result = export_hf(HFExportConfig(source=str(source), dest=dest))
    assert result.files == [f"{dest}/data/{data_file_name('train', i, 3)}" for i in range(3)]
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    for name, data in _files(local).items():
        assert fs.cat_file(f"{dest}/data/{name}") == data
    assert fs.cat_file(f"{dest}/README.md") == (local / "README.md").read_bytes()
    fs, _ = export_hf_module.fs_and_path(dest)
    batched = []
    cat = fs.cat
    monkeypatch.setattr(
        fs, "cat", lambda paths, **kw: batched.append(list(paths)) or cat(paths, **kw)
    )
    again = export_hf(HFExportConfig(source=str(source), dest=dest))
    assert (again.written, again.skipped) == (0, 3)
    assert [len(b) for b in batched] == [3]  # the 3 markers in one batched read (concurrent GETs)
    copy = tmp_path / "copy"
    fs.get(f"{dest}/", str(copy), recursive=True)
    ds = datasets.load_dataset(str(copy), cache_dir=str(hf_offline / "c"))
    _check_dataset(ds["train"], _source_rows(source))


def _cli(monkeypatch, argv):
    """`vecap ARGV` with this command registered (build_parser's default is bound at import, so
    patching COMMAND_MODULES alone would not reach it)."""
    import importlib

    cli = importlib.import_module("pipeline.cli.main")
    build = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda *_: build(("pipeline.cli.export_hf",)))
    return cli.main(argv)


def test_cli(source, tmp_path, monkeypatch, capsys):
    dest = tmp_path / "hf"
    args = ["export-hf", str(source), str(dest), "--caption", "visual", "--split", "test"]
    assert _cli(monkeypatch, args) == 0
    assert "split test: 3 files" in capsys.readouterr().out
    assert sorted(os.listdir(dest / "data"))[0] == "test-00000-of-00003.parquet"
    assert _cli(monkeypatch, ["export-hf", str(source), "--dest", str(tmp_path / "b")]) == 0
    one = ["export-hf", str(source), str(tmp_path / "w1"), "--workers", "1", "--split", "test"]
    assert _cli(monkeypatch, one + ["--caption", "visual"]) == 0
    assert _files(tmp_path / "w1") == _files(dest)  # --workers 1 and the default: same files
    capsys.readouterr()
    bad = [
        (["export-hf", str(source), str(dest), "--dest", str(tmp_path / "c")], "two destinations"),
        (["export-hf", str(source)], "give the destination"),
        (["export-hf", str(source), str(dest), "--split", "a-b"], "split 'a-b'"),
        (["export-hf", str(source), str(dest), "--workers", "0"], "workers must be >= 1"),
        (["export-hf", str(tmp_path / "nothing"), str(dest)], "no committed shards"),
    ]
    for argv, message in bad:
        assert _cli(monkeypatch, argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_missing_datasets_gives_the_install_hint(source, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    assert _cli(monkeypatch, ["export-hf", str(source), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'vecap[hf]'" in err and err.count("\n") == 1
    assert not (tmp_path / "hf").exists()


def test_record_schema_columns_are_all_accounted_for():
    """A new Record column is a decision for this export: exported, or knowingly left out."""
    exported = {name for name, _ in export_hf_module.COLUMNS} - {"image", "caption"}
    left_out = {"shard_id", "row_index", "extra", "jpg", "image_format", "http_status",
                "download_attempts", "ethics_reason", "caption_cached", "fusion_cached"}  # fmt: skip
    assert exported | left_out == set(RECORD_SCHEMA.names)
