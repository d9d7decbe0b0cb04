"""The training loop end to end on the tiny model (CPU): it learns, it resumes exactly, the CLI
drives it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clip_trainer.checkpoint import list_checkpoints, load_trainer_state
from clip_trainer.data import DataConfig
from clip_trainer.evaluate import EvalConfig, evaluate
from clip_trainer.model import ModelConfig
from clip_trainer.optim import OptimConfig
from clip_trainer.train import TrainConfig, train
from pipeline.cli import build_parser


def _metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_tiny_clip_learns_shapes(tmp_path: Path, shapes_train: Path, shapes_eval: Path) -> None:
    config = TrainConfig(
        data=DataConfig(paths=(str(shapes_train),), shuffle_buffer=256, hflip_prob=0.0),
        model=ModelConfig(arch="tiny"),
        # 100 steps gave R@1 0.52-0.60 over three seeds (chance 0.04).
        optim=OptimConfig(lr=3e-3, warmup_steps=10, weight_decay=0.1),
        output_dir=str(tmp_path / "run"),
        steps=100,
        batch_size=64,
        num_workers=0,
        log_every=25,
        save_every=1000,
        eval_data=str(shapes_eval),
        eval_every=50,
    )
    result = train(config)
    assert result.finished and result.step == 100
    lines = _metrics(result.metrics_path)
    metrics = [m for m in lines if "loss" in m]
    evals = [m for m in lines if "eval" in m]
    assert [m["step"] for m in evals] == [50, 100]
    assert metrics[-1]["loss"] < metrics[0]["loss"] - 0.5
    assert metrics[-1]["caption_sources"]["vec"] + metrics[-1]["caption_sources"]["alt"] == 100 * 64
    scores = evaluate(EvalConfig(model=str(result.model_dir), retrieval=str(shapes_eval)))[
        "retrieval"
    ]
    chance = 1 / scores["n_images"]  # 24 distinct colour x shape captions: ~0.042
    r1 = (scores["image_to_text_R@1"] + scores["text_to_image_R@1"]) / 2
    assert r1 > 5 * chance, scores
    # the in-training evaluation scored the same final model the same way
    assert evals[-1]["eval"]["image_to_text_R@1"] == pytest.approx(scores["image_to_text_R@1"])
    assert evals[-1]["eval"]["text_to_image_R@5"] == pytest.approx(scores["text_to_image_R@5"])

    # zero-shot colour classification, the class prompt ensembled over the four shapes
    from clip_trainer.synthetic import COLOURS, SHAPES, ShapeSpec, draw_shape

    folder = tmp_path / "colours"
    rng = np.random.default_rng(5)
    for colour in COLOURS:
        (folder / colour).mkdir(parents=True)
        for i, shape in enumerate(SHAPES):
            draw_shape(ShapeSpec(colour, shape), 32, rng).save(folder / colour / f"{i}.png")
    templates = tuple(f"a {{}} {shape}" for shape in SHAPES)
    zeroshot = evaluate(
        EvalConfig(model=str(result.model_dir), zeroshot=str(folder), templates=templates)
    )["zeroshot"]
    assert zeroshot["n_classes"] == 6.0 and zeroshot["top1"] > 3 / 6, zeroshot  # chance: 1/6


def _resume_config(tmp_path: Path, data: Path, name: str, **changes) -> TrainConfig:
    base = TrainConfig(
        data=DataConfig(paths=(str(data),), shuffle_buffer=32, units_per_block=2),
        model=ModelConfig(arch="tiny"),
        optim=OptimConfig(lr=1e-3, warmup_steps=2),
        output_dir=str(tmp_path / name),
        steps=6,
        batch_size=8,
        num_workers=2,  # 3 batches at the cut: the resumed loader must rotate its workers
        log_every=1,
        save_every=3,
        mixed_precision="no",
    )
    return replace(base, **changes)


@pytest.mark.slow
def test_resume_continues_the_same_run(tmp_path: Path, shapes_run: Path) -> None:
    straight = train(_resume_config(tmp_path, shapes_run, "straight"))
    first = train(_resume_config(tmp_path, shapes_run, "split", stop_after=3))
    assert not first.finished and first.step == 3
    second = train(_resume_config(tmp_path, shapes_run, "split"))
    assert second.finished and second.step == 6

    # same data position at the cut
    _, data_straight = load_trainer_state(tmp_path / "straight" / "checkpoints" / "step-00000003")
    state_split, data_split = load_trainer_state(
        tmp_path / "split" / "checkpoints" / "step-00000003"
    )
    assert state_split["step"] == 3
    assert data_split["positions"] == data_straight["positions"] and data_split["batches"] == 3
    # same losses after it, one metrics line per step (nothing duplicated by the restart)
    a, b = _metrics(straight.metrics_path), _metrics(second.metrics_path)
    assert [m["step"] for m in b] == list(range(1, 7))
    for x, y in zip(a, b, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-5)
        assert x["lr"] == pytest.approx(y["lr"])
        assert x["caption_sources"] == y["caption_sources"]
    # same weights at the end
    wa = load_file(straight.model_dir / "model.safetensors")
    wb = load_file(second.model_dir / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    assert len(list_checkpoints(tmp_path / "split")) == 2  # step 3 and step 6, keep=2

    with pytest.raises(FileExistsError, match="resume"):
        train(_resume_config(tmp_path, shapes_run, "split", resume=None))


@pytest.mark.slow
def test_cli_train_then_eval(tmp_path: Path, shapes_run: Path, shapes_eval: Path) -> None:
    parser = build_parser(("clip_trainer.cli",))
    out = tmp_path / "cli-run"
    args = parser.parse_args(
        [
            "train",
            str(shapes_run),
            "--output",
            str(out),
            "--steps",
            "2",
            "--arch",
            "tiny",
            "--tokenizer",
            "tiny",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--grad-accum",
            "2",
            "--warmup",
            "1",
            "--log-every",
            "1",
            "--tensorboard",
            "--vec-prob",
            "1.0",
            "--vec-field",
            "visual_caption",
        ]
    )
    assert args.func(args) == 0
    metrics = _metrics(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2]
    sources = metrics[-1]["caption_sources"]
    assert sources["alt"] == 0 and sources["vec"] + sources["alt_fallback"] == 2 * 2 * 8
    assert any((out / "tensorboard").iterdir())
    model_dir = out / "checkpoints" / "step-00000002" / "model"
    assert (model_dir / "model.safetensors").exists() and (model_dir / "tokenizer.json").exists()
    # transformers' own processor, loaded from the checkpoint, preprocesses as our eval does
    from transformers import AutoImageProcessor

    from clip_trainer.synthetic import ShapeSpec, draw_shape
    from clip_trainer.transforms import EvalTransform

    processor = AutoImageProcessor.from_pretrained(model_dir)
    image = draw_shape(ShapeSpec("red", "circle"), 48, np.random.default_rng(0))
    theirs = processor(images=image, return_tensors="pt")["pixel_values"][0]
    assert torch.allclose(theirs, EvalTransform(size=32)(image), atol=0.06)

    result_path = tmp_path / "eval.json"
    args = parser.parse_args(
        ["eval", str(model_dir), "--retrieval", str(shapes_eval), "--output", str(result_path)]
    )
    assert args.func(args) == 0
    assert json.loads(result_path.read_text())["retrieval"]["n_images"] == 24.0

    bad = parser.parse_args(
        ["train", str(shapes_run), "--output", str(out), "--steps", "2", "--vec-prob", "2"]
    )
    assert bad.func(bad) == 2


def _ddp_rank(rank: int, port: int, config: TrainConfig, queue) -> None:
    import os

    from tests.conftest import pytest_configure

    pytest_configure(None)  # the loopback-only tripwire, in this child too
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        GLOO_SOCKET_IFNAME="lo",  # gloo would otherwise resolve the host name to pick an interface
    )
    torch.set_num_threads(1)
    # One process group for both checks: the gathered loss's gradients, then training (accelerate
    # adopts an initialised group).
    import torch.distributed as dist

    from tests.clip_trainer.test_loss import local_loss_and_grads

    dist.init_process_group("gloo", rank=rank, world_size=2)
    grads = local_loss_and_grads(rank, 2)
    result = train(config)
    queue.put((rank, result.step, grads))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_process_ddp_training(tmp_path: Path, shapes_run: Path) -> None:
    """accelerate DDP over two CPU processes (gloo on loopback), with feature-cached gradient
    accumulation under no_sync: one metrics stream, counts from
    both ranks, a data position per slot; and the gathered loss gives the global-batch gradient."""
    import socket

    import torch.multiprocessing as mp

    from tests.clip_trainer.test_loss import expected_local_grads

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = _resume_config(
        tmp_path,
        shapes_run,
        "ddp",
        num_workers=1,
        steps=4,
        save_every=2,
        cpu=True,
        grad_accum_steps=2,
    )
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_rank, args=(r, port, config, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert {r[1] for r in results} == {4}
    for rank, _, (loss, grads) in results:
        full_loss, expected = expected_local_grads(rank, 2)
        assert abs(loss - full_loss) < 1e-5  # every rank computes the global-batch loss
        assert torch.allclose(torch.tensor(grads), expected, atol=1e-6)
    metrics = _metrics(tmp_path / "ddp" / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]  # written once, by rank 0
    # steps x batch x ranks x accumulation: both ranks counted
    assert sum(metrics[-1]["caption_sources"].values()) == 4 * 8 * 2 * 2
    _, data_state = load_trainer_state(tmp_path / "ddp" / "checkpoints" / "step-00000002")
    assert sorted(data_state["positions"]) == ["0", "1"] and data_state["n_slots"] == 2


@pytest.mark.slow
def test_sigterm_checkpoints_and_stops(tmp_path: Path, shapes_run: Path) -> None:
    import os
    import signal
    import threading
    import time

    config = _resume_config(
        tmp_path, shapes_run, "preempted", steps=100_000, save_every=100_000, num_workers=1
    )
    metrics = tmp_path / "preempted" / "metrics.jsonl"

    def preempt() -> None:  # once training runs (handler installed), like a cloud preemption
        deadline = time.monotonic() + 120
        while not metrics.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=preempt, daemon=True)
    killer.start()
    result = train(config)
    killer.join()
    assert not result.finished and 1 <= result.step < 1000
    assert list_checkpoints(tmp_path / "preempted")[-1].name == f"step-{result.step:08d}"
    assert _metrics(metrics)[-1]["step"] == result.step
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler removed again


def test_accumulation_keeps_all_negatives(tiny_tokenizer) -> None:
    """Two micro-batches of 4 give the gradients of one batch of 8 (feature-cached
    accumulation), not those of two separate 4-sample contrastive problems."""
    from accelerate import Accelerator

    from clip_trainer.model import build_model
    from clip_trainer.train import contrastive_backward
    from clip_trainer.transforms import CLIP_MEAN, CLIP_STD

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="tiny"), tiny_tokenizer)
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(model)
    captions = [
        f"a {c} {s}" for c in ("red", "blue") for s in ("circle", "square", "cross", "star")
    ]
    tokens = tiny_tokenizer(captions, padding="longest", return_tensors="pt")
    pixels = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    batch = {
        "input_ids": tokens["input_ids"],
        "attention_mask": tokens["attention_mask"],
        "pixel_values": pixels,
    }

    def grads() -> dict[str, torch.Tensor]:
        out = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        return out

    whole = contrastive_backward(accelerator, model, [batch], CLIP_MEAN, CLIP_STD)
    expected = grads()
    halves = [{k: v[:4] for k, v in batch.items()}, {k: v[4:] for k, v in batch.items()}]
    accumulated = contrastive_backward(accelerator, model, halves, CLIP_MEAN, CLIP_STD)
    got = grads()
    assert float(accumulated.detach()) == pytest.approx(float(whole.detach()), abs=1e-5)
    for name, grad in expected.items():
        assert torch.allclose(got[name], grad, atol=1e-5, rtol=1e-4), name


@pytest.mark.slow
def test_resume_keeps_the_original_file_plan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    from clip_trainer.synthetic import write_shapes_dataset

    data = tmp_path / "data"
    write_shapes_dataset(data, 120, rows_per_shard=40, image_size=32)
    config = _resume_config(tmp_path, data, "run", steps=4, num_workers=0, save_every=100)
    train(replace(config, stop_after=2))
    _, first = load_trainer_state(tmp_path / "run" / "checkpoints" / "step-00000002")
    assert len(first["files"]) == 3

    # the pipeline finishes another shard meanwhile: the resumed stream must not re-plan
    more = tmp_path / "more"
    write_shapes_dataset(more, 160, rows_per_shard=40, image_size=32, seed=9)
    for name in ("part-00003.parquet", "part-00003.stats.json"):
        shutil.copy(more / "shards" / name, data / "shards" / name)
    with caplog.at_level("WARNING", logger="clip_trainer.data"):
        train(replace(config, stop_after=1))
    assert "1 parquet files appeared" in caplog.text
    _, second = load_trainer_state(tmp_path / "run" / "checkpoints" / "step-00000003")
    assert second["files"] == first["files"]

    (data / "shards" / "part-00001.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="gone"):
        train(config)
