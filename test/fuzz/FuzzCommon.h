//===- FuzzCommon.h - shared pieces of the libFuzzer targets ----*- C++ -*-===//
//
// Each target feeds one kind of input the trainer reads to its reader and
// accepts exactly two outcomes: success, or mmrec::rt::Error (a clear
// message). Anything else — a crash, a sanitizer report, another exception
// (std::bad_alloc from an unchecked size, json errors that escaped) — is a
// finding. LLVMFuzzerInitialize writes a valid seed into $MMREC_FUZZ_SEEDS.
//
//===----------------------------------------------------------------------===//
#ifndef MMREC_TEST_FUZZ_COMMON_H
#define MMREC_TEST_FUZZ_COMMON_H

#include "mmrec/train_io.h"

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <unistd.h>

namespace fuzz {

/// The odd-sized `test` configuration (scripts/gen-models.py).
inline mmrec::train::ModelConfig testConfig() {
  mmrec::train::ModelConfig c;
  c.name = "mmrec-test";
  c.V = 37, c.D = 24, c.L = 2, c.H = 3, c.Nm = 2, c.M = 5, c.F = 40, c.C = 4, c.Tmax = 64, c.r = 3;
  return c;
}

inline std::string scratch(const std::string &name) {
  return "/tmp/mmrec-fuzz-" + std::to_string(getpid()) + "-" + name;
}

inline void writeFile(const std::string &path, const uint8_t *data, size_t n) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char *>(data),
                                                                 std::streamsize(n));
}

/// Copies `path` into the seed directory as `name` (if the variable is set).
inline void seed(const std::string &path, const std::string &name) {
  if (const char *dir = std::getenv("MMREC_FUZZ_SEEDS")) {
    std::ifstream in(path, std::ios::binary);
    std::ofstream(std::string(dir) + "/" + name, std::ios::binary) << in.rdbuf();
  }
}

} // namespace fuzz

#endif
