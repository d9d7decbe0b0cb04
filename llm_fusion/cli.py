"""``vecap fuse-preview``: see what the fusion stage does with one AltText + visual caption.

Before a paid run, check a prompt on the model that will run it: the skip decision, the exact
prompt string after the model's chat template (only the tokenizer is loaded), and with
``--generate`` the raw output, the cleaned caption and where the final caption came from.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    cmd = subparsers.add_parser(
        "fuse-preview",
        help="show the fusion prompt, and optionally the fused caption, for one AltText + VC",
        description="Render the fusion prompt for one AltText + visual caption with the model's "
        "chat template; with --generate, run the model and show the cleaned caption, its "
        "source and the reason.",
    )
    cmd.add_argument("--model", required=True, help="fusion LLM: hub id or local directory")
    cmd.add_argument("--alt", required=True, help="the AltText")
    cmd.add_argument("--visual", required=True, help="the visual caption")
    cmd.add_argument("--prompt", default=None, help="built-in prompt id (default veclip-fuse-v1)")
    cmd.add_argument("--prompt-file", default=None, help="user prompt file")
    cmd.add_argument("--fallback", default="visual", choices=("visual", "alt", "none"))
    cmd.add_argument(
        "--chat-template",
        default="auto",
        help="auto (the model's own, else its family's), a family (vicuna_v1.1, llama-2, "
        "mistral, llama-3, chatml, qwen2.5), raw, or a jinja file",
    )
    cmd.add_argument(
        "--generate",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="load the model and generate (default: render the prompt only)",
    )
    cmd.add_argument("--backend", default="transformers", choices=("transformers", "vllm"))
    cmd.add_argument("--device", default="auto")
    cmd.add_argument("--max-new-tokens", type=int, default=77)
    cmd.set_defaults(func=_fuse_preview)


def _fuse_preview(args: argparse.Namespace) -> int:
    from llm_fusion.config import FusionConfig
    from llm_fusion.fusion_rules import FusionRules
    from pipeline.generation import ChatTemplateError, GenerationConfig, load_generator
    from pipeline.generation.chat import render_chat, tokenizer_adds_bos
    from pipeline.generation.templates import chat_template_choice, resolve_template
    from schemas import Record

    try:
        generation = GenerationConfig(
            model=args.model,
            backend=args.backend,
            device=args.device,
            max_new_tokens=args.max_new_tokens,
        )
        config = FusionConfig(
            generation=generation,
            prompt_id=args.prompt or FusionConfig.prompt_id,
            prompt_file=args.prompt_file,
            fallback=args.fallback,
            chat_template=args.chat_template,
        )
        rules = FusionRules.from_config(config)
        choice = chat_template_choice(config.chat_template)
    except (ValueError, TypeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record = Record(uid="preview", shard_id=0, row_index=0, alt_text=args.alt)
    record = record.replace(visual_caption=args.visual)

    print(f"prompt id: {rules.prompt.prompt_id}")
    planned = rules.plan(record)
    if planned is not None:
        print(f"no LLM call: fusion_source={planned.fusion_source} reason={planned.fusion_reason}")
        print(f"caption: {planned.fused_caption}")
        return 0

    user = rules.user_text(record)
    try:
        if args.generate:
            generator = load_generator(generation, multimodal=False)
            resolved = generator.resolve_chat_template(choice)
            prompt = generator.render_prompts([user], chat_template=choice)[0]
        else:
            from transformers import AutoTokenizer

            generator, tokenizer = None, AutoTokenizer.from_pretrained(args.model)
            resolved = resolve_template(choice, tokenizer, args.model)
            prompt = (
                user
                if resolved.template is None
                else render_chat(
                    tokenizer,
                    user,
                    image=False,
                    template=resolved.template,
                    tokenizer_adds_bos=tokenizer_adds_bos(tokenizer),
                )
            )
    except ChatTemplateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"chat template: {resolved.source}")
    print("---- prompt (after the chat template) ----")
    print(prompt)
    print("---- end of prompt ----")
    if generator is None:
        return 0
    raw = generator.generate([prompt])[0]
    out = rules.apply_output(record, raw, args.model)
    print(f"raw output: {raw!r}")
    print(f"fusion_source={out.fusion_source} reason={out.fusion_reason} status={out.status}")
    print(f"caption: {out.fused_caption}")
    return 0


__all__ = ["register"]
