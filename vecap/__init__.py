"""vecap's Python API: the configs, the job, and the stages as Beam PTransforms.

Compose the stages into a Beam pipeline of your own (each is ``PCollection[Record] ->
PCollection[Record]``; a row that fails keeps its place with a status and an error)::

    import apache_beam as beam
    import vecap

    rows = [vecap.Record(uid=vecap.make_uid(0, i), shard_id=0, row_index=i, url=u, alt_text=a)
            for i, (u, a) in enumerate(pairs)]
    caption = vecap.CaptionConfig(generation=vecap.GenerationConfig(model="llava-hf/llava-1.5-7b-hf"))
    with beam.Pipeline() as p:
        (p | beam.Create(rows)
           | vecap.DownloadStage(vecap.DownloadConfig())
           | vecap.CaptionStage(caption)
           | beam.Map(lambda r: (r.url, r.status, r.visual_caption)))

or run the whole job as ``vecap run`` does: ``vecap.run_pipeline(vecap.build_pipeline_config
({...}))``. Names resolve on first use, so ``import vecap`` stays light (no Beam, no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    # configs
    "PipelineConfig": "pipeline.config",
    "RunConfig": "pipeline.config",
    "build_pipeline_config": "pipeline.config",
    "ReaderConfig": "pipeline.io.reader_config",
    "DownloadConfig": "pipeline.download.stage",
    "CaptionConfig": "llava_recap.config",
    "FusionConfig": "llm_fusion.config",
    "EthicsConfig": "llm_fusion.config",
    "WriterConfig": "pipeline.io.writer",
    "GenerationConfig": "pipeline.generation.config",
    # the job
    "run_pipeline": "pipeline.run",
    "plan_job_gpus": "pipeline.gpu_plan",
    # the stages, as PTransforms
    "ReadInput": "pipeline.io.readers",
    "DownloadStage": "pipeline.download.stage",
    "CaptionStage": "llava_recap.stage",
    "EthicsCheckStage": "llm_fusion.ethics",
    "FusionStage": "llm_fusion.stage",
    "WriteShards": "pipeline.io.writer",
    # the record
    "Record": "schemas.record",
    "make_uid": "schemas.record",
    "Status": "schemas.status",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("vecap")
        except PackageNotFoundError:
            return "unknown"
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vecap' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
