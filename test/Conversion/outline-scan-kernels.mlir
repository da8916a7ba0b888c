// RUN: mmrec-opt %s --mmrec-outline-scan-kernels=target=nvptx | FileCheck %s --check-prefix=GPU
// RUN: mmrec-opt %s --mmrec-outline-scan-kernels="target=nvptx warps=2 steps=4 min-blocks=3" | FileCheck %s --check-prefix=TILE
// RUN: mmrec-opt %s --mmrec-outline-scan-kernels="target=nvptx stage=1" | FileCheck %s --check-prefix=STAGE
// RUN: mmrec-opt %s --mmrec-outline-scan-kernels="target=nvptx stream=1" | FileCheck %s --check-prefix=STREAM
// RUN: mmrec-opt %s --mmrec-outline-scan-kernels="target=nvptx stream=0" | FileCheck %s --check-prefix=NOSTREAM
// RUN: mmrec-opt %s --mmrec-outline-scan-kernels="target=nvptx ticket=1" | FileCheck %s --check-prefix=TICKET
// RUN: mmrec-opt %s --mmrec-outline-scan-kernels=target=cpu | FileCheck %s --check-prefix=CPU
// RUN: not mmrec-opt %s --mmrec-outline-scan-kernels=target=amdgpu 2>&1 | FileCheck %s --check-prefix=BAD

// The op is tagged with its kernel; the module lists every kernel.
// GPU: mmrec.kernels = [{args = ["log_decay", "b", "init", "h", "final"]
// GPU-SAME: name = "scan_f32_kernel", op = "scan"
// GPU-SAME: shared_bytes = 0
// GPU-SAME: name = "scan_f32_kernel_long", op = "scan"
// GPU-SAME: steps = 16 : i64, target = "nvptx", ticket = false, vec = 4 : i64, warps = 4 : i64
// GPU-SAME: name = "scan_f32_kernel_v1"
// 16-bit I/O: the forward runs 16 steps a thread (4 channels, 8-byte
// accesses), its long-block variant 8 warps × 16 steps staged in shared memory.
// GPU-SAME: name = "scan_bf16_kernel", op = "scan"
// GPU-SAME: shared_bytes = 0 : i64, steps = 16 : i64, target = "nvptx", ticket = false, vec = 4 : i64, warps = 4 : i64
// GPU-SAME: name = "scan_bf16_kernel_long", op = "scan"
// GPU-SAME: shared_bytes = {{[1-9][0-9]*}} : i64, steps = 16 : i64, target = "nvptx", ticket = false, vec = 4 : i64, warps = 8 : i64
// GPU: mmrec.scan {{.*}}{mmrec.kernel = "scan_f32_kernel"}

// One gpu.func a kernel: 4 warps by default, shared memory for the warp
// aggregates, the carry and the ticket. Arguments: the 5 arrays, the ticket,
// the status words (i32), B, T, N and the launch's epoch.
// GPU: gpu.module @mmrec_kernels
// GPU: gpu.func @scan_f32_kernel(%{{.*}}: memref<?xf32>, {{.*}}: memref<?xf32>, {{.*}}: memref<?xi32>, {{.*}}: memref<?xi32>, {{.*}}: index, {{.*}}: index, {{.*}}: index, {{.*}}: index)
// GPU-SAME: workgroup({{.*}}: memref<512xf32, #gpu.address_space<workgroup>>
// GPU-SAME: kernel attributes {known_block_size = array<i32: 128, 1, 1>}
// Its place along T is its block index (ticket=1: an atomic ticket instead).
// GPU-NOT: memref.atomic_rmw
// GPU: gpu.block_id  x
// GPU-NOT: memref.atomic_rmw
// 16-byte vector loads of 4 fp32 channels.
// GPU: vector.load {{.*}} {alignment = 16 : i64} : memref<?xf32>, vector<4xf32>
// exp through ex2.approx.
// GPU: nvvm.inline_ptx "ex2.approx.ftz.f32 $0, $1;"
// Look-back: each channel's status word {tag, A, B, P} is published with one
// 16-byte volatile store and read with one 16-byte volatile load; no fences.
// GPU: llvm.store volatile {{.*}} {alignment = 16 : i64} : vector<4xi32>
// GPU: scf.while
// GPU: llvm.load volatile {{.*}} {alignment = 16 : i64} : !llvm.ptr -> vector<4xi32>
// GPU-NOT: fence
// GPU: gpu.func @scan_f32_kernel_v1(
// GPU: vector.load {{.*}} : memref<?xf32>, vector<1xf32>

// With stage=1 the vectorized forward copies its inputs to dynamic shared
// memory with cp.async; the scalar variant is never staged.
// STAGE: name = "scan_f32_kernel", op = "scan"
// STAGE-SAME: shared_bytes = {{[1-9][0-9]*}}
// STAGE: name = "scan_f32_kernel_v1"
// STAGE-SAME: shared_bytes = 0
// STAGE: gpu.func @scan_f32_kernel(
// STAGE: gpu.dynamic_shared_memory
// STAGE: cp.async.cg.shared.global
// STAGE: cp.async.wait_all
// STAGE: gpu.func @scan_f32_kernel_v1(
// STAGE-NOT: cp.async

// With stream=1 the inputs' vector loads and the outputs' vector stores are
// streaming (evict-first) PTX accesses; the status words stay volatile.
// STREAM: gpu.func @scan_f32_kernel(
// STREAM: llvm.inline_asm "{ .reg .u64 mmrec_g; cvta.to.global.u64 mmrec_g, $4; ld.global.cs.v4.b32 {$0, $1, $2, $3}, [mmrec_g]; }", "=r,=r,=r,=r,l"
// STREAM: llvm.store volatile {{.*}} : vector<4xi32>
// STREAM: llvm.inline_asm has_side_effects "{ .reg .u64 mmrec_g; cvta.to.global.u64 mmrec_g, $0; st.global.cs.v4.b32 [mmrec_g], {$1, $2, $3, $4}; }", "l,r,r,r,r"
// STREAM: gpu.func @scan_f32_kernel_v1(
// STREAM: ld.global.cs.b32 $0, [mmrec_g]
// NOSTREAM-NOT: .cs.

// With ticket=1 the block takes an atomic ticket first, so that its
// predecessors along T started earlier; the kernel descriptions say so (the
// launcher then zeroes the counter before each launch).
// TICKET: ticket = true
// TICKET: gpu.func @scan_f32_kernel(
// TICKET: memref.atomic_rmw addi
// TICKET-NOT: gpu.block_id
// TICKET: vector.load

// TILE: gpu.func @scan_f32_kernel(
// TILE-SAME: memref<256xf32, #gpu.address_space<workgroup>>
// TILE-SAME: known_block_size = array<i32: 64, 1, 1>, nvvm.minctasm = 3 : i32

// CPU: mmrec.kernels = [{{.*}}target = "cpu"
// CPU: func.func @scan_f32_kernel(%{{.*}}: memref<?xf32>, %{{.*}}: memref<?xf32>, %{{.*}}: memref<?xf32>, %{{.*}}: memref<?xf32>, %{{.*}}: memref<?xf32>, %{{.*}}: index, %{{.*}}: index, %{{.*}}: index)
// CPU: scf.for
// CPU: scf.for
// CPU: scf.for
// CPU: math.exp

// BAD: error: mmrec-outline-scan-kernels: unknown target 'amdgpu' (expected cpu or nvptx)
func.func @scan_f32(%l: tensor<?x?x?xf32>, %b: tensor<?x?x?xf32>, %h0: tensor<?x?xf32>)
    -> (tensor<?x?x?xf32>, tensor<?x?xf32>) {
  %h, %hT = mmrec.scan %l, %b init %h0
      : tensor<?x?x?xf32>, tensor<?x?x?xf32>, tensor<?x?xf32> -> tensor<?x?x?xf32>, tensor<?x?xf32>
  return %h, %hT : tensor<?x?x?xf32>, tensor<?x?xf32>
}

// The adjoint: with stage=1 its scan inputs and its epilogue's operands
// (ℓ_t, h_prev) are staged too (4 cp.async a step: ℓ_next, dy, ℓ_t, h_prev).
// STAGE: gpu.func @scan_grad_f32_kernel(
// STAGE: gpu.dynamic_shared_memory
// STAGE-COUNT-32: cp.async.cg.shared.global
// STAGE: cp.async.wait_all
// STAGE: gpu.func @scan_grad_f32_kernel_long(
func.func @scan_grad_f32(%l: tensor<?x?x?xf32>, %h: tensor<?x?x?xf32>, %dh: tensor<?x?x?xf32>,
                         %df: tensor<?x?xf32>, %h0: tensor<?x?xf32>)
    -> (tensor<?x?x?xf32>, tensor<?x?x?xf32>, tensor<?x?xf32>) {
  %dl, %db, %dh0 = mmrec.scan_grad %l, %h, %dh, %df init %h0
      : tensor<?x?x?xf32>, tensor<?x?x?xf32>, tensor<?x?x?xf32>, tensor<?x?xf32>, tensor<?x?xf32>
      -> tensor<?x?x?xf32>, tensor<?x?x?xf32>, tensor<?x?xf32>
  return %dl, %db, %dh0 : tensor<?x?x?xf32>, tensor<?x?x?xf32>, tensor<?x?xf32>
}

// The 16-bit forward (@scan_bf16 below): checked with the kernel list above.
func.func @scan_bf16(%l: tensor<?x?x?xf32>, %b: tensor<?x?x?xbf16>, %h0: tensor<?x?xbf16>)
    -> (tensor<?x?x?xbf16>, tensor<?x?xbf16>) {
  %h, %hT = mmrec.scan %l, %b init %h0
      : tensor<?x?x?xf32>, tensor<?x?x?xbf16>, tensor<?x?xbf16> -> tensor<?x?x?xbf16>, tensor<?x?xbf16>
  return %h, %hT : tensor<?x?x?xbf16>, tensor<?x?xbf16>
}
