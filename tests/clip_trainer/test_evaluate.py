"""Evaluation metrics on hand-checkable cases, data loaders, and the end-to-end evaluate()."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from clip_trainer.evaluate import (
    EvalConfig,
    evaluate,
    group_by_image,
    load_image_folder,
    load_retrieval_pairs,
    retrieval_metrics,
    topk_accuracy,
)
from clip_trainer.model import ModelConfig, build_model


def test_identical_pair_embeddings_give_perfect_recall() -> None:
    embeds = torch.eye(12)  # image i and caption i share a vector; pairs are orthogonal
    metrics = retrieval_metrics(embeds, embeds.clone())
    assert all(
        metrics[f"{d}_R@{k}"] == 1.0 for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)
    )


def test_known_permutation() -> None:
    # 4 pairs; caption j points at image perm[j], so only captions 0 and 1 are right at rank 1.
    images = torch.eye(4)
    perm = [0, 1, 3, 2]
    texts = images[perm]
    metrics = retrieval_metrics(images, texts, ks=(1, 2))
    assert metrics["image_to_text_R@1"] == 0.5 and metrics["text_to_image_R@1"] == 0.5
    # The right item scores 0, the wrong one 1 and the other two 0: with ties counted against
    # the model, the right one ranks behind three others.
    assert metrics["text_to_image_R@2"] == 0.5


def test_ties_count_against_the_model() -> None:
    collapsed = torch.ones(5, 3)  # every embedding identical
    metrics = retrieval_metrics(collapsed, collapsed, ks=(1, 4, 5))
    assert metrics["image_to_text_R@1"] == 0.0 and metrics["image_to_text_R@4"] == 0.0
    assert metrics["image_to_text_R@5"] == 1.0 and metrics["text_to_image_R@5"] == 1.0


def test_several_captions_per_image() -> None:
    images = torch.eye(3)
    # captions 0,1 describe image 0 (caption 1 points elsewhere); 2 -> image 1; 3 -> image 2
    texts = torch.stack([images[0], images[2] * 0.9 + images[0] * 0.1, images[1], images[2]])
    metrics = retrieval_metrics(images, texts, text_to_image=[0, 0, 1, 2], ks=(1,))
    assert metrics["image_to_text_R@1"] == 1.0  # image 0's best caption (0) is first
    assert metrics["text_to_image_R@1"] == 0.75  # caption 1 retrieves image 2


def test_topk_accuracy_by_hand() -> None:
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.5, 0.5, 0.0]])
    labels = [0, 1, 1]
    result = topk_accuracy(logits, labels, ks=(1, 2))
    assert result["top1"] == pytest.approx(1 / 3)  # row 2 ties: counted as a miss at top-1
    assert result["top2"] == pytest.approx(1.0)


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_folder_with_side_files_and_caption_table(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(_png((255, 0, 0)))
    (tmp_path / "a.txt").write_text("a red square\n")
    (tmp_path / "b.png").write_bytes(_png((0, 0, 255)))
    (tmp_path / "b.txt").write_text("a blue square")
    (tmp_path / "c.png").write_bytes(_png((0, 0, 0)))  # no caption: skipped
    images, captions = load_retrieval_pairs(str(tmp_path))
    assert captions == ["a red square", "a blue square"] and len(images) == 2
    table = tmp_path / "t"
    table.mkdir()
    (table / "x.png").write_bytes(_png((1, 2, 3)))
    (table / "captions.jsonl").write_text(json.dumps({"file": "x.png", "caption": "dark"}) + "\n")
    assert load_retrieval_pairs(str(table))[1] == ["dark"]


def test_coco_style_several_captions_per_image(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(_png((255, 0, 0)))
    (tmp_path / "b.png").write_bytes(_png((0, 0, 255)))
    rows = [("a.png", "red one"), ("b.png", "blue one"), ("a.png", "red again"), ("a.png", " ")]
    (tmp_path / "captions.jsonl").write_text(
        "".join(json.dumps({"file": f, "caption": c}) + "\n" for f, c in rows)
    )
    images, captions = load_retrieval_pairs(str(tmp_path))
    assert captions == ["red one", "red again", "blue one"]
    unique, texts, owner = group_by_image(images, captions)
    assert len(unique) == 2 and texts == captions and owner == [0, 0, 1]


def test_parquet_pairs_skip_failed_rows(shapes_run: Path) -> None:
    images, captions = load_retrieval_pairs(str(shapes_run), caption_field="alt_text")
    assert len(images) == len(captions) > 0 and all(images)
    assert len(load_retrieval_pairs(str(shapes_run), max_items=7)[0]) == 7


def test_image_folder_classes(tmp_path: Path) -> None:
    for name in ("red_thing", "blue_thing"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "1.png").write_bytes(_png((9, 9, 9)))
    paths, labels, names = load_image_folder(str(tmp_path))
    assert names == ["blue thing", "red thing"] and labels == [0, 1] and len(paths) == 2
    mapping = tmp_path / "names.txt"
    mapping.write_text("red_thing\tcrimson object\n")
    assert load_image_folder(str(tmp_path), str(mapping))[2] == ["blue thing", "crimson object"]


def test_evaluate_end_to_end_on_a_saved_model(
    tmp_path: Path, tiny_tokenizer, shapes_eval: Path
) -> None:
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    build_model(ModelConfig(arch="tiny"), tiny_tokenizer).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    folder = tmp_path / "classes"
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 70, 230))):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            (folder / name / f"{i}.png").write_bytes(_png(colour))
    results = evaluate(
        EvalConfig(model=str(model_dir), retrieval=str(shapes_eval), zeroshot=str(folder))
    )
    retrieval, zeroshot = results["retrieval"], results["zeroshot"]
    assert retrieval["n_images"] == 24.0 and 0.0 <= retrieval["image_to_text_R@1"] <= 1.0
    assert retrieval["image_to_text_R@10"] >= retrieval["image_to_text_R@1"]
    assert zeroshot["n_classes"] == 2.0 and zeroshot["top5"] == 1.0  # only 2 classes
    with pytest.raises(ValueError, match="nothing to evaluate"):
        EvalConfig(model=str(model_dir))
