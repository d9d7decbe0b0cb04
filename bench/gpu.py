"""GPU throughput of the two model stages on the real 7B architectures, with random weights,
beside the raw engine on the same requests.

- caption: LLaVA-1.5-7B (``bench/configs/llava-1.5-7b.json``: CLIP ViT-L/14-336 + Vicuna-7B,
  576 image tokens per image) built in bf16 on the GPU with random weights — no hub download —
  driven through vecap's Beam-free caption core (``llava_recap.caption_rows.caption_records``:
  JPEG decode, image prep, prompt, ``generate`` with failed-batch isolation, cleaning) at batch
  8/16/32/64, images/s;
- fusion: Vicuna-7B (``bench/configs/vicuna-7b-v1.5.json``, the Llama-2-7B architecture)
  through vecap's Beam-free text core (``llm_fusion.text_rows.generate_texts``: user text, chat
  template, ``generate``) plus the fusion rules' output cleaning, pairs/s;
- the raw engine beside each, on the same requests: the same images and prompts pre-processed
  once (processor or tokenizer tensors already on the device, outside the timer), then
  back-to-back ``model.generate`` calls with the same batch sizes, lengths and stop tokens and
  nothing else in the loop. ``vecap_vs_raw`` = vecap's rows/s over the raw engine's (target
  >= 0.9), per batch size and at vecap's best batch;
- output lengths: random weights would stop at a random point, so every call is forced to a
  fixed length (``min_new_tokens`` = ``max_new_tokens`` = L) with L cycling through 25, 30, 35,
  40 over the timed rounds (a caption's realistic 25-40 tokens; 4 rounds: mean 32.5), the same
  sequence for vecap and the raw engine; ``mean_new_tokens`` is the mean over the timed calls.
  Prefill share: one vecap call with 1 new token over the mean timed call. Peak GPU memory per
  batch size, beside what vecap's memory plan predicts for it (``planned_mb``);
- vLLM where it is importable (not on the benchmark's GPU machines): vecap's path through
  ``pipeline.generation.load_generator`` (one config per length, equal load settings) and
  ``caption_records`` with every length's rows in flight at once, beside ``vllm.LLM`` with every
  request of the sweep in ONE ``generate`` call; configs in a directory, ``load_format="dummy"``.

The tokenizer and image processor are the offline tiny ones (``llava_recap.tiny_models``) with a
336-px CLIP processor: their ids fit the 7B vocabulary, and only lengths matter for speed.
Nothing here imports Apache Beam (the GPU machines have torch and transformers, not Beam or
vLLM); the transformers half checks it.

On a machine without CUDA (or with ``--tiny``) it runs the tiny configs on the CPU, so CI covers
every code path; its figures mean nothing. Compute limit to compare with on a GPU: LLaVA-1.5-7B
prefill is about 8.7 TFLOP per image (576 image tokens + prompt), 114 images/s at an H200's
989 TFLOP/s bf16 dense peak (``fraction_of_h200_prefill_bound``). ``--budget-s`` skips the
larger batch sizes when the run would not fit (default 420 s on a GPU). Last line: one JSON
object.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIGS = ROOT / "bench" / "configs"
LENGTHS = (25, 30, 35, 40)  # forced new tokens per timed round, cycled
H200_PREFILL_BOUND_IMAGES_PER_S = 114  # 8.7 TFLOP/image at 989 TFLOP/s bf16 dense


class Clock:
    """The run's time budget: a sweep starts a batch size only if it should fit."""

    def __init__(self, budget_s: float) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def fits(self, estimate_s: float, share: float = 1.0) -> bool:
        return self.elapsed() + estimate_s <= self.budget_s * share


def _config(name: str) -> dict:
    data = json.loads((CONFIGS / f"{name}.json").read_text())
    data.pop("_comment", None)
    return data


def _lengths(rounds: int) -> list[int]:
    return [LENGTHS[r % len(LENGTHS)] for r in range(rounds)]


def _tokenizers(work: Path, image_size: int):
    """The tiny BPE tokenizer (llama-2 template) and a LlavaProcessor at ``image_size`` px."""
    from transformers import AutoTokenizer, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from llava_recap.tiny_models import IMAGE_TOKEN, build_tiny_models

    tiny = build_tiny_models(work / "tiny")
    text_tok = AutoTokenizer.from_pretrained(str(tiny.llm), model_max_length=4096)
    llava_tok = AutoTokenizer.from_pretrained(str(tiny.llava), model_max_length=4096)
    base = LlavaProcessor.from_pretrained(str(tiny.llava))
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
        ),
        tokenizer=llava_tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        chat_template=base.chat_template,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )
    return text_tok, processor


def _llava(arch: dict, processor, device: str, dtype):
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    arch = dict(arch, image_token_index=processor.tokenizer.convert_tokens_to_ids("<image>"))
    config = LlavaConfig(**arch)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaForConditionalGeneration(config).to(dtype)
    _generation_defaults(model, processor.tokenizer)
    return model


def _llama(arch: dict, tokenizer, device: str, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**arch)).to(dtype)
    _generation_defaults(model, tokenizer)
    return model


def _generation_defaults(model, tokenizer) -> None:
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id


def _jpegs(n: int, size: int) -> list[bytes]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        w, h = size + 64 * (i % 3), size  # web images: not square, resized by the processor
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").save(
            buf, format="JPEG", quality=90
        )
        out.append(buf.getvalue())
    return out


def _caption_records(jpegs: list[bytes]) -> list:
    from schemas import Record, make_uid

    rows = [
        Record(uid=make_uid(0, i), shard_id=0, row_index=i, jpg=jpeg)
        for i, jpeg in enumerate(jpegs)
    ]
    return [(r.uid, r) for r in rows]


def _fusion_records(n: int) -> list:
    from schemas import Record, make_uid

    return [
        Record(
            uid=make_uid(0, i),
            shard_id=0,
            row_index=i,
            alt_text=f"Vintage red bicycle leaning on a wall, item {i}",
            visual_caption="A red bicycle parked beside a brick wall on a sunny street.",
        )
        for i in range(n)
    ]


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_mb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def _reset_peak() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _gen_config(model: str, device: str, dtype: str, batch: int, **kw):
    """The config a model is loaded with; every sweep config derives from it (``_decoding``)."""
    from pipeline.generation import GenerationConfig

    return GenerationConfig(model=model, device=device, dtype=dtype, batch_size=batch, **kw)


def _decoding(config, batch: int, tokens: int):
    """``config`` with only batching and decoding changed (a forced length): the load settings
    stay equal, which is what ``with_config`` and ``load_generator``'s views require."""
    return dataclasses.replace(
        config, batch_size=batch, max_new_tokens=tokens, min_new_tokens=tokens
    )


def _raw_kwargs(generator) -> dict:
    """What vecap's transformers backend passes to ``generate`` besides the lengths."""
    return {
        "do_sample": False,
        "pad_token_id": generator.tokenizer.pad_token_id,
        "eos_token_id": generator.stop_token_ids,
        "temperature": None,
        "top_p": None,
        "top_k": None,
    }


def _raw_generate(model, inputs, lengths: list[int], kwargs: dict) -> float:
    """Seconds for back-to-back ``generate`` calls on ready tensors, one per length."""
    import torch

    prompt_len = inputs["input_ids"].shape[1]
    _sync()
    start = time.perf_counter()
    with torch.inference_mode():
        for tokens in lengths:
            out = model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, **kwargs)
            if out.shape[1] - prompt_len != tokens:
                raise RuntimeError(f"raw generate made {out.shape[1] - prompt_len} != {tokens}")
    _sync()
    return time.perf_counter() - start


def _ratio(vecap: float, raw: float) -> float:
    return round(vecap / raw, 3) if raw > 0 else 0.0


def _timed(fn, lengths: list[int]) -> float:
    """Seconds for ``fn(tokens)`` once per length, back to back."""
    _sync()
    start = time.perf_counter()
    for tokens in lengths:
        fn(tokens)
    _sync()
    return time.perf_counter() - start


def planned_mb(arch: dict, batch: int, dtype: str, multimodal: bool) -> float:
    """What vecap's memory plan predicts ``torch.cuda.max_memory_allocated`` to be for one
    batch (weights + the batch's KV cache and activations; pipeline.generation.memory_plan),
    printed beside the measured peak."""
    from pipeline.generation.config import GenerationConfig
    from pipeline.generation.memory_plan import transformers_batch_bytes
    from pipeline.generation.model_footprint import footprint

    fp = footprint("bench", arch)
    gen = GenerationConfig(model="bench", batch_size=batch, max_new_tokens=max(LENGTHS))
    total = fp.weight_bytes(dtype) + transformers_batch_bytes(fp, gen, dtype, multimodal)
    return round(total / 2**20, 1)


def _sweep(what: str, run_batch, batches, clock: Clock, share: float) -> list[dict]:
    """``run_batch(batch)`` per batch size while the next (about twice the last) should fit."""
    rows: list[dict] = []
    last_s = 0.0
    for batch in batches:
        if rows and not clock.fits(2.2 * last_s, share=share):
            print(f"{what} batch {batch}: skipped (time budget)", flush=True)
            continue
        began = time.perf_counter()
        rows.append(run_batch(batch))
        _reset_peak()
        last_s = time.perf_counter() - began
        print(f"{what} batch {batch} ({last_s:.1f}s): {rows[-1]}", flush=True)
    return rows


def caption_sweep(generator, batches, rounds: int, image_size: int, clock: Clock) -> list[dict]:
    """images/s through ``caption_records`` and through raw ``generate`` per batch size."""
    jpegs = _jpegs(max(batches), image_size)
    lengths = _lengths(rounds)
    return _sweep(
        "caption",
        lambda batch: _caption_batch(generator, _caption_records(jpegs[:batch]), lengths),
        batches,
        clock,
        share=0.6,
    )


def _caption_batch(generator, records: list, lengths: list[int]) -> dict:
    from llava_recap.caption_rows import Captioner, caption_records, decode_all
    from llava_recap.config import CaptionConfig

    batch = len(records)
    # vecap: one Captioner per forced length, each on a view of the one loaded model
    configs = {
        t: CaptionConfig(generation=_decoding(generator.config, batch, t)) for t in {*lengths, 1}
    }
    captioners = {t: Captioner(generator.with_config(c.generation), c) for t, c in configs.items()}
    outcomes: dict[str, int] = {}

    def count(outcome: str) -> None:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    def vecap(tokens: int) -> None:
        caption_records(records, captioners[tokens], configs[tokens], count=count)

    # raw: the same prepared images and prompt, processed once, on the device
    first = captioners[lengths[0]]
    images = first.prep(decode_all([r.jpg for _, r in records], 4))
    inputs = generator.processor(
        text=[first.prompt] * batch, images=images, return_tensors="pt", padding=True
    ).to(generator.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(generator.dtype)
    raw_kwargs = _raw_kwargs(generator)

    vecap(lengths[0])  # warm-up (kernels, allocator)
    _raw_generate(generator.model, inputs, lengths[:1], raw_kwargs)
    _reset_peak()
    outcomes.clear()
    vecap_s = _timed(vecap, lengths)
    peak = _peak_mb()
    raw_s = _raw_generate(generator.model, inputs, lengths, raw_kwargs)
    if outcomes.get("failed_generation") or outcomes.get("failed_decode"):
        raise RuntimeError(f"caption batch {batch}: rows failed: {outcomes}")
    prefill = min(1.0, _timed(vecap, [1]) / (vecap_s / len(lengths)))
    vecap_ips, raw_ips = batch * len(lengths) / vecap_s, batch * len(lengths) / raw_s
    return {
        "batch": batch,
        "images_per_s": round(vecap_ips, 2),
        "raw_images_per_s": round(raw_ips, 2),
        "vecap_vs_raw": _ratio(vecap_ips, raw_ips),
        "prefill_share": round(prefill, 3),
        "decode_share": round(1 - prefill, 3),
        "empty_captions": outcomes.get("failed_empty", 0),
        "peak_gpu_mb": peak,
    }


def fusion_sweep(generator, batches, rounds: int, clock: Clock) -> list[dict]:
    """pairs/s through ``generate_texts`` (+ output cleaning) and through raw ``generate``."""
    lengths = _lengths(rounds)
    return _sweep(
        "fusion",
        lambda batch: _fusion_batch(generator, _fusion_records(batch), lengths),
        batches,
        clock,
        share=0.9,
    )


def _fusion_batch(generator, records: list, lengths: list[int]) -> dict:
    from llm_fusion.config import FusionConfig
    from llm_fusion.fusion_rules import FusionRules
    from llm_fusion.text_rows import generate_texts
    from pipeline.generation.templates import chat_template_choice

    batch = len(records)
    fusion_config = FusionConfig(generation=generator.config)
    rules = FusionRules.from_config(fusion_config)
    template = chat_template_choice(fusion_config.chat_template)  # as the fusion stage does
    views = {t: generator.with_config(_decoding(generator.config, batch, t)) for t in lengths}

    def vecap(tokens: int) -> None:
        outputs = generate_texts(
            views[tokens], records, rules.user_text, chat_template=template, what="fusion batch"
        )
        for record, output in zip(records, outputs, strict=True):
            if isinstance(output, BaseException):
                raise RuntimeError(f"fusion batch {batch}: a row failed: {output}")
            rules.apply_output(record, output, generator.config.model)

    # raw: the same rendered prompts, tokenised once, on the device
    prompts = generator.render_prompts(
        [rules.user_text(r) for r in records], chat_template=template
    )
    inputs = generator.tokenizer(prompts, return_tensors="pt", padding=True).to(generator.device)
    raw_kwargs = _raw_kwargs(generator)

    vecap(lengths[0])  # warm-up
    _raw_generate(generator.model, inputs, lengths[:1], raw_kwargs)
    _reset_peak()
    vecap_s = _timed(vecap, lengths)
    peak = _peak_mb()
    raw_s = _raw_generate(generator.model, inputs, lengths, raw_kwargs)
    vecap_pps, raw_pps = batch * len(lengths) / vecap_s, batch * len(lengths) / raw_s
    return {
        "batch": batch,
        "pairs_per_s": round(vecap_pps, 2),
        "raw_pairs_per_s": round(raw_pps, 2),
        "vecap_vs_raw": _ratio(vecap_pps, raw_pps),
        "peak_gpu_mb": peak,
    }


def transformers_half(args, text_tok, processor, clock: Clock) -> tuple[list[dict], list[dict]]:
    import torch

    from pipeline.generation.transformers_backend import TransformersGenerator

    torch_dtype = getattr(torch, args.dtype)
    top = max(args.batches)
    start = time.perf_counter()
    llava = _llava(args.caption_arch, processor, args.device, torch_dtype)
    print(f"built the caption model in {time.perf_counter() - start:.1f}s", flush=True)
    cfg = _gen_config("llava-1.5-7b-random", args.device, args.dtype, top)
    generator = TransformersGenerator.from_model(llava, processor, cfg, multimodal=True)
    caption = caption_sweep(generator, args.batches, args.rounds, args.image_size, clock)
    for row in caption:
        row["planned_mb"] = planned_mb(args.caption_arch, row["batch"], args.dtype, True)
    del generator, llava
    _reset_peak()
    fusion: list[dict] = []
    if args.fusion:
        start = time.perf_counter()
        llama = _llama(args.text_arch, text_tok, args.device, torch_dtype)
        print(f"built the fusion model in {time.perf_counter() - start:.1f}s", flush=True)
        cfg = _gen_config("vicuna-7b-random", args.device, args.dtype, top)
        generator = TransformersGenerator.from_model(llama, text_tok, cfg, multimodal=False)
        fusion = fusion_sweep(generator, args.batches, args.rounds, clock)
        for row in fusion:
            row["planned_mb"] = planned_mb(args.text_arch, row["batch"], args.dtype, False)
        del generator, llama
        _reset_peak()
    return caption, fusion


def vllm_caption(work: Path, processor, args) -> dict | None:
    """vecap's vLLM path beside ``vllm.LLM`` on the same requests; None without vLLM."""
    import importlib.util
    from concurrent.futures import ThreadPoolExecutor

    if importlib.util.find_spec("vllm") is None:
        print("vllm: not installed here; skipped", flush=True)
        return None
    from llava_recap.caption_rows import Captioner, caption_records, decode_all
    from llava_recap.config import CaptionConfig
    from pipeline.generation import load_generator

    model_dir = work / "vllm-llava"
    model_dir.mkdir(parents=True, exist_ok=True)
    arch = dict(
        args.caption_arch, image_token_index=processor.tokenizer.convert_tokens_to_ids("<image>")
    )
    arch["architectures"] = ["LlavaForConditionalGeneration"]
    (model_dir / "config.json").write_text(json.dumps(arch))
    processor.save_pretrained(model_dir)
    rows_per_length = max(args.batches) * 4
    lengths = list(LENGTHS)
    # the load settings, shared by every sweep config; 0.4 of the GPU each for vecap's engine
    # and the raw one, so both fit even if vecap's server outlives its stop
    base = _gen_config(
        str(model_dir),
        "cuda",
        "bfloat16",
        rows_per_length,
        backend="vllm",
        load_format="dummy",
        max_model_len=2048,
        gpu_memory_utilization=0.4,
    )
    records = _caption_records(_jpegs(rows_per_length, args.image_size))
    configs = {t: CaptionConfig(generation=_decoding(base, rows_per_length, t)) for t in lengths}
    start = time.perf_counter()
    captioners = {
        t: Captioner(load_generator(c.generation, multimodal=True), c) for t, c in configs.items()
    }
    print(f"vllm: vecap's engine up in {time.perf_counter() - start:.1f}s", flush=True)

    def vecap(tokens: int) -> list:
        return caption_records(records, captioners[tokens], configs[tokens])

    vecap(lengths[0])  # warm-up
    start = time.perf_counter()
    with ThreadPoolExecutor(len(lengths)) as pool:  # every length's rows in flight at once
        outs = list(pool.map(vecap, lengths))
    vecap_s = time.perf_counter() - start
    failed = [r.error for out in outs for r in out if r.status != "ok"]
    failed = [e for e in failed if "empty caption" not in (e or "")]
    if failed:
        raise RuntimeError(f"vllm caption: {len(failed)} rows failed: {failed[0]}")
    prompt = captioners[lengths[0]].prompt
    images = captioners[lengths[0]].prep(decode_all([r.jpg for _, r in records], 4))
    stop_ids = captioners[lengths[0]].generator.stop_token_ids
    captioners.clear()  # vecap's generators go: release_engines can free them
    del outs
    _stop_vecap_engines(base)

    import vllm

    llm = vllm.LLM(
        model=str(model_dir),
        dtype="bfloat16",
        seed=0,
        load_format="dummy",
        max_model_len=2048,
        gpu_memory_utilization=0.4,
        limit_mm_per_prompt={"image": 1},
    )
    requests, params = [], []
    for tokens in lengths:
        sampling = vllm.SamplingParams(
            max_tokens=tokens,
            min_tokens=tokens,
            temperature=0.0,
            stop_token_ids=stop_ids,
            skip_special_tokens=True,
        )
        for image in images:
            requests.append({"prompt": prompt, "multi_modal_data": {"image": image}})
            params.append(sampling)
    llm.generate(requests[: len(images)], params[: len(images)], use_tqdm=False)  # warm-up
    start = time.perf_counter()
    llm.generate(requests, params, use_tqdm=False)  # the best practice: one call, every request
    raw_s = time.perf_counter() - start
    n = len(requests)
    result = {
        "rows": n,
        "images_per_s": round(n / vecap_s, 2),
        "raw_images_per_s": round(n / raw_s, 2),
        "vecap_vs_raw": _ratio(n / vecap_s, n / raw_s),
    }
    print(f"vllm caption: {result}", flush=True)
    return {"caption": result}


def _stop_vecap_engines(config) -> None:
    """Best effort: stop vecap's vLLM servers before the raw engine loads."""
    from pipeline.generation.factory import release_engines

    if getattr(config, "streams", False):  # vecap's engines are servers (one per GPU)
        try:
            from pipeline.generation.server_backend import fleet_for

            fleet_for(config, True).stop()
        except Exception as exc:  # a server API that moved: the 0.4 shares still fit
            print(f"vllm: could not stop vecap's servers ({type(exc).__name__}: {exc})", flush=True)
    release_engines()  # an in-process engine goes with its last reference


def _best(rows: list[dict], key: str) -> dict | None:
    return max(rows, key=lambda r: r[key]) if rows else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy configs on the CPU (CI)")
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument(
        "--rounds", type=int, default=len(LENGTHS), help="timed calls per batch size"
    )
    parser.add_argument("--vllm", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--fusion", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--budget-s", type=float, default=None, help="skip larger batches past it (GPU: 420)"
    )
    args = parser.parse_args()

    import torch

    tiny = args.tiny or not torch.cuda.is_available()
    if tiny:
        torch.set_num_threads(1)
    args.device, args.dtype = ("cpu", "float32") if tiny else ("cuda", "bfloat16")
    args.batches = sorted(args.batches or ([2, 4] if tiny else [8, 16, 32, 64]))
    args.image_size = 56 if tiny else 336
    args.caption_arch = _config("tiny-llava" if tiny else "llava-1.5-7b")
    args.text_arch = _config("tiny-llama" if tiny else "vicuna-7b-v1.5")
    clock = Clock(args.budget_s or (120.0 if tiny else 420.0))

    lengths = _lengths(args.rounds)
    result: dict = {
        "mode": "tiny-cpu" if tiny else "gpu",
        "new_tokens": lengths,
        "mean_new_tokens": round(sum(lengths) / len(lengths), 2),
    }
    if not tiny:
        result["gpu"] = torch.cuda.get_device_name()
    with tempfile.TemporaryDirectory(prefix="vecap-bench-gpu-") as tmp:
        work = Path(tmp)
        text_tok, processor = _tokenizers(work, args.image_size)
        caption, fusion = transformers_half(args, text_tok, processor, clock)
        # vecap's transformers path runs where Beam is not installed
        assert "apache_beam" not in sys.modules, "vecap's caption/fusion cores imported Beam"
        vllm = None
        if args.vllm and not tiny:
            vllm = vllm_caption(work, processor, args)
    best = _best(caption, "images_per_s")
    assert best is not None
    fused = {r["batch"]: r for r in fusion}
    best_fusion = fused.get(best["batch"]) or _best(fusion, "pairs_per_s")
    result.update(
        batch=best["batch"],
        images_per_s=best["images_per_s"],
        pairs_per_s=best_fusion["pairs_per_s"] if best_fusion else None,
        vecap_vs_raw={
            "transformers": {
                "caption": best["vecap_vs_raw"],
                "fusion": best_fusion["vecap_vs_raw"] if best_fusion else None,
            },
            "vllm": {"caption": vllm["caption"]["vecap_vs_raw"]} if vllm else None,
        },
        peak_gpu_mb=max((r["peak_gpu_mb"] or 0 for r in caption + fusion), default=0) or None,
        prefill_share=best["prefill_share"],
        caption=caption,
        fusion=fusion,
        vllm=vllm,
        elapsed_s=round(clock.elapsed(), 1),
    )
    if not tiny:
        result["h200_prefill_bound_images_per_s"] = H200_PREFILL_BOUND_IMAGES_PER_S
        result["fraction_of_h200_prefill_bound"] = round(
            best["images_per_s"] / H200_PREFILL_BOUND_IMAGES_PER_S, 3
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
