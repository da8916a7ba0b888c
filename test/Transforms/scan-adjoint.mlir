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

// -----

// A gated recurrence (per-head W_g, an initial state) gets one
// mmrec.gated_recurrence_grad that returns dz, dℓ, dW_g, db_g and dh0.
// CHECK-LABEL: func.func @gated_grad(
// CHECK-SAME:    %[[Z:[^:]+]]: tensor<?x?x8xf32>, %[[L:[^:]+]]: tensor<?x?x8xf32>, %[[W:[^:]+]]: tensor<2x4x4xf32>, %[[BG:[^:]+]]: tensor<8xf32>, %[[H0:[^:]+]]: tensor<?x8xf32>,
// CHECK-SAME:    %[[H:[^:]+]]: tensor<?x?x8xf32>, %[[F:[^:]+]]: tensor<?x8xf32>, %[[DH:[^:]+]]: tensor<?x?x8xf32>, %[[DF:[^:]+]]: tensor<?x8xf32>)
// CHECK-SAME:    -> (tensor<?x?x8xf32>, tensor<?x?x8xf32>, tensor<2x4x4xf32>, tensor<8xf32>, tensor<?x8xf32>)
// CHECK:         %[[DZ:[^,]+]], %[[DL:[^,]+]], %[[DW:[^,]+]], %[[DB:[^,]+]], %[[DH0:[^ ]+]] = mmrec.gated_recurrence_grad %[[Z]], %[[L]], %[[W]], %[[BG]], %[[H]], %[[DH]], %[[DF]] init %[[H0]] {clamp_min = -2.000000e+01 : f64}
// CHECK:         return %[[DZ]], %[[DL]], %[[DW]], %[[DB]], %[[DH0]]
func.func @gated(%z: tensor<?x?x8xf32>, %l: tensor<?x?x8xf32>, %W: tensor<2x4x4xf32>, %bg: tensor<8xf32>, %h0: tensor<?x8xf32>)
    -> (tensor<?x?x8xf32>, tensor<?x8xf32>) {
  %h, %f = mmrec.gated_recurrence %z, %l, %W, %bg init %h0 {clamp_min = -20.0 : f64}
      : tensor<?x?x8xf32>, tensor<?x?x8xf32>, tensor<2x4x4xf32>, tensor<8xf32>, tensor<?x8xf32> -> tensor<?x?x8xf32>, tensor<?x8xf32>
  return %h, %f : tensor<?x?x8xf32>, tensor<?x8xf32>
}

// -----

// A gated recurrence whose weight is computed in the function is left alone.
// CHECK-LABEL: func.func @gated_computed_weight(
// CHECK-NOT: func.func @gated_computed_weight_grad
// expected-remark @+1 {{mmrec-scan-adjoint: no adjoint for @gated_computed_weight: it must return (h, final) of one mmrec.gated_recurrence of its arguments}}
func.func @gated_computed_weight(%z: tensor<?x?x8xf32>, %l: tensor<?x?x8xf32>, %W: tensor<8x8xf32>, %bg: tensor<8xf32>)
    -> (tensor<?x?x8xf32>, tensor<?x8xf32>) {
  %W2 = arith.addf %W, %W : tensor<8x8xf32>
  %h, %f = mmrec.gated_recurrence %z, %l, %W2, %bg
      : tensor<?x?x8xf32>, tensor<?x?x8xf32>, tensor<8x8xf32>, tensor<8xf32> -> tensor<?x?x8xf32>, tensor<?x8xf32>
  return %h, %f : tensor<?x?x8xf32>, tensor<?x8xf32>
}
