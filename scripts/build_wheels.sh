#!/usr/bin/env bash
# Build a folder of wheels for an offline Kaggle run: attach it as a dataset, and
# notebooks/submit.ipynb installs from it (pip --no-index --find-links) when present.
#   bash scripts/build_wheels.sh [OUT_DIR] [REQUIREMENTS]
# Run it on a machine with internet and the same Python as Kaggle's image (3.10/3.11).
# The default requirements are the GPU ones (vLLM); vLLM brings its own torch.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-wheels}"
REQ="${2:-requirements-gpu.txt}"
mkdir -p "$OUT"
pip download -r "$REQ" -d "$OUT"
pip wheel . --no-deps -w "$OUT"
echo "wheels in $OUT: attach the folder as a Kaggle dataset (e.g. arc-ttft-wheels)"
