"""Guard torchvision's fake-op registrations for ``nms``/``qnms`` when the native ops are absent.

The only torchvision for torch 2.13 is the CUDA build 0.28.0. Its native library cannot load
beside the CPU torch, so ``torch.ops.torchvision.nms`` never gets defined, yet
``torchvision/_meta_registrations.py`` registers fake kernels for ``nms`` and ``qnms``
unconditionally and the import of torchvision fails. vLLM's LLaVA path imports torchvision
(llava -> pixtral -> transformers' pixtral image processor) only for pure-python image helpers,
so guarding those two registrations is enough. Idempotent: a patched file is left alone.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

MARKER = "# vecap: guarded when the native op is absent"


def _meta_registrations_path() -> Path:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        raise SystemExit("torchvision is not installed in this environment")
    return Path(spec.origin).parent / "_meta_registrations.py"


def patch_source(src: str) -> tuple[str, int]:
    """Wrap each ``@torch.library.register_fake("torchvision::nms"/"qnms")`` function in a guard."""
    if MARKER in src:
        return src, 0
    pattern = re.compile(
        r'^@torch\.library\.register_fake\("torchvision::(?P<op>q?nms)"\)\n'
        r"(?P<body>def .*?)(?=^\S)",
        re.MULTILINE | re.DOTALL,
    )
    count = 0

    def guard(match: re.Match[str]) -> str:
        nonlocal count
        count += 1
        op = match.group("op")
        decorated = match.group(0)
        indented = "".join(
            ("    " + line) if line.strip() else line for line in decorated.splitlines(True)
        )
        return f'if hasattr(torch.ops.torchvision, "{op}"):  {MARKER}\n{indented}'

    return pattern.sub(guard, src), count


def main() -> int:
    path = _meta_registrations_path()
    src = path.read_text()
    new, count = patch_source(src)
    if MARKER in src:
        print(f"{path}: already patched")
        return 0
    if count != 2:
        print(
            f"{path}: expected 2 nms/qnms registrations, found {count}; not patched",
            file=sys.stderr,
        )
        return 1
    path.write_text(new)
    print(f"{path}: guarded {count} registrations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
