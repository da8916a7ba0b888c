//===- dist.cpp - single-rank and MPI communicators -----------------------===//

#include "mmrec/dist.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#ifdef MMREC_HAVE_MPI
#include <mpi.h>
#endif

using namespace mmrec::dist;

namespace {

class SingleComm final : public Comm {
public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "single"; }
  void allreduceSum(double *, int64_t) override {}
  void allreduceSum(float *, int64_t) override {}
  void reduceScatterSum(const float *in, float *out, int64_t n) override {
    if (in != out)
      std::memmove(out, in, size_t(n) * sizeof(float));
  }
  void allgather(const float *shard, float *out, int64_t n) override {
    if (shard != out)
      std::memmove(out, shard, size_t(n) * sizeof(float));
  }
  void gather(const float *shard, float *out, int64_t n) override { allgather(shard, out, n); }
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
};

#ifdef MMREC_HAVE_MPI
/// MPI counts are int: large arrays go in pieces of at most 2^30 elements.
constexpr int64_t kPiece = int64_t(1) << 30;

class MpiComm final : public Comm {
public:
  MpiComm() {
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited)
      MPI_Init(nullptr, nullptr);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiComm() override {
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin)
      MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  void allreduceSum(double *x, int64_t n) override {
    for (int64_t i = 0; i < n; i += kPiece)
      MPI_Allreduce(MPI_IN_PLACE, x + i, int(std::min(kPiece, n - i)), MPI_DOUBLE, MPI_SUM,
                    MPI_COMM_WORLD);
  }
  void allreduceSum(float *x, int64_t n) override {
    for (int64_t i = 0; i < n; i += kPiece)
      MPI_Allreduce(MPI_IN_PLACE, x + i, int(std::min(kPiece, n - i)), MPI_FLOAT, MPI_SUM,
                    MPI_COMM_WORLD);
  }
  void reduceScatterSum(const float *in, float *out, int64_t n) override {
    const int64_t shard = n / size_;
    if (shard > kPiece)
      throw std::runtime_error("reduceScatterSum: shards above 2^30 elements are not supported");
    MPI_Reduce_scatter_block(in, out, int(shard), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  }
  void allgather(const float *shard, float *out, int64_t n) override {
    if (n > kPiece)
      throw std::runtime_error("allgather: shards above 2^30 elements are not supported");
    MPI_Allgather(shard, int(n), MPI_FLOAT, out, int(n), MPI_FLOAT, MPI_COMM_WORLD);
  }
  void gather(const float *shard, float *out, int64_t n) override {
    if (n > kPiece)
      throw std::runtime_error("gather: shards above 2^30 elements are not supported");
    MPI_Gather(shard, int(n), MPI_FLOAT, out, int(n), MPI_FLOAT, 0, MPI_COMM_WORLD);
  }
  void barrier() override { MPI_Barrier(MPI_COMM_WORLD); }
  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::exit(code);
  }

private:
  int rank_ = 0, size_ = 1;
};
#endif

bool launchedByMpi() {
  for (const char *v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"})
    if (std::getenv(v))
      return true;
  return false;
}

} // namespace

Comm &Comm::world() {
#ifdef MMREC_HAVE_MPI
  if (launchedByMpi()) {
    static MpiComm comm;
    return comm;
  }
#endif
  static SingleComm single;
  return single;
}
