#!/usr/bin/env bash
# The level-0 recurrence beside the memory hierarchy (the GPU default,
# Model::setOverlapLevel0) against the serial schedule (--serial-level0),
# in one device call with .carry/ (bench/make-carry.sh); logs under
# $OUT/logs/overlap, the last step line of each run printed:
#   bench/overlap.sh
#     mmrec-small, clustered level 0, bf16 products, T 1024, 8 steps at each
#       batch in SMALL_BATCHES (default 8 32)
#     mmrec-7b, bf16 products, --recompute, bf16 AdamW states, T 2048,
#       B7 (default 2) x STEPS_7B (default 4) steps
set -uo pipefail
OUT=${OUT:-/tmp/mmrec-out}
L=$OUT/logs/overlap
mkdir -p "$L"
. bench/carry-env.sh
C=$PWD/.carry
for mode in beside serial; do
  flag=""
  [ $mode = serial ] && flag=--serial-level0
  for b in ${SMALL_BATCHES:-8 32}; do
    timeout 150 $C/bin/mmrec-train --kernels $C/models-gcl/mmrec-small.train.json --device gpu \
      --matmul bf16 --data $C/data/kjv-spm --out /tmp/run-small-$mode-$b --steps 8 --batch $b \
      --seq-len 1024 --lr 1e-3 --min-lr 1e-4 --warmup 4 --eval-interval 1000 --eval-tokens 8192 \
      --ckpt-interval 1000 --keep 1 --log-interval 1 $flag > "$L/small-b$b-$mode.log" 2>&1
    echo "small B$b $mode: $(grep -E '^step' "$L/small-b$b-$mode.log" | tail -1)"
  done
  OUT=$L/7b-$mode KERNELS=$C/models-bf16/mmrec-7b.train.json B=${B7:-2} STEPS=${STEPS_7B:-4} \
    TRAIN_TIMEOUT=150 LR=1e-4 MIN_LR=1e-5 \
    FLAGS="--matmul bf16 --recompute --clip 0 --optimizer-states bf16 $flag" \
    bash bench/train-7b.sh train > /dev/null 2>&1
  echo "7b B${B7:-2} $mode: $(grep -E '^step' "$L/7b-$mode/7b-train.log" | tail -1)"
done
