// Kernels need static channel counts and W_g shapes; the error names the op.
// RUN: not mmrec-opt %s --mmrec-outline-scan-kernels=target=cpu -o /dev/null 2>&1 | FileCheck %s
// RUN: not mmrec-opt %s --mmrec-outline-scan-kernels=target=nvptx -o /dev/null 2>&1 | FileCheck %s


func.func @dyn_channels(%z: tensor<?x?x?xf32>, %l: tensor<?x?x?xf32>, %W: tensor<?x?xf32>, %bg: tensor<?xf32>)
    -> (tensor<?x?x?xf32>, tensor<?x?xf32>) {
  // CHECK: outline-gated-kernels-errors.mlir:[[@LINE+1]]:12: error: 'mmrec.gated_recurrence' op the channel count and W_g's shape must be static to generate a kernel
  %h, %f = mmrec.gated_recurrence %z, %l, %W, %bg
      : tensor<?x?x?xf32>, tensor<?x?x?xf32>, tensor<?x?xf32>, tensor<?xf32> -> tensor<?x?x?xf32>, tensor<?x?xf32>
  return %h, %f : tensor<?x?x?xf32>, tensor<?x?xf32>
}
