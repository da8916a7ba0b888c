//===- mmrec-generate.cpp - sample text from a checkpoint -----------------===//
//
//   mmrec-generate --model models/mmrec-tiny.mlir --checkpoint CKPT
//                  --data DIR --prompt "In the beginning" [--max-tokens 200]
//                  [--temperature 0.8] [--top-k 40] [--samples 1] [--seed 1]
//
// Feeds the prompt token by token and then samples, with the recurrent state
// carried from token to token (mmrec::train::Generator): the memory used is
// the same for the first and the ten-thousandth token. The tokenizer is the
// one mmrec-data wrote beside the shards (DIR/tokenizer.json: bytes, or a
// SentencePiece model). Prints the text of each sample, then tokens/s and
// the state's size.
//
//===----------------------------------------------------------------------===//

#include "mmrec/train_io.h"
#include "tools/common/Tokenizer.h"

#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <unistd.h>

using namespace mmrec::train;
namespace fs = std::filesystem;

namespace {

std::string selfDir() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "." : p.parent_path().string();
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"mmrec-generate: sample text from an mmrec-train checkpoint"};
  std::string model, kernels, checkpoint, data, prompt = "In the beginning";
  int64_t maxTokens = 200, samples = 1, topK = 40;
  double temperature = 0.8;
  uint64_t seed = 1, randomInit = 0;
  bool profile = false;
  std::string device = "auto", matmul = "auto";
  app.add_option("--model", model, "Model file (.mlir); compiled with mmrec-compile");
  app.add_option("--device", device, "auto (the GPU when there is one), cpu or gpu")
      ->check(CLI::IsMember({"auto", "cpu", "gpu"}));
  app.add_option("--kernels", kernels, "A training manifest (NAME.train.json) instead of --model");
  auto *ck = app.add_option("--checkpoint", checkpoint, "Checkpoint directory (mmrec-train)");
  auto *ri = app.add_option("--random-init", randomInit,
                            "No checkpoint: weights initialized from this seed (MMREC_SPEC "
                            "section 4), to measure speed");
  ck->excludes(ri);
  app.add_option("--matmul", matmul,
                 "Matrix products: auto (bf16 on a GPU, fp32 on the CPU), fp32, or bf16 (a bf16 "
                 "copy of the weights times the activations rounded to bf16, fp32 accumulation)")
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}));
  app.add_flag("--profile", profile, "Time every kernel and product and print the breakdown");
  app.add_option("--data", data, "The data directory of the run (its tokenizer.json)")->required();
  app.add_option("--prompt", prompt, "Text to start from");
  app.add_option("--max-tokens", maxTokens, "Tokens to sample")->check(CLI::PositiveNumber);
  app.add_option("--samples", samples, "Samples generated side by side")->check(CLI::PositiveNumber);
  app.add_option("--temperature", temperature, "Softmax temperature (0: greedy)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--top-k", topK, "Sample among the k most likely tokens (0: all)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--seed", seed, "Sampling seed");
  CLI11_PARSE(app, argc, argv);
  try {
    if (model.empty() == kernels.empty())
      throw Error("give one of --model or --kernels");
    if (checkpoint.empty() && app.count("--random-init") == 0)
      throw Error("give one of --checkpoint or --random-init");
    if (profile)
      mmrec::train::Profile::get().start();
    const bool gpu = device == "gpu" || (device == "auto" && mmrec::rt::gpuAvailable());
    if (gpu && !mmrec::rt::gpuAvailable())
      throw Error("--device gpu: no usable CUDA device here");
    if (kernels.empty()) {
      std::string dir = fs::temp_directory_path() / ("mmrec-generate-" + std::to_string(getpid()));
      std::string cmd = "'" + selfDir() + "/mmrec-compile' '" + model + "' -o '" + dir +
                        "' --target=" + (gpu ? "all" : "cpu") + " > /dev/null";
      if (std::system(cmd.c_str()) != 0)
        throw Error("mmrec-compile failed on " + model);
      kernels = dir + "/" + fs::path(model).stem().string() + ".train.json";
    }
    KernelLibrary lib(kernels, gpu ? mmrec::rt::DeviceKind::gpu : mmrec::rt::DeviceKind::cpu);
    const ModelConfig &c = lib.config();
    ParamLayout layout(c);
    std::vector<float> params;
    TrainerState st;
    if (checkpoint.empty())
      params = initParams(c, layout, randomInit);
    else
      st = loadCheckpoint(checkpoint, layout, c.name, params, nullptr);
    Tokenizer tok(data);
    std::vector<int32_t> ids = tok.encode(prompt);
    if (ids.empty())
      throw Error("--prompt: empty after tokenization");
    for (int32_t id : ids)
      if (id >= c.V)
        throw Error("--prompt: token " + std::to_string(id) + " is outside the model's vocabulary");
    // The weights where the library runs.
    FBuf weights;
    weights.reset(lib.device(), int64_t(params.size()));
    weights.upload(params.data(), int64_t(params.size()));
    Generator gen(lib, layout, samples);
    gen.setBf16Weights(matmul == "bf16" || (matmul == "auto" && gpu));
    std::mt19937_64 rng(seed);
    std::vector<std::vector<int32_t>> out(static_cast<size_t>(samples));
    std::vector<int32_t> cur(static_cast<size_t>(samples));
    const std::vector<float> *logits = nullptr;
    auto t0 = std::chrono::steady_clock::now();
    for (int32_t id : ids) {
      std::fill(cur.begin(), cur.end(), id);
      logits = &gen.step(weights.data(), cur.data());
    }
    std::vector<std::pair<float, int32_t>> cand;
    for (int64_t n = 0; n < maxTokens; ++n) {
      for (int64_t b = 0; b < samples; ++b) {
        const float *lg = logits->data() + b * c.V;
        cand.clear();
        for (int32_t v = 0; v < c.V; ++v)
          cand.push_back({lg[v], v});
        int32_t pick;
        if (temperature == 0) {
          pick = std::max_element(cand.begin(), cand.end())->second;
        } else {
          size_t k = topK > 0 ? std::min<size_t>(size_t(topK), cand.size()) : cand.size();
          std::partial_sort(cand.begin(), cand.begin() + int64_t(k), cand.end(),
                            [](auto &a, auto &b) { return a.first > b.first; });
          std::vector<double> w(k);
          for (size_t i = 0; i < k; ++i)
            w[i] = std::exp((cand[i].first - cand[0].first) / temperature);
          std::discrete_distribution<size_t> dist(w.begin(), w.end());
          pick = cand[dist(rng)].second;
        }
        cur[size_t(b)] = pick;
        out[size_t(b)].push_back(pick);
      }
      logits = &gen.step(weights.data(), cur.data());
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (int64_t b = 0; b < samples; ++b)
      std::cout << "--- sample " << b + 1 << " (step " << st.step << ")\n"
                << prompt << tok.decode(out[size_t(b)]) << "\n";
    std::cout << "--- " << (ids.size() + size_t(maxTokens)) * size_t(samples) << " tokens in "
              << s << " s (" << double((ids.size() + size_t(maxTokens)) * size_t(samples)) / s
              << " tokens/s), state " << gen.stateBytes() << " bytes, constant per token, "
              << (gen.bf16Weights() ? "bf16" : "fp32") << " products\n";
    if (profile)
      std::cout << "time per kernel (--profile):\n" << mmrec::train::Profile::get().report();
  } catch (const std::exception &e) {
    std::cerr << "mmrec-generate: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
