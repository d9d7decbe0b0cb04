"""Streaming training data from vecap parquet shards (or any parquet with image bytes + captions).

How the stream is cut, so that no row is read twice and a resumed run lands on the same sample:

* **Units.** The input files (only committed vecap shards: the parquet each
  ``part-N.stats.json`` names) are the units of work; when there are fewer files than data
  slots, row groups are; when there are fewer row groups than slots, every slot reads everything
  and keeps every n-th row ("stride" mode, for tiny data).
* **Slots.** A slot is one DataLoader worker of one process: ``slot = rank * workers + worker``.
  Each epoch the units are permuted (seeded by epoch) and dealt round-robin to the slots.
* **Blocks.** A slot reads its units in blocks of ``units_per_block``; a shuffle buffer mixes the
  rows of a block and drains at its end. A position is therefore ``(epoch, block, rows taken)``
  and resuming re-reads at most one block, never a whole epoch.
* **Per-sample randomness** (caption draw, crop, flip) comes from a generator seeded by
  ``(seed, epoch, slot, block, index)``: it does not depend on what came before, so skipping the
  rows already consumed reproduces exactly the samples a crashed run would have produced next.

The stream is infinite (epochs follow each other); the trainer counts optimizer steps, which
keeps every DDP rank on the same number of batches.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from fsspec.implementations.local import LocalFileSystem
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from clip_trainer.sampling import CaptionSampler, CaptionSource
from clip_trainer.transforms import TrainTransform, decode_for_training

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataConfig:
    """Where the training rows come from and how each sample view is drawn."""

    paths: tuple[str, ...]  # vecap output dirs, shard dirs, parquet files or globs (any fsspec URL)
    vec_prob: float = 0.5  # VeCLIP's p: chance of training on the VeC rather than the AltText
    vec_field: str = "fused_caption"  # or "visual_caption"
    alt_field: str = "alt_text"  # img2dataset parquet calls it "caption"
    image_column: str = "jpg"
    status_column: str | None = "status"  # None: every row with an image counts
    ok_statuses: tuple[str, ...] = ("ok", "success")  # vecap's and img2dataset's
    # `vecap run --dedup` outputs: train on each image once, skipping rows whose image is a
    # duplicate of an earlier row's (`duplicate_of` set); outputs without the column: no-op
    skip_duplicates: bool = False
    require_finished: bool = True  # vecap shards count only once their stats file exists
    # Rows held per data slot (process x worker), image bytes included: 5000 x ~50 kB = 250 MB.
    shuffle_buffer: int = 5_000
    units_per_block: int = 4  # units mixed by one buffer fill; also the resume granularity
    read_batch_rows: int = 512
    crop_scale: tuple[float, float] = (0.9, 1.0)
    hflip_prob: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        paths = (self.paths,) if isinstance(self.paths, str) else tuple(self.paths)
        object.__setattr__(self, "paths", paths)
        if not paths:
            raise ValueError("DataConfig.paths is empty: pass at least one vecap output or parquet")
        object.__setattr__(self, "ok_statuses", tuple(self.ok_statuses))
        object.__setattr__(self, "crop_scale", tuple(self.crop_scale))
        # The sampler validates vec_prob and the field names.
        CaptionSampler(self.vec_prob, self.vec_field, self.alt_field)
        if self.shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer must be >= 1, got {self.shuffle_buffer}")
        if self.units_per_block < 1:
            raise ValueError(f"units_per_block must be >= 1, got {self.units_per_block}")
        if self.read_batch_rows < 1:
            raise ValueError(f"read_batch_rows must be >= 1, got {self.read_batch_rows}")
        if not self.image_column:
            raise ValueError("image_column must be a column name")
        TrainTransform(size=8, scale=self.crop_scale, hflip_prob=self.hflip_prob)

    @property
    def sampler(self) -> CaptionSampler:
        return CaptionSampler(self.vec_prob, self.vec_field, self.alt_field)


@dataclass(frozen=True, order=True)
class Position:
    """Rows of ``block`` of ``epoch`` already taken by one slot (0 = start of the block)."""

    epoch: int = 0
    block: int = 0
    index: int = 0


@dataclass(frozen=True)
class ReadUnit:
    """One file, or one row group of a file (``row_group`` set)."""

    path: str
    row_group: int | None = None
    offset: int = 0  # rows in all units before this one (row-group mode): a global row number


def find_parquet_files(paths: Sequence[str], require_finished: bool = True) -> list[str]:
    """Parquet files under ``paths``, sorted, as full URLs.

    A directory holding ``shards/`` is a vecap output; in a directory of vecap shards, a shard's
    parquet counts only when its stats file (the writer's commit) names it: uncommitted write
    attempts (failed, killed, or a lost race) are never read, unless ``require_finished`` is
    False, which takes every parquet file. Other parquet files are taken as they are.
    """
    from pipeline.io.shard_files import committed_parquet_name, parse_parquet_name, parse_stats_name
    from schemas.stats import ShardStats

    found: set[str] = set()
    for path in paths:
        fs, root = fsspec.core.url_to_fs(path)
        if fs.isdir(root):
            if fs.isdir(posixpath.join(root, "shards")):
                root = posixpath.join(root, "shards")
            names = {posixpath.basename(p): p for p in fs.ls(root, detail=False)}
            stats_files = [
                full for name, full in names.items() if parse_stats_name(name) is not None
            ]
            committed: set[str] = set()
            if require_finished and stats_files:
                # one batched read: object stores fetch many stats files concurrently
                for data in fs.cat(stats_files).values():
                    committed.add(committed_parquet_name(ShardStats.from_json(data.decode())))
            for name, full in names.items():
                if not name.endswith(".parquet") or name.startswith((".", "_")):
                    continue
                if require_finished and parse_parquet_name(name) and name not in committed:
                    continue  # not committed by a stats file: never read
                found.add(fs.unstrip_protocol(full))
        else:
            if any(ch in root for ch in "*?["):
                matches = fs.glob(root)
            else:
                matches = [root] if fs.exists(root) else []
            if not matches:
                raise FileNotFoundError(f"no parquet files match {path!r}")
            found.update(fs.unstrip_protocol(m) for m in matches if m.endswith(".parquet"))
    if not found:
        raise FileNotFoundError(f"no finished parquet shards found in {list(paths)!r}")
    return sorted(found)


def plan_units(files: Sequence[str], n_slots: int) -> tuple[list[ReadUnit], bool]:
    """(units, stride): whole files when there are enough, else row groups, else stride mode."""
    if len(files) >= n_slots:
        return [ReadUnit(f) for f in files], False
    units = []
    offset = 0
    for f in files:
        with open_parquet(f) as parquet:
            metadata = parquet.metadata
        for g in range(metadata.num_row_groups):
            units.append(ReadUnit(f, g, offset))
            offset += metadata.row_group(g).num_rows
    return units, len(units) < n_slots


class ShardedCaptionDataset(IterableDataset):
    """Infinite stream of training samples for one process (rank) and its DataLoader workers.

    Yields dicts with ``pixel_values`` (uint8 CHW tensor; the trainer normalises it on the
    device), ``text``, ``caption_source``
    (:class:`CaptionSource`), the sample's slot and :class:`Position`, and counts of rows
    dropped just before it (``filtered``: status/image/caption; ``bad_images``: undecodable).
    """

    def __init__(
        self,
        config: DataConfig,
        *,
        image_size: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        positions: Mapping[int, Position] | None = None,
        worker_offset: int = 0,
        files: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.config = config
        self.rank = rank
        self.world_size = world_size
        self.workers_per_rank = max(1, num_workers)
        self.n_slots = world_size * self.workers_per_rank
        self.files = (
            list(files)
            if files is not None
            else find_parquet_files(config.paths, config.require_finished)
        )
        self.units, self.stride = plan_units(self.files, self.n_slots)
        self.columns = _check_columns(self.files[0], config)
        self.positions = dict(positions or {})
        self.worker_offset = worker_offset
        self.transform = TrainTransform(
            size=image_size, scale=config.crop_scale, hflip_prob=config.hflip_prob
        )
        self.sampler = config.sampler
        self._bad_logged = 0

    # -- the row stream (no decoding: cheap to skip through on resume) --

    def slot_units(self, slot: int, epoch: int) -> list[ReadUnit]:
        order = np.random.default_rng([self.config.seed, epoch, 0]).permutation(len(self.units))
        units = [self.units[i] for i in order]
        return units if self.stride else units[slot :: self.n_slots]

    def iter_rows(
        self, slot: int, start: Position = Position()
    ) -> Iterator[tuple[Position, dict, int]]:
        """(position after the row, row, rows filtered since the previous one), forever.

        Filter counts are exact over an uninterrupted run; across a resume, drops that the
        shuffle buffer had not yet attributed to a consumed row may be counted again or not at all.
        """
        cfg = self.config
        epoch, block, skip = start.epoch, start.block, start.index
        filtered = 0
        while True:
            units = self.slot_units(slot, epoch)
            blocks = [
                units[i : i + cfg.units_per_block]
                for i in range(0, len(units), cfg.units_per_block)
            ]
            yielded_this_epoch = block > 0 or skip > 0
            for b in range(block, len(blocks)):
                rng = np.random.default_rng([cfg.seed, epoch, slot, b, 1])
                index = 0
                for row, dropped in _shuffle(
                    self._read_block(blocks[b], slot), rng, cfg.shuffle_buffer
                ):
                    filtered += dropped
                    if row is None:
                        continue
                    index += 1
                    yielded_this_epoch = True
                    if index <= skip:
                        filtered = 0  # counted by the run that consumed these rows
                        continue
                    yield Position(epoch, b, index), row, filtered
                    filtered = 0
                skip = 0
            if not yielded_this_epoch:
                raise RuntimeError(
                    f"data slot {slot} of {self.n_slots} got no usable rows (status ok, an image, "
                    f"a caption) in epoch {epoch} from {len(units)} units of {len(self.files)} "
                    "files: check the data or use fewer processes x workers"
                )
            epoch, block, skip = epoch + 1, 0, 0

    def _read_block(self, units: Sequence[ReadUnit], slot: int) -> Iterator[tuple[dict, int]]:
        cfg = self.config
        for unit in units:
            with open_parquet(unit.path) as parquet:
                groups = None if unit.row_group is None else [unit.row_group]
                row_number = 0
                for batch in parquet.iter_batches(
                    batch_size=cfg.read_batch_rows, columns=self.columns, row_groups=groups
                ):
                    keep = self._usable(batch)
                    if self.stride:
                        # Global row numbers dealt round-robin: every row to exactly one slot.
                        numbers = np.arange(row_number, row_number + batch.num_rows) + unit.offset
                        mine = numbers % self.n_slots == slot
                        keep = keep & mine
                        dropped_here = ~keep & mine
                    else:
                        dropped_here = ~keep
                    row_number += batch.num_rows
                    dropped = 0
                    for i, row in enumerate(batch.to_pylist()):
                        if keep[i]:
                            yield row, dropped
                            dropped = 0
                        elif dropped_here[i]:
                            dropped += 1
                    if dropped:
                        yield None, dropped  # trailing drops: counted, nothing to train on

    def _usable(self, batch: pa.RecordBatch) -> np.ndarray:
        cfg = self.config
        image = batch.column(cfg.image_column)
        ok = pc.fill_null(pc.greater(pc.binary_length(image), 0), False)
        if cfg.status_column is not None:
            status = batch.column(cfg.status_column)
            ok = pc.and_(ok, pc.fill_null(pc.is_in(status, pa.array(cfg.ok_statuses)), False))
        if cfg.skip_duplicates and "duplicate_of" in batch.schema.names:
            ok = pc.and_(ok, pc.is_null(batch.column("duplicate_of")))
        has_caption = None
        for name in (cfg.vec_field, cfg.alt_field):
            if name in self.columns and not pa.types.is_null(batch.column(name).type):
                present = pc.fill_null(
                    pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(batch.column(name))), 0),
                    False,
                )
                has_caption = present if has_caption is None else pc.or_(has_caption, present)
        if has_caption is None:
            return np.zeros(batch.num_rows, dtype=bool)
        return pc.and_(ok, has_caption).to_numpy(zero_copy_only=False)

    # -- samples --

    def _slot(self) -> int:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.workers_per_rank:
            raise RuntimeError(
                f"dataset planned for {self.workers_per_rank} workers per process but runs in {workers}"
            )
        # Rotate so that after a resume the DataLoader's round-robin over workers continues
        # with the slot whose batch would have come next.
        logical = (worker + self.worker_offset) % workers
        return self.rank * workers + logical

    def __iter__(self) -> Iterator[dict[str, Any]]:
        slot = self._slot()
        start = self.positions.get(slot, Position())
        bad = 0
        pending_filtered = 0
        for position, row, filtered in self.iter_rows(slot, start):
            pending_filtered += filtered
            sample = self.make_sample(row, slot, position)
            if sample is None:
                bad += 1
                continue
            sample["filtered"] = pending_filtered
            sample["bad_images"] = bad
            pending_filtered = bad = 0
            yield sample

    def make_sample(self, row: Mapping[str, Any], slot: int, position: Position) -> dict | None:
        """Decode, draw the caption and augment one row; None when the image does not decode."""
        cfg = self.config
        rng = np.random.default_rng(
            [cfg.seed, position.epoch, slot, position.block, position.index, 2]
        )
        choice = self.sampler.choose(row, rng)
        if choice is None:
            return None  # filtered upstream; only reachable with hand-made rows
        text, source = choice
        try:
            image = decode_for_training(row[cfg.image_column], self.transform.size)
            pixels = self.transform(image, rng)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            # Counted in the metrics (bad_images); the first few are named in the log.
            self._bad_logged += 1
            if self._bad_logged <= 5:
                _log.warning(
                    "slot %d: skipping undecodable image (uid %s): %s", slot, row.get("uid"), exc
                )
            return None
        return {
            "pixel_values": pixels,
            "text": text,
            "caption_source": int(source),
            "slot": slot,
            "position": (position.epoch, position.block, position.index),
        }


def _shuffle(
    rows: Iterator[tuple[dict | None, int]], rng: np.random.Generator, size: int
) -> Iterator[tuple[dict | None, int]]:
    """Shuffle buffer: hold up to ``size`` rows, emit a random one per row read, drain shuffled at
    the end of the block.

    Like webdataset's, it starts emitting once ``size // 10`` rows are in (at most 1000) and
    then grows by one row per two read, so the first batch does not wait for a full buffer.
    Drop counts travel with the next row read, so they are neither lost nor double counted.
    """
    buffer: list[tuple[dict | None, int]] = []
    initial = max(1, min(size // 10, 1000))
    growing_turn = False
    for item in rows:
        if item[0] is None:  # a pure drop count: pass it on at once
            yield item
            continue
        if len(buffer) < size:
            buffer.append(item)
            growing_turn = not growing_turn
            if len(buffer) < initial or growing_turn:
                continue
            i = int(rng.integers(len(buffer)))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()
            continue
        i = int(rng.integers(len(buffer)))
        out, buffer[i] = buffer[i], item
        yield out
    rng.shuffle(buffer)
    yield from buffer


@contextmanager
def open_parquet(url: str) -> Iterator[pq.ParquetFile]:
    """A ParquetFile for any fsspec URL; local files go through arrow's native reader."""
    fs, path = fsspec.core.url_to_fs(url)
    if isinstance(fs, LocalFileSystem):
        with pq.ParquetFile(path) as parquet:
            yield parquet
        return
    with fs.open(path, "rb") as handle, pq.ParquetFile(handle) as parquet:
        yield parquet


def _check_columns(path: str, config: DataConfig) -> list[str]:
    with open_parquet(path) as parquet:
        names = set(parquet.schema_arrow.names)
    if config.image_column not in names:
        raise ValueError(
            f"{path} has no image column {config.image_column!r} (columns: {sorted(names)})"
        )
    if config.status_column is not None and config.status_column not in names:
        raise ValueError(
            f"{path} has no status column {config.status_column!r}; set status_column=None "
            "(--no-status-filter) to train on every row with an image"
        )
    if config.vec_field not in names and config.alt_field not in names:
        raise ValueError(
            f"{path} has neither caption column {config.vec_field!r} nor {config.alt_field!r}"
        )
    wanted = [config.image_column, config.vec_field, config.alt_field, config.status_column, "uid"]
    if config.skip_duplicates:
        wanted.append("duplicate_of")
    return [c for c in dict.fromkeys(wanted) if c is not None and c in names]


class Collate:
    """Stacks samples and tokenizes their captions (runs inside the DataLoader worker).

    Pads to the longest caption in the batch: CLIP's causal text encoder pools at the EOS token,
    so padding after it changes nothing and short captions cost less than a fixed 77 tokens.
    """

    def __init__(self, tokenizer: Any, context_length: int) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(
            [s["text"] for s in samples],
            padding="longest",
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        last = samples[-1]
        return {
            "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "caption_source": torch.tensor(
                [s["caption_source"] for s in samples], dtype=torch.long
            ),
            # A batch comes whole from one worker, so its last sample is that slot's position.
            "slot": torch.tensor(last["slot"], dtype=torch.long),
            "position": torch.tensor(last["position"], dtype=torch.long),
            "filtered": torch.tensor(sum(s["filtered"] for s in samples), dtype=torch.long),
            "bad_images": torch.tensor(sum(s["bad_images"] for s in samples), dtype=torch.long),
        }


@dataclass
class DataProgress:
    """What the training loop has consumed: the resume point and the counts for the metrics."""

    positions: dict[int, Position] = field(default_factory=dict)
    batches: int = 0  # batches taken by this process (all ranks take the same number)
    source_counts: dict[str, int] = field(
        default_factory=lambda: {s.label: 0 for s in CaptionSource}
    )
    filtered_rows: int = 0
    bad_images: int = 0
    n_slots: int | None = None
    # The input files the stream was planned over: a resumed run replays exactly these, so
    # shards finished since then cannot reshuffle the plan under the saved positions.
    files: list[str] | None = None

    def update(self, batch: Mapping[str, torch.Tensor]) -> None:
        self.positions[int(batch["slot"])] = Position(*(int(v) for v in batch["position"]))
        self.batches += 1
        counts = torch.bincount(batch["caption_source"].cpu(), minlength=len(CaptionSource))
        for source in CaptionSource:
            self.source_counts[source.label] += int(counts[source.value])
        self.filtered_rows += int(batch["filtered"])
        self.bad_images += int(batch["bad_images"])

    @property
    def epoch(self) -> int:
        """The least advanced slot's epoch (0-based)."""
        return min((p.epoch for p in self.positions.values()), default=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "positions": {
                str(k): [p.epoch, p.block, p.index] for k, p in sorted(self.positions.items())
            },
            "batches": self.batches,
            "source_counts": dict(self.source_counts),
            "filtered_rows": self.filtered_rows,
            "bad_images": self.bad_images,
            "n_slots": self.n_slots,
            "files": self.files,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataProgress:
        return cls(
            positions={int(k): Position(*v) for k, v in data.get("positions", {}).items()},
            batches=int(data.get("batches", 0)),
            source_counts={s.label: 0 for s in CaptionSource} | dict(data.get("source_counts", {})),
            filtered_rows=int(data.get("filtered_rows", 0)),
            bad_images=int(data.get("bad_images", 0)),
            n_slots=data.get("n_slots"),
            files=list(data["files"]) if data.get("files") is not None else None,
        )


def _ignore_stop_signals(worker_id: int) -> None:
    """Workers leave SIGTERM/SIGUSR1 to the training process, which checkpoints and then ends
    them; a worker killed first would make the next batch fail instead."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def _resume_files(config: DataConfig, progress: DataProgress | None) -> list[str] | None:
    """The recorded file list of a resumed stream (None: plan afresh). Files finished since the
    checkpoint wait for the next run; a recorded file that disappeared is an error."""
    if progress is None or not progress.positions or progress.files is None:
        return None
    current = set(find_parquet_files(config.paths, config.require_finished))
    missing = [f for f in progress.files if f not in current]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} input files of the checkpointed data stream are gone "
            f"(first: {missing[0]}); restore them or start a new run"
        )
    new = len(current) - len(progress.files)
    if new > 0:
        _log.warning(
            "%d parquet files appeared since this run started; the resumed stream continues over "
            "the original %d (start a new run, e.g. --init-from, to include them)",
            new,
            len(progress.files),
        )
    return list(progress.files)


def build_train_loader(
    config: DataConfig,
    tokenizer: Any,
    *,
    image_size: int,
    context_length: int,
    batch_size: int,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    progress: DataProgress | None = None,
    pin_memory: bool = False,
) -> tuple[DataLoader, ShardedCaptionDataset]:
    """The training DataLoader for one process, resuming from ``progress`` when given."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    workers = max(1, num_workers)
    n_slots = world_size * workers
    positions: dict[int, Position] = {}
    offset = 0
    if progress is not None and progress.positions:
        if progress.n_slots is not None and progress.n_slots != n_slots:
            raise ValueError(
                f"the checkpoint's data position was recorded with {progress.n_slots} data slots "
                f"(processes x workers) but this run has {n_slots}: resume with the same number "
                "of processes and --workers to continue the same data stream"
            )
        positions = dict(progress.positions)
        offset = progress.batches % workers
    files = _resume_files(config, progress)
    dataset = ShardedCaptionDataset(
        config,
        image_size=image_size,
        rank=rank,
        world_size=world_size,
        num_workers=num_workers,
        positions=positions,
        worker_offset=offset,
        files=files,
    )
    if progress is not None:
        progress.files = dataset.files
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=Collate(tokenizer, context_length),
        pin_memory=pin_memory,
        persistent_workers=False,
        worker_init_fn=_ignore_stop_signals if num_workers > 0 else None,
        prefetch_factor=4 if num_workers > 0 else None,
    )
    return loader, dataset


__all__ = [
    "Collate",
    "DataConfig",
    "DataProgress",
    "Position",
    "ReadUnit",
    "ShardedCaptionDataset",
    "build_train_loader",
    "find_parquet_files",
    "open_parquet",
    "plan_units",
]
