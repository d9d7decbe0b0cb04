"""Set vLLM's CPU environment for a test module, before vLLM is imported (vLLM reads it then)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from pipeline.generation.vllm_backend import cpu_offline_env


def configure_vllm_for_tests(prefix: str) -> None:
    """Caches in a temp dir removed at exit; values already set by the caller win."""
    cache = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    for key, value in cpu_offline_env(cache).items():
        os.environ.setdefault(key, value)
