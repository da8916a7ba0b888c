// mmrec-build-train-kernels: every kernel of a training step for the
// module's configuration, each with a C interface, listed in
// mmrec.train_kernels; sizes of the configuration are constants.
// RUN: mmrec-opt %s --mmrec-build-train-kernels | FileCheck %s
// RUN: mmrec-opt %s --mmrec-build-train-kernels | mmrec-opt | FileCheck %s --check-prefix=ROUND
// The read of level 2 takes each chunk's Mem_{c-1} in place: no shifted copy.
// RUN: mmrec-opt %s --mmrec-build-train-kernels | FileCheck %s --check-prefix=NOCOPY
// NOCOPY-NOT: mem_prev
// RUN: mmrec-opt %s --mmrec-build-train-kernels --convert-scf-to-cf --convert-math-to-libm --convert-math-to-llvm --expand-strided-metadata --finalize-memref-to-llvm --convert-arith-to-llvm --convert-cf-to-llvm --convert-func-to-llvm --reconcile-unrealized-casts | FileCheck %s --check-prefix=LLVM

// CHECK: module attributes {mmrec.config = {{.*}}, mmrec.train_kernels = [{arrays = ["x", "w", "y", "y16", "rstd"], indices = ["rows", "bf16"], name = "train_rmsnorm_fwd"}
// CHECK-SAME: {arrays = ["w", "mu", "n", "lb"], indices = ["B", "T"], name = "train_mdi_chunk_fwd"}
// CHECK-SAME: {arrays = ["log_decay", "P", "n", "init", "h", "h16", "final"], indices = ["B", "T", "N", "bf16"], name = "train_mem_scan_fwd"}
// CHECK-SAME: {arrays = ["mems", "init", "grad_h", "grad_final", "mu", "n", "P", "dmu", "dP", "dP16", "dn", "grad_init"], indices = ["B", "T", "bf16"], name = "train_mem_scan_bwd"}
// CHECK: func.func @train_rmsnorm_fwd(%{{.*}}: memref<?xf32>, %{{.*}}: memref<?xf32>, %{{.*}}: memref<?xf32>, %{{.*}}: memref<?xbf16>, %{{.*}}: memref<?xf32>, %{{.*}}: index, %{{.*}}: index) attributes {llvm.emit_c_interface}
// The RMSNorm of D = 24 channels: the mean divides by 24; with its flag
// set it also writes y's bf16 copy.
// CHECK: arith.constant 0.0416666{{[0-9]*}} : f32
// CHECK: scf.if
// CHECK: arith.truncf %{{.*}} : f32 to bf16
// The memory scan forms (1 - beta)·U from the chunk sums P and n, and
// writes the states' bf16 copy (h16) only when its flag is set.
// CHECK: func.func @train_mem_scan_fwd(%{{.*}}: memref<?xf32>, %{{.*}}: memref<?xf32>, %{{.*}}: memref<?xf32>, %{{.*}}: memref<?xf32>, %{{.*}}: memref<?xf32>, %[[H16:arg[0-9]+]]: memref<?xbf16>, %{{.*}}: memref<?xf32>, %{{.*}}: index, %{{.*}}: index, %{{.*}}: index, %[[FLAG:arg[0-9]+]]: index)
// CHECK: %[[CND:[0-9]+]] = arith.cmpi ne, %[[FLAG]], %c0
// CHECK: math.expm1
// CHECK: scf.if %[[CND]] {
// CHECK: arith.truncf %{{.*}} : f32 to bf16
// CHECK: memref.store %{{.*}}, %[[H16]]
// Its adjoint with the chunk write's fused in: dP and its bf16 copy, no
// gradient of (1 - beta)·U stored.
// CHECK: func.func @train_mem_scan_bwd({{.*}}%[[DP16:arg9]]: memref<?xbf16>{{.*}}%[[BF:arg14]]: index)
// CHECK: arith.cmpi ne, %[[BF]], %c0
// CHECK: math.expm1
// CHECK: arith.truncf %{{.*}} : f32 to bf16
// CHECK: memref.store %{{.*}}, %[[DP16]]
// CHECK: func.func @train_embed_fwd(%{{.*}}: memref<?xi32>
// CHECK: func.func @train_xent(%{{.*}}: memref<?xf32>, %{{.*}}: memref<?xi32>
// CHECK: func.func @train_adamw
// The operands of bf16 products: fp32 in, bf16 out, rounded by arith.truncf.
// CHECK: func.func @train_to_bf16(%{{.*}}: memref<?xf32>, %{{.*}}: memref<?xbf16>, %{{.*}}: index)
// CHECK: arith.truncf %{{.*}} : f32 to bf16
// Σx² accumulates in f64 up to its output (no fp32 overflow of the norm).
// CHECK: func.func @train_sumsq(%{{.*}}: memref<?xf32>, %[[SS:.*]]: memref<?xf64>, %{{.*}}: index)
// CHECK-NOT: arith.truncf
// CHECK: memref.store %{{.*}}, %[[SS]]
// CHECK: func.func @train_gated_fwd
// CHECK: func.func @train_gated_bwd
// ROUND: func.func @train_level1_bwd
// LLVM: llvm.func @_mlir_ciface_train_level1_fwd
// LLVM: llvm.func @_mlir_ciface_train_combine_bwd
module attributes {mmrec.config = #mmrec.config<name = "t", vocab_size = 37, hidden_dim = 24, num_layers = 2, num_heads = 3, num_memories = 2, memory_size = 5, ffn_dim = 40, chunk_size = 4, max_seq_len = 64, decay_rank = 3, gate = dense, decay_init = 0.99, log_clamp_min = -50.0, log_clamp_max = 0.0, norm_eps = 1.0e-6, tie_embeddings = true>} {
}

