"""Checkpoints on an object store (the loopback S3 server): copied once per machine, whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from pipeline.generation.model_cache import COMPLETE, cache_path, fetch_model, is_remote

ROOT = Path(__file__).resolve().parents[3]

_FETCH = """
import json, sys
from pipeline.generation.model_cache import fetch_model
path, copied = fetch_model(sys.argv[1])
print(json.dumps({"path": path, "copied": copied}))
"""


@pytest.fixture
def remote_llm(s3_server, tiny_models, tmp_path, monkeypatch) -> str:
    """The tiny LLM uploaded to a fresh prefix of the S3 server; a fresh model cache."""
    import fsspec

    url = f"s3://vecap-test/models-{uuid.uuid4().hex[:8]}/tiny-llm"
    fs = fsspec.filesystem("s3")
    for local in sorted(Path(tiny_models.llm).rglob("*")):
        if local.is_file():
            fs.put_file(str(local), f"{url}/{local.relative_to(tiny_models.llm)}")
    monkeypatch.setenv("VECAP_MODEL_CACHE", str(tmp_path / "cache"))
    return url


def test_two_processes_loading_at_once_copy_the_model_once(remote_llm, tiny_models):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _FETCH, remote_llm], stdout=subprocess.PIPE, text=True, env=env
        )
        for _ in range(2)
    ]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(r["copied"] for r in results) == [False, True]  # one copy, one waited
    path = Path(results[0]["path"])
    assert results[1]["path"] == str(path) == cache_path(remote_llm)
    marker = json.loads((path / COMPLETE).read_text())
    want = sorted(
        p.relative_to(tiny_models.llm) for p in Path(tiny_models.llm).rglob("*") if p.is_file()
    )
    got = sorted(p.relative_to(path) for p in path.rglob("*") if p.is_file() and p.name != COMPLETE)
    assert got == want and marker["files"] == len(want)
    assert fetch_model(remote_llm) == (str(path), False)  # later loads use the copy


def test_a_copy_killed_midway_is_copied_again(remote_llm):
    dest = Path(cache_path(remote_llm))
    dest.mkdir(parents=True)
    (dest / "config.json").write_text("{")  # half a model, no marker
    path, copied = fetch_model(remote_llm)
    assert copied and json.loads(Path(path, "config.json").read_text())


def test_a_remote_model_loads_and_keeps_its_url_as_its_name(remote_llm):
    from pipeline.generation import GenerationConfig, load_generator

    gen = load_generator(GenerationConfig(model=remote_llm, device="cpu", max_new_tokens=4), False)
    assert gen.config.model == cache_path(remote_llm)
    assert gen.config.served_model_name == remote_llm
    assert len(gen.generate(["hello"])) == 1


def test_preflight_reads_a_remote_model_from_the_store(remote_llm):
    from pipeline.errors import ModelNotAvailableError
    from pipeline.generation.availability import check_model_available
    from pipeline.generation.model_footprint import model_config

    check_model_available(remote_llm, "--fusion-model")
    assert model_config(remote_llm)["model_type"] == "llama"
    with pytest.raises(ModelNotAvailableError, match="holds no config.json"):
        check_model_available(remote_llm + "-missing", "--fusion-model")


def test_only_urls_are_remote():
    assert is_remote("s3://b/m") and is_remote("gs://b/m") and is_remote("memory://m")
    assert not is_remote("/models/llava") and not is_remote("llava-hf/llava-1.5-7b-hf")
    assert not is_remote("file:///models/llava")
