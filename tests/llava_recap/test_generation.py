"""The shared generation layer on the tiny models (transformers backend)."""

from __future__ import annotations

import pytest

from pipeline.generation import GenerationConfig, load_generator, render_chat

PROMPT = "Describe the image concisely, less than 20 words."
LLAVA_FALLBACK = "USER: <image>\n{user} ASSISTANT:"


@pytest.fixture(scope="module")
def llava(tiny_models):
    cfg = GenerationConfig(model=str(tiny_models.llava), max_new_tokens=12, device="cpu")
    return load_generator(cfg, multimodal=True)


@pytest.fixture(scope="module")
def llama(tiny_models):
    cfg = GenerationConfig(model=str(tiny_models.llm), max_new_tokens=12, device="cpu")
    return load_generator(cfg, multimodal=False)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backend": "tgi"},
        {"dtype": "float8"},
        {"device": "tpu"},
        {"max_new_tokens": 0},
        {"temperature": 0.0},
        {"top_p": 0.0},
        {"batch_size": 2, "min_batch_size": 4},
        {"min_batch_size": 0},
        {"batch_size": 0},
        {"max_batch_duration_secs": 0},
        {"gpu_memory_utilization": 1.5},
        {"tensor_parallel_size": 0},
        {"model": ""},
    ],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        GenerationConfig(**{"model": "m", **kwargs})


def test_batch_elements_kwargs():
    cfg = GenerationConfig(model="m", batch_size=32, min_batch_size=4, max_batch_duration_secs=2)
    assert cfg.batch_elements_kwargs() == {
        "min_batch_size": 4,
        "max_batch_size": 32,
        "max_batch_duration_secs": 2,
    }
    default = GenerationConfig(model="m", batch_size=8).batch_elements_kwargs()
    assert default == {"min_batch_size": 8, "max_batch_size": 8}  # full batches by default


def test_render_chat_llava_15_template(llava):
    text = render_chat(llava.processor, PROMPT, image=True, fallback_template="unused")
    assert text == f"USER: <image>\n{PROMPT} ASSISTANT:"


def test_render_chat_llama2_template_with_system(llama):
    text = render_chat(
        llama.processor, "fuse these", image=False, system="Be brief.", fallback_template="x"
    )
    assert text == "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nfuse these [/INST]"
    assert (
        render_chat(llama.processor, "hi", image=False, fallback_template="x")
        == "[INST] hi [/INST]"
    )


def test_render_chat_fallback_without_template():
    class NoTemplate:
        chat_template = None

    text = render_chat(NoTemplate(), PROMPT, image=True, fallback_template=LLAVA_FALLBACK)
    assert text == f"USER: <image>\n{PROMPT} ASSISTANT:"
    text = render_chat(
        NoTemplate(), "u", image=False, system="s", fallback_template="{system}|{user}"
    )
    assert text == "s|u"


def test_batched_equals_one_by_one_multimodal(llava, images):
    prompt = render_chat(llava.processor, PROMPT, image=True, fallback_template=LLAVA_FALLBACK)
    batched = llava.generate([prompt] * len(images), images)
    single = [llava.generate([prompt], [image])[0] for image in images]
    assert batched == single
    assert len(set(batched)) > 1, "distinct images should not all give one caption"
    assert all(isinstance(c, str) and c for c in batched)


def test_batched_equals_one_by_one_text_with_uneven_lengths(llama):
    # very different prompt lengths: left padding must not shift any row's continuation
    users = ["a", "a dog on the beach " * 6, "two people in the park", "red car"]
    prompts = [
        render_chat(llama.processor, u, image=False, fallback_template="{user}") for u in users
    ]
    batched = llama.generate(prompts)
    assert batched == [llama.generate([p])[0] for p in prompts]
    assert len(set(batched)) == len(batched)


def test_greedy_is_deterministic_and_sampling_seeded(tiny_models, llama):
    prompt = render_chat(llama.processor, "hello", image=False, fallback_template="{user}")
    assert llama.generate([prompt]) == llama.generate([prompt])
    cfg = GenerationConfig(
        model=str(tiny_models.llm), do_sample=True, seed=7, max_new_tokens=12, device="cpu"
    )
    sampler = load_generator(cfg, multimodal=False)
    assert sampler.generate([prompt] * 2) == sampler.generate([prompt] * 2)


def test_misaligned_inputs_raise(llava, images):
    with pytest.raises(ValueError, match="2 prompts but 1 images"):
        llava.generate(["a", "b"], images[:1])


def test_empty_batch(llava):
    assert llava.generate([], []) == []


def test_missing_vllm_names_install_command(tiny_models, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm" or name.startswith("vllm."):
            raise ImportError("No module named 'vllm'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    cfg = GenerationConfig(model=str(tiny_models.llm), backend="vllm")
    with pytest.raises(ImportError, match="pip install"):
        load_generator(cfg, multimodal=False)


def test_processor_without_template_uses_fallback_even_if_tokenizer_has_one():
    class Tok:
        chat_template = "{{ messages[0]['content'] }}"

    class Proc:
        chat_template = None
        tokenizer = Tok()

    text = render_chat(Proc(), PROMPT, image=True, fallback_template=LLAVA_FALLBACK)
    assert text == f"USER: <image>\n{PROMPT} ASSISTANT:"


LLAMA3_STYLE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_template_bos_is_not_doubled(tiny_models):
    """Templates that write bos_token (Llama 3, Mistral) must not give two BOS after tokenizing."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models.llm)
    tokenizer.chat_template = LLAMA3_STYLE
    text = render_chat(tokenizer, "hi", image=False, fallback_template="x")
    ids = tokenizer(text)["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    # a tokenizer that adds no BOS itself keeps the template's
    tokenizer.add_bos_token = False
    assert tokenizer("")["input_ids"] == []
    text = render_chat(tokenizer, "hi", image=False, fallback_template="x")
    assert text.startswith(tokenizer.bos_token)
    assert tokenizer(text)["input_ids"].count(tokenizer.bos_token_id) == 1
