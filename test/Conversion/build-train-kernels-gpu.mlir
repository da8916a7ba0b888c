// mmrec-build-train-kernels{target=nvptx}: the same kernels as host
// functions whose independent loops are gpu.launch ops (one thread per
// iteration, 256 per block, empty ranges skipped), sums over several
// iterations as atomic adds; the whole lowering to PTX needs no libdevice.
// The level-0 recurrence runs GatedKernels.cpp's persistent kernels where
// W_g's block fits in shared memory (build-train-kernels-gpu-coop.mlir: the
// cooperative ones beyond).
// RUN: mmrec-opt %s --mmrec-build-train-kernels=target=nvptx | FileCheck %s
// RUN: mmrec-opt %s --mmrec-build-train-kernels=target=nvptx --gpu-kernel-outlining | FileCheck %s --check-prefix=OUTLINED
// RUN: mmrec-opt %s --pass-pipeline="builtin.module(mmrec-build-train-kernels{target=nvptx},gpu-kernel-outlining,nvvm-attach-target{chip=sm_90},gpu.module(mmrec-approximate-math{ptx=true},convert-math-to-llvm,convert-scf-to-cf,convert-gpu-to-nvvm,convert-nvvm-to-llvm,reconcile-unrealized-casts))" | FileCheck %s --check-prefix=NVVM

// CHECK: module attributes {gpu.container_module, mmrec.config = {{.*}}, mmrec.train_kernels = [{arrays = ["x", "w", "y", "y16", "rstd"], indices = ["rows", "bf16"], name = "train_rmsnorm_fwd"}
// CHECK-LABEL: func.func @train_rmsnorm_bwd(
// CHECK: %[[POS:.*]] = arith.cmpi ugt, %{{.*}}, %c0
// CHECK: scf.if %[[POS]]
// CHECK: gpu.launch blocks(%{{.*}}) in (%{{.*}} = %{{.*}}, %{{.*}} = %c1{{.*}}, %{{.*}} = %c1{{.*}}) threads(%{{.*}}) in (%{{.*}} = %c256
// dw sums over rows: an atomic add.
// CHECK: memref.atomic_rmw addf
// CHECK-LABEL: func.func @train_xent(
// The loss sums are zeroed by a launch of their own, then accumulated.
// CHECK: gpu.launch
// CHECK: gpu.launch
// CHECK: memref.atomic_rmw addf
// The level-0 recurrence (dense D = 24: W_g fits in one block's shared
// memory): for T > 0 and B > 0 the persistent kernels of GatedKernels.cpp
// (gpu.func in gpu.module @train_gated_kernels, launched with their dynamic
// shared memory), R = 4, 2 or 1 rows a block by B·H; the K-written row
// kernels otherwise.
// CHECK-LABEL: func.func @train_gated_fwd(
// CHECK-DAG: %[[T0:.*]] = arith.cmpi ugt, %arg9, %c0
// CHECK-DAG: %[[B0:.*]] = arith.cmpi ugt, %arg8, %c0
// CHECK: %[[USE:.*]] = arith.andi %[[T0]], %[[B0]]
// CHECK: scf.if %[[USE]] {
// CHECK: gpu.launch_func @train_gated_kernels::@train_gated_fwd_r4 blocks in ({{.*}}) threads in (%c32{{.*}}) dynamic_shared_memory_size %c3168_i32 args(%arg0 : memref<?xf32>, {{.*}}, %arg6 : memref<?xf32>, %arg8 : index, %arg9 : index)
// CHECK: gpu.launch_func @train_gated_kernels::@train_gated_fwd_r2
// CHECK: gpu.launch_func @train_gated_kernels::@train_gated_fwd_r1
// CHECK: } else {
// CHECK: gpu.launch
// CHECK-LABEL: gpu.module @train_gated_kernels
// CHECK: gpu.func @train_gated_fwd_r4({{.*}}) kernel attributes {known_block_size = array<i32: 32, 1, 1>}
// CHECK: gpu.func @train_gated_bwd_r1(
// CHECK-LABEL: func.func @train_gated_bwd(
// CHECK: gpu.launch_func @train_gated_kernels::@train_gated_bwd_r4
// CHECK: } else {
// CHECK: gpu.launch

// OUTLINED: gpu.launch_func @train_rmsnorm_fwd_kernel::@train_rmsnorm_fwd_kernel
// OUTLINED: gpu.module @train_rmsnorm_fwd_kernel

// NVVM-NOT: __nv_
// NVVM: llvm.func @train_xent_kernel
// NVVM-NOT: __nv_
// NVVM: llvm.func @train_gated_fwd_r4
// NVVM-NOT: __nv_
module attributes {mmrec.config = #mmrec.config<name = "t", vocab_size = 37, hidden_dim = 24, num_layers = 2, num_heads = 3, num_memories = 2, memory_size = 5, ffn_dim = 40, chunk_size = 4, max_seq_len = 64, decay_rank = 3, gate = dense, decay_init = 0.99, log_clamp_min = -50.0, log_clamp_max = 0.0, norm_eps = 1.0e-6, tie_embeddings = true>} {
}
