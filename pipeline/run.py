"""Compose the stages into the job: read -> download -> caption -> ethics -> fuse -> write.

Resume: the shard is the unit of work. Before the pipeline is built, the output's finished shards
(those with a stats file) are listed and only the others are read, so a crashed or killed run is
simply run again; ``overwrite`` deletes the earlier shards first. A resume must use the same shard
plan, stages, models and prompts as the run it continues (checked against ``manifest.json``).

Chaining (``--stages`` with ``--from``): a run reads an earlier output's finished shards instead
of an input table, keeps their shard ids and uids, runs its stages on them and writes a NEW
output, so captioning and fusion can run on different machines or days and a failed run never
damages the output it read. A stage's prerequisite (caption needs images, fusion and the ethics
check need visual captions) must have run in this run or be in the earlier output's
``stages_done``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import apache_beam as beam

from pipeline.config import STAGE_NEEDS, ConfigError, PipelineConfig, config_to_dict
from pipeline.io.readers import PLAN_FILE_MIN_SHARDS, ReadEarlierOutput
from pipeline.io.shard_files import (
    committed_parquet_path,
    committed_shard_ids,
    committed_shards,
    remove_all_shard_files,
    remove_uncommitted,
)
from pipeline.io.writer import (
    READ_STAGE,
    WriteShards,
    make_stage_clock,
    new_clock,
    remove_stale_temporaries,
    write_shard,
)
from pipeline.manifest import (
    finish_manifest,
    fleet_record,
    prompt_record,
    read_manifest,
    start_manifest,
    write_manifest,
)
from pipeline.pilot import describe_pilot, pilot_selection
from pipeline.run_lease import (
    ManifestKeeper,
    OutputBusy,
    check_output_free,
    describe,
    new_run_record,
)
from schemas.stats import ShardStats


class RunFailed(RuntimeError):
    """The pipeline ended without committing every planned shard."""


@dataclass
class RunPlan:
    """Which shards this run does; ``expected_rows`` is the writer's rows-in == rows-out check."""

    shards_total: int
    todo: list[int]
    skipped: list[int]
    expected_rows: dict[int, int]
    fingerprint: str
    input_shards: list[Any] | None = None  # readers.InputShard of the todo shards (input mode)
    source_stages: list[str] = field(default_factory=list)
    # --from: shard id -> the parquet file the earlier output's stats file names
    source_parquets: dict[int, str] | None = None
    # a pilot run (pipeline.pilot): {"flag", "n", "shards"}; todo holds only its unfinished shards
    pilot: dict[str, Any] | None = None

    @property
    def rows_todo(self) -> int:
        return sum(self.expected_rows[s] for s in self.todo)

    @property
    def shards_deferred(self) -> int:
        """Planned shards neither finished before nor done now: a pilot leaves them for later."""
        return self.shards_total - len(self.skipped) - len(self.todo)

    def summary(self) -> dict[str, Any]:
        out = {
            "shards_planned": self.shards_total,
            "shards_todo": len(self.todo),
            "shards_skipped": len(self.skipped),
            "rows_todo": self.rows_todo,
            "rows_planned": sum(self.expected_rows.values()),  # what `vecap estimate` projects to
            "plan_fingerprint": self.fingerprint,
        }
        if self.pilot is not None:
            out.update(pilot=self.pilot, shards_deferred=self.shards_deferred)
        return out


@dataclass
class RunResult:
    output: str
    plan: RunPlan
    written: dict[int, ShardStats]
    seconds: float
    status: str  # succeeded | failed | nothing_to_do

    @property
    def rows_written(self) -> int:
        return sum(s.rows for s in self.written.values())


# --------------------------------------------------------------------------- planning


def _fingerprint(config: PipelineConfig, shard_rows: dict[int, int], models: dict[str, Any]) -> str:
    """What must not change between a run and its resume: the shards, stages, models, prompts."""
    ident = {
        "input": config.reader.input if config.reader else None,
        "source": config.run.source,
        "shard_size": config.reader.shard_size if config.reader else None,
        # continuing an earlier output may pick up shards it finished since: not fingerprinted
        "shards": sorted(shard_rows.items()) if config.reader is not None else None,
        "stages": list(config.stages),
        "retry": list(config.run.retry_statuses),
        "models": {
            k: {kk: v.get(kk) for kk in ("model", "prompt_id", "prompt_text")}
            for k, v in models.items()
        },
    }
    return hashlib.blake2b(
        json.dumps(ident, sort_keys=True, default=str).encode(), digest_size=12
    ).hexdigest()


def _check_stage_chain(config: PipelineConfig, source_stages: Sequence[str]) -> None:
    have = set(source_stages)
    for stage in config.stages:
        need = STAGE_NEEDS.get(stage)
        if need and need not in have and not (need == "download" and config.reader is not None):
            where = f"the earlier output {config.run.source}" if config.run.source else "this run"
            raise ConfigError(
                f"stage {stage!r} needs {need!r}, which neither runs now nor is done in {where} "
                f"(stages done there: {sorted(have) or 'none'}); add {need!r} to --stages"
            )
        have.add(stage)


def _check_images_available(config: PipelineConfig, shards: Sequence[Any]) -> None:
    """Captioning without the download stage needs inputs that carry images (img2dataset)."""
    if "caption" not in config.stages or "download" in config.stages or config.reader is None:
        return
    from pipeline.io.readers import read_shard

    for shard in shards[:1]:
        for record in read_shard(shard, config.reader):
            if record.ok and record.jpg is None:
                raise ConfigError(
                    "the caption stage runs without the download stage, but the input rows carry "
                    "no image bytes (not img2dataset/webdataset output); add 'download' to --stages"
                )
            break


def plan_run(config: PipelineConfig, models: dict[str, Any] | None = None) -> RunPlan:
    output = config.run.output
    models = models if models is not None else prompt_record(config)
    source_stages: list[str] = []
    input_shards: list[Any] | None = None
    source_parquets: dict[int, str] | None = None
    if config.reader is not None:
        from pipeline.io.readers import plan_shards

        all_shards = plan_shards(config.reader)
        shard_rows = {s.shard_id: s.rows for s in all_shards}
    else:
        source = config.run.source
        assert source is not None
        src_manifest = read_manifest(source)
        if src_manifest is None:
            raise ConfigError(
                f"--from {source} is not a vecap output (it has no manifest.json); give the "
                "output directory of an earlier vecap run"
            )
        source_stages = list(src_manifest.get("stages_done", []))
        kept_images = (src_manifest.get("config", {}).get("writer") or {}).get("keep_images", True)
        if not kept_images and "caption" in config.stages and "download" not in config.stages:
            raise ConfigError(
                f"--from {source} was written with keep_images off, so its rows carry no image "
                "bytes to caption; add 'download' to --stages to fetch them again"
            )
        src_done = committed_shards(source)  # one listing, one batched read
        if not src_done:
            raise ConfigError(f"--from {source}: no finished shards to continue")
        shard_rows = {sid: s.rows for sid, s in src_done.items()}
        source_parquets = {sid: committed_parquet_path(source, s) for sid, s in src_done.items()}
        all_shards = None
    _check_stage_chain(config, source_stages)

    fingerprint = _fingerprint(config, shard_rows, models)
    done: set[int] = set()
    if not config.run.overwrite:
        previous = read_manifest(output)
        done = committed_shard_ids(output)  # one listing
        if done and previous is not None:
            before = previous.get("plan", {}).get("plan_fingerprint")
            if before is not None and before != fingerprint:
                raise ConfigError(
                    f"{output} holds shards from a run with a different input, shard size, stages, "
                    "model or prompt; resume with the same settings, pass --overwrite to redo "
                    "everything, or write to a new --output"
                )
        stray = sorted(set(done) - set(shard_rows))
        if stray:
            raise ConfigError(f"{output} has finished shards {stray[:5]} that are not in this plan")
    todo = sorted(sid for sid in shard_rows if sid not in done)
    # a pilot picks from the full plan (the fingerprint above is the full job's): a rerun of the
    # pilot redoes nothing, the same command without the flag continues the job
    pilot = pilot_selection(list(shard_rows), config.run.max_shards, config.run.sample_shards)
    if pilot is not None:
        chosen = set(pilot["shards"])
        todo = [sid for sid in todo if sid in chosen]
    if all_shards is not None:
        todo_set = set(todo)
        input_shards = [s for s in all_shards if s.shard_id in todo_set]
        _check_images_available(config, input_shards)
    return RunPlan(
        shards_total=len(shard_rows),
        todo=todo,
        skipped=sorted(done),
        expected_rows=shard_rows,
        fingerprint=fingerprint,
        input_shards=input_shards,
        source_stages=source_stages,
        source_parquets=source_parquets,
        pilot=pilot,
    )


# --------------------------------------------------------------------------- composition


def stage_transform(stage: str, config: PipelineConfig) -> beam.PTransform:
    """The PTransform of one stage; heavy stage modules are imported only when they run."""
    if stage == "download":
        from pipeline.download.stage import DownloadStage

        return DownloadStage(config.download)
    if stage == "caption":
        from llava_recap.stage import CaptionStage

        return CaptionStage(config.caption)
    if stage == "ethics":
        from llm_fusion.ethics import EthicsCheckStage

        return EthicsCheckStage(config.ethics)
    if stage == "fuse":
        from llm_fusion.stage import FusionStage

        return FusionStage(config.fusion)
    raise ConfigError(f"unknown stage {stage!r}")


def build_pipeline(
    pipeline: beam.Pipeline,
    config: PipelineConfig,
    plan: RunPlan,
    stage_overrides: dict[str, Any] | None = None,
    prepare: Callable[[], beam.PTransform] | None = None,
) -> beam.PCollection:
    """Add the job to ``pipeline``; returns the PCollection of the written shards' stats.

    ``stage_overrides`` replaces a stage's transform, given as a PTransform or a factory of one
    (tests and benchmarks inject fakes this way). ``prepare`` makes a Record -> Record transform
    applied right after reading (the dedup phases apply their row patches this way).
    """
    clock = new_clock()
    if config.reader is not None:
        from pipeline.io.readers import ReadInput, write_plan_file

        shards = plan.input_shards
        if shards is not None and len(shards) >= PLAN_FILE_MIN_SHARDS:
            # a web-scale plan goes in a file beside the output, not into the job graph
            first, last = shards[0].shard_id, shards[-1].shard_id
            path = f"{config.run.output.rstrip('/')}/plan/shards-{plan.fingerprint}-{first:05d}-{last:05d}.jsonl"
            read = ReadInput(config.reader, plan_file=write_plan_file(shards, path))
        else:
            read = ReadInput(config.reader, shards)
        records = pipeline | "ReadInput" >> read
    else:
        records = pipeline | "ReadEarlierOutput" >> ReadEarlierOutput(
            config.run.source,
            plan.todo,
            config.run.retry_statuses,
            plan.source_parquets,
            list_dir=f"{config.run.output.rstrip('/')}/plan",
        )
    if prepare is not None:
        records = records | "Prepare" >> prepare()
    records = records | "Clock[read]" >> make_stage_clock(READ_STAGE, clock)
    for stage in config.stages:
        override = (stage_overrides or {}).get(stage)
        if override is not None and not isinstance(override, beam.PTransform):
            override = override()  # a factory: a fresh transform per pipeline (wave)
        transform = override or stage_transform(stage, config)
        records = records | f"Stage[{stage}]" >> transform
        records = records | f"Clock[{stage}]" >> make_stage_clock(stage, clock)
    expected = {sid: plan.expected_rows[sid] for sid in plan.todo}
    return records | "WriteShards" >> WriteShards(
        config.writer, expected, stages=(READ_STAGE, *config.stages), clock=clock
    )


# --------------------------------------------------------------------------- running


def _local_workers(options: Any) -> int:
    from apache_beam.options.pipeline_options import DirectOptions

    return max(1, int(options.view_as(DirectOptions).direct_num_workers or 1))


def plan_waves(plan: RunPlan, wave_shards: int | None) -> list[RunPlan]:
    """The todo shards cut into consecutive waves of ``wave_shards`` (None: one wave).

    Why: Beam's FnApiRunner runs each fused stage over its whole input and materialises every
    multi-input Flatten (the model stages route ok rows around RunInference and flatten them
    back), so one local pipeline holds all its rows, images included, before the writer sees
    them. A wave is one local pipeline: memory is bounded by a wave, and shards are committed
    wave by wave (progress, resume). Distributed runners fuse flattens: one wave there.
    """
    if not wave_shards or wave_shards >= len(plan.todo):
        return [plan]
    waves = []
    for start in range(0, len(plan.todo), wave_shards):
        todo = plan.todo[start : start + wave_shards]
        keep = set(todo)
        waves.append(
            dataclasses.replace(
                plan,
                todo=todo,
                input_shards=None
                if plan.input_shards is None
                else [s for s in plan.input_shards if s.shard_id in keep],
            )
        )
    return waves


def writer_counters(result: Any) -> dict[str, int]:
    """The writer's Beam counters (shards fused / regrouped, rows regrouped); {} where the runner
    does not report metrics."""
    from pipeline.io.writer import METRICS_NAMESPACE
    from pipeline.runner_options import beam_counters

    return beam_counters(result, METRICS_NAMESPACE)


def _clear_output(output: str) -> None:
    """--overwrite: drop every shard file first (one listing, bulk deletes, commits first), so a
    crash mid-redo never mixes old and new."""
    remove_all_shard_files(output)


def run_pipeline(
    config: PipelineConfig,
    *,
    stream: TextIO | None = None,
    stage_overrides: dict[str, Any] | None = None,
    on_start: Callable[[RunPlan], None] | None = None,
    prepare: Callable[[], beam.PTransform] | None = None,
) -> RunResult:
    """Plan, run and record one job; raises :class:`RunFailed` if planned shards are missing,
    :class:`~pipeline.run_lease.OutputBusy` if another run is live on the output.

    Everything up to ``on_start(plan)`` is checking and planning: a mistake there raises a
    :class:`~pipeline.errors.UsageError` (one line: what is wrong, what to do) before anything in
    the output changes. After it the job runs, and its errors propagate as they are.
    """
    from pipeline.gpu_plan import plan_job_gpus
    from pipeline.preflight import preflight

    stream = stream or sys.stderr
    if config.run.dedup:  # a chain of runs (pipeline.dedup.phases), each through this function
        from pipeline.dedup.phases import run_dedup

        return run_dedup(
            config, run_phase=run_pipeline, stream=stream, stage_overrides=stage_overrides
        )
    output = config.run.output
    preflight(config, skip_stages=set(stage_overrides or ()))
    # dtype and max_model_len made concrete, and a plan that cannot fit the GPU refused
    config, gpu_plan = plan_job_gpus(config)
    models = prompt_record(config)
    # one job per output: refuse before touching anything if another run is live here
    check_output_free(output, read_manifest(output), takeover=config.run.takeover, stream=stream)
    plan = plan_run(config, models)
    if config.run.overwrite:  # only once the plan stands: a planning error keeps the old shards
        _clear_output(output)
    remove_stale_temporaries(output)
    previous = None if config.run.overwrite else read_manifest(output)
    manifest = start_manifest(
        previous,
        config_dict=config_to_dict(config),
        models=models,
        stages=list(config.stages),
        source_stages=plan.source_stages,
        source=config.run.source,
        plan=plan.summary(),
    )
    manifest["gpu_plan"] = gpu_plan.summary()
    # per run too: the top-level plan is the latest run's (vecap estimate groups runs by fleet)
    manifest["runs"][-1]["fleet"] = fleet_record(
        manifest["gpu_plan"], manifest["config"], manifest["stages"]
    )
    keeper = _claim_output(config, manifest, stream)
    try:
        if on_start is not None:
            on_start(plan)
        if gpu_plan.gpu is not None and gpu_plan.engines:
            for line in gpu_plan.lines():
                print(f"vecap run: {line.strip()}", file=stream)
        return _run_claimed(config, plan, keeper, stream, stage_overrides, prepare)
    except BaseException:
        if keeper.manifest.get("status") == "running":  # failed before the pipeline ran
            keeper.stop()
            keeper.replace(finish_manifest(keeper.manifest, status="failed", summary={}))
        raise
    finally:
        keeper.stop()


def _claim_output(
    config: PipelineConfig, manifest: dict[str, Any], stream: TextIO
) -> ManifestKeeper:
    """Record this run (id, host, pid, start, heartbeat) in the manifest and start renewing the
    heartbeat; refuse if another launcher claimed the output at the same moment."""
    output = config.run.output
    run = new_run_record(config.run.heartbeat_s)
    runs = [*manifest["runs"][:-1], {**manifest["runs"][-1], "run_id": run["run_id"]}]
    keeper = ManifestKeeper(
        output,
        {**manifest, "run": run, "runs": runs},
        write_manifest,
        heartbeat_s=config.run.heartbeat_s,
        stream=stream,
        read=read_manifest,
    )
    keeper.replace(keeper.manifest, claim=True)
    # two launchers starting together both found the output free: the last manifest write wins
    # and the other sees it here (object stores read their own writes)
    now = read_manifest(output) or {}
    if (now.get("run") or {}).get("run_id") != run["run_id"]:
        raise OutputBusy(f"{output} was claimed at the same moment by {describe(now['run'])}")
    return keeper.start()


def _run_claimed(
    config: PipelineConfig,
    plan: RunPlan,
    keeper: ManifestKeeper,
    stream: TextIO,
    stage_overrides: dict[str, Any] | None,
    prepare: Callable[[], beam.PTransform] | None = None,
) -> RunResult:
    from pipeline.progress import ShardProgress, run_summary_table
    from pipeline.runner_options import (
        CPU_STAGES,
        is_local,
        local_beam_args,
        make_pipeline,
        pipeline_options,
    )

    output = config.run.output
    manifest = keeper.manifest
    t0 = time.time()
    print(
        f"vecap run: {plan.shards_total} shards planned, {len(plan.skipped)} already finished, "
        f"{len(plan.todo)} to do ({plan.rows_todo} rows); stages: {', '.join(config.stages) or 'none'}",
        file=stream,
    )
    if plan.pilot is not None:
        print(
            f"vecap run: {describe_pilot(plan.pilot, plan.shards_total)}; {plan.shards_deferred} "
            f"left for later: the same command without {plan.pilot['flag']} continues the job",
            file=stream,
        )
    # Shards without rows never reach the writer: commit them here.
    for sid in [s for s in plan.todo if plan.expected_rows[s] == 0]:
        write_shard(config.writer, sid, [], 0)
    todo_rows = [s for s in plan.todo if plan.expected_rows[s] > 0]
    if not todo_rows:
        status = "nothing_to_do" if not plan.todo else "succeeded"
        _remove_orphans(output, stream)
        keeper.stop()
        keeper.replace(finish_manifest(manifest, status=status, summary={"rows_written": 0}))
        return RunResult(output, plan, {}, time.time() - t0, status)
    run_plan = dataclasses.replace(
        plan,
        todo=todo_rows,
        input_shards=None
        if plan.input_shards is None
        else [s for s in plan.input_shards if s.rows > 0],
    )

    streaming = streaming_job(config)
    beam_args = local_beam_args(
        config.run.beam_args,
        config.stages,
        [plan.expected_rows[s] for s in run_plan.todo],
        cpu_stages=set(config.stages) if streaming else CPU_STAGES,
    )
    if beam_args != list(config.run.beam_args):
        print(f"vecap run: local runner: {' '.join(beam_args)}", file=stream)
    options = pipeline_options(beam_args)
    local = is_local(options)
    # Waves bound what the local runner materialises at a model stage's Flatten; a CPU-only
    # job (download) and a streaming one (server backends, pipeline.inflight) are fused from
    # read to write, each worker holding only its shards in flight: one wave.
    wave_shards = local and not streaming and not set(config.stages) <= CPU_STAGES
    waves = plan_waves(
        run_plan, config.run.local_wave_shards * _local_workers(options) if wave_shards else None
    )
    if len(waves) > 1:
        print(
            f"vecap run: local runner: {len(waves)} waves of up to {len(waves[0].todo)} shards",
            file=stream,
        )
    status = "failed"
    counters: dict[str, int] = {}
    progress = ShardProgress(
        output, run_plan.todo, enabled=config.run.progress and local, stream=stream
    )
    engines = LocalEngines(config) if local else None
    try:
        if engines is not None:
            engines.start(stream)
        with progress:
            for wave in waves:
                pipeline = make_pipeline(pipeline_options(beam_args))
                build_pipeline(pipeline, config, wave, stage_overrides, prepare)
                result = pipeline.run()
                result.wait_until_finish()
                for name, value in writer_counters(result).items():
                    counters[name] = counters.get(name, 0) + value
        if counters.get("rows_regrouped"):
            print(
                f"vecap run: note: {counters['rows_regrouped']} rows reached the writer split "
                "across bundles (a stage or the runner redistributed them) and were regrouped "
                "through a shuffle: correct, at the cost of holding them in the shuffle",
                file=stream,
            )
        done_ids = committed_shard_ids(output)  # one listing
        missing = [s for s in plan.todo if s not in done_ids]
        if missing:
            raise RunFailed(f"the pipeline ended but shards {missing[:10]} have no stats file")
        status = "succeeded"
        # every planned shard is committed: the uncommitted attempt files (failed, killed or
        # losing attempts) go, so that OUT/shards/*.parquet is exactly the committed set
        _remove_orphans(output, stream)
    finally:
        if engines is not None:
            engines.stop()
        # this run's shards, read in bulk: one listing and one batched read
        written = committed_shards(output, plan.todo)
        seconds = time.time() - t0
        summary = {
            **counters,
            "shards_written": len(written),
            "rows_written": sum(s.rows for s in written.values()),
            "seconds": round(seconds, 3),
        }
        if plan.pilot is not None:  # what the whole job still needs after this pilot
            summary["shards_left"] = plan.shards_total - len(plan.skipped) - len(written)
        keeper.stop()
        keeper.replace(finish_manifest(manifest, status=status, summary=summary))
    if config.run.progress:
        print(run_summary_table(written, seconds), file=stream)
    if plan.pilot is not None:
        print(
            f"vecap run: pilot done: {len(plan.skipped) + len(written)} of {plan.shards_total} "
            f"planned shards committed; `vecap estimate {output}` projects the whole job",
            file=stream,
        )
    return RunResult(output, plan, written, seconds, status)


def model_stage_configs(config: PipelineConfig) -> list[tuple[str, Any, bool]]:
    """(stage, GenerationConfig, multimodal) of each model stage this job runs."""
    out = []
    if "caption" in config.stages and config.caption is not None:
        out.append(("caption", config.caption.generation, True))
    ethics_gen = getattr(config.ethics, "generation", None)
    if "ethics" in config.stages and ethics_gen is not None:
        out.append(("ethics", ethics_gen, False))
    if "fuse" in config.stages and config.fusion is not None:
        out.append(("fuse", config.fusion.generation, False))
    return out


def streaming_job(config: PipelineConfig) -> bool:
    """Every model stage streams to servers (pipeline.inflight) and the job has at least one:
    it then runs fused from read to write, in one wave, in worker processes."""
    models = model_stage_configs(config)
    return bool(models) and all(g.streams and stage != "ethics" for stage, g, _ in models)


class LocalEngines:
    """On the local runner the launcher starts the job's engine servers (one per GPU per model,
    all loading at once) before the first row, so a model that cannot load fails the job at
    once and the waves and worker processes attach to loaded engines; at the end it stops the
    servers it started (a server another job started on this machine is left running)."""

    def __init__(self, config: PipelineConfig) -> None:
        seen: dict[tuple, tuple[Any, bool]] = {}
        for _stage, gen, multimodal in model_stage_configs(config):
            if gen.backend == "vllm" and gen.streams:
                seen.setdefault((gen.engine_key(), multimodal), (gen, multimodal))
        self.wanted = list(seen.values())
        self.started: list[Any] = []

    def start(self, stream: TextIO) -> None:
        """Every model's servers at once (a caption and a fusion server load side by side)."""
        if not self.wanted:
            return
        from concurrent.futures import ThreadPoolExecutor

        from pipeline.generation.server_backend import fleet_for

        fleets = [(gen, fleet_for(gen, multimodal)) for gen, multimodal in self.wanted]
        before = [fleet.records() for _, fleet in fleets]
        t0 = time.time()
        with ThreadPoolExecutor(len(fleets)) as pool:
            futures = [pool.submit(fleet.ensure) for _, fleet in fleets]
            # every fleet that started a server is stopped at the end, even if another failed
            errors = [f.exception() for f in futures]
        for (gen, fleet), old, future in zip(fleets, before, futures, strict=True):
            now = fleet.records()
            if any(
                r is not None and (old[n] is None or old[n]["pid"] != r["pid"])
                for n, r in now.items()
            ):
                self.started.append(fleet)
            if future.exception() is None:
                endpoints = future.result()
                print(
                    f"vecap run: {gen.model}: {len(endpoints)} engine(s) on "
                    f"{', '.join(e.slot for e in endpoints)} ready in {time.time() - t0:.0f}s",
                    file=stream,
                )
        for error in errors:
            if error is not None:
                raise error

    def stop(self) -> None:
        for fleet in self.started:
            fleet.stop()


def _remove_orphans(output: str, stream: TextIO) -> None:
    removed = remove_uncommitted(output)
    if removed.all:
        print(
            f"vecap run: removed {len(removed.all)} uncommitted attempt files "
            f"({removed.bytes:,} bytes) left by failed, killed or losing write attempts",
            file=stream,
        )


__all__ = [
    "RunFailed",
    "RunPlan",
    "RunResult",
    "build_pipeline",
    "plan_run",
    "plan_waves",
    "run_pipeline",
    "stage_transform",
]
