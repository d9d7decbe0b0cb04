"""`vecap run`, `vecap demo`, `vecap serve-sample`.

Flags build a nested dict merged over the config file (flags win), then the frozen configs.
Arguments vecap does not define are Beam pipeline options, passed through unchanged
(``--runner DataflowRunner --project P ...``, ``--direct_running_mode=multi_processing``);
they may also follow a ``--``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from llm_fusion.config import ETHICS_POLICIES, FALLBACKS
from pipeline.cli.common import BeamHelpAction
from pipeline.download.image_processing import RESIZE_MODES
from pipeline.generation.config import BACKENDS, DTYPES
from pipeline.generation.gpu_types import GPU_TYPES
from pipeline.io.input_files import INPUT_FORMATS

# flag dest -> dotted config paths it sets (several for flags shared by the model stages)
_FLAG_PATHS: dict[str, tuple[str, ...]] = {
    "output": ("output",),
    "source": ("from",),
    "retry": ("retry",),
    "local_wave_shards": ("local_wave_shards",),
    "overwrite": ("overwrite",),
    "takeover": ("takeover",),
    "dedup": ("dedup",),
    "caption_cache": ("caption_cache",),
    "cpu_beam_args": ("cpu_beam_args",),
    "progress": ("progress",),
    "input_format": ("reader.input_format",),
    "url_column": ("reader.url_column",),
    "caption_column": ("reader.caption_column",),
    "shard_size": ("reader.shard_size",),
    "verify_images": ("reader.verify_images",),
    "threads": ("download.threads",),
    "image_size": ("download.image_size",),
    "resize_mode": ("download.resize_mode",),
    "allow_private_networks": ("download.allow_private_networks",),
    "user_agent_token": ("download.user_agent_token",),
    "caption_model": ("caption.generation.model",),
    "caption_prompt": ("caption.prompt_id",),
    "caption_batch_size": ("caption.generation.batch_size",),
    "fusion_model": ("fusion.generation.model",),
    "fusion_prompt": ("fusion.prompt_id",),
    "fusion_batch_size": ("fusion.generation.batch_size",),
    "fallback": ("fusion.fallback",),
    "ethics_model": ("ethics.generation.model",),
    "ethics_policy": ("ethics.policy",),
    "ethics_blocklist_file": ("ethics.blocklist_file",),
    "backend": ("caption.generation.backend", "fusion.generation.backend"),
    "device": ("caption.generation.device", "fusion.generation.device"),
    "dtype": ("caption.generation.dtype", "fusion.generation.dtype"),
    "max_new_tokens": ("caption.generation.max_new_tokens", "fusion.generation.max_new_tokens"),
    "gpus": ("caption.generation.gpus", "fusion.generation.gpus"),
    "max_in_flight": ("caption.generation.max_in_flight", "fusion.generation.max_in_flight"),
    "base_url": ("caption.generation.base_url", "fusion.generation.base_url"),
    "api_key_env": ("caption.generation.api_key_env", "fusion.generation.api_key_env"),
    "keep_images": ("writer.keep_images",),
    "gpu_type": ("gpu_type",),
    "max_shards": ("max_shards",),
    "sample_shards": ("sample_shards",),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the pipeline: read -> download -> caption -> (ethics) -> fuse -> write",
        description=(
            "Recaption an input table (or continue an earlier output with --from). Flags override "
            "the --config file; unknown flags are Beam pipeline options (e.g. --runner "
            "DataflowRunner --project P --region R --temp_location gs://..., or "
            "--direct_running_mode=multi_processing --direct_num_workers=2). A rerun skips "
            "finished shards."
        ),
        allow_abbrev=False,
    )
    add_run_arguments(run)
    run.add_argument(
        "--help-beam", action=BeamHelpAction, help="list Beam's pipeline options and exit"
    )
    run.set_defaults(func=_run, accepts_beam_args=True)

    plan = subparsers.add_parser(
        "plan-gpu",
        help="print the GPU memory plan `vecap run` with the same flags would use, run nothing",
        description=(
            "Per engine: weights, headroom, KV cache and rows at once on the job's GPU "
            "(--gpu-type, Dataflow's worker_accelerator option, or this machine's). Exit 2 when "
            "`vecap run` would refuse the plan."
        ),
        allow_abbrev=False,
    )
    add_run_arguments(plan)
    plan.set_defaults(func=_plan_gpu, accepts_beam_args=True)

    demo = subparsers.add_parser(
        "demo",
        help="the whole pipeline on the bundled sample, with tiny offline models",
        description=(
            "Serve the bundled sample photos on a loopback server, build the tiny models, run "
            "download -> caption -> fuse -> write, export the release JSON and print the stats. "
            "Tiny models write gibberish: this shows the machinery, not caption quality."
        ),
        allow_abbrev=False,
    )
    demo.add_argument("--output", default="demo-out", help="output directory (default demo-out)")
    demo.add_argument(
        "--models-dir",
        default=os.path.join(os.path.expanduser("~"), ".cache", "vecap", "tiny-models"),
        help="where the tiny models are built once and reused",
    )
    demo.add_argument("--shard-size", type=int, default=8, help="rows per shard (default 8)")
    demo.add_argument("--splits", type=int, default=4, help="release JSON files (default 4)")
    demo.set_defaults(func=_demo, accepts_beam_args=True)

    serve = subparsers.add_parser(
        "serve-sample",
        help="serve the bundled sample photos (or a directory) on a loopback HTTP server",
    )
    serve.add_argument(
        "--root", default=None, help="directory to serve (default: the bundled sample)"
    )
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    serve.add_argument(
        "--write-table",
        default=None,
        metavar="PATH",
        help="also write the sample's absolute-URL url,caption CSV here",
    )
    serve.set_defaults(func=_serve_sample)


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """`vecap run`'s flags. Every default is None so that only flags the user gave override the
    config file; the real defaults live in the config dataclasses (see pipeline.config)."""
    B = argparse.BooleanOptionalAction  # noqa: N806
    io = p.add_argument_group("input and output")
    io.add_argument("--config", default=None, metavar="FILE", help="YAML or TOML config file")
    io.add_argument(
        "--input",
        action="append",
        default=None,
        metavar="URL",
        help="input file, glob or directory; repeatable",
    )
    io.add_argument(
        "--from",
        dest="source",
        default=None,
        metavar="OUT",
        help="continue an earlier vecap output instead of an input",
    )
    io.add_argument(
        "--output",
        default=None,
        metavar="OUT",
        help="output directory or fsspec URL (gs://, s3://)",
    )
    io.add_argument(
        "--stages", default=None,
        help="comma-separated, in order: download,caption,ethics,fuse (default download,caption,fuse)",
    )  # fmt: skip
    io.add_argument(
        "--retry", default=None, metavar="STATUS,STATUS",
        help="with --from: rows with these statuses go through the stages again (e.g. caption_failed)",
    )  # fmt: skip
    io.add_argument(
        "--overwrite",
        action=B,
        default=None,
        help="redo every shard (default: skip finished shards)",
    )
    io.add_argument(
        "--takeover",
        action=B,
        default=None,
        help="run even though the output's last run still looks live (its heartbeat is fresh): "
        "use when that run is known to be dead (default: refuse)",
    )
    io.add_argument(
        "--progress", action=B, default=None, help="progress bar and summary (default on)"
    )
    io.add_argument(
        "--keep-images", action=B, default=None, help="store image bytes in the shards (default on)"
    )
    io.add_argument(
        "--local-wave-shards", type=int, default=None,
        help="local runner: shards per pipeline run, per worker (default 2); bounds memory",
    )  # fmt: skip
    # counts checked by RunConfig (one line, exit 2), like giving both
    io.add_argument(
        "--max-shards", default=None, metavar="N",
        help="pilot: commit only the first N shards of the full plan; the same command without "
        "it continues the job (vecap estimate OUT prices the rest)",
    )  # fmt: skip
    io.add_argument(
        "--sample-shards", default=None, metavar="N",
        help="pilot: like --max-shards, but N shards spread evenly over the plan (shard i*total//N)",
    )  # fmt: skip
    io.add_argument(
        "--dedup", action=B, default=None,
        help="exact dedup before the GPU: a repeated URL is downloaded once, a repeated image "
        "captioned once, a repeated (image, AltText) pair fused once; every row is still written, "
        "with its canonical row's captions and duplicate_of/fusion_of naming it (default off)",
    )  # fmt: skip
    io.add_argument(
        "--caption-cache", default=None, metavar="URL",
        help="caption cache shared across jobs (any fsspec location): captions found there are "
        "not computed again, new ones are added; implies --dedup",
    )  # fmt: skip
    io.add_argument(
        "--cpu-beam-args", default=None, metavar="'ARGS'",
        help="with --dedup: Beam options (one quoted string) for the phases without a model "
        "(index jobs, download, assemble); default: the job's own without their GPU options "
        "(worker_accelerator, a GPU machine type, no_use_multiple_sdk_containers)",
    )  # fmt: skip
    rd = p.add_argument_group("reading")
    rd.add_argument(
        "--input-format",
        default=None,
        choices=INPUT_FORMATS,
        help=f"{'|'.join(INPUT_FORMATS)} (default: by extension)",
    )
    rd.add_argument("--url-column", default=None, help="column of image URLs (default url)")
    rd.add_argument("--caption-column", default=None, help="column of AltTexts (default caption)")
    rd.add_argument(
        "--extra-columns", default=None, metavar="COL,COL", help="input columns to keep in 'extra'"
    )
    rd.add_argument(
        "--column-names", default=None, metavar="COL,COL",
        help="csv/tsv without a header line: its column names in order (e.g. caption,url)",
    )  # fmt: skip
    rd.add_argument(
        "--verify-images", action=B, default=None,
        help="img2dataset inputs: fully decode every image while reading (default off)",
    )  # fmt: skip
    rd.add_argument(
        "--shard-size",
        type=int,
        default=None,
        help="rows per shard: the unit of work and resume (default 1000)",
    )
    dl = p.add_argument_group("download")
    dl.add_argument(
        "--threads", type=int, default=None, help="download threads per worker (default 32)"
    )
    dl.add_argument("--image-size", type=int, default=None, help="resize target (default 336)")
    dl.add_argument(
        "--resize-mode", default=None, choices=RESIZE_MODES,
        help=f"{'|'.join(RESIZE_MODES)} (default keep_ratio)",
    )  # fmt: skip
    dl.add_argument(
        "--allow-private-networks",
        action=B,
        default=None,
        help="allow private/loopback hosts (tests, demo)",
    )
    dl.add_argument(
        "--user-agent-token", default=None, help="token in the User-Agent (default vecapbot)"
    )
    md = p.add_argument_group("models")
    md.add_argument(
        "--caption-model",
        default=None,
        help="LLaVA checkpoint (hub id or dir; default llava-hf/llava-1.5-7b-hf)",
    )
    md.add_argument("--caption-prompt", default=None, help="captioning prompt id")
    md.add_argument("--caption-batch-size", type=int, default=None, help="images per generate call")
    md.add_argument(
        "--fusion-model",
        default=None,
        help="fusion LLM (hub id or dir; default lmsys/vicuna-7b-v1.5)",
    )
    md.add_argument("--fusion-prompt", default=None, help="fusion prompt id")
    md.add_argument("--fusion-batch-size", type=int, default=None, help="rows per generate call")
    md.add_argument(
        "--fallback", default=None, choices=FALLBACKS,
        help=f"caption when fusion fails: {'|'.join(FALLBACKS)} (default visual)",
    )  # fmt: skip
    md.add_argument(
        "--ethics-model", default=None, help="ethics-check LLM (default: the fusion model)"
    )
    md.add_argument(
        "--ethics-policy", default=None, choices=ETHICS_POLICIES,
        help=f"flagged rows: {'|'.join(ETHICS_POLICIES)}",
    )  # fmt: skip
    md.add_argument(
        "--ethics-blocklist-file", default=None, help="terms that flag a row, one per line"
    )
    md.add_argument(
        "--backend",
        default=None,
        choices=BACKENDS,
        help=f"{'|'.join(BACKENDS)} for every model stage (vllm: one server per GPU; "
        "openai: a server fleet you run, at --base-url)",
    )
    md.add_argument(
        "--gpus",
        default=None,
        help="vllm: GPUs to run engines on, e.g. 0,1,3 (default: every visible GPU)",
    )
    md.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        help="vllm/openai: requests each engine gets from one worker process (default 512)",
    )
    md.add_argument("--base-url", default=None, help="openai: the server, e.g. http://host:8000/v1")
    md.add_argument(
        "--api-key-env",
        default=None,
        help="openai: environment variable holding the API key (default OPENAI_API_KEY)",
    )
    md.add_argument(
        "--gpu-type",
        default=None,
        help="the workers' GPU for the memory plan: "
        + ", ".join(GPU_TYPES)
        + " (default: Dataflow's worker_accelerator option, or this machine's GPU when local)",
    )
    md.add_argument("--device", default=None, help="auto|cpu|cuda|cuda:N (transformers backend)")
    md.add_argument(
        "--dtype", default=None, choices=DTYPES,
        help=f"{'|'.join(DTYPES)} (auto: bf16 on GPUs with native bf16, fp16 on older, fp32 on CPU)",
    )  # fmt: skip
    md.add_argument("--max-new-tokens", type=int, default=None, help="generation length cap")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="any config field by its dotted path, e.g. --set download.retries=4 "
        "--set caption.generation.max_batch_duration_secs=5 (value parsed as YAML)",
    )  # fmt: skip


def config_dict_from_args(args: argparse.Namespace, extra_beam_args: list[str]) -> dict[str, Any]:
    """defaults <- config file <- flags, as one nested dict."""
    import yaml

    from pipeline.config import ConfigError, deep_merge, load_config_file, set_path

    base: dict[str, Any] = load_config_file(args.config) if args.config else {}
    flags: dict[str, Any] = {}
    if args.input:
        flags["input"] = args.input[0] if len(args.input) == 1 else list(args.input)
    if args.stages is not None:
        flags["stages"] = [s.strip() for s in args.stages.split(",") if s.strip()]
    if getattr(args, "column_names", None) is not None:
        set_path(
            flags,
            "reader.column_names",
            [c.strip() for c in args.column_names.split(",") if c.strip()],
        )
    if args.extra_columns is not None:
        set_path(
            flags,
            "reader.extra_columns",
            [c.strip() for c in args.extra_columns.split(",") if c.strip()],
        )
    for dest, paths in _FLAG_PATHS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest == "caption_column" and value == "":
            value = None  # inputs without alt-text
        for path in paths:
            set_path(flags, path, value)
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            why = getattr(e, "problem", None) or " ".join(str(e).split())
            raise ConfigError(
                f"--set {item}: the value is not valid YAML ({why}); quote a string value, "
                "e.g. --set 'KEY=\"VALUE\"'"
            ) from e
        set_path(flags, key.strip(), value)
    beam_args = [a for a in extra_beam_args if a != "--"]
    if beam_args:
        flags["beam_args"] = list(base.get("beam_args") or []) + beam_args
    return deep_merge(base, flags)


def _check_beam_args(beam_args: list[str]) -> None:
    """Refuse arguments neither vecap nor Beam knows (a typo must not vanish into a warning)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipeline.config import ConfigError

    if not beam_args:
        return
    options = PipelineOptions(beam_args)
    # Beam keeps unparseable flags only when asked to: the difference is what it would discard
    known = options.get_all_options(retain_unknown_options=False)
    retained = options.get_all_options(retain_unknown_options=True)
    names = set(retained) - set(known)
    if names:
        # as the user typed them (Beam reports --column-names as column_names)
        typed = [
            a.split("=", 1)[0]
            for a in beam_args
            if a.startswith("--") and a[2:].split("=", 1)[0].replace("-", "_") in names
        ]
        shown = " ".join(dict.fromkeys(typed)) or " ".join(f"--{n}" for n in sorted(names))
        raise ConfigError(
            f"unknown option(s) {shown}: neither a vecap run flag (vecap run --help) nor a Beam "
            "pipeline option (vecap run --help-beam)"
        )


def _plan_gpu(args: argparse.Namespace) -> int:
    from pipeline.config import build_pipeline_config
    from pipeline.gpu_plan import plan_job_gpus

    data = config_dict_from_args(args, list(getattr(args, "extra_args", []) or []))
    data.setdefault("output", "-")  # the plan does not depend on where the output goes
    _check_beam_args(list(data.get("beam_args") or []))
    _config, plan = plan_job_gpus(build_pipeline_config(data), refuse=False)
    for line in plan.lines():
        print(line)
    if not plan.engines:
        print("  no model stage runs on a GPU of vecap's (download only, or an openai fleet)")
    return 0 if plan.fits else 2


def _run(args: argparse.Namespace) -> int:
    """Errors found before the job starts (config, input, output, models) are UsageErrors: main
    prints them as one line, exit 2. A job that fails once it started leaves its traceback in
    OUT/logs/ and prints one line pointing at it, exit 1."""
    import datetime

    from pipeline.cli.logs import hold_terminal, quiet_model_libraries, release_terminal
    from pipeline.config import build_pipeline_config
    from pipeline.errors import UsageError
    from pipeline.run import run_pipeline
    from pipeline.run_lease import OutputBusy

    started_at = datetime.datetime.now(datetime.timezone.utc)
    started: list[Any] = []  # the plan, once the job starts (run_pipeline's on_start)

    def on_start(plan: Any) -> None:
        release_terminal(show=True)  # what was logged while planning, now that the job runs
        started.append(plan)

    hold_terminal()
    try:
        data = config_dict_from_args(args, list(getattr(args, "extra_args", []) or []))
        _check_beam_args(list(data.get("beam_args") or []))
        config = build_pipeline_config(data)
        if set(config.stages) - {"download"}:
            quiet_model_libraries()
        result = run_pipeline(config, on_start=on_start)
    except KeyboardInterrupt:
        release_terminal(show=True)
        if started:
            _resume_hint(config, started[0])
        raise
    except Exception as e:
        if not started:
            # a mistake found before the job: its one line alone (-v shows the held records)
            release_terminal(show=not isinstance(e, (UsageError, OutputBusy)))
            if isinstance(e, OutputBusy):  # another run is live on this output
                print(f"vecap run: refused: {' '.join(str(e).split())}", file=sys.stderr)
                return 2
            # a UsageError goes to main's one line; anything else before the job started is a
            # bug in vecap, and keeps its traceback
            raise
        return _job_failed(config, e, started[0], started_at, getattr(args, "argv", []))
    finally:
        release_terminal(show=True)
    pilot = " (pilot)" if result.plan.pilot is not None else ""
    print(
        f"{result.status}{pilot}: {len(result.written)} shards, {result.rows_written} rows -> "
        f"{result.output}"
    )
    return 0


def _job_failed(config: Any, exc: Exception, plan: Any, started_at: Any, argv: list[str]) -> int:
    """One line on the terminal, the traceback in OUT/logs/<run-time>.log, the resume hint."""
    from pipeline.cli.logs import failure_summary, write_failure_log

    try:
        log = write_failure_log(config.run.output, exc, started_at, ["vecap", *argv])
    except Exception as log_error:  # the output broke too: the traceback goes to the terminal
        import traceback

        traceback.print_exception(exc)
        print(
            f"vecap run: FAILED: {failure_summary(exc)} (the log could not be written to "
            f"{config.run.output}/logs: {failure_summary(log_error)})",
            file=sys.stderr,
        )
    else:
        print(f"vecap run: FAILED: {failure_summary(exc)}; details in {log}", file=sys.stderr)
    _resume_hint(config, plan)
    return 1


def _resume_hint(config: Any, plan: Any) -> None:
    """Only when shards are committed: a rerun skips them."""
    from pipeline.io.writer import finished_shard_ids

    try:
        done = finished_shard_ids(config.run.output) & (set(plan.todo) | set(plan.skipped))
    except OSError:  # the output cannot be listed now: say nothing rather than guess
        return
    if not done:
        return
    rerun = (
        "rerun the same command without --overwrite to resume"
        if config.run.overwrite
        else "rerun the same command to resume"
    )
    print(
        f"vecap run: {len(done)} of {plan.shards_total} shards are finished and kept; {rerun}",
        file=sys.stderr,
    )


def demo_config_dict(input_table: str, output: str, models: Any, shard_size: int) -> dict[str, Any]:
    """The demo's config: the bundled sample over loopback, the tiny models on CPU."""
    return {
        "input": input_table,
        "output": output,
        "overwrite": True,
        "stages": ["download", "caption", "fuse"],
        # a few dozen rows: one pipeline, the tiny models loaded once
        "local_wave_shards": 64,
        "reader": {"shard_size": shard_size},
        # the sample server is on loopback, which the download guard refuses by default
        "download": {"allow_private_networks": True, "threads": 8, "retries": 0},
        "caption": {
            "generation": {
                "model": str(models.llava),
                "device": "cpu",
                "max_new_tokens": 24,
                "batch_size": 8,
            }
        },
        "fusion": {
            "generation": {
                "model": str(models.llm),
                "device": "cpu",
                "max_new_tokens": 24,
                "batch_size": 8,
            }
        },
    }


def _quiet_libraries() -> None:
    """The demo prints its own progress and summary: silence library chatter (Beam's root-logger
    warnings, transformers' weight-loading bars) in this process; errors still show."""
    import logging

    logging.getLogger().setLevel(logging.ERROR)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # transformers is a dependency; nothing to quiet without it
        pass


def _demo(args: argparse.Namespace) -> int:
    from llava_recap.tiny_models import build_tiny_models
    from pipeline.config import ConfigError, build_pipeline_config, deep_merge
    from pipeline.io.export_json import ExportConfig, export_json, validate_json
    from pipeline.io.stats_summary import format_stats, output_stats
    from pipeline.run import run_pipeline
    from pipeline.sample.server import SAMPLE_DIR, SampleServer, sample_input_table

    try:
        _check_beam_args([a for a in (getattr(args, "extra_args", None) or []) if a != "--"])
    except ConfigError as e:
        print(f"vecap demo: {e}", file=sys.stderr)
        return 2
    t0 = time.time()
    out = args.output
    _quiet_libraries()
    print(f"building the tiny offline models in {args.models_dir} (once) ...", file=sys.stderr)
    models = build_tiny_models(args.models_dir)
    with SampleServer(root_dir=SAMPLE_DIR) as server:  # the bundled sample, on 127.0.0.1
        table = sample_input_table(server.base_url, Path(out) / "input" / "sample.csv")
        data = demo_config_dict(str(table), out, models, args.shard_size)
        beam_args = [a for a in (getattr(args, "extra_args", None) or []) if a != "--"]
        if beam_args:
            data = deep_merge(data, {"beam_args": beam_args})
        result = run_pipeline(build_pipeline_config(data))
    export = export_json(ExportConfig(source=out, splits=args.splits, name="vecap_demo"))
    validation = validate_json(export.files)
    print()
    print(format_stats(output_stats(out)))
    print()
    print(
        f"release JSON: {export.entries} URL -> caption entries in {len(export.files)} files under "
        f"{out}/release ({'valid' if validation.ok else 'INVALID: ' + '; '.join(validation.errors)})"
    )
    # --- the HTML report (what `vecap report OUT` writes) ------------------------------------
    from pipeline.report import ReportConfig, build_report

    page = build_report(ReportConfig(output_dir=out))
    print(f"report: {page.path} (open it in a browser)")
    # -------------------------------------------------------------------------------------------
    print(f"demo done in {time.time() - t0:.1f} s: {result.rows_written} rows in {out}/shards")
    print("note: the tiny models write gibberish; see README 'Real models' for real captions.")
    return 0 if validation.ok and result.status == "succeeded" else 1


def _serve_sample(args: argparse.Namespace) -> int:
    from pipeline.sample.server import SAMPLE_DIR, SampleServer, sample_input_table

    with SampleServer(root_dir=args.root or SAMPLE_DIR, port=args.port) as server:
        print(f"serving {args.root or SAMPLE_DIR} at {server.base_url} (Ctrl-C stops)", flush=True)
        if args.write_table:
            print(f"wrote {sample_input_table(server.base_url, args.write_table)}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
