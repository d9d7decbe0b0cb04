"""Zero-shot evaluation of any HF ``CLIPModel`` directory (ours or VeCLIP's).

* Retrieval: image->text and text->image recall@1/5/10 over image/caption pairs from a parquet
  (vecap shards, or any parquet with image bytes and a caption column) or a folder of images
  with captions (``name.jpg`` + ``name.txt`` side files, or a ``captions.jsonl``/``.csv``/``.tsv``
  table of ``file``/``image`` and ``caption``/``text``).
* Classification: an ImageFolder layout (one subfolder per class); class embeddings are the mean
  of prompt-template embeddings (CLIP's prompt ensembling); top-1 / top-5 accuracy.

Rows that carry the same image bytes are one image with several captions (COCO's protocol).
Ties count against the model: a correct item's rank is the number of *other* candidates that
score at least as high. A collapsed model that maps everything to one vector therefore scores
recall 0 below k = N, instead of whatever index order would give it.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clip_trainer.transforms import EvalTransform, decode_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")

# OpenAI's short ImageNet ensemble (from the CLIP prompt-engineering notebook's best 7) + the
# plain prompt. Pass your own with --templates FILE (one "{}"-template per line).
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


@dataclass(frozen=True)
class EvalConfig:
    model: str  # CLIPModel directory
    tokenizer: str | None = None  # default: the tokenizer saved in the model directory
    retrieval: str | None = None  # parquet file/dir/glob, or a folder of images + captions
    caption_field: str = "fused_caption"  # caption column for parquet retrieval sets
    image_column: str = "jpg"
    zeroshot: str | None = None  # ImageFolder root for classification
    classnames: str | None = None  # optional file: "folder<TAB>class name" or one name per line
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    batch_size: int = 64
    device: str = "auto"
    max_items: int | None = None  # cap the retrieval set (first N pairs)

    def __post_init__(self) -> None:
        object.__setattr__(self, "templates", tuple(self.templates))
        if self.retrieval is None and self.zeroshot is None:
            raise ValueError("nothing to evaluate: give a retrieval set and/or a zero-shot folder")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError("every template needs a '{}' placeholder for the class name")
        if self.max_items is not None and self.max_items < 1:
            raise ValueError("max_items must be >= 1")


# -- metrics (pure functions, hand-checkable) --


def retrieval_metrics(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    text_to_image: Sequence[int] | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@k both ways. ``text_to_image[j]`` is the image caption j describes (default: j).

    Image->text counts a hit when any of the image's captions ranks within k.
    """
    n_images, n_texts = image_embeds.shape[0], text_embeds.shape[0]
    owner = torch.arange(n_texts) if text_to_image is None else torch.as_tensor(list(text_to_image))
    if owner.shape[0] != n_texts:
        raise ValueError("text_to_image needs one image index per text")
    if n_texts == 0 or n_images == 0:
        raise ValueError("retrieval needs at least one image and one text")
    scores = image_embeds.float() @ text_embeds.float().t()  # [images, texts]
    # text -> image: rank of the right image among all images
    right = scores[owner, torch.arange(n_texts)]  # [texts]
    t2i_rank = (scores.t() >= right[:, None]).sum(dim=1) - 1
    # image -> text: best rank over the image's own captions
    own = owner[None, :] == torch.arange(n_images)[:, None]  # [images, texts]
    if not bool(own.any(dim=1).all()):
        raise ValueError("every image needs at least one caption")
    # Rank of each caption among all captions for its own image, then the best per image;
    # in chunks so COCO-sized sets (25k captions) never build a texts x texts matrix.
    caption_rank = torch.empty(n_texts, dtype=torch.long)
    for start in range(0, n_texts, 1024):
        idx = torch.arange(start, min(start + 1024, n_texts))
        rows = scores[owner[idx]]  # [chunk, texts]
        caption_rank[idx] = (rows >= rows[torch.arange(len(idx)), idx][:, None]).sum(dim=1) - 1
    i2t_rank = torch.full((n_images,), n_texts, dtype=torch.long)
    i2t_rank = i2t_rank.scatter_reduce(0, owner, caption_rank, reduce="amin")
    out = {}
    for k in ks:
        out[f"image_to_text_R@{k}"] = float((i2t_rank < k).float().mean())
        out[f"text_to_image_R@{k}"] = float((t2i_rank < k).float().mean())
    out["n_images"], out["n_texts"] = float(n_images), float(n_texts)
    return out


def topk_accuracy(
    logits: torch.Tensor, labels: Sequence[int], ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Top-k accuracy, ties counted against the model (see module docstring)."""
    target = torch.as_tensor(list(labels))
    right = logits[torch.arange(len(target)), target]
    rank = (logits >= right[:, None]).sum(dim=1) - 1
    return {f"top{k}": float((rank < k).float().mean()) for k in ks}


# -- encoding --


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _features(output: Any) -> torch.Tensor:
    # transformers 5 returns a ModelOutput whose pooler_output is the projected embedding.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@torch.no_grad()
def encode_images(
    model: Any, images: Iterable[Any], transform: EvalTransform, batch_size: int = 64
) -> torch.Tensor:
    """L2-normalised image embeddings, in input order; ``images`` are PIL images."""
    device = next(model.parameters()).device
    chunks, batch = [], []
    for image in images:
        batch.append(transform(image))
        if len(batch) == batch_size:
            chunks.append(
                _features(
                    model.get_image_features(pixel_values=torch.stack(batch).to(device))
                ).float()
            )
            batch = []
    if batch:
        chunks.append(
            _features(model.get_image_features(pixel_values=torch.stack(batch).to(device))).float()
        )
    return torch.nn.functional.normalize(torch.cat(chunks), dim=-1).cpu()


@torch.no_grad()
def encode_texts(
    model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 256
) -> torch.Tensor:
    """L2-normalised text embeddings, truncated to the model's context length."""
    device = next(model.parameters()).device
    context = int(model.config.text_config.max_position_embeddings)
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(
            list(texts[start : start + batch_size]),
            padding="longest",
            truncation=True,
            max_length=context,
            return_tensors="pt",
        )
        feats = model.get_text_features(
            input_ids=tokens["input_ids"].to(device),
            attention_mask=tokens["attention_mask"].to(device),
        )
        chunks.append(_features(feats).float())
    return torch.nn.functional.normalize(torch.cat(chunks), dim=-1).cpu()


@torch.no_grad()
def zero_shot_classifier(
    model: Any, tokenizer: Any, classnames: Sequence[str], templates: Sequence[str]
) -> torch.Tensor:
    """[classes, dim] class embeddings: normalised mean of the normalised template embeddings."""
    texts = [t.format(name) for name in classnames for t in templates]
    embeds = encode_texts(model, tokenizer, texts).view(len(classnames), len(templates), -1)
    return torch.nn.functional.normalize(embeds.mean(dim=1), dim=-1)


# -- data sets --


def load_retrieval_pairs(
    source: str,
    caption_field: str = "fused_caption",
    image_column: str = "jpg",
    max_items: int | None = None,
) -> tuple[list[bytes], list[str]]:
    """(image bytes, captions) from a parquet source or an image folder; rows without an image
    or caption (or with a status other than ok/success) are skipped."""
    path = Path(source)
    if path.is_dir() and not _looks_like_parquet_dir(path):
        return _folder_pairs(path, max_items)

    from clip_trainer.data import find_parquet_files, open_parquet

    images, captions = [], []
    for file in find_parquet_files([source]):
        with open_parquet(file) as parquet:
            names = parquet.schema_arrow.names
            if image_column not in names or caption_field not in names:
                raise ValueError(
                    f"{file} needs columns {image_column!r} and {caption_field!r}; has {names}"
                )
            columns = [image_column, caption_field] + (["status"] if "status" in names else [])
            for batch in parquet.iter_batches(columns=columns, batch_size=1024):
                for row in batch.to_pylist():
                    caption = (row[caption_field] or "").strip()
                    if (
                        not row[image_column]
                        or not caption
                        or row.get("status", "ok") not in ("ok", "success")
                    ):
                        continue
                    images.append(row[image_column])
                    captions.append(caption)
                    if max_items is not None and len(images) >= max_items:
                        return images, captions
    return images, captions


def group_by_image(
    images: Sequence[bytes], captions: Sequence[str]
) -> tuple[list[bytes], list[str], list[int]]:
    """(distinct images, captions, caption -> image index): rows that carry the same image bytes
    are one image with several captions, the COCO/Flickr protocol (5 captions per image)."""
    import hashlib

    index: dict[bytes, int] = {}
    unique: list[bytes] = []
    owner: list[int] = []
    for data in images:
        key = hashlib.sha1(data).digest()
        if key not in index:
            index[key] = len(unique)
            unique.append(data)
        owner.append(index[key])
    return unique, list(captions), owner


def _looks_like_parquet_dir(path: Path) -> bool:
    return (path / "shards").is_dir() or any(path.glob("*.parquet"))


def _folder_pairs(folder: Path, max_items: int | None) -> tuple[list[bytes], list[str]]:
    table = _caption_table(folder)
    images, captions = [], []
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    for file in files:
        texts = table.get(file.name, []) if table is not None else []
        if not texts and file.with_suffix(".txt").exists():
            texts = [file.with_suffix(".txt").read_text(encoding="utf-8")]
        data = None
        for caption in (t.strip() for t in texts):
            if not caption:
                continue
            data = data if data is not None else file.read_bytes()
            images.append(data)
            captions.append(caption)
            if max_items is not None and len(images) >= max_items:
                return images, captions
    if not images:
        raise ValueError(
            f"{folder}: no images with captions (need NAME.txt beside each image or a captions.jsonl/csv/tsv)"
        )
    return images, captions


def _caption_table(folder: Path) -> dict[str, list[str]] | None:
    """file name -> captions; a file may appear on several rows (COCO: five captions each)."""
    for name in ("captions.jsonl", "captions.csv", "captions.tsv"):
        path = folder / name
        if not path.exists():
            continue
        if name.endswith(".jsonl"):
            rows = [
                json.loads(line)
                for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()
            ]
        else:
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(
                    csv.DictReader(handle, delimiter="\t" if name.endswith(".tsv") else ",")
                )
        table: dict[str, list[str]] = {}
        for row in rows:
            file = row.get("file") or row.get("image") or row.get("filename")
            caption = row.get("caption") or row.get("text")
            if file is None or caption is None:
                raise ValueError(f"{path}: each row needs file/image and caption/text")
            table.setdefault(str(file), []).append(str(caption))
        return table
    return None


def load_image_folder(
    root: str, classnames_file: str | None = None
) -> tuple[list[Path], list[int], list[str]]:
    """ImageFolder layout -> (image paths, labels, class names). Folder names become class
    names (underscores to spaces) unless a classnames file maps them."""
    base = Path(root)
    folders = sorted(p for p in base.iterdir() if p.is_dir())
    if not folders:
        raise ValueError(f"{root}: expected one subfolder per class")
    names = {f.name: f.name.replace("_", " ") for f in folders}
    if classnames_file is not None:
        lines = [
            line.rstrip("\n")
            for line in Path(classnames_file).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        if all("\t" in line for line in lines):
            names.update(dict(line.split("\t", 1) for line in lines))
        elif len(lines) == len(folders):
            names = {f.name: line for f, line in zip(folders, lines, strict=True)}
        else:
            raise ValueError(
                f"{classnames_file}: give 'folder<TAB>name' lines or one name per class folder ({len(folders)})"
            )
    paths, labels = [], []
    for label, folder in enumerate(folders):
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(file)
                labels.append(label)
    return paths, labels, [names[f.name] for f in folders]


# -- the whole evaluation --


def load_for_eval(
    model_dir: str, tokenizer_dir: str | None = None, device: str = "auto"
) -> tuple[Any, Any, EvalTransform]:
    """(model in eval mode, tokenizer, eval transform); the transform follows the model's
    ``preprocessor_config.json`` when it has one (crop size, mean, std)."""
    from clip_trainer.model import load_model, preprocessing
    from clip_trainer.tokenizer import load_tokenizer

    model = load_model(model_dir).to(pick_device(device)).eval()
    tokenizer = load_tokenizer(tokenizer_dir or model_dir)
    size, mean, std = preprocessing(model_dir, int(model.config.vision_config.image_size))
    return model, tokenizer, EvalTransform(size=size, mean=mean, std=std)


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Run the configured evaluations; returns ``{"retrieval": {...}, "zeroshot": {...}}``."""
    model, tokenizer, transform = load_for_eval(config.model, config.tokenizer, config.device)
    results: dict[str, Any] = {"model": config.model}
    if config.retrieval is not None:
        images, captions = load_retrieval_pairs(
            config.retrieval, config.caption_field, config.image_column, config.max_items
        )
        if not images:
            raise ValueError(f"{config.retrieval}: no usable image/caption pairs")
        images, captions, owner = group_by_image(images, captions)
        image_embeds = encode_images(
            model, (decode_image(b) for b in images), transform, config.batch_size
        )
        text_embeds = encode_texts(model, tokenizer, captions, config.batch_size)
        results["retrieval"] = retrieval_metrics(image_embeds, text_embeds, owner)
    if config.zeroshot is not None:
        paths, labels, classnames = load_image_folder(config.zeroshot, config.classnames)
        classifier = zero_shot_classifier(model, tokenizer, classnames, config.templates)
        image_embeds = encode_images(
            model, (decode_image(p.read_bytes()) for p in paths), transform, config.batch_size
        )
        metrics = topk_accuracy(image_embeds @ classifier.t(), labels, ks=(1, 5))
        metrics.update(n_images=float(len(paths)), n_classes=float(len(classnames)))
        results["zeroshot"] = metrics
    return results


__all__ = [
    "DEFAULT_TEMPLATES",
    "EvalConfig",
    "encode_images",
    "encode_texts",
    "evaluate",
    "group_by_image",
    "load_for_eval",
    "load_image_folder",
    "load_retrieval_pairs",
    "retrieval_metrics",
    "topk_accuracy",
    "zero_shot_classifier",
]
