//===- dist.h - collectives for data-parallel training -----------*- C++ -*-===//
//
// The trainer's view of its ranks. `Comm::world()` is MPI's world when the
// process was started by an MPI launcher (mpirun / srun: Open MPI's or
// PMIx's rank variables are set) and a single rank otherwise, so the same
// code path runs alone and under `mpirun -np N`. Collectives are MPI's (Open
// MPI from Debian); no home-made transport. A failing rank aborts the job
// (MPI_ERRORS_ARE_FATAL), so no rank waits forever on a dead peer.
//
//===----------------------------------------------------------------------===//

#ifndef MMREC_DIST_H
#define MMREC_DIST_H

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace mmrec::dist {

class Comm {
public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;
  /// x[i] = Σ_ranks x[i].
  virtual void allreduceSum(double *x, int64_t n) = 0;
  /// out (size·n floats) = the n-float shards of every rank, in rank order.
  virtual void allgather(const float *shard, float *out, int64_t n) = 0;
  virtual void barrier() = 0;
  /// `bytes` of `data` from rank `root` to every rank.
  virtual void broadcast(void *data, int64_t bytes, int root) = 0;
  /// Starts out[0, n) = Σ_ranks in[0, n) on rank `root` without waiting
  /// (`out` matters on the root only; `in` must stay unchanged until wait()).
  virtual void reduceAsync(const float *in, float *out, int64_t n, int root) = 0;
  /// Completes every reduceAsync started so far.
  virtual void wait() = 0;
  /// Of the reductions started since the last wait(): how many, and how many
  /// have completed (polls them).
  virtual std::pair<int, int> asyncProgress() { return {0, 0}; }
  /// Ends the whole job with `code` (a rank's fatal error must not leave the
  /// others waiting).
  [[noreturn]] virtual void abort(int code) = 0;

  /// The process's ranks (initializes MPI on first use when launched by an
  /// MPI launcher). Finalized at exit.
  static Comm &world();
};

/// Gradient synchronization of ZeRO data parallelism (stages 1 and 2): the
/// flat, padded gradient and parameter arrays hold W·S floats and rank r owns
/// [r·S, (r+1)·S). While the backward pass runs, every range of gradients it
/// completes (a layer, from the last to the first) is summed over the ranks
/// straight into its owners' shards; after the optimizer step each rank's
/// updated shard is all-gathered. Implementations:
///   host    host arrays over MPI (CPU training; one rank: a copy);
///   staged  device arrays through host memory and MPI (GPUs without NCCL);
///   nccl    device arrays with NCCL on a stream of their own, ordered after
///           the backward kernels with events: communication overlaps the
///           rest of the backward pass.
class GradSync {
public:
  virtual ~GradSync() = default;
  virtual std::string name() const = 0;
  /// Starts a step: `grads` (W·S floats) will be completed range by range;
  /// this rank's sums go to `shard` (S floats, distinct from grads).
  virtual void begin(float *grads, float *shard, int64_t S) = 0;
  /// grads[a, b) are final on this rank (on a GPU: queued on the default
  /// stream). Every rank gives the same ranges in the same order.
  virtual void ready(int64_t a, int64_t b) = 0;
  /// After this the shard holds the sums (on a GPU: for work queued next on
  /// the default stream). Every element of [0, W·S) must have been ready.
  virtual void finish() = 0;
  /// params[r·S, (r+1)·S) of every rank r to every rank, in place.
  virtual void allgather(float *params, int64_t S) = 0;
  /// A failure of the collectives noticed asynchronously ("" when none):
  /// the trainer's watchdog polls it.
  virtual std::string asyncError() { return {}; }
  /// How much of the last step's reduction overlapped the backward pass,
  /// measured in finish() when setMeasure(true) (on a GPU this waits for
  /// the backward kernels first, so only when profiling): the buckets
  /// already summed when backward ended, and the milliseconds finish() then
  /// still waited for the rest.
  struct Overlap {
    int buckets = 0, doneAtBackwardEnd = 0;
    double waitMs = 0;
  };
  void setMeasure(bool on) { measure_ = on; }
  const Overlap &lastOverlap() const { return overlap_; }

protected:
  bool measure_ = false;
  Overlap overlap_;
};

std::unique_ptr<GradSync> hostGradSync(Comm &comm);
std::unique_ptr<GradSync> stagedGradSync(Comm &comm);
/// Throws Error when NCCL (libnccl.so.2) or a GPU is not available.
std::unique_ptr<GradSync> ncclGradSync(Comm &comm);
/// True when libnccl.so.2 loads (and this runtime was built with CUDA).
bool ncclAvailable(std::string *why = nullptr);

} // namespace mmrec::dist

#endif // MMREC_DIST_H
