//===- library.cpp - the generated training library, parameters, init ----===//

#include "mmrec/train.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <dlfcn.h>
#include <fstream>

using namespace mmrec::train;
using nlohmann::json;

namespace {

std::string dirOf(const std::string &path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

} // namespace

KernelLibrary::KernelLibrary(const std::string &manifestPath) : path_(manifestPath) {
  std::ifstream in(manifestPath);
  if (!in)
    throw Error(manifestPath + ": cannot open the training manifest (run mmrec-compile on the "
                               "model file first)");
  json j;
  try {
    in >> j;
    const json &c = j.at("config");
    cfg_.name = c.at("name").get<std::string>();
    cfg_.V = c.at("vocab_size").get<int64_t>();
    cfg_.D = c.at("hidden_dim").get<int64_t>();
    cfg_.L = c.at("num_layers").get<int64_t>();
    cfg_.H = c.at("num_heads").get<int64_t>();
    cfg_.Nm = c.at("num_memories").get<int64_t>();
    cfg_.M = c.at("memory_size").get<int64_t>();
    cfg_.F = c.at("ffn_dim").get<int64_t>();
    cfg_.C = c.at("chunk_size").get<int64_t>();
    cfg_.Tmax = c.at("max_seq_len").get<int64_t>();
    cfg_.r = c.at("decay_rank").get<int64_t>();
    cfg_.perHead = c.at("gate").get<std::string>() == "per_head";
    cfg_.decayInit = c.at("decay_init").get<double>();
    cfg_.clampMin = c.at("log_clamp_min").get<double>();
    cfg_.clampMax = c.at("log_clamp_max").get<double>();
    cfg_.eps = c.at("norm_eps").get<double>();
    cfg_.paramCount = c.at("param_count").get<int64_t>();
  } catch (const json::exception &e) {
    throw Error(manifestPath + ": malformed training manifest: " + e.what());
  }
  if (cfg_.V <= 0 || cfg_.D <= 0 || cfg_.L <= 0 || cfg_.H <= 0 || cfg_.Nm <= 0 || cfg_.M <= 0 ||
      cfg_.F <= 0 || cfg_.C <= 0 || cfg_.r <= 0 || cfg_.D % cfg_.H || cfg_.D % cfg_.Nm)
    throw Error(manifestPath + ": config: sizes must be positive with D divisible by H and N_m");
  {
    // Absurd sizes are refused before anything is sized from them.
    long double D = cfg_.D, params = cfg_.L * (6.0L * D * D + 2.0L * D * cfg_.r + cfg_.M * D +
                                               3.0L * D * cfg_.F) + (long double)cfg_.V * D;
    if (params > 1e13L || cfg_.V > 65536 || cfg_.C > cfg_.Tmax || cfg_.Tmax > (1 << 24))
      throw Error(manifestPath + ": config: sizes out of range (about " +
                  std::to_string((double)params) + " parameters, vocab_size " +
                  std::to_string(cfg_.V) + ", chunk_size " + std::to_string(cfg_.C) +
                  ", max_seq_len " + std::to_string(cfg_.Tmax) + ")");
  }
  std::string lib = dirOf(manifestPath) + "/" + j.value("library", std::string());
  handle_ = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle_)
    throw Error(lib + ": cannot load the training library: " + dlerror());
  for (const json &k : j.at("kernels")) {
    std::string name = k.at("name").get<std::string>();
    Sig s;
    s.arrays = k.at("arrays").size();
    s.indices = k.at("indices").size();
    s.fn = dlsym(handle_, ("_mlir_ciface_" + name).c_str());
    if (!s.fn)
      throw Error(lib + ": kernel " + name + " is missing");
    kernels_[name.substr(6)] = s; // without "train_"
  }
}

KernelLibrary::~KernelLibrary() {
  if (handle_)
    dlclose(handle_);
}

void *KernelLibrary::lookup(const std::string &name, size_t arrays, size_t indices) {
  auto it = kernels_.find(name);
  if (it == kernels_.end())
    throw Error(path_ + ": no kernel train_" + name);
  if (it->second.arrays != arrays || it->second.indices != indices)
    throw Error("kernel train_" + name + ": called with " + std::to_string(arrays) +
                " arrays and " + std::to_string(indices) + " sizes, the library has " +
                std::to_string(it->second.arrays) + " and " + std::to_string(it->second.indices));
  return it->second.fn;
}

ParamLayout::ParamLayout(const ModelConfig &c) {
  auto add = [&](std::string name, std::vector<int64_t> shape, bool decay) {
    ParamInfo p;
    p.name = std::move(name);
    p.shape = std::move(shape);
    p.numel = 1;
    for (int64_t s : p.shape)
      p.numel *= s;
    p.offset = numel_;
    p.decay = decay;
    numel_ += p.numel;
    byName_[p.name] = tensors_.size();
    tensors_.push_back(std::move(p));
  };
  const int64_t D = c.D, F = c.F;
  add("embed", {c.V, D}, true);
  for (int64_t l = 0; l < c.L; ++l) {
    auto n = [&](const char *s) { return layerName(l, s); };
    add(n("w_in"), {D}, false);
    for (const char *w : {"W_q", "W_k", "W_v", "W_z"})
      add(n(w), {D, D}, true);
    add(n("A_gamma"), {D, c.r}, true);
    add(n("B_gamma"), {c.r, D}, true);
    add(n("lambda"), {D}, false);
    if (c.perHead)
      add(n("W_g"), {c.H, c.dh(), c.dh()}, true);
    else
      add(n("W_g"), {D, D}, true);
    add(n("b_g"), {D}, false);
    add(n("S"), {c.Nm, c.M, c.dm()}, true);
    add(n("mu"), {c.Nm, c.M}, false);
    add(n("rho"), {c.Nm, 3}, false);
    add(n("W_o"), {D, D}, true);
    add(n("w_ffn"), {D}, false);
    add(n("W_1"), {D, F}, true);
    add(n("W_3"), {D, F}, true);
    add(n("W_2"), {F, D}, true);
  }
  add("final_norm", {D}, false);
  // fp32 weights, gradients and two AdamW moments: refuse a configuration
  // that cannot fit before anything is allocated.
  if ((long double)numel_ * 16 > physicalMemoryBytes())
    throw Error("parameter layout: " + std::to_string(numel_) + " parameters need " +
                std::to_string(int64_t((long double)numel_ * 16 / (1 << 20))) +
                " MiB (weights, gradients, AdamW state), more than this machine has");
  if (c.paramCount && c.paramCount != numel_)
    throw Error("parameter layout: " + std::to_string(numel_) +
                " parameters, the model file's configuration says " +
                std::to_string(c.paramCount));
}

const ParamInfo &ParamLayout::get(const std::string &name) const {
  auto it = byName_.find(name);
  if (it == byName_.end())
    throw Error("no parameter named '" + name + "'");
  return tensors_[it->second];
}

std::vector<float> mmrec::train::initParams(const ModelConfig &c, const ParamLayout &layout,
                                            uint64_t seed) {
  std::vector<float> p(size_t(layout.numel()), 0.0f);
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  const double logitInit = std::log(c.decayInit / (1.0 - c.decayInit));
  const double outStd = 0.02 / std::sqrt(2.0 * double(c.L));
  for (const ParamInfo &t : layout.tensors()) {
    std::string base = t.name.substr(t.name.rfind('.') + 1);
    float *x = p.data() + t.offset;
    double stdv = 0.0, fill = 0.0;
    if (base == "W_o" || base == "W_2")
      stdv = outStd;
    else if (base == "embed" || base == "W_q" || base == "W_k" || base == "W_v" || base == "W_z" ||
             base == "W_1" || base == "W_3" || base == "A_gamma" || base == "W_g" || base == "S")
      stdv = 0.02;
    else if (base == "lambda" || base == "mu")
      fill = logitInit;
    else if (base == "w_in" || base == "w_ffn" || base == "final_norm")
      fill = 1.0;
    // b_g, B_gamma, rho: 0.
    for (int64_t i = 0; i < t.numel; ++i)
      x[i] = float(stdv > 0 ? normal(rng) * stdv : fill);
  }
  return p;
}
