#!/usr/bin/env bash
# Score a model on the real ARC sets no bundled model trained on, with and without its
# TTT, through `arc-ttft run`, and write per-task comparisons (what TTT changed).
#   bash scripts/eval_real_arc.sh MODEL OUT [SETS]    (SETS default: arc1-simple,arc1-eval-small)
# MODEL: a registry name (arc-nano, arc-nano2) or a model folder; a folder gets arc-nano's
# TTT settings (colour/order views, loss on every output, 64 steps at 1e-3) spelled out,
# and the grid format FORMAT (default digits; FORMAT=shaped for a model trained on it).
# STEPS (default 64) is the TTT arm's --ttt-steps; TTT_FLAGS adds flags to that arm, e.g.
#   STEPS=128 TTT_FLAGS="--ttt-colours fit" bash scripts/eval_real_arc.sh arc-nano3 OUT
# Run it alone on the machine: the figures are wall-clock bound.
set -euo pipefail
MODEL="$1"; OUT="$2"; SETS="${3:-arc1-simple,arc1-eval-small}"
TTT=()
if [ -d "$MODEL" ]; then
  TTT=(--ttt-transforms none --label-mode outputs --learning-rate 1e-3 --format "${FORMAT:-digits}")
fi
mkdir -p "$OUT"
for SET in ${SETS//,/ }; do
  arc-ttft run --challenges "$SET" --model "$MODEL" "${TTT[@]}" --ttt-steps 0 \
    --output "$OUT/$SET-ttt0" | tee "$OUT/$SET-ttt0.log" | tail -1
  # shellcheck disable=SC2086  # TTT_FLAGS is a list of words
  arc-ttft run --challenges "$SET" --model "$MODEL" "${TTT[@]}" ${TTT_FLAGS:-} \
    --ttt-steps "${STEPS:-64}" --output "$OUT/$SET-ttt${STEPS:-64}" \
    | tee "$OUT/$SET-ttt${STEPS:-64}.log" | tail -1
  python scripts/compare_runs.py "$OUT/$SET-ttt0" "$OUT/$SET-ttt${STEPS:-64}" --challenges "$SET" \
    > "$OUT/$SET-compare.md"
  grep "gained by TTT" "$OUT/$SET-compare.md"
done
