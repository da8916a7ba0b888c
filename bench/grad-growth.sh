#!/usr/bin/env bash
# The gradient norm of a fresh mmrec-7b-width model against depth and
# sequence length (issue 7's T = 32768 gradient): one step at B 1 for each
# L in LAYERS and T in SEQS, the 7B library with fewer layers
# (bench/model-layers.py), bf16 products, --recompute, --grad-report.
#   . bench/carry-env.sh; OUT=$OUT bench/grad-growth.sh
set -uo pipefail
OUT=${OUT:-/tmp/mmrec-out}
mkdir -p "$OUT"
C=$PWD/.carry
SRC=${KERNELS:-$C/models-bf16/mmrec-7b.train.json}
for L in ${LAYERS:-1 2 4}; do
  python3 bench/model-layers.py "$SRC" "$L" /tmp/grad-growth-L$L
  for T in ${SEQS:-2048 8192 32768}; do
    echo "=== L $L T $T ${FLAGS:-}" | tee -a "$OUT/grad-growth.log"
    timeout ${RUN_TIMEOUT:-300} $C/bin/mmrec-train --kernels /tmp/grad-growth-L$L/$(basename "$SRC") \
      --device gpu --data $C/data/kjv-spm --batch 1 --seq-len $T --steps 1 --warmup 1 \
      --eval-tokens $T --eval-interval 100000 --ckpt-interval 0 --log-interval 1 --sample-tokens 0 \
      --grad-report 8 --out /tmp/grad-growth-run ${FLAGS:---matmul bf16 --recompute} 2>&1 |
      grep -E "^step|^grads|error|SKIPPED|skipped|overflow" | tee -a "$OUT/grad-growth.log"
  done
done
