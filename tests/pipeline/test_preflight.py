"""The checks before a job starts: the output (pipeline.preflight) and the models
(pipeline.generation.availability), without the network and without writing anything."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import ModelNotAvailableError, OutputError, UsageError
from pipeline.generation.availability import check_model_available, model_problem
from pipeline.preflight import check_models, check_output


@pytest.fixture
def offline(monkeypatch, tmp_path):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def _cache_model(cache, repo: str) -> None:
    """A hub-cache entry as huggingface_hub lays it out: refs/main -> snapshots/<sha>/config.json."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    sha = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(sha)
    (folder / "snapshots" / sha).mkdir(parents=True)
    (folder / "snapshots" / sha / "config.json").write_text("{}")


def test_local_directories(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    assert "no config.json" in model_problem(str(model))
    (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert model_problem(str(model)) is None
    (tmp_path / "weights.bin").write_bytes(b"x")
    assert "is a file" in model_problem(str(tmp_path / "weights.bin"))


@pytest.mark.parametrize("name", ["/no/such/model", "./model", "~/models/x", "a/b/c", "bad id!"])
def test_paths_and_names_that_cannot_be_a_model(name, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(ModelNotAvailableError, match="does not exist") as err:
        check_model_available(name, "--caption-model")
    assert str(err.value).startswith("--caption-model: ") and repr(name) in str(err.value)
    assert isinstance(err.value, UsageError)


def test_hub_ids_pass_online_and_need_the_cache_offline(monkeypatch, offline):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert model_problem("llava-hf/llava-1.5-7b-hf") is None  # no network asked
    assert model_problem("gpt2") is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE" in model_problem("llava-hf/llava-1.5-7b-hf")
    _cache_model(offline, "llava-hf/llava-1.5-7b-hf")
    assert model_problem("llava-hf/llava-1.5-7b-hf") is None


def test_check_models_follows_the_stages_and_skips_replaced_ones(tmp_path, monkeypatch):
    from pipeline.config import build_pipeline_config

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    (tmp_path / "in.csv").write_text("url,caption\n")
    data = {
        "input": str(tmp_path / "in.csv"),
        "output": str(tmp_path / "out"),
        "stages": ["download", "caption", "fuse"],
        "caption": {"generation": {"model": "/missing/llava"}},
        "fusion": {"generation": {"model": "/missing/vicuna"}},
    }
    config = build_pipeline_config(data)
    with pytest.raises(ModelNotAvailableError, match="--caption-model"):
        check_models(config)
    with pytest.raises(ModelNotAvailableError, match="--fusion-model"):
        check_models(config, skip_stages={"caption"})
    check_models(config, skip_stages={"caption", "fuse"})
    check_models(build_pipeline_config({**data, "stages": ["download"]}))


def test_output_checks(tmp_path):
    check_output(str(tmp_path / "new" / "deeper"))  # creatable: fine, and nothing is created
    assert not (tmp_path / "new").exists()
    check_output(str(tmp_path))
    check_output("memory://vecap-preflight/out")
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="existing file"):
        check_output(str(tmp_path / "f"))
    with pytest.raises(OutputError, match="is a file, not a directory"):
        check_output(str(tmp_path / "f" / "out"))
    with pytest.raises(OutputError, match="nosuchproto"):
        check_output("nosuchproto://bucket/out")


def test_on_a_remote_runner_an_absolute_path_is_the_workers(tmp_path, caplog):
    """A model baked into the worker image (/models/...) need not exist on the launcher; a
    relative path or a hub id is still checked."""
    from pipeline.config import build_pipeline_config

    data = {
        "input": str(tmp_path / "in.csv"),
        "output": str(tmp_path / "out"),
        "stages": ["download", "caption"],
        "caption": {"generation": {"model": "/models/llava-1.5-7b-hf"}},
    }
    config = build_pipeline_config(data)
    with pytest.raises(ModelNotAvailableError):
        check_models(config, local=True)
    with caplog.at_level("WARNING"):
        check_models(config, local=False)
    assert "the workers must have it" in caplog.text
    relative = build_pipeline_config({**data, "caption": {"generation": {"model": "./llava"}}})
    with pytest.raises(ModelNotAvailableError):
        check_models(relative, local=False)
