"""A job's GPU plan at launch: resolve what ``auto`` leaves open, then refuse what cannot fit.

Before the job is planned (and paid for) :func:`plan_job_gpus`

1. finds the workers' GPU (``--gpu-type``, Dataflow's accelerator option, or this machine's on
   the local runner: :func:`pipeline.generation.gpu_types.job_gpu`);
2. makes ``dtype: auto`` concrete from that GPU (:mod:`pipeline.generation.precision`), so the
   manifest, the rows and every engine agree; unknown, each worker resolves it from its own;
3. sizes vLLM's ``max_model_len`` to vecap's prompts when it is unset
   (:func:`~pipeline.generation.memory_plan.default_max_model_len`);
4. plans every engine's memory and raises :class:`~pipeline.errors.ConfigError` with the
   plan's one-line refusal when it does not fit (:mod:`pipeline.generation.memory_plan`).

``vecap plan-gpu`` prints the same plan without running anything.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from pipeline.errors import ConfigError
from pipeline.generation.gpu_types import UnknownGpuType, job_gpu
from pipeline.generation.memory_plan import GpuPlan, default_max_model_len, plan_engines
from pipeline.generation.model_footprint import footprint, model_config
from pipeline.generation.precision import dtype_for

log = logging.getLogger(__name__)

_SECTIONS = (("caption", "caption", True), ("ethics", "ethics", False), ("fusion", "fuse", False))


def _resolve(
    gen: Any, multimodal: bool, capability: Any, gpu_known: bool, cache: dict, download: bool
) -> Any:
    changes: dict[str, Any] = {}
    if gen.dtype == "auto" and gen.backend != "openai" and gpu_known:
        changes["dtype"] = dtype_for(capability)
    if gen.backend == "vllm" and gen.max_model_len is None:
        if gen.model not in cache:
            cache[gen.model] = model_config(gen.model, download=download)
        config = cache[gen.model]
        if config is not None:
            fp = footprint(gen.model, config)
            text = config.get("text_config") or config
            changes["max_model_len"] = default_max_model_len(
                fp, gen, multimodal, text.get("max_position_embeddings")
            )
    return dataclasses.replace(gen, **changes) if changes else gen


def _check_dataflow_containers(config: Any, gpu: Any, generations: list[Any]) -> None:
    """Dataflow starts one SDK container per vCPU unless told otherwise; on a GPU worker each
    would start its own engines on the same GPU (containers share no /tmp, so no registry) and
    copy its own weights: refused, naming the flag."""
    from pipeline.runner_options import pipeline_options, runner_name

    if runner_name(pipeline_options(config.run.beam_args)).lower() not in (
        "dataflowrunner",
        "dataflow",
    ):
        return
    if gpu is None or not any(g.backend in ("vllm", "transformers") for g in generations):
        return
    if "no_use_multiple_sdk_containers" in " ".join(config.run.beam_args):
        return
    raise ConfigError(
        "on Dataflow GPU workers pass --experiments=no_use_multiple_sdk_containers: otherwise "
        "each of a VM's SDK containers (one per vCPU) starts its own engines on the same GPU "
        "and copies its own weights"
    )


def plan_job_gpus(config: Any, *, refuse: bool = True) -> tuple[Any, GpuPlan]:
    """``config`` with dtype and max_model_len resolved, and its plan (see the module doc)."""
    from pipeline.runner_options import is_local, pipeline_options

    local = is_local(pipeline_options(config.run.beam_args))
    try:
        gpu, source = job_gpu(config.run.gpu_type, config.run.beam_args, local)
    except UnknownGpuType as e:
        raise ConfigError(str(e)) from e
    # a local machine without a GPU runs its engines on the CPU: that is known too
    known = gpu is not None or (local and source == "unknown")
    capability = gpu.compute_capability if gpu is not None else None
    cache: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    engines: dict[tuple, tuple[list[str], Any, bool]] = {}
    for attr, stage, multimodal in _SECTIONS:
        section = getattr(config, attr, None)
        gen = getattr(section, "generation", None)
        if stage not in config.stages or gen is None:
            continue
        gen = _resolve(gen, multimodal, capability, known, cache, download=gpu is not None)
        sections[attr] = dataclasses.replace(section, generation=gen)
        key = (gen.engine_key(), multimodal)
        if key in engines:
            engines[key][0].append(stage)
        else:
            engines[key] = ([stage], gen, multimodal)
    for stages, gen, _multimodal in engines.values():
        for warning in gen.ignored_settings():
            log.warning("%s: %s", "/".join(stages), warning)
    _check_dataflow_containers(config, gpu, [gen for _s, gen, _m in engines.values()])
    plan = plan_engines(list(engines.values()), gpu, source, cache)
    if refuse and not plan.fits:
        raise ConfigError(f"GPU plan refused: {plan.refusal()} (vecap plan-gpu prints the plan)")
    return dataclasses.replace(config, **sections), plan


__all__ = ["plan_job_gpus"]
