#!/usr/bin/env bash
# One device call of a working session (issue 7), logs under $OUT/logs,
# tarred to $OUT/logs.tgz (the device tool brings back few files):
#   bench/session-gpu.sh [scan] [blas] [gated] [tests] [elementwise] [small] [gcl] [torch] [memory] [train] [profile] [generate]
#     scan      the scan kernels' GPU tests (default and every forward staged)
#               and bench/scan_bench.py with the anchors (issue 3)
#     blas      BlasGpu.* and the bf16 product speeds at the 7B shapes
#     gated     µs a step of the level-0 kernels at B 8 x T 2048 for each
#               library in GATED_LIBS (comma-separated .train.json; default K7)
#     tests     the GPU tests of the training library and the trainer
#               (TESTS: a gtest filter for mmrec-trainer-tests)
#     elementwise  GB/s of to_bf16, swiglu_fwd and rmsnorm_fwd, each with and
#               without the bf16 copy of its output, against a copy
#     small     mmrec-small (clustered bf16 level-0 kernels, bf16 products) at SMALL_BATCHES
#               (default 8 32 64), B 32 without row groups (SMALL_NOGROUPS=1),
#               B 32 with the flags in SMALL_EXTRA,
#               B 32 profiled; with .carry/models-base (make-carry.sh
#               BASELINE=<commit>) the same B 32 runs with that commit's kernels
#     gcl       the level-0 row groups as clusters (--train-gated-cluster):
#               their GPU tests, µs a step against the cooperative kernels,
#               mmrec-small B 32 (and GCL_BATCHES with --recompute), B 32
#               profiled
#     torch     issue 6's anchor at mmrec-small B 8 x T 1024: PyTorch eager, then
#               with --compile (torch.compile of the layer's pieces)
#     memory    issue 5: mmrec-7b B 4 x T 2048 --profile (2 steps, --recompute;
#               bf16 optimizer states on a GPU under 100 GB) and the PyTorch
#               memory hierarchy at the same shapes (torch_memory_speed.py),
#               side by side in $L/memory.json (memory_report.py)
#     train     mmrec-7b B 8 x T 2048, bf16 products, --recompute, STEPS steps
#     profile   the same, 2 steps with --profile
#     generate  mmrec-7b decoding with random weights: --profile at batch 1,
#               tokens/s at batch 1 and 32
set -uo pipefail
OUT=${OUT:-/tmp/mmrec-out}
L=$OUT/logs
mkdir -p "$L"
. bench/carry-env.sh
C=$PWD/.carry
export MMREC_TRAIN_TEST_DIR=$C/train-models
what=${*:-blas tests train profile generate}
has() { [[ " $what " == *" $1 "* ]]; }
K7=${K7:-$C/models-bf16/mmrec-7b.train.json}
t0=$(date +%s)
# The logs are tarred again at every stamp, so a call that runs out of
# time still brings back what the finished parts wrote.
pack() { tar -czf "$OUT/logs.tgz" -C "$OUT" logs; }
stamp() { pack; echo "[$(( $(date +%s) - t0 )) s] $*" | tee -a "$L/timeline.txt"; }
if has scan; then
  stamp scan
  for t in mmrec-scan-kernel-tests mmrec-scan-staged-tests; do
    timeout 120 $C/scan/$t --gtest_filter='ScanKernelGpu.*' > "$L/$t.log" 2>&1
    grep -E "^\[  (FAILED|PASSED)" "$L/$t.log"
  done
  timeout 240 python3 bench/scan_bench.py --bin $C/scan/scan-bench --out "$L/scan.json" \
    --commit "$(cat $C/COMMIT)" > "$L/scan-bench.log" 2>&1
  tail -12 "$L/scan-bench.log"
fi
if has blas; then
  stamp blas
  timeout 90 $C/bin/mmrec-blas-tests --gtest_filter='BlasGpu*' > "$L/blas-gpu.log" 2>&1
  grep -E "ms|OK|FAIL" "$L/blas-gpu.log" | tail -8
fi
if has gated; then
  stamp gated
  MMREC_GATED_SPEED=${GATED_LIBS:-$K7} timeout 200 $C/bin/mmrec-train-kernel-gpu-tests \
    --gtest_filter=TrainKernelsGpu.GatedSpeed > "$L/gated-speed.log" 2>&1
  grep -E "us/step|FAIL" "$L/gated-speed.log"
fi
if has tests; then
  stamp tests
  timeout 200 $C/bin/mmrec-train-kernel-gpu-tests --gtest_filter="${KTESTS:-TrainKernelsGpu.*-*Speed*}" \
    > "$L/train-kernels-gpu.log" 2>&1
  grep -E "^\[  (FAILED|PASSED)|OK \]" "$L/train-kernels-gpu.log" | tail -20
  timeout 150 $C/bin/mmrec-trainer-tests --gtest_filter="${TESTS:-TrainerGpu.*}" > "$L/trainer-gpu.log" 2>&1
  grep -E "^\[  (FAILED|PASSED)|OK \]" "$L/trainer-gpu.log" | tail -20
fi
if has elementwise; then
  stamp elementwise
  timeout 60 $C/bin/mmrec-train-kernel-gpu-tests --gtest_filter=TrainKernelsGpu.ElementwiseSpeed \
    > "$L/elementwise-speed.log" 2>&1
  grep -E "GB/s|FAIL" "$L/elementwise-speed.log"
fi
# mmrec-small training on KJV, bf16 products: runSmall NAME KERNELS BATCH
# [FLAGS...] logs to $L/NAME.log (SMALL_STEPS steps, default 8) and prints
# its last step line.
runSmall() {
  local name=$1 kernels=$2 batch=$3; shift 3
  timeout 150 $C/bin/mmrec-train --kernels $kernels --device gpu --matmul bf16 --data $C/data/kjv-spm \
    --out /tmp/run-$name --steps ${SMALL_STEPS:-8} --batch $batch --seq-len 1024 --lr 1e-3 \
    --min-lr 1e-4 --warmup 4 --eval-interval 1000 --eval-tokens 8192 --ckpt-interval 1000 --keep 1 \
    --log-interval 1 "$@" > "$L/$name.log" 2>&1
  echo "$name: $(grep -E '^step' "$L/$name.log" | tail -1)"
  pack
}
if has small; then
  # mmrec-small with the --train-gated-cluster library (mmrec-train's GPU
  # default since session 18; SMALL_KERNELS picks another) and bf16 products at the
  # batches in SMALL_BATCHES (issue 6: MFU at a batch of the trainer's
  # choosing), then B 32 without the level-0 kernels' row groups
  # (MMREC_COOP_MAX_GROUPS=1, with SMALL_NOGROUPS=1) and B 32 profiled.
  stamp small
  KS=${SMALL_KERNELS:-$C/models-gcl/mmrec-small.train.json}
  small() { local label=$1; shift; runSmall small-$label $KS "$@"; }
  for b in ${SMALL_BATCHES:-8 32 64}; do small b$b $b; done
  [ "${SMALL_NOGROUPS:-0}" = 1 ] && MMREC_COOP_MAX_GROUPS=1 small b32-nogroups 32
  # SMALL_EXTRA: B 32 once more with these flags (e.g. --no-param-copy).
  [ -n "${SMALL_EXTRA:-}" ] && small b32-extra 32 $SMALL_EXTRA
  SMALL_STEPS=4 small b32-profile 32 --profile
  sed -n '/time per kernel/,$p' "$L/small-b32-profile.log" | head -50
  # With .carry/models-base (make-carry.sh BASELINE=<commit>): that
  # commit's kernels at B 32 in the same call, plain and profiled.
  if [ -f "$C/models-base/mmrec-small.train.json" ]; then
    echo "baseline: $(cat "$C/models-base/COMMIT")"
    runSmall small-b32-base "$C/models-base/mmrec-small.train.json" 32
    SMALL_STEPS=4 runSmall small-b32-base-profile "$C/models-base/mmrec-small.train.json" 32 --profile
    sed -n '/time per kernel/,$p' "$L/small-b32-base-profile.log" | head -50
  fi
fi
if has gcl; then
  stamp gcl
  timeout 150 $C/bin/mmrec-train-kernel-gpu-tests --gtest_filter='TrainKernelsGpu.SmallGatedCluster*' \
    > "$L/gcl-tests.log" 2>&1
  grep -E "^\[  (FAILED|PASSED)|OK \]|differ" "$L/gcl-tests.log" | head -20
  timeout 120 $C/bin/mmrec-train-kernel-gpu-tests --gtest_filter=TrainKernelsGpu.SmallGatedSpeed \
    > "$L/gcl-speed.log" 2>&1
  grep -E "us/step|FAIL|rror" "$L/gcl-speed.log"
  KG=$C/models-gcl/mmrec-small.train.json
  gcl() { local label=$1; shift; runSmall gcl-$label $KG "$@"; }
  gcl b32 32
  for b in ${GCL_BATCHES:-}; do gcl b$b-recompute $b --recompute; done
  SMALL_STEPS=4 gcl b32-profile 32 --profile
  sed -n '/time per kernel/,$p' "$L/gcl-b32-profile.log" | head -50
fi
if has torch; then
  stamp torch
  for m in "" --compile; do
    timeout ${TORCH_TIMEOUT:-240} python3 bench/torch_train_speed.py --manifest $C/models/mmrec-small.train.json \
      --batch 8 --seq-len 1024 --steps 2 $m > "$L/torch-small${m:+-compile}.log" 2>&1
    tail -1 "$L/torch-small${m:+-compile}.log"
  done
fi
if has memory; then
  stamp memory
  mkdir -p "$L/memory"
  gib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
  # An H100 has room for B 2 only (B 4 needs 18.8 GB of activations beside
  # the 7B weights and bf16 states); both sides run at the same MEM_B.
  states=""; mb=${MEM_B:-4}
  [ "${gib:-0}" -lt 100000 ] && states="--optimizer-states bf16" && mb=${MEM_B:-2}
  mflags="--matmul bf16 --recompute --clip 0 $states"
  OUT=$L/memory KERNELS=$K7 B=$mb LR=1e-4 MIN_LR=1e-5 PROFILE_TIMEOUT=${PROFILE_TIMEOUT:-150} \
    FLAGS="$mflags" bench/train-7b.sh profile > /dev/null
  timeout 200 python3 bench/torch_memory_speed.py --batch $mb > "$L/memory/torch-memory.jsonl" 2> "$L/memory/torch-memory.err"
  tail -2 "$L/memory/torch-memory.err"
  python3 bench/memory_report.py --profile "$L/memory/7b-profile.log" --torch "$L/memory/torch-memory.jsonl" \
    --layers 24 --steps $(( ${PROFILE_STEPS:-3} - 1 )) --recompute --commit "$(cat $C/COMMIT)" --out "$L/memory.json" \
    --command "bench/session-gpu.sh memory (mmrec-train --kernels mmrec-7b --batch $mb --seq-len 2048 --steps ${PROFILE_STEPS:-3} --profile $mflags; bench/torch_memory_speed.py)"
fi
if has train; then
  stamp "7b train"
  mkdir -p "$L/train"
  OUT=$L/train KERNELS=$K7 B=8 STEPS=${STEPS:-3} LR=1e-4 MIN_LR=1e-5 TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-130} \
    FLAGS="--matmul bf16 --recompute --clip 0" bench/train-7b.sh train | grep -E "step|tok" | tail -4
fi
if has profile; then
  stamp "7b profile"
  mkdir -p "$L/profile"
  OUT=$L/profile KERNELS=$K7 B=8 LR=1e-4 MIN_LR=1e-5 PROFILE_TIMEOUT=${PROFILE_TIMEOUT:-110} \
    FLAGS="--matmul bf16 --recompute --clip 0" bench/train-7b.sh profile | tail -40
fi
if has generate; then
  stamp "generate b1 profile"
  timeout 100 $C/bin/mmrec-generate --kernels $K7 --device gpu --random-init 1 --data $C/data/kjv-spm \
    --max-tokens 16 --temperature 0 --samples 1 --profile > "$L/7b-generate-b1-profile.log" 2>&1
  tail -22 "$L/7b-generate-b1-profile.log"
  for m in bf16 fp32; do
    mkdir -p "$L/generate-$m"
    OUT=$L/generate-$m KERNELS=$K7 GEN_FLAGS="--matmul $m" bench/train-7b.sh generate
  done
fi
stamp done
nvidia-smi > "$L/nvidia-smi.txt" 2>&1
pack
