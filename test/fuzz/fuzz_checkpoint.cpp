// Checkpoint state: loadCheckpoint and loadOptimizerState (whole and for
// one rank of another rank count) with valid weights and optimizer shards
// and an arbitrary trainer.json.
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
  // Two optimizer shards, as two ranks write them, and a trainer.json that
  // lists them: the second seed.
  const int64_t P = layout.numel(), h = P / 2;
  nlohmann::json j = nlohmann::json::parse(std::ifstream(ck + "/trainer.json"));
  for (int r = 0; r < 2; ++r) {
    const int64_t lo = r ? h : 0, hi = r ? P : h;
    std::vector<float> m(size_t(hi - lo), 0.5f), v(size_t(hi - lo), 0.25f);
    std::string name = "optimizer-0000" + std::to_string(r) + "-of-00002.safetensors";
    mmrec::train::writeSafetensors(ck + "/" + name,
                                   {{"m", {hi - lo}, m.data()}, {"v", {hi - lo}, v.data()}});
    std::ifstream in(ck + "/" + name, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    j["files"][name] = mmrec::train::crc32(bytes.data(), bytes.size());
    j["optimizer_shards"].push_back({{"file", name}, {"lo", lo}, {"hi", hi}});
  }
  std::ofstream(ck + "/trainer-sharded.json") << j.dump();
  fuzz::seed(ck + "/trainer-sharded.json", "valid-trainer-sharded.json");
  // The target rewrites trainer.json of this checkpoint.
  std::filesystem::rename(ck, dir() + "/ck");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const mmrec::train::ParamLayout layout(fuzz::testConfig());
  fuzz::writeFile(dir() + "/ck/trainer.json", data, size);
  std::vector<float> params, m, v;
  try {
    mmrec::train::loadCheckpoint(dir() + "/ck", layout, "mmrec-test", params, nullptr);
  } catch (const mmrec::rt::Error &) {
  }
  const int64_t P = layout.numel();
  for (auto [lo, hi] : {std::pair<int64_t, int64_t>{0, P}, {P / 3, 2 * P / 3}}) {
    try {
      mmrec::train::loadOptimizerState(dir() + "/ck", layout, lo, hi, m, v);
    } catch (const mmrec::rt::Error &) {
    }
  }
  return 0;
}
