// Verifier messages of the recurrence and scan ops.
// RUN: mmrec-opt %s -split-input-file -verify-diagnostics

func.func @rec_no_inputs(%h0: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.recurrence' op needs at least one input sequence (it fixes T)}}
  %s, %f = "mmrec.recurrence"(%h0) <{operandSegmentSizes = array<i32: 0, 1>, resultSegmentSizes = array<i32: 1, 1>}> ({
  ^bb0(%h: tensor<2x4xf32>):
    mmrec.yield %h : tensor<2x4xf32>
  }) : (tensor<2x4xf32>) -> (tensor<2x3x4xf32>, tensor<2x4xf32>)
  return
}

// -----

func.func @rec_no_state(%x: tensor<2x3x4xf32>) {
  // expected-error @+1 {{'mmrec.recurrence' op needs at least one carried state}}
  "mmrec.recurrence"(%x) <{operandSegmentSizes = array<i32: 1, 0>, resultSegmentSizes = array<i32: 0, 0>}> ({
  ^bb0(%xt: tensor<2x4xf32>):
    mmrec.yield
  }) : (tensor<2x3x4xf32>) -> ()
  return
}

// -----

func.func @rec_input_rank(%x: tensor<2xf32>, %h0: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.recurrence' op input #0 must have rank >= 2 (batch, sequence, ...), got 'tensor<2xf32>'}}
  %s, %f = mmrec.recurrence ins(%x : tensor<2xf32>) init(%h0 : tensor<2x4xf32>) -> (tensor<2x3x4xf32>), (tensor<2x4xf32>) {
  ^bb0(%xt: tensor<2xf32>, %h: tensor<2x4xf32>):
    mmrec.yield %h : tensor<2x4xf32>
  }
  return
}

// -----

func.func @rec_inputs_disagree(%x: tensor<2x3x4xf32>, %y: tensor<2x5x4xf32>, %h0: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.recurrence' op input #1 ('tensor<2x5x4xf32>') disagrees with the other inputs on the batch or sequence size}}
  %s, %f = mmrec.recurrence ins(%x, %y : tensor<2x3x4xf32>, tensor<2x5x4xf32>) init(%h0 : tensor<2x4xf32>) -> (tensor<2x3x4xf32>), (tensor<2x4xf32>) {
  ^bb0(%xt: tensor<2x4xf32>, %yt: tensor<2x4xf32>, %h: tensor<2x4xf32>):
    mmrec.yield %h : tensor<2x4xf32>
  }
  return
}

// -----

func.func @rec_init_batch(%x: tensor<2x3x4xf32>, %h0: tensor<3x4xf32>) {
  // expected-error @+1 {{'mmrec.recurrence' op init #0 ('tensor<3x4xf32>') must have the inputs' batch size as dimension 0}}
  %s, %f = mmrec.recurrence ins(%x : tensor<2x3x4xf32>) init(%h0 : tensor<3x4xf32>) -> (tensor<3x3x4xf32>), (tensor<3x4xf32>) {
  ^bb0(%xt: tensor<2x4xf32>, %h: tensor<3x4xf32>):
    mmrec.yield %h : tensor<3x4xf32>
  }
  return
}

// -----

func.func @rec_seq_type(%x: tensor<2x3x4xf32>, %h0: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.recurrence' op sequence result #0 dimension 1 (5) must be 3 (the state's shape with the sequence axis inserted at 1)}}
  %s, %f = mmrec.recurrence ins(%x : tensor<2x3x4xf32>) init(%h0 : tensor<2x4xf32>) -> (tensor<2x5x4xf32>), (tensor<2x4xf32>) {
  ^bb0(%xt: tensor<2x4xf32>, %h: tensor<2x4xf32>):
    mmrec.yield %h : tensor<2x4xf32>
  }
  return
}

// -----

func.func @rec_seq_elem(%x: tensor<2x3x4xf32>, %h0: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.recurrence' op sequence result #0 and its init must have the same element type, got 'bf16' and 'f32'}}
  %s, %f = mmrec.recurrence ins(%x : tensor<2x3x4xf32>) init(%h0 : tensor<2x4xf32>) -> (tensor<2x3x4xbf16>), (tensor<2x4xf32>) {
  ^bb0(%xt: tensor<2x4xf32>, %h: tensor<2x4xf32>):
    mmrec.yield %h : tensor<2x4xf32>
  }
  return
}

// -----

func.func @rec_final_type(%x: tensor<2x3x4xf32>, %h0: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.recurrence' op final result #0 must have its init's type 'tensor<2x4xf32>', got 'tensor<2x5xf32>'}}
  %s, %f = mmrec.recurrence ins(%x : tensor<2x3x4xf32>) init(%h0 : tensor<2x4xf32>) -> (tensor<2x3x4xf32>), (tensor<2x5xf32>) {
  ^bb0(%xt: tensor<2x4xf32>, %h: tensor<2x4xf32>):
    mmrec.yield %h : tensor<2x4xf32>
  }
  return
}

// -----

func.func @rec_result_count(%x: tensor<2x3x4xf32>, %h0: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.recurrence' op must have one sequence result and one final result per carried state (1), got 2 and 1}}
  %s, %s2, %f = mmrec.recurrence ins(%x : tensor<2x3x4xf32>) init(%h0 : tensor<2x4xf32>) -> (tensor<2x3x4xf32>, tensor<2x3x4xf32>), (tensor<2x4xf32>) {
  ^bb0(%xt: tensor<2x4xf32>, %h: tensor<2x4xf32>):
    mmrec.yield %h : tensor<2x4xf32>
  }
  return
}

// -----

func.func @rec_body_args(%x: tensor<2x3x4xf32>, %h0: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.recurrence' op body must have 2 arguments (one step slice per input, then the 1 carried states), got 1}}
  %s, %f = mmrec.recurrence ins(%x : tensor<2x3x4xf32>) init(%h0 : tensor<2x4xf32>) -> (tensor<2x3x4xf32>), (tensor<2x4xf32>) {
  ^bb0(%h: tensor<2x4xf32>):
    mmrec.yield %h : tensor<2x4xf32>
  }
  return
}

// -----

func.func @rec_slice_type(%x: tensor<2x3x4xf32>, %h0: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.recurrence' op body argument #0 must be the step slice 'tensor<2x4xf32>' of input #0, got 'tensor<2x3x4xf32>'}}
  %s, %f = mmrec.recurrence ins(%x : tensor<2x3x4xf32>) init(%h0 : tensor<2x4xf32>) -> (tensor<2x3x4xf32>), (tensor<2x4xf32>) {
  ^bb0(%xt: tensor<2x3x4xf32>, %h: tensor<2x4xf32>):
    mmrec.yield %h : tensor<2x4xf32>
  }
  return
}

// -----

func.func @rec_state_type(%x: tensor<2x3x4xf32>, %h0: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.recurrence' op body argument #1 (carried state #0) must have its init's type 'tensor<2x4xf32>', got 'tensor<2x4xf64>'}}
  %s, %f = mmrec.recurrence ins(%x : tensor<2x3x4xf32>) init(%h0 : tensor<2x4xf32>) -> (tensor<2x3x4xf32>), (tensor<2x4xf32>) {
  ^bb0(%xt: tensor<2x4xf32>, %h: tensor<2x4xf64>):
    mmrec.yield %xt : tensor<2x4xf32>
  }
  return
}

// -----

func.func @rec_yield_count(%x: tensor<2x3x4xf32>, %h0: tensor<2x4xf32>) {
  %s, %f = mmrec.recurrence ins(%x : tensor<2x3x4xf32>) init(%h0 : tensor<2x4xf32>) -> (tensor<2x3x4xf32>), (tensor<2x4xf32>) {
  ^bb0(%xt: tensor<2x4xf32>, %h: tensor<2x4xf32>):
    // expected-error @+1 {{'mmrec.yield' op must yield 1 next state(s), got 2}}
    mmrec.yield %h, %xt : tensor<2x4xf32>, tensor<2x4xf32>
  }
  return
}

// -----

func.func @rec_yield_type(%x: tensor<2x3x4xf64>, %h0: tensor<2x4xf32>) {
  %s, %f = mmrec.recurrence ins(%x : tensor<2x3x4xf64>) init(%h0 : tensor<2x4xf32>) -> (tensor<2x3x4xf32>), (tensor<2x4xf32>) {
  ^bb0(%xt: tensor<2x4xf64>, %h: tensor<2x4xf32>):
    // expected-error @+1 {{'mmrec.yield' op next state #0 must have type 'tensor<2x4xf32>', got 'tensor<2x4xf64>'}}
    mmrec.yield %xt : tensor<2x4xf64>
  }
  return
}

// -----

func.func @yield_outside(%h: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.yield' op expects parent op 'mmrec.recurrence'}}
  mmrec.yield %h : tensor<2x4xf32>
}

// -----

func.func @scan_clamp(%l: tensor<2x3x4xf32>, %b: tensor<2x3x4xf32>) {
  // expected-error @+1 {{'mmrec.scan' op clamp bounds must satisfy clamp_min < clamp_max <= 0, got [0.0, 0.0]}}
  %h, %f = mmrec.scan %l, %b {clamp_min = 0.0 : f64} : tensor<2x3x4xf32>, tensor<2x3x4xf32> -> tensor<2x3x4xf32>, tensor<2x4xf32>
  return
}

// -----

func.func @scan_log_type(%l: tensor<2x3x4xi32>, %b: tensor<2x3x4xf32>) {
  // expected-error @+1 {{'mmrec.scan' op operand #0 must be ranked tensor of 32-bit float or 64-bit float values, but got 'tensor<2x3x4xi32>'}}
  %h, %f = mmrec.scan %l, %b : tensor<2x3x4xi32>, tensor<2x3x4xf32> -> tensor<2x3x4xf32>, tensor<2x4xf32>
  return
}

// -----

func.func @scan_encoding(%l: tensor<2x3x4xf32, #mmrec.logspace<min = -10.0, max = 0.0>>, %b: tensor<2x3x4xf32>) {
  // expected-error @+1 {{'mmrec.scan' op log_decay encoding bounds [-10.0, 0.0] must equal the clamp bounds [-50.0, 0.0]}}
  %h, %f = mmrec.scan %l, %b : tensor<2x3x4xf32, #mmrec.logspace<min = -10.0, max = 0.0>>, tensor<2x3x4xf32> -> tensor<2x3x4xf32>, tensor<2x4xf32>
  return
}

// -----

func.func @scan_rank(%l: tensor<3xf32>, %b: tensor<3xf32>) {
  // expected-error @+1 {{'mmrec.scan' op log_decay must have rank >= 2 (batch, sequence, ...), got 'tensor<3xf32>'}}
  %h, %f = mmrec.scan %l, %b : tensor<3xf32>, tensor<3xf32> -> tensor<3xf32>, tensor<f32>
  return
}

// -----

func.func @scan_b_rank(%l: tensor<2x3x4xf32>, %b: tensor<2x3xf32>) {
  // expected-error @+1 {{'mmrec.scan' op b (rank 2) must have at least the rank of log_decay (rank 3)}}
  %h, %f = mmrec.scan %l, %b : tensor<2x3x4xf32>, tensor<2x3xf32> -> tensor<2x3xf32>, tensor<2xf32>
  return
}

// -----

func.func @scan_dims(%l: tensor<2x3x4xf32>, %b: tensor<2x3x5x8xf32>) {
  // expected-error @+1 {{'mmrec.scan' op log_decay dimension 2 (4) must equal b's (5): the decay broadcasts only over b's trailing axes}}
  %h, %f = mmrec.scan %l, %b : tensor<2x3x4xf32>, tensor<2x3x5x8xf32> -> tensor<2x3x5x8xf32>, tensor<2x5x8xf32>
  return
}

// -----

func.func @scan_b_encoding(%l: tensor<2x3x4xf32>, %b: tensor<2x3x4xf32, #mmrec.logspace<min = -50.0, max = 0.0>>) {
  // expected-error @+1 {{'mmrec.scan' op b must not carry an encoding}}
  %h, %f = mmrec.scan %l, %b : tensor<2x3x4xf32>, tensor<2x3x4xf32, #mmrec.logspace<min = -50.0, max = 0.0>> -> tensor<2x3x4xf32>, tensor<2x4xf32>
  return
}

// -----

func.func @scan_h(%l: tensor<2x3x4xf32>, %b: tensor<2x3x4xbf16>) {
  // expected-error @+1 {{'mmrec.scan' op h must have b's type 'tensor<2x3x4xbf16>', got 'tensor<2x3x4xf32>'}}
  %h, %f = mmrec.scan %l, %b : tensor<2x3x4xf32>, tensor<2x3x4xbf16> -> tensor<2x3x4xf32>, tensor<2x4xbf16>
  return
}

// -----

func.func @scan_final(%l: tensor<2x3x4xf32>, %b: tensor<2x3x4xf32>) {
  // expected-error @+1 {{'mmrec.scan' op final must be 'tensor<2x4xf32>' (b's type without the sequence axis), got 'tensor<2x3xf32>'}}
  %h, %f = mmrec.scan %l, %b : tensor<2x3x4xf32>, tensor<2x3x4xf32> -> tensor<2x3x4xf32>, tensor<2x3xf32>
  return
}

// -----

func.func @scan_init(%l: tensor<2x3x4xf32>, %b: tensor<2x3x4xf32>, %h0: tensor<4xf32>) {
  // expected-error @+1 {{'mmrec.scan' op init must be 'tensor<2x4xf32>' (b's type without the sequence axis), got 'tensor<4xf32>'}}
  %h, %f = mmrec.scan %l, %b init %h0 : tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<4xf32> -> tensor<2x3x4xf32>, tensor<2x4xf32>
  return
}

// -----

func.func @grad_clamp(%l: tensor<2x3x4xf32>, %h: tensor<2x3x4xf32>, %dh: tensor<2x3x4xf32>, %df: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.scan_grad' op clamp bounds must satisfy clamp_min < clamp_max <= 0, got [-50.0, 2.0]}}
  %a, %b = mmrec.scan_grad %l, %h, %dh, %df {clamp_max = 2.0 : f64} : tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x4xf32> -> tensor<2x3x4xf32>, tensor<2x3x4xf32>
  return
}

// -----

func.func @grad_rank(%l: tensor<3xf32>, %h: tensor<3xf32>, %dh: tensor<3xf32>, %df: tensor<f32>) {
  // expected-error @+1 {{'mmrec.scan_grad' op log_decay must have rank >= 2 (batch, sequence, ...), got 'tensor<3xf32>'}}
  %a, %b = mmrec.scan_grad %l, %h, %dh, %df : tensor<3xf32>, tensor<3xf32>, tensor<3xf32>, tensor<f32> -> tensor<3xf32>, tensor<3xf32>
  return
}

// -----

func.func @grad_broadcast(%l: tensor<2x3x4xf32>, %h: tensor<2x3x4x2xf32>, %dh: tensor<2x3x4x2xf32>, %df: tensor<2x4x2xf32>) {
  // expected-error @+1 {{'mmrec.scan_grad' op log_decay 'tensor<2x3x4xf32>' and h 'tensor<2x3x4x2xf32>' must have the same shape}}
  %a, %b = mmrec.scan_grad %l, %h, %dh, %df : tensor<2x3x4xf32>, tensor<2x3x4x2xf32>, tensor<2x3x4x2xf32>, tensor<2x4x2xf32> -> tensor<2x3x4xf32>, tensor<2x3x4x2xf32>
  return
}

// -----

func.func @grad_h(%l: tensor<2x3x4xf32>, %h: tensor<2x3x4xf32>, %dh: tensor<2x3x4xbf16>, %df: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.scan_grad' op grad_h and grad_b must have h's type 'tensor<2x3x4xf32>'}}
  %a, %b = mmrec.scan_grad %l, %h, %dh, %df : tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x3x4xbf16>, tensor<2x4xf32> -> tensor<2x3x4xf32>, tensor<2x3x4xf32>
  return
}

// -----

func.func @grad_log(%l: tensor<2x3x4xf32>, %h: tensor<2x3x4xf32>, %dh: tensor<2x3x4xf32>, %df: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.scan_grad' op grad_log_decay must be log_decay's shape and element type without an encoding, got 'tensor<2x3x4xf64>'}}
  %a, %b = mmrec.scan_grad %l, %h, %dh, %df : tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x4xf32> -> tensor<2x3x4xf64>, tensor<2x3x4xf32>
  return
}

// -----

func.func @grad_final(%l: tensor<2x3x4xf32>, %h: tensor<2x3x4xf32>, %dh: tensor<2x3x4xf32>, %df: tensor<2x3xf32>) {
  // expected-error @+1 {{'mmrec.scan_grad' op grad_final must be 'tensor<2x4xf32>', got 'tensor<2x3xf32>'}}
  %a, %b = mmrec.scan_grad %l, %h, %dh, %df : tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x3xf32> -> tensor<2x3x4xf32>, tensor<2x3x4xf32>
  return
}

// -----

func.func @grad_init_pair(%l: tensor<2x3x4xf32>, %h: tensor<2x3x4xf32>, %dh: tensor<2x3x4xf32>, %df: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.scan_grad' op has a grad_init result exactly when it has an init operand}}
  %a, %b, %c = mmrec.scan_grad %l, %h, %dh, %df : tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x4xf32> -> tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x4xf32>
  return
}

// -----

func.func @grad_init_type(%l: tensor<2x3x4xf32>, %h: tensor<2x3x4xf32>, %h0: tensor<2x5xf32>, %dh: tensor<2x3x4xf32>, %df: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.scan_grad' op init and grad_init must be 'tensor<2x4xf32>'}}
  %a, %b, %c = mmrec.scan_grad %l, %h, %dh, %df init %h0 : tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x4xf32>, tensor<2x5xf32> -> tensor<2x3x4xf32>, tensor<2x3x4xf32>, tensor<2x5xf32>
  return
}

// -----

func.func @scan_gate_logits_encoding(%l: tensor<2x3x4xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %b: tensor<2x3x4xf32>) {
  // expected-error @+1 {{'mmrec.scan' op with gate_logits the first operand holds logits, not a #mmrec.logspace tensor}}
  %h, %f = mmrec.scan %l, %b {gate_logits} : tensor<2x3x4xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<2x3x4xf32> -> tensor<2x3x4xf32>, tensor<2x4xf32>
  return
}

// -----

func.func @gated_z_rank(%z: tensor<2x8xf32>, %l: tensor<2x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %W: tensor<8x8xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'mmrec.gated_recurrence' op z must have rank 3, got 'tensor<2x8xf32>'}}
  %h, %f = mmrec.gated_recurrence %z, %l, %W, %b : tensor<2x8xf32>, tensor<2x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<8x8xf32>, tensor<8xf32> -> tensor<2x3x8xf32>, tensor<2x8xf32>
  return
}

// -----

func.func @gated_l_shape(%z: tensor<2x3x8xf32>, %l: tensor<2x4x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %W: tensor<8x8xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'mmrec.gated_recurrence' op log_decay dimension 1 (4) must be 3 (z's shape (batch, T, D))}}
  %h, %f = mmrec.gated_recurrence %z, %l, %W, %b : tensor<2x3x8xf32>, tensor<2x4x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<8x8xf32>, tensor<8xf32> -> tensor<2x3x8xf32>, tensor<2x8xf32>
  return
}

// -----

func.func @gated_l_bounds(%z: tensor<2x3x8xf32>, %l: tensor<2x3x8xf32, #mmrec.logspace<min = -10.0, max = 0.0>>, %W: tensor<8x8xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'mmrec.gated_recurrence' op log_decay encoding bounds [-10.0, 0.0] must equal the clamp bounds [-50.0, 0.0]}}
  %h, %f = mmrec.gated_recurrence %z, %l, %W, %b : tensor<2x3x8xf32>, tensor<2x3x8xf32, #mmrec.logspace<min = -10.0, max = 0.0>>, tensor<8x8xf32>, tensor<8xf32> -> tensor<2x3x8xf32>, tensor<2x8xf32>
  return
}

// -----

func.func @gated_dense_shape(%z: tensor<2x3x8xf32>, %l: tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %W: tensor<8x4xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'mmrec.gated_recurrence' op gate dimension 1 (4) must be 8 (D x D for the dense gate)}}
  %h, %f = mmrec.gated_recurrence %z, %l, %W, %b : tensor<2x3x8xf32>, tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<8x4xf32>, tensor<8xf32> -> tensor<2x3x8xf32>, tensor<2x8xf32>
  return
}

// -----

func.func @gated_block_square(%z: tensor<2x3x8xf32>, %l: tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %W: tensor<2x4x3xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'mmrec.gated_recurrence' op gate blocks must be square (H, dh, dh), got 'tensor<2x4x3xf32>'}}
  %h, %f = mmrec.gated_recurrence %z, %l, %W, %b : tensor<2x3x8xf32>, tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<2x4x3xf32>, tensor<8xf32> -> tensor<2x3x8xf32>, tensor<2x8xf32>
  return
}

// -----

func.func @gated_block_cover(%z: tensor<2x3x8xf32>, %l: tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %W: tensor<3x4x4xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'mmrec.gated_recurrence' op gate has 3 blocks of 4 channels, which must cover z's 8 channels}}
  %h, %f = mmrec.gated_recurrence %z, %l, %W, %b : tensor<2x3x8xf32>, tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<3x4x4xf32>, tensor<8xf32> -> tensor<2x3x8xf32>, tensor<2x8xf32>
  return
}

// -----

func.func @gated_gate_rank(%z: tensor<2x3x8xf32>, %l: tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %W: tensor<64xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'mmrec.gated_recurrence' op gate must be (D, D) for the dense gate or (H, dh, dh) for the per-head gate, got 'tensor<64xf32>'}}
  %h, %f = mmrec.gated_recurrence %z, %l, %W, %b : tensor<2x3x8xf32>, tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<64xf32>, tensor<8xf32> -> tensor<2x3x8xf32>, tensor<2x8xf32>
  return
}

// -----

func.func @gated_gate_type(%z: tensor<2x3x8xf32>, %l: tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %W: tensor<8x8xbf16>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'mmrec.gated_recurrence' op z and gate must have the same element type, got 'f32' and 'bf16'}}
  %h, %f = mmrec.gated_recurrence %z, %l, %W, %b : tensor<2x3x8xf32>, tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<8x8xbf16>, tensor<8xf32> -> tensor<2x3x8xf32>, tensor<2x8xf32>
  return
}

// -----

func.func @gated_bias(%z: tensor<2x3x8xf32>, %l: tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %W: tensor<8x8xf32>, %b: tensor<4xf32>) {
  // expected-error @+1 {{'mmrec.gated_recurrence' op bias dimension 0 (4) must be 8 (D)}}
  %h, %f = mmrec.gated_recurrence %z, %l, %W, %b : tensor<2x3x8xf32>, tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<8x8xf32>, tensor<4xf32> -> tensor<2x3x8xf32>, tensor<2x8xf32>
  return
}

// -----

func.func @gated_init(%z: tensor<2x3x8xf32>, %l: tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %W: tensor<8x8xf32>, %b: tensor<8xf32>, %h0: tensor<3x8xf32>) {
  // expected-error @+1 {{'mmrec.gated_recurrence' op init dimension 0 (3) must be 2 (batch, D)}}
  %h, %f = mmrec.gated_recurrence %z, %l, %W, %b init %h0 : tensor<2x3x8xf32>, tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<8x8xf32>, tensor<8xf32>, tensor<3x8xf32> -> tensor<2x3x8xf32>, tensor<2x8xf32>
  return
}

// -----

func.func @gated_h_type(%z: tensor<2x3x8xf32>, %l: tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %W: tensor<8x8xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'mmrec.gated_recurrence' op h must have z's type 'tensor<2x3x8xf32>', got 'tensor<2x3x8xbf16>'}}
  %h, %f = mmrec.gated_recurrence %z, %l, %W, %b : tensor<2x3x8xf32>, tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<8x8xf32>, tensor<8xf32> -> tensor<2x3x8xbf16>, tensor<2x8xf32>
  return
}

// -----

func.func @gated_final_type(%z: tensor<2x3x8xf32>, %l: tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %W: tensor<8x8xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'mmrec.gated_recurrence' op final must be 'tensor<2x8xf32>' (batch, D), got 'tensor<2x3xf32>'}}
  %h, %f = mmrec.gated_recurrence %z, %l, %W, %b : tensor<2x3x8xf32>, tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<8x8xf32>, tensor<8xf32> -> tensor<2x3x8xf32>, tensor<2x3xf32>
  return
}

// -----

func.func @gated_clamp(%z: tensor<2x3x8xf32>, %l: tensor<2x3x8xf32>, %W: tensor<8x8xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'mmrec.gated_recurrence' op clamp bounds must satisfy clamp_min < clamp_max <= 0, got [0.0, 1.0]}}
  %h, %f = mmrec.gated_recurrence %z, %l, %W, %b {clamp_min = 0.0 : f64, clamp_max = 1.0 : f64} : tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<8x8xf32>, tensor<8xf32> -> tensor<2x3x8xf32>, tensor<2x8xf32>
  return
}

// -----

func.func @gated_grad_dz(%z: tensor<2x3x8xf32>, %l: tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %W: tensor<8x8xf32>, %b: tensor<8xf32>, %h: tensor<2x3x8xf32>, %dh: tensor<2x3x8xf32>, %df: tensor<2x8xf32>, %h0: tensor<2x8xf32>) {
  // expected-error @+1 {{'mmrec.gated_recurrence_grad' op h, grad_h and grad_z must have z's type 'tensor<2x3x8xf32>'}}
  %r:5 = mmrec.gated_recurrence_grad %z, %l, %W, %b, %h, %dh, %df init %h0 : tensor<2x3x8xf32>, tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<8x8xf32>, tensor<8xf32>, tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x8xf32>, tensor<2x8xf32> -> tensor<2x3x8xbf16>, tensor<2x3x8xf32>, tensor<8x8xf32>, tensor<8xf32>, tensor<2x8xf32>
  return
}

// -----

func.func @gated_grad_dl(%z: tensor<2x3x8xf32>, %l: tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %W: tensor<8x8xf32>, %b: tensor<8xf32>, %h: tensor<2x3x8xf32>, %dh: tensor<2x3x8xf32>, %df: tensor<2x8xf32>, %h0: tensor<2x8xf32>) {
  // expected-error @+1 {{'mmrec.gated_recurrence_grad' op grad_log_decay must be log_decay's shape and element type without an encoding, got 'tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>'}}
  %r:5 = mmrec.gated_recurrence_grad %z, %l, %W, %b, %h, %dh, %df init %h0 : tensor<2x3x8xf32>, tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<8x8xf32>, tensor<8xf32>, tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x8xf32>, tensor<2x8xf32> -> tensor<2x3x8xf32>, tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<8x8xf32>, tensor<8xf32>, tensor<2x8xf32>
  return
}

// -----

func.func @gated_grad_dw(%z: tensor<2x3x8xf32>, %l: tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %W: tensor<8x8xf32>, %b: tensor<8xf32>, %h: tensor<2x3x8xf32>, %dh: tensor<2x3x8xf32>, %df: tensor<2x8xf32>, %h0: tensor<2x8xf32>) {
  // expected-error @+1 {{'mmrec.gated_recurrence_grad' op grad_gate and grad_bias must have the types of gate and bias}}
  %r:5 = mmrec.gated_recurrence_grad %z, %l, %W, %b, %h, %dh, %df init %h0 : tensor<2x3x8xf32>, tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<8x8xf32>, tensor<8xf32>, tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x8xf32>, tensor<2x8xf32> -> tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<8x8xbf16>, tensor<8xf32>, tensor<2x8xf32>
  return
}

// -----

func.func @gated_grad_init(%z: tensor<2x3x8xf32>, %l: tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %W: tensor<8x8xf32>, %b: tensor<8xf32>, %h: tensor<2x3x8xf32>, %dh: tensor<2x3x8xf32>, %df: tensor<2x8xf32>, %h0: tensor<2x8xf32>) {
  // expected-error @+1 {{'mmrec.gated_recurrence_grad' op has a grad_init result exactly when it has an init operand}}
  %r:4 = mmrec.gated_recurrence_grad %z, %l, %W, %b, %h, %dh, %df init %h0 : tensor<2x3x8xf32>, tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<8x8xf32>, tensor<8xf32>, tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x8xf32>, tensor<2x8xf32> -> tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<8x8xf32>, tensor<8xf32>
  return
}

// -----

func.func @gated_grad_final(%z: tensor<2x3x8xf32>, %l: tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %W: tensor<8x8xf32>, %b: tensor<8xf32>, %h: tensor<2x3x8xf32>, %dh: tensor<2x3x8xf32>, %df: tensor<2x4xf32>, %h0: tensor<2x8xf32>) {
  // expected-error @+1 {{'mmrec.gated_recurrence_grad' op grad_final must be 'tensor<2x8xf32>' (batch, D), got 'tensor<2x4xf32>'}}
  %r:5 = mmrec.gated_recurrence_grad %z, %l, %W, %b, %h, %dh, %df init %h0 : tensor<2x3x8xf32>, tensor<2x3x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<8x8xf32>, tensor<8xf32>, tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<2x4xf32>, tensor<2x8xf32> -> tensor<2x3x8xf32>, tensor<2x3x8xf32>, tensor<8x8xf32>, tensor<8xf32>, tensor<2x8xf32>
  return
}
