//===- library.cpp - the generated training library, parameters, init ----===//

#include "json_util.h"
#include "mmrec/train.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <dlfcn.h>
#include <fstream>
#include <thread>

using namespace mmrec::train;
using nlohmann::json;

namespace {

std::string dirOf(const std::string &path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

} // namespace

ModelConfig ModelConfig::fromManifest(const std::string &text, const std::string &where) {
  ModelConfig cfg;
  try {
    json j = json::parse(text);
    const json &c = j.at("config");
    auto field = [&](const char *key) {
      return detail::jsonInt(c.at(key), where + ": config: " + key);
    };
    cfg.name = c.at("name").get<std::string>();
    cfg.V = field("vocab_size");
    cfg.D = field("hidden_dim");
    cfg.L = field("num_layers");
    cfg.H = field("num_heads");
    cfg.Nm = field("num_memories");
    cfg.M = field("memory_size");
    cfg.F = field("ffn_dim");
    cfg.C = field("chunk_size");
    cfg.Tmax = field("max_seq_len");
    cfg.r = field("decay_rank");
    std::string gate = c.at("gate").get<std::string>();
    if (gate != "dense" && gate != "per_head")
      throw Error(where + ": config: gate must be dense or per_head, got '" + gate + "'");
    cfg.perHead = gate == "per_head";
    cfg.decayInit = c.at("decay_init").get<double>();
    cfg.clampMin = c.at("log_clamp_min").get<double>();
    cfg.clampMax = c.at("log_clamp_max").get<double>();
    cfg.eps = c.at("norm_eps").get<double>();
    cfg.paramCount = field("param_count");
  } catch (const json::exception &e) {
    throw Error(where + ": malformed training manifest: " + e.what());
  }
  if (cfg.V <= 0 || cfg.D <= 0 || cfg.L <= 0 || cfg.H <= 0 || cfg.Nm <= 0 || cfg.M <= 0 ||
      cfg.F <= 0 || cfg.C <= 0 || cfg.r <= 0 || cfg.D % cfg.H || cfg.D % cfg.Nm)
    throw Error(where + ": config: sizes must be positive with D divisible by H and N_m");
  // Absurd sizes are refused before anything is sized from them.
  long double D = cfg.D, params = cfg.L * (6.0L * D * D + 2.0L * D * cfg.r + cfg.M * D +
                                           3.0L * D * cfg.F) + (long double)cfg.V * D;
  if (params > 1e13L || cfg.V > 65536 || cfg.C > cfg.Tmax || cfg.Tmax > (1 << 24))
    throw Error(where + ": config: sizes out of range (about " + std::to_string((double)params) +
                " parameters, vocab_size " + std::to_string(cfg.V) + ", chunk_size " +
                std::to_string(cfg.C) + ", max_seq_len " + std::to_string(cfg.Tmax) + ")");
  if (!(cfg.decayInit > 0 && cfg.decayInit < 1))
    throw Error(where + ": config: decay_init must be in (0, 1)");
  if (!(cfg.clampMin <= cfg.clampMax && cfg.clampMax <= 0 && cfg.clampMin > -1e4))
    throw Error(where + ": config: need -1e4 < log_clamp_min <= log_clamp_max <= 0");
  if (!(cfg.eps > 0 && cfg.eps < 1))
    throw Error(where + ": config: norm_eps must be in (0, 1)");
  return cfg;
}

KernelLibrary::KernelLibrary(const std::string &manifestPath, rt::DeviceKind device)
    : path_(manifestPath), device_(device) {
  std::ifstream in(manifestPath);
  if (!in)
    throw Error(manifestPath + ": cannot open the training manifest (run mmrec-compile on the "
                               "model file first)");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  cfg_ = ModelConfig::fromManifest(text, manifestPath);
  try {
    json j = json::parse(text);
    const bool gpu = device == rt::DeviceKind::gpu;
    const char *key = gpu ? "gpu_library" : "library";
    if (gpu && (!j.contains(key) || j.at(key).is_null()))
      throw Error(manifestPath + ": no GPU training library (the model was compiled with "
                                 "--target=cpu; compile it with --target=all or nvptx)");
    std::string name = j.at(key).get<std::string>();
    if (name.empty() || name.find('/') != std::string::npos)
      throw Error(manifestPath + ": '" + key + "' must name a file beside the manifest, got '" +
                  name + "'");
    if (gpu && !rt::gpuAvailable())
      throw Error(manifestPath + ": the GPU training library needs a CUDA device, and this "
                                 "runtime found none (or was built without CUDA)");
    std::string lib = dirOf(manifestPath) + "/" + name;
    handle_ = dlopen(lib.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle_)
      throw Error(lib + ": cannot load the training library: " + dlerror());
    for (const json &k : j.at("kernels")) {
      std::string kname = k.at("name").get<std::string>();
      if (kname.rfind("train_", 0) != 0)
        throw Error(manifestPath + ": kernel '" + kname + "' is not a train_ kernel");
      Sig s;
      s.arrays = k.at("arrays").size();
      s.indices = k.at("indices").size();
      s.fn = dlsym(handle_, ("_mlir_ciface_" + kname).c_str());
      if (!s.fn)
        throw Error(lib + ": kernel " + kname + " is missing");
      kernels_[kname.substr(6)] = s; // without "train_"
    }
  } catch (const json::exception &e) {
    throw Error(manifestPath + ": malformed training manifest: " + e.what());
  } catch (...) {
    if (handle_)
      dlclose(handle_);
    handle_ = nullptr;
    throw;
  }
}

KernelLibrary::~KernelLibrary() {
  if (handle_)
    dlclose(handle_);
}

Profile &Profile::get() {
  static Profile p;
  return p;
}

static double nowMs();

void Profile::start() {
  enabled = true;
  startMs_ = nowMs();
  pausedAt_ = -1;
  pausedMs_ = 0;
}

void Profile::pause() {
  if (!enabled || pausedAt_ >= 0)
    return;
  enabled = false;
  pausedAt_ = nowMs();
}

void Profile::resume() {
  if (pausedAt_ < 0)
    return;
  pausedMs_ += nowMs() - pausedAt_;
  pausedAt_ = -1;
  enabled = true;
}

std::string Profile::kindOf(const std::string &name) {
  auto starts = [&](const char *p) { return name.rfind(p, 0) == 0; };
  if (name == "gemm" || starts("gemm:"))
    return "products";
  if (starts("gated_"))
    return "recurrence";
  if (starts("level1") || starts("mem_scan") || starts("slot_softmax") || starts("mdi_") ||
      starts("combine") || starts("gemm_mdi") || starts("decode_mdi") || starts("decode_level1"))
    return "memory hierarchy";
  if (starts("adamw") || name == "sumsq")
    return "optimizer";
  if (starts("rmsnorm") || starts("swiglu") || starts("decay") || starts("to_bf16") ||
      starts("embed") || starts("xent"))
    return "elementwise";
  return "other";
}

std::string Profile::report() const {
  std::vector<std::pair<std::string, Entry>> v(entries.begin(), entries.end());
  std::sort(v.begin(), v.end(), [](auto &a, auto &b) { return a.second.ms > b.second.ms; });
  double total = 0;
  for (auto &e : v)
    total += e.second.ms;
  std::string out;
  char line[200];
  std::snprintf(line, sizeof line, "%-22s %12s %10s %7s %9s %9s\n", "kernel", "ms", "calls",
                "share", "GB/s", "TFLOP/s");
  out += line;
  // A rate where the entry's calls reported their work, else "-".
  auto rate = [](double work, double ms, double unit) {
    char r[32];
    if (work > 0 && ms > 0)
      std::snprintf(r, sizeof r, "%9.1f", work / (ms * 1e-3) / unit);
    else
      std::snprintf(r, sizeof r, "%9s", "-");
    return std::string(r);
  };
  for (auto &[name, e] : v) {
    std::snprintf(line, sizeof line, "%-22s %12.1f %10lld %6.1f%% %s %s\n", name.c_str(), e.ms,
                  static_cast<long long>(e.calls), total > 0 ? 100.0 * e.ms / total : 0.0,
                  rate(e.bytes, e.ms, 1e9).c_str(), rate(e.flops, e.ms, 1e12).c_str());
    out += line;
  }
  std::snprintf(line, sizeof line, "%-22s %12.1f\n", "total", total);
  out += line;
  // By kind, as shares of the wall time since start() (of the timed total
  // without it), idle being what no scope covers.
  std::map<std::string, double> kinds;
  for (auto &[name, e] : v)
    kinds[kindOf(name)] += e.ms;
  const double now = pausedAt_ >= 0 ? pausedAt_ : nowMs();
  const double wall = startMs_ >= 0 ? now - startMs_ - pausedMs_ : total;
  if (startMs_ >= 0)
    kinds["idle"] = std::max(0.0, wall - total);
  std::vector<std::pair<std::string, double>> byKind(kinds.begin(), kinds.end());
  std::sort(byKind.begin(), byKind.end(), [](auto &a, auto &b) { return a.second > b.second; });
  std::snprintf(line, sizeof line, "\n%-22s %12s %7s\n", "by kind", "ms", "share");
  out += line;
  for (auto &[kind, ms] : byKind) {
    std::snprintf(line, sizeof line, "%-22s %12.1f %6.1f%%\n", kind.c_str(), ms,
                  wall > 0 ? 100.0 * ms / wall : 0.0);
    out += line;
  }
  std::snprintf(line, sizeof line, "%-22s %12.1f\n", startMs_ >= 0 ? "wall" : "total", wall);
  out += line;
  if (kinds["products"] > 0) {
    std::snprintf(line, sizeof line, "memory hierarchy / products: %.1f%%\n",
                  100.0 * kinds["memory hierarchy"] / kinds["products"]);
    out += line;
  }
  return out;
}

static double nowMs() {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The innermost open scope: a scope's time excludes the scopes opened
// inside it (a product's to_bf16 roundings count as to_bf16 only), so the
// shares add up to the run.
static thread_local ProfileScope *innermostScope = nullptr;

ProfileScope::ProfileScope(const std::string &name, rt::DeviceKind dev) : name_(name), dev_(dev) {
  if (!Profile::get().enabled)
    return;
  if (dev_ == rt::DeviceKind::gpu)
    rt::gpu::synchronize();
  t0_ = nowMs();
  outer_ = innermostScope;
  innermostScope = this;
}

ProfileScope::~ProfileScope() {
  if (t0_ < 0)
    return;
  if (dev_ == rt::DeviceKind::gpu)
    rt::gpu::synchronize();
  const double ms = nowMs() - t0_;
  Profile::get().add(name_, ms - nested_, bytes_, flops_);
  if (outer_)
    outer_->nested_ += ms;
  innermostScope = outer_;
}

void KernelLibrary::checkLaunch(const std::string &name) {
  std::string e = rt::gpu::takeLaunchError();
  if (!e.empty())
    throw Error("kernel train_" + name + " (GPU): " + e);
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
  const double logitInit = std::log(c.decayInit / (1.0 - c.decayInit));
  const double outStd = 0.02 / std::sqrt(2.0 * double(c.L));
  // Per element: a standard deviation (normal draws) or a constant.
  struct Span {
    int64_t begin, end;
    double stdv, fill;
  };
  std::vector<Span> spans;
  for (const ParamInfo &t : layout.tensors()) {
    std::string base = t.name.substr(t.name.rfind('.') + 1);
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
    spans.push_back({t.offset, t.offset + t.numel, stdv, fill});
  }
  // The flat array in blocks of 2^20 elements, block b drawn from a
  // generator seeded by (seed, b): the same weights whatever the number of
  // threads, and a 7B model initializes in seconds instead of minutes.
  constexpr int64_t kBlock = int64_t(1) << 20;
  const int64_t n = layout.numel(), blocks = (n + kBlock - 1) / kBlock;
  auto fillBlock = [&](int64_t b) {
    std::seed_seq ss{uint32_t(seed), uint32_t(seed >> 32), uint32_t(b), uint32_t(b >> 32)};
    std::mt19937_64 rng(ss);
    std::normal_distribution<double> normal(0.0, 1.0);
    const int64_t lo = b * kBlock, hi = std::min(n, lo + kBlock);
    auto it = std::upper_bound(spans.begin(), spans.end(), lo,
                               [](int64_t x, const Span &s) { return x < s.end; });
    for (; it != spans.end() && it->begin < hi; ++it) {
      float *x = p.data();
      for (int64_t i = std::max(lo, it->begin); i < std::min(hi, it->end); ++i)
        x[i] = float(it->stdv > 0 ? normal(rng) * it->stdv : it->fill);
    }
  };
  const int64_t threads =
      std::min<int64_t>(blocks, std::max(1u, std::thread::hardware_concurrency()));
  std::atomic<int64_t> next{0};
  auto worker = [&] {
    for (int64_t b; (b = next.fetch_add(1)) < blocks;)
      fillBlock(b);
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t)
    pool.emplace_back(worker);
  worker();
  for (auto &t : pool)
    t.join();
  return p;
}
