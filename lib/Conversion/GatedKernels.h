//===- GatedKernels.h - kernels of mmrec.gated_recurrence -------*- C++ -*-===//
//
// Builds the fused kernels of the level-0 recurrence
//   h_t = z_t ⊙ σ(h_{t-1}·W_g + b_g) + exp(clamp(ℓ_t)) ⊙ h_{t-1}
// and of its exact adjoint, as MLIR functions:
//   * GPU: a persistent `gpu.func`. A block owns (R batch rows, one head of
//     dh channels; the dense gate is one head of D channels) and walks the
//     whole sequence. W_g's block sits in shared memory for all T steps (rows
//     padded to an odd stride, so that both W·x and Wᵀ·x read it without bank
//     conflicts); the state of the R rows lives in registers and in a
//     double-buffered shared array, so one barrier per step suffices; the
//     per-step inputs are loaded P steps ahead (loop-carried registers), so
//     HBM latency stays off the sequential chain. The adjoint recomputes
//     s_t = σ(h_{t-1}·W_g + b_g) from the forward's stored states.
//   * CPU: a `func.func` of loops over the batch and the sequence, the
//     products written as contiguous inner loops that LLVM vectorizes.
// Both take 1-D memrefs (row-major arrays) in the order of `arrayArgs()`,
// then the index arguments B and T. D, H and R are compile-time constants.
//
// The dense gate beyond one block's shared memory gets cooperative kernels
// instead (see buildGpuCoopGatedKernel): each block owns Dc channels and
// blocks meet at one grid-wide barrier a step. With bf16 I/O and D a
// multiple of 256 the products run on tensor cores with the block's W_g
// slice held on chip as mma fragments (registers + shared memory);
// otherwise FP32 FMAs stream W_g from memory. With groupCluster each row
// group of 8 is instead one thread-block cluster whose blocks exchange the
// state through distributed shared memory (no grid barrier).
//
// The adjoint kernel writes, besides dz and dℓ, the pre-activation gradient
// a_t = g_t ⊙ z_t ⊙ s_t ⊙ (1 − s_t) shifted by one step (grad_pre[b, t−1] =
// a_t, grad_pre[b, T−1] = 0, grad_pre0[b] = a_0), so that the launcher gets
// dW_g = Σ hᵀ·grad_pre + initᵀ·grad_pre0 and db_g as matrix products.
//
//===----------------------------------------------------------------------===//

#ifndef MMREC_CONVERSION_GATEDKERNELS_H
#define MMREC_CONVERSION_GATEDKERNELS_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

#include <algorithm>
#include <string>
#include <vector>

namespace mlir::mmrec {

struct GatedKernelSpec {
  std::string name;
  bool adjoint = false;
  Type elementType;      // z, W_g, b_g, the states and their gradients
  bool hasInit = false;
  int64_t channels = 0;  // D
  int64_t heads = 1;     // H blocks of dh = D / H (1: the dense gate)
  bool perHead = false;  // W_g is (H, dh, dh) rather than (D, D)
  double clampMin = -50.0, clampMax = 0.0;
  int64_t rows = 1;      // GPU: batch rows per block
  int64_t prefetch = 2;  // GPU: steps of inputs loaded ahead (>= 2)
  // GPU, dense gate beyond one block: the cooperative kernel. D / Dc blocks,
  // each owning Dc channels, meet at a grid-wide barrier every step.
  bool cooperative = false;
  int64_t channelsPerBlock = 0; // Dc
  // The forward's product on tensor cores (bf16, mma.sync m16n8k16): W_g's
  // slice as fragments, half in registers and half in shared memory.
  bool mma = false;
  // MMA kernels: blocks per thread-block cluster (G = 1, 2, 4). A cluster
  // owns 32·G channels; its block of rank q multiplies the k-range
  // [q·D/G, (q+1)·D/G) of the contraction for all 32·G of them and so reads
  // only that part of h_{t-1} (or a_t) each step: the L2 traffic of the
  // step's exchange (every block reads it) falls G-fold. The G partial sums
  // meet in the owning block's shared memory (st.shared::cluster, then a
  // cluster barrier); block q owns channels [32·(G·c + q), +32) as before.
  int64_t cluster = 1;
  // MMA kernels, each row group one thread-block cluster (groupCluster,
  // with cluster = 1): the group's D / Dc = kGroupClusterBlocks blocks
  // (Dc = D / 16 channels a block, Dc / 16 m-tiles) pass each step's h_t
  // (forward) or a_t (adjoint) to each other through distributed shared
  // memory (16-byte st.shared::cluster into a double-buffered copy of the
  // 8 rows that every block keeps) and meet at the cluster barrier: no grid
  // barrier, no exchange through `sync`, and clusters do not wait for each
  // other, so the launch is not cooperative and any B runs (gridDim.y =
  // ⌈B / 8⌉ clusters, as many at once as the device holds).
  bool groupCluster = false;
  static constexpr int64_t kGroupClusterBlocks = 16;
  /// Whether D suits groupCluster: Dc = D / 16 a multiple of 16, the 8 rows
  /// of Dc channels owned one a thread (Dc ≤ 64), and every W_g fragment in
  /// registers (D ≤ 1024).
  static bool groupClusterFits(int64_t D) { return D % 256 == 0 && D <= 1024; }
  static constexpr int64_t kMmaThreads = 512, kMmaRegFragments = 16;
  /// The contraction length of one block (D / G).
  int64_t mmaK() const { return channels / cluster; }
  /// m-tiles of 16 channels a block multiplies (2·G; Dc / 16 with
  /// groupCluster).
  int64_t mmaMTiles() const { return groupCluster ? channelsPerBlock / 16 : 2 * cluster; }
  /// k-tiles of 16 per warp and how many of them have their MT fragments
  /// in registers (the rest in shared memory).
  int64_t mmaTilesPerWarp() const { return mmaK() / 16 / (kMmaThreads / 32); }
  int64_t mmaRegTiles() const {
    return std::min<int64_t>(kMmaRegFragments / mmaMTiles(), mmaTilesPerWarp());
  }
  /// Whether the MMA kernels' tiling fits D with clusters of G: D / G a
  /// multiple of 256, 32 channels a block, at most 128 blocks.
  static bool mmaFits(int64_t D, int64_t G = 1) { return D % (256 * G) == 0 && D / 32 <= 128; }
  /// Whether the MMA kernels apply to bf16 I/O (one block a cluster).
  static bool mmaApplies(Type elementType, int64_t D) {
    return elementType.isBF16() && mmaFits(D);
  }
  static constexpr int64_t kCoopThreads = 1024;
  /// Batch rows staged in shared memory at a time (8, fewer for large D).
  int64_t coopRows() const {
    return std::max<int64_t>(1, std::min<int64_t>(8, 196608 / (channels * 4)));
  }
  /// Dc for the cooperative kernel: the smallest divisor of D (≤ 1024) that
  /// needs at most 128 blocks; 0 when there is none.
  static int64_t coopChannels(int64_t D);
  /// Words (i32) of `sync` with which the cooperative MMA kernels take
  /// their register-resident variant for B <= 8: the barrier counter
  /// (word 0), then from byte 256 a bf16 exchange of two [B][D] arrays. With
  /// fewer words they stage rows from the fp32 arrays (slower, same values).
  /// mmrec::train::gatedSyncWords (runtime/include/mmrec/train.h) is the
  /// runtime's copy of this formula.
  static int64_t coopSyncWords(int64_t B, int64_t D) { return 64 + B * D; }
  /// Row groups of the cooperative kernels (gridDim.y): group g's blocks
  /// count their grid barrier at word 8·g of `sync`, so at most 8 fit the
  /// 64 words before the exchange. The launch asks for coopGroups(B), one
  /// per kCoopGroupRows rows (the MMA kernels' tile: B ≤ 8·groups runs their
  /// register-resident variant); the runtime may grant fewer, down to one,
  /// when the device cannot hold them all, and the kernel then walks its
  /// group's tiles one after another.
  static constexpr int64_t kCoopMaxGroups = 8, kCoopGroupRows = 8;
  static int64_t coopGroups(int64_t B) {
    return std::min((B + kCoopGroupRows - 1) / kCoopGroupRows, kCoopMaxGroups);
  }

  int64_t headDim() const { return channels / heads; }
  /// Row stride of W_g's block in shared memory (odd: conflict-free both ways).
  int64_t wStride() const { return headDim() % 2 ? headDim() : headDim() + 1; }
  /// W_g's block is kept in shared memory as bf16 (bf16 I/O whose fp32 block
  /// would not fit, e.g. dh = 256) rather than fp32.
  bool wHalf() const {
    return elementType && elementType.isBF16() &&
           headDim() * wStride() * 4 + 2 * 4 * headDim() * 4 > 227 * 1024;
  }
  int64_t threads() const {
    if (cooperative && mma)
      return kMmaThreads;
    return cooperative ? kCoopThreads / channelsPerBlock * channelsPerBlock
                       : (headDim() + 31) / 32 * 32;
  }
  /// Dynamic shared memory of the GPU kernel, in bytes.
  int64_t sharedBytes() const;
  /// Names of the kernel's array arguments, in order; each is a 1-D memref.
  std::vector<std::string> arrayArgs() const;
};

void buildGpuGatedKernel(OpBuilder &builder, Location loc, Operation *gpuModule,
                         const GatedKernelSpec &spec);
/// The cooperative kernels of the dense gate (spec.cooperative): forward,
/// h_{t-1} read back from memory by every block after each grid barrier;
/// adjoint, s_t from the pre-activations `pact` (one matrix product before
/// the kernel) and the a_t of all blocks exchanged through grad_pre.
void buildGpuCoopGatedKernel(OpBuilder &builder, Location loc, Operation *gpuModule,
                             const GatedKernelSpec &spec);
void buildCpuGatedKernel(OpBuilder &builder, Location loc, ModuleOp module,
                         const GatedKernelSpec &spec);

} // namespace mlir::mmrec

#endif // MMREC_CONVERSION_GATEDKERNELS_H
