// RUN: mmrec-opt %s --mmrec-outline-scan-kernels=target=nvptx | FileCheck %s --check-prefix=GPU
// RUN: mmrec-opt %s --mmrec-outline-scan-kernels=target=cpu | FileCheck %s --check-prefix=CPU

// Per-head gate, 2 heads of 64, bf16: three block heights, their shared
// memory (W's 64 x 65 fp32 block + 2·R·64 states) recorded for the launcher.
// GPU: mmrec.kernels = [{args = ["z", "log_decay", "gate", "bias", "init", "h", "final"]
// GPU-SAME: heads = 2 : i64, mma = false, name = "fwd_kernel_r1", op = "gated_recurrence", per_head = true, public_name = "fwd_kernel", rows = 1 : i64, shared_bytes = 17152 : i64
// GPU-SAME: name = "fwd_kernel_r2"
// GPU-SAME: name = "fwd_kernel_r4"
// A dense bf16 gate of 512 channels does not fit one block: the cooperative
// kernel, its products on tensor cores.
// GPU-SAME: channels_per_block = 32 : i64, {{.*}}cooperative = true, {{.*}}mma = true, name = "wide_kernel_coop"
// GPU: mmrec.gated_recurrence {{.*}}{mmrec.kernel = "fwd_kernel"}
// GPU: gpu.func @fwd_kernel_r1(%{{.*}}: memref<?xbf16>, %{{.*}}: memref<?xf32>, %{{.*}}: memref<?xbf16>
// GPU-SAME: known_block_size = array<i32: 64, 1, 1>
// W_g's block and the states live in dynamic shared memory.
// GPU: gpu.dynamic_shared_memory
// GPU: memref.view
// The time loop carries the state and the prefetched inputs; one barrier a step.
// GPU: scf.for {{.*}} iter_args(
// GPU: nvvm.inline_ptx "rcp.approx.ftz.f32 $0, $1;"
// GPU: gpu.barrier
// GPU: scf.yield
// GPU: gpu.func @fwd_kernel_r4(
// GPU: gpu.func @wide_kernel_coop(
// GPU-SAME: known_block_size = array<i32: 512, 1, 1>
// W_g's slice becomes mma fragments once, before the time loop.
// GPU: llvm.bitcast {{.*}} : vector<2xbf16> to i32
// GPU: scf.for
// Rows of h_{t-1} staged with 16-byte volatile loads, then the tensor-core product.
// GPU: llvm.load volatile {{.*}} -> vector<8xbf16>
// GPU: nvvm.mma.sync
// One grid-wide barrier a step: count in, spin until every block arrived.
// GPU: memref.atomic_rmw addi
// GPU: scf.while

// CPU: func.func @fwd_kernel(%{{.*}}: memref<?xbf16>, {{.*}}: index, %{{.*}}: index) attributes {llvm.emit_c_interface}
// CPU: memref.alloca() : memref<128xf32>
// CPU: llvm.intr.fmuladd
// CPU: math.exp
func.func @fwd(%z: tensor<?x?x128xbf16>, %l: tensor<?x?x128xf32>, %W: tensor<2x64x64xbf16>, %bg: tensor<128xbf16>,
               %h0: tensor<?x128xbf16>) -> (tensor<?x?x128xbf16>, tensor<?x128xbf16>) {
  %h, %f = mmrec.gated_recurrence %z, %l, %W, %bg init %h0
      : tensor<?x?x128xbf16>, tensor<?x?x128xf32>, tensor<2x64x64xbf16>, tensor<128xbf16>, tensor<?x128xbf16>
      -> tensor<?x?x128xbf16>, tensor<?x128xbf16>
  return %h, %f : tensor<?x?x128xbf16>, tensor<?x128xbf16>
}

func.func @wide(%z: tensor<?x?x512xbf16>, %l: tensor<?x?x512xf32>, %W: tensor<512x512xbf16>, %bg: tensor<512xbf16>)
    -> (tensor<?x?x512xbf16>, tensor<?x512xbf16>) {
  %h, %f = mmrec.gated_recurrence %z, %l, %W, %bg
      : tensor<?x?x512xbf16>, tensor<?x?x512xf32>, tensor<512x512xbf16>, tensor<512xbf16>
      -> tensor<?x?x512xbf16>, tensor<?x512xbf16>
  return %h, %f : tensor<?x?x512xbf16>, tensor<?x512xbf16>
}
