#!/usr/bin/env bash
# Everything this project runs on the device machine, in one call:
#   bench/run-gpu.sh [tests|bench|all]
# Binaries are built here (no MLIR there) and carried in .carry/:
#   mmrec-scan-kernel-tests, scan-bench. Logs and JSON go to $OUT.
set -uo pipefail
what=${1:-all}
OUT=${OUT:-/tmp/mmrec-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
[ -f .carry/COMMIT ] && export MMREC_COMMIT=$(cat .carry/COMMIT)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
rc=0
if [ "$what" = tests ] || [ "$what" = all ]; then
  if [ -x .carry/mmrec-scan-kernel-tests ]; then
    .carry/mmrec-scan-kernel-tests --gtest_filter='ScanKernelGpu.*' 2>&1 | tee "$OUT/gpu-tests.log" | tail -40
    rc=$((rc | ${PIPESTATUS[0]}))
  fi
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  python3 bench/scan_bench.py --bin .carry/scan-bench --out "$OUT/scan.json" 2>&1 | tee "$OUT/scan-bench.log"
  rc=$((rc | ${PIPESTATUS[0]}))
fi
exit $rc
