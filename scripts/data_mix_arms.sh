#!/usr/bin/env bash
# The data-mix experiment on real ARC at CPU scale (benchmarks/learning.md): four arms,
# each arc-nano2 fine-tuned further by `arc-ttft finetune` on one mix, then scored on the
# held-out halves of the 77 small ARC-AGI-1 evaluation tasks through `arc-ttft run`,
# with and without TTT (scripts/eval_real_arc.sh).
#   bash scripts/data_mix_arms.sh train ARM [OUT]   # ARM: gen, gen+train, gen+train+a, gen+train+b
#   bash scripts/data_mix_arms.sh eval ARM [OUT]
#   bash scripts/data_mix_arms.sh table - [OUT]      # the markdown table (benchmarks/learning.md)
# gen, gen+train: scored on both halves (they train on neither); gen+train+a trains on
# half a and is scored on half b, gen+train+b the reverse. arc1-simple is held out of
# every arm. Training is step-bound (same steps, seed and learning rate in every arm);
# run it alone on the machine (one thread) when timing matters.
set -euo pipefail
WHAT="$1"; ARM="$2"; OUT="${3:-runs/data-mix}"
if [ "$WHAT" = table ]; then
  # the starting model's own runs over all 77 tasks: scripts/eval_real_arc.sh arc-nano2 runs/eval-nano2
  exec python -c "from arc_ttft.research import data_mix; print(data_mix.arms_table('$OUT', 'runs/eval-nano2'))"
fi
STEPS="${STEPS:-500}"
HELD="-holdout:arc1-simple"
case "$ARM" in
  gen)          DATA="generated:1000,$HELD,-holdout:arc1-eval-small"; SCORE="a b" ;;
  gen+train)    DATA="generated:1000,arc1-train,$HELD,-holdout:arc1-eval-small"; SCORE="a b" ;;
  gen+train+a)  DATA="generated:1000,arc1-train,arc1-eval-small-a,$HELD,-holdout:arc1-eval-small-b"; SCORE="b" ;;
  gen+train+b)  DATA="generated:1000,arc1-train,arc1-eval-small-b,$HELD,-holdout:arc1-eval-small-a"; SCORE="a" ;;
  *) echo "unknown arm: $ARM (gen, gen+train, gen+train+a, gen+train+b)" >&2; exit 2 ;;
esac
DIR="$OUT/$ARM"; mkdir -p "$OUT"
if [ "$WHAT" = train ]; then
  arc-ttft finetune --model arc-nano2 --data "$DATA" --output "$DIR" \
    --learning-rate 0.0005 --warmup-steps 20 --label-mode outputs --max-seq-len 1536 \
    --generated-min-size 2 --generated-max-size 10 --generated-families all \
    --real-samples-per-task 24 --samples-per-task 4 --full --batch-size 1 --grad-accum 8 \
    --max-steps "$STEPS" --checkpoint-minutes 15 --format digits --seed 1 \
    2>&1 | tee "$DIR.train.log" | tail -4
elif [ "$WHAT" = eval ]; then
  for H in $SCORE; do
    bash scripts/eval_real_arc.sh "$DIR/model" "$DIR/eval" "arc1-eval-small-$H"
  done
else
  echo "usage: data_mix_arms.sh train|eval ARM [OUT]" >&2; exit 2
fi
