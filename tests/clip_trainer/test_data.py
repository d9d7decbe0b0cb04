"""The training data stream: finished shards only, no row twice across slots, deterministic
shuffle, exact resume (dataset and DataLoader with workers), counted drops."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from clip_trainer.data import (
    DataConfig,
    DataProgress,
    Position,
    ShardedCaptionDataset,
    build_train_loader,
    find_parquet_files,
)


def _usable_uids(files: list[str]) -> set[str]:
    uids: set[str] = set()
    for f in files:
        t = pq.read_table(f, columns=["uid", "status", "jpg"])
        mask = pc.and_(pc.equal(t["status"], "ok"), pc.is_valid(t["jpg"]))
        uids.update(t.filter(mask)["uid"].to_pylist())
    return uids


def _failed_rows(files: list[str]) -> int:
    return sum(
        pq.read_table(f, columns=["status"])["status"].to_pylist().count("http_error")
        for f in files
    )


def _dataset(run: Path, world: int, **config) -> ShardedCaptionDataset:
    cfg = DataConfig(paths=(str(run),), shuffle_buffer=16, units_per_block=2, **config)
    ds = ShardedCaptionDataset(cfg, image_size=16, world_size=world, num_workers=0)
    return ds


def _epoch_rows(ds: ShardedCaptionDataset, slot: int, epoch: int = 0) -> list[str]:
    uids = []
    for position, row, _ in ds.iter_rows(slot, Position(epoch, 0, 0)):
        if position.epoch != epoch:
            break
        uids.append(row["uid"])
    return uids


def test_only_finished_shards(shapes_run: Path) -> None:
    finished = find_parquet_files([str(shapes_run)])
    everything = find_parquet_files([str(shapes_run)], require_finished=False)
    assert len(finished) == 6 and len(everything) == 7
    assert everything[-1].endswith("part-00006.parquet") and everything[-1] not in finished
    # explicit files and globs are taken as given
    assert (
        find_parquet_files([str(shapes_run / "shards" / "part-0000[01].parquet")]) == finished[:2]
    )
    with pytest.raises(FileNotFoundError):
        find_parquet_files([str(shapes_run / "nothing-here.parquet")])


@pytest.mark.parametrize(
    ("world", "mode"),
    [(1, "files"), (3, "files"), (8, "row groups"), (30, "stride")],
)
def test_slots_partition_every_usable_row_once(shapes_run: Path, world: int, mode: str) -> None:
    ds = _dataset(shapes_run, world)
    assert ds.stride == (mode == "stride")
    assert all(u.row_group is None for u in ds.units) == (mode == "files")
    per_slot = [_epoch_rows(ds, slot) for slot in range(world)]
    everything = [uid for rows in per_slot for uid in rows]
    assert len(everything) == len(set(everything)), "a row was read by two slots"
    assert set(everything) == _usable_uids(ds.files)


def test_shuffle_is_deterministic_and_changes_per_epoch(shapes_run: Path) -> None:
    a, b = _dataset(shapes_run, 1), _dataset(shapes_run, 1)
    epoch0 = _epoch_rows(a, 0)
    assert epoch0 == _epoch_rows(b, 0)
    epoch1 = _epoch_rows(a, 0, epoch=1)
    assert sorted(epoch0) == sorted(epoch1) and epoch0 != epoch1
    other_seed = _dataset(shapes_run, 1, seed=1)
    assert _epoch_rows(other_seed, 0) != epoch0


def _take(ds: ShardedCaptionDataset, n: int) -> list[dict]:
    out = []
    for sample in ds:
        out.append(sample)
        if len(out) == n:
            break
    return out


def test_resume_reproduces_the_same_samples(shapes_run: Path) -> None:
    ds = _dataset(shapes_run, 1)
    samples = _take(ds, 260)  # one epoch holds ~228 usable rows: this crosses into epoch 1
    assert samples[-1]["position"][0] == 1
    for cut in (0, 37, 100, 240):
        resumed = _dataset(shapes_run, 1)
        resumed.positions = {0: Position(*samples[cut]["position"])}
        for original, again in zip(samples[cut + 1 :], _take(resumed, 15), strict=False):
            assert again["text"] == original["text"]
            assert again["caption_source"] == original["caption_source"]
            assert torch.equal(again["pixel_values"], original["pixel_values"])


def test_failed_rows_are_skipped_and_counted(shapes_run: Path) -> None:
    ds = _dataset(shapes_run, 1, vec_prob=1.0)
    samples = [s for s in _take(ds, 300) if s["position"][0] == 0]
    assert len(samples) == len(_usable_uids(ds.files))
    assert sum(s["filtered"] for s in samples) == _failed_rows(ds.files)
    sources = [s["caption_source"] for s in samples]
    # 10% of rows have no VeC: with p=1 they fall back to the AltText, and are counted so.
    assert 0 < sources.count(2) < len(samples) // 4
    assert set(sources) == {0, 2}


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_plain_img2dataset_parquet_and_bad_images(tmp_path: Path) -> None:
    rows = [
        {"jpg": _jpeg((200, 0, 0)), "caption": "red", "status": "success"},
        {"jpg": b"not an image", "caption": "broken", "status": "success"},
        {"jpg": None, "caption": "missing", "status": "failed_to_download"},
        {"jpg": _jpeg((0, 0, 200)), "caption": "blue", "status": "success"},
        {"jpg": _jpeg((0, 200, 0)), "caption": "   ", "status": "success"},
    ]
    path = tmp_path / "00000.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    cfg = DataConfig(paths=(str(path),), alt_field="caption", shuffle_buffer=1)
    ds = ShardedCaptionDataset(cfg, image_size=16)
    samples = _take(ds, 2)
    assert [s["text"] for s in samples] == ["red", "blue"]
    # No VeC column: a VeC draw falls back to the AltText (2), an AltText draw is plain AltText (1).
    assert {s["caption_source"] for s in samples} <= {1, 2}
    assert samples[1]["bad_images"] == 1
    assert sum(s["filtered"] for s in _take(ShardedCaptionDataset(cfg, image_size=16), 4)) >= 2


def test_clear_errors_for_wrong_columns(shapes_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no image column"):
        ShardedCaptionDataset(
            DataConfig(paths=(str(shapes_run),), image_column="png"), image_size=16
        )
    path = tmp_path / "x.parquet"
    pq.write_table(pa.Table.from_pylist([{"jpg": b"x", "caption": "c"}]), path)
    with pytest.raises(ValueError, match="status column"):
        ShardedCaptionDataset(DataConfig(paths=(str(path),), alt_field="caption"), image_size=16)
    ShardedCaptionDataset(
        DataConfig(paths=(str(path),), alt_field="caption", status_column=None), image_size=16
    )


def test_dataloader_workers_resume_exactly(shapes_run: Path, tiny_tokenizer) -> None:
    cfg = DataConfig(paths=(str(shapes_run),), shuffle_buffer=16, units_per_block=2)
    kwargs = dict(image_size=16, context_length=16, batch_size=8, num_workers=2)
    loader, _ = build_train_loader(cfg, tiny_tokenizer, **kwargs)
    progress = DataProgress(n_slots=2)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) <= 5:
            progress.update(batch)
        if len(batches) == 10:
            break
    assert [int(b["slot"]) for b in batches] == [0, 1] * 5
    assert batches[0]["input_ids"].shape[0] == 8 and batches[0]["pixel_values"].shape == (
        8,
        3,
        16,
        16,
    )
    # Resume after 5 batches: the 6th batch comes from slot 1, so worker 0 must now play slot 1.
    resumed, _ = build_train_loader(
        cfg, tiny_tokenizer, progress=DataProgress.from_dict(progress.to_dict()), **kwargs
    )
    again = []
    for batch in resumed:
        again.append(batch)
        if len(again) == 5:
            break
    for original, replay in zip(batches[5:], again, strict=True):
        assert int(original["slot"]) == int(replay["slot"])
        assert torch.equal(original["input_ids"], replay["input_ids"])
        assert torch.equal(original["pixel_values"], replay["pixel_values"])
    with pytest.raises(ValueError, match="data slots"):
        build_train_loader(cfg, tiny_tokenizer, progress=progress, **(kwargs | {"num_workers": 3}))


def test_progress_counts() -> None:
    progress = DataProgress()
    progress.update(
        {
            "slot": torch.tensor(1),
            "position": torch.tensor([2, 3, 4]),
            "caption_source": torch.tensor([0, 0, 1, 2]),
            "filtered": torch.tensor(3),
            "bad_images": torch.tensor(1),
        }
    )
    assert progress.positions == {1: Position(2, 3, 4)}
    assert progress.source_counts == {"vec": 2, "alt": 1, "alt_fallback": 1, "vec_fallback": 0}
    assert DataProgress.from_dict(progress.to_dict()) == progress
    assert np.isclose(progress.epoch, 2)


def test_shuffle_buffer_permutes_starts_early_and_keeps_drop_counts() -> None:
    from clip_trainer.data import _shuffle

    rows = [({"i": i}, i % 3) for i in range(500)] + [(None, 7)]
    out = list(_shuffle(iter(rows), np.random.default_rng(0), 100))
    items = [r["i"] for r, _ in out if r is not None]
    assert sorted(items) == list(range(500)) and items != list(range(500))
    assert sum(d for _, d in out) == sum(i % 3 for i in range(500)) + 7
    again = [
        r["i"] for r, _ in _shuffle(iter(rows), np.random.default_rng(0), 100) if r is not None
    ]
    assert again == items
    # emitting starts at size // 10 rows, long before the buffer is full
    first = next(_shuffle(iter(rows), np.random.default_rng(0), 100))
    assert first[0]["i"] < 10
    # memory bound: the reader is never more than `size` rows ahead of what was emitted
    assert all(item <= pos + 100 for pos, item in enumerate(items))


def test_skip_duplicates_trains_each_image_once(tmp_path: Path) -> None:
    """`vecap run --dedup` outputs name a canonical row in duplicate_of: with skip_duplicates
    those rows are filtered; without it (the default) every row with an image counts."""
    rows = [
        {"uid": "a", "jpg": _jpeg((200, 0, 0)), "alt_text": "red", "status": "ok", "duplicate_of": None},
        {"uid": "b", "jpg": _jpeg((200, 0, 0)), "alt_text": "red too", "status": "ok", "duplicate_of": "a"},
        {"uid": "c", "jpg": _jpeg((0, 0, 200)), "alt_text": "blue", "status": "ok", "duplicate_of": None},
    ]  # fmt: skip
    path = tmp_path / "00000.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)

    def texts(**config) -> list[str]:
        cfg = DataConfig(paths=(str(path),), shuffle_buffer=1, vec_prob=0.0, **config)
        return [s["text"] for s in _take(ShardedCaptionDataset(cfg, image_size=16), 3)]

    assert sorted(texts(skip_duplicates=True)[:2]) == ["blue", "red"]
    assert sorted(texts()) == ["blue", "red", "red too"]
