"""The dataset card (``DEST/README.md``) of ``vecap export-hf``: YAML the Hub and ``datasets``
read (``configs``, ``dataset_info.features``), then what a reader needs to trust the captions:
the models and prompts (ids and texts), counts by status and fusion source, the vecap version.

Built only from the export's own records (plans, per-file markers with their row counts, the
source manifests), with no clock, so the same export gives the same card.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.io.shard_files import put_bytes

STAGES = ("caption", "fusion", "ethics")
_CAPTION_KINDS = {
    "fused": "the fused caption (VeC: AltText + visual caption, by the fusion LLM)",
    "visual": "the visual caption (VC, by the captioner)",
    "alt": "the original AltText",
}


def vecap_version(manifest: Mapping[str, Any] | None) -> str:
    if not manifest:
        return "unknown (no manifest.json)"
    versions = manifest.get("versions") or {}
    return str(versions.get("vecap") or manifest.get("vecap_version") or "unknown")


def manifest_models(manifest: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Stage -> {model, backend, dtype, prompt_id, prompt_text} as the manifest records them
    (``models``, written by ``vecap run``; older manifests: ``config`` and ``prompts``)."""
    if not manifest:
        return {}
    prompts = manifest.get("prompts") if isinstance(manifest.get("prompts"), dict) else {}
    out: dict[str, dict[str, Any]] = {}
    models = manifest.get("models") or {}
    config = manifest.get("config") or {}
    for stage in STAGES:
        entry = dict(models.get(stage) or {})
        section = config.get(stage) or {}
        if not entry and section:
            entry = {
                "model": (section.get("generation") or {}).get("model"),
                "prompt_id": section.get("prompt_id"),
            }
        if not entry:
            continue
        if entry.get("prompt_text") is None and entry.get("prompt_id") in prompts:
            entry["prompt_text"] = prompts[entry["prompt_id"]]
        out[stage] = entry
    return out


def _summed(markers: Sequence[Mapping[str, Any]], column: str) -> dict[str, int]:
    total: collections.Counter = collections.Counter()
    for m in markers:
        total.update((m.get("counts") or {}).get(column) or {})
    return dict(sorted(total.items()))


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ") if value is not None else "-"


def _fenced(text: str) -> str:
    """A code block no backtick run in ``text`` can close early."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def card_text(features: Any, datasets: Any, splits: Sequence[Mapping[str, Any]]) -> str:
    """The card for ``splits`` (each: plan, markers, manifest of its source)."""
    from huggingface_hub import DatasetCardData

    split_infos = {}
    configured: dict[str, dict[str, Any]] = {}
    prompts: dict[str, str | None] = {}
    seen_models: dict[str, set[str]] = {"caption": set(), "fusion": set()}
    seen_engines: dict[str, set[str]] = {"caption": set(), "fusion": set()}
    versions = set()
    for s in splits:
        name, markers = s["plan"]["split"], s["markers"]
        split_infos[name] = datasets.SplitInfo(
            name,
            num_bytes=sum(m.get("arrow_bytes", 0) for m in markers),
            num_examples=sum(m["rows"] for m in markers),
        )
        versions.add(vecap_version(s["manifest"]))
        for stage, entry in manifest_models(s["manifest"]).items():
            configured.setdefault(stage, entry)
            if entry.get("prompt_id"):
                prompts.setdefault(entry["prompt_id"], entry.get("prompt_text"))
        for stage in seen_models:
            seen_models[stage].update(_summed(markers, f"{stage}_model"))
            seen_engines[stage].update(_summed(markers, f"{stage}_engine"))
            for pid in _summed(markers, f"{stage}_prompt_id"):
                prompts.setdefault(pid, None)
    info = datasets.DatasetInfo(
        features=features,
        splits=datasets.SplitDict(split_infos),
        download_size=sum(m["bytes"] for s in splits for m in s["markers"]),
        dataset_size=sum(i.num_bytes for i in split_infos.values()),
    )
    yaml_models = {
        stage: sorted(
            seen_models.get(stage, set()) | {configured.get(stage, {}).get("model")} - {None}
        )
        for stage in ("caption", "fusion")
    }
    data = DatasetCardData(
        task_categories=["image-to-text"],
        tags=["vecap", "veclip", "image-captioning", "synthetic-captions"],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": n, "path": f"data/{n}-*"} for n in sorted(split_infos)],
            }
        ],
        dataset_info=info._to_yaml_dict(),
        vecap={
            "version": sorted(versions)[0] if len(versions) == 1 else sorted(versions),
            "models": yaml_models,
            "prompts": sorted(prompts),
            "splits": {
                s["plan"]["split"]: {
                    "source": s["plan"].get("source"),
                    "caption": s["plan"]["caption"],
                    "include_flagged": s["plan"]["include_flagged"],
                    "rows": split_infos[s["plan"]["split"]].num_examples,
                }
                for s in splits
            },
        },
    )
    body = _body(splits, split_infos, configured, seen_models, seen_engines, prompts, versions)
    return f"---\n{data.to_yaml()}\n---\n\n{body}"


def _body(splits, split_infos, configured, seen_models, seen_engines, prompts, versions) -> str:
    out = [
        "# vecap recaptioned images",
        "",
        "Image / AltText pairs recaptioned the VeCLIP way (arXiv 2310.07699) by "
        "vecap: a LLaVA-style model writes a visual caption (VC) of "
        "each image, and an LLM fuses it with the AltText into a visual-enriched caption (VeC). "
        f"Made with vecap {', '.join(sorted(versions))}.",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("path/to/this/folder")  # or the Hub repo id',
        "```",
        "",
        "## Splits",
        "",
    ]
    rows = []
    for s in splits:
        name = s["plan"]["split"]
        caption = s["plan"]["caption"]
        flagged = ", ethics-flagged rows included" if s["plan"]["include_flagged"] else ""
        rows.append(
            [name, split_infos[name].num_examples, len(s["markers"]),
             f"{caption}: {_CAPTION_KINDS[caption]}{flagged}", s["plan"].get("source")]
        )  # fmt: skip
    out += _table(["split", "rows", "files", "`caption` column", "from vecap output"], rows)
    out += [
        "",
        "Every row of the source output is here, failures too (rows in = rows out): a row whose "
        "download or captioning failed has a null `image` and says why in `status` and `error`. "
        "`caption` is the chosen caption where the row is `ok`, the text is not blank and the "
        "row is not ethics-flagged (as in vecap's JSON release), null elsewhere; "
        "`visual_caption`, `fused_caption` and `alt_text` are always there as written. "
        "Filter with `ds.filter(lambda r: r['caption'] is not None)`.",
        "",
        "## Models",
        "",
    ]
    model_rows = []
    for stage in ("caption", "fusion", "ethics"):
        entry = configured.get(stage, {})
        named = sorted(seen_models.get(stage, set()))
        engines = sorted(seen_engines.get(stage, set()))
        if not entry and not named:
            continue
        configured_engine = " / ".join(str(entry[k]) for k in ("backend", "dtype") if entry.get(k))
        model_rows.append(
            [stage, entry.get("model"), ", ".join(named) or None, configured_engine or None,
             ", ".join(engines) or None, entry.get("prompt_id")]
        )  # fmt: skip
    out += _table(
        ["stage", "model (manifest)", "models named by the rows", "engine (manifest)",
         "engines named by the rows", "prompt id"],
        model_rows,
    )  # fmt: skip
    out += ["", "## Prompts", ""]
    if not prompts:
        out.append("No prompt recorded.")
    for pid in sorted(prompts):
        out += [f"### `{pid}`", ""]
        text = prompts[pid]
        out += [_fenced(text) if text is not None else "(its text is not in the manifest)", ""]
    out += ["## Counts", ""]
    for title, column in (("status", "status"), ("fusion source", "fusion_source")):
        names = sorted({k for s in splits for k in _summed(s["markers"], column)})
        head = [title] + [s["plan"]["split"] for s in splits]
        table = [[k] + [_summed(s["markers"], column).get(k, 0) for s in splits] for k in names]
        out += _table(head, table) + [""]
    out += [
        "`fusion_source`: `llm` = the LLM's fused caption; `visual` / `alt` = the LLM's output "
        "was rejected and the fusion stage fell back to that text (`fusion_reason` says why).",
        "",
    ]
    return "\n".join(out)


def write_card(fs: Any, root: str, features: Any, datasets: Any, splits: Sequence[Mapping]) -> str:
    """Write ``root/README.md`` whole; returns its path."""
    path = f"{root}/README.md"
    put_bytes(fs, path, card_text(features, datasets, splits).encode("utf-8"))
    return path


__all__ = ["card_text", "manifest_models", "vecap_version", "write_card"]
