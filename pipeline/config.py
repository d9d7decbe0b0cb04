"""The nested pipeline config: one frozen dataclass per stage, built from defaults <- file <- flags.

A config file (YAML or TOML) mirrors the dataclasses::

    input: data/urls.parquet          # or `from: OUT1` to continue an earlier output
    output: out/
    stages: [download, caption, fuse] # any in-order subset of download, caption, ethics, fuse
    beam_args: ["--runner=DataflowRunner", "--project=my-project"]
    reader:   {url_column: url, caption_column: caption, shard_size: 1000}
    download: {threads: 64, image_size: 336}
    caption:  {prompt_id: ..., image_aspect: auto,     # auto: pad for LLaVA-1.5, native else
               generation: {model: llava-hf/llava-1.5-7b-hf, batch_size: 16}}
    fusion:   {fallback: visual, chat_template: auto,  # auto: own template, else the family's
               generation: {model: lmsys/vicuna-7b-v1.5}}
    ethics:   {policy: exclude, blocklist: [...]}   # generation defaults to the fusion model
    writer:   {rows_per_row_group: 256}

Command-line flags are turned into the same nested dict and merged on top (flags win); unknown
keys are errors that name the known ones. Library code only ever sees the frozen dataclasses.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.download.stage import DownloadConfig
from pipeline.errors import ConfigError
from pipeline.io.reader_config import DEFAULT_SHARD_SIZE
from pipeline.io.readers import ReaderConfig
from pipeline.io.writer import WriterConfig

STAGES: tuple[str, ...] = ("download", "caption", "ethics", "fuse")
DEFAULT_STAGES: tuple[str, ...] = ("download", "caption", "fuse")
# Which record fields a stage needs from an earlier stage (this run or the --from output).
STAGE_NEEDS: dict[str, str] = {"caption": "download", "ethics": "caption", "fuse": "caption"}

DEFAULT_CAPTION_MODEL = "llava-hf/llava-1.5-7b-hf"
DEFAULT_FUSION_MODEL = "lmsys/vicuna-7b-v1.5"


@dataclass(frozen=True)
class RunConfig:
    """What this run does, as opposed to how each stage works."""

    output: str
    stages: tuple[str, ...] = DEFAULT_STAGES
    source: str | None = None  # an earlier vecap output to continue (`--from`)
    overwrite: bool = False  # redo every shard instead of skipping finished ones
    progress: bool = True
    beam_args: tuple[str, ...] = ()  # passed to Beam's PipelineOptions unchanged
    # with `source`: rows of the earlier output with these statuses are set back to ok and go
    # through this run's stages again (e.g. caption_failed after an OOM, or a transient
    # http_error with the download stage listed)
    retry_statuses: tuple[str, ...] = ()
    # local runner only: shards per pipeline run (times direct_num_workers), because Beam's
    # FnApiRunner holds a whole pipeline's rows in memory at a Flatten (see run.plan_waves);
    # 2 x 1,000-row shards of ~30 KB images is ~60 MB of image bytes per wave (several copies
    # of each row are alive in the runner: measure with bench/pipeline.py)
    local_wave_shards: int = 2
    # one job per output: proceed even though the output's last run looks live (its heartbeat
    # is fresh), because that run is known to be dead; and how often this run renews its own
    takeover: bool = False
    heartbeat_s: float = 30.0
    # the workers' GPU for the memory plan (pipeline.gpu_plan), e.g. l4, a100-80gb, h100-80gb;
    # None: Dataflow's worker_accelerator option, or this machine's GPU on the local runner
    gpu_type: str | None = None
    # a pilot (pipeline.pilot): only the first N shards of the full plan, or N spread evenly
    # over it; the fingerprint stays the full job's, so a run without them continues the job
    max_shards: int | None = None
    sample_shards: int | None = None
    # exact dedup before the GPU (pipeline.dedup): repeated URLs downloaded once, repeated images
    # captioned once, repeated (image, AltText) pairs fused once; `caption_cache` (an fsspec
    # URL) also reuses and adds captions across jobs, and implies dedup
    dedup: bool = False
    caption_cache: str | None = None
    # with dedup: Beam options for the phases without a model (index jobs, download, assemble);
    # None: beam_args without their GPU options (runner_options.cpu_only_beam_args)
    cpu_beam_args: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        from schemas.status import FAILURE_STATUSES

        object.__setattr__(self, "retry_statuses", tuple(self.retry_statuses))
        bad = [s for s in self.retry_statuses if s not in FAILURE_STATUSES]
        if bad:
            raise ConfigError(
                f"retry: {bad} are not failure statuses; known: {sorted(FAILURE_STATUSES)}"
            )
        if self.retry_statuses and self.source is None:
            raise ConfigError("retry applies to rows of an earlier output: use it with --from")
        if not self.output:
            raise ConfigError("output is required (a directory or fsspec URL)")
        if self.gpu_type is not None:
            from pipeline.generation.gpu_types import UnknownGpuType, gpu_spec

            try:
                gpu_spec(self.gpu_type)
            except UnknownGpuType as e:
                raise ConfigError(str(e)) from e
        if not self.heartbeat_s > 0:
            raise ConfigError(f"heartbeat_s must be > 0, got {self.heartbeat_s}")
        if self.local_wave_shards < 1:
            raise ConfigError(f"local_wave_shards must be >= 1, got {self.local_wave_shards}")
        if self.caption_cache is not None:
            object.__setattr__(self, "dedup", True)
        if self.cpu_beam_args is not None:
            object.__setattr__(self, "cpu_beam_args", tuple(self.cpu_beam_args))
        if self.dedup and self.source is not None:
            raise ConfigError(
                "--dedup works on an input table, not --from an earlier output: dedup the job "
                "that downloads (a chained run keeps the earlier output's rows as they are)"
            )
        if self.dedup and (self.max_shards is not None or self.sample_shards is not None):
            raise ConfigError(
                "--dedup finds duplicates across the whole input, so it cannot run a pilot of a "
                "few shards: drop --max-shards/--sample-shards, or pilot without --dedup"
            )
        if self.max_shards is not None and self.sample_shards is not None:
            raise ConfigError("give --max-shards or --sample-shards, not both")
        for name in ("max_shards", "sample_shards"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        stages = tuple(self.stages)
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ConfigError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
        if len(set(stages)) != len(stages):
            raise ConfigError(f"a stage is listed twice in {list(stages)}")
        object.__setattr__(self, "stages", tuple(s for s in STAGES if s in stages))
        object.__setattr__(self, "beam_args", tuple(self.beam_args))
        if self.source is not None and _same_path(self.source, self.output):
            raise ConfigError(
                "--from and --output are the same directory: write the new stages to a new output "
                "(the earlier output stays intact, so a failed run can be redone)"
            )


@dataclass(frozen=True)
class PipelineConfig:
    run: RunConfig
    reader: ReaderConfig | None  # None when continuing an earlier output (run.source)
    download: DownloadConfig
    caption: Any | None  # llava_recap.config.CaptionConfig when the caption stage runs
    ethics: Any | None  # llm_fusion.config.EthicsConfig when the ethics stage runs
    fusion: Any | None  # llm_fusion.config.FusionConfig when the fuse stage runs
    writer: WriterConfig = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if (self.reader is None) == (self.run.source is None):
            raise ConfigError(
                "give exactly one of an input (--input) or an earlier output (--from)"
            )
        if self.writer is None:
            object.__setattr__(self, "writer", WriterConfig(output=self.run.output))
        if self.writer.output != self.run.output:
            raise ConfigError("writer.output must equal output")
        for stage, cfg in (
            ("caption", self.caption),
            ("ethics", self.ethics),
            ("fuse", self.fusion),
        ):
            if stage in self.run.stages and cfg is None:
                raise ConfigError(f"the {stage} stage runs but has no config")

    @property
    def stages(self) -> tuple[str, ...]:
        return self.run.stages


def _same_path(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


# --------------------------------------------------------------------------- files


def load_config_file(path: str) -> dict[str, Any]:
    """A YAML (.yaml/.yml) or TOML (.toml) config file as a dict."""
    import fsspec

    try:
        with fsspec.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError as e:
        raise ConfigError(f"config file {path!r} does not exist; check the --config path") from e
    except (OSError, ValueError, ImportError) as e:  # permission, a directory, unknown protocol
        raise ConfigError(f"cannot read config file {path!r}: {e}") from e
    lower = path.lower()
    if lower.endswith(".toml"):
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - py3.10
            try:
                import tomli as tomllib
            except ImportError as e:
                raise ConfigError("TOML config files on Python 3.10 need: pip install tomli") from e
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path!r} is not valid TOML: {e}") from e
    elif lower.endswith((".yaml", ".yml")):
        import yaml

        try:
            data = yaml.safe_load(raw) or {}
        except yaml.YAMLError as e:
            raise ConfigError(
                f"config file {path!r} is not valid YAML: {' '.join(str(e).split())}"
            ) from e
    else:
        raise ConfigError(f"config file {path!r}: use a .yaml, .yml or .toml file")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping at the top level")
    return data


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``; nested mappings merge, anything else is replaced."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_path(d, "caption.generation.batch_size", 8)``."""
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {key} is not a section")
    node[keys[-1]] = value


# --------------------------------------------------------------------------- dict -> dataclass


def _unwrap_optional(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(tp) if a is not type(None))
    return (tp,)


def _field_types(cls: type) -> dict[str, Any]:
    """Resolved field types; a name that only exists under TYPE_CHECKING stays a string."""
    try:
        return typing.get_type_hints(cls)
    except NameError:
        return {f.name: f.type for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    if value is None:
        return None
    if isinstance(tp, str):  # unresolved annotation: only the list -> tuple rule is safe
        return tuple(value) if "tuple" in tp and isinstance(value, list) else value
    for option in _unwrap_optional(tp):
        if dataclasses.is_dataclass(option) and isinstance(value, Mapping):
            return dataclass_from_dict(option, value, where)
        if typing.get_origin(option) is tuple and isinstance(value, (list, tuple)):
            return tuple(value)
        if option is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    _check_scalar(value, _unwrap_optional(tp), where)
    return value


_SCALAR_NAMES = {bool: "true or false", int: "an integer", float: "a number"}


def _check_scalar(value: Any, options: tuple[Any, ...], where: str) -> None:
    """A number or flag field given a value of another type (``--set download.threads=lots``)."""
    if not options or any(o not in _SCALAR_NAMES for o in options):
        return
    if isinstance(value, bool):
        ok = bool in options
    else:
        ok = isinstance(value, tuple(o for o in options if o is not bool))
    if not ok:
        wanted = " or ".join(_SCALAR_NAMES[o] for o in options)
        raise ConfigError(f"{where} must be {wanted}, got {value!r}")


def dataclass_from_dict(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    """Build a (frozen) dataclass from a mapping, recursing into dataclass-typed fields.

    Unknown keys raise :class:`ConfigError` naming the known ones; the dataclass's own
    ``__post_init__`` validates the values.
    """
    hints = _field_types(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} in {where or cls.__name__}; known: {', '.join(names)}"
        )
    kwargs = {
        k: _coerce(v, hints.get(k, Any), f"{where}.{k}" if where else k) for k, v in data.items()
    }
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from e


_TOP_KEYS = (
    "input",
    "output",
    "stages",
    "from",
    "overwrite",
    "progress",
    "beam_args",
    "retry",
    "local_wave_shards",
    "takeover",
    "heartbeat_s",
    "gpu_type",
    "max_shards",
    "sample_shards",
    "dedup",
    "caption_cache",
    "cpu_beam_args",
)
_SECTIONS = ("reader", "download", "caption", "ethics", "fusion", "writer")


def _count(data: Mapping[str, Any], key: str) -> int | None:
    """A shard count given as a number or a flag's text (``--max-shards 2``); None when absent."""
    value = data.get(key)
    if value is None:
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{key} must be a whole number >= 1, got {value!r}")
    return int(text)


def _arg_list(value: Any) -> tuple[str, ...] | None:
    """Beam arguments given as a list or as one shell-quoted string (a flag's text)."""
    if value is None:
        return None
    if isinstance(value, str):
        import shlex

        return tuple(shlex.split(value))
    return tuple(value)


def _run_config(data: Mapping[str, Any], stages: Any) -> RunConfig:
    return RunConfig(
        output=data.get("output") or "",
        stages=tuple(stages),
        source=data.get("from"),
        overwrite=bool(data.get("overwrite", False)),
        progress=bool(data.get("progress", True)),
        beam_args=tuple(data.get("beam_args") or ()),
        local_wave_shards=int(data.get("local_wave_shards", 2)),
        takeover=bool(data.get("takeover", False)),
        heartbeat_s=float(data.get("heartbeat_s", 30.0)),
        gpu_type=data.get("gpu_type"),
        max_shards=_count(data, "max_shards"),
        sample_shards=_count(data, "sample_shards"),
        dedup=bool(data.get("dedup", False)),
        caption_cache=data.get("caption_cache") or None,
        cpu_beam_args=_arg_list(data.get("cpu_beam_args")),
        retry_statuses=tuple(
            [s.strip() for s in data["retry"].split(",") if s.strip()]
            if isinstance(data.get("retry"), str)
            else data.get("retry") or ()
        ),
    )


def build_pipeline_config(data: Mapping[str, Any]) -> PipelineConfig:
    """The frozen config from one merged dict (defaults <- file <- flags already merged)."""
    unknown = sorted(set(data) - set(_TOP_KEYS) - set(_SECTIONS))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {unknown}; known: {', '.join(_TOP_KEYS + _SECTIONS)}"
        )
    stages = data.get("stages", DEFAULT_STAGES)
    if isinstance(stages, str):
        stages = [s.strip() for s in stages.split(",") if s.strip()]
    try:
        run = _run_config(data, stages)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # e.g. `--set local_wave_shards=many`
        raise ConfigError(f"bad value in the run settings: {e}") from e

    reader = None
    reader_data = dict(data.get("reader") or {})
    if data.get("input") is not None:
        reader_data["input"] = data["input"]
    if run.source is None:
        if not reader_data.get("input"):
            raise ConfigError("an input is required: --input URL (or `from:` an earlier output)")
        reader_data.setdefault("shard_size", DEFAULT_SHARD_SIZE)
        reader = dataclass_from_dict(ReaderConfig, reader_data, "reader")
    elif reader_data.get("input"):
        raise ConfigError("give either an input or `from` (an earlier output), not both")

    download = dataclass_from_dict(DownloadConfig, data.get("download") or {}, "download")

    caption = fusion = ethics = None
    if "caption" in run.stages:
        from llava_recap.config import CaptionConfig

        section = deep_merge(
            {"generation": {"model": DEFAULT_CAPTION_MODEL}}, data.get("caption") or {}
        )
        caption = dataclass_from_dict(CaptionConfig, section, "caption")
    fusion_section = deep_merge(
        {"generation": {"model": DEFAULT_FUSION_MODEL}}, data.get("fusion") or {}
    )
    if "fuse" in run.stages:
        from llm_fusion.config import FusionConfig

        fusion = dataclass_from_dict(FusionConfig, fusion_section, "fusion")
    if "ethics" in run.stages:
        from llm_fusion.config import EthicsConfig

        section = dict(data.get("ethics") or {})
        section["enabled"] = True
        # VeCLIP asked the fusion LLM: the ethics generation defaults to the fusion one (keys
        # given under ethics.generation override it); a blocklist-only check needs no model
        if "generation" in section:
            section["generation"] = deep_merge(
                fusion_section["generation"], section["generation"] or {}
            )
        elif not (section.get("blocklist") or section.get("blocklist_file")):
            section["generation"] = fusion_section["generation"]
        gen = section.get("generation") or {}
        if gen.get("model") == fusion_section["generation"].get(
            "model"
        ):  # same model, same template
            section.setdefault("chat_template", fusion_section.get("chat_template", "auto"))
        ethics = dataclass_from_dict(EthicsConfig, section, "ethics")

    caption, ethics, fusion = plan_gpu_memory(caption, ethics, fusion)

    writer_data = dict(data.get("writer") or {})
    writer_data["output"] = run.output
    writer = dataclass_from_dict(WriterConfig, writer_data, "writer")
    return PipelineConfig(
        run=run,
        reader=reader,
        download=download,
        caption=caption,
        ethics=ethics,
        fusion=fusion,
        writer=writer,
    )


def plan_gpu_memory(caption: Any, ethics: Any, fusion: Any) -> tuple[Any, Any, Any]:
    """Give every vLLM engine of one worker its share of the GPU, and refuse plans that cannot fit.

    The caption, ethics and fusion stages of one job run on the same workers; ethics reuses
    the fusion engine when its load settings are the same (``GenerationConfig.engine_key``).
    Engines without an explicit ``gpu_memory_utilization`` split 0.9 evenly between the distinct
    vLLM engines of the run; explicit and split shares together must stay within 0.95, or the
    second engine to start finds no memory (vLLM reserves its share up front). Transformers
    engines reserve nothing and are not counted.
    """
    from pipeline.generation.config import (
        DEFAULT_GPU_MEMORY_UTILIZATION,
        MAX_GPU_MEMORY_UTILIZATION,
    )

    stages = [
        (name, cfg)
        for name, cfg in (("caption", caption), ("ethics", ethics), ("fusion", fusion))
        if cfg is not None and getattr(cfg, "generation", None) is not None
    ]
    engines: dict[tuple, list[str]] = {}  # load settings but the share -> the stages using it
    for name, cfg in stages:
        gen = cfg.generation
        if gen.backend != "vllm":
            continue
        key = dataclasses.replace(gen, gpu_memory_utilization=None).engine_key()
        engines.setdefault((key, name == "caption"), []).append(name)
    if not engines:
        return caption, ethics, fusion
    given = {
        engine: [
            dict(stages)[n].generation.gpu_memory_utilization
            for n in names
            if dict(stages)[n].generation.gpu_memory_utilization is not None
        ]
        for engine, names in engines.items()
    }
    for engine, values in given.items():
        if len(set(values)) > 1:
            raise ConfigError(
                f"{' and '.join(engines[engine])} share one engine but ask for different "
                f"gpu_memory_utilization ({values}); give them one value"
            )
    auto = [engine for engine, values in given.items() if not values]
    if _on_separate_gpus([dict(stages)[names[0]].generation for names in engines.values()]):
        # each engine alone on GPUs of its own (--set caption.generation.gpus=0 ...): no split
        shares = {e: (given[e][0] if given[e] else DEFAULT_GPU_MEMORY_UTILIZATION) for e in engines}
        return tuple(_with_shares(cfg, caption, shares) for cfg in (caption, ethics, fusion))
    explicit_sum = sum(values[0] for values in given.values() if values)
    share = round((DEFAULT_GPU_MEMORY_UTILIZATION - explicit_sum) / len(auto), 3) if auto else 0
    if auto and share < 0.05:
        raise ConfigError(
            f"no GPU memory left for {', '.join(n for e in auto for n in engines[e])}: the other "
            f"vLLM engines of this worker ask for {explicit_sum:.2f}; set "
            "*.generation.gpu_memory_utilization for each stage explicitly"
        )
    shares = {e: (given[e][0] if given[e] else share) for e in engines}
    total = sum(shares.values())
    if total > MAX_GPU_MEMORY_UTILIZATION + 1e-9:
        parts = " + ".join(f"{'/'.join(engines[e])} {shares[e]:.2f}" for e in engines)
        raise ConfigError(
            f"gpu_memory_utilization of the vLLM engines on one worker adds up to {total:.2f} "
            f"({parts}) > {MAX_GPU_MEMORY_UTILIZATION}: they share one GPU. Lower the shares "
            "(*.generation.gpu_memory_utilization), or run two jobs: --stages download,caption "
            "on one GPU pool, then --from OUTPUT --stages fuse on another"
        )

    return tuple(_with_shares(cfg, caption, shares) for cfg in (caption, ethics, fusion))


def _with_shares(cfg: Any, caption: Any, shares: dict[tuple, float]) -> Any:
    if cfg is None or getattr(cfg, "generation", None) is None:
        return cfg
    gen = cfg.generation
    if gen.backend != "vllm":
        return cfg
    key = dataclasses.replace(gen, gpu_memory_utilization=None).engine_key()
    return dataclasses.replace(
        cfg,
        generation=dataclasses.replace(gen, gpu_memory_utilization=shares[(key, cfg is caption)]),
    )


def _on_separate_gpus(generations: list[Any]) -> bool:
    """Every engine names its GPUs (``gpus``) and no two name the same one."""
    from pipeline.generation.devices import parse_gpus

    if len(generations) < 2:
        return False
    picked = [parse_gpus(g.gpus) for g in generations]
    if any(p is None for p in picked):
        return False
    flat = [i for p in picked for i in p]
    return len(flat) == len(set(flat))


def config_to_dict(config: PipelineConfig) -> dict[str, Any]:
    """JSON-able view for the manifest (drops what cannot be serialised, e.g. an injected resolver)."""

    def clean(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: clean(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items()}
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        return repr(value)

    return clean(config)


__all__ = [
    "DEFAULT_CAPTION_MODEL",
    "DEFAULT_FUSION_MODEL",
    "DEFAULT_SHARD_SIZE",
    "DEFAULT_STAGES",
    "STAGES",
    "STAGE_NEEDS",
    "ConfigError",
    "PipelineConfig",
    "RunConfig",
    "build_pipeline_config",
    "plan_gpu_memory",
    "config_to_dict",
    "dataclass_from_dict",
    "deep_merge",
    "load_config_file",
    "set_path",
]
