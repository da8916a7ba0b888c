//===- Progress.h - a progress bar for the tools' long work ------*- C++ -*-===//
//
// `Progress p("encoding", total); p.advance(n); p.done();` draws
//   encoding [##########··········]  50%  (1,234 / 2,468)
// on standard error, redrawn in place when standard error is a terminal
// (at most every 100 ms), and otherwise one line when done, so logs and CI
// output stay short. Used by mmrec-data (tokenizing) and mmrec-compile (its
// stages).
//
//===----------------------------------------------------------------------===//
#ifndef MMREC_TOOLS_COMMON_PROGRESS_H
#define MMREC_TOOLS_COMMON_PROGRESS_H

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <unistd.h>

namespace mmrec::tools {

class Progress {
public:
  Progress(std::string what, int64_t total)
      : what_(std::move(what)), total_(total > 0 ? total : 1), tty_(isatty(2) != 0),
        start_(std::chrono::steady_clock::now()) {}
  ~Progress() { done(); }
  /// n more units of work finished; `stage` names the current one.
  void advance(int64_t n = 1, const std::string &stage = "") {
    cur_ = std::min(total_, cur_ + n);
    stage_ = stage;
    auto now = std::chrono::steady_clock::now();
    if (tty_ && (now - last_ > std::chrono::milliseconds(100) || cur_ == total_)) {
      last_ = now;
      draw('\r');
    }
  }
  /// Finishes the bar (once): a final line with the elapsed time.
  void done() {
    if (finished_)
      return;
    finished_ = true;
    cur_ = total_;
    stage_.clear();
    draw(tty_ ? '\r' : '\0');
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::fprintf(stderr, " in %.1f s\n", s);
  }

private:
  void draw(char lead) {
    constexpr int kWidth = 24;
    int filled = int(kWidth * cur_ / total_);
    std::string bar(size_t(filled), '#');
    bar.append(size_t(kWidth - filled), '.');
    if (lead)
      std::fputc(lead, stderr);
    std::fprintf(stderr, "%s [%s] %3d%% (%lld/%lld)%s%s%s", what_.c_str(), bar.c_str(),
                 int(100 * cur_ / total_), static_cast<long long>(cur_),
                 static_cast<long long>(total_), stage_.empty() ? "" : " ", stage_.c_str(),
                 tty_ ? "\033[K" : ""); // clear the rest of a redrawn line
    std::fflush(stderr);
  }
  std::string what_, stage_;
  int64_t total_, cur_ = 0;
  bool tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_{};
};

} // namespace mmrec::tools

#endif
