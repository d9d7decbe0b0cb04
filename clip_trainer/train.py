"""The CLIP training loop: accelerate (single device, DDP multi-GPU/multi-node, AMP), VeCLIP's
mixed captions, checkpoints that resume at the same step and data position, JSONL metrics.

Multi-GPU: ``accelerate launch -m pipeline.cli train ...`` (or torchrun); every process streams
its own slots of the data, features are gathered for the loss (see :mod:`clip_trainer.loss`).
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clip_trainer.data import DataConfig, DataProgress
from clip_trainer.loss import clip_loss as clip_loss_fn
from clip_trainer.model import LOGIT_SCALE_MAX, ModelConfig
from clip_trainer.optim import OptimConfig

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig
    output_dir: str
    steps: int  # optimizer steps for the whole run (the schedule's length)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch_size: int = 256  # per process and micro-step; global = batch x processes x accumulation
    grad_accum_steps: int = 1
    num_workers: int = 4  # DataLoader workers per process
    mixed_precision: str = "auto"  # auto: bf16 on CUDA when supported, else fp32
    log_every: int = 10
    save_every: int = 1000
    keep_checkpoints: int = 2
    resume: str | None = "auto"  # "auto": latest checkpoint in output_dir if any; a path; None
    stop_after: int | None = (
        None  # stop after this many steps in this invocation (wall-time limits)
    )
    tensorboard: bool = False
    eval_data: str | None = None  # retrieval set (parquet or image folder) scored during training
    eval_every: int = 0  # steps between evaluations (0: only at the end, when eval_data is set)
    eval_caption_field: str = "fused_caption"
    seed: int = 0
    cpu: bool = False  # force CPU even when CUDA is present

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 2:
            raise ValueError("batch_size must be >= 2: a contrastive loss needs negatives")
        if self.grad_accum_steps < 1:
            raise ValueError("grad_accum_steps must be >= 1")
        if self.num_workers < 0:
            raise ValueError("num_workers must be >= 0")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}")
        if self.log_every < 1 or self.save_every < 1:
            raise ValueError("log_every and save_every must be >= 1")
        if self.keep_checkpoints < 1:
            raise ValueError("keep_checkpoints must be >= 1")
        if self.eval_every < 0:
            raise ValueError("eval_every must be >= 0")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError("stop_after must be >= 1")
        if not self.output_dir:
            raise ValueError("output_dir is required")


@dataclass
class TrainResult:
    step: int
    model_dir: Path  # the last checkpoint's self-contained model directory
    metrics_path: Path
    last_metrics: dict[str, Any]
    finished: bool  # False when stop_after ended the invocation before `steps`
    main_process: bool = True  # rank 0 (the one that writes metrics and checkpoints)


def _resolve_precision(requested: str, cpu: bool) -> str:
    import torch

    if requested != "auto":
        return requested
    if not cpu and torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _merge_progress(parts: list[dict[str, Any]], n_slots: int) -> dict[str, Any]:
    """One data state from every rank's: positions are disjoint per rank, counts add up."""
    merged = DataProgress(n_slots=n_slots)
    for part in parts:
        progress = DataProgress.from_dict(part)
        merged.files = progress.files  # the same plan on every rank
        merged.positions.update(progress.positions)
        merged.batches = progress.batches  # equal on every rank
        for key, value in progress.source_counts.items():
            merged.source_counts[key] = merged.source_counts.get(key, 0) + value
        merged.filtered_rows += progress.filtered_rows
        merged.bad_images += progress.bad_images
    return merged.to_dict()


def _trim_metrics(path: Path, last_step: int) -> None:
    """Drop lines a crashed run logged after its last checkpoint: the resumed run redoes them."""
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= last_step
    ]
    path.write_text("".join(line + "\n" for line in kept))


def train(config: TrainConfig) -> TrainResult:
    """Train (or resume training) a CLIP on vecap shards; returns where the model ended up."""
    import torch
    from transformers import CLIPModel

    try:
        from accelerate import Accelerator
        from accelerate.utils import gather_object, set_seed
    except ImportError as exc:  # the train extra
        raise ImportError("training needs accelerate: pip install 'vecap[train]'") from exc

    from clip_trainer.checkpoint import (
        latest_checkpoint,
        list_checkpoints,
        load_trainer_state,
        save_checkpoint,
    )
    from clip_trainer.data import build_train_loader
    from clip_trainer.model import (
        build_model,
        model_context_length,
        model_image_size,
        preprocessing,
        resolve_tokenizer,
    )
    from clip_trainer.optim import build_optimizer, build_scheduler

    out = Path(config.output_dir)
    accelerator = Accelerator(
        mixed_precision=_resolve_precision(config.mixed_precision, config.cpu),
        cpu=config.cpu,
    )
    is_main = accelerator.is_main_process
    if is_main:
        out.mkdir(parents=True, exist_ok=True)

    # Which checkpoint, if any, to continue from.
    checkpoint: Path | None = None
    if config.resume == "auto":
        checkpoint = latest_checkpoint(out)
    elif config.resume:
        checkpoint = Path(config.resume)
    elif list_checkpoints(out):
        raise FileExistsError(
            f"{out} already holds checkpoints; pass resume='auto' (--resume auto) to continue "
            "that run or choose another output directory"
        )

    set_seed(config.seed)
    if checkpoint is not None:
        tokenizer = resolve_tokenizer(
            ModelConfig(
                init_from=str(checkpoint / "model"), tokenizer_kind=config.model.tokenizer_kind
            ),
            out,
        )
        model = CLIPModel.from_pretrained(str(checkpoint / "model"))
        trainer_state, data_state = load_trainer_state(checkpoint)
    else:
        with accelerator.main_process_first():  # the tiny tokenizer is built once, by rank 0
            tokenizer = resolve_tokenizer(config.model, out)
        model = build_model(config.model, tokenizer)
        trainer_state, data_state = None, None

    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, config.steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    step = 0
    progress = DataProgress(n_slots=accelerator.num_processes * max(1, config.num_workers))
    if trainer_state is not None:
        optimizer.load_state_dict(trainer_state["optimizer"])
        scheduler.load_state_dict(trainer_state["scheduler"])
        step = int(trainer_state["step"])
        progress = DataProgress.from_dict(data_state)
        if not is_main:  # counts were merged over ranks; keep them once
            progress = DataProgress(
                positions=progress.positions,
                batches=progress.batches,
                n_slots=progress.n_slots,
                files=progress.files,
            )
        torch.set_rng_state(trainer_state["torch_rng"])

    core = accelerator.unwrap_model(model)
    # Normalisation happens on the device (the loader ships uint8); keep a fine-tuned model's own.
    source_dir = checkpoint / "model" if checkpoint is not None else config.model.init_from
    _, mean, std = preprocessing(source_dir, model_image_size(core))
    loader, _ = build_train_loader(
        config.data,
        tokenizer,
        image_size=model_image_size(core),
        context_length=model_context_length(core),
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        progress=progress,
        pin_memory=accelerator.device.type == "cuda",
    )

    metrics_path = out / "metrics.jsonl"
    eval_cache: dict[str, Any] = {}
    writer = None
    if is_main:
        _trim_metrics(metrics_path, step)
        if config.tensorboard:
            writer = _tensorboard_writer(out / "tensorboard")
        (out / "train_config.json").write_text(json.dumps(asdict(config), indent=2, default=str))

    def save(at_step: int) -> Path:
        parts = gather_object([progress.to_dict()])
        path = checkpoint_root_step(out, at_step)
        if is_main:
            state = {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": at_step,
                "torch_rng": torch.get_rng_state(),
                "config": asdict(config),
            }
            path = save_checkpoint(
                out,
                at_step,
                model=accelerator.unwrap_model(model),
                tokenizer=tokenizer,
                trainer_state=state,
                data_state=_merge_progress(parts, progress.n_slots or 1),
                keep=config.keep_checkpoints,
                preprocessor=(model_image_size(core), mean, std),
            )
        accelerator.wait_for_everyone()
        return path

    last_stop = (
        config.steps if config.stop_after is None else min(config.steps, step + config.stop_after)
    )
    global_batch = config.batch_size * accelerator.num_processes * config.grad_accum_steps
    data_iter = iter(loader)
    model.train()
    last_metrics: dict[str, Any] = {}
    window_loss: Any = torch.zeros((), device=accelerator.device)
    window_steps, window_wait = 0, 0.0
    window_start = time.perf_counter()
    saved_at = step if checkpoint is not None else -1
    stop_request = _StopRequest().install()
    stopping = False
    try:
        while step < last_stop and not stopping:
            micro_batches = []
            for _ in range(config.grad_accum_steps):
                wait_start = time.perf_counter()
                micro_batches.append(next(data_iter))
                window_wait += time.perf_counter() - wait_start
                progress.update(micro_batches[-1])
            loss = contrastive_backward(accelerator, model, micro_batches, mean, std)
            if config.optim.grad_clip_norm is not None:
                accelerator.clip_grad_norm_(model.parameters(), config.optim.grad_clip_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            # Summed on the device: reading it every step would stall the GPU queue.
            window_loss = window_loss + loss.detach()
            scheduler.step()
            with torch.no_grad():  # CLIP clamps the temperature so logits stay below 100
                accelerator.unwrap_model(model).logit_scale.clamp_(0, LOGIT_SCALE_MAX)
            step += 1
            window_steps += 1
            stopping = stop_request.agreed(accelerator)

            if step % config.log_every == 0 or step == last_stop or stopping:
                elapsed = time.perf_counter() - window_start
                loss_mean = accelerator.reduce(window_loss / window_steps, "mean")
                if not torch.isfinite(loss_mean):
                    raise FloatingPointError(
                        f"loss is {float(loss_mean)} near step {step}: lower the lr, add warmup or use fp32"
                    )
                counts = _sum_counts(accelerator, progress)
                logit_scale = float(accelerator.unwrap_model(model).logit_scale.detach().exp())
                seen = (
                    counts["vec"] + counts["alt"] + counts["alt_fallback"] + counts["vec_fallback"]
                )
                last_metrics = {
                    "step": step,
                    "loss": float(loss_mean),
                    "logit_scale": logit_scale,
                    "temperature": 1.0 / logit_scale,
                    "lr": scheduler.get_last_lr()[0],
                    "samples_per_s": window_steps * global_batch / elapsed
                    if elapsed > 0
                    else math.nan,
                    "data_wait_frac": window_wait / elapsed if elapsed > 0 else 0.0,
                    "epoch": progress.epoch,
                    "caption_sources": counts,
                    "vec_frac": (counts["vec"] + counts["vec_fallback"]) / seen if seen else 0.0,
                    "filtered_rows": counts.pop("_filtered"),
                    "bad_images": counts.pop("_bad"),
                }
                if is_main:
                    with metrics_path.open("a") as handle:
                        handle.write(json.dumps(last_metrics) + "\n")
                    if writer is not None:
                        for key, value in last_metrics.items():
                            if isinstance(value, (int, float)) and key != "step":
                                writer.add_scalar(f"train/{key}", value, step)
                        for key, value in counts.items():
                            writer.add_scalar(f"captions/{key}", value, step)
                window_loss = torch.zeros((), device=accelerator.device)
                window_steps, window_wait = 0, 0.0
                window_start = time.perf_counter()

            if config.eval_data is not None and (
                (config.eval_every and step % config.eval_every == 0)
                or step == last_stop
                or stopping
            ):
                scores = _evaluate_retrieval(
                    accelerator, model, tokenizer, config, eval_cache, mean, std
                )
                if is_main:
                    last_metrics["eval"] = scores
                    with metrics_path.open("a") as handle:
                        handle.write(json.dumps({"step": step, "eval": scores}) + "\n")
                    if writer is not None:
                        for key, value in scores.items():
                            writer.add_scalar(f"eval/{key}", value, step)

            if step % config.save_every == 0 and step != last_stop and not stopping:
                save(step)
                saved_at = step
    finally:
        stop_request.uninstall()
        del data_iter  # ends the DataLoader workers now, not at garbage collection

    final = checkpoint_root_step(out, step)
    if saved_at != step:
        final = save(step)
    if writer is not None:
        writer.close()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(
        step=step,
        model_dir=final / "model",
        metrics_path=metrics_path,
        last_metrics=last_metrics,
        finished=step >= config.steps,
        main_process=is_main,
    )


def _embed(
    accelerator: Any, model: Any, batch: dict[str, Any], mean: Any, std: Any
) -> tuple[Any, Any]:
    from clip_trainer.transforms import normalize_batch

    device = accelerator.device
    outputs = model(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        pixel_values=normalize_batch(
            batch["pixel_values"].to(device, non_blocking=True), mean, std
        ),
    )
    return outputs.image_embeds, outputs.text_embeds


def contrastive_backward(
    accelerator: Any, model: Any, micro_batches: list[dict[str, Any]], mean: Any, std: Any
) -> Any:
    """Gradients of the CLIP loss over all micro-batches together; returns the loss.

    With one micro-batch this is a plain forward/backward. With several (gradient
    accumulation) it caches every micro-batch's features without gradients first, then
    recomputes one micro-batch at a time with gradients against the cached rest (open_clip's
    ``accum_freq``): the loss sees all K x B x processes negatives, and the summed gradients
    equal those of one big batch. Averaging K small-batch losses instead would train on a
    K-times smaller contrastive batch. The price is one extra forward pass per sample.
    """
    import torch

    core = accelerator.unwrap_model(model)
    if len(micro_batches) == 1:
        image, text = _embed(accelerator, model, micro_batches[0], mean, std)
        loss = clip_loss_fn(image, text, core.logit_scale.exp())
        accelerator.backward(loss)
        return loss
    with torch.no_grad():
        cached = [_embed(accelerator, model, b, mean, std) for b in micro_batches]
    last = len(micro_batches) - 1
    for j, batch in enumerate(micro_batches):
        # DDP all-reduces once, in the last backward; earlier ones only accumulate locally.
        sync = contextlib.nullcontext() if j == last else accelerator.no_sync(model)
        with sync:
            image_j, text_j = _embed(accelerator, model, batch, mean, std)
            images = torch.cat([image_j if i == j else c[0] for i, c in enumerate(cached)])
            texts = torch.cat([text_j if i == j else c[1] for i, c in enumerate(cached)])
            # The temperature's gradient is taken once, in the last (synchronised) pass.
            scale = core.logit_scale.exp() if j == last else core.logit_scale.exp().detach()
            loss = clip_loss_fn(images, texts, scale)
            accelerator.backward(loss)
    return loss


def _evaluate_retrieval(
    accelerator: Any,
    model: Any,
    tokenizer: Any,
    config: TrainConfig,
    cache: dict[str, Any],
    mean: Any,
    std: Any,
) -> dict[str, float]:
    """Retrieval recall on ``config.eval_data``, computed by rank 0 while the others wait."""
    from clip_trainer.evaluate import (
        encode_images,
        encode_texts,
        group_by_image,
        load_retrieval_pairs,
        retrieval_metrics,
    )
    from clip_trainer.model import model_image_size
    from clip_trainer.transforms import EvalTransform, decode_image

    scores: dict[str, float] = {}
    if accelerator.is_main_process:
        core = accelerator.unwrap_model(model)
        if "pairs" not in cache:  # read once per run
            images, captions = load_retrieval_pairs(config.eval_data, config.eval_caption_field)
            if not images:
                raise ValueError(f"eval_data {config.eval_data}: no usable image/caption pairs")
            cache["pairs"] = group_by_image(images, captions)
        images, captions, owner = cache["pairs"]
        transform = EvalTransform(size=model_image_size(core), mean=tuple(mean), std=tuple(std))
        core.eval()
        with accelerator.autocast():
            image_embeds = encode_images(core, (decode_image(b) for b in images), transform)
            text_embeds = encode_texts(core, tokenizer, captions)
        core.train()
        scores = {
            k: v for k, v in retrieval_metrics(image_embeds, text_embeds, owner).items() if "@" in k
        }
    accelerator.wait_for_everyone()
    return scores


class _StopRequest:
    """SIGTERM (preemption, ``kill``) or SIGUSR1 (SLURM's ``--signal`` before the time limit):
    finish the current step, write a checkpoint, return. Nothing paid for is lost."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def install(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals only reach it
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def agreed(self, accelerator: Any) -> bool:
        """True when any process was asked to stop: all ranks must leave the loop together."""
        if accelerator.num_processes == 1:
            return self.requested
        import torch

        flag = torch.tensor(int(self.requested), device=accelerator.device)
        return bool(accelerator.reduce(flag, "sum") > 0)


def checkpoint_root_step(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f"step-{step:08d}"


def _sum_counts(accelerator: Any, progress: DataProgress) -> dict[str, int]:
    """Caption-source and drop counts summed over all processes."""
    import torch

    keys = list(progress.source_counts)
    local = torch.tensor(
        [progress.source_counts[k] for k in keys] + [progress.filtered_rows, progress.bad_images],
        device=accelerator.device,
        dtype=torch.long,
    )
    total = accelerator.reduce(local, "sum").tolist()
    counts = dict(zip(keys, (int(v) for v in total[: len(keys)]), strict=True))
    counts["_filtered"], counts["_bad"] = int(total[-2]), int(total[-1])
    return counts


def _tensorboard_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # tensorboard is in the train extra
        raise ImportError(
            "TensorBoard logging needs `pip install 'vecap[train]'` (tensorboard)"
        ) from exc
    return SummaryWriter(str(log_dir))


__all__ = ["MIXED_PRECISION", "TrainConfig", "TrainResult", "train"]
