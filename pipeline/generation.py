"""The generation layer shared by the captioner (``llava_recap``) and the fusion step (``llm_fusion``).

One config, one loader, two backends:

- ``transformers``: in-process ``from_pretrained`` (hub id or local dir), left padding, batched
  ``generate``, only the new tokens decoded (``pipeline/generation_hf.py``);
- ``vllm``: offline ``vllm.LLM`` with ``SamplingParams`` and ``multi_modal_data`` for images
  (``pipeline/generation_vllm.py``), imported lazily with an error naming the install command.

Callers render prompts themselves with :func:`render_chat` (the model's chat template when it has
one, else a fallback) and get back one string per prompt, aligned with the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # keep `import pipeline.generation` free of torch/transformers
    from PIL import Image

BACKENDS = ("transformers", "vllm")
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
    dtype: str = "auto"  # auto: bfloat16 on CUDA when supported, else float32
    max_new_tokens: int = 77
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
    # vLLM only
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    enforce_eager: bool = False

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
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError("max_model_len must be >= 1 when set")
        if self.tensor_parallel_size < 1:
            raise ValueError("tensor_parallel_size must be >= 1")

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


def load_generator(config: GenerationConfig, multimodal: bool) -> Generator:
    """Load the model named by ``config`` with its backend; ``multimodal`` for image-text models."""
    if config.backend == "vllm":
        from pipeline.generation_vllm import VllmGenerator

        return VllmGenerator(config, multimodal=multimodal)
    from pipeline.generation_hf import TransformersGenerator

    return TransformersGenerator(config, multimodal=multimodal)


def render_chat(
    processor_or_tokenizer: Any,
    user_text: str,
    *,
    image: bool,
    system: str | None = None,
    fallback_template: str,
) -> str:
    """The prompt string for one user turn, ready for the model (generation prompt appended).

    Uses the chat template of the processor or tokenizer when it has one (llava-1.5 renders
    ``USER: <image>\\n... ASSISTANT:``, llava-next and other image-text-to-text models their own);
    otherwise ``fallback_template.format(user=..., system=...)`` — the fallback must then carry
    the model's image placeholder itself when ``image`` is true.
    """
    template = _chat_template(processor_or_tokenizer)
    if template is None:
        return fallback_template.format(user=user_text, system=system or "")
    is_processor = hasattr(processor_or_tokenizer, "tokenizer")
    if image or is_processor:
        # processors' templates expect typed content parts
        content: Any = [{"type": "text", "text": user_text}]
        if image:
            content.insert(0, {"type": "image"})
    else:
        content = user_text
    messages: list[dict[str, Any]] = []
    if system:
        messages.append(
            {"role": "system", "content": [{"type": "text", "text": system}]}
            if is_processor
            else {"role": "system", "content": system}
        )
    messages.append({"role": "user", "content": content})
    text = processor_or_tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    return _without_template_bos(processor_or_tokenizer, text)


def _without_template_bos(processor_or_tokenizer: Any, text: str) -> str:
    """Drop a BOS the chat template wrote when tokenizing will add one anyway.

    Llama 2/3 and Mistral templates start with ``{{ bos_token }}``, and both backends tokenize
    the rendered string with special tokens on (transformers' tokenizer call, vLLM's prompt
    path), which would give two BOS tokens — a known quality loss for those models.
    """
    tokenizer = getattr(processor_or_tokenizer, "tokenizer", processor_or_tokenizer)
    bos = getattr(tokenizer, "bos_token", None)
    if not bos or not text.startswith(bos):
        return text
    added = tokenizer("", add_special_tokens=True)["input_ids"]
    if tokenizer.bos_token_id in added:
        return text[len(bos) :]
    return text


def _chat_template(obj: Any) -> str | None:
    # Only the object's own template: a processor whose template sits on its text tokenizer alone
    # (older checkpoints) would render without the image placeholder, so it takes the fallback.
    return getattr(obj, "chat_template", None) or None


def check_aligned(prompts: Sequence[str], images: Sequence[Any] | None) -> None:
    """Fail loudly on misaligned inputs rather than caption the wrong image."""
    if images is not None and len(images) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(images)} images")


__all__ = [
    "BACKENDS",
    "GenerationConfig",
    "Generator",
    "check_aligned",
    "load_generator",
    "render_chat",
]
