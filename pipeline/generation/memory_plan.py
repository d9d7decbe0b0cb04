"""The GPU memory plan, decided at launch: does every engine of the job fit the GPU it gets?

vLLM reserves ``gpu_memory_utilization x GPU memory`` per engine, loads the weights into it,
profiles one step's activations, and keeps the rest as KV cache; the engine refuses to start
when the cache holds less than one ``max_model_len`` sequence, and a cache of a handful of
sequences starves the GPU (it decodes a few rows at a time while the bill runs). The plan
computes, per engine, from the checkpoint's config (:mod:`pipeline.generation.model_footprint`)
and the job's GPU (:mod:`pipeline.generation.gpu_types`)::

    budget   = gpu_memory_utilization x GPU memory x tensor_parallel_size
    headroom = CUDA context + CUDA graphs + activations of one profiled step
    kv       = budget - weights - headroom          -> tokens -> sequences at once

and refuses, in one line naming the way out, a plan whose weights do not fit, whose cache holds
less than ``max_model_len`` tokens, or fewer than ``min_concurrent_sequences`` of the stage's
typical sequences. The transformers backend reserves nothing: all its models of one process sit
on one GPU with their batch's KV cache and activations, within 95 % of it.

The figures are estimates with stated constants: the weights exact (or within a percent), the
headroom within a GB. A GPU that is not known is not refused (the plan says how to name it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.generation.config import DEFAULT_GPU_MEMORY_UTILIZATION, GenerationConfig
from pipeline.generation.gpu_types import CUDA_BUILD, MIN_DRIVER, GpuSpec
from pipeline.generation.model_footprint import (
    DTYPE_BYTES,
    ModelFootprint,
    footprint,
    model_config,
)
from pipeline.generation.precision import dtype_for

GIB = 1024**3
CUDA_CONTEXT_GIB = 1.0  # per engine process: CUDA context, cuBLAS and NCCL workspaces
CUDA_GRAPHS_GIB = 0.5  # vLLM's captured decode graphs (none with enforce_eager)
PROFILE_TOKENS = 8192  # vLLM's max_num_batched_tokens: the step it profiles activations with
PROFILE_SEQS = 256  # vLLM's max_num_seqs: logits of this many rows in one step
TRANSFORMERS_SHARE = 0.95  # of the GPU the transformers backend's models may fill together
# prompt tokens besides the image and the data: LLaVA's chat template and caption prompt; the
# fusion and ethics prompts with an AltText and a visual caption in them
CAPTION_PROMPT_TOKENS = 64
TEXT_PROMPT_TOKENS = 320
# room above the typical prompt in the default max_model_len (a long AltText, a longer prompt)
CAPTION_PROMPT_ROOM = 192
TEXT_PROMPT_ROOM = 768


def typical_tokens(fp: ModelFootprint, gen: GenerationConfig, multimodal: bool) -> int:
    """One row's sequence (prompt and answer) for this stage, as the plan counts it."""
    if multimodal:
        return fp.image_tokens + CAPTION_PROMPT_TOKENS + gen.max_new_tokens
    return TEXT_PROMPT_TOKENS + gen.max_new_tokens


def default_max_model_len(
    fp: ModelFootprint, gen: GenerationConfig, multimodal: bool, checkpoint_len: int | None
) -> int:
    """Sized to vecap's prompts rather than the checkpoint's 4,096: KV cache for real rows."""
    room = fp.image_tokens + CAPTION_PROMPT_ROOM if multimodal else TEXT_PROMPT_ROOM
    length = -(-(room + gen.max_new_tokens) // 256) * 256
    return min(length, checkpoint_len) if checkpoint_len else length


def _activation_bytes(fp: ModelFootprint, dtype: str, tokens: int, seqs: int) -> int:
    b = DTYPE_BYTES[dtype]
    decoder = tokens * (2 * fp.intermediate_size + 4 * fp.hidden_size) * b
    logits = seqs * fp.vocab_size * 4  # the sampler works in fp32
    vision = 0
    if fp.image_tokens:
        images = max(1, tokens // fp.image_tokens)
        vision = (
            images
            * (fp.image_tokens + 1)
            * (fp.vision_intermediate_size + 4 * fp.vision_hidden_size)
            * b
        )
    return decoder + logits + vision


@dataclass
class EnginePlan:
    """One engine (one model, its stages) on its GPU(s); sizes in GiB."""

    stages: list[str]
    model: str
    backend: str
    dtype: str
    multimodal: bool
    gpus: int  # GPUs per engine (tensor_parallel_size)
    share: float | None  # vLLM's gpu_memory_utilization
    max_model_len: int | None
    typical_tokens: int
    weights_gib: float = 0.0
    headroom_gib: float = 0.0
    budget_gib: float = 0.0
    kv_gib: float = 0.0
    kv_tokens: int = 0
    sequences: int = 0  # typical sequences the KV cache holds at once
    parameters: int = 0
    exact: bool = False
    sized: bool = True  # False: its config.json could not be read here
    problem: str | None = None

    @property
    def name(self) -> str:
        return "/".join(self.stages)


@dataclass
class GpuPlan:
    gpu: GpuSpec | None
    source: str  # where the GPU type was learnt (gpu_types.job_gpu)
    engines: list[EnginePlan] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems

    def refusal(self) -> str | None:
        """The one line a refused job prints: the first problem and the ways out."""
        if not self.problems:
            return None
        return self.problems[0]

    def lines(self) -> list[str]:
        """The plan as ``vecap plan-gpu`` prints it."""
        g = self.gpu
        if g is None:
            head = (
                "GPU: unknown (name it with --gpu-type, e.g. l4, a100-80gb, h100-80gb; Dataflow's "
                "worker_accelerator option names it too): nothing checked against GPU memory"
            )
        else:
            cc = ".".join(map(str, g.compute_capability))
            head = (
                f"GPU: {g.name} x{g.count}, {g.memory_gib:.1f} GiB, compute capability {cc} "
                f"(from {self.source}); worker image: CUDA {CUDA_BUILD}, NVIDIA driver >= "
                f"{MIN_DRIVER}"
            )
        out = [head]
        for e in self.engines:
            where = f"{e.backend}/{e.dtype}" + (f", tp={e.gpus}" if e.gpus > 1 else "")
            if not e.sized:
                out.append(f"  {e.name}: {e.model} ({where}): not sized (no config.json here)")
                continue
            weights = f"{e.parameters / 1e9:.2f} B params{'' if e.exact else ' (est.)'}"
            line = f"  {e.name}: {e.model} ({where}): {weights}, weights {e.weights_gib:.1f} GiB"
            if g is not None:
                if e.share is not None:
                    kv = (
                        f"KV cache {e.kv_gib:.1f} GiB = {e.kv_tokens} tokens = {e.sequences} "
                        f"rows of {e.typical_tokens} tokens at once"
                        if e.kv_gib > 0
                        else "no room for a KV cache"
                    )
                    line += (
                        f", share {e.share:.2f} = {e.budget_gib:.1f} GiB, headroom "
                        f"{e.headroom_gib:.1f} GiB, {kv}, max_model_len {e.max_model_len}"
                    )
                else:
                    line += (
                        f" + batch KV and activations {e.headroom_gib:.1f} GiB of "
                        f"{e.budget_gib:.1f} GiB"
                    )
            out.append(line)
        out += [f"  refused: {p}" for p in self.problems]
        if g is not None and not self.problems:
            out.append("  fits")
        return out

    def summary(self) -> dict[str, Any]:
        """For the manifest."""
        return {
            "gpu": dataclasses.asdict(self.gpu) if self.gpu else None,
            "gpu_source": self.source,
            "engines": [dataclasses.asdict(e) for e in self.engines],
            "fits": self.fits,
        }


TWO_JOBS = "run two jobs, each model alone on its GPU (--stages download,caption, then --from OUT --stages fuse)"


def _ways_out(e: EnginePlan, gpu: GpuSpec | None, why: str) -> str:
    """What to change, for a problem of this kind (weights, max_model_len, rows at once)."""
    ways = [TWO_JOBS, "a larger GPU (--gpu-type)"]
    if gpu is not None and gpu.count > 1:
        ways.append(
            "one model per GPU of the machine (--set caption.generation.gpus=0 --set "
            "fusion.generation.gpus=1)"
        )
    if e.backend == "transformers":
        ways.append("a smaller batch (--caption-batch-size / --fusion-batch-size)")
    elif why == "weights":
        ways.append("tensor_parallel_size=2 (--set <stage>.generation.tensor_parallel_size=2)")
    elif why == "max_model_len":
        ways.append("a smaller max_model_len (--set <stage>.generation.max_model_len=N)")
    else:
        ways.append("accept it (--set <stage>.generation.min_concurrent_sequences=N)")
    return ", ".join(ways[:-1]) + " or " + ways[-1]


def _gpu_problem(gpu: GpuSpec) -> str | None:
    if gpu.supported:
        return None
    cc = ".".join(map(str, gpu.compute_capability))
    return (
        f"{gpu.name} (compute capability {cc}) is not supported by the worker image's torch "
        f"(CUDA {CUDA_BUILD} has no kernels below 7.5: no Pascal or Volta); use T4, L4, A10G, "
        "L40S, A100, H100 or H200 GPUs"
    )


def plan_engines(
    engines: Sequence[tuple[list[str], GenerationConfig, bool]],
    gpu: GpuSpec | None,
    source: str,
    configs: dict[str, dict[str, Any] | None] | None = None,
) -> GpuPlan:
    """Plan ``(stages, config, multimodal)`` engines on ``gpu``; ``configs`` maps a model to
    its config.json (read with :func:`model_config` when absent)."""
    plan = GpuPlan(gpu, source)
    if gpu is not None and (problem := _gpu_problem(gpu)):
        plan.problems.append(problem)
    in_process: list[EnginePlan] = []  # transformers models share one process's GPU
    for stages, gen, multimodal in engines:
        if gen.backend == "openai":
            continue  # a fleet the user runs: its memory is its own
        # the hub is asked for a config only when there is a GPU to size it against
        config = (
            (configs or {}).get(gen.model)
            if configs and gen.model in configs
            else (model_config(gen.model, download=gpu is not None))
        )
        # auto on an unknown GPU: each worker resolves it; sized as the 2-byte dtypes of GPUs
        dtype = gen.dtype
        if dtype == "auto":
            dtype = dtype_for(gpu.compute_capability) if gpu else "bfloat16"
        e = EnginePlan(
            stages=list(stages),
            model=gen.model,
            backend=gen.backend,
            dtype=dtype if gen.dtype != "auto" or gpu else "auto",
            multimodal=multimodal,
            gpus=gen.tensor_parallel_size,
            share=(gen.gpu_memory_utilization or DEFAULT_GPU_MEMORY_UTILIZATION)
            if gen.backend == "vllm"
            else None,
            max_model_len=gen.max_model_len,
            typical_tokens=0,
        )
        plan.engines.append(e)
        if config is None:
            e.sized = False
            continue
        fp = footprint(gen.model, config)
        e.parameters, e.exact = fp.parameters, fp.exact
        e.typical_tokens = typical_tokens(fp, gen, multimodal)
        e.weights_gib = fp.weight_bytes(dtype) / GIB
        if gen.backend == "vllm":
            _size_vllm(e, fp, gen, gpu, dtype)
        else:
            _size_transformers(e, fp, gen, dtype)
            in_process.append(e)
        if e.problem:
            plan.problems.append(e.problem)
    if gpu is not None and in_process:
        needed = sum(e.weights_gib + e.headroom_gib for e in in_process) + CUDA_CONTEXT_GIB
        budget = TRANSFORMERS_SHARE * gpu.memory_gib
        for e in in_process:
            e.budget_gib = budget
        if needed > budget:
            names = " + ".join(f"{e.name} {e.weights_gib + e.headroom_gib:.1f}" for e in in_process)
            plan.problems.append(
                f"the transformers models of one worker process need {needed:.1f} GiB on one "
                f"GPU ({names} + CUDA context {CUDA_CONTEXT_GIB:.1f}) but {gpu.name} gives "
                f"{budget:.1f} GiB; {_ways_out(in_process[0], gpu, 'weights')}"
            )
    return plan


def transformers_batch_bytes(
    fp: ModelFootprint, gen: GenerationConfig, dtype: str, multimodal: bool
) -> int:
    """One ``generate`` call's KV cache and activations beyond the weights (what
    ``torch.cuda.max_memory_allocated`` adds to them; bench/gpu.py prints both)."""
    tokens = gen.batch_size * typical_tokens(fp, gen, multimodal)
    kv = tokens * fp.kv_bytes_per_token(dtype)
    return kv + _activation_bytes(fp, dtype, tokens, gen.batch_size)


def _size_transformers(
    e: EnginePlan, fp: ModelFootprint, gen: GenerationConfig, dtype: str
) -> None:
    e.headroom_gib = transformers_batch_bytes(fp, gen, dtype, e.multimodal) / GIB


def _size_vllm(
    e: EnginePlan, fp: ModelFootprint, gen: GenerationConfig, gpu: GpuSpec | None, dtype: str
) -> None:
    tp = gen.tensor_parallel_size
    seqs = gen.max_num_seqs or PROFILE_SEQS
    graphs = 0.0 if gen.enforce_eager else CUDA_GRAPHS_GIB
    activation = _activation_bytes(fp, dtype, PROFILE_TOKENS, seqs) / GIB
    e.headroom_gib = tp * (CUDA_CONTEXT_GIB + graphs) + activation
    if gpu is None:
        return
    e.budget_gib = (e.share or 0) * gpu.memory_gib * tp
    e.kv_gib = e.budget_gib - e.weights_gib - e.headroom_gib
    e.kv_tokens = max(0, int(e.kv_gib * GIB // fp.kv_bytes_per_token(dtype)))
    e.sequences = e.kv_tokens // max(1, e.typical_tokens)
    where = (
        f"{e.share:.2f} of {gpu.name}'s {gpu.memory_gib:.1f} GiB"
        + (f" x{tp}" if tp > 1 else "")
        + f" = {e.budget_gib:.1f} GiB"
    )
    if e.kv_gib <= 0:
        e.problem = (
            f"{e.name} engine ({e.model}, {e.dtype}) needs {e.weights_gib:.1f} GiB of weights + "
            f"{e.headroom_gib:.1f} GiB of headroom but gets {where}; {_ways_out(e, gpu, 'weights')}"
        )
    elif e.max_model_len and e.kv_tokens < e.max_model_len:
        e.problem = (
            f"{e.name} engine ({e.model}): {where} leaves a KV cache of {e.kv_tokens} tokens, less "
            f"than max_model_len {e.max_model_len} (vLLM will not start); "
            f"{_ways_out(e, gpu, 'max_model_len')}"
        )
    elif e.sequences < gen.min_concurrent_sequences:
        e.problem = (
            f"{e.name} engine ({e.model}): {where} leaves a KV cache of {e.kv_gib:.1f} GiB, "
            f"{e.sequences} rows at once (fewer than min_concurrent_sequences="
            f"{gen.min_concurrent_sequences}: the GPU would mostly wait); "
            f"{_ways_out(e, gpu, 'rows')}"
        )


__all__ = [
    "CUDA_CONTEXT_GIB",
    "CUDA_GRAPHS_GIB",
    "EnginePlan",
    "GpuPlan",
    "default_max_model_len",
    "plan_engines",
    "transformers_batch_bytes",
    "typical_tokens",
]
