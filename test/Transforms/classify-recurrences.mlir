// RUN: mmrec-opt %s -split-input-file --mmrec-classify-recurrences -verify-diagnostics | FileCheck %s

#ls = #mmrec.logspace<min = -50.0, max = 0.0>

// An affine step with a log-space decay: ℓ is the input itself, the
// state-free part of the step is lifted to the whole sequence (the prologue).
// CHECK-LABEL: func.func @affine_logspace(
// CHECK-SAME:    %[[L:[^:]+]]: tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %[[X:[^:]+]]: tensor<?x?x8xf32>, %[[H0:[^:]+]]: tensor<?x8xf32>)
// CHECK-NOT:   mmrec.recurrence
// CHECK:       %[[S:.+]] = mmrec.sigmoid %[[X]] : tensor<?x?x8xf32>
// CHECK:       %[[B:.+]] = arith.mulf %[[S]], %[[X]] : tensor<?x?x8xf32>
// CHECK:       %[[H:.+]], %{{.+}} = mmrec.scan %[[L]], %[[B]] init %[[H0]]
// CHECK:       return %[[H]]
func.func @affine_logspace(%l: tensor<?x?x8xf32, #ls>, %x: tensor<?x?x8xf32>, %h0: tensor<?x8xf32>) -> tensor<?x?x8xf32> {
  %hs, %hT = mmrec.recurrence ins(%l, %x : tensor<?x?x8xf32, #ls>, tensor<?x?x8xf32>) init(%h0 : tensor<?x8xf32>)
      -> (tensor<?x?x8xf32>), (tensor<?x8xf32>) {
  ^bb0(%lt: tensor<?x8xf32, #ls>, %xt: tensor<?x8xf32>, %h: tensor<?x8xf32>):
    %g = mmrec.exp_decay %lt : tensor<?x8xf32, #ls> -> tensor<?x8xf32>
    %gh = arith.mulf %g, %h : tensor<?x8xf32>
    %s = mmrec.sigmoid %xt : tensor<?x8xf32>
    %in = arith.mulf %s, %xt : tensor<?x8xf32>
    %hn = arith.addf %gh, %in : tensor<?x8xf32>
    mmrec.yield %hn : tensor<?x8xf32>
  }
  return %hs : tensor<?x?x8xf32>
}

// -----

// A sigmoid decay moves to log space: log σ(a) = clamp(-softplus(-a)).
// `reverse` and the final state carry over.
// CHECK-LABEL: func.func @sigmoid_decay(
// CHECK-SAME:    %[[A:[^:]+]]: tensor<?x?x8xf32>, %[[X:[^:]+]]: tensor<?x?x8xf32>, %[[H0:[^:]+]]: tensor<?x8xf32>)
// CHECK:       %[[L:.+]] = mmrec.log_decay %[[A]] : tensor<?x?x8xf32> -> tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>
// CHECK:       %{{.+}}, %[[F:.+]] = mmrec.scan reverse %[[L]], %[[X]] init %[[H0]]
// CHECK:       return %[[F]]
func.func @sigmoid_decay(%a: tensor<?x?x8xf32>, %x: tensor<?x?x8xf32>, %h0: tensor<?x8xf32>) -> tensor<?x8xf32> {
  %hs, %hT = mmrec.recurrence reverse ins(%a, %x : tensor<?x?x8xf32>, tensor<?x?x8xf32>) init(%h0 : tensor<?x8xf32>)
      -> (tensor<?x?x8xf32>), (tensor<?x8xf32>) {
  ^bb0(%at: tensor<?x8xf32>, %xt: tensor<?x8xf32>, %h: tensor<?x8xf32>):
    %g = mmrec.sigmoid %at : tensor<?x8xf32>
    %gh = arith.mulf %h, %g : tensor<?x8xf32>
    %hn = arith.addf %xt, %gh : tensor<?x8xf32>
    mmrec.yield %hn : tensor<?x8xf32>
  }
  return %hT : tensor<?x8xf32>
}

// -----

// The seed's core formula is not affine in h: it becomes the persistent
// gated recurrence (dense W_g through mmrec.matmul).
// CHECK-LABEL: func.func @seed_core(
// CHECK-SAME:    %[[Z:[^:]+]]: tensor<?x?x8xf32>, %[[L:[^:]+]]: tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %[[H0:[^:]+]]: tensor<?x8xf32>, %[[W:[^:]+]]: tensor<8x8xf32>, %[[BG:[^:]+]]: tensor<8xf32>)
// CHECK-NOT:   mmrec.recurrence
// CHECK:       %[[H:.+]], %{{.+}} = mmrec.gated_recurrence %[[Z]], %[[L]], %[[W]], %[[BG]] init %[[H0]]
// CHECK:       return %[[H]]
func.func @seed_core(%z: tensor<?x?x8xf32>, %l: tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %h0: tensor<?x8xf32>,
                     %W: tensor<8x8xf32>, %bg: tensor<8xf32>) -> tensor<?x?x8xf32> {
  %hs, %hT = mmrec.recurrence ins(%z, %l : tensor<?x?x8xf32>, tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>) init(%h0 : tensor<?x8xf32>)
      -> (tensor<?x?x8xf32>), (tensor<?x8xf32>) {
  ^bb0(%zt: tensor<?x8xf32>, %lt: tensor<?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %h: tensor<?x8xf32>):
    %p = mmrec.matmul %h, %W bias %bg : tensor<?x8xf32>, tensor<8x8xf32>, tensor<8xf32> -> tensor<?x8xf32>
    %s = mmrec.sigmoid %p : tensor<?x8xf32>
    %g = mmrec.exp_decay %lt : tensor<?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>> -> tensor<?x8xf32>
    %a = arith.mulf %zt, %s : tensor<?x8xf32>
    %c = arith.mulf %g, %h : tensor<?x8xf32>
    %hn = arith.addf %a, %c : tensor<?x8xf32>
    mmrec.yield %hn : tensor<?x8xf32>
  }
  return %hs : tensor<?x?x8xf32>
}

// -----

// Per-head W_g (block-diagonal), operands commuted, f32 I/O; the final
// state is what is used.
// CHECK-LABEL: func.func @seed_per_head(
// CHECK-SAME:    %[[L:[^:]+]]: tensor<?x?x8xf32, #mmrec.logspace<min = -20.0, max = 0.0>>, %[[Z:[^:]+]]: tensor<?x?x8xf32>, %[[H0:[^:]+]]: tensor<?x8xf32>, %[[W:[^:]+]]: tensor<2x4x4xf32>, %[[BG:[^:]+]]: tensor<8xf32>)
// CHECK:       %{{.+}}, %[[F:.+]] = mmrec.gated_recurrence %[[Z]], %[[L]], %[[W]], %[[BG]] init %[[H0]] {clamp_min = -2.000000e+01 : f64}
// CHECK:       return %[[F]]
func.func @seed_per_head(%l: tensor<?x?x8xf32, #mmrec.logspace<min = -20.0, max = 0.0>>, %z: tensor<?x?x8xf32>, %h0: tensor<?x8xf32>,
                         %W: tensor<2x4x4xf32>, %bg: tensor<8xf32>) -> tensor<?x8xf32> {
  %hs, %hT = mmrec.recurrence ins(%l, %z : tensor<?x?x8xf32, #mmrec.logspace<min = -20.0, max = 0.0>>, tensor<?x?x8xf32>) init(%h0 : tensor<?x8xf32>)
      -> (tensor<?x?x8xf32>), (tensor<?x8xf32>) {
  ^bb0(%lt: tensor<?x8xf32, #mmrec.logspace<min = -20.0, max = 0.0>>, %zt: tensor<?x8xf32>, %h: tensor<?x8xf32>):
    %g = mmrec.exp_decay %lt : tensor<?x8xf32, #mmrec.logspace<min = -20.0, max = 0.0>> -> tensor<?x8xf32>
    %c = arith.mulf %h, %g : tensor<?x8xf32>
    %p = mmrec.block_diag_matmul %h, %W bias %bg : tensor<?x8xf32>, tensor<2x4x4xf32>, tensor<8xf32> -> tensor<?x8xf32>
    %s = mmrec.sigmoid %p : tensor<?x8xf32>
    %a = arith.mulf %s, %zt : tensor<?x8xf32>
    %hn = arith.addf %c, %a : tensor<?x8xf32>
    mmrec.yield %hn : tensor<?x8xf32>
  }
  return %hT : tensor<?x8xf32>
}

// -----

// Without a bias the seed's form does not match; the step stays sequential.
// CHECK-LABEL: func.func @seed_no_bias
// CHECK: mmrec.recurrence
func.func @seed_no_bias(%z: tensor<?x?x8xf32>, %l: tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %h0: tensor<?x8xf32>,
                        %W: tensor<8x8xf32>) -> tensor<?x?x8xf32> {
  // expected-remark @+1 {{sequential recurrence: 'mmrec.sigmoid' is applied to the state}}
  %hs, %hT = mmrec.recurrence ins(%z, %l : tensor<?x?x8xf32>, tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>) init(%h0 : tensor<?x8xf32>)
      -> (tensor<?x?x8xf32>), (tensor<?x8xf32>) {
  ^bb0(%zt: tensor<?x8xf32>, %lt: tensor<?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %h: tensor<?x8xf32>):
    %p = mmrec.matmul %h, %W : tensor<?x8xf32>, tensor<8x8xf32> -> tensor<?x8xf32>
    %s = mmrec.sigmoid %p : tensor<?x8xf32>
    %g = mmrec.exp_decay %lt : tensor<?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>> -> tensor<?x8xf32>
    %a = arith.mulf %zt, %s : tensor<?x8xf32>
    %c = arith.mulf %g, %h : tensor<?x8xf32>
    %hn = arith.addf %a, %c : tensor<?x8xf32>
    mmrec.yield %hn : tensor<?x8xf32>
  }
  return %hs : tensor<?x?x8xf32>
}

// -----

// A decay that is not in log space (a plain tensor) is not rewritten.
func.func @plain_decay(%a: tensor<?x?x8xf32>, %x: tensor<?x?x8xf32>, %h0: tensor<?x8xf32>) -> tensor<?x?x8xf32> {
  // expected-remark @+1 {{sequential recurrence: the decay is not given in log space (mmrec.exp_decay) nor as a sigmoid}}
  %hs, %hT = mmrec.recurrence ins(%a, %x : tensor<?x?x8xf32>, tensor<?x?x8xf32>) init(%h0 : tensor<?x8xf32>)
      -> (tensor<?x?x8xf32>), (tensor<?x8xf32>) {
  ^bb0(%at: tensor<?x8xf32>, %xt: tensor<?x8xf32>, %h: tensor<?x8xf32>):
    %gh = arith.mulf %at, %h : tensor<?x8xf32>
    %hn = arith.addf %gh, %xt : tensor<?x8xf32>
    mmrec.yield %hn : tensor<?x8xf32>
  }
  return %hs : tensor<?x?x8xf32>
}

// -----

// h·h is not affine.
func.func @square(%x: tensor<?x?x8xf32>, %h0: tensor<?x8xf32>) -> tensor<?x?x8xf32> {
  // expected-remark @+1 {{sequential recurrence: the state is multiplied by itself}}
  %hs, %hT = mmrec.recurrence ins(%x : tensor<?x?x8xf32>) init(%h0 : tensor<?x8xf32>)
      -> (tensor<?x?x8xf32>), (tensor<?x8xf32>) {
  ^bb0(%xt: tensor<?x8xf32>, %h: tensor<?x8xf32>):
    %hh = arith.mulf %h, %h : tensor<?x8xf32>
    %hn = arith.addf %hh, %xt : tensor<?x8xf32>
    mmrec.yield %hn : tensor<?x8xf32>
  }
  return %hs : tensor<?x?x8xf32>
}

// -----

// Found while fuzzing (by review): a scalar defined in the step (the select's condition)
// was given a sequence axis as if it were a tensor (a crash); it stays
// sequential with a remark.
#ls = #mmrec.logspace<min = -50.0, max = 0.0>
// CHECK-LABEL: func.func @lift_scalar(
// CHECK:       mmrec.recurrence
func.func @lift_scalar(%l: tensor<?x?x8xf32, #ls>, %x: tensor<?x?x8xf32>, %h0: tensor<?x8xf32>) -> tensor<?x?x8xf32> {
  // expected-remark @+1 {{sequential recurrence: 'arith.constant' produces i1, which cannot be lifted to the sequence}}
  %hs, %hT = mmrec.recurrence ins(%l, %x : tensor<?x?x8xf32, #ls>, tensor<?x?x8xf32>) init(%h0 : tensor<?x8xf32>)
      -> (tensor<?x?x8xf32>), (tensor<?x8xf32>) {
  ^bb0(%lt: tensor<?x8xf32, #ls>, %xt: tensor<?x8xf32>, %h: tensor<?x8xf32>):
    %g = mmrec.exp_decay %lt : tensor<?x8xf32, #ls> -> tensor<?x8xf32>
    %gh = arith.mulf %g, %h : tensor<?x8xf32>
    %c = arith.constant true
    %in = arith.select %c, %xt, %xt : tensor<?x8xf32>
    %hn = arith.addf %gh, %in : tensor<?x8xf32>
    mmrec.yield %hn : tensor<?x8xf32>
  }
  return %hs : tensor<?x?x8xf32>
}
