#!/usr/bin/env bash
# The GPU half of benchmarks/ttt_speed.md: `arc-ttft bench ttt` at 4096 tokens in bf16 with
# MFU, on a machine with no network. Wheels for what its image lacks travel in .whl/, the
# Qwen2 tokenizer (built offline here by scripts/qwen_tokenizer.py) in .carry/cache/.
# Usage: bash benchmarks/ttt_speed_gpu.sh OUT_DIR
set -uo pipefail
out=${1:-${OUT:-/tmp/ttt-gpu}}
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export ARC_TTFT_CACHE=${ARC_TTFT_CACHE:-$PWD/.carry/cache} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'
  # The bf16 matmul rate this card reaches, next to the sheet's peak.
  python3 - <<'PY'
import time, torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
for _ in range(3): a @ b
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(10): a @ b
torch.cuda.synchronize(); dt = (time.perf_counter() - t) / 10
print(f"bf16 matmul 8192^3: {2 * 8192**3 / dt / 1e12:.0f} TFLOP/s")
PY
  python3 -m arc_ttft.cli bench ttt --seq-len "${SEQ_LEN:-4096}" --steps "${STEPS:-20}" \
    --warmup "${WARMUP:-3}" --bench-batch-size "${BATCH:-1,4,8}" --timeout-minutes 4 \
    --output "$out/ttt_speed_gpu.json"
} 2>&1 | tee "$out/ttt_speed_gpu.log"
