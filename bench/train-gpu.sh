#!/usr/bin/env bash
# The trainer on the device machine, in one call (binaries, compiled models
# and token shards built here and carried in .carry/, see docs/training.md):
#   bench/train-gpu.sh [tests] [tiny] [small] [torch]
#     tests  the GPU training library vs the CPU one, the model vs the
#            float64 oracle on the GPU (label `gpu`)
#     tiny   mmrec-tiny on the KJV bytes, the README's run on the GPU, and
#            the PyTorch cross-check of its checkpoint (bench/torch_mmrec.py)
#     small  mmrec-small on the KJV SentencePiece shards, B8 x T1024 (SMALL_BATCH; another
#            library with SMALL_KERNELS=NAME.train.json): fp32
#            TF32 and bf16 products (SMALL_MODES), tokens/s
#     torch  the PyTorch eager anchor at the same shape (torch_train_speed.py)
#     nccl   the data-parallel path with NCCL on one rank (--collectives nccl):
#            mmrec-tiny with and without it (same losses), mmrec-small's step
#            time with it
# Logs and JSON lines go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/mmrec-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
. bench/carry-env.sh
C=$PWD/.carry
# NCCL on the device machine is the pip copy beside PyTorch (ENGINEERING.md).
NCCL_DIR=${NCCL_DIR:-/opt/torch/.venv/lib/python3.12/site-packages/nvidia/nccl/lib}
[ -d "$NCCL_DIR" ] && export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$NCCL_DIR && export MMREC_REQUIRE_NCCL=1
what=${*:-tests tiny small torch}
rc=0
has() { [[ " $what " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
if has tests; then
  # (420 s: the mmrec-small level-0 cases run the CPU reference at D 768, T 1000.)
  MMREC_TRAIN_TEST_DIR=$C/train-models timeout 420 $C/bin/mmrec-train-kernel-gpu-tests 2>&1 |
    tee "$OUT/gpu-tests.log" | grep -E "OK|FAIL|PASSED|Failure|Expected" | tail -20
  rc=$((rc | ${PIPESTATUS[0]}))
  MMREC_TRAIN_TEST_DIR=$C/train-models timeout 120 $C/bin/mmrec-trainer-tests --gtest_filter='TrainerGpu.*' 2>&1 |
    tee -a "$OUT/gpu-tests.log" | grep -E "OK|FAIL|PASSED|Failure|Expected" | tail -20
  rc=$((rc | ${PIPESTATUS[0]}))
fi
if has tiny; then
  # scripts/train-tiny's settings.
  run=/tmp/run-tiny
  timeout 300 $C/bin/mmrec-train --kernels $C/train-models/mmrec-tiny.train.json --device gpu \
    --data $C/data/kjv-bytes --out $run --steps 300 --batch 16 --seq-len 128 --lr 3e-3 \
    --min-lr 3e-4 --warmup 30 --eval-interval 100 --eval-tokens 32768 --ckpt-interval 300 \
    --keep 1 --log-interval 50 2>&1 | tee "$OUT/tiny-gpu.log" | grep -E "step +(50|300) |eval|final|error"
  rc=$((rc | ${PIPESTATUS[0]}))
  ck=$(ls -d $run/checkpoints/step-* | tail -1)
  ours=$($C/bin/mmrec-train --kernels $C/train-models/mmrec-tiny.train.json --device gpu \
    --data $C/data/kjv-bytes --out $run --eval-only --checkpoint "$ck" --batch 16 --seq-len 128 \
    --eval-tokens 32768 | awk '{print $NF}')
  echo "eval-only (GPU): $ours" | tee -a "$OUT/tiny-gpu.log"
  python3 bench/torch_mmrec.py --manifest $C/train-models/mmrec-tiny.train.json --checkpoint "$ck" \
    --val $C/data/kjv-bytes/val.bin --seq-len 128 --batch 16 --eval-tokens 32768 --ours "$ours" \
    2>&1 | tee "$OUT/tiny-xcheck.jsonl"
  rc=$((rc | ${PIPESTATUS[0]}))
fi
if has small; then
  for mode in ${SMALL_MODES:-fp32 tf32 bf16}; do
    flag="--matmul $mode"
    timeout ${SMALL_TIMEOUT:-400} $C/bin/mmrec-train --kernels ${SMALL_KERNELS:-$C/models/mmrec-small.train.json} --device gpu $flag ${SMALL_FLAGS:-} \
      --data $C/data/kjv-spm --out /tmp/run-small-$mode --steps ${SMALL_STEPS:-12} --batch ${SMALL_BATCH:-8} \
      --seq-len 1024 --lr 1e-3 --min-lr 1e-4 --warmup 4 --eval-interval ${SMALL_EVAL:-1000} --eval-tokens 8192 \
      --ckpt-interval 1000 --keep 1 --log-interval 1 2>&1 | tee "$OUT/small-$mode.log" | tail -5
    rc=$((rc | ${PIPESTATUS[0]}))
    cp /tmp/run-small-$mode/metrics.jsonl "$OUT/small-$mode-metrics.jsonl" 2>/dev/null
  done
fi
if has nccl; then
  for coll in auto nccl; do
    timeout 120 $C/bin/mmrec-train --kernels $C/train-models/mmrec-tiny.train.json --device gpu \
      --data $C/data/kjv-bytes --out /tmp/run-nccl-$coll --steps 30 --batch 16 --seq-len 128 \
      --warmup 5 --eval-interval 30 --eval-tokens 8192 --ckpt-interval 15 --keep 2 \
      --collectives $coll 2>&1 | tee "$OUT/nccl-tiny-$coll.log" | grep -E "rank|step +30 |error"
    rc=$((rc | ${PIPESTATUS[0]}))
  done
  python3 - /tmp/run-nccl-auto/metrics.jsonl /tmp/run-nccl-nccl/metrics.jsonl <<'PY' 2>&1 | tee "$OUT/nccl-compare.txt"
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:3])
worst = max(abs(x["loss"] - y["loss"]) / abs(x["loss"]) for x, y in zip(a, b))
print(f"mmrec-tiny 30 steps, one rank: --collectives nccl vs none: worst relative loss difference {worst:.2e}")
print("ms/step (median):", sorted(x["ms"] for x in a)[len(a) // 2], "vs", sorted(x["ms"] for x in b)[len(b) // 2])
sys.exit(0 if worst <= 1e-4 and len(a) == len(b) == 30 else 1)
PY
  rc=$((rc | ${PIPESTATUS[0]}))
  timeout 200 $C/bin/mmrec-train --kernels $C/models/mmrec-small.train.json --device gpu --tf32 \
    --data $C/data/kjv-spm --out /tmp/run-small-nccl --steps 6 --batch 8 --seq-len 1024 \
    --warmup 2 --eval-interval 1000 --eval-tokens 8192 --ckpt-interval 6 --keep 1 \
    --collectives nccl 2>&1 | tee "$OUT/nccl-small.log" | tail -3
  rc=$((rc | ${PIPESTATUS[0]}))
fi
if has torch; then
  timeout 300 python3 bench/torch_train_speed.py --manifest $C/models/mmrec-small.train.json \
    --batch 8 --seq-len 1024 --steps 2 2>&1 | tee "$OUT/torch-small.jsonl"
  rc=$((rc | ${PIPESTATUS[0]}))
fi
exit $rc
