// Trainer config files: `mmrec-train --config FILE` (CLI11's INI/TOML reader)
// through the tool's own options and checks (tools/mmrec-train/
// TrainSettings.h). Accepted outcomes: a CLI::Error (a message naming the
// option or the line), or settings that satisfy everything run() relies on:
// each range the options document, finite reals, and the products the
// trainer forms (step × accumulation counters, ranks × tokens per step,
// int(keep)) inside their types. Anything else is a finding.
#include "FuzzCommon.h"
#include "TrainSettings.h"

#include <climits>
#include <cmath>
#include <cstdio>

namespace {

void require(bool ok, const char *what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_config: accepted settings violate: %s\n", what);
    std::abort();
  }
}

/// a × b × ... without int64 overflow (all positive).
bool productFits(std::initializer_list<int64_t> xs) {
  int64_t p = 1;
  for (int64_t x : xs)
    if (x <= 0 || __builtin_mul_overflow(p, x, &p))
      return false;
  return true;
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  if (const char *d = std::getenv("MMREC_FUZZ_SEEDS")) {
    std::ofstream(std::string(d) + "/valid.ini")
        << "# mmrec-train --config\nkernels = \"k/mmrec-tiny.train.json\"\ndata = \"data/kjv\"\n"
           "out = runs/tiny\nsteps = 600\nbatch = 16\nseq-len = 128\ngrad-accum = 2\n"
           "lr = 3e-3\nmin-lr = 3e-4\nwarmup = 50\nweight-decay = 0.1\nbeta1 = 0.9\n"
           "beta2 = 0.95\nclip = 1.0\neval-interval = 100\neval-tokens = 65536\n"
           "ckpt-interval = 200\nkeep = 3\nlog-interval = 1\nseed = 7\ntarget-loss = 0\n"
           "stop-after = 0\nrecompute = true\nresume = false\n";
    std::ofstream(std::string(d) + "/valid.toml")
        << "[default]\nmodel = \"models/mmrec-tiny.mlir\"\ndata = \"d\"\nsteps = 10\n"
           "lr = 0.01\nwarmup = 2\neval-only = true\ncheckpoint = \"c\"\n";
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 64 * 1024)
    return 0;
  static const std::string path = fuzz::scratch("config.ini");
  fuzz::writeFile(path, data, size);
  mmrec::train::Settings s;
  CLI::App app{"mmrec-train"};
  mmrec::train::addSettingsOptions(app, s);
  const char *argv[] = {"mmrec-train", "--config", path.c_str()};
  try {
    app.parse(3, argv);
    mmrec::train::validateSettings(s);
    // What run() checks once the model is known (T_max of mmrec-tiny).
    mmrec::train::validateSettingsForModel(s, 256, "mmrec-tiny");
  } catch (const CLI::Error &) {
    return 0;
  }
  // The settings run() is given: every documented range, finite reals.
  require(s.steps >= 1 && s.batch >= 1 && s.gradAccum >= 1, "positive counts");
  require(s.seqLen >= 2 && s.seqLen <= 256, "seq-len in [2, T_max]");
  require(s.warmup >= 0 && s.warmup <= s.steps, "warmup in [0, steps]");
  require(std::isfinite(s.lr) && s.lr >= 0 && s.lr <= 10, "lr in [0, 10]");
  require(std::isfinite(s.minLr) && s.minLr >= 0 && s.minLr <= s.lr, "min-lr in [0, lr]");
  require(std::isfinite(s.weightDecay) && s.weightDecay >= 0 && s.weightDecay <= 1,
          "weight-decay in [0, 1]");
  require(std::isfinite(s.beta1) && s.beta1 >= 0 && s.beta1 < 1, "beta1 in [0, 1)");
  require(std::isfinite(s.beta2) && s.beta2 >= 0 && s.beta2 < 1, "beta2 in [0, 1)");
  require(std::isfinite(s.clip) && s.clip >= 0, "clip finite, >= 0");
  require(std::isfinite(s.targetLoss) && s.targetLoss >= 0, "target-loss finite, >= 0");
  require(s.evalInterval >= 1 && s.evalTokens >= 1 && s.ckptInterval >= 0 &&
              s.logInterval >= 1 && s.stopAfter >= 0,
          "intervals positive");
  require(s.keep >= 1 && s.keep <= INT_MAX, "keep in [1, INT_MAX] (saveCheckpoint takes an int)");
  // mmrec-train's arithmetic, with up to 2^16 ranks: the sample counter
  // (step - 1) × grad-accum + a + 1 and the tokens of a step W × B × T × A.
  require(productFits({s.steps, s.gradAccum, 2}), "steps × grad-accum fits int64");
  require(productFits({int64_t(1) << 16, s.batch, s.seqLen, s.gradAccum}),
          "ranks × batch × seq-len × grad-accum fits int64");
  return 0;
}
