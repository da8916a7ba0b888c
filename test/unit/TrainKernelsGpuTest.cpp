//===- TrainKernelsGpuTest.cpp - the GPU training library vs the CPU one ----===//
//
// Every `train_*` kernel of the GPU training library (NAME.train.gpu.so,
// mmrec-build-train-kernels{target=nvptx}) against the same kernel of the
// CPU library, which TrainerTest checks against the float64 oracle: fresh
// random inputs, several (B, T) including T = 1, T not a multiple of the
// chunk and T = max_seq_len, on the odd-sized `test` configuration (dense
// and per-head gates) and on mmrec-tiny; the level-0 kernels also on
// mmrec-small (dense and per-head) at training shapes. Outputs the kernel overwrites are
// poisoned with NaN on the GPU side first, so an element it fails to write
// shows; accumulated ("+=") outputs start from the same random values.
// Inputs must come back unchanged. Label `gpu` (skipped without a GPU).
//
//===----------------------------------------------------------------------===//

#include "mmrec/runtime.h"
#include "mmrec/train.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <tuple>
#include <utility>

using namespace mmrec;
using namespace mmrec::train;

namespace {

/// How an array argument is filled and checked.
enum class Kind {
  In,    // input, uniform [−1, 1]
  Pos,   // input, uniform [0.5, 1.5] (norm scales, probabilities, v ≥ 0)
  Log,   // input, log decays in [−3, 0]
  Gate,  // input, W_g: uniform [−1, 1] / √dh (a trained gate's scale: σ' is not
         // saturated, so the adjoint's Wᵀ·a term matters and nothing explodes)
  Tok,   // int32 token ids in [0, V)
  Tgt,   // int32 targets in [−1, V)
  Hp,    // AdamW hyper-parameters
  One,   // a single 1.0 (loss scale)
  Out,   // overwritten by the kernel
  Out16, // overwritten by the kernel, bf16 (the size counts bf16 elements)
  Acc,   // accumulated into
  Acc64, // accumulated into, f64 (the size counts f64 elements)
  InOut, // read and written (optimizer state, decoding state)
  Sync,  // int32 scratch of the GPU kernels (zero; not compared)
};

struct Shape {
  int64_t B, T;
};

struct Sizes {
  int64_t B, T, N, D, F, V, G, M, d, nC, nCmax, Wg, dh;
  int64_t GMd() const { return G * M * d; }
};

struct ArraySpec {
  const char *name;
  std::function<int64_t(const Sizes &)> size;
  Kind kind;
};

struct KernelSpec {
  const char *name;
  std::vector<ArraySpec> arrays;
  std::function<std::vector<int64_t>(const Sizes &)> indices;
};

std::vector<KernelSpec> kernelSpecs() {
  auto ND = [](const Sizes &s) { return s.N * s.D; };
  auto N = [](const Sizes &s) { return s.N; };
  auto D = [](const Sizes &s) { return s.D; };
  auto NF = [](const Sizes &s) { return s.N * s.F; };
  auto BD = [](const Sizes &s) { return s.B * s.D; };
  auto chunksD = [](const Sizes &s) { return s.B * s.nC * s.D; };
  auto NGM = [](const Sizes &s) { return s.N * s.G * s.M; };
  auto GMd = [](const Sizes &s) { return s.GMd(); };
  auto GM = [](const Sizes &s) { return s.G * s.M; };
  auto slots = [](const Sizes &s) { return s.B * s.nC * s.G * s.M; };
  auto mems = [](const Sizes &s) { return s.B * s.nC * s.GMd(); };
  auto mem = [](const Sizes &s) { return s.B * s.GMd(); };
  auto G3 = [](const Sizes &s) { return s.G * 3; };
  auto NG = [](const Sizes &s) { return s.N * s.G; };
  auto decK = [](const Sizes &s) { return s.B * s.nCmax * s.D; };
  auto BGM = [](const Sizes &s) { return s.B * s.G * s.M; };
  auto BGM2 = [](const Sizes &s) { return 2 * s.B * s.G * s.M; };
  auto Wg = [](const Sizes &s) { return s.Wg; };
  auto rows = [](const Sizes &s) { return std::vector<int64_t>{s.N}; };
  // Kernels with a `bf16` index: their bf16 copies asked for (checked like
  // every output against the CPU kernel's).
  auto rowsCopies = [](const Sizes &s) { return std::vector<int64_t>{s.N, 1}; };
  // xent: both the fp32 gradient and its bf16 copy (grad = 3).
  auto rowsCopies3 = [](const Sizes &s) { return std::vector<int64_t>{s.N, 3}; };
  auto BT = [](const Sizes &s) { return std::vector<int64_t>{s.B, s.T}; };
  using K = Kind;
  return {
      {"rmsnorm_fwd",
       {{"x", ND, K::In}, {"w", D, K::In}, {"y", ND, K::Out}, {"y16", ND, K::Out16},
        {"rstd", N, K::Out}},
       rowsCopies},
      {"rmsnorm_bwd",
       {{"x", ND, K::In}, {"w", D, K::In}, {"rstd", N, K::Pos}, {"dy", ND, K::In},
        {"dx", ND, K::Acc}, {"dx16", ND, K::Out16}, {"dw", D, K::Acc}},
       rowsCopies},
      {"decay_fwd", {{"pre", ND, K::In}, {"lambda", D, K::In}, {"ell", ND, K::Out}}, rows},
      {"decay_bwd",
       {{"pre", ND, K::In}, {"lambda", D, K::In}, {"dell", ND, K::In}, {"dpre", ND, K::Out},
        {"dpre16", ND, K::Out16}, {"dlambda", D, K::Acc}},
       rowsCopies},
      {"level1_fwd",
       {{"q", ND, K::In}, {"k", ND, K::In}, {"v", ND, K::In}, {"K1", chunksD, K::Out},
        {"V1", chunksD, K::Out}, {"y1", ND, K::Out}, {"lse", NG, K::Out}, {"q16", ND, K::Out16},
        {"k16", ND, K::Out16}, {"v16", ND, K::Out16}},
       [](const Sizes &s) { return std::vector<int64_t>{s.B, s.T, 1}; }},
      {"level1_bwd",
       {{"q", ND, K::In}, {"K1", chunksD, K::In}, {"V1", chunksD, K::In}, {"y1", ND, K::In},
        {"lse", NG, K::In}, {"dy1", ND, K::In},
        {"dq", ND, K::Acc}, {"dk", ND, K::Acc}, {"dv", ND, K::Acc}, {"dK1", chunksD, K::Out},
        {"dV1", chunksD, K::Out}, {"stat", NG, K::Out}, {"dq16", ND, K::Out16},
        {"dk16", ND, K::Out16}, {"dv16", ND, K::Out16}},
       [](const Sizes &s) { return std::vector<int64_t>{s.B, s.T, 1}; }},
      {"slot_softmax", {{"p", NGM, K::InOut}, {"p16", NGM, K::Out16}},
       [](const Sizes &s) { return std::vector<int64_t>{s.N * s.G, 1}; }},
      {"slot_softmax_bwd", {{"p", NGM, K::Pos}, {"dp", NGM, K::InOut}, {"dp16", NGM, K::Out16}},
       [](const Sizes &s) { return std::vector<int64_t>{s.N * s.G, 1}; }},
      {"mdi_write_softmax_bwd",
       {{"w", NGM, K::Pos}, {"dn", slots, K::In}, {"dw", NGM, K::InOut}, {"dw16", NGM, K::Out16}},
       [](const Sizes &s) { return std::vector<int64_t>{s.B, s.T, 1}; }},
      {"mdi_chunk_fwd",
       {{"w", NGM, K::Pos}, {"mu", GM, K::In}, {"n", slots, K::Out}, {"lb", slots, K::Out}},
       BT},
      {"mem_scan_fwd",
       {{"log_decay", slots, K::Log}, {"P", mems, K::In}, {"n", slots, K::Pos},
        {"init", mem, K::In}, {"h", mems, K::Out}, {"h16", mems, K::Out16},
        {"final", mem, K::Out}},
       [](const Sizes &s) { return std::vector<int64_t>{s.B, s.nC, s.GMd(), 1}; }},
      {"mem_scan_bwd",
       {{"mems", mems, K::In}, {"init", mem, K::In}, {"grad_h", mems, K::In},
        {"grad_final", mem, K::In}, {"mu", GM, K::In}, {"n", slots, K::Pos}, {"P", mems, K::In},
        {"dmu", GM, K::Acc}, {"dP", mems, K::Out}, {"dP16", mems, K::Out16}, {"dn", slots, K::Out},
        {"grad_init", mem, K::Out}},
       [](const Sizes &s) { return std::vector<int64_t>{s.B, s.T, 1}; }},
      {"combine_fwd",
       {{"h", ND, K::In}, {"y1", ND, K::In}, {"y2", ND, K::In}, {"rho", G3, K::In},
        {"hrstd", NG, K::Out}, {"o", ND, K::Out}, {"o16", ND, K::Out16}},
       rowsCopies},
      {"combine_bwd",
       {{"h", ND, K::In}, {"y1", ND, K::In}, {"y2", ND, K::In}, {"rho", G3, K::In},
        {"hrstd", NG, K::Pos}, {"do", ND, K::In}, {"dh", ND, K::Out}, {"dy1", ND, K::Out},
        {"dy2", ND, K::Out}, {"dy2_16", ND, K::Out16}, {"drho", G3, K::Acc}},
       rowsCopies},
      {"swiglu_fwd",
       {{"f1", NF, K::In}, {"f3", NF, K::In}, {"g", NF, K::Out}, {"g16", NF, K::Out16}},
       [](const Sizes &s) { return std::vector<int64_t>{s.N * s.F, 1}; }},
      {"swiglu_bwd",
       {{"f1", NF, K::In}, {"f3", NF, K::In}, {"dg", NF, K::In}, {"df1", NF, K::Out},
        {"df3", NF, K::Out}, {"df1_16", NF, K::Out16}, {"df3_16", NF, K::Out16}},
       [](const Sizes &s) { return std::vector<int64_t>{s.N * s.F, 1}; }},
      {"embed_fwd",
       {{"tokens", N, K::Tok}, {"E", [](const Sizes &s) { return s.V * s.D; }, K::In},
        {"x", ND, K::Out}},
       rows},
      {"embed_bwd",
       {{"tokens", N, K::Tok}, {"dx", ND, K::In},
        {"dE", [](const Sizes &s) { return s.V * s.D; }, K::Acc}},
       rows},
      {"xent",
       {{"logits", [](const Sizes &s) { return s.N * s.V; }, K::In}, {"targets", N, K::Tgt},
        {"scale", [](const Sizes &) { return int64_t(1); }, K::One},
        {"loss", [](const Sizes &) { return int64_t(2); }, K::Out},
        {"dlogits", [](const Sizes &s) { return s.N * s.V; }, K::Out},
        {"dlogits16", [](const Sizes &s) { return s.N * s.V; }, K::Out16}},
       rowsCopies3},
      {"adamw",
       {{"p", ND, K::InOut}, {"g", ND, K::In}, {"m", ND, K::InOut}, {"v", ND, K::Pos},
        {"hp", [](const Sizes &) { return int64_t(8); }, K::Hp}},
       [](const Sizes &s) { return std::vector<int64_t>{s.N * s.D}; }},
      {"sumsq", {{"x", NF, K::In}, {"ss64", [](const Sizes &) { return int64_t(1); }, K::Acc64}},
       [](const Sizes &s) { return std::vector<int64_t>{s.N * s.F}; }},
      {"gated_fwd",
       {{"z", ND, K::In}, {"log_decay", ND, K::Log}, {"gate", Wg, K::Gate}, {"bias", D, K::In},
        {"init", BD, K::In}, {"h", ND, K::Out}, {"final", BD, K::Out},
        {"sync", [](const Sizes &s) { return train::gatedSyncWords(s.B, s.D); }, K::Sync}},
       BT},
      {"gated_bwd",
       {{"z", ND, K::In}, {"log_decay", ND, K::Log}, {"gate", Wg, K::Gate}, {"bias", D, K::In},
        {"init", BD, K::In}, {"h", ND, K::In}, {"grad_h", ND, K::In}, {"grad_final", BD, K::In},
        {"grad_z", ND, K::Out}, {"grad_log_decay", ND, K::Out}, {"grad_pre", ND, K::Out},
        {"grad_pre0", BD, K::Out}, {"grad_init", BD, K::Out},
        {"sync", [](const Sizes &s) { return train::gatedSyncWords(s.B, s.D); }, K::Sync}},
       BT},
      {"decode_level1",
       {{"q", BD, K::In}, {"K1", decK, K::In}, {"V1", decK, K::In}, {"y1", BD, K::Out}},
       [](const Sizes &s) { return std::vector<int64_t>{s.B, std::min(s.T, s.nCmax)}; }},
      {"decode_level1_push",
       {{"k", BD, K::In}, {"v", BD, K::In}, {"ksum", BD, K::InOut}, {"vsum", BD, K::InOut},
        {"K1", decK, K::InOut}, {"V1", decK, K::InOut}},
       [](const Sizes &s) {
         return std::vector<int64_t>{s.B, s.T % s.nCmax, 1 + s.T % 5, int64_t(s.T % 2)};
       }},
      {"decode_mdi_logits",
       {{"q", BD, K::In}, {"k", BD, K::In}, {"S", GMd, K::In}, {"lg", BGM2, K::Out}},
       [](const Sizes &s) { return std::vector<int64_t>{s.B}; }},
      {"decode_mdi",
       {{"lg", BGM2, K::In}, {"Mem", mem, K::In}, {"w", BGM, K::Out}, {"y2", BD, K::Out}},
       [](const Sizes &s) { return std::vector<int64_t>{s.B}; }},
      {"decode_mdi_update",
       {{"w", BGM, K::Pos}, {"v", BD, K::In}, {"mu", GM, K::In}, {"nacc", BGM, K::Pos},
        {"Pacc", mem, K::InOut}, {"Mem", mem, K::InOut}},
       [](const Sizes &s) { return std::vector<int64_t>{s.B, int64_t(s.T % 2)}; }},
  };
}

/// An argument on both sides.
struct Pair {
  std::vector<float> cpu, gpuInit; // f32 (int32 bit patterns for ids)
  void *dev = nullptr;
  Kind kind;
  int64_t n16 = 0; // Out16: bf16 elements
  bool ints = false;
};

/// The variadic KernelLibrary call with a[0..NA) and x[0..NX).
template <size_t... I, size_t... J>
void callWith(KernelLibrary &lib, const std::string &name, std::vector<Arr> &a,
              std::vector<int64_t> &x, std::index_sequence<I...>, std::index_sequence<J...>) {
  lib(name, a[I]..., x[J]...);
}

/// Calls `name` with arrays `a` and indices `x`: the variadic call
/// instantiated for every arity up to kMaxArrays arrays and kMaxIndices
/// indices, the one that matches picked at run time.
constexpr size_t kMaxArrays = 20, kMaxIndices = 4;
template <size_t NA, size_t... NX>
bool dispatchIndices(KernelLibrary &lib, const std::string &name, std::vector<Arr> &a,
                     std::vector<int64_t> &x, std::index_sequence<NX...>) {
  return ((a.size() == NA && x.size() == NX + 1 &&
           (callWith(lib, name, a, x, std::make_index_sequence<NA>{},
                     std::make_index_sequence<NX + 1>{}),
            true)) ||
          ...);
}
template <size_t... NA>
bool dispatchArrays(KernelLibrary &lib, const std::string &name, std::vector<Arr> &a,
                    std::vector<int64_t> &x, std::index_sequence<NA...>) {
  return (dispatchIndices<NA + 1>(lib, name, a, x, std::make_index_sequence<kMaxIndices>{}) ||
          ...);
}

void dispatch(KernelLibrary &lib, const std::string &name, std::vector<Arr> &a,
              std::vector<int64_t> &x) {
  if (!dispatchArrays(lib, name, a, x, std::make_index_sequence<kMaxArrays>{}))
    FAIL() << name << ": no dispatch for " << a.size() << " arrays and " << x.size()
           << " indices (at most " << kMaxArrays << " and " << kMaxIndices << ")";
}

/// The training libraries built for the tests; MMREC_TRAIN_TEST_DIR in the
/// environment overrides the build tree's (binaries carried to a GPU machine).
std::string manifest(const std::string &model) {
  const char *dir = std::getenv("MMREC_TRAIN_TEST_DIR");
  return std::string(dir && *dir ? dir : MMREC_TRAIN_TEST_DIR) + "/" + model + ".train.json";
}

/// `only`: the kernels to check (all when empty); every output must satisfy
/// max |gpu − cpu| ≤ absTol + relTol · max |cpu| (per array).
void checkModel(const std::string &model, const std::vector<Shape> &shapes, uint64_t seed,
                const std::vector<std::string> &only = {}, double absTol = 2e-5,
                double relTol = 1e-4) {
  KernelLibrary cpu(manifest(model), rt::DeviceKind::cpu);
  KernelLibrary gpu(manifest(model), rt::DeviceKind::gpu);
  const ModelConfig &c = cpu.config();
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (Shape sh : shapes) {
    Sizes s;
    s.B = sh.B;
    s.T = sh.T;
    s.N = sh.B * sh.T;
    s.D = c.D;
    s.F = c.F;
    s.V = c.V;
    s.G = c.Nm;
    s.M = c.M;
    s.d = c.dm();
    s.nC = (sh.T + c.C - 1) / c.C;
    s.nCmax = c.Tmax / c.C;
    s.Wg = c.perHead ? c.H * c.dh() * c.dh() : c.D * c.D;
    s.dh = c.perHead ? c.dh() : c.D;
    for (const KernelSpec &k : kernelSpecs()) {
      if (!only.empty() && std::find(only.begin(), only.end(), k.name) == only.end())
        continue;
      SCOPED_TRACE(model + " " + k.name + " B=" + std::to_string(s.B) + " T=" + std::to_string(s.T));
      std::vector<Pair> args;
      for (const ArraySpec &a : k.arrays) {
        Pair p;
        p.kind = a.kind;
        const int64_t n16 = a.size(s);
        const int64_t n = a.kind == Kind::Out16 ? (n16 + 1) / 2
                          : a.kind == Kind::Acc64 ? 2 * n16
                                                  : n16;
        p.n16 = n16;
        p.cpu.resize(size_t(n));
        for (int64_t i = 0; i < n; ++i) {
          float v = uni(rng);
          switch (a.kind) {
          case Kind::Pos:
            v = 1.0f + 0.5f * v;
            break;
          case Kind::Log:
            v = 1.5f * (v - 1.0f);
            break;
          case Kind::Gate:
            v = v / std::sqrt(float(s.dh));
            break;
          case Kind::Tok:
          case Kind::Tgt: {
            int32_t t = int32_t(rng() % uint64_t(c.V + (a.kind == Kind::Tgt ? 1 : 0))) -
                        (a.kind == Kind::Tgt ? 1 : 0);
            __builtin_memcpy(&v, &t, 4);
            p.ints = true;
            break;
          }
          case Kind::One:
            v = 1.0f;
            break;
          case Kind::Out:
          case Kind::Out16:
          case Kind::Acc64: // f64 zeros
            v = 0.0f;
            break;
          case Kind::Sync: {
            int32_t z = 0;
            __builtin_memcpy(&v, &z, 4);
            p.ints = true;
            break;
          }
          default:
            break;
          }
          p.cpu[size_t(i)] = v;
        }
        if (a.kind == Kind::Hp)
          p.cpu = {3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.5f, 2.0f, 0.7f};
        p.gpuInit = p.cpu;
        if (a.kind == Kind::Out)
          std::fill(p.gpuInit.begin(), p.gpuInit.end(), std::numeric_limits<float>::quiet_NaN());
        if (a.kind == Kind::Out16) // every bf16 element 0xffff, a NaN
          std::memset(p.gpuInit.data(), 0xff, p.gpuInit.size() * 4);
        p.dev = rt::gpu::alloc(p.gpuInit.size() * 4);
        rt::gpu::copyToDevice(p.dev, p.gpuInit.data(), p.gpuInit.size() * 4);
        args.push_back(std::move(p));
      }
      std::vector<int64_t> idx = k.indices(s);
      std::vector<Arr> ca, ga;
      for (Pair &p : args) {
        if (p.kind == Kind::Out16) {
          ca.emplace_back(reinterpret_cast<uint16_t *>(p.cpu.data()), p.n16);
          ga.emplace_back(static_cast<uint16_t *>(p.dev), p.n16);
        } else if (p.kind == Kind::Acc64) {
          ca.emplace_back(reinterpret_cast<double *>(p.cpu.data()), p.n16);
          ga.emplace_back(static_cast<double *>(p.dev), p.n16);
        } else if (p.ints) {
          ca.emplace_back(reinterpret_cast<int32_t *>(p.cpu.data()), int64_t(p.cpu.size()));
          ga.emplace_back(static_cast<int32_t *>(p.dev), int64_t(p.cpu.size()));
        } else {
          ca.emplace_back(p.cpu.data(), int64_t(p.cpu.size()));
          ga.emplace_back(static_cast<float *>(p.dev), int64_t(p.cpu.size()));
        }
      }
      dispatch(cpu, k.name, ca, idx);
      dispatch(gpu, k.name, ga, idx);
      rt::gpu::synchronize();
      for (size_t i = 0; i < args.size(); ++i) {
        Pair &p = args[i];
        std::vector<float> got(p.cpu.size());
        rt::gpu::copyToHost(got.data(), p.dev, got.size() * 4);
        rt::gpu::free(p.dev);
        const char *an = k.arrays[i].name;
        if (p.kind == Kind::Sync)
          continue;
        if (p.ints) {
          EXPECT_EQ(0, std::memcmp(got.data(), p.cpu.data(), got.size() * 4)) << an;
          continue;
        }
        if (p.kind == Kind::Acc64) {
          for (int64_t e = 0; e < p.n16; ++e) {
            double g, r;
            std::memcpy(&g, reinterpret_cast<const char *>(got.data()) + 8 * e, 8);
            std::memcpy(&r, reinterpret_cast<const char *>(p.cpu.data()) + 8 * e, 8);
            EXPECT_NEAR(g, r, absTol + relTol * std::fabs(r)) << an << "[" << e << "]";
          }
          continue;
        }
        if (p.kind == Kind::Out16) {
          // Both sides round (nearly) the same fp32 value: at most one
          // bf16 step apart where they straddle a rounding boundary, and a
          // step at |x| is at most 2^-7·|x| (8 significant bits), on top of
          // the fp32 tolerance.
          auto h16 = [](const std::vector<float> &v, int64_t i) {
            uint16_t x;
            std::memcpy(&x, reinterpret_cast<const char *>(v.data()) + 2 * i, 2);
            return double(rt::fromBF16(x));
          };
          double maxRef = 0, maxErr = 0;
          int64_t bad = p.n16;
          for (int64_t e = 0; e < p.n16; ++e) {
            const double g = h16(got, e), r = h16(p.cpu, e);
            maxRef = std::max(maxRef, std::fabs(r));
            if (!std::isfinite(g) && bad == p.n16)
              bad = e;
            maxErr = std::max(maxErr, std::fabs(g - r));
          }
          EXPECT_EQ(bad, p.n16) << an << ": bf16 element " << bad << " is not finite on the GPU";
          EXPECT_LE(maxErr, absTol + (relTol + 1.0 / 128) * maxRef)
              << an << ": max |gpu - cpu| " << maxErr << " (max |cpu| " << maxRef << ")";
          continue;
        }
        double maxRef = 0, maxErr = 0;
        size_t bad = got.size();
        for (size_t e = 0; e < got.size(); ++e) {
          maxRef = std::max(maxRef, std::fabs(double(p.cpu[e])));
          if (!std::isfinite(got[e]) && bad == got.size())
            bad = e;
          maxErr = std::max(maxErr, std::fabs(double(got[e]) - double(p.cpu[e])));
        }
        EXPECT_EQ(bad, got.size()) << an << ": element " << bad << " is " << got[bad]
                                   << " on the GPU (unwritten?), " << p.cpu[bad] << " on the CPU";
        EXPECT_LE(maxErr, absTol + relTol * maxRef) << an << ": max |gpu - cpu| " << maxErr
                                                << " (max |cpu| " << maxRef << ")";
      }
    }
  }
}

#define REQUIRE_GPU()                                                                              \
  if (!rt::gpuAvailable())                                                                         \
  GTEST_SKIP() << "no CUDA device"

TEST(TrainKernelsGpu, TestConfigDenseMatchesCpu) {
  REQUIRE_GPU();
  checkModel("mmrec-test-dense", {{1, 1}, {2, 7}, {3, 23}, {2, 64}}, std::random_device{}());
}

TEST(TrainKernelsGpu, TestConfigPerHeadMatchesCpu) {
  REQUIRE_GPU();
  checkModel("mmrec-test-per_head", {{1, 1}, {2, 9}, {1, 64}}, std::random_device{}());
}

// mmrec-tiny (D 128): W_g fits in one block's shared memory, so the level-0
// kernels are GatedKernels.cpp's persistent ones (one row a block for every
// B here: B·H ≤ 2 × 132).
TEST(TrainKernelsGpu, TinyMatchesCpu) {
  REQUIRE_GPU();
  checkModel("mmrec-tiny", {{2, 37}, {1, 256}, {5, 16}, {200, 3}}, std::random_device{}());
}
TEST(TrainKernelsGpu, TinyPerHeadMatchesCpu) {
  REQUIRE_GPU();
  checkModel("mmrec-tiny-ph", {{3, 45}, {1, 129}}, std::random_device{}());
}

// mmrec-7b's widths (D 4096: 128 blocks a batch row in the level-0 kernels;
// M 1024 slots, d_m 512; T crossing a chunk of 128).
TEST(TrainKernelsGpu, SevenBWidthsMatchCpu) {
  REQUIRE_GPU();
  checkModel("mmrec-7b", {{1, 40}, {2, 130}}, std::random_device{}());
}

// Level 1 at mmrec-7b's widths beyond one tile of the GPU's fused backward
// (10 chunks of 128 tokens at d_m 512): 11 and 12 chunks, the last ragged.
TEST(TrainKernelsGpu, SevenBLevel1TilesMatchCpu) {
  REQUIRE_GPU();
  checkModel("mmrec-7b", {{2, 1290}, {1, 1500}}, std::random_device{}(),
             {"level1_fwd", "level1_bwd"});
}

// mmrec-small's widths for level 1, the norms and the memory scan: D 768
// takes rmsnorm_bwd's one-pass kernel (a row in registers, 24 values a
// lane), d_m 192 mem_scan_fwd's 6 channels a thread; T 1800 is 29 chunks of
// 64 tokens, beyond level 1's tile of 27 at d_m 192, the last ragged.
TEST(TrainKernelsGpu, SmallLevel1AndNormsMatchCpu) {
  REQUIRE_GPU();
  checkModel("mmrec-small", {{3, 130}, {1, 1800}}, std::random_device{}(),
             {"level1_fwd", "level1_bwd", "rmsnorm_fwd", "rmsnorm_bwd", "mem_scan_fwd",
              "mem_scan_bwd"});
}

// The decoding kernels at mmrec-7b's widths (M 1024, d_m 512: 16 blocks of 32 channels
// a (row, group) in decode_mdi, 128 blocks of 8 slots in decode_mdi_update), batch 1, 3.
TEST(TrainKernelsGpu, SevenBDecodeMatchesCpu) {
  REQUIRE_GPU();
  checkModel("mmrec-7b", {{1, 130}, {3, 7}}, std::random_device{}(),
             {"decode_mdi_logits", "decode_mdi", "decode_mdi_update", "decode_level1",
              "decode_level1_push"});
}

// mmrec-small's level-0 recurrence at training shapes (D 768, dense gate):
// the cooperative FP32-FMA kernels (64 blocks, a grid barrier a step; the
// adjoint after the generated pre-activation product) for B ≤ 64, T ragged
// (1000, 1, 17); B = 17 asks for 3 row groups (192 blocks) and B = 64 for
// 8, more than a device of 132 SMs holds at one block an SM: the runtime
// grants fewer and the groups walk their tiles of rows in turn. B = 65 and
// 200 take the one-block-per-row kernels.
TEST(TrainKernelsGpu, SmallGatedMatchesCpu) {
  REQUIRE_GPU();
  checkModel("mmrec-small", {{8, 1000}, {8, 1}, {3, 17}, {17, 33}, {64, 9}, {65, 4}, {200, 2}},
             std::random_device{}(), {"gated_fwd", "gated_bwd"});
}
// ... and its per-head variant (H 12, dh 64): the persistent kernels, R = 1
// (B·H ≤ 264), 2 (B = 30) and 4 (B = 50, 200).
TEST(TrainKernelsGpu, SmallPerHeadGatedMatchesCpu) {
  REQUIRE_GPU();
  checkModel("mmrec-small-ph", {{8, 1000}, {8, 1}, {30, 7}, {50, 33}, {200, 2}},
             std::random_device{}(), {"gated_fwd", "gated_bwd"});
}

// The same with --train-gated-bf16: the cooperative kernels multiply by W_g
// on tensor cores (h_{t-1}, a_t and W_g rounded to bf16, fp32 accumulation
// and state), so the comparison with the fp32 CPU kernels is looser: 3e-2
// of the largest |value| of each array (bf16 keeps 8 bits: 4e-3 a rounding,
// summed over 768 terms and carried along T). Row groups of 8 (24 blocks
// each): B = 17, 32 and 40 run the register-resident variant in 3, 4 and 5
// groups (the last one partly empty at 17); B = 64 asks for 8 groups, more
// than the device holds (132 SMs, one block an SM), and walks its tiles
// in the groups it gets. B = 65 runs the fp32 row kernels (which must match
// at that tolerance too).
TEST(TrainKernelsGpu, SmallGatedBf16MatchesCpu) {
  REQUIRE_GPU();
  checkModel("mmrec-small-bf16",
             {{8, 1000}, {8, 1}, {3, 17}, {17, 33}, {32, 70}, {40, 9}, {64, 9}, {65, 4}},
             std::random_device{}(), {"gated_fwd", "gated_bwd"}, 1e-3, 3e-2);
}

// The same with --train-gated-cluster: each row group of 8 is one cluster of
// 16 blocks of 48 channels (3 m-tiles) exchanging h_{t-1} / a_t through
// distributed shared memory, launched without co-residency. Any B takes
// these kernels: B = 65 and 200 need 9 and 25 clusters, more than the device
// holds at once (they run in waves); B = 3 and 17 leave rows of the last
// cluster empty.
TEST(TrainKernelsGpu, SmallGatedClusterMatchesCpu) {
  REQUIRE_GPU();
  checkModel("mmrec-small-gcl",
             {{8, 1000}, {8, 1}, {3, 17}, {17, 33}, {32, 70}, {65, 9}, {200, 2}},
             std::random_device{}(), {"gated_fwd", "gated_bwd"}, 1e-3, 3e-2);
}

// The same at mmrec-7b's width (D 4096): 128 blocks in 64 clusters of 2,
// each block multiplying half of the contraction (GatedKernelSpec::cluster)
// and the pair's partial sums meeting in shared memory. B = 8 and 3 run the
// register-resident variant, B = 9 the row tiles (two tiles a step, a
// cluster barrier after each).
TEST(TrainKernelsGpu, SevenBGatedBf16MatchesCpu) {
  REQUIRE_GPU();
  checkModel("mmrec-7b-bf16", {{8, 70}, {3, 33}, {9, 20}}, std::random_device{}(),
             {"gated_fwd", "gated_bwd"}, 1e-3, 3e-2);
}

namespace {
/// gated_fwd and gated_bwd (the adjoint with its pre-activation product;
/// dW_g and db_g are the trainer's gemms) of the library `path` at B × T on
/// device arrays of random inputs drawn from `seed`.
struct GatedRun {
  KernelLibrary gpu;
  int64_t B, T, N, D, Wg, SW;
  std::vector<void *> owned;
  float *z, *l, *w, *b, *init, *h, *fin, *gh, *gf, *gz, *gl, *gp, *gp0, *gi;
  int32_t *sync;

  GatedRun(const std::string &path, int64_t B_, int64_t T_, uint64_t seed)
      : gpu(path, rt::DeviceKind::gpu), B(B_), T(T_), N(B_ * T_), D(gpu.config().D) {
    const ModelConfig &c = gpu.config();
    const int64_t dh = c.perHead ? c.dh() : D;
    Wg = (D / dh) * dh * dh;
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    auto dev = [&](int64_t n, float scale, float shift) {
      std::vector<float> v(static_cast<size_t>(n));
      for (float &x : v)
        x = scale * (uni(rng) + shift);
      void *p = rt::gpu::alloc(v.size() * 4);
      rt::gpu::copyToDevice(p, v.data(), v.size() * 4);
      owned.push_back(p);
      return static_cast<float *>(p);
    };
    z = dev(N * D, 1, 0), l = dev(N * D, 1.5f, -1), w = dev(Wg, 1 / std::sqrt(float(dh)), 0);
    b = dev(D, 1, 0), init = dev(B * D, 0.5f, 0), h = dev(N * D, 0, 0), fin = dev(B * D, 0, 0);
    gh = dev(N * D, 1, 0), gf = dev(B * D, 1, 0), gz = dev(N * D, 0, 0), gl = dev(N * D, 0, 0);
    gp = dev(N * D, 0, 0), gp0 = dev(B * D, 0, 0), gi = dev(B * D, 0, 0);
    SW = train::gatedSyncWords(B, D);
    sync = static_cast<int32_t *>(static_cast<void *>(dev(SW, 0, 0)));
  }
  ~GatedRun() {
    for (void *p : owned)
      rt::gpu::free(p);
  }
  void fwd() {
    gpu("gated_fwd", Arr(z, N * D), Arr(l, N * D), Arr(w, Wg), Arr(b, D), Arr(init, B * D),
        Arr(h, N * D), Arr(fin, B * D), Arr(sync, SW), B, T);
  }
  void bwd() {
    gpu("gated_bwd", Arr(z, N * D), Arr(l, N * D), Arr(w, Wg), Arr(b, D), Arr(init, B * D),
        Arr(h, N * D), Arr(gh, N * D), Arr(gf, B * D), Arr(gz, N * D), Arr(gl, N * D),
        Arr(gp, N * D), Arr(gp0, B * D), Arr(gi, B * D), Arr(sync, SW), B, T);
  }
  /// The outputs, by name, copied to the host.
  std::vector<std::pair<std::string, std::vector<float>>> outputs() const {
    std::vector<std::pair<std::string, std::vector<float>>> out;
    for (auto [name, p, n] : {std::tuple<const char *, const float *, int64_t>{"h", h, N * D},
                              {"final", fin, B * D},
                              {"grad_z", gz, N * D},
                              {"grad_log_decay", gl, N * D},
                              {"grad_pre", gp, N * D},
                              {"grad_pre0", gp0, B * D},
                              {"grad_init", gi, B * D}}) {
      std::vector<float> v(static_cast<size_t>(n));
      rt::gpu::copyToHost(v.data(), p, v.size() * 4);
      out.emplace_back(name, std::move(v));
    }
    return out;
  }
};

/// µs per step of gated_fwd and gated_bwd of the library `path` at B × T on
/// random inputs, printed under `label`.
void gatedSpeed(const std::string &path, const std::string &label, int64_t B, int64_t T) {
  GatedRun r(path, B, T, 7);
  const double f = rt::gpu::medianMs([&] { r.fwd(); }, 2, 7);
  const double g = rt::gpu::medianMs([&] { r.bwd(); }, 2, 7);
  std::printf("%-24s B %lld T %lld: gated_fwd %.2f us/step, gated_bwd %.2f us/step\n",
              label.c_str(), (long long)B, (long long)T, f * 1000 / T, g * 1000 / T);
}
} // namespace

// The clustered kernels compute what the cooperative tensor-core kernels do,
// in the same order (the same fragments, k-tiles a warp, sums over the warps
// and bf16 roundings of the exchanged state): every output equal bit for
// bit, at B ≤ 64 where both run.
TEST(TrainKernelsGpu, SmallGatedClusterEqualsCooperative) {
  REQUIRE_GPU();
  const uint64_t seed = std::random_device{}();
  for (auto [B, T] : {std::pair<int64_t, int64_t>{8, 300}, {3, 17}, {32, 70}, {17, 1}}) {
    GatedRun coop(manifest("mmrec-small-bf16"), B, T, seed);
    GatedRun gcl(manifest("mmrec-small-gcl"), B, T, seed);
    for (GatedRun *r : {&coop, &gcl}) {
      r->fwd();
      r->bwd();
    }
    const auto a = coop.outputs(), c = gcl.outputs();
    for (size_t i = 0; i < a.size(); ++i) {
      size_t diff = 0, first = a[i].second.size();
      for (size_t j = 0; j < a[i].second.size(); ++j)
        if (std::memcmp(&a[i].second[j], &c[i].second[j], 4) != 0 && diff++ == 0)
          first = j;
      EXPECT_EQ(diff, 0u) << a[i].first << " at B " << B << " T " << T << " (seed " << seed
                          << "): " << diff << " elements differ, the first at " << first;
    }
  }
}

/// The non-empty comma-separated items of environment variable `var`, or of
/// `fallback` when it is unset or empty.
std::vector<std::string> commaList(const char *var, const std::string &fallback) {
  const char *env = std::getenv(var);
  std::stringstream in(env && *env ? env : fallback);
  std::vector<std::string> items;
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty())
      items.push_back(item);
  return items;
}

// Speed of the level-0 kernels at mmrec-small's training shape (B 8, T
// 1024), and of the tensor-core libraries (cooperative row groups, and row
// groups as clusters) at the larger batches that issue 6's MFU needs,
// printed. Not a correctness test and
// not in ctest: run it with --gtest_filter=TrainKernelsGpu.SmallGatedSpeed.
TEST(TrainKernelsGpu, SmallGatedSpeed) {
  REQUIRE_GPU();
  for (const char *model : {"mmrec-small", "mmrec-small-bf16", "mmrec-small-ph"})
    gatedSpeed(manifest(model), model, 8, 1024);
  for (int64_t B : {16, 32, 64})
    for (const char *model : {"mmrec-small-bf16", "mmrec-small-gcl"})
      gatedSpeed(manifest(model), model, B, 1024);
  gatedSpeed(manifest("mmrec-small-gcl"), "mmrec-small-gcl", 8, 1024);
  gatedSpeed(manifest("mmrec-small-gcl"), "mmrec-small-gcl", 128, 1024);
}

// The same at mmrec-7b's training shape (B 8, T 2048) for the libraries
// named in MMREC_GATED_SPEED (comma-separated .train.json paths; default the
// test tree's mmrec-7b) at the batch sizes in MMREC_GATED_BATCHES (default
// 8): bench/session-gpu.sh passes the --train-gated-bf16 one. Not in ctest:
// --gtest_filter=TrainKernelsGpu.GatedSpeed.
TEST(TrainKernelsGpu, GatedSpeed) {
  REQUIRE_GPU();
  for (const std::string &path : commaList("MMREC_GATED_SPEED", manifest("mmrec-7b"))) {
    // Labelled by the library's directory and file name.
    const size_t last = path.rfind('/');
    const size_t cut = last == std::string::npos || last == 0 ? std::string::npos
                                                              : path.rfind('/', last - 1);
    for (const std::string &batch : commaList("MMREC_GATED_BATCHES", "8"))
      gatedSpeed(path, cut == std::string::npos ? path : path.substr(cut + 1), std::stoll(batch),
                 2048);
  }
}

TEST(TrainKernelsGpu, CpuOnlyManifestIsRefusedClearly) {
  // A manifest without a GPU library names the fix.
  std::string dir = ::testing::TempDir() + "/cpu-only";
  std::string cmd = "mkdir -p " + dir;
  ASSERT_EQ(0, std::system(cmd.c_str()));
  std::ifstream in(manifest("mmrec-test-dense"));
  nlohmann::json j = nlohmann::json::parse(in);
  j["gpu_library"] = nullptr;
  std::ofstream(dir + "/m.train.json") << j.dump();
  try {
    KernelLibrary lib(dir + "/m.train.json", rt::DeviceKind::gpu);
    FAIL() << "expected an error";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find("--target"), std::string::npos) << e.what();
  }
}

} // namespace

// Memory-bound kernels of the 7B step against a device-to-device copy in the
// same run: GB/s of to_bf16 (6 bytes an element), swiglu_fwd (12), and
// rmsnorm_fwd over 16,384 rows (training) and 1 row (decoding: µs a call).
// Not a correctness test and not in ctest: --gtest_filter=*ElementwiseSpeed.
TEST(TrainKernelsGpu, ElementwiseSpeed) {
  REQUIRE_GPU();
  KernelLibrary gpu(manifest("mmrec-7b"), rt::DeviceKind::gpu);
  const ModelConfig &c = gpu.config();
  const int64_t n = int64_t(1) << 28, rows = 16384, D = c.D;
  float *x = static_cast<float *>(rt::gpu::alloc(size_t(n) * 4)),
        *y = static_cast<float *>(rt::gpu::alloc(size_t(n) * 4)),
        *z = static_cast<float *>(rt::gpu::alloc(size_t(n) * 4));
  rt::gpu::memsetD8(x, 0, size_t(n) * 4);
  rt::gpu::memsetD8(y, 0, size_t(n) * 4);
  auto *x16 = static_cast<uint16_t *>(static_cast<void *>(z));
  const double copy = rt::gpu::medianMs([&] { rt::gpu::copyDeviceToDevice(y, x, size_t(n) * 4); }, 2, 9);
  const double cast = rt::gpu::medianMs([&] { gpu("to_bf16", Arr(x, n), Arr(x16, n), n); }, 2, 9);
  const Arr no16(static_cast<uint16_t *>(nullptr), 0);
  const double sw = rt::gpu::medianMs(
      [&] {
        gpu("swiglu_fwd", Arr(x, n / 2), Arr(x + n / 2, n / 2), Arr(y, n / 2), no16, n / 2,
            int64_t(0));
      },
      2, 9);
  // With the bf16 copy of g written beside it (x16 spans n / 2 floats' room
  // for n / 2 bf16 elements at most: z holds n floats).
  const double sw16 = rt::gpu::medianMs(
      [&] {
        gpu("swiglu_fwd", Arr(x, n / 2), Arr(x + n / 2, n / 2), Arr(y, n / 2), Arr(x16, n / 2),
            n / 2, int64_t(1));
      },
      2, 9);
  float *w = y + n / 2, *r = z + n / 2;
  auto *y16 = static_cast<uint16_t *>(static_cast<void *>(z + n / 4));
  const double rn = rt::gpu::medianMs(
      [&] {
        gpu("rmsnorm_fwd", Arr(x, rows * D), Arr(w, D), Arr(y, rows * D), no16, Arr(r, rows), rows,
            int64_t(0));
      },
      2, 9);
  const double rn16 = rt::gpu::medianMs(
      [&] {
        gpu("rmsnorm_fwd", Arr(x, rows * D), Arr(w, D), Arr(y, rows * D), Arr(y16, rows * D),
            Arr(r, rows), rows, int64_t(1));
      },
      2, 9);
  const double rn1 = rt::gpu::medianMs(
      [&] {
        gpu("rmsnorm_fwd", Arr(x, D), Arr(w, D), Arr(y, D), no16, Arr(r, 1), int64_t(1), int64_t(0));
      },
      5, 21);
  auto gbs = [](double bytes, double ms) { return bytes / (ms * 1e6); };
  std::printf("copy %.0f GB/s; to_bf16 %.0f GB/s (%.3f ms for %lld elements); swiglu_fwd %.0f GB/s "
              "(%.3f ms; with g's bf16 copy %.3f ms, %.0f GB/s); "
              "rmsnorm_fwd %lld x %lld %.0f GB/s (%.3f ms; with the copy %.3f ms); "
              "rmsnorm_fwd 1 row %.1f us\n",
              gbs(8.0 * n, copy), gbs(6.0 * n, cast), cast, (long long)n, gbs(6.0 * n, sw), sw,
              sw16, gbs(7.0 * n, sw16), (long long)rows, (long long)D, gbs(8.0 * rows * D, rn), rn,
              rn16, rn1 * 1000);
  for (void *p : {(void *)x, (void *)y, (void *)z})
    rt::gpu::free(p);
}
