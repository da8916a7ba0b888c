// mmrec-build-train-kernels{target=nvptx}: the same kernels as host
// functions whose independent loops are gpu.launch ops (one thread per
// iteration, 256 per block, empty ranges skipped), sums over several
// iterations as atomic adds, the recurrence one launch per time step; the
// whole lowering to PTX needs no libdevice.
// RUN: mmrec-opt %s --mmrec-build-train-kernels=target=nvptx | FileCheck %s
// RUN: mmrec-opt %s --mmrec-build-train-kernels=target=nvptx --gpu-kernel-outlining | FileCheck %s --check-prefix=OUTLINED
// RUN: mmrec-opt %s --pass-pipeline="builtin.module(mmrec-build-train-kernels{target=nvptx},gpu-kernel-outlining,nvvm-attach-target{chip=sm_90},gpu.module(mmrec-approximate-math{ptx=true},convert-math-to-llvm,convert-scf-to-cf,convert-gpu-to-nvvm,convert-nvvm-to-llvm,reconcile-unrealized-casts))" | FileCheck %s --check-prefix=NVVM

// CHECK: module attributes {gpu.container_module, mmrec.config = {{.*}}, mmrec.train_kernels = [{arrays = ["x", "w", "y", "rstd"], indices = ["rows"], name = "train_rmsnorm_fwd"}
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
// The recurrence: a host loop over time steps around one launch each.
// CHECK-LABEL: func.func @train_gated_fwd(
// CHECK: scf.for
// CHECK: gpu.launch
// CHECK-LABEL: func.func @train_mem_scan_bwd(

// OUTLINED: gpu.launch_func @train_rmsnorm_fwd_kernel::@train_rmsnorm_fwd_kernel
// OUTLINED: gpu.module @train_rmsnorm_fwd_kernel

// NVVM-NOT: __nv_
// NVVM: llvm.func @train_xent_kernel
// NVVM-NOT: __nv_
module attributes {mmrec.config = #mmrec.config<name = "t", vocab_size = 37, hidden_dim = 24, num_layers = 2, num_heads = 3, num_memories = 2, memory_size = 5, ffn_dim = 40, chunk_size = 4, max_seq_len = 64, decay_rank = 3, gate = dense, decay_init = 0.99, log_clamp_min = -50.0, log_clamp_max = 0.0, norm_eps = 1.0e-6, tie_embeddings = true>} {
}
