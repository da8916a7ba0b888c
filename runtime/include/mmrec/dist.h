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

namespace mmrec::dist {

class Comm {
public:
  virtual ~Comm() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;
  /// x[i] = Σ_ranks x[i].
  virtual void allreduceSum(double *x, int64_t n) = 0;
  virtual void allreduceSum(float *x, int64_t n) = 0;
  /// out (n/size floats) = Σ_ranks in[rank·n/size …); n divisible by size.
  virtual void reduceScatterSum(const float *in, float *out, int64_t n) = 0;
  /// out (size·n floats) = the n-float shards of every rank, in rank order.
  virtual void allgather(const float *shard, float *out, int64_t n) = 0;
  /// On rank 0, out (size·n floats) = the n-float shards of every rank.
  virtual void gather(const float *shard, float *out, int64_t n) = 0;
  virtual void barrier() = 0;
  /// Ends the whole job with `code` (a rank's fatal error must not leave the
  /// others waiting).
  [[noreturn]] virtual void abort(int code) = 0;

  /// The process's ranks (initializes MPI on first use when launched by an
  /// MPI launcher). Finalized at exit.
  static Comm &world();
};

} // namespace mmrec::dist

#endif // MMREC_DIST_H
