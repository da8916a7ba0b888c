// mmrec-build-train-kernels{target=nvptx gated-bf16=true gated-cluster=true}
// at mmrec-small's dense gate (D = 768): each row group of 8 batch rows is
// one thread-block cluster of 16 blocks of 48 channels (3 m-tiles of 16; 3
// k-tiles a warp, all 9 W_g fragments in registers). A step's h_t (forward)
// or a_t (adjoint) goes, rounded to bf16, into the block's 48 columns of one
// of two buffers of the 8 rows, then to the other 15 blocks' copies (15 × 48
// pieces of 16 bytes: st.shared::cluster.v4.b32 at the address mapa gives),
// and the blocks meet at the cluster barrier: no grid barrier (no atomics,
// no spin), no exchange through `sync`. The grid is 16 × ⌈B / 8⌉ (no cap
// of 8 groups, no B ≤ 64 limit: clusters do not wait for each other), the
// kernels are named *_gcl (the runtime launches them in their clusters) and
// carry nvvm.cluster_dim (.reqnctapercluster 16, 1, 1). Shared memory: two
// buffers of 8 padded rows (2 × 8 × 776 bf16, 24,832 B) and the warps'
// partial tiles (16 × 3 × 32 × 4 floats, 24,576 B): 49,408 B.
// RUN: mmrec-opt %s --mmrec-build-train-kernels="target=nvptx gated-bf16=true gated-cluster=true" | FileCheck %s
// RUN: not mmrec-opt %s --mmrec-build-train-kernels="target=nvptx gated-cluster=true" 2>&1 | FileCheck %s --check-prefix=ERR
// RUN: mmrec-opt %s --pass-pipeline="builtin.module(mmrec-build-train-kernels{target=nvptx gated-bf16=true gated-cluster=true},gpu-kernel-outlining,nvvm-attach-target{chip=sm_90},gpu.module(mmrec-approximate-math{ptx=true},convert-math-to-llvm,convert-scf-to-cf,convert-gpu-to-nvvm,convert-nvvm-to-llvm,reconcile-unrealized-casts))" | FileCheck %s --check-prefix=NVVM

// CHECK-LABEL: func.func @train_gated_fwd(
// CHECK-NOT: arith.cmpi ule, %arg8, %c64
// CHECK: %[[B7:.*]] = arith.addi %arg8, %c7
// CHECK-NEXT: %[[GROUPS:.*]] = arith.divui %[[B7]], %c8
// CHECK-NOT: arith.minui
// CHECK: gpu.launch_func @train_gated_kernels::@train_gated_fwd_gcl blocks in (%c16{{.*}}, %[[GROUPS]], %c1{{.*}}) threads in (%c512, %c1{{.*}}, %c1{{.*}}) dynamic_shared_memory_size %c49408_i32

// CHECK: gpu.func @train_gated_fwd_gcl({{.*}}) kernel attributes {known_block_size = array<i32: 512, 1, 1>, nvvm.cluster_dim = array<i32: 16, 1, 1>, nvvm.minctasm = 1 : i32}
// CHECK-NOT: atomic_rmw
// CHECK-NOT: scf.while
// Every block has started (and staged h_{-1}) before any exchange.
// CHECK: nvvm.cluster.arrive {aligned}
// CHECK-NEXT: nvvm.cluster.wait {aligned}
// The step loop: the product on tensor cores, then h_t published.
// CHECK: scf.for %{{.*}} = %c0 to %arg9 step %c1
// CHECK-COUNT-9: nvvm.mma.sync
// CHECK: arith.truncf %{{.*}} : f32 to bf16
// CHECK: scf.for %{{.*}} = %thread_id_x to %c720 step %c512
// CHECK: vector.bitcast %{{.*}} : vector<8xbf16> to vector<4xi32>
// CHECK: mapa.shared::cluster.u32
// CHECK: st.shared::cluster.v4.b32 [$0], {$1, $2, $3, $4};
// CHECK: nvvm.cluster.arrive {aligned}
// CHECK: nvvm.cluster.wait {aligned}
// CHECK-NOT: atomic_rmw
// CHECK: gpu.return

// CHECK: gpu.func @train_gated_bwd_gcl({{.*}}) kernel attributes {known_block_size = array<i32: 512, 1, 1>, nvvm.cluster_dim = array<i32: 16, 1, 1>, nvvm.minctasm = 1 : i32}
// CHECK-NOT: atomic_rmw
// CHECK-NOT: scf.while
// CHECK: nvvm.cluster.arrive {aligned}
// CHECK-NEXT: nvvm.cluster.wait {aligned}
// a_t published, then the cluster barrier, then a_t·W_gᵀ on tensor cores.
// CHECK: scf.for
// CHECK: arith.truncf %{{.*}} : f32 to bf16
// CHECK: scf.for %{{.*}} = %thread_id_x to %c720 step %c512
// CHECK: st.shared::cluster.v4.b32
// CHECK: nvvm.cluster.arrive {aligned}
// CHECK-NEXT: nvvm.cluster.wait {aligned}
// CHECK-COUNT-9: nvvm.mma.sync
// CHECK-NOT: atomic_rmw
// CHECK: gpu.return

// CHECK-LABEL: func.func @train_gated_bwd(
// CHECK-NOT: arith.cmpi ule, %arg14, %c64
// CHECK: func.call @mmrecGemmF32
// CHECK: gpu.launch_func @train_gated_kernels::@train_gated_bwd_gcl blocks in (%c16{{.*}}, %{{.*}}, %c1{{.*}}) threads in (%c512, %c1{{.*}}, %c1{{.*}}) dynamic_shared_memory_size %c49408_i32

// ERR: gated-cluster needs gated-bf16

// NVVM: llvm.func @train_gated_fwd_gcl({{.*}}) attributes {gpu.kernel{{.*}}nvvm.cluster_dim = array<i32: 16, 1, 1>
// NVVM: nvvm.cluster.arrive {aligned}
// NVVM: llvm.func @train_gated_bwd_gcl({{.*}}) attributes {gpu.kernel{{.*}}nvvm.cluster_dim = array<i32: 16, 1, 1>
module attributes {mmrec.config = #mmrec.config<name = "mmrec-small", vocab_size = 32000, hidden_dim = 768, num_layers = 12, num_heads = 12, num_memories = 4, memory_size = 256, ffn_dim = 2048, chunk_size = 64, max_seq_len = 4096, decay_rank = 64, gate = dense, decay_init = 0.99, log_clamp_min = -50.0, log_clamp_max = 0.0, norm_eps = 1.0e-6, tie_embeddings = true>} {
}
