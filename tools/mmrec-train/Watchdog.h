//===- Watchdog.h - end a multi-rank job that stops making progress -*- C++ -*-===//
//
// A rank waiting in a collective for a peer that hangs (stopped, deadlocked,
// a GPU stuck) would wait forever: MPI's and NCCL's blocking calls have no
// timeout. The trainer pets the watchdog at every phase of a step; a thread
// checks once a second and, when the current phase has run longer than the
// timeout (or NCCL reports an asynchronous error), prints what the rank was
// waiting for and ends the process with status 4. The launcher (mpirun,
// srun) then ends the other ranks; the last checkpoint is untouched because
// checkpoints are renamed into place only when complete.
//
//===----------------------------------------------------------------------===//
#ifndef MMREC_TOOLS_TRAIN_WATCHDOG_H
#define MMREC_TOOLS_TRAIN_WATCHDOG_H

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace mmrec::train {

class Watchdog {
public:
  /// `seconds` ≤ 0: disarmed (no thread). `probe` returns a non-empty
  /// message for an asynchronous failure (NCCL); may be empty.
  Watchdog(double seconds, int rank, std::function<std::string()> probe = {})
      : seconds_(seconds), rank_(rank), probe_(std::move(probe)) {
    if (seconds_ > 0)
      thread_ = std::thread([this] { loop(); });
  }
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable())
      thread_.join();
  }
  Watchdog(const Watchdog &) = delete;
  Watchdog &operator=(const Watchdog &) = delete;

  /// Starts phase `what` (e.g. "step 12"): its clock restarts.
  void pet(std::string what) {
    std::lock_guard<std::mutex> lock(mu_);
    phase_ = std::move(what);
    since_ = Clock::now();
  }

private:
  using Clock = std::chrono::steady_clock;
  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, std::chrono::seconds(1));
      if (stop_)
        break;
      std::string why;
      if (probe_) {
        lock.unlock();
        why = probe_();
        lock.lock();
      }
      const double waited = std::chrono::duration<double>(Clock::now() - since_).count();
      if (why.empty() && waited > seconds_) {
        char buf[160];
        std::snprintf(buf, sizeof buf,
                      "no progress for %.0f s (--dist-timeout %.0f): a peer rank died or hangs",
                      waited, seconds_);
        why = buf;
      }
      if (!why.empty()) {
        std::fprintf(stderr,
                     "mmrec-train: error (rank %d): %s during %s; ending the job (the last "
                     "checkpoint is intact)\n",
                     rank_, why.c_str(), phase_.c_str());
        std::fflush(stderr);
        std::fflush(stdout);
        // Not exit(): the main thread is blocked in a collective; static
        // destructors (MPI_Finalize) would wait for the peer too.
        std::_Exit(4);
      }
    }
  }

  double seconds_;
  int rank_;
  std::function<std::string()> probe_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string phase_ = "startup";
  Clock::time_point since_ = Clock::now();
  bool stop_ = false;
  std::thread thread_;
};

} // namespace mmrec::train

#endif
