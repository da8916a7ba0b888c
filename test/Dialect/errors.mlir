// Every verifier message of the mmrec dialect, one case each.
// RUN: mmrec-opt %s -split-input-file -verify-diagnostics

func.func @rms_rank(%x: tensor<f32>, %w: tensor<4xf32>) {
  // expected-error @+1 {{'mmrec.rms_norm' op input must have rank >= 1}}
  %y = mmrec.rms_norm %x, %w : tensor<f32>, tensor<4xf32>
  return
}

// -----

func.func @rms_weight_rank(%x: tensor<2x4xf32>, %w: tensor<1x4xf32>) {
  // expected-error @+1 {{'mmrec.rms_norm' op weight must have rank 1, got 'tensor<1x4xf32>'}}
  %y = mmrec.rms_norm %x, %w : tensor<2x4xf32>, tensor<1x4xf32>
  return
}

// -----

func.func @rms_weight_size(%x: tensor<2x4xf32>, %w: tensor<5xf32>) {
  // expected-error @+1 {{'mmrec.rms_norm' op weight dimension 0 (5) must equal the input's last dimension (4)}}
  %y = mmrec.rms_norm %x, %w : tensor<2x4xf32>, tensor<5xf32>
  return
}

// -----

func.func @rms_weight_type(%x: tensor<2x4xf32>, %w: tensor<4xbf16>) {
  // expected-error @+1 {{'mmrec.rms_norm' op input and weight must have the same element type, got 'f32' and 'bf16'}}
  %y = mmrec.rms_norm %x, %w : tensor<2x4xf32>, tensor<4xbf16>
  return
}

// -----

func.func @rms_eps(%x: tensor<2x4xf32>, %w: tensor<4xf32>) {
  // expected-error @+1 {{'mmrec.rms_norm' op eps must be positive, got 0.0}}
  %y = mmrec.rms_norm %x, %w {eps = 0.0 : f64} : tensor<2x4xf32>, tensor<4xf32>
  return
}

// -----

func.func @group_rank(%x: tensor<f32>) {
  // expected-error @+1 {{'mmrec.group_rms_norm' op input must have rank >= 1}}
  %y = mmrec.group_rms_norm %x {groups = 2 : i64} : tensor<f32>
  return
}

// -----

func.func @group_divides(%x: tensor<2x6xf32>) {
  // expected-error @+1 {{'mmrec.group_rms_norm' op groups (4) must divide the last dimension (6)}}
  %y = mmrec.group_rms_norm %x {groups = 4 : i64} : tensor<2x6xf32>
  return
}

// -----

func.func @group_eps(%x: tensor<2x6xf32>) {
  // expected-error @+1 {{'mmrec.group_rms_norm' op eps must be positive, got -1.0}}
  %y = mmrec.group_rms_norm %x {groups = 2 : i64, eps = -1.0 : f64} : tensor<2x6xf32>
  return
}

// -----

func.func @group_positive(%x: tensor<2x6xf32>) {
  // expected-error @+1 {{'mmrec.group_rms_norm' op attribute 'groups' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %y = mmrec.group_rms_norm %x {groups = 0 : i64} : tensor<2x6xf32>
  return
}

// -----

func.func @sigmoid_int(%x: tensor<4xi32>) {
  // expected-error @+1 {{'mmrec.sigmoid' op operand #0 must be ranked tensor of bfloat16 type or 16-bit float or 32-bit float or 64-bit float values, but got 'tensor<4xi32>'}}
  %y = mmrec.sigmoid %x : tensor<4xi32>
  return
}

// -----

func.func @clamp(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mmrec.log_decay' op clamp bounds must satisfy clamp_min < clamp_max <= 0, got [-1.0, 1.0]}}
  %y = mmrec.log_decay %x {clamp_min = -1.0 : f64, clamp_max = 1.0 : f64} : tensor<4xf32> -> tensor<4xf32, #mmrec.logspace<min = -1.0, max = 0.0>>
  return
}

// -----

func.func @log_decay_no_encoding(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mmrec.log_decay' op result must carry a #mmrec.logspace encoding, got 'tensor<4xf32>'}}
  %y = mmrec.log_decay %x : tensor<4xf32> -> tensor<4xf32>
  return
}

// -----

func.func @log_decay_bounds(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mmrec.log_decay' op result encoding bounds [-20.0, 0.0] must equal the clamp bounds [-50.0, 0.0]}}
  %y = mmrec.log_decay %x : tensor<4xf32> -> tensor<4xf32, #mmrec.logspace<min = -20.0, max = 0.0>>
  return
}

// -----

func.func @log_decay_input_encoding(%x: tensor<4xf32, #mmrec.logspace<min = -50.0, max = 0.0>>) {
  // expected-error @+1 {{'mmrec.log_decay' op input must not carry an encoding}}
  %y = mmrec.log_decay %x : tensor<4xf32, #mmrec.logspace<min = -50.0, max = 0.0>> -> tensor<4xf32, #mmrec.logspace<min = -50.0, max = 0.0>>
  return
}

// -----

func.func @log_decay_shape(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mmrec.log_decay' op result must have the input's shape and element type}}
  %y = mmrec.log_decay %x : tensor<4xf32> -> tensor<5xf32, #mmrec.logspace<min = -50.0, max = 0.0>>
  return
}

// -----

func.func @exp_decay_plain(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mmrec.exp_decay' op input must carry a #mmrec.logspace encoding, got 'tensor<4xf32>'}}
  %y = mmrec.exp_decay %x : tensor<4xf32> -> tensor<4xf32>
  return
}

// -----

func.func @exp_decay_result_encoding(%x: tensor<4xf32, #mmrec.logspace<min = -50.0, max = 0.0>>) {
  // expected-error @+1 {{'mmrec.exp_decay' op result must not carry an encoding}}
  %y = mmrec.exp_decay %x : tensor<4xf32, #mmrec.logspace<min = -50.0, max = 0.0>> -> tensor<4xf32, #mmrec.logspace<min = -50.0, max = 0.0>>
  return
}

// -----

func.func @exp_decay_shape(%x: tensor<4xf32, #mmrec.logspace<min = -50.0, max = 0.0>>) {
  // expected-error @+1 {{'mmrec.exp_decay' op result must have the input's shape and element type}}
  %y = mmrec.exp_decay %x : tensor<4xf32, #mmrec.logspace<min = -50.0, max = 0.0>> -> tensor<4xf64>
  return
}

// -----

func.func @logspace_elem(%x: tensor<4xf16, #mmrec.logspace<min = -50.0, max = 0.0>>) {
  return
}
// expected-error @-3 {{#mmrec.logspace encodes log-space decays, which must be f32 or f64, not 'f16'}}

// -----

// expected-error @+1 {{#mmrec.logspace: min (0.0) must be less than max (-1.0)}}
func.func @logspace_order(%x: tensor<4xf32, #mmrec.logspace<min = 0.0, max = -1.0>>) {
  return
}

// -----

// expected-error @+1 {{#mmrec.logspace: max (1.0) must be <= 0 (a decay is at most 1)}}
func.func @logspace_max(%x: tensor<4xf32, #mmrec.logspace<min = -1.0, max = 1.0>>) {
  return
}

// -----

func.func @matmul_rank(%a: tensor<f32>, %w: tensor<4x4xf32>) {
  // expected-error @+1 {{'mmrec.matmul' op lhs must have rank >= 1}}
  %y = mmrec.matmul %a, %w : tensor<f32>, tensor<4x4xf32> -> tensor<4xf32>
  return
}

// -----

func.func @matmul_rhs_rank(%a: tensor<2x4xf32>, %w: tensor<4xf32>) {
  // expected-error @+1 {{'mmrec.matmul' op rhs must have rank 2, got 'tensor<4xf32>'}}
  %y = mmrec.matmul %a, %w : tensor<2x4xf32>, tensor<4xf32> -> tensor<2x4xf32>
  return
}

// -----

func.func @matmul_types(%a: tensor<2x4xf32>, %w: tensor<4x4xbf16>) {
  // expected-error @+1 {{'mmrec.matmul' op lhs and rhs must have the same element type, got 'f32' and 'bf16'}}
  %y = mmrec.matmul %a, %w : tensor<2x4xf32>, tensor<4x4xbf16> -> tensor<2x4xf32>
  return
}

// -----

func.func @matmul_k(%a: tensor<2x4xf32>, %w: tensor<5x3xf32>) {
  // expected-error @+1 {{'mmrec.matmul' op contraction mismatch: lhs has 4 columns but rhs has 5 rows}}
  %y = mmrec.matmul %a, %w : tensor<2x4xf32>, tensor<5x3xf32> -> tensor<2x3xf32>
  return
}

// -----

func.func @matmul_kt(%a: tensor<2x4xf32>, %w: tensor<3x5xf32>) {
  // expected-error @+1 {{'mmrec.matmul' op contraction mismatch: lhs has 4 columns but rhs has 5 columns (transpose_rhs)}}
  %y = mmrec.matmul %a, %w {transpose_rhs} : tensor<2x4xf32>, tensor<3x5xf32> -> tensor<2x3xf32>
  return
}

// -----

func.func @matmul_result(%a: tensor<2x4xf32>, %w: tensor<4x3xf32>) {
  // expected-error @+1 {{'mmrec.matmul' op result dimension 1 (4) must be 3 (lhs's batch dimensions, then rhs's output dimension)}}
  %y = mmrec.matmul %a, %w : tensor<2x4xf32>, tensor<4x3xf32> -> tensor<2x4xf32>
  return
}

// -----

func.func @matmul_result_rank(%a: tensor<2x4xf32>, %w: tensor<4x3xf32>) {
  // expected-error @+1 {{'mmrec.matmul' op result must have rank 2 (lhs's batch dimensions, then rhs's output dimension), got 'tensor<3xf32>'}}
  %y = mmrec.matmul %a, %w : tensor<2x4xf32>, tensor<4x3xf32> -> tensor<3xf32>
  return
}

// -----

func.func @matmul_bias(%a: tensor<2x4xf32>, %w: tensor<4x3xf32>, %b: tensor<4xf32>) {
  // expected-error @+1 {{'mmrec.matmul' op bias dimension 0 (4) must equal the result's last dimension (3)}}
  %y = mmrec.matmul %a, %w bias %b : tensor<2x4xf32>, tensor<4x3xf32>, tensor<4xf32> -> tensor<2x3xf32>
  return
}

// -----

func.func @bd_rank(%a: tensor<f32>, %w: tensor<2x2x2xf32>) {
  // expected-error @+1 {{'mmrec.block_diag_matmul' op lhs must have rank >= 1}}
  %y = mmrec.block_diag_matmul %a, %w : tensor<f32>, tensor<2x2x2xf32> -> tensor<4xf32>
  return
}

// -----

func.func @bd_square(%a: tensor<3x4xf32>, %w: tensor<2x2x3xf32>) {
  // expected-error @+1 {{'mmrec.block_diag_matmul' op rhs blocks must be square, got 2x3}}
  %y = mmrec.block_diag_matmul %a, %w : tensor<3x4xf32>, tensor<2x2x3xf32> -> tensor<3x4xf32>
  return
}

// -----

func.func @bd_heads(%a: tensor<3x6xf32>, %w: tensor<2x2x2xf32>) {
  // expected-error @+1 {{'mmrec.block_diag_matmul' op lhs's last dimension (6) must equal heads x head_dim (4)}}
  %y = mmrec.block_diag_matmul %a, %w : tensor<3x6xf32>, tensor<2x2x2xf32> -> tensor<3x6xf32>
  return
}

// -----

func.func @embedding_table(%e: tensor<16xf32>, %ids: tensor<2x3xi32>) {
  // expected-error @+1 {{'mmrec.embedding' op table must have rank 2, got 'tensor<16xf32>'}}
  %x = mmrec.embedding %e[%ids] : tensor<16xf32>, tensor<2x3xi32> -> tensor<2x3x4xf32>
  return
}

// -----

func.func @embedding_shape(%e: tensor<16x4xf32>, %ids: tensor<2x3xi32>) {
  // expected-error @+1 {{'mmrec.embedding' op result dimension 2 (8) must be 4 (the ids' shape, then the table's row size)}}
  %x = mmrec.embedding %e[%ids] : tensor<16x4xf32>, tensor<2x3xi32> -> tensor<2x3x8xf32>
  return
}

// -----

func.func @ce_rank(%l: tensor<8xf32>, %t: tensor<i32>) {
  // expected-error @+1 {{'mmrec.cross_entropy' op logits must have rank >= 2 (..., vocab), got 'tensor<8xf32>'}}
  %x = mmrec.cross_entropy %l, %t : tensor<8xf32>, tensor<i32> -> tensor<f32>
  return
}

// -----

func.func @ce_targets(%l: tensor<2x3x8xf32>, %t: tensor<2x4xi32>) {
  // expected-error @+1 {{'mmrec.cross_entropy' op targets dimension 1 (4) must be 3 (the logits' shape without the vocabulary axis)}}
  %x = mmrec.cross_entropy %l, %t : tensor<2x3x8xf32>, tensor<2x4xi32> -> tensor<f32>
  return
}

// -----

func.func @block_diag_overflow(%a: tensor<3x4xf32>, %w: tensor<4294967296x4294967296x4294967296xf32>) {
  // expected-error @+1 {{'mmrec.block_diag_matmul' op heads x head_dim (4294967296 x 4294967296) overflows int64}}
  %y = mmrec.block_diag_matmul %a, %w : tensor<3x4xf32>, tensor<4294967296x4294967296x4294967296xf32> -> tensor<3x4xf32>
  return
}
