"""The nested pipeline config: defaults <- file <- flags, validation, and the CLI mapping."""

from __future__ import annotations

import pytest

from pipeline.cli import build_parser
from pipeline.cli.run import config_dict_from_args
from pipeline.config import (
    DEFAULT_CAPTION_MODEL,
    DEFAULT_SHARD_SIZE,
    ConfigError,
    build_pipeline_config,
    load_config_file,
)


def _args(argv):
    parser = build_parser(("pipeline.cli.run",))
    args, extra = parser.parse_known_args(argv)
    return args, extra


def test_defaults_a_newcomer_can_live_with():
    c = build_pipeline_config({"input": "in.csv", "output": "out"})
    assert c.stages == ("download", "caption", "fuse")
    assert c.reader.shard_size == DEFAULT_SHARD_SIZE
    assert c.caption.generation.model == DEFAULT_CAPTION_MODEL
    assert c.ethics is None and c.fusion is not None
    assert c.writer.output == "out" and c.download.allow_private_networks is False


def test_yaml_and_toml_files_and_flags_win(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text(
        "input: data/*.parquet\noutput: out\nstages: [download, caption]\n"
        "reader: {shard_size: 500, url_column: image_url}\n"
        "download: {threads: 4, allowed_schemes: [https]}\n"
        "caption: {generation: {model: m1, batch_size: 4}}\n"
        "beam_args: ['--direct_num_workers=1']\n"
    )
    t = tmp_path / "c.toml"
    t.write_text(
        'input = "data/*.parquet"\noutput = "out"\nstages = ["download", "caption"]\n'
        'beam_args = ["--direct_num_workers=1"]\n'
        '[reader]\nshard_size = 500\nurl_column = "image_url"\n'
        '[download]\nthreads = 4\nallowed_schemes = ["https"]\n'
        '[caption.generation]\nmodel = "m1"\nbatch_size = 4\n'
    )
    assert load_config_file(str(y)) == load_config_file(str(t))
    args, extra = _args(
        ["run", "--config", str(y), "--shard-size", "250", "--caption-batch-size", "2",
         "--set", "download.retries=5", "--set", "caption.generation.max_batch_duration_secs=2.5",
         "--runner", "FnApiRunner"]
    )  # fmt: skip
    c = build_pipeline_config(config_dict_from_args(args, extra))
    assert c.reader.shard_size == 250  # flag over file
    assert c.reader.url_column == "image_url"  # file over default
    assert c.download.threads == 4 and c.download.retries == 5
    assert c.download.allowed_schemes == ("https",)  # YAML list -> the dataclass's tuple
    assert c.caption.generation.model == "m1" and c.caption.generation.batch_size == 2
    assert c.caption.generation.max_batch_duration_secs == 2.5
    assert c.fusion is None
    assert c.run.beam_args == ("--direct_num_workers=1", "--runner", "FnApiRunner")


@pytest.mark.parametrize(
    "data, message",
    [
        ({"output": "o"}, "an input is required"),
        ({"input": "i", "output": "o", "from": "x"}, "not both"),
        ({"input": "i"}, "output is required"),
        ({"input": "i", "output": "o", "stages": ["fuse", "bake"]}, "unknown stage"),
        ({"input": "i", "output": "o", "stages": ["fuse", "fuse"]}, "listed twice"),
        ({"input": "i", "output": "o", "downlaod": {}}, "unknown config key"),
        ({"input": "i", "output": "o", "download": {"thread": 3}}, "known: threads"),
        (
            {
                "input": "i",
                "output": "o",
                "caption": {"generation": {"model": "m", "batch_size": 0}},
            },
            "caption",
        ),
        ({"from": "o", "output": "o/"}, "same directory"),
    ],
)
def test_bad_configs_are_clear_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        build_pipeline_config(data)


def test_stage_order_is_normalised_and_ethics_defaults_to_the_fusion_model():
    c = build_pipeline_config(
        {
            "input": "i",
            "output": "o",
            "stages": "fuse,ethics,caption",
            "fusion": {"generation": {"model": "f"}},
        }
    )
    assert c.stages == ("caption", "ethics", "fuse")
    assert c.ethics.enabled and c.ethics.generation.model == "f"
    blocklist_only = build_pipeline_config(
        {"input": "i", "output": "o", "stages": "caption,ethics", "ethics": {"blocklist": ["bad"]}}
    )
    assert blocklist_only.ethics.generation is None


def test_cli_flags_map_to_every_model_stage():
    args, extra = _args(
        ["run", "--input", "a.csv", "--input", "b.csv", "--output", "o", "--backend", "vllm",
         "--caption-model", "c", "--fusion-model", "f", "--no-progress", "--caption-column", "",
         "--allow-private-networks", "--stages", "download,caption,fuse", "--", "--project=p"]
    )  # fmt: skip
    c = build_pipeline_config(config_dict_from_args(args, extra))
    assert c.reader.input == ("a.csv", "b.csv") and c.reader.caption_column is None
    assert c.caption.generation.backend == c.fusion.generation.backend == "vllm"
    assert c.run.progress is False and c.download.allow_private_networks is True
    assert c.run.beam_args == ("--project=p",)


def test_unknown_flags_are_refused(capsys):
    from pipeline.cli import main

    assert main(["run", "--input", "a.csv", "--output", "o", "--shard-sise", "3"]) == 2
    assert "--shard-sise: neither a vecap run flag" in capsys.readouterr().err


def test_ethics_generation_inherits_the_fusion_generation():
    c = build_pipeline_config(
        {
            "input": "i",
            "output": "o",
            "stages": "caption,ethics,fuse",
            "fusion": {"generation": {"model": "f", "device": "cpu", "batch_size": 3}},
            "ethics": {"generation": {"model": "e"}},
        }
    )
    assert (
        c.ethics.generation.model,
        c.ethics.generation.device,
        c.ethics.generation.batch_size,
    ) == ("e", "cpu", 3)
