// Checkpoint state: loadCheckpoint with a valid model.safetensors and an
// arbitrary trainer.json.
#include "FuzzCommon.h"

#include <filesystem>

static std::string dir() { return fuzz::scratch("ckpt"); }

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  mmrec::train::ModelConfig c = fuzz::testConfig();
  mmrec::train::ParamLayout layout(c);
  std::vector<float> p = mmrec::train::initParams(c, layout, 1);
  mmrec::train::TrainerState st;
  st.step = 7;
  st.model = c.name;
  std::filesystem::remove_all(dir());
  std::string ck = mmrec::train::saveCheckpoint(dir(), layout, p, nullptr, st, 1);
  fuzz::seed(ck + "/trainer.json", "valid-trainer.json");
  // The target rewrites trainer.json of this checkpoint.
  std::filesystem::rename(ck, dir() + "/ck");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const mmrec::train::ParamLayout layout(fuzz::testConfig());
  fuzz::writeFile(dir() + "/ck/trainer.json", data, size);
  std::vector<float> params;
  try {
    mmrec::train::loadCheckpoint(dir() + "/ck", layout, "mmrec-test", params, nullptr);
  } catch (const mmrec::rt::Error &) {
  }
  return 0;
}
