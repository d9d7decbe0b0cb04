"""``OUT/manifest.json``: what produced an output — config, versions, models, prompts, runs.

Written when a run starts (status ``running``) and again when it ends, atomically. A resumed or
chained run appends to ``runs``; ``stages_done`` accumulates the stages every shard has been
through, including those of the output a ``--from`` run continued.
"""

from __future__ import annotations

import json
import logging
import platform
import time
import uuid
from importlib import metadata
from typing import Any

import fsspec

from schemas.record import SCHEMA_VERSION

log = logging.getLogger(__name__)
MANIFEST_NAME = "manifest.json"
_PACKAGES = (
    "vecap",
    "apache-beam",
    "pyarrow",
    "torch",
    "transformers",
    "tokenizers",
    "vllm",
    "pillow",
    "fsspec",
)


def manifest_path(output: str) -> str:
    return output.rstrip("/") + "/" + MANIFEST_NAME


def package_versions() -> dict[str, str | None]:
    """Installed versions, read from metadata (nothing is imported: vllm may be absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def read_manifest(output: str) -> dict[str, Any] | None:
    fs, path = fsspec.core.url_to_fs(manifest_path(output))
    if not fs.exists(path):
        return None
    with fs.open(path, "r") as f:
        return json.load(f)


def write_manifest(output: str, manifest: dict[str, Any]) -> None:
    fs, path = fsspec.core.url_to_fs(manifest_path(output))
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    text = json.dumps(manifest, indent=2, sort_keys=True, default=str)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" in protocols or "local" in protocols:
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with fs.open(tmp, "w") as f:
            f.write(text)
        fs.mv(tmp, path)
    else:
        with fs.open(path, "w") as f:
            f.write(text)


def prompt_record(config: Any) -> dict[str, Any]:
    """Model ids and prompt ids/texts of the model stages in ``config`` (a PipelineConfig)."""
    out: dict[str, Any] = {}
    if config.caption is not None:
        from llava_recap.prompts import get_prompt

        c = config.caption
        text = c.prompt_text if c.prompt_text is not None else get_prompt(c.prompt_id).text
        out["caption"] = {
            "model": c.model_name or c.generation.model,
            "backend": c.generation.backend,
            # resolved at launch from the job's GPU; "auto": each worker resolved its own (the
            # rows' caption_engine says which)
            "dtype": c.generation.dtype,
            "prompt_id": c.prompt_id,
            "prompt_text": text,
            "system": c.system,
            "image_aspect": c.image_aspect,
            "image_aspect_resolved": _aspect_resolved(c),
        }
    if config.fusion is not None:
        from llm_fusion.prompts import get_prompt as get_fusion_prompt

        f = config.fusion
        prompt = get_fusion_prompt(f.prompt_id, f.prompt_file)
        out["fusion"] = {
            "model": f.generation.model,
            "backend": f.generation.backend,
            "dtype": f.generation.dtype,
            "prompt_id": prompt.prompt_id,
            "prompt_text": prompt.template,
            "fallback": f.fallback,
            **_chat_template_record("fusion", f.chat_template, f.generation),
        }
    if config.ethics is not None:
        from llm_fusion.ethics_prompts import ETHICS_PROMPTS

        e = config.ethics
        prompt = ETHICS_PROMPTS.get(e.prompt_id)
        out["ethics"] = {
            "model": e.generation.model if e.generation else None,
            "prompt_id": e.prompt_id,
            "prompt_text": prompt.template if prompt is not None else None,
            "policy": e.policy,
            "blocklist_terms": len(e.blocklist),
            "blocklist_file": e.blocklist_file,
        }
        if e.generation is not None:
            out["ethics"].update(_chat_template_record("ethics", e.chat_template, e.generation))
    return out


def _aspect_resolved(caption: Any) -> str | None:
    """What ``auto`` means for the caption model, from its config on this machine (None when it
    is not here: the workers decide and log it)."""
    from llava_recap.aspect import resolve_aspect
    from pipeline.generation.templates import load_model_config

    if caption.image_aspect != "auto":
        return caption.image_aspect
    g = caption.generation
    try:
        config = load_model_config(g.model, g.trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - a checkpoint that does not load fails on the
        # workers with its own error line; the manifest records "not resolved here"
        log.info("image_aspect of %s not resolved at launch: %s", g.model, exc)
        return None
    return None if config is None else resolve_aspect("auto", config.model_type)


def _chat_template_record(section: str, value: str, generation: Any) -> dict[str, Any]:
    """The chat-template record; a choice that cannot work is a one-line config error here,
    before the job starts."""
    from pipeline.errors import ConfigError
    from pipeline.generation.chat import ChatTemplateError
    from pipeline.generation.templates import describe_chat_template

    try:
        return describe_chat_template(value, generation.model, generation.trust_remote_code)
    except ChatTemplateError as exc:
        raise ConfigError(f"{section}.chat_template: {' '.join(str(exc).split())}") from exc


def start_manifest(
    previous: dict[str, Any] | None,
    *,
    config_dict: dict[str, Any],
    models: dict[str, Any],
    stages: list[str],
    source_stages: list[str],
    source: str | None,
    plan: dict[str, Any],
) -> dict[str, Any]:
    """The manifest at the start of a run: the previous one (resume) with a new run appended."""
    now = time.time()
    manifest = dict(previous or {})
    manifest.setdefault("created_at", now)
    done_before = list(source_stages)
    for s in stages:
        if s not in done_before:
            done_before.append(s)
    manifest.update(
        {
            "format": "vecap-output",
            "schema_version": SCHEMA_VERSION,
            "config": config_dict,
            "versions": package_versions(),
            "models": models,
            "stages": stages,
            "stages_done": done_before,
            "source": source,
            "plan": plan,
            "started_at": manifest.get("started_at", now),
            "finished_at": None,
            "status": "running",
        }
    )
    runs = list(manifest.get("runs", []))
    runs.append({"started_at": now, "finished_at": None, "status": "running", **plan})
    manifest["runs"] = runs
    return manifest


def fleet_record(
    gpu_plan: dict[str, Any], config: dict[str, Any], stages: list[str]
) -> dict[str, Any]:
    """What a run's fleet was, for ``runs[i]["fleet"]``: the top-level ``gpu_plan`` and
    ``config`` are the LATEST run's, and a pilot on one GPU continued on a Dataflow fleet must
    not be measured as if it ran there (``vecap estimate`` groups runs by this record)."""
    stage_gpus = {}
    for section, stage in (("caption", "caption"), ("ethics", "ethics"), ("fusion", "fuse")):
        gen = (config.get(section) or {}).get("generation") or {}
        if stage in stages and gen:
            stage_gpus[stage] = gen.get("gpus")  # --gpus: the GPUs of a machine it was put on
    return {
        "gpu": gpu_plan.get("gpu"),
        "gpu_source": gpu_plan.get("gpu_source"),
        "gpu_stages": sorted(
            {s for engine in gpu_plan.get("engines") or [] for s in engine.get("stages", [])}
        ),
        "beam_args": list((config.get("run") or {}).get("beam_args") or []),
        "stage_gpus": stage_gpus,
    }


def finish_manifest(
    manifest: dict[str, Any], *, status: str, summary: dict[str, Any]
) -> dict[str, Any]:
    now = time.time()
    manifest = dict(manifest)
    manifest["finished_at"] = now
    manifest["status"] = status
    runs = list(manifest.get("runs", []))
    if runs:
        runs[-1] = {**runs[-1], "finished_at": now, "status": status, **summary}
    manifest["runs"] = runs
    return manifest


__all__ = [
    "MANIFEST_NAME",
    "finish_manifest",
    "fleet_record",
    "manifest_path",
    "package_versions",
    "prompt_record",
    "read_manifest",
    "start_manifest",
    "write_manifest",
]
