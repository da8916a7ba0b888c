//===- TrainKernels.h - the kernels a training step needs -------*- C++ -*-===//
//
// Builds, for one model configuration (the module's `mmrec.config`), every
// non-GEMM kernel of a training step of MMREC_SPEC's model as CPU
// `func.func`s of loops (LLVM host code after lowering):
//
//   rmsnorm_{fwd,bwd}        RMSNorm ⊙ w over D channels (rstd kept)
//   decay_{fwd,bwd}          ℓ = clamp(logσ(pre + λ))
//   gated_{fwd,bwd}          level 0 (GatedKernels.h), init given
//   level1_{fwd,bwd}         chunk means K1, V1 and the causal chunk read y1
//   slot_softmax{,_bwd}      level 2's write / read addresses over the M slots
//                            (their logits and the reads are matrix products
//                            that the runtime runs: cuBLASLt / BLAS)
//   mdi_chunk_fwd            write mass n and logβ per chunk and slot
//   mdi_write_softmax_bwd    the write address's adjoint (with dn)
//   mem_scan_{fwd,bwd}       Mem_c = β·Mem_{c−1} + (1 − β)·P_c/max(n, 1e-6),
//                            U formed inside the scan (optionally writing the
//                            states' bf16 copy); the reverse scan yields dP,
//                            dn and dμ directly (optionally dP's bf16 copy)
//   mem_prev{,_bwd}          the state Mem_{c−1} each chunk reads
//   combine_{fwd,bwd}        ω-weighted GroupRMSNorm(h), y1, y2
//   swiglu_{fwd,bwd}         silu(f1) ⊙ f3
//   embed_{fwd,bwd}          row gather / scatter-add of E
//   xent                     mean cross-entropy and its logit gradient
//   adamw, sumsq             the optimizer update and Σx² (gradient norm)
//   decode_*                 one token with the recurrent state carried:
//                            level-1 read and chunk push, MDI write (+ the
//                            chunk's memory update) and read
//
// Every kernel is named `train_<name>`, takes 1-D memrefs (f32, i32 for
// token ids) and then index arguments, and carries llvm.emit_c_interface,
// so the runtime calls `_mlir_ciface_train_<name>` with memref descriptors.
// Gradient outputs marked "+=" accumulate; the others are overwritten. The
// argument lists are in `trainKernelSignatures()`; the runtime's
// `mmrec/train/kernels.h` mirrors them, and the trainer's oracle test checks
// the pair against the float64 oracle.
//
//===----------------------------------------------------------------------===//

#ifndef MMREC_CONVERSION_TRAINKERNELS_H
#define MMREC_CONVERSION_TRAINKERNELS_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

#include <string>
#include <vector>

namespace mlir::mmrec {

struct TrainConfig {
  int64_t V = 0, D = 0, L = 0, H = 1, Nm = 1, M = 1, F = 0, C = 1, r = 0, Tmax = 1;
  bool perHead = false;
  double eps = 1e-6, clampMin = -50.0, clampMax = 0.0;
  /// GPU: the dense gate's cooperative level-0 products on tensor cores in
  /// bf16 (mmrec-build-train-kernels' gated-bf16); fp32 FMAs otherwise.
  bool gatedBf16 = false;
  /// GPU, with gatedBf16 and D a multiple of 256 up to 1024: the level-0
  /// kernels' row groups as thread-block clusters of 16 that exchange the
  /// state through distributed shared memory (mmrec-build-train-kernels'
  /// gated-cluster; GatedKernelSpec::groupCluster).
  bool gatedCluster = false;
  int64_t dm() const { return D / Nm; }
};

struct TrainKernelSig {
  std::string name;                // without the `train_` prefix
  std::vector<std::string> arrays; // 1-D memref arguments, in order
  std::vector<std::string> indices; // then these index arguments
};

/// The kernels `buildTrainKernels` adds, with their arguments (the same
/// for both targets).
std::vector<TrainKernelSig> trainKernelSignatures(const TrainConfig &cfg);

/// Which kernels the GPU training library's level-0 recurrence runs for
/// `cfg` where their shape conditions hold (T > 0, ...): "persistent" (a
/// block a head, W_g in shared memory), "cooperative" (the dense gate's
/// FP32-FMA blocks at a grid barrier), "cooperative-bf16" (their tensor-core
/// variant), "clusters-bf16" (gatedCluster: row groups as clusters) or
/// "rows" (the generic kernels only).
std::string gatedGpuKernels(const TrainConfig &cfg);

/// Adds every `train_*` kernel for `cfg` to `module`. On the CPU they are
/// loop nests; with `gpu`, each is a host function whose independent loops
/// are `gpu.launch`es (see `K::par` in TrainKernels.cpp) and the module
/// becomes a `gpu.container_module`: after kernel outlining, the host part
/// lowers with gpu-to-llvm (mgpu* runtime calls that mmrec's runtime
/// provides) and the kernels to NVVM, with the same C interface as the CPU
/// kernels, taking device pointers.
void buildTrainKernels(OpBuilder &builder, Location loc, ModuleOp module, const TrainConfig &cfg,
                       bool gpu);

} // namespace mlir::mmrec

#endif // MMREC_CONVERSION_TRAINKERNELS_H
