// Token shards: TokenShard::read on arbitrary bytes.
#include "FuzzCommon.h"

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  std::string p = fuzz::scratch("seed.bin");
  mmrec::train::TokenShard::write(p, 37, {1, 2, 3, 36, 0, 7, 7, 9});
  fuzz::seed(p, "valid.bin");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const std::string path = fuzz::scratch("shard.bin");
  fuzz::writeFile(path, data, size);
  try {
    mmrec::train::TokenShard s = mmrec::train::TokenShard::read(path, 37);
    std::vector<int32_t> batch;
    if (s.tokens.size() >= 4)
      mmrec::train::sampleBatch(s, 2, 4, 1, 1, batch);
  } catch (const mmrec::rt::Error &) {
  }
  return 0;
}
