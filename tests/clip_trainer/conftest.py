"""Fixtures for the trainer tests: small synthetic vecap shards and the tiny tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from clip_trainer.synthetic import write_shapes_dataset, write_shapes_eval_set
from clip_trainer.tokenizer import build_tiny_tokenizer, load_tokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_tokenizer_dir: Path):
    return load_tokenizer(tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def shapes_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vecap output dir: 6 finished shards of 40 rows (5% failed rows, 10% without a VeC)
    plus one unfinished shard that must never be read."""
    out = tmp_path_factory.mktemp("shapes")
    write_shapes_dataset(
        out,
        280,
        rows_per_shard=40,
        image_size=32,
        seed=3,
        failed_prob=0.05,
        vec_missing_prob=0.1,
        unfinished_shards=1,
        row_group_size=10,
    )
    return out


@pytest.fixture(scope="session")
def shapes_train(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clean training data for the learning tests: 1024 rows, every caption right."""
    out = tmp_path_factory.mktemp("shapes_train")
    write_shapes_dataset(out, 1024, rows_per_shard=128, image_size=32, seed=0)
    return out


@pytest.fixture(scope="session")
def shapes_eval(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapes_eval_set(
        tmp_path_factory.mktemp("shapes_eval") / "eval.parquet", image_size=32
    )


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a shared 2-core machine, OpenMP threads spinning against other
    processes made a training step ~15x slower than a single thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
