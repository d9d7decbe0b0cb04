"""Caption a few image files without Beam: to try a model or a prompt before a job."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from llava_recap.cleaning import clean_caption
from llava_recap.config import CaptionConfig
from llava_recap.handler import Captioner, decode_image
from pipeline.generation import load_generator


def caption_files(config: CaptionConfig, paths: Sequence[str]) -> Iterator[dict[str, Any]]:
    """One dict per path, in order: ``caption`` (cleaned) and ``raw``, or ``error``.

    Paths are fsspec URLs or local files; batches of ``config.generation.batch_size``.
    """
    import fsspec

    captioner = Captioner(load_generator(config.generation, True), config)
    batch = config.generation.batch_size
    for start in range(0, len(paths), batch):
        chunk = paths[start : start + batch]
        images, rows = [], []
        for path in chunk:
            row: dict[str, Any] = {"image": path, "prompt_id": config.prompt_id}
            try:
                with fsspec.open(path, "rb") as f:
                    images.append(decode_image(f.read()))
                rows.append(row)
            except (OSError, ValueError) as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
                yield row
        if not images:
            continue
        for row, raw in zip(rows, captioner.caption(images), strict=True):
            caption = clean_caption(raw, config.prompt)
            row.update(raw=raw, caption=caption, model=config.recorded_model)
            if not caption:
                row["error"] = "empty caption after cleaning"
            yield row


__all__ = ["caption_files"]
