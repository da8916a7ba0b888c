// Round trip of every op and attribute of the dialect, in the custom and
// the generic form.
// RUN: mmrec-opt %s | mmrec-opt | FileCheck %s
// RUN: mmrec-opt %s --mlir-print-op-generic | mmrec-opt | FileCheck %s

// CHECK: module attributes {mmrec.config = #mmrec.config<name = "rt", vocab_size = 256, hidden_dim = 8, num_layers = 1, num_heads = 2, num_memories = 2, memory_size = 4, ffn_dim = 12, chunk_size = 4, max_seq_len = 64, decay_rank = 2, gate = per_head, decay_init = 0.99, log_clamp_min = -50.0, log_clamp_max = 0.0, norm_eps = 1.0e-06, tie_embeddings = true>}
module attributes {mmrec.config = #mmrec.config<name = "rt", vocab_size = 256, hidden_dim = 8, num_layers = 1, num_heads = 2, num_memories = 2, memory_size = 4, ffn_dim = 12, chunk_size = 4, max_seq_len = 64, decay_rank = 2, gate = per_head, decay_init = 0.99, log_clamp_min = -50.0, log_clamp_max = 0.0, norm_eps = 1.0e-6, tie_embeddings = true>} {

// CHECK-LABEL: func.func @elementwise(
func.func @elementwise(%x: tensor<2x8xf32>, %w: tensor<8xf32>, %b: tensor<?x?x12xbf16>) {
  // CHECK: mmrec.sigmoid %{{.*}} : tensor<2x8xf32>
  %0 = mmrec.sigmoid %x : tensor<2x8xf32>
  // CHECK: mmrec.log_sigmoid %{{.*}} : tensor<2x8xf32>
  %1 = mmrec.log_sigmoid %x : tensor<2x8xf32>
  // CHECK: mmrec.swiglu %{{.*}}, %{{.*}} : tensor<?x?x12xbf16>
  %2 = mmrec.swiglu %b, %b : tensor<?x?x12xbf16>
  // CHECK: mmrec.rms_norm %{{.*}}, %{{.*}} : tensor<2x8xf32>, tensor<8xf32>
  %3 = mmrec.rms_norm %x, %w : tensor<2x8xf32>, tensor<8xf32>
  // CHECK: mmrec.rms_norm %{{.*}}, %{{.*}} {eps = 1.000000e-05 : f64}
  %4 = mmrec.rms_norm %x, %w {eps = 1.0e-5 : f64} : tensor<2x8xf32>, tensor<8xf32>
  // CHECK: mmrec.group_rms_norm %{{.*}} {groups = 2 : i64} : tensor<2x8xf32>
  %5 = mmrec.group_rms_norm %x {groups = 2 : i64} : tensor<2x8xf32>
  // CHECK: mmrec.log_decay %{{.*}} : tensor<2x8xf32> -> tensor<2x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>
  %6 = mmrec.log_decay %x : tensor<2x8xf32> -> tensor<2x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>
  // CHECK: mmrec.log_decay %{{.*}} {clamp_max = -1.000000e-03 : f64, clamp_min = -2.000000e+01 : f64} : tensor<2x8xf32> -> tensor<2x8xf32, #mmrec.logspace<min = -20.0, max = -0.001>>
  %7 = mmrec.log_decay %x {clamp_min = -20.0 : f64, clamp_max = -0.001 : f64} : tensor<2x8xf32> -> tensor<2x8xf32, #mmrec.logspace<min = -20.0, max = -0.001>>
  // CHECK: mmrec.exp_decay %{{.*}} : tensor<2x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>> -> tensor<2x8xf32>
  %8 = mmrec.exp_decay %6 : tensor<2x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>> -> tensor<2x8xf32>
  return
}

// CHECK-LABEL: func.func @products(
func.func @products(%u: tensor<?x?x8xf32>, %W: tensor<8x12xf32>, %bias: tensor<12xf32>, %E: tensor<256x8xf32>,
                    %h: tensor<3x8xf32>, %Wg: tensor<2x4x4xf32>, %bg: tensor<8xf32>, %ids: tensor<?x?xi32>) {
  // CHECK: mmrec.matmul %{{.*}}, %{{.*}} : tensor<?x?x8xf32>, tensor<8x12xf32> -> tensor<?x?x12xf32>
  %0 = mmrec.matmul %u, %W : tensor<?x?x8xf32>, tensor<8x12xf32> -> tensor<?x?x12xf32>
  // CHECK: mmrec.matmul %{{.*}}, %{{.*}} bias %{{.*}} : tensor<?x?x8xf32>, tensor<8x12xf32>, tensor<12xf32> -> tensor<?x?x12xf32>
  %1 = mmrec.matmul %u, %W bias %bias : tensor<?x?x8xf32>, tensor<8x12xf32>, tensor<12xf32> -> tensor<?x?x12xf32>
  // CHECK: mmrec.matmul %{{.*}}, %{{.*}} {transpose_rhs} : tensor<?x?x8xf32>, tensor<256x8xf32> -> tensor<?x?x256xf32>
  %2 = mmrec.matmul %u, %E {transpose_rhs} : tensor<?x?x8xf32>, tensor<256x8xf32> -> tensor<?x?x256xf32>
  // CHECK: mmrec.block_diag_matmul %{{.*}}, %{{.*}} bias %{{.*}} : tensor<3x8xf32>, tensor<2x4x4xf32>, tensor<8xf32> -> tensor<3x8xf32>
  %3 = mmrec.block_diag_matmul %h, %Wg bias %bg : tensor<3x8xf32>, tensor<2x4x4xf32>, tensor<8xf32> -> tensor<3x8xf32>
  // CHECK: mmrec.block_diag_matmul %{{.*}}, %{{.*}} : tensor<3x8xf32>, tensor<2x4x4xf32> -> tensor<3x8xf32>
  %4 = mmrec.block_diag_matmul %h, %Wg : tensor<3x8xf32>, tensor<2x4x4xf32> -> tensor<3x8xf32>
  // CHECK: mmrec.embedding %{{.*}}[%{{.*}}] : tensor<256x8xf32>, tensor<?x?xi32> -> tensor<?x?x8xf32>
  %5 = mmrec.embedding %E[%ids] : tensor<256x8xf32>, tensor<?x?xi32> -> tensor<?x?x8xf32>
  // CHECK: mmrec.cross_entropy %{{.*}}, %{{.*}} : tensor<?x?x256xf32>, tensor<?x?xi32> -> tensor<f32>
  %6 = mmrec.cross_entropy %2, %ids : tensor<?x?x256xf32>, tensor<?x?xi32> -> tensor<f32>
  return
}

// CHECK-LABEL: func.func @recurrences(
func.func @recurrences(%z: tensor<3x5x8xf32>, %g: tensor<3x5x8xf32>, %h0: tensor<3x8xf32>, %c0: tensor<3x8xf32>,
                       %Wg: tensor<2x4x4xf32>, %bg: tensor<8xf32>) {
  // Two inputs, two carried states, reverse.
  // CHECK: %{{.+}}:2, %{{.+}}:2 = mmrec.recurrence reverse ins(%{{.*}}, %{{.*}} : tensor<3x5x8xf32>, tensor<3x5x8xf32>) init(%{{.*}}, %{{.*}} : tensor<3x8xf32>, tensor<3x8xf32>) -> (tensor<3x5x8xf32>, tensor<3x5x8xf32>), (tensor<3x8xf32>, tensor<3x8xf32>) {
  // CHECK: ^bb0(%{{.*}}: tensor<3x8xf32>, %{{.*}}: tensor<3x8xf32>, %{{.*}}: tensor<3x8xf32>, %{{.*}}: tensor<3x8xf32>):
  // CHECK:   mmrec.block_diag_matmul
  // CHECK:   mmrec.yield %{{.*}}, %{{.*}} : tensor<3x8xf32>, tensor<3x8xf32>
  %seq:2, %fin:2 = mmrec.recurrence reverse ins(%z, %g : tensor<3x5x8xf32>, tensor<3x5x8xf32>) init(%h0, %c0 : tensor<3x8xf32>, tensor<3x8xf32>)
      -> (tensor<3x5x8xf32>, tensor<3x5x8xf32>), (tensor<3x8xf32>, tensor<3x8xf32>) {
  ^bb0(%zt: tensor<3x8xf32>, %gt: tensor<3x8xf32>, %h: tensor<3x8xf32>, %c: tensor<3x8xf32>):
    %p = mmrec.block_diag_matmul %h, %Wg bias %bg : tensor<3x8xf32>, tensor<2x4x4xf32>, tensor<8xf32> -> tensor<3x8xf32>
    %s = mmrec.sigmoid %p : tensor<3x8xf32>
    %a = arith.mulf %zt, %s : tensor<3x8xf32>
    %b = arith.mulf %gt, %h : tensor<3x8xf32>
    %hn = arith.addf %a, %b : tensor<3x8xf32>
    %cn = arith.addf %c, %hn : tensor<3x8xf32>
    mmrec.yield %hn, %cn : tensor<3x8xf32>, tensor<3x8xf32>
  }
  return
}

// CHECK-LABEL: func.func @scans(
func.func @scans(%l: tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, %b: tensor<?x?x8xbf16>, %h0: tensor<?x8xbf16>,
                 %ls: tensor<2x3x4xf32>, %u: tensor<2x3x4x5xf32>, %m0: tensor<2x4x5xf32>) {
  // CHECK: mmrec.scan %{{.*}}, %{{.*}} init %{{.*}} : tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<?x?x8xbf16>, tensor<?x8xbf16> -> tensor<?x?x8xbf16>, tensor<?x8xbf16>
  %h1, %f1 = mmrec.scan %l, %b init %h0 : tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<?x?x8xbf16>, tensor<?x8xbf16> -> tensor<?x?x8xbf16>, tensor<?x8xbf16>
  // CHECK: mmrec.scan reverse %{{.*}}, %{{.*}} : tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<?x?x8xbf16> -> tensor<?x?x8xbf16>, tensor<?x8xbf16>
  %h2, %f2 = mmrec.scan reverse %l, %b : tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<?x?x8xbf16> -> tensor<?x?x8xbf16>, tensor<?x8xbf16>
  // The level-2 form: one decay per slot, broadcast over 5 channels.
  // CHECK: mmrec.scan %{{.*}}, %{{.*}} init %{{.*}} {clamp_min = -1.000000e+01 : f64} : tensor<2x3x4xf32>, tensor<2x3x4x5xf32>, tensor<2x4x5xf32> -> tensor<2x3x4x5xf32>, tensor<2x4x5xf32>
  %h3, %f3 = mmrec.scan %ls, %u init %m0 {clamp_min = -10.0 : f64} : tensor<2x3x4xf32>, tensor<2x3x4x5xf32>, tensor<2x4x5xf32> -> tensor<2x3x4x5xf32>, tensor<2x4x5xf32>
  // CHECK: mmrec.scan_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} init %{{.*}} : {{.*}} -> tensor<?x?x8xf32>, tensor<?x?x8xbf16>, tensor<?x8xbf16>
  %d1, %d2, %d3 = mmrec.scan_grad %l, %h1, %h1, %f1 init %h0 : tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<?x?x8xbf16>, tensor<?x?x8xbf16>, tensor<?x8xbf16>, tensor<?x8xbf16> -> tensor<?x?x8xf32>, tensor<?x?x8xbf16>, tensor<?x8xbf16>
  // CHECK: mmrec.scan_grad reverse %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : {{.*}} -> tensor<?x?x8xf32>, tensor<?x?x8xbf16>
  %e1, %e2 = mmrec.scan_grad reverse %l, %h2, %h2, %f2 : tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<?x?x8xbf16>, tensor<?x?x8xbf16>, tensor<?x8xbf16> -> tensor<?x?x8xf32>, tensor<?x?x8xbf16>
  return
}

// CHECK-LABEL: func.func @gated(
func.func @gated(%z: tensor<?x?x8xbf16>, %l: tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>,
                 %W: tensor<8x8xbf16>, %Wh: tensor<2x4x4xbf16>, %b: tensor<8xbf16>, %h0: tensor<?x8xbf16>) {
  // CHECK: mmrec.gated_recurrence %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} init %{{.*}} : tensor<?x?x8xbf16>, tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<8x8xbf16>, tensor<8xbf16>, tensor<?x8xbf16> -> tensor<?x?x8xbf16>, tensor<?x8xbf16>
  %h, %hT = mmrec.gated_recurrence %z, %l, %W, %b init %h0 : tensor<?x?x8xbf16>, tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<8x8xbf16>, tensor<8xbf16>, tensor<?x8xbf16> -> tensor<?x?x8xbf16>, tensor<?x8xbf16>
  // CHECK: mmrec.gated_recurrence %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<?x?x8xbf16>, tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<2x4x4xbf16>, tensor<8xbf16> -> tensor<?x?x8xbf16>, tensor<?x8xbf16>
  %h2, %hT2 = mmrec.gated_recurrence %z, %l, %Wh, %b : tensor<?x?x8xbf16>, tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<2x4x4xbf16>, tensor<8xbf16> -> tensor<?x?x8xbf16>, tensor<?x8xbf16>
  // CHECK: mmrec.gated_recurrence_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} init %{{.*}} : {{.*}} -> tensor<?x?x8xbf16>, tensor<?x?x8xf32>, tensor<8x8xbf16>, tensor<8xbf16>, tensor<?x8xbf16>
  %d:5 = mmrec.gated_recurrence_grad %z, %l, %W, %b, %h, %h, %hT init %h0 : tensor<?x?x8xbf16>, tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<8x8xbf16>, tensor<8xbf16>, tensor<?x?x8xbf16>, tensor<?x?x8xbf16>, tensor<?x8xbf16>, tensor<?x8xbf16> -> tensor<?x?x8xbf16>, tensor<?x?x8xf32>, tensor<8x8xbf16>, tensor<8xbf16>, tensor<?x8xbf16>
  // CHECK: mmrec.gated_recurrence_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : {{.*}} -> tensor<?x?x8xbf16>, tensor<?x?x8xf32>, tensor<2x4x4xbf16>, tensor<8xbf16>{{$}}
  %e:4 = mmrec.gated_recurrence_grad %z, %l, %Wh, %b, %h2, %h2, %hT2 : tensor<?x?x8xbf16>, tensor<?x?x8xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<2x4x4xbf16>, tensor<8xbf16>, tensor<?x?x8xbf16>, tensor<?x?x8xbf16>, tensor<?x8xbf16> -> tensor<?x?x8xbf16>, tensor<?x?x8xf32>, tensor<2x4x4xbf16>, tensor<8xbf16>
  return
}

// CHECK-LABEL: func.func @memory(
func.func @memory(%q: tensor<2x33x8xf32>, %k: tensor<2x33x8xf32>, %v: tensor<2x33x8xf32>, %S: tensor<2x4x4xf32>,
                  %mu: tensor<2x4xf32>, %m0: tensor<2x2x4x4xf32>, %rho: tensor<2x3xf32>) {
  // 33 tokens in chunks of 16: 3 chunks, the last one partial.
  // CHECK: mmrec.chunk_mean %{{.*}} {chunk = 16 : i64} : tensor<2x33x8xf32> -> tensor<2x3x8xf32>
  %K1 = mmrec.chunk_mean %k {chunk = 16 : i64} : tensor<2x33x8xf32> -> tensor<2x3x8xf32>
  %V1 = mmrec.chunk_mean %v {chunk = 16 : i64} : tensor<2x33x8xf32> -> tensor<2x3x8xf32>
  // CHECK: mmrec.chunk_attend %{{.*}}, %{{.*}}, %{{.*}} {chunk = 16 : i64, groups = 2 : i64} : tensor<2x33x8xf32>, tensor<2x3x8xf32>, tensor<2x3x8xf32> -> tensor<2x33x8xf32>
  %y1 = mmrec.chunk_attend %q, %K1, %V1 {chunk = 16 : i64, groups = 2 : i64} : tensor<2x33x8xf32>, tensor<2x3x8xf32>, tensor<2x3x8xf32> -> tensor<2x33x8xf32>
  // CHECK: mmrec.mdi_write %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {chunk = 16 : i64} : tensor<2x33x8xf32>, tensor<2x33x8xf32>, tensor<2x4x4xf32>, tensor<2x4xf32> -> tensor<2x3x2x4xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<2x3x2x4x4xf32>
  %lb, %wu = mmrec.mdi_write %k, %v, %S, %mu {chunk = 16 : i64} : tensor<2x33x8xf32>, tensor<2x33x8xf32>, tensor<2x4x4xf32>, tensor<2x4xf32> -> tensor<2x3x2x4xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<2x3x2x4x4xf32>
  %mems, %memT = mmrec.scan %lb, %wu init %m0 : tensor<2x3x2x4xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<2x3x2x4x4xf32>, tensor<2x2x4x4xf32> -> tensor<2x3x2x4x4xf32>, tensor<2x2x4x4xf32>
  // CHECK: mmrec.mdi_read %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} {chunk = 16 : i64} : tensor<2x33x8xf32>, tensor<2x4x4xf32>, tensor<2x3x2x4x4xf32>, tensor<2x2x4x4xf32> -> tensor<2x33x8xf32>
  %y2 = mmrec.mdi_read %q, %S, %mems, %m0 {chunk = 16 : i64} : tensor<2x33x8xf32>, tensor<2x4x4xf32>, tensor<2x3x2x4x4xf32>, tensor<2x2x4x4xf32> -> tensor<2x33x8xf32>
  // CHECK: mmrec.hds_combine %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} : tensor<2x33x8xf32>, tensor<2x33x8xf32>, tensor<2x33x8xf32>, tensor<2x3xf32> -> tensor<2x33x8xf32>
  %o = mmrec.hds_combine %q, %y1, %y2, %rho : tensor<2x33x8xf32>, tensor<2x33x8xf32>, tensor<2x33x8xf32>, tensor<2x3xf32> -> tensor<2x33x8xf32>
  return
}

// CHECK-LABEL: func.func @params(
// CHECK-SAME: {mmrec.param = "W_q"}
func.func @params(%w: tensor<8x8xf32> {mmrec.param = "W_q"}) {
  return
}
}
