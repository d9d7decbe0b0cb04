"""`vecap estimate OUT`: the whole job's wall time and GPU-hours, projected from committed shards.

What is measured (per committed shard, from its stats file): rows, the wall-clock interval from
its first row read to its commit, and the critical-path seconds of each stage inside it
(``ShardStats.stage_seconds``: read, download, caption, ethics, fuse, write; what no clock covers,
e.g. rows waiting for the writer or the stats file's creation, is ``other``). Shards overlap (several are in flight at once, a stage of one while another stage of
the next), so summed shard seconds are not wall time. The figures used:

- busy wall ``B``: the length of the union of the shards' intervals (the time at least one shard
  was in flight; start-up, model loading and the gaps between runs are not in it and are not
  projected: they are a fixed cost per run, printed beside the estimate);
- a stage's share ``f_s``: its summed seconds over all shards' summed seconds;
- a stage's wall seconds per row: ``f_s * B / rows_measured``.

Projection to the whole plan (``rows_planned`` from the manifest), assuming throughput is linear
in rows and in GPUs, every stage included (the download runs on the machines that hold the
GPUs, so more GPUs means as many more download workers)::

    wall_s(stage) = f_s * B / rows_measured * rows_planned * pilot_gpus / gpus

GPU-hours are GPUs x wall-clock hours: ``held`` = the fleet's GPUs x the projected wall (what a
per-GPU-hour price applies to: the GPUs are held for the whole job, its CPU stages' share too);
a GPU stage's GPU-hours are the part of ``held`` attributed to it by its share ``f_s``. They are
not utilisation (a GPU idle inside the stage still counts), and under the linear assumption they
do not depend on the GPU count: ``held = pilot_gpus * B * rows_planned / rows_measured / 3600``.

Only one fleet's shards are measured: an output's runs may have run on different fleets (a pilot
on one local GPU, the job continued on Dataflow with 64), and their intervals merged and scaled
as one would be wrong both ways. Each run records its fleet in the manifest
(``runs[i]["fleet"]``: GPU, runner options, --gpus); runs alike in GPU type, GPUs per machine and
machines form a fleet, and a shard belongs to the run whose [started_at, finished_at] holds its
commit time. The fleet measured is that of the latest run that committed shards, or ``--run``'s;
the shards left out are counted with the reason.

Another GPU type than the pilot's is refused, not scaled: caption and fusion throughput depends
on the GPU's memory bandwidth, KV-cache size (rows at once), dtype (no bf16 below Ampere) and the
engine, so any fixed ratio table would be a made-up number dressed as a measurement; a pilot on
that GPU type measures it for a few shards' cost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import UsageError
from schemas.stats import ShardStats

OTHER = "other"  # a shard's seconds no clock covers (rows waiting for the writer, the commit)
MODEL_STAGES = ("caption", "ethics", "fuse")
_STAGE_ORDER = ("read", "download", "caption", "ethics", "fuse", "write", OTHER)


class EstimateError(UsageError):
    """The output or the flags cannot give an estimate; the message says what to do."""


@dataclass(frozen=True)
class StageFigure:
    stage: str
    shard_seconds: float  # summed over the measured shards (overlapping wall-clock)
    share: float  # of all the measured shards' seconds
    wall_s_per_row: float  # share * busy wall / rows measured
    on_gpu: bool


@dataclass(frozen=True)
class Measured:
    shards: int
    rows: int
    busy_wall_s: float  # union of the shards' [started_at, finished_at]
    shard_seconds: float  # sum of the shards' seconds
    stages: tuple[StageFigure, ...]

    @property
    def in_flight(self) -> float:
        """Shards in flight at once, on average over the busy wall."""
        return self.shard_seconds / self.busy_wall_s if self.busy_wall_s > 0 else 0.0


@dataclass(frozen=True)
class Fleet:
    gpus: int | None  # 0: the models ran on no GPU of vecap's; None: not known
    gpu_type: str | None  # a vecap GPU type (pipeline.generation.gpu_types) or the driver's name
    source: str  # where the figure comes from


@dataclass(frozen=True)
class LeftOut:
    shards: int
    runs: tuple[str, ...]  # the runs they were committed in; () when in none's window
    why: str


@dataclass
class Estimate:
    output: str
    measured: Measured
    shards_planned: int
    shards_committed: int
    rows_planned: int
    rows_planned_source: str
    pilot: dict[str, Any] | None
    pilot_fleet: Fleet
    fleet: Fleet
    gpu_scale: float  # pilot GPUs / fleet GPUs
    stage_wall_s: dict[str, float]
    wall_s: float
    gpu_hours: dict[str, float]  # GPU stages only; {} when the fleet's GPUs are not known
    gpu_hours_held: float | None
    rows_committed: int  # the continuation's share of the projection is the rows not committed
    overhead_s: float | None  # the runs' seconds outside the busy wall (fixed costs)
    notes: list[str] = field(default_factory=list)
    runs_measured: tuple[str, ...] = ()  # the runs (one fleet) whose shards were measured
    left_out: tuple[LeftOut, ...] = ()  # committed shards with timings not measured, and why

    @property
    def left_share(self) -> float:
        """The part of the projection still to run (rows not committed yet)."""
        if self.rows_planned <= 0:
            return 0.0
        return max(self.rows_planned - self.rows_committed, 0) / self.rows_planned

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["measured"]["in_flight"] = round(self.measured.in_flight, 3)
        data["scaling"] = "linear in rows and in GPUs, every stage"
        data["left"] = {
            "rows": max(self.rows_planned - self.rows_committed, 0),
            "wall_s": self.wall_s * self.left_share,
            "gpu_hours_held": None
            if self.gpu_hours_held is None
            else self.gpu_hours_held * self.left_share,
        }
        return data


# --------------------------------------------------------------------------- measuring


def _union_length(intervals: Iterable[tuple[float, float]]) -> float:
    total, end = 0.0, None
    start = 0.0
    for a, b in sorted(intervals):
        if end is None or a > end:
            if end is not None:
                total += end - start
            start, end = a, b
        else:
            end = max(end, b)
    if end is not None:
        total += end - start
    return total


def measure(stats: Iterable[ShardStats], gpu_stages: Collection[str]) -> Measured:
    """The figures of the shards that carry timings and rows (empty shards cost nothing and are
    committed without a clock; outputs of old vecap versions have no times)."""
    timed = [s for s in stats if s.rows > 0 and s.started_at > 0 and s.finished_at > 0]
    if not timed:
        raise EstimateError(
            "no committed shard with rows carries timings (started_at, finished_at): nothing to "
            "project from; run a pilot with this vecap (vecap run ... --sample-shards N)"
        )
    rows = sum(s.rows for s in timed)
    busy = _union_length((s.started_at, s.finished_at) for s in timed)
    seconds: dict[str, float] = {}
    for s in timed:
        for stage, value in s.stage_seconds.items():
            seconds[stage] = seconds.get(stage, 0.0) + float(value)
        seconds[OTHER] = seconds.get(OTHER, 0.0) + max(s.seconds - sum(s.stage_seconds.values()), 0)
    total = sum(seconds.values())
    if busy <= 0 or total <= 0:
        raise EstimateError("the committed shards took no measurable time: nothing to project")
    order = {name: i for i, name in enumerate(_STAGE_ORDER)}
    figures = tuple(
        StageFigure(
            stage=stage,
            shard_seconds=value,
            share=value / total,
            wall_s_per_row=value / total * busy / rows,
            on_gpu=stage in gpu_stages,
        )
        for stage, value in sorted(seconds.items(), key=lambda kv: order.get(kv[0], 99))
    )
    return Measured(len(timed), rows, busy, sum(s.seconds for s in timed), figures)


def project(
    measured: Measured, rows_planned: int, pilot: Fleet, fleet: Fleet
) -> tuple[float, dict[str, float], float, dict[str, float], float | None]:
    """(gpu scale, wall seconds per stage, wall seconds, GPU-hours per GPU stage, GPU-hours held)
    of ``rows_planned`` rows on ``fleet``, from what ran on ``pilot`` (see the module doc)."""
    scale = pilot.gpus / fleet.gpus if pilot.gpus and fleet.gpus else 1.0
    stage_wall = {f.stage: f.wall_s_per_row * rows_planned * scale for f in measured.stages}
    wall = sum(stage_wall.values())
    if not fleet.gpus:
        return scale, stage_wall, wall, {}, None
    gpu_hours = {
        f.stage: fleet.gpus * stage_wall[f.stage] / 3600 for f in measured.stages if f.on_gpu
    }
    return scale, stage_wall, wall, gpu_hours, fleet.gpus * wall / 3600


# --------------------------------------------------------------------------- the fleet


def gpu_type_of(gpu: Mapping[str, Any]) -> str | None:
    """The vecap GPU type of a manifest's ``gpu_plan["gpu"]``: its name when it is one (--gpu-type,
    Dataflow's accelerator), else the one type with its memory (3%) and compute capability
    (nvidia-smi names such as "NVIDIA H100 80GB HBM3"); None when none or several match."""
    from pipeline.generation.gpu_types import GPU_TYPES, UnknownGpuType, gpu_spec

    try:
        return gpu_spec(str(gpu.get("name", ""))).name
    except UnknownGpuType:
        pass
    memory = float(gpu.get("memory_gib") or 0)
    capability = tuple(gpu.get("compute_capability") or ())
    found = [
        name
        for name, (mem, cc) in GPU_TYPES.items()
        if tuple(cc) == capability and abs(mem - memory) <= 0.03 * mem
    ]
    return found[0] if len(found) == 1 else None


def _machines(beam_args: list[str]) -> tuple[int | None, str]:
    from apache_beam.options.pipeline_options import WorkerOptions

    from pipeline.runner_options import is_local, pipeline_options, runner_name

    options = pipeline_options(beam_args)
    if is_local(options):
        return 1, "local runner: this machine"
    runner = runner_name(options)
    if runner.lower() in ("dataflowrunner", "dataflow"):
        workers = options.view_as(WorkerOptions)
        n, most = workers.num_workers, workers.max_num_workers
        if n and (not most or most == n):
            return int(n), f"{runner}: --num_workers {n}"
        return None, f"{runner} without a fixed worker count (autoscaling)"
    return None, f"{runner}: its machines are not recorded"


def _picked_gpus(record: Mapping[str, Any]) -> int | None:
    """GPUs a machine's engines were placed on, when every model stage names them (--gpus)."""
    from pipeline.generation.devices import parse_gpus

    picked: set[int] = set()
    for spec in (record.get("stage_gpus") or {}).values():
        chosen = parse_gpus(spec)
        if chosen is None:
            return None
        picked.update(chosen)
    return len(picked) or None


def _top_level_record(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fleet record of the latest run, from the manifest's top level (None: no gpu_plan)."""
    from pipeline.manifest import fleet_record

    plan = manifest.get("gpu_plan")
    if plan is None:
        return None
    return fleet_record(plan, manifest.get("config") or {}, manifest.get("stages") or MODEL_STAGES)


FleetKey = tuple[Any, ...]  # (GPU type, GPUs per machine, machines): runs alike measure together


def run_fleet(record: Mapping[str, Any] | None) -> tuple[Fleet, FleetKey]:
    """The GPUs of one run (its ``fleet`` record, see :func:`pipeline.manifest.fleet_record`),
    and the key that groups it with the runs on the same fleet."""
    if record is None:
        return Fleet(None, None, "the manifest has no gpu_plan (written by an older vecap)"), (
            None,
            None,
            None,
        )
    gpu = record.get("gpu")
    gpu_type = None if gpu is None else gpu_type_of(gpu) or gpu.get("name")
    machines, how = _machines(list(record.get("beam_args") or []))
    if not record.get("gpu_stages"):
        return Fleet(0, None, "no model stage ran on vecap's GPUs (download only, or openai)"), (
            None,
            0,
            machines,
        )
    if gpu is None:
        if machines == 1 and record.get("gpu_source") == "unknown":
            return Fleet(0, None, f"{how}, no GPU: the models ran on the CPU"), (None, 0, 1)
        return Fleet(None, None, f"the job's GPU is not recorded ({how})"), (None, None, machines)
    per_machine = int(gpu.get("count") or 1)
    picked = _picked_gpus(record)
    if picked is not None:
        per_machine = min(per_machine, picked)
    if machines is None:
        return Fleet(None, gpu_type, how), (gpu_type, per_machine, None)
    source = (
        f"{how}: {machines} machine(s) x {per_machine} GPU(s), the GPU from the manifest's "
        f"gpu_plan ({record.get('gpu_source')})"
    )
    return Fleet(machines * per_machine, gpu_type, source), (gpu_type, per_machine, machines)


def pilot_fleet(
    manifest: Mapping[str, Any],
    pilot_gpus: int | None = None,
    run: Mapping[str, Any] | None = None,
) -> Fleet:
    """The GPUs the measured shards ran on: ``run``'s fleet record (default: the latest run's,
    from the manifest's GPU plan and runner options)."""
    record = (run or {}).get("fleet") if run is not None else None
    fleet, _ = run_fleet(record if record is not None else _top_level_record(manifest))
    if pilot_gpus is not None:
        return Fleet(pilot_gpus, fleet.gpu_type, "--pilot-gpus")
    return fleet


def full_fleet(pilot: Fleet, gpus: int | None, gpu_type: str | None) -> Fleet:
    """The full run's fleet: ``--gpus`` / ``--gpu-type``, else the pilot's; refused where the
    pilot's figures cannot say anything about it (see the module doc)."""
    if gpu_type is not None:
        from pipeline.generation.gpu_types import UnknownGpuType, gpu_spec

        try:
            wanted = gpu_spec(gpu_type).name
        except UnknownGpuType as e:
            raise EstimateError(str(e)) from e
        if not pilot.gpus:
            raise EstimateError(
                f"--gpu-type {gpu_type}: the measured shards ran on no known GPU ({pilot.source}); "
                f"run the pilot on {wanted} GPUs (vecap run ... --sample-shards N)"
            )
        if pilot.gpu_type != wanted:
            raise EstimateError(
                f"--gpu-type {wanted}: the pilot ran on {pilot.gpu_type or 'an unknown GPU type'}; "
                "throughput on another GPU type is not scaled by a guessed ratio: run the pilot on "
                f"{wanted} (vecap run ... --gpu-type {wanted} --sample-shards N)"
            )
    if gpus is None:
        return dataclasses.replace(pilot, source=f"as the pilot: {pilot.source}")
    if pilot.gpus is None:
        raise EstimateError(
            f"--gpus {gpus}: the pilot's GPU count is not known ({pilot.source}); say it with "
            "--pilot-gpus N"
        )
    if pilot.gpus == 0:
        raise EstimateError(
            f"--gpus {gpus}: the pilot ran its models on no GPU ({pilot.source}), so its times "
            "say nothing about GPUs; run the pilot on the GPUs of the full run"
        )
    return Fleet(gpus, pilot.gpu_type, "--gpus")


# --------------------------------------------------------------------------- one fleet's runs


@dataclass(frozen=True)
class Selection:
    """The runs of one fleet and the committed shards they wrote (what is measured)."""

    runs: tuple[Mapping[str, Any], ...]
    labels: tuple[str, ...]
    fleet: Fleet
    gpu_stages: frozenset[str]
    shards: dict[int, ShardStats]
    left_out: tuple[LeftOut, ...]
    notes: tuple[str, ...]


def _label(i: int, run: Mapping[str, Any]) -> str:
    return f"#{i + 1}" + (f" {run['run_id']}" if run.get("run_id") else "")


def _timed(s: ShardStats) -> bool:
    return s.rows > 0 and s.started_at > 0 and s.finished_at > 0


def _find_run(runs: list[Mapping[str, Any]], ref: str) -> int:
    """``--run``: a run's id, or its number in the manifest's runs (1 = the first; #N too)."""
    ref = str(ref).strip()
    for i, run in enumerate(runs):
        if run.get("run_id") == ref:
            return i
    number = ref.removeprefix("#")
    if number.isdigit() and 1 <= int(number) <= len(runs):
        return int(number) - 1
    known = ", ".join(_label(i, r) for i, r in enumerate(runs)) or "none"
    raise EstimateError(f"--run {ref}: no such run in the manifest (its runs: {known})")


def _windows(runs: list[Mapping[str, Any]]) -> list[tuple[float, float] | None]:
    """Each run's [started_at, finished_at]; a run without an end (killed, or still running)
    ends where the next one starts. One job per output: the windows do not overlap."""
    out: list[tuple[float, float] | None] = []
    for i, run in enumerate(runs):
        start = run.get("started_at")
        end = run.get("finished_at")
        if end is None:
            end = runs[i + 1].get("started_at") if i + 1 < len(runs) else None
        out.append(None if start is None else (float(start), float("inf") if end is None else end))
    return out


def _owner(windows: list[tuple[float, float] | None], t: float) -> int | None:
    """The run whose window holds the commit time ``t``."""
    held = [i for i, w in enumerate(windows) if w is not None and w[0] <= t <= w[1]]
    return held[-1] if held else None


def select_runs(
    manifest: Mapping[str, Any], done: Mapping[int, ShardStats], run_ref: str | None = None
) -> Selection:
    """The shards to measure: those committed inside the runs of ONE fleet (GPU type, GPUs per
    machine, machines), by default the fleet of the latest run that committed any; ``run_ref``
    (--run) picks the fleet of that run. Times from different fleets are never merged."""
    runs: list[Mapping[str, Any]] = list(manifest.get("runs") or []) or [{}]
    recorded = any("fleet" in r for r in runs)
    fleets: list[tuple[Fleet, FleetKey, dict[str, Any] | None] | None] = []
    for i, run in enumerate(runs):
        if "fleet" in run:
            record = run["fleet"]
        elif i == len(runs) - 1 or not recorded:  # the top level is the latest run's
            record = _top_level_record(manifest)
        else:
            fleets.append(None)  # an older vecap's run: its fleet is not known
            continue
        fleets.append((*run_fleet(record), record))
    notes: list[str] = []
    if not recorded and len(runs) > 1:
        notes.append(
            "the manifest records no fleet per run (an older vecap): every run is taken to have "
            "run on the latest run's fleet"
        )
    chosen = None if run_ref is None else _find_run(runs, run_ref)
    if chosen is not None and fleets[chosen] is None:
        raise EstimateError(
            f"--run {run_ref}: the manifest does not record that run's fleet (an older vecap); "
            "estimate from a run of this vecap"
        )
    keys = {f[1] for f in fleets if f is not None}
    if None not in fleets and len(keys) == 1:  # one fleet: every committed shard, as ever
        index = len(runs) - 1 if chosen is None else chosen
        members = list(range(len(runs)))
        measured = dict(done)
        left: list[LeftOut] = []
    else:
        windows = _windows(runs)
        owner = {sid: _owner(windows, s.finished_at) for sid, s in done.items() if _timed(s)}
        if chosen is None:  # the latest run that committed shards (or the latest run)
            wrote = [j for j in owner.values() if j is not None and fleets[j] is not None]
            chosen = max(wrote) if wrote else len(runs) - 1
        index = chosen
        key = fleets[index][1]
        members = [j for j, f in enumerate(fleets) if f is not None and f[1] == key]
        measured = {sid: done[sid] for sid, j in owner.items() if j in members}
        left = _left_out(runs, fleets, owner, members)
    fleet, _, record = fleets[index]
    if record is None:  # an older manifest: vecap's model stages
        gpu_stages = set(MODEL_STAGES) & set(manifest.get("stages") or MODEL_STAGES)
    else:
        gpu_stages = set(record.get("gpu_stages") or ())
    return Selection(
        runs=tuple(runs[j] for j in members),
        labels=tuple(_label(j, runs[j]) for j in members),
        fleet=fleet,
        gpu_stages=frozenset(gpu_stages),
        shards=measured,
        left_out=tuple(left),
        notes=tuple(notes),
    )


def _left_out(runs, fleets, owner, members) -> list[LeftOut]:
    """The timed shards not measured, grouped by why: another fleet (one group per fleet), a
    run whose fleet is not recorded, or a commit time in no run's window."""
    groups: dict[str, tuple[list[int], set[int]]] = {}
    for j in owner.values():
        if j in members:
            continue
        if j is None:
            why = "committed outside every recorded run's [started_at, finished_at]"
        elif fleets[j] is None:
            why = "the run's fleet is not recorded (an older vecap)"
        else:
            why = f"another fleet: {_fleet(fleets[j][0])}"
        count, in_runs = groups.setdefault(why, ([0], set()))
        count[0] += 1
        if j is not None:
            in_runs.add(j)
    return [
        LeftOut(count[0], tuple(_label(j, runs[j]) for j in sorted(in_runs)), why)
        for why, (count, in_runs) in groups.items()
    ]


# --------------------------------------------------------------------------- the output


def _overhead(runs: Iterable[Mapping[str, Any]], busy: float) -> float | None:
    runs = [r for r in runs if r.get("shards_written") and "seconds" in r]
    if not runs:
        return None
    return max(sum(float(r["seconds"]) for r in runs) - busy, 0.0)


def _last_pilot(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    pilots = [r["pilot"] for r in manifest.get("runs") or [] if r.get("pilot")]
    return pilots[-1] if pilots else None


def _positive(name: str, value: Any, zero_ok: bool = False) -> int | None:
    """A count flag, refused in one line when it is not a whole number in range."""
    if value is None:
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        n = -1
    if n < (0 if zero_ok else 1):
        raise EstimateError(
            f"{name} must be a whole number >= {0 if zero_ok else 1}, got {value!r}"
        )
    return n


def estimate_output(
    output: str,
    *,
    gpus: Any = None,
    gpu_type: str | None = None,
    pilot_gpus: Any = None,
    run: str | None = None,
) -> Estimate:
    from pipeline.io.shard_files import committed_shards
    from pipeline.manifest import read_manifest

    gpus = _positive("--gpus", gpus)
    pilot_gpus = _positive("--pilot-gpus", pilot_gpus, zero_ok=True)
    try:
        manifest = read_manifest(output)
    except (OSError, ValueError) as e:
        raise EstimateError(f"{output}: cannot read its manifest.json ({e})") from e
    if manifest is None:
        raise EstimateError(
            f"{output} is not a vecap output (no manifest.json); give the --output of a vecap run"
        )
    plan = manifest.get("plan") or {}
    if plan.get("shards_planned") is None:
        raise EstimateError(f"{output}: its manifest records no shard plan")
    done = committed_shards(output)
    if not done:
        raise EstimateError(
            f"{output}: no committed shards yet; run a pilot first (vecap run ... --max-shards N)"
        )
    chosen = select_runs(manifest, done, run)
    measured = measure(chosen.shards.values(), chosen.gpu_stages)
    notes: list[str] = list(chosen.notes)
    shards_planned = int(plan["shards_planned"])
    if plan.get("rows_planned") is not None:
        rows_planned, rows_source = int(plan["rows_planned"]), "the manifest's plan"
    else:
        per_shard = sum(s.rows for s in done.values()) / len(done)
        rows_planned = round(per_shard * shards_planned)
        rows_source = "approximated: mean rows of the committed shards x shards planned"
        notes.append(
            "the manifest has no rows_planned (an older vecap): rerun the pilot command once "
            "(it redoes nothing) to record the exact figure"
        )
    pilot = chosen.fleet
    if pilot_gpus is not None:
        pilot = Fleet(pilot_gpus, pilot.gpu_type, "--pilot-gpus")
    fleet = full_fleet(pilot, gpus, gpu_type)
    scale, stage_wall, wall, gpu_hours, held = project(measured, rows_planned, pilot, fleet)
    if len(done) >= shards_planned and not chosen.left_out:
        notes.append("every planned shard is committed: these are the job's own figures")
    if fleet.gpus is None:
        notes.append("GPU-hours not estimated: the GPU count is not known (--pilot-gpus N)")
    elif fleet.gpus == 0:
        notes.append("no GPU-hours: no model stage ran on a GPU of vecap's")
    if manifest.get("dedup"):
        phases = [
            p["output"]
            for name, p in manifest["dedup"].get("phases", {}).items()
            if name in ("caption", "fuse") and p.get("output")
        ]
        notes.append(
            "a --dedup output: these figures are its assemble pass; its model phases ran as "
            f"outputs of their own ({', '.join(phases) or 'OUT/dedup/<phase>'}): estimate those"
        )
    if measured.shards < 4:
        notes.append(
            f"only {measured.shards} shard(s) measured: a larger pilot (--sample-shards) gives a "
            "steadier figure, and one that fills the fleet shows its throughput at full load"
        )
    return Estimate(
        output=output,
        measured=measured,
        shards_planned=shards_planned,
        shards_committed=len(done),
        rows_planned=rows_planned,
        rows_planned_source=rows_source,
        pilot=_last_pilot(manifest),
        pilot_fleet=pilot,
        fleet=fleet,
        gpu_scale=scale,
        stage_wall_s=stage_wall,
        wall_s=wall,
        gpu_hours=gpu_hours,
        gpu_hours_held=held,
        rows_committed=sum(s.rows for s in done.values()),
        overhead_s=_overhead(chosen.runs, measured.busy_wall_s),
        notes=notes,
        runs_measured=chosen.labels,
        left_out=chosen.left_out,
    )


# --------------------------------------------------------------------------- printing


def _hours(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:.3g}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:,.2f} h"


def _fleet(f: Fleet) -> str:
    count = "? GPUs" if f.gpus is None else ("no GPU" if f.gpus == 0 else f"{f.gpus} GPU(s)")
    kind = f" {f.gpu_type}" if f.gpu_type and f.gpus else ""
    return f"{count}{kind} ({f.source})"


def format_estimate(e: Estimate) -> str:
    from pipeline.pilot import describe_pilot

    m = e.measured
    lines = [f"{e.output}: {e.shards_committed} of {e.shards_planned} planned shards committed"]
    if e.pilot:
        lines[0] += f"; {describe_pilot(e.pilot, e.shards_planned)}"
    lines += [
        "",
        f"measured: {m.rows} rows in {m.shards} shards; shards in flight {_duration(m.busy_wall_s)} "
        f"(union of first read to commit), {m.in_flight:.2f} shards at once on average",
    ]
    if e.overhead_s is not None:
        lines.append(
            f"  + {_duration(e.overhead_s)} of the runs outside it (start-up, model loading, "
            "between waves): a fixed cost per run, not projected"
        )
    lines.append(f"pilot fleet: {_fleet(e.pilot_fleet)}")
    if e.left_out:  # several fleets: only one's shards are measured
        lines.append(
            f"runs measured: {', '.join(e.runs_measured)} (one fleet: {m.shards} shards); "
            "the shards of other runs are left out (--run RUN picks another run's fleet):"
        )
        for lo in e.left_out:
            where = f" of run(s) {', '.join(lo.runs)}" if lo.runs else ""
            lines.append(f"  left out: {lo.shards} shard(s){where}: {lo.why}")
    elif len(e.runs_measured) > 1:
        lines.append(f"runs measured: {', '.join(e.runs_measured)} (all on one fleet)")
    pilot_gpus = e.pilot_fleet.gpus or 0
    lines.append(f"{'stage':<10}{'shard-s':>11}{'share':>8}{'wall s/row':>13}{'GPU-s/row':>12}")
    for f in m.stages:
        if not f.on_gpu:
            gpu = f"{'(CPU)':>12}"
        elif e.pilot_fleet.gpus is None:
            gpu = f"{'?':>12}"  # the pilot's GPU count is not known
        else:
            gpu = f"{f.wall_s_per_row * pilot_gpus:>12.4f}" if pilot_gpus else f"{'-':>12}"
        lines.append(
            f"{f.stage:<10}{f.shard_seconds:>11.2f}{100 * f.share:>7.1f}%"
            f"{f.wall_s_per_row:>13.4f}{gpu}"
        )
    lines += [
        "",
        f"projection for the whole input: {e.rows_planned:,} rows ({e.rows_planned_source}), "
        f"{e.shards_planned:,} shards",
        f"fleet: {_fleet(e.fleet)}",
        "scaling: linear in rows and in GPUs, every stage (downloads run on the GPU machines); "
        f"wall = wall s/row x {e.rows_planned:,} rows x {e.gpu_scale:g} (pilot GPUs / fleet GPUs)",
        f"{'stage':<10}{'wall':>12}{'GPU-hours':>12}",
    ]
    for f in m.stages:
        gh = e.gpu_hours.get(f.stage)
        shown = f"{_hours(gh):>12}" if gh is not None else f"{'-':>12}"
        lines.append(f"{f.stage:<10}{_duration(e.stage_wall_s[f.stage]):>12}{shown}")
    held = e.gpu_hours_held
    lines.append(
        f"{'total':<10}{_duration(e.wall_s):>12}{_hours(held) if held is not None else '-':>12}"
    )
    if held is not None:
        lines.append(
            f"GPU-hours held: {_hours(held)} = {e.fleet.gpus} GPUs x {e.wall_s / 3600:,.3g} h "
            "wall (what a per-GPU-hour price applies to), of which "
            f"{_hours(sum(e.gpu_hours.values()))} attributed to the GPU stages "
            f"({', '.join(sorted(e.gpu_hours)) or 'none'}) by their share of the shards' time; "
            "GPUs x wall-clock, not utilisation"
        )
    if 0 < e.left_share < 1:
        left = f"; GPU-hours {_hours(held * e.left_share)}" if held is not None else ""
        lines.append(
            f"still to run: {e.rows_planned - e.rows_committed:,} rows not committed "
            f"({100 * e.left_share:.1f}%): wall {_duration(e.wall_s * e.left_share)}{left}"
        )
    for note in e.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


__all__ = [
    "Estimate",
    "EstimateError",
    "Fleet",
    "LeftOut",
    "Measured",
    "Selection",
    "StageFigure",
    "estimate_output",
    "format_estimate",
    "full_fleet",
    "gpu_type_of",
    "measure",
    "pilot_fleet",
    "project",
    "run_fleet",
    "select_runs",
]
