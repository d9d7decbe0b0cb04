"""What makes two rows the same: normalised URLs, and the content keys of the caption cache.

A cache key names everything an output depends on, so an entry made with another model,
prompt, decoding setting, engine (backend/dtype) or image preparation can never match: the
caption key is (image sha256, image preparation, caption model, prompt, decoding, engine); the
fusion key is (visual caption, AltText, fusion model, prompt, rules, decoding, engine, and the
ethics check when the job runs it). No Beam, no torch: the launcher and the workers import it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pipeline.generation.precision import engine_label

_DEFAULT_PORTS = {"http": 80, "https": 443}

# GenerationConfig fields that change what a model writes; the rest (batch sizes, timeouts,
# GPUs, server URLs) only change how fast it is written
DECODING_FIELDS = (
    "model",
    "max_new_tokens",
    "min_new_tokens",
    "do_sample",
    "temperature",
    "top_p",
    "seed",
)
# stage-config fields that change nothing a row gets
_NOT_CONTENT = {
    "generation",
    "retry_failed",
    "inherit_duplicates",
    "share_model_across_processes",
    "isolate_failed_batches",
    "decode_threads",
}


def normalize_url(url: str) -> str:
    """Scheme and host lower-cased, the scheme's default port and the fragment dropped; path,
    query and their case kept (servers treat those as they please). Unparseable URLs come back
    stripped, so they still compare equal to themselves."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}" if userinfo else host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc = f"{netloc}:{port}"
    return urlunsplit((scheme, netloc, parts.path or ("/" if host else ""), parts.query, ""))


def _digest(ident: Any) -> str:
    text = json.dumps(ident, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _content_settings(stage_config: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(stage_config):
        if f.name in _NOT_CONTENT:
            continue
        value = getattr(stage_config, f.name)
        out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out


def generation_settings(generation: Any, engine: str | None = None) -> dict[str, Any]:
    """The decoding settings and the engine label (``engine`` overrides it: what a row
    recorded, when the key is made from a finished row)."""
    out = {name: getattr(generation, name) for name in DECODING_FIELDS}
    out["engine"] = engine or engine_label(generation)
    return out


def caption_settings(caption_config: Any, image_config: Any | None) -> dict[str, Any]:
    """Everything of the job a visual caption depends on, besides the image's bytes."""
    return {
        "caption": _content_settings(caption_config),
        "image": dataclasses.asdict(image_config) if image_config is not None else None,
    }


def caption_key(
    sha256: str, settings: dict[str, Any], generation: Any, engine: str | None = None
) -> str:
    return _digest(["caption", sha256, settings, generation_settings(generation, engine)])


def fusion_settings(fusion_config: Any | None, ethics_config: Any | None) -> dict[str, Any]:
    """Everything a fused caption and its ethics verdict depend on, besides caption and AltText."""
    ethics = None
    if ethics_config is not None and getattr(ethics_config, "enabled", False):
        ethics = _content_settings(ethics_config)
        if ethics_config.generation is not None:
            ethics["llm"] = generation_settings(ethics_config.generation)
    return {
        "fusion": _content_settings(fusion_config) if fusion_config is not None else None,
        "ethics": ethics,
    }


def fusion_key(
    visual_caption: str | None,
    alt_text: str | None,
    settings: dict[str, Any],
    generation: Any | None,
    engine: str | None = None,
) -> str:
    gen = generation_settings(generation, engine) if generation is not None else None
    return _digest(["fusion", visual_caption, alt_text, settings, gen])


__all__ = [
    "DECODING_FIELDS",
    "caption_key",
    "caption_settings",
    "fusion_key",
    "fusion_settings",
    "generation_settings",
    "normalize_url",
]
