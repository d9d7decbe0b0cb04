"""GPU throughput of the two model stages on the real 7B architectures, with random weights.

- caption: LLaVA-1.5-7B (``bench/configs/llava-1.5-7b.json``: CLIP ViT-L/14-336 + Vicuna-7B,
  576 image tokens per image) built in bf16 on the GPU with random weights — no hub download —
  driven through the caption stage's model handler (``CaptionModelHandler.run_inference``: JPEG
  decode, prompt, ``generate``, cleaning) at batch 8/16/32/64, images/s;
- fusion: Vicuna-7B (``bench/configs/vicuna-7b-v1.5.json``, the Llama-2-7B architecture)
  through the fusion stage's handler (``TextLLMHandler``: user text, chat template, generate),
  pairs/s;
- every completion is forced to 77 new tokens (``min_new_tokens`` = ``max_new_tokens``): random
  weights would otherwise stop at a random point. Prefill share: the time of the same batch
  with 1 new token over the time with 77. Peak GPU memory per batch size;
- vLLM too where it is importable: the same configs in a directory, ``load_format="dummy"``.

The tokenizer and image processor are the offline tiny ones (``llava_recap.tiny_models``) with a
336-px CLIP processor: their ids fit the 7B vocabulary, and only lengths matter for speed.

On a machine without CUDA (or with ``--tiny``) it runs the tiny configs on the CPU, so CI covers
the code path; its figures mean nothing. Compute limit to compare with on a GPU: LLaVA-1.5-7B
prefill is about 8.7 TFLOP per image (576 image tokens + prompt), about 90 images/s at an H200's
bf16 peak; the target is at least half of that. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIGS = ROOT / "bench" / "configs"
NEW_TOKENS = 77
H200_PREFILL_BOUND_IMAGES_PER_S = 90.0  # 8.7 TFLOP/image at ~989 TFLOP/s bf16 dense


def _config(name: str) -> dict:
    data = json.loads((CONFIGS / f"{name}.json").read_text())
    data.pop("_comment", None)
    return data


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

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _gen_config(model: str, device: str, dtype: str, batch: int, new_tokens: int, **kw):
    from pipeline.generation import GenerationConfig

    return GenerationConfig(
        model=model,
        device=device,
        dtype=dtype,
        batch_size=batch,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        **kw,
    )


def caption_sweep(generator, batches, rounds: int, image_size: int, device: str) -> list[dict]:
    """images/s through CaptionModelHandler.run_inference per batch size, prefill share."""
    from llava_recap.config import CaptionConfig
    from llava_recap.handler import CaptionModelHandler
    from schemas import Record, make_uid

    rows = []
    jpegs = _jpegs(max(batches), image_size)
    for batch in batches:
        records = [
            (r.uid, r)
            for r in (
                Record(uid=make_uid(0, i), shard_id=0, row_index=i, jpg=jpegs[i])
                for i in range(batch)
            )
        ]
        figures = {}
        for tokens in (NEW_TOKENS, 1):
            cfg = _gen_config(generator.config.model, device, generator.config.dtype, batch, tokens)
            view = generator.with_config(cfg) if cfg != generator.config else generator
            config = CaptionConfig(generation=cfg, decode_threads=4)
            handler = CaptionModelHandler(config, lambda c, m, view=view: view)
            model = handler.load_model()
            handler.run_inference(records, model)  # warm-up (kernels, allocator)
            _sync()
            _reset_peak()
            start = time.perf_counter()
            for _ in range(rounds):
                out = list(handler.run_inference(records, model))
            _sync()
            seconds = (time.perf_counter() - start) / rounds
            failed = [r.error for r in out if r.status != "ok"]
            if failed and tokens == NEW_TOKENS:
                raise RuntimeError(f"caption batch {batch}: {len(failed)} rows failed: {failed[0]}")
            figures[tokens] = (seconds, _peak_mb())
        seconds, peak = figures[NEW_TOKENS]
        prefill = min(1.0, figures[1][0] / seconds)
        rows.append(
            {
                "batch": batch,
                "images_per_s": round(batch / seconds, 2),
                "prefill_share": round(prefill, 3),
                "decode_share": round(1 - prefill, 3),
                "peak_gpu_mb": peak,
            }
        )
        print(f"caption batch {batch}: {rows[-1]}", flush=True)
    return rows


def fusion_sweep(generator, batches, rounds: int, device: str) -> list[dict]:
    """pairs/s through the fusion stage's TextLLMHandler per batch size."""
    from llm_fusion.config import FusionConfig
    from llm_fusion.fusion_rules import FusionRules
    from llm_fusion.handler import TextLLMHandler
    from schemas import Record, make_uid

    rules = FusionRules.from_config(FusionConfig(generation=generator.config))
    rows = []
    for batch in batches:
        records = [
            Record(
                uid=make_uid(0, i),
                shard_id=0,
                row_index=i,
                alt_text=f"Vintage red bicycle leaning on a wall, item {i}",
                visual_caption="A red bicycle parked beside a brick wall on a sunny street.",
            )
            for i in range(batch)
        ]
        cfg = _gen_config(generator.config.model, device, generator.config.dtype, batch, NEW_TOKENS)
        view = generator.with_config(cfg) if cfg != generator.config else generator
        handler = TextLLMHandler(cfg, rules.user_text, generator_loader=lambda c, view=view: view)
        model = handler.load_model()
        handler.run_inference(records, model)  # warm-up
        _sync()
        _reset_peak()
        start = time.perf_counter()
        for _ in range(rounds):
            out = handler.run_inference(records, model)
        _sync()
        seconds = (time.perf_counter() - start) / rounds
        bad = [r.inference for r in out if isinstance(r.inference, BaseException)]
        if bad:
            raise RuntimeError(f"fusion batch {batch}: {len(bad)} rows failed: {bad[0]}")
        rows.append(
            {"batch": batch, "pairs_per_s": round(batch / seconds, 2), "peak_gpu_mb": _peak_mb()}
        )
        print(f"fusion batch {batch}: {rows[-1]}", flush=True)
    return rows


def vllm_figures(work: Path, caption_arch: dict, text_tok, processor, args) -> dict | None:
    """The same sweep on vLLM with dummy (random) weights; None where vLLM is not installed."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        print("vllm: not installed here; skipped", flush=True)
        return None
    from pipeline.generation import load_generator

    model_dir = work / "vllm-llava"
    model_dir.mkdir(parents=True, exist_ok=True)
    arch = dict(
        caption_arch, image_token_index=processor.tokenizer.convert_tokens_to_ids("<image>")
    )
    arch["architectures"] = ["LlavaForConditionalGeneration"]
    (model_dir / "config.json").write_text(json.dumps(arch))
    processor.save_pretrained(model_dir)
    cfg = _gen_config(
        str(model_dir),
        "cuda",
        "bfloat16",
        max(args.batches),
        NEW_TOKENS,
        backend="vllm",
        load_format="dummy",
        max_model_len=2048,
        gpu_memory_utilization=0.85,
    )
    generator = load_generator(cfg, multimodal=True)
    rows = caption_sweep(generator, args.batches, args.rounds, args.image_size, "cuda")
    return {"caption": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy configs on the CPU (CI)")
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument("--rounds", type=int, default=None, help="timed batches per size")
    parser.add_argument("--vllm", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--fusion", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()

    import torch

    tiny = args.tiny or not torch.cuda.is_available()
    if tiny:
        torch.set_num_threads(1)
    device, dtype = ("cpu", "float32") if tiny else ("cuda", "bfloat16")
    args.batches = args.batches or ([2, 4] if tiny else [8, 16, 32, 64])
    args.rounds = args.rounds or (1 if tiny else 3)
    args.image_size = 56 if tiny else 336
    caption_arch = _config("tiny-llava" if tiny else "llava-1.5-7b")
    text_arch = _config("tiny-llama" if tiny else "vicuna-7b-v1.5")
    from pipeline.generation.transformers_backend import TransformersGenerator

    result: dict = {"mode": "tiny-cpu" if tiny else "gpu", "new_tokens": NEW_TOKENS}
    if not tiny:
        result["gpu"] = torch.cuda.get_device_name()
    with tempfile.TemporaryDirectory(prefix="vecap-bench-gpu-") as tmp:
        work = Path(tmp)
        text_tok, processor = _tokenizers(work, args.image_size)
        torch_dtype = getattr(torch, dtype)
        start = time.perf_counter()
        llava = _llava(caption_arch, processor, device, torch_dtype)
        print(f"built the caption model in {time.perf_counter() - start:.1f}s", flush=True)
        cfg = _gen_config("llava-1.5-7b-random", device, dtype, max(args.batches), NEW_TOKENS)
        generator = TransformersGenerator.from_model(llava, processor, cfg, multimodal=True)
        caption = caption_sweep(generator, args.batches, args.rounds, args.image_size, device)
        del generator, llava
        _reset_peak()
        fusion: list[dict] = []
        if args.fusion:
            llama = _llama(text_arch, text_tok, device, torch_dtype)
            cfg = _gen_config("vicuna-7b-random", device, dtype, max(args.batches), NEW_TOKENS)
            generator = TransformersGenerator.from_model(llama, text_tok, cfg, multimodal=False)
            fusion = fusion_sweep(generator, args.batches, args.rounds, device)
            del generator, llama
            _reset_peak()
        vllm = None
        if args.vllm and not tiny:
            vllm = vllm_figures(work, caption_arch, text_tok, processor, args)
    best = max(caption, key=lambda r: r["images_per_s"])
    fused = {r["batch"]: r for r in fusion}
    result.update(
        batch=best["batch"],
        images_per_s=best["images_per_s"],
        pairs_per_s=(fused.get(best["batch"]) or max(fusion, key=lambda r: r["pairs_per_s"]))[
            "pairs_per_s"
        ]
        if fusion
        else None,
        peak_gpu_mb=max((r["peak_gpu_mb"] or 0 for r in caption + fusion), default=0) or None,
        prefill_share=best["prefill_share"],
        caption=caption,
        fusion=fusion,
        vllm=vllm,
    )
    if not tiny:
        result["fraction_of_h200_prefill_bound"] = round(
            best["images_per_s"] / H200_PREFILL_BOUND_IMAGES_PER_S, 3
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
