#!/usr/bin/env bash
# mmrec-7b (5,919,806,016 parameters) on one GPU, issue 7, in one device call
# (binaries, the compiled 7B training library and the KJV SentencePiece
# shards built here and carried in .carry/, see docs/training.md):
#   bench/train-7b.sh [train] [profile] [gemm]
#     train    STEPS steps (default 5) at B x T (default 1 x 2048), fp32 master
#              weights and AdamW states, bf16 products, activation
#              recomputation; no checkpoints (the disk is smaller than one)
#     profile  PROFILE_STEPS steps (default 3) with --profile: time per kernel
#              and product over the steps after the first
#     gemm     the GEMM rate of the layer's products at these shapes
#              (PyTorch/cuBLAS, bf16 and TF32), the reference for MFU
#     generate tokens/s of mmrec-generate with random weights at batch 1 and 32
#              (GEN_FLAGS: more flags, e.g. --matmul fp32)
# KERNELS=<NAME.train.json> picks another compiled library (bench/make-carry.sh
# puts the --train-gated-bf16 one in .carry/models-bf16). Logs go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/mmrec-out}
mkdir -p "$OUT"
. bench/carry-env.sh
C=$PWD/.carry
what=${*:-train profile gemm}
has() { [[ " $what " == *" $1 "* ]]; }
B=${B:-1}
T=${T:-2048}
rc=0
common=(--kernels ${KERNELS:-$C/models/mmrec-7b.train.json} --device gpu --data $C/data/kjv-spm
        --batch $B --seq-len $T --lr ${LR:-3e-4} --min-lr ${MIN_LR:-3e-5} --warmup ${WARMUP:-1} --eval-tokens $((B * T))
        --eval-interval 100000 --ckpt-interval 0 --log-interval 1 --sample-tokens 0
        ${FLAGS:---matmul bf16 --recompute})
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
if has train; then
  timeout ${TRAIN_TIMEOUT:-400} $C/bin/mmrec-train "${common[@]}" --steps ${STEPS:-5} \
    --out /tmp/run-7b 2>&1 | tee "$OUT/7b-train.log"
  rc=$((rc | ${PIPESTATUS[0]}))
  cp /tmp/run-7b/metrics.jsonl "$OUT/7b-train-metrics.jsonl" 2>/dev/null
fi
if has profile; then
  timeout ${PROFILE_TIMEOUT:-200} $C/bin/mmrec-train "${common[@]}" --steps ${PROFILE_STEPS:-3} --profile \
    --out /tmp/run-7b-profile 2>&1 | tee "$OUT/7b-profile.log" | tail -40
  rc=$((rc | ${PIPESTATUS[0]}))
fi
if has gemm; then
  timeout 120 python3 - $((B * T)) <<'PY' 2>&1 | tee "$OUT/7b-gemm.txt"
import sys, torch
n = int(sys.argv[1]); D, F = 4096, 11008
def rate(m, k, nn, dtype, tf32):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a = torch.randn(m, k, device="cuda", dtype=dtype); b = torch.randn(k, nn, device="cuda", dtype=dtype)
    for _ in range(3): a @ b
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(20): a @ b
    e.record(); torch.cuda.synchronize()
    return 2 * m * k * nn * 20 / (s.elapsed_time(e) * 1e-3) / 1e12
for name, (m, k, nn) in {"qkvz D->4D": (n, D, 4 * D), "W_1 D->F": (n, D, F), "W_2 F->D": (n, F, D),
                         "dW D x 4D over tokens": (D, n, 4 * D)}.items():
    print(f"{name:24s} bf16 {rate(m, k, nn, torch.bfloat16, False):7.1f} TFLOP/s   "
          f"tf32 {rate(m, k, nn, torch.float32, True):7.1f}   fp32 {rate(m, k, nn, torch.float32, False):6.1f}")
PY
fi
if has generate; then
  for b in 1 32; do
    timeout 200 $C/bin/mmrec-generate --kernels ${KERNELS:-$C/models/mmrec-7b.train.json} --device gpu \
      --random-init 1 --data $C/data/kjv-spm --max-tokens ${GEN_TOKENS:-32} --temperature 0 \
      --samples $b ${GEN_FLAGS:-} > "$OUT/7b-generate-b$b.log" 2>&1
    rc=$((rc | $?))
    grep -- "tokens/s" "$OUT/7b-generate-b$b.log"
  done
fi
exit $rc
