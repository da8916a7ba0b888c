// Bad input to mmrec-compile: a located diagnostic and a non-zero exit.
// RUN: not mmrec-compile %s -o %t 2>&1 | FileCheck %s
// RUN: not mmrec-compile %s 2>&1 | FileCheck %s --check-prefix=NOOUT
// RUN: not mmrec-compile %s --emit=asm 2>&1 | FileCheck %s --check-prefix=EMIT
// RUN: not mmrec-compile %s -o %t --target=amdgpu 2>&1 | FileCheck %s --check-prefix=TARGET
// RUN: not mmrec-compile %S/does-not-exist.mlir -o %t 2>&1 | FileCheck %s --check-prefix=MISSING
// Tiling options out of range are refused before the input is read.
// RUN: not mmrec-compile %s -o %t --scan-stream=2 2>&1 | FileCheck %s --check-prefix=TILING
// RUN: not mmrec-compile %s -o %t --scan-ticket=3 2>&1 | FileCheck %s --check-prefix=TILING
// RUN: not mmrec-compile %s -o %t --scan-stage=-2 2>&1 | FileCheck %s --check-prefix=TILING
// RUN: not mmrec-compile %s -o %t --scan-warps=33 2>&1 | FileCheck %s --check-prefix=TILING

// CHECK: compile-errors.mlir:[[@LINE+3]]:12: error: 'mmrec.scan' op b (rank 2) must have at least the rank of log_decay (rank 3)
// NOOUT: mmrec-compile: error: an output directory (-o DIR) is required unless --emit is given
func.func @bad(%l: tensor<2x3x4xf32>, %b: tensor<2x3xf32>) -> (tensor<2x3xf32>, tensor<2xf32>) {
  %h, %f = mmrec.scan %l, %b : tensor<2x3x4xf32>, tensor<2x3xf32> -> tensor<2x3xf32>, tensor<2xf32>
  return %h, %f : tensor<2x3xf32>, tensor<2xf32>
}
// EMIT: mmrec-compile: error: --emit must be mlir, llvm, ptx or obj, got 'asm'
// TARGET: mmrec-compile: error: --target must be all, nvptx or cpu, got 'amdgpu'
// MISSING: mmrec-compile: error: cannot open input file '{{.*}}does-not-exist.mlir'
// TILING-NOT: compile-errors.mlir
// TILING: mmrec-compile: error: --scan-warps must be in [1, 32], --scan-stage, --scan-stream and --scan-ticket in [-1, 1] and the other --scan-* options >= 0
