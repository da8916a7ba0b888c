// mmrec-build-train-kernels{target=nvptx} at mmrec-small's dense gate (D =
// 768, too large for one block's shared memory): for 0 < T and 0 < B ≤ 64
// the level-0 recurrence runs the cooperative FP32-FMA kernels of
// GatedKernels.cpp (64 blocks of 12 channels, 1020 threads, a grid barrier
// a step on the row group's counter; the runtime launches *_coop kernels
// cooperatively, in as many of the requested row groups as the device holds).
// The adjoint first forms the pre-activations h_{t-1}·W_g with two cuBLASLt
// products that the host code calls through the runtime (mmrecGemmF32:
// fp32, TF32 with gated-bf16) into grad_z (t > 0) and grad_pre0 (t = 0),
// which the kernel reads before overwriting them; its carried gradient
// lives in grad_init. Larger B and T = 0 take the K-written row kernels.
// RUN: mmrec-opt %s --mmrec-build-train-kernels=target=nvptx | FileCheck %s
// RUN: mmrec-opt %s --mmrec-build-train-kernels=target=nvptx --gpu-kernel-outlining | FileCheck %s --check-prefix=OUTLINED
// RUN: mmrec-opt %s --mmrec-build-train-kernels="target=nvptx gated-bf16=true" | FileCheck %s --check-prefix=BF16
// RUN: not mmrec-opt %s --mmrec-build-train-kernels=gated-bf16=true 2>&1 | FileCheck %s --check-prefix=ERR
// RUN: mmrec-opt %s --pass-pipeline="builtin.module(mmrec-build-train-kernels{target=nvptx},gpu-kernel-outlining,nvvm-attach-target{chip=sm_90},gpu.module(mmrec-approximate-math{ptx=true},convert-math-to-llvm,convert-scf-to-cf,convert-gpu-to-nvvm,convert-nvvm-to-llvm,reconcile-unrealized-casts))" | FileCheck %s --check-prefix=NVVM

// CHECK-LABEL: func.func private @mmrecGemmF32(index, index, index, index, index, index, index, index, index, index, index, index, index, index)
// CHECK-LABEL: func.func @train_gated_fwd(
// CHECK-DAG: %[[T0:.*]] = arith.cmpi ugt, %arg9, %c0
// CHECK-DAG: %[[B0:.*]] = arith.cmpi ugt, %arg8, %c0
// CHECK: %[[TB:.*]] = arith.andi %[[T0]], %[[B0]]
// CHECK: %[[SMALL:.*]] = arith.cmpi ule, %arg8, %c64
// CHECK: arith.andi %[[TB]], %[[SMALL]]
// h and init are staged with 16-byte loads: both must be aligned.
// CHECK: %[[PH:.*]] = memref.extract_aligned_pointer_as_index %arg5
// CHECK: arith.remui %[[PH]], %c16
// CHECK: %[[PI:.*]] = memref.extract_aligned_pointer_as_index %arg4
// CHECK: arith.remui %[[PI]], %c16
// CHECK: %[[USE:.*]] = arith.andi
// CHECK-NEXT: scf.if %[[USE]] {
// sync[0..B) := 0 (the row groups' barrier counters are words 0, 8, ...),
// then the cooperative launch in min(ceil(B / 8), 8) row groups (gridDim.y).
// CHECK: gpu.launch
// CHECK: memref.store %{{.*}}, %arg7[
// CHECK: %[[B7:.*]] = arith.addi %arg8, %c7
// CHECK: %[[B8:.*]] = arith.divui %[[B7]], %c8{{.*}}
// CHECK: %[[GROUPS:.*]] = arith.minui %[[B8]], %c8{{.*}}
// CHECK: gpu.launch_func @train_gated_kernels::@train_gated_fwd_coop blocks in (%c64{{.*}}, %[[GROUPS]], %c1{{.*}}) threads in (%c1020, %c1{{.*}}, %c1{{.*}}) dynamic_shared_memory_size %c57216_i32 args(%arg0 : memref<?xf32>, %arg1 : memref<?xf32>, %arg2 : memref<?xf32>, %arg3 : memref<?xf32>, %arg4 : memref<?xf32>, %arg5 : memref<?xf32>, %arg6 : memref<?xf32>, %arg7 : memref<?xi32>, %arg8 : index, %arg9 : index)
// CHECK: } else {
// CHECK: gpu.launch
// CHECK-LABEL: gpu.module @train_gated_kernels
// One block per SM suffices (ptxas may use 64 registers a thread).
// CHECK: gpu.func @train_gated_fwd_coop({{.*}}) kernel attributes {known_block_size = array<i32: 1020, 1, 1>, nvvm.minctasm = 1 : i32}
// The default keeps every product in fp32: no tensor cores, no rounding.
// CHECK-NOT: nvvm.mma.sync
// CHECK-NOT: arith.truncf
// The row group (blockIdx.y of gridDim.y) and its barrier counter, word
// 8·group of sync.
// CHECK: %[[GRP:.*]] = gpu.block_id{{ +}}y
// CHECK: %[[NG:.*]] = gpu.grid_dim{{ +}}y
// CHECK: arith.muli %[[GRP]], %c8
// CHECK: arith.muli %[[NG]], %c8
// CHECK: %[[CNT:.*]] = arith.muli %[[GRP]], %c8
// The grid barrier: an atomic add on the group's counter, a volatile spin.
// CHECK: memref.atomic_rmw addi %{{.*}}, %{{.*}}[%[[CNT]]]
// CHECK: scf.while
// CHECK: llvm.load volatile
// CHECK: gpu.func @train_gated_bwd_coop({{.*}}) kernel attributes {known_block_size = array<i32: 1020, 1, 1>, nvvm.minctasm = 1 : i32}
// CHECK-NOT: nvvm.mma.sync
// CHECK-LABEL: func.func @train_gated_bwd(
// CHECK: %[[SMALLB:.*]] = arith.cmpi ule, %arg14, %c64
// CHECK: memref.extract_aligned_pointer_as_index %arg5
// CHECK: memref.extract_aligned_pointer_as_index %arg4
// CHECK: memref.extract_aligned_pointer_as_index %arg10
// CHECK: memref.extract_aligned_pointer_as_index %arg11
// CHECK: scf.if
// CHECK: gpu.launch
// CHECK: memref.store %{{.*}}, %arg13[
// The pre-activation products (m, n, k, A, lda, strideA, B, ldb, strideB,
// C, ldc, strideC, batch, tf32): for T > 1 a batch of B: h[b, 0..T-2]·W_g
// into grad_z from row 1 (+3072 bytes), batch stride T·D; then init·W_g
// into grad_pre0. fp32 here (no gated-bf16).
// CHECK: %[[TD:.*]] = arith.muli %arg15, %c768
// CHECK: %[[TM1:.*]] = arith.subi %arg15, %c1
// CHECK: %[[FP32:.*]] = arith.constant 0 : index
// CHECK-NEXT: %[[MORE:.*]] = arith.cmpi ugt, %[[TM1]], %c0
// CHECK: scf.if %[[MORE]] {
// CHECK: %[[PZ:.*]] = memref.extract_aligned_pointer_as_index %arg8
// CHECK: %[[ROW1:.*]] = arith.addi %[[PZ]], %c3072
// CHECK: %[[PH:.*]] = memref.extract_aligned_pointer_as_index %arg5
// CHECK: %[[PW:.*]] = memref.extract_aligned_pointer_as_index %arg2
// CHECK: func.call @mmrecGemmF32(%[[TM1]], %c768, %c768, %[[PH]], %c768, %[[TD]], %[[PW]], %c768, %c0{{.*}}, %[[ROW1]], %c768, %[[TD]], %arg14, %[[FP32]])
// CHECK: }
// CHECK: %[[PI:.*]] = memref.extract_aligned_pointer_as_index %arg4
// CHECK: %[[PW2:.*]] = memref.extract_aligned_pointer_as_index %arg2
// CHECK: %[[P0:.*]] = memref.extract_aligned_pointer_as_index %arg11
// CHECK: func.call @mmrecGemmF32(%arg14, %c768, %c768, %[[PI]], %c768, %c0{{.*}}, %[[PW2]], %c768, %c0{{.*}}, %[[P0]], %c768, %c0{{.*}}, %c1{{.*}}, %[[FP32]])
// pact = grad_z (%arg8), pact0 = grad_pre0 (%arg11), gbuf = grad_init (%arg12); steps [0, T), capacity T.
// CHECK: gpu.launch_func @train_gated_kernels::@train_gated_bwd_coop blocks in (%c64{{.*}}) threads in (%c1020{{.*}}) dynamic_shared_memory_size %c57216_i32 args({{.*}}%arg12 : memref<?xf32>, %arg13 : memref<?xi32>, %arg8 : memref<?xf32>, %arg11 : memref<?xf32>, %arg12 : memref<?xf32>, %arg14 : index, %arg15 : index, %c0{{.*}} : index, %arg15 : index, %arg15 : index)
// CHECK: } else {
// CHECK: gpu.launch

// gated-bf16: the cooperative kernels' products on tensor cores (24 blocks
// of 32 channels, 512 threads; W_g's slice as bf16 mma fragments, the
// staged fp32 rows rounded to bf16); the arrays stay fp32.
// BF16-LABEL: func.func @train_gated_fwd(
// BF16: gpu.launch_func @train_gated_kernels::@train_gated_fwd_coop blocks in (%c24{{.*}}) threads in (%c512{{.*}}) dynamic_shared_memory_size %c28800_i32 args(%arg0 : memref<?xf32>,
// BF16-LABEL: gpu.module @train_gated_kernels
// BF16: gpu.func @train_gated_fwd_coop({{.*}}memref<?xf32>{{.*}}) kernel attributes {known_block_size = array<i32: 512, 1, 1>, nvvm.minctasm = 1 : i32}
// The register-resident variant, taken for B <= 8 when `sync` has room for
// the bf16 exchange (its size is read from the descriptor), stages h_{t-1}
// from the exchange (8 bf16 a load) and publishes h_t there.
// BF16: memref.dim %{{.*}} : memref<?xi32>
// BF16: arith.truncf %{{.*}} : f32 to bf16
// BF16: llvm.load volatile {{.*}} -> vector<8xbf16>
// BF16: llvm.load volatile {{.*}} -> vector<4xf32>
// BF16: arith.truncf %{{.*}} : vector<4xf32> to vector<4xbf16>
// BF16: nvvm.mma.sync {{.*}}multiplicandAPtxType = #nvvm.mma_type<bf16>
// BF16: llvm.store {{.*}} : bf16, !llvm.ptr
// BF16: gpu.func @train_gated_bwd_coop(
// BF16: memref.dim %{{.*}} : memref<?xi32>
// BF16: llvm.store {{.*}} : bf16, !llvm.ptr
// BF16: llvm.load volatile {{.*}} -> vector<8xbf16>
// BF16: nvvm.mma.sync
// BF16-LABEL: func.func @train_gated_bwd(
// With tensor-core level-0 products the pre-activations are TF32 (flag 1).
// BF16: arith.subi %arg15, %c1
// BF16-NEXT: %[[TF32:.*]] = arith.constant 1 : index
// BF16-NEXT: arith.cmpi ugt
// BF16: func.call @mmrecGemmF32({{.*}}, %arg14, %[[TF32]])
// BF16: gpu.launch_func @train_gated_kernels::@train_gated_bwd_coop blocks in (%c24{{.*}}) threads in (%c512{{.*}})

// ERR: gated-bf16 applies to target=nvptx

// OUTLINED-LABEL: func.func @train_gated_bwd(
// OUTLINED-NOT: gpu.launch_func @train_gated_bwd_pact
// OUTLINED: func.call @mmrecGemmF32
// OUTLINED: gpu.launch_func @train_gated_kernels::@train_gated_bwd_coop

// NVVM-NOT: __nv_
// NVVM: llvm.func @train_gated_fwd_coop
// NVVM-NOT: __nv_
// NVVM: llvm.func @train_gated_bwd_coop
// NVVM-NOT: __nv_
module attributes {mmrec.config = #mmrec.config<name = "mmrec-small", vocab_size = 32000, hidden_dim = 768, num_layers = 12, num_heads = 12, num_memories = 4, memory_size = 256, ffn_dim = 2048, chunk_size = 64, max_seq_len = 4096, decay_rank = 64, gate = dense, decay_init = 0.99, log_clamp_min = -50.0, log_clamp_max = 0.0, norm_eps = 1.0e-6, tie_embeddings = true>} {
}
