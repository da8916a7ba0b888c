// An unknown target is a located error.
// RUN: not mmrec-opt %s --mmrec-build-train-kernels=target=rocm -o /dev/null 2>&1 | FileCheck %s

// CHECK: build-train-kernels-target-error.mlir:[[@LINE+1]]:1: error: mmrec-build-train-kernels: unknown target 'rocm' (expected cpu or nvptx)
module attributes {mmrec.config = #mmrec.config<name = "t", vocab_size = 37, hidden_dim = 24, num_layers = 2, num_heads = 3, num_memories = 2, memory_size = 5, ffn_dim = 40, chunk_size = 4, max_seq_len = 64, decay_rank = 3, gate = dense, decay_init = 0.99, log_clamp_min = -50.0, log_clamp_max = 0.0, norm_eps = 1.0e-6, tie_embeddings = true>} {
}
