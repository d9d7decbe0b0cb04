"""Fake text generators for accounting tests (real tiny-model tests sit beside them)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from pipeline.generation import GenerationConfig
from schemas import Record

_ALT = re.compile(r"<alt_text>(.*?)</alt_text>")


def data_alt_text(prompt: str) -> str:
    """The row's AltText in a rendered prompt (the last block; the first is the example)."""
    return _ALT.findall(prompt)[-1]


class EchoGenerator:
    """Answers with a caption naming the row's AltText, so a misrouted answer shows.

    AltText markers steer it: ``REFUSE`` -> a refusal, ``EMPTY`` -> nothing, ``BOOM`` -> the
    whole batch raises (a failed batch); to the ethics question (a prompt ending in "Answer:")
    ``YES`` -> yes, ``MAYBE`` -> neither, anything else -> no.
    """

    multimodal = False
    processor = None

    def __init__(self, config: GenerationConfig) -> None:
        self.config = config

    def chat(self, user_texts: list[str], *, system=None, chat_template=None) -> list[str]:
        """No template: the fake answers the bare user texts (real models: ChatMixin)."""
        return self.generate(user_texts)

    def generate(self, prompts: list[str], images=None) -> list[str]:
        alts = [data_alt_text(p) for p in prompts]
        if any("BOOM" in a for a in alts):
            raise RuntimeError("CUDA out of memory (fake)")
        out = []
        for prompt, alt in zip(prompts, alts, strict=True):
            if prompt.rstrip().endswith("Answer:"):  # the ethics question
                if "YES" in alt:
                    out.append("Yes.")
                elif "MAYBE" in alt:
                    out.append("It depends on the context.")
                else:
                    out.append("No")
            elif "REFUSE" in alt:
                out.append("I'm sorry, but I cannot help with that.")
            elif "EMPTY" in alt:
                out.append("   ")
            else:
                out.append(f"Sure, here is the merged caption: A photo of {alt} on a sunny day.")
        return out


def load_echo(config: GenerationConfig) -> EchoGenerator:
    return EchoGenerator(config)


def run_transform(
    transform: beam.PTransform, records: list[Record], tmp_path: Path
) -> list[Record]:
    """Run ``transform`` over ``records`` on the in-process FnApiRunner; return its output."""
    out_file = tmp_path / "out.pkl"

    def dump(elements) -> None:
        out_file.write_bytes(pickle.dumps(list(elements)))

    with TestPipeline(runner=FnApiRunner()) as p:
        out = p | beam.Create(records, reshuffle=False) | transform
        assert_that(out, dump)
    return pickle.loads(out_file.read_bytes())
