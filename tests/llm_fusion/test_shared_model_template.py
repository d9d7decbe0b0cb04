"""With ``share_model_across_processes`` the prompt still goes through the model's chat template.

Beam hands ``run_inference`` a cross-process proxy (``apache_beam.utils.multi_process_shared``)
instead of the model. A stage that read ``model.processor`` through it got a bound remote method,
found no template on it and sent the bare user text, silently. These tests run the fusion and
ethics stages on Beam with sharing on — the model really sits behind Beam's proxy — and check
the prompts the model *received*.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llm_fusion.config import EthicsConfig, FusionConfig
from llm_fusion.ethics import EthicsCheckStage
from llm_fusion.stage import FusionStage
from pipeline.generation import ChatTemplateError, GenerationConfig
from pipeline.generation.transformers_backend import TransformersGenerator
from tests.llm_fusion.fakes import run_transform
from tests.llm_fusion.test_fusion_stage import rec

MARK = "<<vecap-test-template>>"
DISTINCT_TEMPLATE = (
    MARK + "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}[/{{ m['role'] }}]"
    "{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
)


def _copy_with_template(src: Path, dst: Path, template: str | None) -> Path:
    from transformers import AutoTokenizer

    shutil.copytree(src, dst)
    for name in ("chat_template.jinja", "chat_template.json"):
        (dst / name).unlink(missing_ok=True)
    config = json.loads((dst / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (dst / "tokenizer_config.json").write_text(json.dumps(config))
    tokenizer = AutoTokenizer.from_pretrained(dst)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def distinct_llm(tiny_models, tmp_path_factory) -> Path:
    """The tiny Llama with a chat template no other code path could produce."""
    return _copy_with_template(
        tiny_models.llm, tmp_path_factory.mktemp("distinct") / "tiny-distinct", DISTINCT_TEMPLATE
    )


class RecordingGenerator(TransformersGenerator):
    """The real transformers generator, appending every prompt it receives to a file."""

    def __init__(self, config: GenerationConfig, log: str) -> None:
        super().__init__(config, multimodal=False)
        self.log = log

    def generate(self, prompts, images=None):
        with open(self.log, "a", encoding="utf-8") as f:
            for prompt in prompts:
                f.write(json.dumps(prompt) + "\n")
        return super().generate(prompts, images)


class RecordingLoader:
    """Picklable loader: Beam ships it to the (shared) model's process."""

    def __init__(self, log: Path) -> None:
        self.log = str(log)

    def __call__(self, config: GenerationConfig) -> RecordingGenerator:
        return RecordingGenerator(config, self.log)


def _received(log: Path) -> list[str]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def _gen(model: Path) -> GenerationConfig:
    return GenerationConfig(model=str(model), max_new_tokens=4, batch_size=4, device="cpu")


ROWS = [rec(i, f"The old bridge in Prague number {i}", vc="A stone bridge.") for i in range(5)]


@pytest.mark.slow
def test_shared_fusion_model_gets_templated_prompts(distinct_llm, tmp_path) -> None:
    log = tmp_path / "prompts.jsonl"
    cfg = FusionConfig(generation=_gen(distinct_llm), share_model_across_processes=True)
    stage = FusionStage(cfg, generator_loader=RecordingLoader(log))
    assert stage.handler.share_model_across_processes()
    out = run_transform(stage, ROWS, tmp_path)
    assert len(out) == len(ROWS)
    prompts = _received(log)
    assert len(prompts) >= len(ROWS)
    for prompt in prompts:
        assert prompt.startswith(MARK + "[user]"), prompt[:80]
        assert prompt.endswith("[/user][assistant]")
    users = {stage.rules.user_text(r) for r in ROWS}
    assert {p[len(MARK + "[user]") : -len("[/user][assistant]")] for p in prompts} == users


@pytest.mark.slow
def test_shared_ethics_model_gets_templated_prompts(distinct_llm, tmp_path) -> None:
    log = tmp_path / "prompts.jsonl"
    cfg = EthicsConfig(
        enabled=True, generation=_gen(distinct_llm), share_model_across_processes=True
    )
    stage = EthicsCheckStage(cfg, generator_loader=RecordingLoader(log))
    assert stage.handler.share_model_across_processes()
    out = run_transform(stage, ROWS, tmp_path)
    assert len(out) == len(ROWS) and all(r.ethics_flagged is not None for r in out)
    prompts = _received(log)
    assert len(prompts) >= len(ROWS)
    for prompt in prompts:
        assert prompt.startswith(MARK + "[user]") and prompt.endswith("[/user][assistant]")
        assert prompt.endswith("Answer:[/user][assistant]")  # the ethics question, templated


def test_the_proxy_hides_the_tokenizer_but_chat_renders_behind_it(distinct_llm) -> None:
    """Why rendering moved into the model's process: what a stage sees through Beam's proxy."""
    import uuid

    from apache_beam.utils.multi_process_shared import MultiProcessShared

    gen = _gen(distinct_llm)
    shared = MultiProcessShared(
        lambda: TransformersGenerator(gen, multimodal=False),
        tag=f"vecap-test-{uuid.uuid4().hex}",
        always_proxy=True,
    )
    proxy = shared.acquire()
    try:
        # the attribute arrives as a bound remote method: no chat template on it
        assert getattr(proxy.processor, "chat_template", None) is None
        prompt = proxy.render_prompts(["hello"])[0]
        assert prompt == MARK + "[user]hello[/user][assistant]"
        assert len(proxy.chat(["hello", "two"])) == 2
    finally:
        shared.release(proxy)


def test_no_template_and_no_known_family_is_an_error(tiny_models, tmp_path) -> None:
    """A Llama-type model without a template or any family sign: an error, never the raw text."""
    bare = _copy_with_template(tiny_models.llm, tmp_path / "tiny-unknown-base", None)
    cfg = FusionConfig(generation=_gen(bare))
    stage = FusionStage(cfg)
    with pytest.raises(ChatTemplateError, match="no chat template"):
        stage.handler.load_model()
    generator = TransformersGenerator(_gen(bare), multimodal=False)
    with pytest.raises(ChatTemplateError):
        generator.chat(["hello"])
    # raw only when asked for
    raw = FusionStage(FusionConfig(generation=_gen(bare), chat_template="raw"))
    model = raw.handler.load_model()
    assert model.render_prompts(["hello"], chat_template=raw.handler._chat_template) == ["hello"]
