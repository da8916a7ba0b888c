#!/usr/bin/env bash
# Assembles .carry/ (ignored by git) for the device machine, which has no
# MLIR, no OpenBLAS/SentencePiece/Open MPI and no copy of the corpus:
#   bench/make-carry.sh            # after scripts/setup (BUILD_DIR=build)
# then run bench/train-gpu.sh / bench/train-7b.sh there with carry [".carry"].
#   .carry/bin          mmrec-train, mmrec-generate, the GPU test binaries
#   .carry/lib.tar.xz   the shared libraries they need that Ubuntu lacks
#   .carry/train-models the training libraries test/unit builds (test
#                       configs, tiny, small, small-bf16, 7b)
#   .carry/models       mmrec-small and mmrec-7b's libraries (the bench's)
#   .carry/models-bf16  the same with --train-gated-bf16
#   .carry/models-gcl   mmrec-small with --train-gated-cluster
#   .carry/models-base  with BASELINE=<commit>: the same, from that commit's compiler
#   .carry/data         KJV token shards: bytes and SentencePiece 32000
#   .carry/scan         scan-bench and the scan kernels' GPU tests (issue 3), and
#                       with SCAN_VARIANTS the scan-bench-<variant> binaries
#   .carry/anchors      with ANCHOR_REPOS (git directories that the fetch tool
#                       wrote: proger/accelerated-scan, fla-org/flash-linear-
#                       attention), their accelerated_scan/ and fla/ packages for
#                       bench/scan_bench.py --anchors-src (never committed)
#   .carry/COMMIT       the commit they were built from
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BUILD_DIR:-build}
C=.carry
rm -rf "$C"
mkdir -p "$C/bin" "$C/lib" "$C/train-models" "$C/models" "$C/data"
bins=("$B/bin/mmrec-train" "$B/bin/mmrec-generate" "$B/test/unit/mmrec-train-kernel-gpu-tests"
      "$B/test/unit/mmrec-trainer-tests" "$B/test/unit/mmrec-blas-tests")
cp "${bins[@]}" "$C/bin/"
mkdir -p "$C/scan"
cp "$B/bench/scan-bench" "$B/test/unit/mmrec-scan-kernel-tests" "$B/test/unit/mmrec-scan-staged-tests" \
  "$B/test/unit/mmrec-scan-ticket-tests" \
  "$C/scan/"
# SCAN_VARIANTS="w4s8g0;w4s8g1" (bench/CMakeLists.txt's syntax): also the
# scan-bench-<variant> binaries that bench/scan-variants.sh compares, built
# in $B with MMREC_BENCH_VARIANTS on for the occasion (off again after).
if [ -n "${SCAN_VARIANTS:-}" ]; then
  cmake -S . -B "$B" -DMMREC_BENCH_VARIANTS=ON "-DMMREC_SCAN_VARIANTS=$SCAN_VARIANTS" >/dev/null
  IFS=';' read -ra variants <<< "$SCAN_VARIANTS"
  ninja -C "$B" "${variants[@]/#/scan-bench-}" >/dev/null
  for v in "${variants[@]}"; do cp "$B/bench/scan-bench-$v" "$C/scan/"; done
  cmake -S . -B "$B" -DMMREC_BENCH_VARIANTS=OFF >/dev/null
fi
# Every resolved library outside glibc/libstdc++ (those of Ubuntu 24.04 are newer).
ldd "${bins[@]}" "$C"/scan/* | awk '/=> \// {print $3}' | sort -u |
  grep -vE '/(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+)\.so' |
  xargs -r cp -L -t "$C/lib/"
for f in "$B"/test/unit/train-models/*.train.{json,so,gpu.so}; do cp "$f" "$C/train-models/"; done
for m in mmrec-small mmrec-7b; do cp "$C/train-models/$m".train.* "$C/models/"; done
# The level-0 products on tensor cores (mmrec-compile --train-gated-bf16),
# under the models' own names, for SMALL_KERNELS / KERNELS.
mkdir -p "$C/models-bf16"
for m in mmrec-small mmrec-7b; do
  "$B/bin/mmrec-compile" "models/$m.mlir" -o "$C/models-bf16/tmp" --train-gated-bf16 >/dev/null
  cp "$C/models-bf16/tmp/$m".train.{json,so,gpu.so} "$C/models-bf16/"
done
rm -rf "$C/models-bf16/tmp"
# ... and with the level-0 row groups as clusters of 16 (--train-gated-cluster).
# smallCluster COMPILER DIR: mmrec-small's clustered library into DIR.
smallCluster() {
  mkdir -p "$2"
  "$1" models/mmrec-small.mlir -o "$2/tmp" --train-gated-cluster >/dev/null
  cp "$2/tmp/mmrec-small".train.{json,so,gpu.so} "$2/"
  rm -rf "$2/tmp"
}
smallCluster "$B/bin/mmrec-compile" "$C/models-gcl"
# BASELINE=<commit>: mmrec-small's clustered library as that commit's
# compiler builds it (a worktree under /tmp, only mmrec-compile built), for
# bench/session-gpu.sh small to time beside this commit's in the same call.
if [ -n "${BASELINE:-}" ]; then
  wt=/tmp/mmrec-baseline-$BASELINE
  [ -d "$wt" ] || git worktree add -q "$wt" "$BASELINE"
  cmake -G Ninja -S "$wt" -B "$wt/build" -DCMAKE_BUILD_TYPE=Release \
    -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir >/dev/null
  cmake --build "$wt/build" --target mmrec-compile >/dev/null
  smallCluster "$wt/build/bin/mmrec-compile" "$C/models-base"
  git -C "$wt" rev-parse HEAD > "$C/models-base/COMMIT"
fi
data=${MMREC_CARRY_DATA:-/tmp/mmrec-carry-data}
[ -f "$data/kjv-spm/train.bin" ] || "$B/bin/mmrec-data" --out "$data/kjv-spm" --tokenizer spm
[ -f "$data/kjv-bytes/train.bin" ] || "$B/bin/mmrec-data" --out "$data/kjv-bytes" --tokenizer bytes
cp -r "$data/kjv-spm" "$data/kjv-bytes" "$C/data/"
rm -f "$C"/data/*/train.txt
# The device tool carries at most 64 MiB: the libraries (OpenBLAS alone is
# 36 MB) travel compressed; bench/carry-env.sh unpacks them there.
tar -cJf "$C/lib.tar.xz" -C "$C" lib && rm -rf "$C/lib"
for r in ${ANCHOR_REPOS:-}; do
  mkdir -p "$C/anchors"
  for pkg in accelerated_scan fla; do
    git -C "$r" archive HEAD "$pkg" 2>/dev/null | tar -x -C "$C/anchors" 2>/dev/null || true
  done
done
git rev-parse --short HEAD > "$C/COMMIT"
du -sh "$C"
