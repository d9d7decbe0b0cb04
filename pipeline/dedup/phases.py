"""``vecap run --dedup``: the job as a chain of resumable phases, each a committed output.

    index urls      input (uid, url)            -> OUT/dedup/urls.commit.json
    download        input + url patches         -> OUT/dedup/download/   (repeated URLs not fetched)
    caption-plan    download (uid, sha256, ...) -> OUT/dedup/caption-plan.commit.json
    caption         download + plan patches     -> OUT/dedup/caption/    (one row per image captioned)
    fusion-plan     caption (uid, captions)     -> OUT/dedup/fusion-plan.commit.json
    fuse            caption + plan patches      -> OUT/dedup/fuse/       (one row per pair fused)
    fusion-fill     fuse (uid, fused captions)  -> OUT/dedup/fusion-fill.commit.json
    assemble        last phase + patches, images from download -> OUT/shards (every input row)

Why phases: a duplicate's canonical row can sit in any shard, so a shard that waited for it
inside one job could wait on work it cannot resume. Here every model phase needs only what an
earlier, committed phase holds, so each phase resumes shard by shard (the ``vecap run``
machinery) and each index job, CPU only and reading hashes, uids and text, is simply run again
if it was killed. The caption and fuse phases keep no image bytes; assemble takes them from
the download phase, so images are written twice (download, OUT), never shuffled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import apache_beam as beam

from pipeline.config import ConfigError, PipelineConfig, config_to_dict
from pipeline.dedup.patches import (
    PatchApplier,
    PatchCommit,
    commit_patches,
    dedup_dir,
    new_attempt_folder,
    read_commit,
)
from pipeline.io.shard_files import committed_parquet_urls, fs_and_path
from pipeline.io.writer import read_shard_records
from schemas.record import Record
from schemas.status import Status

# rows whose image bytes the output keeps (Record.fail drops them everywhere else)
_KEEPS_IMAGE = frozenset({Status.OK.value, Status.CAPTION_FAILED.value})


class _ApplyPatches(beam.DoFn):
    def __init__(self, commits: Sequence[PatchCommit]) -> None:
        self._commits = list(commits)
        self._applier: PatchApplier | None = None

    def setup(self) -> None:
        self._applier = PatchApplier(self._commits)

    def process(self, record: Record):
        assert self._applier is not None
        yield self._applier(record)


class _AttachImages(beam.DoFn):
    """Rows that keep an image get it back from the download phase (same shard, same uid)."""

    def __init__(self, parquets: dict[int, str]) -> None:
        self._parquets = parquets
        self._cache: OrderedDict[int, dict[str, bytes]] = OrderedDict()

    def _images(self, shard_id: int) -> dict[str, bytes]:
        if shard_id not in self._cache:
            rows = read_shard_records(
                self._parquets[shard_id], ("uid", "shard_id", "row_index", "jpg")
            )
            self._cache[shard_id] = {r.uid: r.jpg for r in rows if r.jpg is not None}
            while len(self._cache) > 2:  # a shard's images are tens of MB
                self._cache.popitem(last=False)
        return self._cache[shard_id]

    def process(self, record: Record):
        if record.jpg is None and record.status in _KEEPS_IMAGE:
            jpg = self._images(record.shard_id).get(record.uid)
            if jpg is not None:
                record = record.replace(jpg=jpg)
        yield record


class PrepareRows(beam.PTransform):
    """Right after a phase reads its rows: the committed patches, then (assemble) the images."""

    def __init__(self, commits: Sequence[PatchCommit], images_from: dict[int, str] | None) -> None:
        super().__init__()
        self._commits = [c for c in commits if c is not None]
        self._images_from = images_from

    def expand(self, records):
        if self._commits:
            records = records | "ApplyPatches" >> beam.ParDo(_ApplyPatches(self._commits))
        if self._images_from is not None:
            records = records | "AttachImages" >> beam.ParDo(_AttachImages(self._images_from))
        return records


# --------------------------------------------------------------------------- the chain


def dedup_fingerprint(config: PipelineConfig) -> str:
    """What every committed index of this output was made for: the input, the stages, the cache
    and what the cache keys name (models, prompts, decoding, engines, image preparation), not
    how fast it runs (batch sizes, GPUs, runner options may change on a resume)."""
    from pipeline.dedup.keys import caption_settings, fusion_settings, generation_settings

    c = config
    ident = {
        "reader": config_to_dict(c)["reader"],
        "stages": list(c.stages),
        "cache": c.run.caption_cache,
        "image": dataclasses.asdict(c.download.image_config()),
        "caption": None
        if c.caption is None
        else [caption_settings(c.caption, None), generation_settings(c.caption.generation)],
        "fusion": fusion_settings(c.fusion, c.ethics),
        "fusion_generation": None if c.fusion is None else generation_settings(c.fusion.generation),
    }
    text = json.dumps(ident, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def phase_output(output: str, name: str) -> str:
    return f"{dedup_dir(output)}/{name}"


class DedupRun:
    """One ``vecap run --dedup``: runs the phases in order, each skipped when committed.

    ``run_phase`` is ``pipeline.run.run_pipeline`` (passed in by it: each phase is an ordinary
    run of the same machinery, and this module stays below the composition)."""

    def __init__(
        self,
        config: PipelineConfig,
        *,
        run_phase: Callable[..., Any],
        stream: TextIO,
        stage_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self._run_pipeline = run_phase
        self.output = config.run.output
        self.stream = stream
        self.stage_overrides = stage_overrides
        self.cache = config.run.caption_cache
        # cache keys name the engine (backend/dtype): resolved here, from the job's GPU, not on
        # the index jobs' workers, which may have none (a remaining `auto` is resolved there,
        # and the model phase recomputes any cached caption its engine did not write)
        from pipeline.gpu_plan import plan_job_gpus

        self.planned, _ = plan_job_gpus(config, refuse=False)
        self.fingerprint = dedup_fingerprint(self.planned)
        # names this job's cache segments: the same on every rerun, no other job's
        ident = f"{self.output}\x00{self.fingerprint}"
        self.job = hashlib.blake2b(ident.encode(), digest_size=8).hexdigest()
        self.phases: dict[str, dict[str, Any]] = {}
        # phases without a model run without GPU options: no GPU rented to sit idle
        from pipeline.runner_options import cpu_only_beam_args

        if config.run.cpu_beam_args is not None:
            self.cpu_beam_args = list(config.run.cpu_beam_args)
        else:
            self.cpu_beam_args, dropped = cpu_only_beam_args(config.run.beam_args)
            if dropped:
                self.say(
                    "index jobs, download and assemble run without the GPU options "
                    f"{' '.join(dropped)} (--cpu-beam-args sets their options)"
                )

    def say(self, text: str) -> None:
        print(f"vecap run --dedup: {text}", file=self.stream)

    # ----------------------------------------------------------------------- index jobs

    def index(self, name: str, build: Callable[[beam.Pipeline, str], None]) -> PatchCommit:
        from pipeline.runner_options import make_pipeline, pipeline_options

        existing = read_commit(self.output, name)
        if existing is not None:
            if existing.fingerprint != self.fingerprint:
                raise ConfigError(
                    f"{self.output} holds a dedup index ({name}) made with other settings; "
                    "resume with the same settings, pass --overwrite, or write to a new --output"
                )
            self.say(f"{name}: committed earlier ({len(existing.shards)} shards with patches)")
            self.phases[name] = {"counts": existing.counts, "resumed": True}
            return existing
        folder = new_attempt_folder(self.output, name)
        pipeline = make_pipeline(pipeline_options(self.cpu_beam_args))
        build(pipeline, folder)
        result = pipeline.run()
        result.wait_until_finish()
        from pipeline.dedup.index_jobs import METRICS_NAMESPACE
        from pipeline.runner_options import beam_counters

        counters = beam_counters(result, METRICS_NAMESPACE)
        commit = commit_patches(self.output, name, folder, self.fingerprint, counters)
        counts = ", ".join(f"{k} {v}" for k, v in sorted(commit.counts.items())) or "nothing found"
        self.say(f"{name}: {counts}")
        self.phases[name] = {"counts": commit.counts}
        return commit

    # ----------------------------------------------------------------------- runs

    def run_phase(
        self,
        name: str,
        *,
        output: str,
        stages: tuple[str, ...],
        source: str | None,
        keep_images: bool,
        commits: Sequence[PatchCommit | None],
        images_from: dict[int, str] | None = None,
        overwrite: bool = False,
    ) -> Any:
        from pipeline.runner_options import CPU_STAGES

        c = self.config
        models = not set(stages) <= CPU_STAGES
        run = dataclasses.replace(
            c.run,
            output=output,
            stages=stages,
            source=source,
            dedup=False,
            caption_cache=None,
            cpu_beam_args=None,
            overwrite=overwrite,
            beam_args=tuple(c.run.beam_args if models else self.cpu_beam_args),
        )
        inherit = {"inherit_duplicates": True}
        phase = PipelineConfig(
            run=run,
            reader=c.reader if source is None else None,
            download=dataclasses.replace(c.download, **inherit),
            caption=dataclasses.replace(c.caption, **inherit) if c.caption is not None else None,
            ethics=dataclasses.replace(c.ethics, **inherit) if c.ethics is not None else None,
            fusion=dataclasses.replace(c.fusion, **inherit) if c.fusion is not None else None,
            writer=dataclasses.replace(c.writer, output=output, keep_images=keep_images),
        )
        self.say(f"{name}: stages {', '.join(stages) or 'none'} -> {output}")
        result = self._run_pipeline(
            phase,
            stream=self.stream,
            stage_overrides=self.stage_overrides,
            prepare=lambda: PrepareRows(commits, images_from),
        )
        self.phases[name] = {"output": output, "status": result.status, "rows": result.rows_written}
        return result

    def run(self) -> Any:
        c = self.config
        stages = c.stages
        # one job per output: refuse before touching anything while any phase's run is live
        from pipeline.manifest import read_manifest
        from pipeline.run_lease import check_output_free

        for name in ("", "download", "caption", "fuse"):
            path = phase_output(self.output, name) if name else self.output
            check_output_free(
                path, read_manifest(path), takeover=c.run.takeover, stream=self.stream
            )
        if c.run.overwrite:
            fs, root = fs_and_path(dedup_dir(self.output))
            if fs.exists(root):
                fs.rm(root, recursive=True)
        fused = [s for s in ("ethics", "fuse") if s in stages]
        n = 2 + 2 * ("download" in stages) + 2 * ("caption" in stages) + 2 * bool(fused)
        self.say(f"{n} phases; indexes and phase outputs under {dedup_dir(self.output)}")

        url_commit = None
        if "download" in stages:
            url_commit = self.index("urls", self._build_url_index)
        download = phase_output(self.output, "download")
        self.run_phase(
            "download",
            output=download,
            stages=("download",) if "download" in stages else (),
            source=None,
            keep_images=True,
            commits=[url_commit],
        )
        last_output, last_commit = download, self.index("caption-plan", self._build_caption_plan)
        if "caption" in stages:
            captioned = phase_output(self.output, "caption")
            self.run_phase(
                "caption",
                output=captioned,
                stages=("caption",),
                source=download,
                keep_images=False,
                commits=[last_commit],
            )
            last_output, last_commit = captioned, self.index("fusion-plan", self._build_fusion_plan)
            if fused:
                fuse = phase_output(self.output, "fuse")
                self.run_phase(
                    "fuse",
                    output=fuse,
                    stages=tuple(fused),
                    source=captioned,
                    keep_images=False,
                    commits=[last_commit],
                )
                last_output, last_commit = fuse, self.index("fusion-fill", self._build_fusion_fill)
        result = self.run_phase(
            "assemble",
            output=self.output,
            stages=(),
            source=last_output,
            keep_images=c.writer.keep_images,
            commits=[last_commit],
            images_from=None if last_output == download else committed_parquet_urls(download),
            overwrite=c.run.overwrite,
        )
        self._record_manifest()
        return result

    # ----------------------------------------------------------------------- index builders

    def _build_url_index(self, pipeline: beam.Pipeline, folder: str) -> None:
        from pipeline.dedup.index_jobs import UrlIndex
        from pipeline.io.readers import ReadInput

        assert self.config.reader is not None
        _ = pipeline | "ReadInput" >> ReadInput(self.config.reader) | "UrlIndex" >> UrlIndex(folder)

    def _rows_of(self, pipeline: beam.Pipeline, phase: str, columns: Sequence[str], folder: str):
        from pipeline.dedup.index_jobs import ReadColumns

        parquets = committed_parquet_urls(phase_output(self.output, phase))
        return pipeline | f"Read[{phase}]" >> ReadColumns(parquets, columns, list_dir=folder)

    def _image_config(self) -> Any | None:
        return self.config.download.image_config() if "download" in self.config.stages else None

    def _build_caption_plan(self, pipeline: beam.Pipeline, folder: str) -> None:
        from pipeline.dedup.index_jobs import CAPTION_PLAN_COLUMNS, CaptionPlan

        c = self.planned
        rows = self._rows_of(pipeline, "download", CAPTION_PLAN_COLUMNS, folder)
        _ = rows | "CaptionPlan" >> CaptionPlan(
            folder,
            caption=c.caption if "caption" in c.stages else None,
            image_config=self._image_config(),
            cache=self.cache,
        )

    def _build_fusion_plan(self, pipeline: beam.Pipeline, folder: str) -> None:
        from pipeline.dedup.index_jobs import FUSION_PLAN_COLUMNS, FusionPlan

        c = self.planned
        rows = self._rows_of(pipeline, "caption", FUSION_PLAN_COLUMNS, folder)
        _ = rows | "FusionPlan" >> FusionPlan(
            folder,
            job=self.job,
            pairs=any(s in c.stages for s in ("ethics", "fuse")),
            caption=c.caption,
            image_config=self._image_config(),
            fusion=c.fusion if "fuse" in c.stages else None,
            ethics=c.ethics if "ethics" in c.stages else None,
            cache=self.cache,
        )

    def _build_fusion_fill(self, pipeline: beam.Pipeline, folder: str) -> None:
        from pipeline.dedup.index_jobs import FUSION_FILL_COLUMNS, FusionFill

        c = self.planned
        rows = self._rows_of(pipeline, "fuse", FUSION_FILL_COLUMNS, folder)
        _ = rows | "FusionFill" >> FusionFill(
            folder,
            job=self.job,
            fusion=c.fusion if "fuse" in c.stages else None,
            ethics=c.ethics if "ethics" in c.stages else None,
            cache=self.cache,
        )

    # ----------------------------------------------------------------------- manifest

    def _record_manifest(self) -> None:
        """The assemble run wrote OUT's manifest as a run of no stages over the last phase:
        record the job's own stages and config, and the phases."""
        import collections

        from pipeline.io.shard_files import committed_shards
        from pipeline.manifest import read_manifest, write_manifest

        manifest = read_manifest(self.output)
        if manifest is None:
            return
        for _name, phase in self.phases.items():
            if "output" in phase and phase["output"] != self.output:
                seconds: collections.Counter[str] = collections.Counter()
                for s in committed_shards(phase["output"]).values():
                    seconds.update(s.stage_seconds)
                phase["stage_seconds"] = {k: round(v, 3) for k, v in seconds.items()}
        counts: collections.Counter[str] = collections.Counter()
        for s in committed_shards(self.output).values():
            counts.update(s.dedup_counts)
        manifest["stages"] = list(self.config.stages)
        manifest["config"] = config_to_dict(self.config)
        manifest["dedup"] = {
            "fingerprint": self.fingerprint,
            "caption_cache": self.cache,
            "counts": dict(counts),
            "phases": self.phases,
        }
        write_manifest(self.output, manifest)


def run_dedup(
    config: PipelineConfig,
    *,
    run_phase: Callable[..., Any],
    stream: TextIO | None = None,
    stage_overrides: dict[str, Any] | None = None,
) -> Any:
    """The job as phases, each run by ``run_phase`` (``pipeline.run.run_pipeline``)."""
    return DedupRun(
        config, run_phase=run_phase, stream=stream or sys.stderr, stage_overrides=stage_overrides
    ).run()


__all__ = ["DedupRun", "PrepareRows", "dedup_fingerprint", "phase_output", "run_dedup"]
