// Verifier messages of the memory-hierarchy ops, the combination, and the
// dialect's attributes.
// RUN: mmrec-opt %s -split-input-file -verify-diagnostics

func.func @mean_rank(%x: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.chunk_mean' op input must have rank 3, got 'tensor<2x4xf32>'}}
  %y = mmrec.chunk_mean %x {chunk = 2 : i64} : tensor<2x4xf32> -> tensor<2x2xf32>
  return
}

// -----

func.func @mean_chunks(%x: tensor<2x33x4xf32>) {
  // expected-error @+1 {{'mmrec.chunk_mean' op result dimension 1 (2) must be 3 (batch, ceil(T / chunk), channels)}}
  %y = mmrec.chunk_mean %x {chunk = 16 : i64} : tensor<2x33x4xf32> -> tensor<2x2x4xf32>
  return
}

// -----

func.func @mean_type(%x: tensor<2x33x4xf32>) {
  // expected-error @+1 {{'mmrec.chunk_mean' op input and result must have the same element type, got 'f32' and 'bf16'}}
  %y = mmrec.chunk_mean %x {chunk = 16 : i64} : tensor<2x33x4xf32> -> tensor<2x3x4xbf16>
  return
}

// -----

func.func @mean_chunk_attr(%x: tensor<2x33x4xf32>) {
  // expected-error @+1 {{'mmrec.chunk_mean' op attribute 'chunk' failed to satisfy constraint: 64-bit signless integer attribute whose value is positive}}
  %y = mmrec.chunk_mean %x {chunk = 0 : i64} : tensor<2x33x4xf32> -> tensor<2x3x4xf32>
  return
}

// -----

func.func @attend_rank(%q: tensor<2x4xf32>, %k: tensor<2x1x4xf32>) {
  // expected-error @+1 {{'mmrec.chunk_attend' op q must have rank 3, got 'tensor<2x4xf32>'}}
  %y = mmrec.chunk_attend %q, %k, %k {chunk = 4 : i64, groups = 2 : i64} : tensor<2x4xf32>, tensor<2x1x4xf32>, tensor<2x1x4xf32> -> tensor<2x4xf32>
  return
}

// -----

func.func @attend_groups(%q: tensor<2x8x6xf32>, %k: tensor<2x2x6xf32>) {
  // expected-error @+1 {{'mmrec.chunk_attend' op groups (4) must divide the channel dimension (6)}}
  %y = mmrec.chunk_attend %q, %k, %k {chunk = 4 : i64, groups = 4 : i64} : tensor<2x8x6xf32>, tensor<2x2x6xf32>, tensor<2x2x6xf32> -> tensor<2x8x6xf32>
  return
}

// -----

func.func @attend_keys(%q: tensor<2x8x6xf32>, %k: tensor<2x3x6xf32>, %v: tensor<2x2x6xf32>) {
  // expected-error @+1 {{'mmrec.chunk_attend' op keys dimension 1 (3) must be 2 (batch, ceil(T / chunk), channels)}}
  %y = mmrec.chunk_attend %q, %k, %v {chunk = 4 : i64, groups = 2 : i64} : tensor<2x8x6xf32>, tensor<2x3x6xf32>, tensor<2x2x6xf32> -> tensor<2x8x6xf32>
  return
}

// -----

func.func @attend_values(%q: tensor<2x8x6xf32>, %k: tensor<2x2x6xf32>, %v: tensor<2x2x4xf32>) {
  // expected-error @+1 {{'mmrec.chunk_attend' op values dimension 2 (4) must be 6 (batch, ceil(T / chunk), channels)}}
  %y = mmrec.chunk_attend %q, %k, %v {chunk = 4 : i64, groups = 2 : i64} : tensor<2x8x6xf32>, tensor<2x2x6xf32>, tensor<2x2x4xf32> -> tensor<2x8x6xf32>
  return
}

// -----

func.func @attend_result(%q: tensor<2x8x6xf32>, %k: tensor<2x2x6xf32>) {
  // expected-error @+1 {{'mmrec.chunk_attend' op result must have q's type 'tensor<2x8x6xf32>', got 'tensor<2x8x6xbf16>'}}
  %y = mmrec.chunk_attend %q, %k, %k {chunk = 4 : i64, groups = 2 : i64} : tensor<2x8x6xf32>, tensor<2x2x6xf32>, tensor<2x2x6xf32> -> tensor<2x8x6xbf16>
  return
}

// -----

#ls = #mmrec.logspace<min = -50.0, max = 0.0>
func.func @write_rank(%k: tensor<8x4xf32>, %S: tensor<2x4x2xf32>, %mu: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.mdi_write' op k must have rank 3, got 'tensor<8x4xf32>'}}
  %lb, %u = mmrec.mdi_write %k, %k, %S, %mu {chunk = 4 : i64} : tensor<8x4xf32>, tensor<8x4xf32>, tensor<2x4x2xf32>, tensor<2x4xf32> -> tensor<1x2x2x4xf32, #ls>, tensor<1x2x2x4x2xf32>
  return
}

// -----

#ls = #mmrec.logspace<min = -50.0, max = 0.0>
func.func @write_v(%k: tensor<1x8x4xf32>, %v: tensor<1x8x5xf32>, %S: tensor<2x4x2xf32>, %mu: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.mdi_write' op v must have k's type 'tensor<1x8x4xf32>', got 'tensor<1x8x5xf32>'}}
  %lb, %u = mmrec.mdi_write %k, %v, %S, %mu {chunk = 4 : i64} : tensor<1x8x4xf32>, tensor<1x8x5xf32>, tensor<2x4x2xf32>, tensor<2x4xf32> -> tensor<1x2x2x4xf32, #ls>, tensor<1x2x2x4x2xf32>
  return
}

// -----

#ls = #mmrec.logspace<min = -50.0, max = 0.0>
func.func @write_slots_rank(%k: tensor<1x8x4xf32>, %S: tensor<4x2xf32>, %mu: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.mdi_write' op slots must have rank 3, got 'tensor<4x2xf32>'}}
  %lb, %u = mmrec.mdi_write %k, %k, %S, %mu {chunk = 4 : i64} : tensor<1x8x4xf32>, tensor<1x8x4xf32>, tensor<4x2xf32>, tensor<2x4xf32> -> tensor<1x2x2x4xf32, #ls>, tensor<1x2x2x4x2xf32>
  return
}

// -----

#ls = #mmrec.logspace<min = -50.0, max = 0.0>
func.func @write_slots_split(%k: tensor<1x8x4xf32>, %S: tensor<2x4x3xf32>, %mu: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.mdi_write' op slots ('tensor<2x4x3xf32>') must split the 4 channels into num_memories x mem_dim, got 2 x 3}}
  %lb, %u = mmrec.mdi_write %k, %k, %S, %mu {chunk = 4 : i64} : tensor<1x8x4xf32>, tensor<1x8x4xf32>, tensor<2x4x3xf32>, tensor<2x4xf32> -> tensor<1x2x2x4xf32, #ls>, tensor<1x2x2x4x3xf32>
  return
}

// -----

#ls = #mmrec.logspace<min = -50.0, max = 0.0>
func.func @write_mu(%k: tensor<1x8x4xf32>, %S: tensor<2x4x2xf32>, %mu: tensor<2x5xf32>) {
  // expected-error @+1 {{'mmrec.mdi_write' op decay_logits dimension 1 (5) must be 4 (num_memories, memory_size)}}
  %lb, %u = mmrec.mdi_write %k, %k, %S, %mu {chunk = 4 : i64} : tensor<1x8x4xf32>, tensor<1x8x4xf32>, tensor<2x4x2xf32>, tensor<2x5xf32> -> tensor<1x2x2x4xf32, #ls>, tensor<1x2x2x4x2xf32>
  return
}

// -----

#ls = #mmrec.logspace<min = -50.0, max = 0.0>
func.func @write_clamp(%k: tensor<1x8x4xf32>, %S: tensor<2x4x2xf32>, %mu: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.mdi_write' op clamp bounds must satisfy clamp_min < clamp_max <= 0, got [1.0, 0.0]}}
  %lb, %u = mmrec.mdi_write %k, %k, %S, %mu {chunk = 4 : i64, clamp_min = 1.0 : f64} : tensor<1x8x4xf32>, tensor<1x8x4xf32>, tensor<2x4x2xf32>, tensor<2x4xf32> -> tensor<1x2x2x4xf32, #ls>, tensor<1x2x2x4x2xf32>
  return
}

// -----

func.func @write_logbeta_enc(%k: tensor<1x8x4xf32>, %S: tensor<2x4x2xf32>, %mu: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.mdi_write' op log_beta must carry a #mmrec.logspace encoding, got 'tensor<1x2x2x4xf32>'}}
  %lb, %u = mmrec.mdi_write %k, %k, %S, %mu {chunk = 4 : i64} : tensor<1x8x4xf32>, tensor<1x8x4xf32>, tensor<2x4x2xf32>, tensor<2x4xf32> -> tensor<1x2x2x4xf32>, tensor<1x2x2x4x2xf32>
  return
}

// -----

#ls = #mmrec.logspace<min = -50.0, max = 0.0>
func.func @write_logbeta_shape(%k: tensor<1x9x4xf32>, %S: tensor<2x4x2xf32>, %mu: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.mdi_write' op log_beta dimension 1 (2) must be 3 (batch, chunks, num_memories, memory_size)}}
  %lb, %u = mmrec.mdi_write %k, %k, %S, %mu {chunk = 4 : i64} : tensor<1x9x4xf32>, tensor<1x9x4xf32>, tensor<2x4x2xf32>, tensor<2x4xf32> -> tensor<1x2x2x4xf32, #ls>, tensor<1x3x2x4x2xf32>
  return
}

// -----

#ls = #mmrec.logspace<min = -50.0, max = 0.0>
func.func @write_update(%k: tensor<1x8x4xf32>, %S: tensor<2x4x2xf32>, %mu: tensor<2x4xf32>) {
  // expected-error @+1 {{'mmrec.mdi_write' op update must have rank 5 (batch, chunks, num_memories, memory_size, mem_dim), got 'tensor<1x2x2x4xf32>'}}
  %lb, %u = mmrec.mdi_write %k, %k, %S, %mu {chunk = 4 : i64} : tensor<1x8x4xf32>, tensor<1x8x4xf32>, tensor<2x4x2xf32>, tensor<2x4xf32> -> tensor<1x2x2x4xf32, #ls>, tensor<1x2x2x4xf32>
  return
}

// -----

func.func @read_rank(%q: tensor<8x4xf32>, %S: tensor<2x4x2xf32>, %m: tensor<1x2x2x4x2xf32>, %m0: tensor<1x2x4x2xf32>) {
  // expected-error @+1 {{'mmrec.mdi_read' op q must have rank 3, got 'tensor<8x4xf32>'}}
  %y = mmrec.mdi_read %q, %S, %m, %m0 {chunk = 4 : i64} : tensor<8x4xf32>, tensor<2x4x2xf32>, tensor<1x2x2x4x2xf32>, tensor<1x2x4x2xf32> -> tensor<8x4xf32>
  return
}

// -----

func.func @read_memory(%q: tensor<1x8x4xf32>, %S: tensor<2x4x2xf32>, %m: tensor<1x3x2x4x2xf32>, %m0: tensor<1x2x4x2xf32>) {
  // expected-error @+1 {{'mmrec.mdi_read' op memory dimension 1 (3) must be 2 (batch, chunks, num_memories, memory_size, mem_dim)}}
  %y = mmrec.mdi_read %q, %S, %m, %m0 {chunk = 4 : i64} : tensor<1x8x4xf32>, tensor<2x4x2xf32>, tensor<1x3x2x4x2xf32>, tensor<1x2x4x2xf32> -> tensor<1x8x4xf32>
  return
}

// -----

func.func @read_init(%q: tensor<1x8x4xf32>, %S: tensor<2x4x2xf32>, %m: tensor<1x2x2x4x2xf32>, %m0: tensor<1x2x4x3xf32>) {
  // expected-error @+1 {{'mmrec.mdi_read' op init dimension 3 (3) must be 2 (batch, num_memories, memory_size, mem_dim)}}
  %y = mmrec.mdi_read %q, %S, %m, %m0 {chunk = 4 : i64} : tensor<1x8x4xf32>, tensor<2x4x2xf32>, tensor<1x2x2x4x2xf32>, tensor<1x2x4x3xf32> -> tensor<1x8x4xf32>
  return
}

// -----

func.func @read_result(%q: tensor<1x8x4xf32>, %S: tensor<2x4x2xf32>, %m: tensor<1x2x2x4x2xf32>, %m0: tensor<1x2x4x2xf32>) {
  // expected-error @+1 {{'mmrec.mdi_read' op result must have q's type 'tensor<1x8x4xf32>', got 'tensor<1x8x2xf32>'}}
  %y = mmrec.mdi_read %q, %S, %m, %m0 {chunk = 4 : i64} : tensor<1x8x4xf32>, tensor<2x4x2xf32>, tensor<1x2x2x4x2xf32>, tensor<1x2x4x2xf32> -> tensor<1x8x2xf32>
  return
}

// -----

func.func @combine_types(%a: tensor<1x8x4xf32>, %b: tensor<1x8x4xbf16>, %rho: tensor<2x3xf32>) {
  // expected-error @+1 {{'mmrec.hds_combine' op level0, level1, level2 and the result must have the same type}}
  %o = mmrec.hds_combine %a, %b, %a, %rho : tensor<1x8x4xf32>, tensor<1x8x4xbf16>, tensor<1x8x4xf32>, tensor<2x3xf32> -> tensor<1x8x4xf32>
  return
}

// -----

func.func @combine_rho_rank(%a: tensor<1x8x4xf32>, %rho: tensor<6xf32>) {
  // expected-error @+1 {{'mmrec.hds_combine' op rho must have rank 2, got 'tensor<6xf32>'}}
  %o = mmrec.hds_combine %a, %a, %a, %rho : tensor<1x8x4xf32>, tensor<1x8x4xf32>, tensor<1x8x4xf32>, tensor<6xf32> -> tensor<1x8x4xf32>
  return
}

// -----

func.func @combine_rho_levels(%a: tensor<1x8x4xf32>, %rho: tensor<2x2xf32>) {
  // expected-error @+1 {{'mmrec.hds_combine' op rho dimension 1 (2) must equal the number of HDS levels (3)}}
  %o = mmrec.hds_combine %a, %a, %a, %rho : tensor<1x8x4xf32>, tensor<1x8x4xf32>, tensor<1x8x4xf32>, tensor<2x2xf32> -> tensor<1x8x4xf32>
  return
}

// -----

func.func @combine_groups(%a: tensor<1x8x4xf32>, %rho: tensor<3x3xf32>) {
  // expected-error @+1 {{'mmrec.hds_combine' op rho's 3 groups must divide the 4 channels}}
  %o = mmrec.hds_combine %a, %a, %a, %rho : tensor<1x8x4xf32>, tensor<1x8x4xf32>, tensor<1x8x4xf32>, tensor<3x3xf32> -> tensor<1x8x4xf32>
  return
}

// -----

// expected-error @+1 {{#mmrec.config: field 'num_heads' must be positive, got 0}}
module attributes {mmrec.config = #mmrec.config<name = "m", vocab_size = 256, hidden_dim = 128, num_layers = 2, num_heads = 0, num_memories = 2, memory_size = 32, ffn_dim = 384, chunk_size = 16, max_seq_len = 256, decay_rank = 16, gate = dense, decay_init = 0.99, log_clamp_min = -50.0, log_clamp_max = 0.0, norm_eps = 1.0e-6, tie_embeddings = true>} {}

// -----

// expected-error @+1 {{#mmrec.config: field 'num_heads' (5) must divide hidden_dim (128)}}
module attributes {mmrec.config = #mmrec.config<name = "m", vocab_size = 256, hidden_dim = 128, num_layers = 2, num_heads = 5, num_memories = 2, memory_size = 32, ffn_dim = 384, chunk_size = 16, max_seq_len = 256, decay_rank = 16, gate = dense, decay_init = 0.99, log_clamp_min = -50.0, log_clamp_max = 0.0, norm_eps = 1.0e-6, tie_embeddings = true>} {}

// -----

// expected-error @+1 {{#mmrec.config: field 'num_memories' (3) must divide hidden_dim (128)}}
module attributes {mmrec.config = #mmrec.config<name = "m", vocab_size = 256, hidden_dim = 128, num_layers = 2, num_heads = 4, num_memories = 3, memory_size = 32, ffn_dim = 384, chunk_size = 16, max_seq_len = 256, decay_rank = 16, gate = dense, decay_init = 0.99, log_clamp_min = -50.0, log_clamp_max = 0.0, norm_eps = 1.0e-6, tie_embeddings = true>} {}

// -----

// expected-error @+1 {{#mmrec.config: field 'decay_init' must be in (0, 1), got 1.5}}
module attributes {mmrec.config = #mmrec.config<name = "m", vocab_size = 256, hidden_dim = 128, num_layers = 2, num_heads = 4, num_memories = 2, memory_size = 32, ffn_dim = 384, chunk_size = 16, max_seq_len = 256, decay_rank = 16, gate = dense, decay_init = 1.5, log_clamp_min = -50.0, log_clamp_max = 0.0, norm_eps = 1.0e-6, tie_embeddings = true>} {}

// -----

// expected-error @+1 {{#mmrec.config: fields 'log_clamp_min' (-50.0) and 'log_clamp_max' (1.0) must satisfy min < max <= 0}}
module attributes {mmrec.config = #mmrec.config<name = "m", vocab_size = 256, hidden_dim = 128, num_layers = 2, num_heads = 4, num_memories = 2, memory_size = 32, ffn_dim = 384, chunk_size = 16, max_seq_len = 256, decay_rank = 16, gate = dense, decay_init = 0.99, log_clamp_min = -50.0, log_clamp_max = 1.0, norm_eps = 1.0e-6, tie_embeddings = true>} {}

// -----

// expected-error @+1 {{#mmrec.config: field 'norm_eps' must be positive}}
module attributes {mmrec.config = #mmrec.config<name = "m", vocab_size = 256, hidden_dim = 128, num_layers = 2, num_heads = 4, num_memories = 2, memory_size = 32, ffn_dim = 384, chunk_size = 16, max_seq_len = 256, decay_rank = 16, gate = dense, decay_init = 0.99, log_clamp_min = -50.0, log_clamp_max = 0.0, norm_eps = 0.0, tie_embeddings = true>} {}

// -----

// expected-error @+1 {{#mmrec.config: field 'tie_embeddings' must be true (MMREC_SPEC ties the LM head to the embedding)}}
module attributes {mmrec.config = #mmrec.config<name = "m", vocab_size = 256, hidden_dim = 128, num_layers = 2, num_heads = 4, num_memories = 2, memory_size = 32, ffn_dim = 384, chunk_size = 16, max_seq_len = 256, decay_rank = 16, gate = dense, decay_init = 0.99, log_clamp_min = -50.0, log_clamp_max = 0.0, norm_eps = 1.0e-6, tie_embeddings = false>} {}

// -----

// expected-error @+1 {{'mmrec.config' must be a #mmrec.config attribute}}
module attributes {mmrec.config = 3 : i64} {}

// -----

module {
  // expected-error @+1 {{'mmrec.config' may only be attached to a builtin.module}}
  func.func @f() attributes {mmrec.config = #mmrec.config<name = "m", vocab_size = 256, hidden_dim = 128, num_layers = 2, num_heads = 4, num_memories = 2, memory_size = 32, ffn_dim = 384, chunk_size = 16, max_seq_len = 256, decay_rank = 16, gate = dense, decay_init = 0.99, log_clamp_min = -50.0, log_clamp_max = 0.0, norm_eps = 1.0e-6, tie_embeddings = true>} {
    return
  }
}

// -----

// expected-error @+1 {{unknown mmrec attribute 'mmrec.nope' on an operation}}
module attributes {mmrec.nope = 1 : i64} {}

// -----

// expected-error @+1 {{argument #0: 'mmrec.param' must be a non-empty string naming the parameter}}
func.func @param(%w: tensor<4xf32> {mmrec.param = 3 : i64}) {
  return
}

// -----

// expected-error @+1 {{argument #0: unknown mmrec argument attribute 'mmrec.weight'}}
func.func @param_unknown(%w: tensor<4xf32> {mmrec.weight = "w"}) {
  return
}

// -----

// expected-error @+1 {{'mmrec.kernels' must be an array on a builtin.module}}
module attributes {mmrec.kernels = 1 : i64} {}

// -----

// expected-error @+1 {{'mmrec.train_gated_kernels' must be a string on a builtin.module}}
module attributes {mmrec.train_gated_kernels = ["persistent"]} {}

// -----

func.func @kernel_attr(%x: tensor<4xf32>) {
  // expected-error @+1 {{'mmrec.kernel' must be a string on a mmrec.scan, mmrec.scan_grad, mmrec.gated_recurrence or mmrec.gated_recurrence_grad}}
  %y = mmrec.sigmoid %x {mmrec.kernel = "k"} : tensor<4xf32>
  return
}

// -----

// Sizes whose parameter count would overflow int64 (getParamCount) are
// refused in the verifier, as the trainer's manifest reader does.
// expected-error @+1 {{#mmrec.config: the sizes imply about 1.28e+38 parameters; at most 10^13 are accepted}}
module attributes {mmrec.config = #mmrec.config<name = "m", vocab_size = 256, hidden_dim = 4611686018427387904, num_layers = 1, num_heads = 4, num_memories = 2, memory_size = 32, ffn_dim = 384, chunk_size = 16, max_seq_len = 256, decay_rank = 16, gate = dense, decay_init = 0.99, log_clamp_min = -50.0, log_clamp_max = 0.0, norm_eps = 1.0e-6, tie_embeddings = true>} {}

// -----

// T near INT64_MAX: ⌈T / chunk⌉ without overflow (UBSan found T + chunk - 1).
func.func @chunk_huge_t(%x: tensor<2x9223372036854775806x4xf32>) {
  // expected-error @+1 {{'mmrec.chunk_mean' op result dimension 1 (3) must be 576460752303423488 (batch, ceil(T / chunk), channels)}}
  %y = mmrec.chunk_mean %x {chunk = 16 : i64} : tensor<2x9223372036854775806x4xf32> -> tensor<2x3x4xf32>
  return
}

// -----

#ls = #mmrec.logspace<min = -50.0, max = 0.0>
func.func @write_slots_overflow(%k: tensor<1x8x4xf32>, %S: tensor<4294967296x4x4294967296xf32>, %mu: tensor<4294967296x4xf32>) {
  // expected-error @+1 {{'mmrec.mdi_write' op slots num_memories x mem_dim (4294967296 x 4294967296) overflows int64}}
  %lb, %u = mmrec.mdi_write %k, %k, %S, %mu {chunk = 4 : i64} : tensor<1x8x4xf32>, tensor<1x8x4xf32>, tensor<4294967296x4x4294967296xf32>, tensor<4294967296x4xf32> -> tensor<1x2x2x4xf32, #ls>, tensor<1x2x2x4x2xf32>
  return
}
