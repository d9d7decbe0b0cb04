"""The generation layer's config and interface: one :class:`GenerationConfig` for both backends."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pipeline.generation.recovery import DEFAULT_MAX_FAILED_BATCHES

if TYPE_CHECKING:  # keep `import pipeline.generation` free of torch/transformers
    from PIL import Image

BACKENDS = ("transformers", "vllm", "openai")
# backends whose engines are OpenAI-compatible servers: rows stream to them (pipeline.inflight)
SERVER_BACKENDS = ("vllm", "openai")
VLLM_ENGINES = ("server", "offline")
DEFAULT_MAX_IN_FLIGHT = 512  # per engine: twice vLLM's max_num_seqs, so its scheduler is the limit
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9  # one vLLM engine alone on its GPU
MAX_GPU_MEMORY_UTILIZATION = 0.95  # the most all engines of one worker may reserve together
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class GenerationConfig:
    """How to load a model and decode with it; the same for captioning and fusion.

    ``batch_size``/``min_batch_size``/``max_batch_duration_secs`` feed Beam's
    ``batch_elements_kwargs`` (how many rows one ``generate`` call sees).
    """

    model: str  # hub id (llava-hf/llava-1.5-7b-hf) or a local directory
    backend: str = "transformers"
    device: str = "auto"  # auto | cpu | cuda | cuda:N (transformers backend)
    # auto: bfloat16 on GPUs with native bf16, float16 on older ones, float32 on the CPU
    # (pipeline.generation.precision), resolved at launch or on the worker
    dtype: str = "auto"
    max_new_tokens: int = 77
    # stop tokens are ignored until this many new tokens (benchmarks force a fixed length: a
    # random-weight model must not stop early); 0: stop whenever the model ends
    min_new_tokens: int = 0
    do_sample: bool = False  # greedy by default: deterministic, as VeCLIP
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = 0
    batch_size: int = 16  # max rows per generate call
    # None: the same as batch_size, so every generate call (bar a bundle's tail) is a full batch
    # that keeps a GPU busy. Lower it to let Beam's adaptive batching start small and grow.
    min_batch_size: int | None = None
    max_batch_duration_secs: float | None = None
    trust_remote_code: bool = False
    # after this many consecutive batches in which every row failed in the model, the stage
    # raises (EngineFatalError) so the runner retries the bundle on a fresh worker instead of
    # committing shards of failed rows; 0: never
    max_failed_batches: int = DEFAULT_MAX_FAILED_BATCHES
    # vLLM only
    # the share of the GPU this engine may take (vLLM reserves it: weights + KV cache). None:
    # 0.9 alone; a pipeline config splits 0.9 between the vLLM engines of one worker, and
    # rejects explicit shares that add up past 0.95 (pipeline.config.plan_gpu_memory)
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    enforce_eager: bool = False
    load_format: str = "auto"  # vLLM's; "dummy": random weights from config.json (benchmarks)
    max_num_seqs: int | None = None  # vLLM's scheduler cap per step (None: vLLM's default)
    # the memory plan refuses an engine whose KV cache holds fewer of the stage's rows at once
    # (pipeline.generation.memory_plan); 0: only vLLM's own minimum (one max_model_len)
    min_concurrent_sequences: int = 8
    # vllm: "server" (default) runs one OpenAI-compatible server per GPU slot on this machine,
    # shared by every process, fed continuously; "offline" an in-process vllm.LLM per process
    # whose calls are serialised (for a single process without a server)
    vllm_engine: str = "server"
    # server backends: GPUs to run engines on ("0,1,3"; None: every visible GPU), requests each
    # engine gets from one process at a time, and the engines' lifecycle
    gpus: str | None = None
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    server_start_timeout_s: float = 1800.0  # a 7B checkpoint's load, compile and warm-up
    request_timeout_s: float = 600.0
    max_engine_restarts: int = 3  # per GPU slot; past it the bundle fails (EngineFatalError)
    # openai backend: a server fleet the user runs (vLLM, SGLang, ...)
    base_url: str | None = None  # e.g. http://10.0.0.5:8000/v1
    api_key_env: str | None = "OPENAI_API_KEY"  # the environment variable holding the key
    served_model_name: str | None = None  # the name the server knows the model by

    def __post_init__(self) -> None:
        if not self.model or not isinstance(self.model, str):
            raise ValueError("model must be a hub id or a local directory")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError("need 0 <= min_new_tokens <= max_new_tokens")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 (use do_sample=False for greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.min_batch_size is not None and not 1 <= self.min_batch_size <= self.batch_size:
            raise ValueError("need 1 <= min_batch_size <= batch_size")
        if self.max_batch_duration_secs is not None and self.max_batch_duration_secs <= 0:
            raise ValueError("max_batch_duration_secs must be > 0 when set")
        if self.gpu_memory_utilization is not None and not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError("max_model_len must be >= 1 when set")
        if self.max_failed_batches < 0:
            raise ValueError("max_failed_batches must be >= 0 (0: never give the bundle back)")
        if self.tensor_parallel_size < 1:
            raise ValueError("tensor_parallel_size must be >= 1")
        if self.vllm_engine not in VLLM_ENGINES:
            raise ValueError(f"vllm_engine must be one of {VLLM_ENGINES}, got {self.vllm_engine!r}")
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        if self.min_concurrent_sequences < 0:
            raise ValueError("min_concurrent_sequences must be >= 0")
        if self.max_num_seqs is not None and self.max_num_seqs < 1:
            raise ValueError("max_num_seqs must be >= 1 when set")
        if self.max_engine_restarts < 0:
            raise ValueError("max_engine_restarts must be >= 0")
        if not (self.server_start_timeout_s > 0 and self.request_timeout_s > 0):
            raise ValueError("server_start_timeout_s and request_timeout_s must be > 0")
        if self.gpus is not None:
            from pipeline.generation.devices import parse_gpus

            parse_gpus(self.gpus)  # raises GpuSelectionError (a ValueError) with the reason
        # a setting the backend cannot honour is an error, never silently ignored
        if self.backend == "transformers" and self.tensor_parallel_size > 1:
            raise ValueError(
                "tensor_parallel_size is vLLM's; the transformers backend loads one model per "
                "GPU (worker processes claim one each; --gpus chooses them)"
            )
        if self.backend != "transformers" and self.device.startswith("cuda:"):
            raise ValueError(
                f"device={self.device!r} is the transformers backend's; {self.backend} engines "
                "run on the GPUs that --gpus names (generation.gpus)"
            )
        if self.backend == "openai" and self.gpus is not None:
            raise ValueError("gpus places vecap's own engines; an openai fleet places its own")
        if self.backend == "openai":
            if not self.base_url or not self.base_url.startswith(("http://", "https://")):
                raise ValueError("the openai backend needs base_url, e.g. http://host:8000/v1")
        elif self.base_url is not None:
            raise ValueError("base_url is for the openai backend only")

    def ignored_settings(self) -> list[str]:
        """Settings given that this backend does not use (the launcher logs a warning each)."""
        if self.backend != "transformers":
            return []
        vllm_only = {
            "gpu_memory_utilization": self.gpu_memory_utilization is not None,
            "max_model_len": self.max_model_len is not None,
            "max_num_seqs": self.max_num_seqs is not None,
            "enforce_eager": self.enforce_eager,
            "load_format": self.load_format != "auto",
        }
        return [
            f"{name} is vLLM's; the transformers backend ignores it"
            for name, given in vllm_only.items()
            if given
        ]

    @property
    def streams(self) -> bool:
        """Rows go to a server one by one, many in flight (pipeline.inflight), rather than in
        fixed batches through RunInference."""
        return self.backend == "openai" or (self.backend == "vllm" and self.vllm_engine == "server")

    def engine_key(self) -> tuple:
        """What loading depends on (not decoding or batching): configs with equal keys can
        share one loaded engine."""
        return (
            self.model,
            self.backend,
            self.device,
            self.dtype,
            self.trust_remote_code,
            self.gpu_memory_utilization,
            self.max_model_len,
            self.tensor_parallel_size,
            self.enforce_eager,
            self.load_format,
            self.max_num_seqs,
            self.vllm_engine,
            self.gpus,
            self.base_url,
            self.served_model_name,
        )

    def shared_model_tag(self, multimodal: bool) -> str:
        """Beam's ``model_identifier`` for a model shared across processes: stages whose
        configs are equal get one server process (one load); any difference gets its own."""
        import hashlib

        text = repr((sorted(dataclasses.asdict(self).items()), multimodal))
        return "vecap-" + hashlib.blake2b(text.encode(), digest_size=10).hexdigest()

    def batch_elements_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for Beam's ``BatchElements`` (via ``ModelHandler.batch_elements_kwargs``)."""
        kwargs: dict[str, Any] = {
            "min_batch_size": self.batch_size
            if self.min_batch_size is None
            else self.min_batch_size,
            "max_batch_size": self.batch_size,
        }
        if self.max_batch_duration_secs is not None:
            kwargs["max_batch_duration_secs"] = self.max_batch_duration_secs
        return kwargs


@runtime_checkable
class Generator(Protocol):
    """A loaded model that turns fully rendered prompts (and images) into completions."""

    config: GenerationConfig
    multimodal: bool

    @property
    def processor(self) -> Any:
        """The HF processor (multimodal) or tokenizer (text), for :func:`render_chat`."""

    def generate(self, prompts: list[str], images: list[Image.Image] | None = None) -> list[str]:
        """One completion per prompt (only the new text), in input order."""

    def chat(
        self,
        user_texts: list[str],
        *,
        system: str | None = None,
        chat_template: Any = None,
    ) -> list[str]:
        """One completion per user text, rendered through the chat template *in this process*
        (``pipeline.generation.chat.ChatMixin``): what a stage calls through Beam's shared-model
        proxy, which forwards method calls but not attributes such as ``processor``."""


class ModelLoadError(RuntimeError):
    """A checkpoint that cannot be loaded: one line naming the model and the reason."""

    @classmethod
    def wrap(cls, model: str, backend: str, exc: BaseException) -> ModelLoadError:
        if isinstance(exc, ModelLoadError):
            return exc
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        if len(reason) > 400:
            reason = reason[:399] + "\u2026"
        return cls(f"cannot load model {model!r} ({backend} backend): {reason}")


def check_model_reachable(model: str, backend: str) -> None:
    """Fail fast, naming the model, when ``model`` is a local path that does not exist.

    A hub id (``org/name``) is left to the backend's loader (whose errors are wrapped in
    :class:`ModelLoadError` too); a path is anything absolute, relative (``./``, ``../``, ``~``)
    or with a URL scheme.
    """
    import os

    if "://" in model or os.path.isdir(os.path.expanduser(model)):
        return  # a remote URL (the loader says whether it is there) or a local checkpoint
    looks_local = model.startswith(("/", ".", "~")) or model.count("/") > 1
    if looks_local:
        raise ModelLoadError(
            f"cannot load model {model!r} ({backend} backend): no such directory "
            "(give a hub id such as llava-hf/llava-1.5-7b-hf or an existing local checkpoint)"
        )


def check_aligned(prompts: Sequence[str], images: Sequence[Any] | None) -> None:
    """Fail loudly on misaligned inputs rather than caption the wrong image."""
    if images is not None and len(images) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} images")


__all__ = [
    "BACKENDS",
    "DEFAULT_GPU_MEMORY_UTILIZATION",
    "DEFAULT_MAX_IN_FLIGHT",
    "DTYPES",
    "SERVER_BACKENDS",
    "MAX_GPU_MEMORY_UTILIZATION",
    "GenerationConfig",
    "Generator",
    "ModelLoadError",
    "check_aligned",
    "check_model_reachable",
]
