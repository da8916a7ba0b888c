// RUN: mmrec-opt %s -split-input-file --mmrec-scan-adjoint -verify-diagnostics | FileCheck %s

// The adjoint of a scan with an initial state takes the forward's inputs,
// its saved outputs and their cotangents, and returns dℓ, db and dh0.
// CHECK-LABEL: func.func @fwd(
// CHECK-LABEL: func.func @fwd_grad(
// CHECK-SAME:    %[[L:[^:]+]]: tensor<4x16x8xf32>, %[[B:[^:]+]]: tensor<4x16x8xf32>, %[[H0:[^:]+]]: tensor<4x8xf32>,
// CHECK-SAME:    %[[H:[^:]+]]: tensor<4x16x8xf32>, %[[F:[^:]+]]: tensor<4x8xf32>, %[[DH:[^:]+]]: tensor<4x16x8xf32>, %[[DF:[^:]+]]: tensor<4x8xf32>)
// CHECK-SAME:    -> (tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x8xf32>)
// CHECK:         %[[DL:.+]], %[[DB:.+]], %[[DH0:.+]] = mmrec.scan_grad %[[L]], %[[H]], %[[DH]], %[[DF]] init %[[H0]] {clamp_max = -1.000000e-01 : f64, clamp_min = -2.000000e+01 : f64}
// CHECK:         return %[[DL]], %[[DB]], %[[DH0]]
func.func @fwd(%l: tensor<4x16x8xf32>, %b: tensor<4x16x8xf32>, %h0: tensor<4x8xf32>)
    -> (tensor<4x16x8xf32>, tensor<4x8xf32>) {
  %h, %f = mmrec.scan %l, %b init %h0 {clamp_min = -20.0 : f64, clamp_max = -0.1 : f64}
      : tensor<4x16x8xf32>, tensor<4x16x8xf32>, tensor<4x8xf32> -> tensor<4x16x8xf32>, tensor<4x8xf32>
  return %h, %f : tensor<4x16x8xf32>, tensor<4x8xf32>
}

// -----

// A reverse scan without init: its adjoint keeps `reverse` and has no dh0.
// CHECK-LABEL: func.func @rev_grad(
// CHECK-SAME:    -> (tensor<?x?x8xf32>, tensor<?x?x8xbf16>)
// CHECK:         mmrec.scan_grad reverse
// CHECK-NOT:     init
func.func @rev(%l: tensor<?x?x8xf32>, %b: tensor<?x?x8xbf16>) -> (tensor<?x?x8xbf16>, tensor<?x8xbf16>) {
  %h, %f = mmrec.scan reverse %l, %b : tensor<?x?x8xf32>, tensor<?x?x8xbf16> -> tensor<?x?x8xbf16>, tensor<?x8xbf16>
  return %h, %f : tensor<?x?x8xbf16>, tensor<?x8xbf16>
}

// -----

// Functions that are not "one scan of the arguments" are left alone, with a remark.
// CHECK-LABEL: func.func @not_args
// CHECK-NOT:   func.func @not_args_grad
// expected-remark @+1 {{mmrec-scan-adjoint: no adjoint for @not_args: it must return (h, final) of one mmrec.scan of its arguments}}
func.func @not_args(%l: tensor<2x3x4xf32>, %b: tensor<2x3x4xf32>) -> (tensor<2x3x4xf32>, tensor<2x4xf32>) {
  %b2 = arith.addf %b, %b : tensor<2x3x4xf32>
  %h, %f = mmrec.scan %l, %b2 : tensor<2x3x4xf32>, tensor<2x3x4xf32> -> tensor<2x3x4xf32>, tensor<2x4xf32>
  return %h, %f : tensor<2x3x4xf32>, tensor<2x4xf32>
}

// -----

// The level-2 broadcast form gets its adjoint with the memory ops, not here.
// expected-remark @+1 {{its decay is broadcast over trailing axes}}
func.func @slots(%l: tensor<2x3x4xf32>, %b: tensor<2x3x4x8xf32>) -> (tensor<2x3x4x8xf32>, tensor<2x4x8xf32>) {
  %h, %f = mmrec.scan %l, %b : tensor<2x3x4xf32>, tensor<2x3x4x8xf32> -> tensor<2x3x4x8xf32>, tensor<2x4x8xf32>
  return %h, %f : tensor<2x3x4x8xf32>, tensor<2x4x8xf32>
}
