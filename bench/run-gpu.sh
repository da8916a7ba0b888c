#!/usr/bin/env bash
# Everything this project runs on the device machine, in one call:
#   bench/run-gpu.sh [tests|bench|gated|train|all]
# Binaries are built here (no MLIR there) and carried in .carry/:
#   mmrec-scan-kernel-tests, mmrec-gated-kernel-tests, mmrec-blas-tests,
#   scan-bench, gated-bench (and FlashRNN's sources in .carry/flashrnn for
#   bench/gated_anchors.py). Logs and JSON go to $OUT.
set -uo pipefail
what=${1:-all}
OUT=${OUT:-/tmp/mmrec-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# OpenBLAS (and its Fortran runtime) from the build machine, for the binaries.
. bench/carry-env.sh
[ -f .carry/COMMIT ] && export MMREC_COMMIT=$(cat .carry/COMMIT)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
rc=0
if [ "$what" = tests ] || [ "$what" = all ]; then
  if [ -x .carry/mmrec-scan-kernel-tests ]; then
    .carry/mmrec-scan-kernel-tests --gtest_filter='ScanKernelGpu.*' 2>&1 | tee "$OUT/gpu-tests.log" | tail -40
    rc=$((rc | ${PIPESTATUS[0]}))
  fi
fi
if [ "$what" = tests ] || [ "$what" = gated ] || [ "$what" = all ]; then
  for t in mmrec-gated-kernel-tests:GatedKernelGpu mmrec-blas-tests:BlasGpu; do
    bin=.carry/${t%%:*}
    if [ -x "$bin" ]; then
      "$bin" --gtest_filter="${t##*:}.*" 2>&1 | tee "$OUT/${t%%:*}.log" | tail -30
      rc=$((rc | ${PIPESTATUS[0]}))
    fi
  done
fi
if [ "$what" = train ] || [ "$what" = all ]; then
  # The GPU training library against the CPU one, kernel by kernel
  # (.carry/train-models: the libraries test/unit builds).
  if [ -x .carry/mmrec-train-kernel-gpu-tests ]; then
    MMREC_TRAIN_TEST_DIR=$PWD/.carry/train-models .carry/mmrec-train-kernel-gpu-tests \
      2>&1 | tee "$OUT/train-kernels-gpu.log" | tail -40
    rc=$((rc | ${PIPESTATUS[0]}))
  fi
fi
if [ "$what" = gated ] || [ "$what" = all ]; then
  if [ -x .carry/gated-bench ]; then
    .carry/gated-bench 2>&1 | tee "$OUT/gated-bench.jsonl"
    rc=$((rc | ${PIPESTATUS[0]}))
  fi
  if [ -d .carry/flashrnn ]; then
    timeout 400 python3 bench/gated_anchors.py --flashrnn .carry/flashrnn --out "$OUT/gated_anchors.json" \
      2>&1 | tee "$OUT/gated-anchors.log" | tail -40
    python3 bench/gated_report.py --ours "$OUT/gated-bench.jsonl" --anchors "$OUT/gated_anchors.json" \
      --out "$OUT/gated.json" --md "$OUT/gated.md"
  fi
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  python3 bench/scan_bench.py --bin .carry/scan-bench --out "$OUT/scan.json" 2>&1 | tee "$OUT/scan-bench.log"
  rc=$((rc | ${PIPESTATUS[0]}))
fi
exit $rc
