"""One explicit set of stop tokens for both backends.

Chat models end a turn with a token that is often *not* the tokenizer's ``eos_token``:
Llama-3-Instruct ends turns with ``<|eot_id|>`` (its tokenizer's eos is ``<|end_of_text|>``, and
early checkpoints' generation config named only that), ChatML/Qwen with ``<|im_end|>``. Left
to their defaults the backends disagree: transformers stops at the generation config's eos,
vLLM at the tokenizer's eos plus the generation config's. Both get this one list instead:
transformers as ``generate(eos_token_id=[...])``, vLLM as ``SamplingParams(stop_token_ids=...)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# end-of-turn markers of the chat families vecap serves (llama-3, chatml/qwen); added when the
# vocabulary has them as one token
END_OF_TURN_TOKENS: tuple[str, ...] = ("<|eot_id|>", "<|im_end|>")


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        return [int(v) for v in value if v is not None]
    return []


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """Token ids that end a completion: the tokenizer's eos, the end-of-turn tokens present in
    its vocabulary, and the generation config's ``eos_token_id`` (an int or a list); ordered,
    without duplicates."""
    ids: list[int] = []
    ids += _ids(getattr(tokenizer, "eos_token_id", None))
    unk = getattr(tokenizer, "unk_token_id", None)
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    for token in END_OF_TURN_TOKENS:
        token_id = vocab.get(token)
        if token_id is not None and token_id != unk:
            ids.append(int(token_id))
    ids += _ids(getattr(generation_config, "eos_token_id", None))
    return list(dict.fromkeys(ids))


def load_generation_config(model: str, trust_remote_code: bool = False) -> Any:
    """The checkpoint's ``generation_config.json`` as a transformers ``GenerationConfig``, or
    None when it has none."""
    from transformers import GenerationConfig as HFGenerationConfig

    try:
        return HFGenerationConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    except OSError:  # no generation_config.json: the tokenizer's eos and end-of-turn tokens
        return None


__all__ = ["END_OF_TURN_TOKENS", "load_generation_config", "stop_token_ids"]
