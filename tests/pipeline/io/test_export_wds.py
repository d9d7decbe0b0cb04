"""`vecap export-wds`: webdataset tars read back exactly as open_clip reads them, the row rule of
the release export, and commits that survive a crash (local disk and the loopback S3 server)."""

from __future__ import annotations

import _thread
import importlib
import io
import json
import os
import sys
import threading
import time
import uuid

import fsspec
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

import pipeline.io.export_wds as export_wds_module
from pipeline.errors import ConfigError, OutputError
from pipeline.io.export_json import ExportConfig, export_json
from pipeline.io.export_wds import (
    INSTALL_HINT,
    JSON_FIELDS,
    SUMMARY_NAME,
    WdsExportConfig,
    count_name,
    export_wds,
    tar_name,
)
from pipeline.io.shard_files import committed_parquet_urls
from pipeline.io.writer import WriterConfig, read_shard_records, write_shard
from pipeline.report.synthetic import make_jpeg, write_synthetic_output
from schemas import Record, Status, make_uid

# the module (pipeline.cli's `main` attribute is the function of that name)
cli_main = importlib.import_module("pipeline.cli.main")
OPEN_CLIP_IMAGE = "jpg;png;jpeg;webp"  # open_clip's wds.rename(image=...)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    """3 committed shards of 24 rows (real JPEGs, ~30% failures, some flagged) and one torn,
    uncommitted shard that must never be exported."""
    root = tmp_path_factory.mktemp("wds-src") / "out"
    write_synthetic_output(root, shards=3, rows_per_shard=24, in_progress=1, seed=3)
    return str(root)


def _committed_records(out: str) -> list[Record]:
    return [r for url in committed_parquet_urls(out).values() for r in read_shard_records(url)]


def _expected(out: str, caption: str = "fused") -> dict[str, tuple[str, bytes]]:
    """uid -> (caption, image bytes) of the rows a tar must hold, worked out here on its own."""
    col = {"fused": "fused_caption", "visual": "visual_caption", "alt": "alt_text"}[caption]
    return {
        r.uid: (getattr(r, col), r.jpg)
        for r in _committed_records(out)
        if r.ok and r.jpg and (getattr(r, col) or "").strip() and not r.ethics_flagged
    }


def _tar_urls(dest: str, tmp_path) -> list[str]:
    """The tars of DEST as local paths (fetched from an object store first), in shard order."""
    fs, root = fsspec.core.url_to_fs(dest)
    names = sorted(p for p in fs.ls(root, detail=False) if p.endswith(".tar"))
    if dest.startswith("s3://"):
        local = tmp_path / f"fetched-{uuid.uuid4().hex[:6]}"
        local.mkdir()
        for name in names:
            fs.get_file(name, str(local / name.rsplit("/", 1)[1]))
        return sorted(str(p) for p in local.iterdir())
    return names


def _files(dest: str) -> dict[str, bytes]:
    """Every file of DEST (names relative to it) but the summary, with its bytes."""
    fs, root = fsspec.core.url_to_fs(dest)
    fs.invalidate_cache(root)
    paths = [p for p in fs.find(root) if not p.endswith(SUMMARY_NAME)]
    return {p[len(root.rstrip("/")) + 1 :]: fs.cat_file(p) for p in paths}


def _read_back(urls: list[str]) -> list[tuple[str, bytes, str, dict]]:
    """(key, raw image bytes, caption, metadata) of every sample, undecoded."""
    ds = wds.WebDataset(urls, shardshuffle=False).to_tuple(
        "__key__", OPEN_CLIP_IMAGE, "txt", "json"
    )
    return [(k, img, txt.decode("utf-8"), json.loads(meta)) for k, img, txt, meta in ds]


# --------------------------------------------------------------------------- what a trainer reads


def test_open_clip_reads_every_committed_row_with_its_own_caption(source, tmp_path):
    dest = str(tmp_path / "wds")
    result = export_wds(WdsExportConfig(source=source, dest=dest))
    expected = _expected(source)
    urls = _tar_urls(dest, tmp_path)
    assert [os.path.basename(u) for u in urls] == [tar_name(i) for i in range(3)]  # not shard 3

    # exactly open_clip's reading: every sample decodes, as many as committed exportable rows
    pairs = list(wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("jpg", "txt"))
    assert len(pairs) == len(expected) == result.samples > 30
    for image, text in pairs:
        assert isinstance(image, Image.Image) and image.size == (96, 72)
        assert isinstance(text, str) and text.strip()

    # and each sample is its own row's: key = uid, caption and bytes of that very row
    samples = _read_back(urls)
    keys = [k for k, *_ in samples]
    assert keys == sorted(expected) and len(set(keys)) == len(keys)  # uid order, no duplicate
    by_uid = {r.uid: r for r in _committed_records(source)}
    for key, image, text, meta in samples:
        assert (text, image) == expected[key]
        row = by_uid[key]
        assert meta["uid"] == key and meta["image_format"] == "jpg"
        assert {k: meta[k] for k in JSON_FIELDS} == {k: getattr(row, k) for k in JSON_FIELDS}
    # an alt-text-fallback row (fusion_source alt) keeps the caption fusion gave it
    assert any(m["fusion_source"] == "alt" for *_, m in samples)

    # counts: per tar, what was written and why the rest was left out add up to the shard
    fs, root = fsspec.core.url_to_fs(dest)
    records = _committed_records(source)
    for sid in range(3):
        count = json.loads(fs.cat_file(f"{root}/{count_name(sid)}"))
        rows = [r for r in records if r.shard_id == sid]
        assert (
            count["samples"] + sum(count["skipped"].values()) == len(rows) == count["source_rows"]
        )
        assert count["skipped"].get("not_ok", 0) == sum(not r.ok for r in rows)
        assert count["samples"] == sum(1 for u in expected if u.startswith(f"{sid:05d}"))
    summary = json.loads(fs.cat_file(f"{root}/{SUMMARY_NAME}"))
    assert summary["samples"] == len(expected) and summary["shards"] == 3
    assert summary["rows"] == len(records) == summary["samples"] + sum(summary["skipped"].values())


def _mixed_rows() -> list[Record]:
    jpg, other = make_jpeg(1), make_jpeg(2)
    webp = io.BytesIO()
    Image.open(io.BytesIO(other)).save(webp, "WEBP", quality=80)

    def rec(i: int, **kw) -> Record:
        base = dict(url=f"http://127.0.0.1/{i}.jpg", jpg=jpg, image_format="jpg", width=96)
        return Record(uid=make_uid(7, i), shard_id=7, row_index=i, **{**base, **kw})

    return [
        rec(0, fused_caption="F0", visual_caption="V0", alt_text="A0", fusion_source="llm"),
        rec(
            1,
            fused_caption="F1",
            visual_caption="V1",
            alt_text="A1",
            jpg=webp.getvalue(),
            image_format="webp",
        ),  # fmt: skip
        rec(2, fused_caption="F2", visual_caption="V2", alt_text="A2", jpg=None),  # keep_images off
        rec(3, fused_caption="F3", visual_caption="V3", alt_text="A3", jpg=b"<html>not an image"),
        rec(4, fused_caption="  ", visual_caption="V4", alt_text="A4"),  # blank fused caption
        rec(5, fused_caption="F5", visual_caption="V5", alt_text=None),  # no alt text
        rec(6, fused_caption="F6", visual_caption="V6", alt_text="A6", ethics_flagged=True),
        rec(7, fused_caption="F7").fail(Status.TIMEOUT, "slow"),
        rec(8, fused_caption="F8", visual_caption="V8", alt_text="A8", status="ethics_excluded"),
    ]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("wds-mixed") / "out")
    rows = _mixed_rows()
    write_shard(WriterConfig(output=out), 7, rows, len(rows))
    return out


@pytest.mark.parametrize(
    "caption, flagged, want, skipped",
    [
        ("fused", False, {"0": "F0", "1": "F1", "5": "F5"},
         {"not_ok": 2, "no_image": 1, "not_an_image": 1, "no_caption": 1, "flagged": 1}),
        ("visual", False, {"0": "V0", "1": "V1", "4": "V4", "5": "V5"},
         {"not_ok": 2, "no_image": 1, "not_an_image": 1, "flagged": 1}),
        ("alt", True, {"0": "A0", "1": "A1", "4": "A4", "6": "A6"},
         {"not_ok": 2, "no_image": 1, "not_an_image": 1, "no_caption": 1}),
    ],
)  # fmt: skip
def test_caption_choice_follows_the_release_export_rule(
    mixed, tmp_path, caption, flagged, want, skipped
):
    dest = str(tmp_path / "wds")
    res = export_wds(
        WdsExportConfig(source=mixed, dest=dest, caption=caption, include_flagged=flagged)
    )
    samples = _read_back(_tar_urls(dest, tmp_path))
    got = {k[-1]: text for k, _, text, _ in samples}
    assert got == want and res.skipped == skipped
    # the same rows, captions and fallback (none: a missing caption leaves the row out) as the
    # release JSON of the same output, less the rows without usable image bytes
    release = export_json(
        ExportConfig(
            source=mixed,
            dest=str(tmp_path / "rel"),
            splits=1,
            caption=caption,
            include_flagged=flagged,
        )  # fmt: skip
    )
    with open(release.files[0], encoding="utf-8") as f:
        by_url = json.load(f)
    no_image = {"http://127.0.0.1/2.jpg", "http://127.0.0.1/3.jpg"}
    assert {m["url"]: t for _, _, t, m in samples} == {
        u: c for u, c in by_url.items() if u not in no_image
    }


def test_webp_is_named_by_its_format_and_read_by_open_clips_pipeline(mixed, tmp_path):
    dest = str(tmp_path / "wds")
    export_wds(WdsExportConfig(source=mixed, dest=dest))
    urls = _tar_urls(dest, tmp_path)
    import tarfile

    with tarfile.open(urls[0]) as tar:
        names = tar.getnames()
    webp_uid, jpg_uid = make_uid(7, 1), make_uid(7, 0)
    assert f"{webp_uid}.webp" in names and f"{webp_uid}.jpg" not in names
    assert f"{jpg_uid}.jpg" in names
    stored = {r.uid: r.jpg for r in _committed_records(mixed)}
    raw = {k: img for k, img, _, _ in _read_back(urls)}
    assert raw[webp_uid] == stored[webp_uid]  # the stored bytes, not re-encoded
    # open_clip: decode("pilrgb") then rename(image="jpg;png;jpeg;webp", text="txt")
    ds = (
        wds.WebDataset(urls, shardshuffle=False)
        .decode("pilrgb")
        .rename(image=OPEN_CLIP_IMAGE, text="txt")
        .to_tuple("image", "text")
    )
    got = list(ds)
    assert [t for _, t in got] == ["F0", "F1", "F5"]
    assert all(isinstance(im, Image.Image) and im.size == (96, 72) for im, _ in got)


# --------------------------------------------------------------------------- exactly once


@pytest.fixture(scope="module")
def four_shards(tmp_path_factory) -> tuple[str, dict[str, bytes]]:
    """A source of 4 committed shards and the files of its uninterrupted export."""
    root = tmp_path_factory.mktemp("wds-four")
    out = str(root / "out")
    write_synthetic_output(out, shards=4, rows_per_shard=12, in_progress=0, seed=5)
    export_wds(WdsExportConfig(source=out, dest=str(root / "reference"), workers=1))
    return out, _files(str(root / "reference"))


def _fail_on_call(monkeypatch, name: str, n: int) -> list[int]:
    """Make ``export_wds_module.<name>`` raise on its n-th call (1-based)."""
    real = getattr(export_wds_module, name)
    calls: list[int] = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise OSError(f"injected failure in {name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(export_wds_module, name, flaky)
    return calls


def test_crash_after_the_first_tar_then_rerun_equals_an_uninterrupted_export(
    four_shards, store_root, monkeypatch, tmp_path
):
    out, reference = four_shards
    dest = f"{store_root}/wds"
    _fail_on_call(monkeypatch, "_write_tar", 2)  # the second shard's tar dies while written
    with pytest.raises(OSError, match="injected failure"):
        export_wds(WdsExportConfig(source=out, dest=dest, workers=1))
    assert sorted(_files(dest)) == [count_name(0), tar_name(0)]  # no temporary, no torn tar
    monkeypatch.undo()

    res = export_wds(WdsExportConfig(source=out, dest=dest, workers=1))
    assert (res.written_now, res.already_done, res.shards) == (3, 1, 4)
    assert _files(dest) == reference  # byte for byte, the count files too
    keys = [k for k, *_ in _read_back(_tar_urls(dest, tmp_path))]
    assert len(keys) == len(set(keys)) == len(_expected(out)) == res.samples

    again = export_wds(WdsExportConfig(source=out, dest=dest, workers=1))
    assert (again.written_now, again.samples) == (0, res.samples)  # committed tars are left alone


def test_a_tar_without_its_count_file_is_redone(four_shards, store_root, monkeypatch):
    out, reference = four_shards
    dest = f"{store_root}/wds"
    _fail_on_call(monkeypatch, "_commit", 2)  # tar 1 published, killed before its commit
    with pytest.raises(OSError, match="injected failure"):
        export_wds(WdsExportConfig(source=out, dest=dest, workers=1))
    monkeypatch.undo()
    files = _files(dest)
    assert tar_name(1) in files and count_name(1) not in files
    # whatever an uncommitted tar holds (here: garbage) is never trusted
    fs, root = fsspec.core.url_to_fs(dest)
    fs.pipe_file(f"{root}/{tar_name(1)}", b"half a tar")
    res = export_wds(WdsExportConfig(source=out, dest=dest, workers=1))
    assert (res.written_now, res.already_done) == (3, 1)
    assert _files(dest) == reference


def test_parallel_workers_write_the_same_files(four_shards, tmp_path, monkeypatch):
    out, reference = four_shards
    dest = str(tmp_path / "wds")
    assert export_wds(WdsExportConfig(source=out, dest=dest, workers=3)).written_now == 4
    assert _files(dest) == reference
    # a failure in one worker stops the export, the commits made stand, a rerun completes it
    dest2 = str(tmp_path / "wds2")
    _fail_on_call(monkeypatch, "_write_tar", 1)
    with pytest.raises(OSError, match="injected failure"):
        export_wds(WdsExportConfig(source=out, dest=dest2, workers=3))
    monkeypatch.undo()
    export_wds(WdsExportConfig(source=out, dest=dest2, workers=3))
    assert _files(dest2) == reference


def test_a_destination_on_s3(four_shards, s3_server, tmp_path):
    out, reference = four_shards
    dest = f"s3://vecap-test/{uuid.uuid4().hex[:12]}/wds"
    res = export_wds(WdsExportConfig(source=out, dest=dest))
    assert res.written_now == 4 and _files(dest) == reference
    pairs = list(
        wds.WebDataset(_tar_urls(dest, tmp_path), shardshuffle=False)
        .decode("pil")
        .to_tuple("jpg", "txt")
    )
    assert len(pairs) == len(_expected(out)) == res.samples
    with fsspec.open(f"{dest}/{SUMMARY_NAME}", "rb") as f:
        summary = json.load(f)
    assert summary["samples"] == res.samples and summary["tars"] == [tar_name(i) for i in range(4)]


def test_a_destination_of_other_options_or_another_output_is_refused(four_shards, mixed, tmp_path):
    out, _ = four_shards
    dest = str(tmp_path / "wds")
    export_wds(WdsExportConfig(source=out, dest=dest))
    with pytest.raises(ConfigError, match="--caption fused"):
        export_wds(WdsExportConfig(source=out, dest=dest, caption="alt"))
    with pytest.raises(OutputError, match="another output"):
        export_wds(WdsExportConfig(source=mixed, dest=dest))


# --------------------------------------------------------------------------- the command


_BUILD_PARSER = cli_main.build_parser
_MODULES = ("pipeline.cli.export", "pipeline.cli.export_wds")


def _vecap(monkeypatch, argv: list[str]) -> int:
    """`vecap ARGV` through the real main (one-line UsageErrors), with this command registered."""
    monkeypatch.setattr(cli_main, "build_parser", lambda modules=_MODULES: _BUILD_PARSER(modules))
    return cli_main.main(argv)


def test_cli_dest_positional_or_option(four_shards, tmp_path, monkeypatch, capsys):
    out, reference = four_shards
    assert _vecap(monkeypatch, ["export-wds", out, str(tmp_path / "a"), "--workers", "2"]) == 0
    assert f"{len(_expected(out))} samples in 4 tars" in capsys.readouterr().out
    assert _vecap(monkeypatch, ["export-wds", out, "--dest", str(tmp_path / "b")]) == 0
    assert _files(str(tmp_path / "a")) == _files(str(tmp_path / "b")) == reference
    capsys.readouterr()
    assert _vecap(monkeypatch, ["export-wds", out, str(tmp_path / "b")]) == 0
    assert "0 written now, 4 already there" in capsys.readouterr().out
    for argv in (
        ["export-wds", out],
        ["export-wds", out, str(tmp_path / "a"), "--dest", str(tmp_path / "c")],
        ["export-wds", out, str(tmp_path / "a"), "--caption", "visual"],
        ["export-wds", str(tmp_path / "nothing"), str(tmp_path / "d")],
    ):
        capsys.readouterr()
        assert _vecap(monkeypatch, argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("vecap export-wds: ") and err.count("\n") == 1


def test_missing_webdataset_is_one_line_naming_the_extra(
    four_shards, tmp_path, monkeypatch, capsys
):
    out, _ = four_shards
    monkeypatch.setitem(sys.modules, "webdataset", None)  # `import webdataset` raises ImportError
    assert _vecap(monkeypatch, ["export-wds", out, str(tmp_path / "wds")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and INSTALL_HINT in err
    assert not (tmp_path / "wds").exists()  # refused before any work


def _count_files(dest: str) -> list[str]:
    return sorted(name for name in _files(dest) if name.endswith(".count.json"))


def test_ctrl_c_with_workers_stops_the_export_instead_of_draining_every_shard(
    tmp_path, monkeypatch
):
    out = str(tmp_path / "out")
    write_synthetic_output(out, shards=16, rows_per_shard=2, in_progress=0, seed=9)
    dest = str(tmp_path / "wds")
    real_export = export_wds_module.export_shard
    interrupted: list[int] = []

    def slow_export(*args, **kwargs):
        time.sleep(0.15)
        count = real_export(*args, **kwargs)
        if not interrupted:  # Ctrl-C once the first shard is committed: SIGINT's own path
            interrupted.append(count.shard_id)
            _thread.interrupt_main()
        return count

    monkeypatch.setattr(export_wds_module, "export_shard", slow_export)
    with pytest.raises(KeyboardInterrupt):
        export_wds(WdsExportConfig(source=out, dest=dest, workers=2))
    committed = _count_files(dest)
    # only the shards running at the interrupt finished (2 workers, a window of 4), not all 16
    assert 1 <= len(committed) <= 4
    assert not [t for t in threading.enumerate() if t.name.startswith("export-wds")]
    time.sleep(0.5)  # nothing keeps exporting behind the caller's back
    assert _count_files(dest) == committed
    assert not [n for n in _files(dest) if ".tmp-" in n]
    monkeypatch.undo()
    res = export_wds(WdsExportConfig(source=out, dest=dest, workers=2))
    assert (res.already_done, res.written_now, res.shards) == (
        len(committed),
        16 - len(committed),
        16,
    )


def test_an_older_output_without_flag_engine_or_caption_columns_exports(tmp_path):
    out = str(tmp_path / "old")
    rows = _mixed_rows()
    write_shard(WriterConfig(output=out), 7, rows, len(rows))
    (parquet,) = committed_parquet_urls(out).values()
    dropped = ("ethics_flagged", "caption_engine", "fusion_engine", "visual_caption")
    pq.write_table(pq.read_table(parquet).drop_columns(list(dropped)), parquet)

    res = export_wds(WdsExportConfig(source=out, dest=str(tmp_path / "fused")))
    # no flag column: nothing is flagged, so row 6 is in
    assert res.samples == 4 and res.skipped == {
        "not_ok": 2,
        "no_image": 1,
        "not_an_image": 1,
        "no_caption": 1,
    }
    samples = _read_back(_tar_urls(str(tmp_path / "fused"), tmp_path))
    assert {k[-1]: t for k, _, t, _ in samples} == {"0": "F0", "1": "F1", "5": "F5", "6": "F6"}
    for _, _, _, meta in samples:
        assert all(meta[c] is None for c in dropped)
    # no visual caption column: every row that reaches the caption test has none
    res = export_wds(WdsExportConfig(source=out, dest=str(tmp_path / "v"), caption="visual"))
    assert res.samples == 0 and res.skipped == {"not_ok": 2, "no_image": 1, "no_caption": 6}


def test_dest_is_listed_by_the_concurrent_prefix_listing(four_shards, s3_server, monkeypatch):
    out, reference = four_shards
    dest = f"s3://vecap-test/{uuid.uuid4().hex[:12]}/wds"
    export_wds(WdsExportConfig(source=out, dest=dest))
    listed: list[str] = []
    real = export_wds_module.list_entries

    def spy(fs, root):
        listed.append(root)
        return real(fs, root)

    monkeypatch.setattr(export_wds_module, "list_entries", spy)
    res = export_wds(WdsExportConfig(source=out, dest=dest))
    assert (res.already_done, res.written_now) == (4, 0)
    assert listed == [fsspec.core.url_to_fs(dest)[1]]
    assert _files(dest) == reference


def test_a_concurrent_commit_is_not_overwritten_by_the_losing_export(
    four_shards, store_root, monkeypatch
):
    """Another export (--caption fused) commits shard 0 while this one (--caption alt) writes
    it: the winner's tar stays as its count file describes it."""
    out, reference = four_shards
    dest = f"{store_root}/wds"
    fs, root = fsspec.core.url_to_fs(dest)
    real = export_wds_module._write_tar

    def write_while_another_commits(path, parquet, stats, config):
        got = real(path, parquet, stats, config)
        if stats.shard_id == 0:
            fs.pipe_file(f"{root}/{tar_name(0)}", reference[tar_name(0)])
            fs.pipe_file(f"{root}/{count_name(0)}", reference[count_name(0)])
        return got

    monkeypatch.setattr(export_wds_module, "_write_tar", write_while_another_commits)
    with pytest.raises(RuntimeError, match="another export with other options"):
        export_wds(WdsExportConfig(source=out, dest=dest, caption="alt", workers=1))
    files = _files(dest)
    assert files == {n: reference[n] for n in (tar_name(0), count_name(0))}
