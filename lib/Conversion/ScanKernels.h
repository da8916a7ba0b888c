//===- ScanKernels.h - kernel generation for mmrec.scan ---------*- C++ -*-===//
//
// Builds the fused kernels of a log-space linear scan
//   h_t = exp(clamp(ℓ_t)) ⊙ h_{t-1} + b_t
// and of its exact adjoint, as MLIR functions:
//   * GPU: a `gpu.func` that keeps the whole sequence axis parallel. A block
//     owns 32·V channels × W·L steps; each thread scans L steps of V
//     channels in registers, warps are combined through shared memory, and
//     blocks along T are chained by decoupled look-back (blocks placed by
//     index or by a ticket counter, one 16-byte status word per block and
//     channel holding its aggregate or inclusive prefix),
//     so that one pass reads every input once and writes every output once.
//   * CPU: a `func.func` of loops, sequential in T and contiguous in the
//     channels (which LLVM vectorizes).
// Both take 1-D memrefs (the arrays flattened row-major, (B, T, N)) and
// index arguments B, T, N, in the order of `ScanKernelSpec::argNames()`.
//
//===----------------------------------------------------------------------===//

#ifndef MMREC_CONVERSION_SCANKERNELS_H
#define MMREC_CONVERSION_SCANKERNELS_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

#include <string>
#include <vector>

namespace mlir::mmrec {

enum class ScanKernelKind { Forward, Adjoint };

struct ScanKernelSpec {
  std::string name;
  ScanKernelKind kind = ScanKernelKind::Forward;
  Type elementType;       // of b, h, init, final and their gradients
  bool hasInit = false;   // the forward scan has an initial state operand
  bool reverse = false;   // the forward scan runs from T-1 down to 0
  double clampMin = -50.0, clampMax = 0.0;
  int64_t inner = 1;      // E: ℓ is broadcast over the trailing E channels
  bool gateLogits = false; // the decay operand holds logits x: ℓ = clamp(logσ(x))
  // GPU tiling: V channels per thread (vector width), L steps per thread,
  // W warps per block along T.
  int64_t vec = 1, steps = 8, warps = 8;
  int64_t minBlocks = 0; // blocks per SM to leave registers for (0: no bound)
  // Inputs go to shared memory through cp.async instead of registers (GPU,
  // vec > 1, inner == 1): a thread holds no step's inputs while its block
  // waits for the look-back, so registers stop bounding the blocks an SM runs.
  // The adjoint stages its epilogue's operands (ℓ_t, h_prev) too.
  bool stage = false;
  // GPU: the inputs' loads and the outputs' stores are streaming
  // (ld.global.cs / st.global.cs: evict-first in L1 and L2), so that the
  // look-back's status words, written and read again a few microseconds
  // later, are what L2 keeps (vector accesses of 4, 8 or 16 bytes; others
  // stay plain).
  bool stream = false;
  // GPU: a block's place along T (and so its predecessors in the look-back)
  // comes from an atomic ticket taken at its start (true), or from
  // blockIdx.x (false), which relies on the hardware dispatching a 1-D
  // grid's blocks in index order, as CUB's single-pass scans do
  // (NVIDIA/cub#245: "not strictly safe within the CUDA programming model,
  // but our current HW behaves this way"): no atomic round trip before a
  // block's first load, and no counter to zero before each launch.
  bool ticket = false;

  /// Names of the kernel's array arguments, in order; each is a 1-D memref.
  std::vector<std::string> arrayArgs() const;
  /// Element type of each array argument.
  std::vector<Type> arrayTypes(MLIRContext *ctx, bool gpu) const;
  int64_t channelsPerBlock() const { return 32 * vec; }
  int64_t stepsPerBlock() const { return steps * warps; }
  /// Whether `stage` applies to this kernel (vectorized, ℓ per channel).
  bool staged() const { return stage && vec > 1 && inner == 1; }
  /// Dynamic shared memory the GPU kernel needs (0 unless staged).
  int64_t sharedBytes() const;
};

/// Adds the GPU kernel for `spec` to `module` (a gpu.module).
void buildGpuScanKernel(OpBuilder &builder, Location loc, Operation *gpuModule,
                        const ScanKernelSpec &spec);

/// Adds the CPU kernel for `spec` to `module` as a func.func.
void buildCpuScanKernel(OpBuilder &builder, Location loc, ModuleOp module,
                        const ScanKernelSpec &spec);

} // namespace mlir::mmrec

#endif // MMREC_CONVERSION_SCANKERNELS_H
