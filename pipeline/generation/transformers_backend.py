"""The transformers backend of the generation layer: batched, left-padded ``generate``."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from pipeline.generation.chat import ChatMixin
from pipeline.generation.config import (
    GenerationConfig,
    ModelLoadError,
    check_aligned,
    check_model_reachable,
)
from pipeline.generation.recovery import CallGuard
from pipeline.generation.stops import stop_token_ids

if TYPE_CHECKING:
    from PIL import Image


def resolve_device(device: str, gpus: str | None = None) -> str:
    """``auto``/``cuda``: a GPU of its own for this process where the machine has several
    (``devices.claim_gpu``: N worker processes, N GPUs, one model each); ``cuda:N`` as given."""
    import torch

    if device == "auto" and not torch.cuda.is_available():
        return "cpu"
    if device in ("auto", "cuda"):
        from pipeline.generation.devices import claim_gpu

        position = claim_gpu(gpus) if torch.cuda.device_count() > 1 or gpus else None
        return "cuda" if position is None else f"cuda:{position}"
    return device


def has_native_bf16(device: str) -> bool:
    """The configured CUDA device computes bf16 in hardware: compute capability 8.0 or newer
    (Ampere on). ``torch.cuda.is_bf16_supported()`` also says yes where bf16 is emulated (T4,
    V100: several times slower) and asks the current device, not this one."""
    import torch

    index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index)[0] >= 8


def resolve_dtype(dtype: str, device: str):  # -> torch.dtype
    import torch

    if dtype == "auto":
        # bf16 halves memory and is what LLaVA/Llama checkpoints ship in, where the GPU has it
        # natively; fp16 on older GPUs; CPU keeps fp32 for speed and exactness (tests compare
        # backends token for token)
        if not device.startswith("cuda"):
            return torch.float32
        return torch.bfloat16 if has_native_bf16(device) else torch.float16
    return getattr(torch, dtype)


class TransformersGenerator(ChatMixin):
    """A model loaded once with ``from_pretrained``; :meth:`generate` runs one batched call.

    Calls are serialised by a lock (:class:`~pipeline.generation.recovery.CallGuard`): Beam's
    shared-model server answers each SDK process on its own thread, and one model (its
    tokenizer's padding state, the GPU's memory) serves one batch at a time. A failed call
    frees its tensors and the CUDA cache before the next caller runs; after a CUDA error every
    later call raises ``EngineFatalError``.
    """

    def __init__(self, config: GenerationConfig, *, multimodal: bool) -> None:
        from transformers import (
            AutoModelForCausalLM,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )

        self.config = config
        self.multimodal = multimodal
        self._guard = CallGuard(config.model)
        self.device = resolve_device(config.device, config.gpus)
        self.dtype = resolve_dtype(config.dtype, self.device)
        common = {"trust_remote_code": config.trust_remote_code}
        check_model_reachable(config.model, config.backend)
        try:
            if multimodal:
                self._processor = AutoProcessor.from_pretrained(config.model, **common)
                tokenizer = self._processor.tokenizer
                model_cls = AutoModelForImageTextToText
            else:
                self._processor = AutoTokenizer.from_pretrained(config.model, **common)
                tokenizer = self._processor
                model_cls = AutoModelForCausalLM
            # decoder-only batching: pad on the left so every row's next token is at position -1
            tokenizer.padding_side = "left"
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            self.tokenizer = tokenizer
            # weights go straight to their device in the configured dtype: a device_map of one
            # device needs no accelerate, and no process holds a full fp32 copy in host RAM
            # (each SDK process on a GPU worker would otherwise read the whole checkpoint)
            self.model = model_cls.from_pretrained(
                config.model, dtype=self.dtype, device_map={"": self.device}, **common
            ).eval()
        except Exception as exc:
            raise ModelLoadError.wrap(config.model, config.backend, exc) from exc
        # one explicit stop set (tokenizer eos, <|eot_id|>, <|im_end|>, generation config eos)
        self.stop_token_ids = stop_token_ids(tokenizer, self.model.generation_config)

    @classmethod
    def from_model(
        cls, model: Any, processor: Any, config: GenerationConfig, *, multimodal: bool
    ) -> TransformersGenerator:
        """A generator around a model built in memory (``bench/gpu.py``: a real architecture with
        random weights, no checkpoint); ``model`` must already be on ``config.device``."""
        self = cls.__new__(cls)
        self.config = config
        self.multimodal = multimodal
        self._guard = CallGuard(config.model)
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self._processor = processor
        tokenizer = processor.tokenizer if multimodal else processor
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.model = model.eval()
        self.stop_token_ids = stop_token_ids(tokenizer, model.generation_config)
        return self

    def with_config(self, config: GenerationConfig):
        """This engine (same weights, same lock) decoding with ``config``'s settings."""
        if config.engine_key() != self.config.engine_key():
            raise ValueError("with_config changes decoding settings only, not what is loaded")
        view = copy.copy(self)
        view.config = config
        view._engine = self  # keeps the loaded engine (and its registry entry) alive
        return view

    @property
    def processor(self) -> Any:
        return self._processor

    def _encode(self, prompts: list[str], images: list[Image.Image] | None):
        if self.multimodal:
            if images is None:
                return self._processor(text=prompts, return_tensors="pt", padding=True)
            return self._processor(text=prompts, images=images, return_tensors="pt", padding=True)
        if images is not None:
            raise ValueError("this model was loaded as text-only; images were given")
        # the rendered prompt already holds any template text; special tokens (BOS) as the
        # tokenizer's post-processor defines them, like a single-prompt call would
        return self._processor(prompts, return_tensors="pt", padding=True)

    def generate(self, prompts: list[str], images: list[Image.Image] | None = None) -> list[str]:
        check_aligned(prompts, images)
        if not prompts:
            return []
        # one batch at a time in this model, whoever calls
        return self._guard.call(self._generate, list(prompts), images)

    def _generate(self, prompts: list[str], images: list[Image.Image] | None) -> list[str]:
        import torch

        cfg = self.config
        inputs = self._encode(prompts, images).to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        kwargs: dict[str, Any] = {
            "max_new_tokens": cfg.max_new_tokens,
            "do_sample": cfg.do_sample,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.stop_token_ids,
        }
        if cfg.min_new_tokens:
            kwargs["min_new_tokens"] = cfg.min_new_tokens
        if cfg.do_sample:
            kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p)
            if cfg.seed is not None:
                torch.manual_seed(cfg.seed)  # same batch, same seed -> same samples
        else:  # silence the checkpoint's sampling defaults under greedy
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            output = self.model.generate(**inputs, **kwargs)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


__all__ = ["TransformersGenerator", "has_native_bf16", "resolve_device", "resolve_dtype"]
