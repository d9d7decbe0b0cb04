"""The CLI module stays light: registering `vecap train` / `vecap eval` imports no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_registering_commands_imports_no_torch() -> None:
    code = (
        "import sys; from pipeline.cli import build_parser; "
        "p = build_parser(('clip_trainer.cli',)); "
        "a = p.parse_args(['train', 'OUT', '--output', 'run', '--steps', '5', '--no-status-filter']); "
        "assert a.status_filter is False and a.cpu is False; "
        "import clip_trainer; "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["False", "False"]
