// RUN: mmrec-opt %s -split-input-file --mmrec-fuse-scan-producers | FileCheck %s

// The decay gate moves into the scan: the scan reads the logits.
// CHECK-LABEL: func.func @fuse(
// CHECK-SAME:    %[[X:[^:]+]]: tensor<2x5x8xf32>, %[[B:[^:]+]]: tensor<2x5x8xf32>
// CHECK-NOT:   mmrec.log_decay
// CHECK:       mmrec.scan %[[X]], %[[B]] {gate_logits} : tensor<2x5x8xf32>, tensor<2x5x8xf32>
func.func @fuse(%x: tensor<2x5x8xf32>, %b: tensor<2x5x8xf32>) -> tensor<2x5x8xf32> {
  %l = mmrec.log_decay %x : tensor<2x5x8xf32> -> tensor<2x5x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>
  %h, %f = mmrec.scan %l, %b : tensor<2x5x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<2x5x8xf32> -> tensor<2x5x8xf32>, tensor<2x8xf32>
  return %h : tensor<2x5x8xf32>
}

// -----

// A gate with another user stays (its ℓ is needed anyway).
// CHECK-LABEL: func.func @shared(
// CHECK:       %[[L:.+]] = mmrec.log_decay
// CHECK:       mmrec.scan %[[L]], %{{.*}} :
func.func @shared(%x: tensor<2x5x8xf32>, %b: tensor<2x5x8xf32>) -> (tensor<2x5x8xf32>, tensor<2x5x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>) {
  %l = mmrec.log_decay %x : tensor<2x5x8xf32> -> tensor<2x5x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>
  %h, %f = mmrec.scan %l, %b : tensor<2x5x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<2x5x8xf32> -> tensor<2x5x8xf32>, tensor<2x8xf32>
  return %h, %l : tensor<2x5x8xf32>, tensor<2x5x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>
}
