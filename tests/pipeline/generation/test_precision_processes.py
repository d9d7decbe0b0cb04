"""Precision and processes on GPU workers, checked on the CPU with mocked devices: bf16 only
where the configured GPU has it in hardware, no fork of a threaded worker, no setting a backend
silently ignores."""

from __future__ import annotations

import os

import pytest

from pipeline.generation import GenerationConfig


@pytest.mark.parametrize(
    ("capabilities", "device", "expected"),
    [
        ({0: (8, 0)}, "cuda", "bfloat16"),  # A100
        ({0: (9, 0)}, "cuda:0", "bfloat16"),  # H100
        ({0: (7, 5)}, "cuda", "float16"),  # T4: bf16 is emulated there
        ({0: (7, 0)}, "cuda:0", "float16"),  # V100
        ({0: (7, 5), 1: (8, 9)}, "cuda:1", "bfloat16"),  # the configured GPU, not the current
        ({0: (8, 9), 1: (7, 5)}, "cuda:1", "float16"),
    ],
)
def test_auto_dtype_is_bf16_only_on_native_bf16_gpus(capabilities, device, expected, monkeypatch):
    import torch

    from pipeline.generation.transformers_backend import resolve_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation counts
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: capabilities[i or 0])
    assert resolve_dtype("auto", device) == getattr(torch, expected)
    assert resolve_dtype("float32", device) == torch.float32  # an explicit dtype is kept
    assert resolve_dtype("auto", "cpu") == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backend": "transformers", "tensor_parallel_size": 2}, "tensor_parallel_size is vLLM's"),
        ({"backend": "vllm", "device": "cuda:1"}, "--gpus"),
        ({"backend": "openai", "base_url": "http://127.0.0.1:1/v1", "gpus": "0"}, "own"),
    ],
)
def test_settings_a_backend_cannot_honour_are_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GenerationConfig(model="org/model", **kwargs)


def test_loading_an_engine_keeps_workers_from_forking_threads(tiny_models, monkeypatch):
    from pipeline.generation import load_generator

    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD", raising=False)
    load_generator(GenerationConfig(model=str(tiny_models.llm), device="cpu"), multimodal=False)
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # the user's own choice stays
    from pipeline.generation.factory import _process_env

    _process_env(GenerationConfig(model="org/model", backend="vllm", vllm_engine="offline"))
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"
    assert os.environ["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"


def test_engine_servers_start_with_spawn_and_no_tokenizer_threads():
    from pipeline.generation.devices import EngineSlot
    from pipeline.generation.engine_server import server_env

    env = server_env(
        EngineSlot("gpu3", "3"),
        {"VLLM_WORKER_MULTIPROC_METHOD": "fork", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
    )
    assert env["CUDA_VISIBLE_DEVICES"] == "3"
    assert env["VLLM_WORKER_MULTIPROC_METHOD"] == "spawn"
    assert env["TOKENIZERS_PARALLELISM"] == "false"
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in env


def test_worker_image_sets_spawn_and_no_tokenizer_threads():
    from tests.pipeline.test_dockerfile import _instructions

    env = " ".join(rest for op, rest in _instructions() if op == "ENV").split()
    assert "TOKENIZERS_PARALLELISM=false" in env
    assert "VLLM_WORKER_MULTIPROC_METHOD=spawn" in env
