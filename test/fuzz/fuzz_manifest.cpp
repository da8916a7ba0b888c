// Training manifests: the configuration of NAME.train.json (what sizes every
// allocation of the trainer), then the parameter layout it implies.
#include "FuzzCommon.h"

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  if (const char *d = std::getenv("MMREC_FUZZ_SEEDS"))
    std::ofstream(std::string(d) + "/valid.json")
        << R"({"name": "mmrec-test", "library": "mmrec-test.train.so", "config": {"name": "mmrec-test",
  "vocab_size": 37, "hidden_dim": 24, "num_layers": 2, "num_heads": 3, "num_memories": 2,
  "memory_size": 5, "ffn_dim": 40, "chunk_size": 4, "max_seq_len": 64, "decay_rank": 3,
  "gate": "dense", "decay_init": 0.99, "log_clamp_min": -50.0, "log_clamp_max": 0.0,
  "norm_eps": 1e-06, "param_count": 13568}, "kernels": []})";
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string text(reinterpret_cast<const char *>(data), size);
  try {
    mmrec::train::ModelConfig c = mmrec::train::ModelConfig::fromManifest(text, "fuzz.json");
    mmrec::train::ParamLayout layout(c);
    // A small model's initialization (the sizes are validated above).
    if (layout.numel() < (1 << 20))
      (void)mmrec::train::initParams(c, layout, 1);
  } catch (const mmrec::rt::Error &) {
  }
  return 0;
}
