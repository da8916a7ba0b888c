// RUN: mmrec-opt %s --mmrec-outline-scan-kernels=target=nvptx | FileCheck %s --check-prefix=GPU
// RUN: mmrec-opt %s --mmrec-outline-scan-kernels=target=cpu | FileCheck %s --check-prefix=CPU

// Per-head gate, 2 heads of 64, bf16: three block heights, their shared
// memory (W's 64 x 65 fp32 block + 2·R·64 states) recorded for the launcher.
// GPU: mmrec.kernels = [{args = ["z", "log_decay", "gate", "bias", "init", "h", "final"]
// GPU-SAME: heads = 2 : i64, name = "fwd_kernel_r1", op = "gated_recurrence", per_head = true, public_name = "fwd_kernel", rows = 1 : i64, shared_bytes = 17152 : i64
// GPU-SAME: name = "fwd_kernel_r2"
// GPU-SAME: name = "fwd_kernel_r4"
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

// CPU: func.func @fwd_kernel(%{{.*}}: memref<?xbf16>, {{.*}}: index, %{{.*}}: index) attributes {llvm.emit_c_interface}
// CPU: memref.alloca() : memref<128xf32>
// CPU: math.fma
// CPU: math.exp
func.func @fwd(%z: tensor<?x?x128xbf16>, %l: tensor<?x?x128xf32>, %W: tensor<2x64x64xbf16>, %bg: tensor<128xbf16>,
               %h0: tensor<?x128xbf16>) -> (tensor<?x?x128xbf16>, tensor<?x128xbf16>) {
  %h, %f = mmrec.gated_recurrence %z, %l, %W, %bg init %h0
      : tensor<?x?x128xbf16>, tensor<?x?x128xf32>, tensor<2x64x64xbf16>, tensor<128xbf16>, tensor<?x128xbf16>
      -> tensor<?x?x128xbf16>, tensor<?x128xbf16>
  return %h, %f : tensor<?x?x128xbf16>, tensor<?x128xbf16>
}
