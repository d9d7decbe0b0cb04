"""Text tokenizers for CLIP: CLIP's BPE or T5 from a local directory, or a tiny BPE trained
offline (for tests and demos; nothing is ever downloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TOKENIZER_KINDS = ("auto", "clip", "t5")

BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "<|pad|>"

# Enough everyday caption words that byte-level BPE learns whole-word merges for them; any
# other text still tokenizes (byte fallback), just into more pieces.
_TINY_CORPUS = [
    "a",
    "an",
    "the",
    "of",
    "in",
    "on",
    "at",
    "with",
    "and",
    "or",
    "to",
    "from",
    "by",
    "for",
    "under",
    "over",
    "near",
    "next",
    "behind",
    "front",
    "top",
    "bottom",
    "left",
    "right",
    "middle",
    "center",
    "small",
    "large",
    "big",
    "tiny",
    "little",
    "huge",
    "round",
    "square",
    "long",
    "short",
    "tall",
    "wide",
    "bright",
    "dark",
    "light",
    "red",
    "green",
    "blue",
    "yellow",
    "orange",
    "purple",
    "pink",
    "brown",
    "black",
    "white",
    "gray",
    "grey",
    "gold",
    "silver",
    "cyan",
    "magenta",
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "diamond",
    "heart",
    "rectangle",
    "line",
    "dot",
    "stripe",
    "shape",
    "shapes",
    "pattern",
    "photo",
    "picture",
    "image",
    "drawing",
    "painting",
    "illustration",
    "close",
    "up",
    "view",
    "background",
    "foreground",
    "scene",
    "object",
    "man",
    "woman",
    "person",
    "people",
    "child",
    "boy",
    "girl",
    "dog",
    "cat",
    "bird",
    "horse",
    "car",
    "bus",
    "bike",
    "train",
    "boat",
    "plane",
    "tree",
    "flower",
    "grass",
    "sky",
    "cloud",
    "sun",
    "water",
    "sea",
    "beach",
    "river",
    "mountain",
    "road",
    "street",
    "city",
    "house",
    "building",
    "room",
    "table",
    "chair",
    "food",
    "plate",
    "cup",
    "bottle",
    "book",
    "phone",
    "computer",
    "sign",
    "text",
    "logo",
    "shirt",
    "dress",
    "hat",
    "shoe",
    "bag",
    "ball",
    "toy",
    "game",
    "sitting",
    "standing",
    "walking",
    "running",
    "playing",
    "holding",
    "wearing",
    "looking",
    "eating",
    "drinking",
    "riding",
    "flying",
    "is",
    "are",
    "was",
    "has",
    "have",
    "two",
    "three",
    "four",
    "five",
    "many",
    "some",
    "one",
    "several",
    "there",
    "this",
    "that",
    "it",
    "its",
]


def build_tiny_tokenizer(out_dir: str | Path, vocab_size: int = 1024) -> Path:
    """Train a byte-level BPE on a built-in word list and save it as a transformers tokenizer.

    Deterministic (same words, same merges), offline, a few milliseconds. Adds CLIP-style
    ``<|startoftext|>`` / ``<|endoftext|>`` around every text, so CLIP's EOS pooling works.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    out = Path(out_dir)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        # EOS must not get id 2: transformers' CLIP reads eos_token_id == 2 as a legacy config
        # and pools at the largest token id instead of at the EOS.
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeat the corpus so frequent words win merges over rare byte pairs.
    tok.train_from_iterator([" ".join(_TINY_CORPUS)] * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} $B {EOS}",
        special_tokens=[(BOS, tok.token_to_id(BOS)), (EOS, tok.token_to_id(EOS))],
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=77
    )
    out.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(out))
    return out


def load_tokenizer(path: str | Path, kind: str = "auto") -> Any:
    """Load a tokenizer from a local directory: ``clip`` (CLIP BPE), ``t5``, or ``auto`` (whatever
    the directory's config names). Makes sure it has EOS and padding, which CLIP pooling needs."""
    from transformers import AutoTokenizer, CLIPTokenizerFast

    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"tokenizer kind must be one of {TOKENIZER_KINDS}, got {kind!r}")
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"tokenizer directory {str(path)!r} not found (vecap never downloads: pass a local "
            "directory holding tokenizer files, or 'tiny')"
        )
    if kind == "clip":
        tokenizer = CLIPTokenizerFast.from_pretrained(str(directory))
    else:  # t5 and auto: AutoTokenizer reads tokenizer_config.json (T5 ships SentencePiece/Unigram)
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer in {directory} has no EOS token; CLIP pools at the EOS token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # CLIP's own convention: pad with EOS
    return tokenizer


def tokenizer_special_ids(tokenizer: Any) -> dict[str, int]:
    """The ids a CLIP text config needs from its tokenizer."""
    bos = tokenizer.bos_token_id
    return {
        "vocab_size": len(tokenizer),
        "eos_token_id": int(tokenizer.eos_token_id),
        "pad_token_id": int(tokenizer.pad_token_id),
        # T5 has no BOS; CLIP's config still wants an id, and it is never used for pooling.
        "bos_token_id": int(bos) if bos is not None else int(tokenizer.pad_token_id),
    }


__all__ = ["TOKENIZER_KINDS", "build_tiny_tokenizer", "load_tokenizer", "tokenizer_special_ids"]
