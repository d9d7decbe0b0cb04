"""Fusion prompts per model family, through tiny models that carry each family's real template.

Expected prompts are written out by hand from each family's published format. Tokenizing adds
the BOS for the Llama/Mistral families, so the BOS a template writes is dropped from the text
(one BOS after tokenizing, not two); Qwen adds none and writes none.
"""

from __future__ import annotations

import json

import pytest

from llm_fusion.config import FusionConfig
from llm_fusion.prompts import VECLIP_FUSE_V1
from llm_fusion.stage import FusionStage
from pipeline.generation import ChatTemplateChoice, ChatTemplateError, GenerationConfig
from pipeline.generation.templates import (
    FAMILIES,
    chat_template_choice,
    detect_family,
    family_template,
)
from pipeline.generation.transformers_backend import TransformersGenerator
from tests.fixtures.chat_families import FAMILY_NAMES, family_spec
from tests.llm_fusion.fakes import run_transform
from tests.llm_fusion.test_fusion_stage import rec
from tests.llm_fusion.test_prompts import ALT, GOLDEN_VECLIP_USER, VC
from tests.llm_fusion.test_shared_model_template import RecordingLoader

U = GOLDEN_VECLIP_USER
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
EXPECTED = {
    "vicuna_v1.1": f"{VICUNA_SYSTEM} USER: {U} ASSISTANT:",
    "llama-2": f"[INST] {U} [/INST]",
    "mistral": f"[INST] {U} [/INST]",
    "llama-3": (
        f"<|start_header_id|>user<|end_header_id|>\n\n{U}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "chatml": f"<|im_start|>user\n{U}<|im_end|>\n<|im_start|>assistant\n",
    "qwen2.5": (
        f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{U}<|im_end|>\n<|im_start|>assistant\n"
    ),
}


def _generator(path) -> TransformersGenerator:
    return TransformersGenerator(
        GenerationConfig(model=str(path), max_new_tokens=3, device="cpu"), multimodal=False
    )


def _one_bos_or_none(generator: TransformersGenerator, prompt: str, spec: dict) -> None:
    tok = generator.tokenizer
    ids = tok(prompt)["input_ids"]
    if spec["add_bos"]:
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    else:
        assert tok.bos_token_id is None or tok.bos_token_id not in ids


def test_the_fallbacks_are_the_published_templates() -> None:
    assert set(FAMILIES) == set(FAMILY_NAMES)
    for family in FAMILY_NAMES:
        published = family_spec(family)["chat_template"]
        if published is not None:
            assert family_template(family) == published, family


def fastchat_vicuna_v11(system: str, user: str) -> str:
    """FastChat's Conversation.get_prompt for SeparatorStyle.ADD_COLON_TWO (vicuna_v1.1), one
    user turn and the open assistant turn, as fastchat/conversation.py computes it."""
    conv = family_spec("vicuna_v1.1")["fastchat_conversation"]
    seps = [conv["sep"], conv["sep2"]]
    ret = system + seps[0]
    for i, (role, message) in enumerate(zip(conv["roles"], [user, None], strict=True)):
        ret += f"{role}: {message}{seps[i % 2]}" if message else f"{role}:"
    return ret


def test_vicuna_fallback_is_fastchats_vicuna_v11(chat_family_models) -> None:
    generator = _generator(chat_family_models["vicuna_v1.1"].without_template)
    conv = family_spec("vicuna_v1.1")["fastchat_conversation"]
    assert generator.render_prompts([U]) == [fastchat_vicuna_v11(conv["system_message"], U)]
    assert generator.render_prompts(["hi"], system="Be brief.") == [
        fastchat_vicuna_v11("Be brief.", "hi")
    ]


@pytest.mark.parametrize("family", [f for f in FAMILY_NAMES if f != "vicuna_v1.1"])
def test_own_template_renders_the_family_format(chat_family_models, family) -> None:
    model = chat_family_models[family]
    generator = _generator(model.with_template)
    assert generator.resolve_chat_template().source == "tokenizer"
    (prompt,) = generator.render_prompts([U])
    assert prompt == EXPECTED[family]
    _one_bos_or_none(generator, prompt, model.spec)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_without_a_template_the_family_fallback_renders_the_same(
    chat_family_models, family
) -> None:
    model = chat_family_models[family]
    generator = _generator(model.without_template)
    assert generator.processor.chat_template is None
    assert generator.resolve_chat_template().source == f"fallback:{family}"
    (prompt,) = generator.render_prompts([U])
    assert prompt == EXPECTED[family]
    _one_bos_or_none(generator, prompt, model.spec)


def test_detection_reads_config_and_tokens_not_only_names(chat_family_models, tmp_path) -> None:
    import shutil

    from transformers import AutoConfig

    for family in ("llama-3", "mistral", "chatml", "qwen2.5"):
        path = chat_family_models[family].without_template
        generator = _generator(path)
        config = AutoConfig.from_pretrained(path)
        # a name that says nothing: the family still comes from model_type / special tokens
        assert detect_family(generator.processor, config, "some/model") == family
    # Llama-type checkpoints look alike (vicuna, llama-2, base llama): only the name tells
    vicuna = chat_family_models["vicuna_v1.1"].without_template
    config = AutoConfig.from_pretrained(vicuna)
    assert detect_family(_generator(vicuna).processor, config, "x") == "vicuna_v1.1"
    anonymous = shutil.copytree(vicuna, tmp_path / "tiny-llama-base")
    config = AutoConfig.from_pretrained(anonymous)
    assert detect_family(_generator(anonymous).processor, config, str(anonymous)) is None


def test_system_text_per_family(chat_family_models) -> None:
    llama2 = _generator(chat_family_models["llama-2"].with_template)
    assert llama2.render_prompts(["hi"], system="Be brief.") == [
        "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nhi [/INST]"
    ]
    qwen = _generator(chat_family_models["qwen2.5"].with_template)
    assert qwen.render_prompts(["hi"], system="Be brief.") == [
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\n"
    ]
    # Mistral's template has no system role: it refuses rather than drop the text
    mistral = _generator(chat_family_models["mistral"].with_template)
    with pytest.raises(Exception, match="roles must alternate"):
        mistral.render_prompts(["hi"], system="Be brief.")


def test_named_file_and_raw_choices_override(chat_family_models, tmp_path) -> None:
    generator = _generator(chat_family_models["llama-2"].with_template)
    chatml = chat_template_choice("chatml")
    assert generator.render_prompts([U], chat_template=chatml) == [EXPECTED["chatml"]]
    path = tmp_path / "mine.jinja"
    path.write_text("{% for m in messages %}<<{{ m['content'] }}>>{% endfor %}=>")
    mine = chat_template_choice(str(path))
    assert mine == ChatTemplateChoice(f"file:{path}", path.read_text())
    assert generator.render_prompts(["hi"], chat_template=mine) == ["<<hi>>=>"]
    assert generator.render_prompts([U], chat_template=chat_template_choice("raw")) == [U]
    with pytest.raises(ChatTemplateError, match="is not auto, raw"):
        chat_template_choice(str(tmp_path / "missing.jinja"))
    with pytest.raises(ChatTemplateError, match="no jinja"):
        (tmp_path / "plain.txt").write_text("just words")
        chat_template_choice(str(tmp_path / "plain.txt"))


@pytest.mark.slow
def test_vicuna_without_template_fuses_with_the_vicuna_format(chat_family_models, tmp_path):
    """The fusion stage on a vicuna-7b-v1.5-like checkpoint (no template): vicuna v1.1, not raw."""
    log = tmp_path / "prompts.jsonl"
    gen = GenerationConfig(
        model=str(chat_family_models["vicuna_v1.1"].without_template),
        max_new_tokens=3,
        batch_size=2,
        device="cpu",
    )
    rows = [rec(i, ALT, vc=VC) for i in range(3)]
    stage = FusionStage(FusionConfig(generation=gen), generator_loader=RecordingLoader(log))
    assert len(run_transform(stage, rows, tmp_path)) == len(rows)
    received = [json.loads(line) for line in log.read_text().splitlines()]
    expected = f"{VICUNA_SYSTEM} USER: {VECLIP_FUSE_V1.user_text(ALT, VC)} ASSISTANT:"
    assert received and all(p == expected for p in received)


def test_manifest_records_the_chat_template(chat_family_models, tmp_path) -> None:
    import hashlib
    from types import SimpleNamespace

    from llm_fusion.config import EthicsConfig
    from pipeline.errors import ConfigError
    from pipeline.manifest import prompt_record

    def gen(path) -> GenerationConfig:
        return GenerationConfig(model=str(path))

    vicuna = chat_family_models["vicuna_v1.1"].without_template
    config = SimpleNamespace(
        caption=None,
        fusion=FusionConfig(generation=gen(vicuna)),
        ethics=EthicsConfig(
            enabled=True,
            generation=gen(chat_family_models["qwen2.5"].with_template),
            chat_template="chatml",
        ),
    )
    record = prompt_record(config)
    assert record["fusion"]["chat_template"] == "auto"
    assert record["fusion"]["resolved"] == "fallback:vicuna_v1.1"
    sha = hashlib.sha256(family_template("vicuna_v1.1").encode()).hexdigest()
    assert record["fusion"]["template_sha256"] == sha
    assert record["ethics"]["chat_template"] == "chatml"
    assert record["ethics"]["resolved"] == "chatml"
    # a hub id that is not on this machine: resolved on the workers, nothing downloaded here
    remote = SimpleNamespace(
        caption=None, ethics=None, fusion=FusionConfig(generation=gen("lmsys/vicuna-7b-v1.5"))
    )
    assert prompt_record(remote)["fusion"]["resolved"] is None
    # a choice that cannot work fails before the run
    anonymous = tmp_path / "tiny-llama-base"
    import shutil

    shutil.copytree(vicuna, anonymous)
    bad = SimpleNamespace(caption=None, ethics=None, fusion=FusionConfig(generation=gen(anonymous)))
    with pytest.raises(ConfigError, match="^fusion.chat_template: .* has no chat template"):
        prompt_record(bad)
    missing = FusionConfig(generation=gen(vicuna), chat_template=str(tmp_path / "none.jinja"))
    with pytest.raises(ConfigError, match="^fusion.chat_template: chat_template '.*none.jinja'"):
        prompt_record(SimpleNamespace(caption=None, ethics=None, fusion=missing))
