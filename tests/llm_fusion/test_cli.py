"""``vecap fuse-preview``: prompt rendering with the model's template, and a real generation."""

from __future__ import annotations

import pytest

from pipeline.cli import main


@pytest.mark.slow  # builds the tiny models (shared session fixture)
def test_preview_renders_the_chat_template(tiny_models, capsys) -> None:
    code = main(
        ["fuse-preview", "--model", str(tiny_models.llm), "--alt", "Charles Bridge, Prague",
         "--visual", "A stone bridge over a river."]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "prompt id: veclip-fuse-v1" in out
    assert "[INST] Merge the two descriptions" in out  # the tiny Llama's Llama-2 template
    assert "<alt_text>Charles Bridge, Prague</alt_text>" in out
    assert "caption:" not in out  # no generation without --generate


def test_preview_reports_a_skip_without_loading_anything(capsys) -> None:
    code = main(
        ["fuse-preview", "--model", "/nonexistent", "--alt", "IMG_0001.jpg", "--visual", "A dog."]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "no LLM call: fusion_source=visual reason=alt_file_name" in out
    assert "caption: A dog." in out


@pytest.mark.slow
def test_preview_generates(tiny_models, capsys) -> None:
    code = main(
        ["fuse-preview", "--model", str(tiny_models.llm), "--alt", "Charles Bridge",
         "--visual", "A stone bridge.", "--generate", "--max-new-tokens", "8", "--device", "cpu"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "raw output: " in out and "fusion_source=" in out and "caption: " in out


def test_preview_rejects_an_unknown_prompt(capsys) -> None:
    code = main(["fuse-preview", "--model", "m", "--alt", "a", "--visual", "b", "--prompt", "x"])
    assert code == 2
    assert "unknown prompt_id" in capsys.readouterr().err


def test_preview_uses_the_family_fallback_like_the_stage(chat_family_models, capsys) -> None:
    vicuna = str(chat_family_models["vicuna_v1.1"].without_template)
    args = ["fuse-preview", "--model", vicuna, "--alt", "Charles Bridge", "--visual", "A bridge."]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "chat template: fallback:vicuna_v1.1" in out
    assert "polite answers to the user's questions. USER: Merge the two descriptions" in out
    assert out.split("---- end of prompt ----")[0].rstrip().endswith("Caption: ASSISTANT:")
    assert main([*args, "--chat-template", "raw"]) == 0
    assert "USER:" not in capsys.readouterr().out
