// mmrec-build-train-kernels{target=nvptx gated-bf16=true} at a dense gate of
// D = 1024 (a multiple of 512): the tensor-core cooperative kernels split
// their contraction across thread-block clusters of 2 (GatedKernelSpec::
// cluster). 32 blocks of 32 channels; each block multiplies its half of the
// k-range for the cluster's 64 channels (2 k-tiles a warp, 4 m-tiles, all
// fragments in registers), sends the partial sums for its peer's channels
// with st.shared::cluster (mapa) and meets it at a cluster barrier. The
// kernels carry nvvm.cluster_dim (.reqnctapercluster 2, 1, 1 in the PTX),
// from which the runtime launches them in clusters. Shared memory: 8
// padded bf16 rows of 512 + 8 (8,320 B), the warps' partial tiles (16 × 4
// × 32 × 4 floats, 32,768 B) and the cluster's partial sums (2 × 8 × 32
// floats, 2,048 B): 43,136 B. With D = 768 (mmrec-small) the clusters do
// not apply (build-train-kernels-gpu-coop.mlir).
// RUN: mmrec-opt %s --mmrec-build-train-kernels="target=nvptx gated-bf16=true" | FileCheck %s
// RUN: mmrec-opt %s --pass-pipeline="builtin.module(mmrec-build-train-kernels{target=nvptx gated-bf16=true},gpu-kernel-outlining,nvvm-attach-target{chip=sm_90},gpu.module(mmrec-approximate-math{ptx=true},convert-math-to-llvm,convert-scf-to-cf,convert-gpu-to-nvvm,convert-nvvm-to-llvm,reconcile-unrealized-casts))" | FileCheck %s --check-prefix=NVVM

// CHECK-LABEL: func.func @train_gated_fwd(
// CHECK: gpu.launch_func @train_gated_kernels::@train_gated_fwd_coop blocks in (%c32{{.*}}) threads in (%c512{{.*}}) dynamic_shared_memory_size %c43136_i32
// CHECK-LABEL: gpu.module @train_gated_kernels
// CHECK: gpu.func @train_gated_fwd_coop({{.*}}) kernel attributes {known_block_size = array<i32: 512, 1, 1>, nvvm.cluster_dim = array<i32: 2, 1, 1>
// CHECK: nvvm.mma.sync
// CHECK: mapa.shared::cluster.u32
// CHECK: st.shared::cluster.f32
// CHECK: barrier.cluster.arrive.aligned;
// CHECK: barrier.cluster.wait.aligned;
// CHECK: gpu.func @train_gated_bwd_coop({{.*}}) kernel attributes {known_block_size = array<i32: 512, 1, 1>, nvvm.cluster_dim = array<i32: 2, 1, 1>
// CHECK: nvvm.mma.sync
// CHECK: mapa.shared::cluster.u32
// CHECK: barrier.cluster.wait.aligned;
// CHECK-LABEL: func.func @train_gated_bwd(
// CHECK: gpu.launch_func @train_gated_kernels::@train_gated_bwd_coop blocks in (%c32{{.*}}) threads in (%c512{{.*}}) dynamic_shared_memory_size %c43136_i32

// NVVM: llvm.func @train_gated_fwd_coop({{.*}}) attributes {gpu.kernel{{.*}}nvvm.cluster_dim = array<i32: 2, 1, 1>
// NVVM: llvm.func @train_gated_bwd_coop({{.*}}) attributes {gpu.kernel{{.*}}nvvm.cluster_dim = array<i32: 2, 1, 1>
module attributes {mmrec.config = #mmrec.config<name = "cluster", vocab_size = 256, hidden_dim = 1024, num_layers = 1, num_heads = 8, num_memories = 4, memory_size = 64, ffn_dim = 2048, chunk_size = 64, max_seq_len = 4096, decay_rank = 16, gate = dense, decay_init = 0.99, log_clamp_min = -50.0, log_clamp_max = 0.0, norm_eps = 1.0e-6, tie_embeddings = true>} {
}
