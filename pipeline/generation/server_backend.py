"""Generators whose engines are OpenAI-compatible servers: ``vllm`` (vecap's own, one per GPU)
and ``openai`` (a fleet the user already runs, at ``base_url``).

What runs in this process is light: the checkpoint's processor or tokenizer (its chat template,
stop tokens and image mean; no weights), prompt rendering, image encoding, and the requests.
:meth:`ServerGenerator.submit` returns one future per row, so a stage keeps thousands of rows
in flight (``pipeline.inflight``); :meth:`ServerGenerator.generate` is the same for a batch.

Prompts are the ones vecap renders, as on the offline engines:

- text (fusion, ethics): ``/v1/completions`` with the rendered prompt, tokenized by the server
  with special tokens on, as vLLM's offline ``generate`` does;
- image (captions), ``vllm``: ``/v1/chat/completions`` with the image and a one-line chat
  template, ``{{ vecap_prompt }}``, that emits the prompt vecap rendered (``chat_template_kwargs``),
  tokenized with special tokens on: the model sees exactly the offline path's prompt;
- image, ``openai``: a foreign server need not accept request templates, so the user turn
  (image + text, and the system text) goes as chat messages under the server's own template.

Sampling is sent in full with every request (greedy unless ``do_sample``, the seed, the stop
token ids of :mod:`pipeline.generation.stops`), and vecap's servers start with
``--generation-config vllm``, so no checkpoint default changes decoding behind vecap's back.
"""

from __future__ import annotations

import base64
import concurrent.futures
import copy
import io
import os
from typing import Any

from pipeline.generation.chat import ChatMixin
from pipeline.generation.config import (
    GenerationConfig,
    ModelLoadError,
    check_aligned,
    check_model_reachable,
)
from pipeline.generation.engine_server import SERVER_CMD_ENV, served_name
from pipeline.generation.fleet import Endpoint, Fleet
from pipeline.generation.server_client import EnginePool, completion_text
from pipeline.generation.stops import load_generation_config, stop_token_ids

PROMPT_TEMPLATE = "{{ vecap_prompt }}"  # the chat template that emits vecap's rendered prompt
_FLEETS: dict[tuple, Fleet] = {}


def fleet_for(config: GenerationConfig, multimodal: bool) -> Fleet:
    """This process's handle on a model's machine-wide fleet (one object per load key), its
    dtype resolved as the loader resolves it (a launcher and its workers find one fleet)."""
    from pipeline.generation.fleet import engine_dir
    from pipeline.generation.model_cache import with_local_model
    from pipeline.generation.precision import with_resolved_dtype

    config = with_local_model(with_resolved_dtype(config))

    key = (config.engine_key(), multimodal, engine_dir())
    if key not in _FLEETS:
        _FLEETS[key] = Fleet(config, multimodal=multimodal)
    return _FLEETS[key]


def encode_image(image: Any) -> str:
    """A data URL for a PIL image: PNG (lossless, so the server decodes the very pixels the
    offline engine would get); JPEG bytes as they are."""
    if isinstance(image, bytes):
        return "data:image/jpeg;base64," + base64.b64encode(image).decode("ascii")
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # level 1: 4x faster, 10-20 % larger
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class ServerGenerator(ChatMixin):
    """A model served by OpenAI-compatible servers (see the module doc)."""

    def __init__(self, config: GenerationConfig, *, multimodal: bool) -> None:
        self.config = config
        self.multimodal = multimodal
        if config.backend == "vllm":
            require_vllm_server()
        check_model_reachable(config.model, config.backend)
        try:
            self._processor = _load_processor(config, multimodal)
            tokenizer = getattr(self._processor, "tokenizer", self._processor)
            self.stop_token_ids = stop_token_ids(
                tokenizer, load_generation_config(config.model, config.trust_remote_code)
            )
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError.wrap(config.model, config.backend, exc) from exc
        self.pool = self._pool(config, multimodal)

    def _pool(self, config: GenerationConfig, multimodal: bool) -> EnginePool:
        headers: dict[str, str] = {}
        if config.backend == "openai":
            assert config.base_url is not None  # GenerationConfig checks it
            key = os.environ.get(config.api_key_env or "", "")
            if key:
                headers["Authorization"] = f"Bearer {key}"
            endpoints = [Endpoint("remote", config.base_url.rstrip("/").removesuffix("/v1"), 0)]
            recover = None
        else:
            fleet = fleet_for(config, multimodal)
            endpoints = fleet.ensure()
            recover = fleet.recover
        return EnginePool(
            endpoints,
            max_in_flight=config.max_in_flight,
            recover=recover,
            headers=headers,
            request_timeout_s=config.request_timeout_s,
            name=config.model,
        )

    def with_config(self, config: GenerationConfig) -> ServerGenerator:
        """The same engines decoding with ``config``'s settings."""
        if config.engine_key() != self.config.engine_key():
            raise ValueError("with_config changes decoding settings only, not what is loaded")
        view = copy.copy(self)
        view.config = config
        return view

    @property
    def processor(self) -> Any:
        return self._processor

    # ------------------------------------------------------------------ requests

    def _sampling(self) -> dict[str, Any]:
        cfg = self.config
        body: dict[str, Any] = {
            "model": served_name(cfg),
            "max_tokens": cfg.max_new_tokens,
            "temperature": cfg.temperature if cfg.do_sample else 0.0,
            "top_p": cfg.top_p if cfg.do_sample else 1.0,
            "stop_token_ids": self.stop_token_ids,
            "skip_special_tokens": True,
        }
        if cfg.min_new_tokens:
            body["min_tokens"] = cfg.min_new_tokens
        if cfg.do_sample and cfg.seed is not None:
            body["seed"] = cfg.seed
        return body

    def submit(
        self,
        prompt: str,
        image: Any = None,
        *,
        user_text: str | None = None,
        system: str | None = None,
    ) -> concurrent.futures.Future:
        """One row: a future of the raw response JSON (:func:`completion_text` reads it).
        ``user_text``/``system`` are what a foreign server's own template gets for an image."""
        body = self._sampling()
        if image is None:
            body["prompt"] = prompt
            return self.pool.submit("/v1/completions", body)
        if not self.multimodal:
            raise ValueError("this model was loaded as text-only; an image was given")
        image_part = {"type": "image_url", "image_url": {"url": encode_image(image)}}
        if self.config.backend == "openai":
            messages: list[dict[str, Any]] = []
            if system:
                messages.append({"role": "system", "content": system})
            text = prompt if user_text is None else user_text
            messages.append(
                {"role": "user", "content": [image_part, {"type": "text", "text": text}]}
            )
            body["messages"] = messages
        else:
            body["messages"] = [{"role": "user", "content": [image_part]}]
            body["chat_template"] = PROMPT_TEMPLATE
            body["chat_template_kwargs"] = {"vecap_prompt": prompt}
            body["add_generation_prompt"] = False  # the rendered prompt already ends with it
            body["add_special_tokens"] = True  # BOS as the offline path's tokenization adds it
        return self.pool.submit("/v1/chat/completions", body)

    def generate(self, prompts: list[str], images: list[Any] | None = None) -> list[str]:
        """Every row in flight at once; the completions in input order (raises the first
        row's error, so ``generate_split`` can isolate it)."""
        check_aligned(prompts, images)
        futures = [
            self.submit(p, None if images is None else images[i]) for i, p in enumerate(prompts)
        ]
        return [completion_text(f.result()) for f in futures]

    def stats(self) -> dict[str, Any]:
        return self.pool.stats()


def require_vllm_server() -> None:
    """vecap's servers run ``python -m vllm...`` in this environment: fail here, naming the
    install, rather than with a server that exits at start."""
    import importlib.util

    if os.environ.get(SERVER_CMD_ENV) or importlib.util.find_spec("vllm") is not None:
        return
    from pipeline.generation.vllm_backend import INSTALL_HINT

    raise ImportError(f"No module named 'vllm'; {INSTALL_HINT}")


def _load_processor(config: GenerationConfig, multimodal: bool) -> Any:
    common = {"trust_remote_code": config.trust_remote_code}
    if multimodal:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(config.model, **common)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(config.model, **common)


__all__ = ["PROMPT_TEMPLATE", "ServerGenerator", "encode_image", "fleet_for"]
