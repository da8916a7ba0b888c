// safetensors weights: readSafetensors on arbitrary bytes, against the
// layout of the `test` configuration.
#include "FuzzCommon.h"

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  mmrec::train::ParamLayout layout(fuzz::testConfig());
  std::vector<float> p = mmrec::train::initParams(fuzz::testConfig(), layout, 1);
  std::vector<mmrec::train::NamedTensor> t;
  for (const auto &i : layout.tensors())
    t.push_back({i.name, i.shape, p.data() + i.offset});
  std::string path = fuzz::scratch("seed.safetensors");
  mmrec::train::writeSafetensors(path, t, {{"format", "pt"}});
  fuzz::seed(path, "valid.safetensors");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const mmrec::train::ParamLayout layout(fuzz::testConfig());
  static const std::string path = fuzz::scratch("x.safetensors");
  fuzz::writeFile(path, data, size);
  std::vector<float> out;
  try {
    mmrec::train::readSafetensors(path, layout, "", out);
  } catch (const mmrec::rt::Error &) {
  }
  return 0;
}
