//===- dist.cpp - single-rank and MPI communicators -----------------------===//

#include "mmrec/dist.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <dlfcn.h>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <vector>

#include "mmrec/runtime.h"

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
  void allgather(const float *shard, float *out, int64_t n) override {
    if (shard != out)
      std::memmove(out, shard, size_t(n) * sizeof(float));
  }
  void barrier() override {}
  void broadcast(void *, int64_t, int) override {}
  void reduceAsync(const float *in, float *out, int64_t n, int) override {
    if (in != out)
      std::memmove(out, in, size_t(n) * sizeof(float));
  }
  void wait() override {}
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
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &threadLevel_);
    else
      MPI_Query_thread(&threadLevel_);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiComm() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable())
      worker_.join();
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
  void allgather(const float *shard, float *out, int64_t n) override {
    if (n > kPiece)
      throw std::runtime_error("allgather: shards above 2^30 elements are not supported");
    MPI_Allgather(shard, int(n), MPI_FLOAT, out, int(n), MPI_FLOAT, MPI_COMM_WORLD);
  }
  void barrier() override { MPI_Barrier(MPI_COMM_WORLD); }
  void broadcast(void *data, int64_t bytes, int root) override {
    for (int64_t i = 0; i < bytes; i += kPiece)
      MPI_Bcast(static_cast<char *>(data) + i, int(std::min(kPiece, bytes - i)), MPI_BYTE, root,
                MPI_COMM_WORLD);
  }
  // Reductions run in order on a thread of their own (blocking MPI_Reduce;
  // MPI_THREAD_SERIALIZED: the main thread makes no MPI call until wait()),
  // so that they proceed while the caller computes. Open MPI progresses its
  // nonblocking collectives only inside MPI calls: MPI_Ireduce measured
  // 3.5× slower per step than this on 2 ranks.
  void reduceAsync(const float *in, float *out, int64_t n, int root) override {
    if (threadLevel_ < MPI_THREAD_SERIALIZED) {
      reduce({in, out, n, root});
      ++started_;
      ++done_;
      return;
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (!worker_.joinable())
      worker_ = std::thread([this] { work(); });
    jobs_.push_back({in, out, n, root});
    ++started_;
    cv_.notify_all();
  }
  void wait() override {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_ == started_; });
    started_ = done_ = 0;
  }
  std::pair<int, int> asyncProgress() override {
    std::lock_guard<std::mutex> lock(mu_);
    return {started_, done_};
  }
  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::exit(code);
  }

private:
  struct Job {
    const float *in;
    float *out;
    int64_t n;
    int root;
  };
  void reduce(const Job &j) {
    for (int64_t i = 0; i < j.n; i += kPiece) {
      const int count = int(std::min(kPiece, j.n - i));
      if (rank_ == j.root)
        MPI_Reduce(j.in == j.out ? MPI_IN_PLACE : j.in + i, j.out + i, count, MPI_FLOAT, MPI_SUM,
                   j.root, MPI_COMM_WORLD);
      else
        MPI_Reduce(j.in + i, nullptr, count, MPI_FLOAT, MPI_SUM, j.root, MPI_COMM_WORLD);
    }
  }
  void work() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty())
        return; // stop_
      Job j = jobs_.front();
      jobs_.pop_front();
      lock.unlock();
      reduce(j);
      lock.lock();
      ++done_;
      cv_.notify_all();
    }
  }
  int rank_ = 0, size_ = 1, threadLevel_ = MPI_THREAD_SINGLE;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  std::thread worker_;
  int started_ = 0, done_ = 0;
  bool stop_ = false;
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

namespace {

/// The owners' pieces of the gradient range [a, b): calls f(r, x, y) for
/// every rank r whose shard [r·S, (r+1)·S) meets it in [x, y).
template <class F> void forOwners(int64_t a, int64_t b, int64_t S, int W, F f) {
  if (S <= 0)
    return;
  for (int r = int(std::min<int64_t>(a / S, W - 1)); r < W && r * S < b; ++r) {
    const int64_t x = std::max(a, r * S), y = std::min(b, (r + 1) * S);
    if (x < y)
      f(r, x, y);
  }
}

/// finish()'s measurement for MPI reductions: what had completed when
/// backward ended (finish() is called right after it), and the wait.
struct Timer {
  Timer(bool on, GradSync::Overlap &o, Comm &c) : on(on), o(o) {
    if (on) {
      auto [n, done] = c.asyncProgress();
      o.buckets = n;
      o.doneAtBackwardEnd = done;
      t0 = std::chrono::steady_clock::now();
    }
  }
  ~Timer() {
    if (on)
      o.waitMs = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                     .count();
  }
  bool on;
  GradSync::Overlap &o;
  std::chrono::steady_clock::time_point t0;
};

class HostGradSync final : public GradSync {
public:
  explicit HostGradSync(Comm &c) : c_(c) {}
  std::string name() const override { return c_.size() > 1 ? c_.backend() : "single"; }
  void begin(float *grads, float *shard, int64_t S) override {
    g_ = grads;
    sh_ = shard;
    S_ = S;
  }
  void ready(int64_t a, int64_t b) override {
    forOwners(a, b, S_, c_.size(), [&](int r, int64_t x, int64_t y) {
      c_.reduceAsync(g_ + x, r == c_.rank() ? sh_ + (x - r * S_) : nullptr, y - x, r);
    });
  }
  void finish() override {
    Timer t(measure_, overlap_, c_);
    c_.wait();
  }
  void allgather(float *params, int64_t S) override {
    tmp_.assign(params + c_.rank() * S, params + (c_.rank() + 1) * S);
    c_.allgather(tmp_.data(), params, S);
  }

private:
  Comm &c_;
  float *g_ = nullptr, *sh_ = nullptr;
  int64_t S_ = 0;
  std::vector<float> tmp_;
};

/// Device arrays through host memory: each ready range is copied down (the
/// copy waits for the default stream) and reduced by MPI.
class StagedGradSync final : public GradSync {
public:
  explicit StagedGradSync(Comm &c) : c_(c) {}
  std::string name() const override { return c_.backend() + " (staged through host memory)"; }
  void begin(float *grads, float *shard, int64_t S) override {
    g_ = grads;
    sh_ = shard;
    S_ = S;
    hg_.resize(size_t(S * c_.size()));
    hs_.resize(size_t(S));
  }
  void ready(int64_t a, int64_t b) override {
    mmrec::rt::gpu::copyToHost(hg_.data() + a, g_ + a, size_t(b - a) * sizeof(float));
    forOwners(a, b, S_, c_.size(), [&](int r, int64_t x, int64_t y) {
      c_.reduceAsync(hg_.data() + x, r == c_.rank() ? hs_.data() + (x - r * S_) : nullptr, y - x,
                     r);
    });
  }
  void finish() override {
    {
      Timer t(measure_, overlap_, c_);
      c_.wait();
    }
    mmrec::rt::gpu::copyToDevice(sh_, hs_.data(), size_t(S_) * sizeof(float));
  }
  void allgather(float *params, int64_t S) override {
    hs_.resize(size_t(S));
    hg_.resize(size_t(S * c_.size()));
    mmrec::rt::gpu::copyToHost(hs_.data(), params + c_.rank() * S, size_t(S) * sizeof(float));
    c_.allgather(hs_.data(), hg_.data(), S);
    mmrec::rt::gpu::copyToDevice(params, hg_.data(), size_t(S * c_.size()) * sizeof(float));
  }

private:
  Comm &c_;
  float *g_ = nullptr, *sh_ = nullptr;
  int64_t S_ = 0;
  std::vector<float> hg_, hs_;
};

} // namespace

std::unique_ptr<GradSync> mmrec::dist::hostGradSync(Comm &comm) {
  return std::make_unique<HostGradSync>(comm);
}
std::unique_ptr<GradSync> mmrec::dist::stagedGradSync(Comm &comm) {
  return std::make_unique<StagedGradSync>(comm);
}

//===----------------------------------------------------------------------===//
// NCCL
//===----------------------------------------------------------------------===//
//
// libnccl.so.2 is opened with dlopen at first use (like the CUDA driver), so
// the trainer starts on machines without it. The few declarations below are
// NCCL 2's stable C ABI (nccl.h).

namespace {

struct NcclUniqueId {
  char internal[128];
};
using NcclComm = struct ncclComm *;
using NcclResult = int; // ncclResult_t: ncclSuccess 0, ncclInProgress 7
constexpr int kNcclFloat32 = 7, kNcclSum = 0;

struct Nccl {
  NcclResult (*getVersion)(int *) = nullptr;
  NcclResult (*getUniqueId)(NcclUniqueId *) = nullptr;
  NcclResult (*commInitRank)(NcclComm *, int, NcclUniqueId, int) = nullptr;
  NcclResult (*commDestroy)(NcclComm) = nullptr;
  NcclResult (*commGetAsyncError)(NcclComm, NcclResult *) = nullptr;
  const char *(*getErrorString)(NcclResult) = nullptr;
  NcclResult (*reduce)(const void *, void *, size_t, int, int, int, NcclComm, void *) = nullptr;
  NcclResult (*allGather)(const void *, void *, size_t, int, NcclComm, void *) = nullptr;
  NcclResult (*groupStart)() = nullptr;
  NcclResult (*groupEnd)() = nullptr;
  std::string error;
  bool ok = false;

  Nccl() {
    if (!mmrec::rt::gpuAvailable()) {
      error = "no usable CUDA device";
      return;
    }
    void *lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      error = std::string("cannot load NCCL (libnccl.so.2; set LD_LIBRARY_PATH): ") + dlerror();
      return;
    }
    auto load = [&](auto &fn, const char *sym) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, sym));
      if (!fn && error.empty())
        error = std::string("libnccl.so.2 lacks ") + sym;
    };
    load(getVersion, "ncclGetVersion");
    load(getUniqueId, "ncclGetUniqueId");
    load(commInitRank, "ncclCommInitRank");
    load(commDestroy, "ncclCommDestroy");
    load(commGetAsyncError, "ncclCommGetAsyncError");
    load(getErrorString, "ncclGetErrorString");
    load(reduce, "ncclReduce");
    load(allGather, "ncclAllGather");
    load(groupStart, "ncclGroupStart");
    load(groupEnd, "ncclGroupEnd");
    ok = error.empty();
  }
};

const Nccl &nccl() {
  static Nccl n;
  return n;
}

void ncclCheck(NcclResult r, const char *what) {
  if (r != 0)
    throw mmrec::rt::Error(std::string(what) + ": " +
                           (nccl().getErrorString ? nccl().getErrorString(r) : "NCCL error") +
                           " (NCCL_DEBUG=WARN says more)");
}

class NcclGradSync final : public GradSync {
public:
  explicit NcclGradSync(Comm &c) : c_(c) {
    const Nccl &n = nccl();
    if (!n.ok)
      throw mmrec::rt::Error("NCCL collectives: " + n.error);
    NcclUniqueId id{};
    if (c.rank() == 0)
      ncclCheck(n.getUniqueId(&id), "ncclGetUniqueId");
    c.broadcast(&id, sizeof id, 0); // the NCCL id travels over MPI
    ncclCheck(n.commInitRank(&comm_, c.size(), id, c.rank()), "ncclCommInitRank");
    n.getVersion(&version_);
    stream_ = mmrec::rt::gpu::createStream();
    done_ = mmrec::rt::gpu::createEvent();
  }
  ~NcclGradSync() override {
    for (auto e : events_)
      mmrec::rt::gpu::destroyEvent(e);
    for (auto e : reduced_)
      mmrec::rt::gpu::destroyEvent(e);
    mmrec::rt::gpu::destroyEvent(done_);
    mmrec::rt::gpu::destroyStream(stream_);
    if (comm_)
      nccl().commDestroy(comm_);
  }
  std::string name() const override {
    return "nccl " + std::to_string(version_ / 10000) + "." + std::to_string(version_ / 100 % 100) +
           "." + std::to_string(version_ % 100);
  }
  void begin(float *grads, float *shard, int64_t S) override {
    g_ = grads;
    sh_ = shard;
    S_ = S;
    used_ = 0;
  }
  void ready(int64_t a, int64_t b) override {
    // The collectives' stream waits for the kernels that produced the range.
    if (used_ == events_.size())
      events_.push_back(mmrec::rt::gpu::createEvent());
    mmrec::rt::gpu::Event e = events_[used_++];
    mmrec::rt::gpu::recordEvent(e, nullptr);
    mmrec::rt::gpu::streamWaitEvent(stream_, e);
    const Nccl &n = nccl();
    ncclCheck(n.groupStart(), "ncclGroupStart");
    forOwners(a, b, S_, c_.size(), [&](int r, int64_t x, int64_t y) {
      ncclCheck(n.reduce(g_ + x, r == c_.rank() ? sh_ + (x - r * S_) : nullptr, size_t(y - x),
                         kNcclFloat32, kNcclSum, r, comm_, stream_),
                "ncclReduce");
    });
    ncclCheck(n.groupEnd(), "ncclGroupEnd");
    if (measure_) {
      if (reduced_.size() < used_)
        reduced_.push_back(mmrec::rt::gpu::createEvent());
      mmrec::rt::gpu::recordEvent(reduced_[used_ - 1], stream_);
    }
  }
  void finish() override {
    if (measure_) {
      // Wait for the backward kernels, see which reductions are done, then
      // time the rest.
      mmrec::rt::gpu::synchronizeStream(nullptr);
      overlap_.buckets = int(used_);
      overlap_.doneAtBackwardEnd = 0;
      for (size_t i = 0; i < used_; ++i)
        overlap_.doneAtBackwardEnd += mmrec::rt::gpu::eventDone(reduced_[i]) ? 1 : 0;
      auto t0 = std::chrono::steady_clock::now();
      mmrec::rt::gpu::synchronizeStream(stream_);
      overlap_.waitMs =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    }
    // The default stream (the optimizer) waits for the reductions.
    mmrec::rt::gpu::recordEvent(done_, stream_);
    mmrec::rt::gpu::streamWaitEvent(nullptr, done_);
  }
  void allgather(float *params, int64_t S) override {
    ncclCheck(nccl().allGather(params + c_.rank() * S, params, size_t(S), kNcclFloat32, comm_,
                               nullptr),
              "ncclAllGather");
  }
  std::string asyncError() override {
    NcclResult r = 0;
    if (nccl().commGetAsyncError(comm_, &r) != 0 || (r != 0 && r != 7))
      return std::string("NCCL: ") + nccl().getErrorString(r);
    return {};
  }

private:
  Comm &c_;
  NcclComm comm_ = nullptr;
  int version_ = 0;
  mmrec::rt::Stream stream_ = nullptr;
  mmrec::rt::gpu::Event done_ = nullptr;
  std::vector<mmrec::rt::gpu::Event> events_, reduced_;
  size_t used_ = 0;
  float *g_ = nullptr, *sh_ = nullptr;
  int64_t S_ = 0;
};

} // namespace

bool mmrec::dist::ncclAvailable(std::string *why) {
  const Nccl &n = nccl();
  if (why)
    *why = n.error;
  return n.ok;
}

std::unique_ptr<GradSync> mmrec::dist::ncclGradSync(Comm &comm) {
  return std::make_unique<NcclGradSync>(comm);
}
