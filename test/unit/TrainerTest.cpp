//===- TrainerTest.cpp - the trainer's engine against the float64 oracle --===//
//
// The model run from a generated training library (mmrec-compile on the
// odd-sized `test` configuration: V 37, D 24, L 2, H 3, N_m 2, M 5, F 40,
// C 4, r 3) must give the oracle's loss and every parameter gradient, on
// fresh random weights and tokens, for T a multiple of C, ragged T, T < C and
// T = 1, with the dense and the per-head gate. The optimizer kernels are
// checked against the formulas in double precision.
//
//===----------------------------------------------------------------------===//

#include "lib/Reference/Oracle.h"
#include "mmrec/dist.h"
#include "mmrec/train.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <iostream>
#include <limits>
#include <random>
#include <sstream>
#include <thread>

using namespace mmrec;
using namespace mmrec::train;

namespace {

/// MMREC_TRAIN_TEST_DIR in the environment overrides the build tree's
/// libraries (binaries carried to a GPU machine).
std::string manifest(const std::string &gate) {
  const char *dir = std::getenv("MMREC_TRAIN_TEST_DIR");
  return std::string(dir && *dir ? dir : MMREC_TRAIN_TEST_DIR) + "/mmrec-test-" + gate +
         ".train.json";
}

/// Parameters and gradients where the model runs (device memory on the GPU).
struct Arrays {
  rt::DeviceKind dev;
  FBuf p, g;
  Arrays(rt::DeviceKind dev, const std::vector<float> &params) : dev(dev) {
    p.reset(dev, int64_t(params.size()));
    p.upload(params.data(), int64_t(params.size()));
    g.reset(dev, int64_t(params.size()));
  }
};

ref::Config oracleConfig(const ModelConfig &c) {
  ref::Config r = ref::Config::custom(c.V, c.D, c.L, c.H, c.Nm, c.M, c.F, c.C, c.r,
                                      c.perHead ? ref::Gate::PerHead : ref::Gate::Dense);
  r.decayInit = c.decayInit;
  r.clampMin = c.clampMin;
  r.clampMax = c.clampMax;
  r.eps = c.eps;
  return r;
}

uint64_t freshSeed() { return std::random_device{}(); }

/// n standard normal floats.
std::vector<float> normals(int64_t n, std::mt19937_64 &rng) {
  std::normal_distribution<double> nd;
  std::vector<float> v(static_cast<size_t>(n));
  for (float &x : v)
    x = float(nd(rng));
  return v;
}

/// Per tensor, gradients from bf16 products may be off by much more than
/// the whole gradient: over 30 seeds the worst was 0.20 (μ, whose few
/// entries sum contributions that cancel), usually S, W_k, ρ at 0.02–0.08.
/// A wrong operand (a cast of the wrong extent, a stale copy) gives O(1).
constexpr double kBf16TensorTol = 0.35;

struct Case {
  int64_t B, T;
};

/// `variant`: 0 plain; 1 activation recomputation and a head of 5 rows at a
/// time (blocks that do not divide B·T); 2 bf16 matrix products (operands
/// rounded to bf16, fp32 accumulation): the bf16 tolerance, 2e-2,
/// and the products must really be rounded (some gradient differs from the
/// oracle by more than fp32 products would allow).
void checkAgainstOracle(const std::string &gate, const std::vector<Case> &cases, int variant = 0,
                        rt::DeviceKind dev = rt::DeviceKind::cpu) {
  KernelLibrary lib(manifest(gate), dev);
  const ModelConfig &c = lib.config();
  ASSERT_EQ(c.perHead, gate == "per_head");
  ParamLayout layout(c);
  ref::Config rc = oracleConfig(c);
  Model model(lib, layout);
  if (variant == 1) {
    model.setRecompute(true);
    model.setHeadRows(5);
  }
  if (variant == 2)
    model.setMatmul(Model::Matmul::bf16);
  const double tol = variant == 2 ? 2e-2 : 1e-4, lossTol = variant == 2 ? 1e-2 : 1e-5;
  for (Case cs : cases) {
    uint64_t seed = freshSeed();
    SCOPED_TRACE("gate " + gate + ", B " + std::to_string(cs.B) + ", T " + std::to_string(cs.T) +
                 ", seed " + std::to_string(seed));
    ref::ModelParams rp = ref::initModelParams(rc, seed);
    // bf16: weights nearer a trained model's scale (at 0.3 the odd-sized
    // model is sensitive enough to amplify bf16 rounding of a product to ~10%).
    ref::randomize(rp, seed + 1, variant == 2 ? 0.1 : 0.3);
    std::vector<float> params(size_t(layout.numel()));
    for (auto &[name, t] : rp.named()) {
      const ParamInfo &p = layout.get(name);
      ASSERT_EQ(p.numel, t->numel()) << name;
      for (int64_t i = 0; i < p.numel; ++i)
        params[size_t(p.offset + i)] = float((*t)[i]);
    }
    // Round the oracle's weights to fp32 so that both see the same model.
    for (auto &[name, t] : rp.named()) {
      const ParamInfo &p = layout.get(name);
      for (int64_t i = 0; i < p.numel; ++i)
        (*t)[i] = params[size_t(p.offset + i)];
    }
    std::mt19937_64 rng(seed + 2);
    std::vector<int> tokens(size_t(cs.B * cs.T));
    for (int &t : tokens)
      t = int(rng() % uint64_t(c.V));
    std::vector<int32_t> tok32(tokens.begin(), tokens.end());

    ref::ModelOut ro = ref::modelForward(rc, rp, tokens, cs.B, cs.T);
    ref::ModelParams rg = ref::modelBackward(rc, rp, ro);
    Arrays arr(dev, params);
    double loss = model.forward(arr.p.data(), tok32.data(), cs.B, cs.T);
    EXPECT_NEAR(loss, ro.loss, lossTol * std::max(1.0, std::abs(ro.loss)));
    model.backward(arr.p.data(), arr.g.data());
    std::vector<float> grads = arr.g.toHost();
    double worst = 0, allErr = 0, allRef = 0; // variant 2: per tensor, whole gradient
    for (auto &[name, t] : rg.named()) {
      const ParamInfo &p = layout.get(name);
      double maxRef = 0, maxErr = 0, ssRef = 0, ssErr = 0;
      for (int64_t i = 0; i < p.numel; ++i) {
        const double e = double(grads[size_t(p.offset + i)]) - (*t)[i];
        maxRef = std::max(maxRef, std::abs((*t)[i]));
        maxErr = std::max(maxErr, std::abs(e));
        ssRef += (*t)[i] * (*t)[i];
        ssErr += e * e;
      }
      if (variant == 2) {
        // Rounded operands: per tensor ‖g − ref‖ / ‖ref‖ (a tensor whose
        // gradient cancels, such as S or μ, amplifies the rounding), and
        // over the whole gradient below.
        const double rel = std::sqrt(ssErr) / std::max(std::sqrt(ssRef), 1e-30);
        EXPECT_LE(rel, kBf16TensorTol) << name << " (‖ref‖ " << std::sqrt(ssRef) << ")";
        worst = std::max(worst, rel);
        allErr += ssErr;
        allRef += ssRef;
        continue;
      }
      // Relative to the tensor's largest gradient (entries near zero have no
      // meaningful relative error).
      EXPECT_LE(maxErr, tol * std::max(maxRef, 1e-6)) << name << " (max |ref| " << maxRef << ")";
      worst = std::max(worst, maxErr / std::max(maxRef, 1e-6));
      if (cs.T > 1 && name.find("embed") != std::string::npos) {
        EXPECT_GT(maxRef, 0.0) << "no gradient reached " << name;
      }
    }
    if (variant == 2 && allRef > 0) {
      const double whole = std::sqrt(allErr / allRef);
      EXPECT_LE(whole, tol) << "‖grad − ref‖ / ‖ref‖ over all parameters";
      EXPECT_GT(worst, 1e-4) << "bf16 products gave fp32-accurate gradients: not rounded?";
      std::cout << "bf16 products: gradient error " << whole << " (whole), " << worst
                << " (largest tensor)\n";
    }
  }
}

const std::vector<Case> kCases = {{2, 8}, {2, 11}, {3, 3}, {1, 1}, {1, 17}};

TEST(TrainerCpu, DenseGateMatchesOracle) { checkAgainstOracle("dense", kCases); }
TEST(TrainerCpu, PerHeadGateMatchesOracle) { checkAgainstOracle("per_head", kCases); }
TEST(TrainerCpu, RecomputeAndBlockedHeadMatchOracle) {
  checkAgainstOracle("dense", kCases, 1);
  checkAgainstOracle("per_head", {{2, 11}, {1, 17}}, 1);
}

TEST(TrainerCpu, Bf16ProductsMatchOracle) {
  checkAgainstOracle("dense", kCases, 2);
  checkAgainstOracle("per_head", {{2, 11}, {1, 17}}, 2);
}

// bf16 copies of operands are reused (a product's operand rounded once for
// the next products that read it unchanged, the MDI's groups sharing one
// rounding): the loss and every gradient equal rounding afresh for every
// product, bit for bit on the CPU (a stale copy would not; on the GPU to
// the order of fp32 sums), with fewer than 1.5 roundings a product
// (without reuse: two). With the parameters' copy (setParamCopy), no
// weight is rounded at its products: one rounding of all of them a forward.
void checkBf16Reuse(rt::DeviceKind dev) {
  for (const char *gate : {"dense", "per_head"}) {
    KernelLibrary lib(manifest(gate), dev);
    ParamLayout layout(lib.config());
    const int64_t C = lib.config().C;
    std::vector<float> params = initParams(lib.config(), layout, freshSeed());
    for (bool recompute : {false, true})
      for (Case cs : std::vector<Case>{{2, 2 * C}, {3, C + 3}, {1, 5}}) {
        SCOPED_TRACE(std::string(gate) + (recompute ? " recompute" : "") +
                     " B=" + std::to_string(cs.B) + " T=" + std::to_string(cs.T));
        std::vector<int32_t> tok(size_t(cs.B * cs.T));
        for (size_t i = 0; i < tok.size(); ++i)
          tok[i] = int32_t((i * 7 + 3) % lib.config().V);
        // 0: every operand rounded afresh; 1: copies reused (the layers'
        // pinned copies included); 2: reused, nothing pinned; 3: as 1, and
        // the weights taken from the parameters' copy.
        double loss[4];
        std::vector<float> grad[4];
        uint64_t products[4], roundings[4], kernelCopies[4], kernelCopiesRead[4];
        uint64_t paramRoundings[4], weightRoundings[4];
        int64_t runs = 0;
        bool pinned[4], paramCopied[4];
        for (int reuse = 0; reuse < 4; ++reuse) {
          Arrays a(dev, params);
          Model m(lib, layout);
          m.setMatmul(Model::Matmul::bf16);
          m.setRecompute(recompute);
          m.setBf16Reuse(reuse >= 1);
          m.setPinCopies(reuse == 1 || reuse == 3);
          m.setParamCopy(reuse == 3);
          std::vector<float> zero(params.size(), 0.0f);
          a.g.upload(zero.data(), int64_t(zero.size()));
          loss[reuse] = m.forward(a.p.data(), tok.data(), cs.B, cs.T);
          m.backward(a.p.data(), a.g.data());
          grad[reuse] = a.g.toHost();
          products[reuse] = m.bf16Products();
          roundings[reuse] = m.bf16Roundings();
          kernelCopies[reuse] = m.bf16KernelCopies();
          kernelCopiesRead[reuse] = m.bf16KernelCopiesRead();
          pinned[reuse] = m.pinnedCopies();
          paramCopied[reuse] = m.paramCopied();
          paramRoundings[reuse] = m.paramRoundings();
          weightRoundings[reuse] = m.weightRoundings();
          if (reuse == 3) {
            // Every tensor's copy 128 elements from the buffer's start
            // (256-byte aligned on the GPU, like a rounding's own buffer;
            // ρ's 12 values would shift the flat array's later ones).
            runs = m.paramCopyRuns();
            const uint16_t *base = m.paramCopyAt(0, 1);
            ASSERT_NE(base, nullptr);
            if (dev == rt::DeviceKind::gpu)
              EXPECT_EQ(reinterpret_cast<uintptr_t>(base) % 256, 0u);
            for (const ParamInfo &t : layout.tensors()) {
              const uint16_t *c = m.paramCopyAt(t.offset, t.numel);
              ASSERT_NE(c, nullptr) << t.name;
              EXPECT_EQ((c - base) % 128, 0) << t.name;
            }
          }
        }
        std::cout << "roundings: " << roundings[0] << " afresh, " << roundings[1] << " reused, "
                  << roundings[2] << " reused unpinned, " << roundings[3]
                  << " with the parameters' copy; products " << products[0] << "\n";
        // With reuse the operands that kernels produce come with their bf16
        // copies (u, w, the states, a, o, u2 and g a layer forward, the
        // final norm's output, the logits' gradient (xent, one block of
        // rows here); dP, df1, df3, dx1 (RMSNorm's adjoint), dy2 (the
        // combination's), the two slot softmaxes', dpre (the decay's) and
        // dq, dk, dv (level 1's adjoint, the last to add into them) a layer
        // backward; the recomputed forward's seven again, for every layer
        // but the last (backward takes its forward's activations); without
        // recomputation also the dx that each layer's backward but the
        // first hands to the next, and the final norm's), and every copy
        // is read by a product: equal results show those copies are the
        // roundings'.
        const uint64_t L = uint64_t(lib.config().L);
        EXPECT_EQ(kernelCopies[0], 0u);
        for (int v : {1, 2, 3}) {
          SCOPED_TRACE(v == 1 ? "pinned" : v == 2 ? "unpinned" : "parameters' copy");
          // (Pinned: also level 1's copies of q, k and v, each forward and
          // recomputation.)
          const uint64_t qkv = v != 2 ? (recompute ? 6u * L - 3 : 3u * L) : 0u;
          EXPECT_EQ(kernelCopies[v], (recompute ? 25u * L - 5 : 19u * L + 2) + qkv);
          EXPECT_EQ(kernelCopiesRead[v], kernelCopies[v]);
          EXPECT_EQ(products[v], products[0]);
        }
        // The pinned copies of u, w, a, o, u2 and g are what backward's
        // products take (and level 1 writes q, k and v's): at least one
        // rounding a layer less for each.
        EXPECT_TRUE(pinned[1]);
        EXPECT_FALSE(pinned[2]);
        EXPECT_TRUE(pinned[3]);
        // The parameters' copy: made once (this forward), and every weight
        // a product took came from it. Without it each of the ten matrices
        // of a layer is rounded for its forward and its backward product at
        // least; the activations' roundings do not grow (fewer slots taken).
        for (int v : {0, 1, 2}) {
          EXPECT_FALSE(paramCopied[v]);
          EXPECT_EQ(paramRoundings[v], 0u);
        }
        EXPECT_TRUE(paramCopied[3]);
        EXPECT_EQ(paramRoundings[3], 1u);
        EXPECT_EQ(weightRoundings[3], 0u);
        EXPECT_GE(weightRoundings[1], 20 * L);
        EXPECT_EQ(runs, int64_t(Model::paramRunsOf(layout).size()));
        EXPECT_LE(roundings[3], roundings[1] - weightRoundings[1] + runs);
        EXPECT_GE(roundings[2], roundings[1] + 9 * L)
            << roundings[1] << " roundings pinned, " << roundings[2] << " unpinned";
        for (int v : {1, 2, 3})
        if (dev == rt::DeviceKind::cpu) {
          EXPECT_EQ(loss[0], loss[v]);
          EXPECT_EQ(grad[0], grad[v]);
        } else {
          // cuBLASLt picks its algorithm by the operands' alignment, and a
          // group's slice of a shared copy is less aligned than a copy of
          // its own: the sums' order may differ (a stale copy: O(1)).
          double num = 0, den = 0;
          for (size_t i = 0; i < grad[0].size(); ++i) {
            num += double(grad[v][i] - grad[0][i]) * (grad[v][i] - grad[0][i]);
            den += double(grad[0][i]) * grad[0][i];
          }
          const double gerr = std::sqrt(num / std::max(den, 1e-300));
          std::cout << "bf16 copies reused ("
                    << (v == 1 ? "pinned" : v == 2 ? "unpinned" : "parameters' copy") << "): loss "
                    << loss[v] << " vs " << loss[0] << ", gradient " << gerr
                    << " (relative L2)\n";
          EXPECT_LE(std::abs(loss[v] - loss[0]), 1e-5 * std::abs(loss[0]));
          EXPECT_LE(gerr, 1e-4);
        }
        EXPECT_EQ(roundings[0], 2 * products[0]);
        // (A weight is read by one product: ~1.4 a product with reuse.)
        EXPECT_LT(2 * roundings[1], 3 * products[1])
            << roundings[1] << " roundings for " << products[1] << " bf16 products";
      }
  }
}

TEST(TrainerCpu, Bf16OperandCopiesAreReusedExactly) { checkBf16Reuse(rt::DeviceKind::cpu); }

// The parameters' bf16 copy is made in runs whose tensors all sit 128
// elements apart from the copy's start: at mmrec-small's and the 7B's
// widths (the 7B cut to 2 layers: its layout needs more memory than CI has)
// only each layer's ρ (N_m·3 values) breaks a run, so a forward rounds them
// in L + 1 launches; the runs cover every parameter once, in order,
// without overlapping in the copy.
TEST(Trainer, ParamCopyRunsAlignEveryTensor) {
  for (auto [name, D, L, Nm, M, F, r] :
       std::vector<std::tuple<const char *, int64_t, int64_t, int64_t, int64_t, int64_t,
                              int64_t>>{{"small", 768, 12, 4, 256, 2048, 64},
                                        {"7b", 4096, 2, 8, 1024, 11008, 128},
                                        {"odd", 30, 3, 3, 7, 50, 5}}) {
    SCOPED_TRACE(name);
    ModelConfig c;
    c.name = name;
    c.V = 32000;
    c.D = D;
    c.L = L;
    c.H = 1;
    c.Nm = Nm;
    c.M = M;
    c.F = F;
    c.r = r;
    ParamLayout layout(c);
    const auto runs = Model::paramRunsOf(layout);
    if (std::string(name) != "odd")
      EXPECT_EQ(int64_t(runs.size()), L + 1);
    int64_t next = 0, copyEnd = 0;
    for (const auto &run : runs) {
      EXPECT_EQ(run.begin, next);
      EXPECT_EQ(run.copyAt % 128, 0);
      EXPECT_GE(run.copyAt, copyEnd);
      next = run.end;
      copyEnd = run.copyAt + (run.end - run.begin);
    }
    EXPECT_EQ(next, layout.numel());
    for (const ParamInfo &t : layout.tensors()) {
      auto it = std::find_if(runs.begin(), runs.end(), [&](const Model::ParamRun &run) {
        return run.begin <= t.offset && t.offset < run.end;
      });
      ASSERT_NE(it, runs.end()) << t.name;
      EXPECT_LE(t.offset + t.numel, it->end) << t.name;
      EXPECT_EQ((it->copyAt + t.offset - it->begin) % 128, 0) << t.name;
    }
  }
}

// StreamScope sends a thread's stream-less launches to its stream while
// open, nested scopes restore the outer one, and other threads keep theirs.
TEST(Trainer, StreamScopeNestsPerThread) {
  auto *s1 = reinterpret_cast<rt::Stream>(uintptr_t(0x1000));
  auto *s2 = reinterpret_cast<rt::Stream>(uintptr_t(0x2000));
  EXPECT_EQ(rt::gpu::currentStream(), nullptr);
  {
    rt::gpu::StreamScope a(s1);
    EXPECT_EQ(rt::gpu::currentStream(), s1);
    {
      rt::gpu::StreamScope b(s2);
      EXPECT_EQ(rt::gpu::currentStream(), s2);
      rt::Stream other = s1;
      std::thread([&] { other = rt::gpu::currentStream(); }).join();
      EXPECT_EQ(other, nullptr);
    }
    EXPECT_EQ(rt::gpu::currentStream(), s1);
  }
  EXPECT_EQ(rt::gpu::currentStream(), nullptr);
}

// Level 0 on its own stream beside the memory hierarchy (the GPU default)
// against the serial schedule, on one model toggled between the two (every
// product sees the same addresses and algorithms), for fp32 and bf16
// products, with and without recomputation. The parameter gradients' sums
// use atomic adds, so two serial runs may already differ in the last bits:
// the loss and every gradient must agree to 1e-5 of the largest gradient
// (and in relative L2), or to 4× what two serial runs differ by where that
// is more, where a missing dependency between the streams (a half-written
// h, dz or dh read) gives O(1) errors.
// The test configurations' kernels are short; mmrec-small's (its clustered
// level-0 kernels, as mmrec-train compiles them) run long enough at B 8 ·
// T 256 for the streams to overlap for real.
void checkOverlapMatchesSerial() {
  std::string dir = manifest("dense");
  dir = dir.substr(0, dir.rfind('/'));
  for (std::string path : {manifest("dense"), manifest("per_head"),
                           dir + "/mmrec-small-gcl.train.json"}) {
    const bool small = path.find("small") != std::string::npos;
    KernelLibrary lib(path, rt::DeviceKind::gpu);
    ParamLayout layout(lib.config());
    const int64_t C = lib.config().C;
    std::vector<float> params = initParams(lib.config(), layout, freshSeed());
    for (auto mm : {Model::Matmul::fp32, Model::Matmul::bf16})
      for (bool recompute : {false, true})
        for (Case cs : small ? std::vector<Case>{{8, 256}}
                             : std::vector<Case>{{2, 2 * C + 5}, {3, 64}}) {
          if (small && (mm == Model::Matmul::fp32 || recompute))
            continue;
          SCOPED_TRACE(lib.config().name + (mm == Model::Matmul::bf16 ? " bf16" : " fp32") +
                       (recompute ? " recompute" : "") + " B=" + std::to_string(cs.B) +
                       " T=" + std::to_string(cs.T));
          std::mt19937_64 rng(freshSeed());
          std::vector<int32_t> tok(size_t(cs.B * cs.T));
          for (auto &t : tok)
            t = int32_t(rng() % uint64_t(lib.config().V));
          Arrays a(rt::DeviceKind::gpu, params);
          Model m(lib, layout);
          m.setMatmul(mm);
          m.setRecompute(recompute);
          EXPECT_TRUE(m.overlapLevel0()); // the default
          constexpr int kRuns = 4; // serial, serial, beside, beside
          double loss[kRuns];
          std::vector<float> grad[kRuns];
          std::vector<float> zero(params.size(), 0.0f);
          for (int run = 0; run < kRuns; ++run) {
            m.setOverlapLevel0(run >= 2);
            a.g.upload(zero.data(), int64_t(zero.size()));
            loss[run] = m.forward(a.p.data(), tok.data(), cs.B, cs.T);
            m.backward(a.p.data(), a.g.data());
            grad[run] = a.g.toHost();
          }
          auto deviation = [&](int run) {
            double maxDiff = 0, maxRef = 0, num = 0, den = 0;
            for (size_t i = 0; i < grad[0].size(); ++i) {
              const double d = double(grad[run][i]) - grad[0][i];
              maxDiff = std::max(maxDiff, std::abs(d));
              maxRef = std::max(maxRef, std::abs(double(grad[0][i])));
              num += d * d;
              den += double(grad[0][i]) * grad[0][i];
            }
            return std::pair<double, double>{maxDiff / std::max(maxRef, 1e-30),
                                             std::sqrt(num / std::max(den, 1e-300))};
          };
          // The serial schedule's own noise (run 1 against run 0) sets the
          // scale: 1e-7 of the largest gradient at the test configurations,
          // ~1e-3 at mmrec-small with bf16 products (an fp32 sum's last bit
          // can flip an operand's bf16 rounding).
          // (With bf16 products at least 5e-3, so that a serial pair that
          // happens to agree does not make the bound flaky.)
          const auto noise = deviation(1);
          const double tol = mm == Model::Matmul::bf16 ? 5e-3 : 1e-5;
          const double lossNoise = std::abs(loss[1] - loss[0]);
          for (int run = 1; run < kRuns; ++run) {
            auto [maxRel, l2] = deviation(run);
            std::cout << (run < 2 ? "serial again" : "beside") << " vs serial: loss "
                      << loss[run] - loss[0] << ", gradient max " << maxRel << " (of the largest), "
                      << l2 << " (relative L2)\n";
            const double lossTol = (mm == Model::Matmul::bf16 ? 1e-5 : 1e-6) * std::abs(loss[0]);
            EXPECT_LE(std::abs(loss[run] - loss[0]), std::max(lossTol, 4 * lossNoise)) << run;
            EXPECT_LE(maxRel, std::max(tol, 4 * noise.first)) << run;
            EXPECT_LE(l2, std::max(tol, 4 * noise.second)) << run;
          }
        }
  }
}

// --profile's times are exclusive: a scope opened inside another (a
// product's to_bf16 roundings inside the product) counts only once, so the
// entries add up to the time profiled.
TEST(TrainerCpu, ProfileScopesAreExclusive) {
  Profile &p = Profile::get();
  const bool was = p.enabled;
  p.enabled = true;
  p.entries.clear();
  const auto t0 = std::chrono::steady_clock::now();
  {
    ProfileScope outer("outer", rt::DeviceKind::cpu);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    {
      ProfileScope inner("inner", rt::DeviceKind::cpu);
      std::this_thread::sleep_for(std::chrono::milliseconds(60));
    }
  }
  const double wall =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const double outer = p.entries["outer"].ms, inner = p.entries["inner"].ms;
  p.entries.clear();
  p.enabled = was;
  EXPECT_GE(inner, 60.0);
  EXPECT_GE(outer, 20.0);
  EXPECT_LT(outer, inner); // inclusive, outer would be 80 ms or more
  EXPECT_LE(outer + inner, wall + 0.5);
}

std::vector<uint16_t> toBf16Kernel(KernelLibrary &lib, const std::vector<float> &x);

// --profile's rates: a generated kernel's entry counts the bytes of its
// array arguments (to_bf16: 4 bytes in and 2 out an element), a scope its
// reported FLOPs, and the report prints GB/s and TFLOP/s from them ("-"
// where an entry has no work).
TEST(TrainerCpu, ProfileReportsRates) {
  Profile &p = Profile::get();
  const bool was = p.enabled;
  p.enabled = true;
  p.entries.clear();
  KernelLibrary lib(manifest("dense"));
  const int64_t n = 1 << 20;
  toBf16Kernel(lib, std::vector<float>(size_t(n), 1.5f));
  toBf16Kernel(lib, std::vector<float>(size_t(n), 2.5f));
  {
    ProfileScope product("product", rt::DeviceKind::cpu);
    product.work(0, 3e9);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  }
  { ProfileScope idle("idle", rt::DeviceKind::cpu); }
  const Profile::Entry round = p.entries["to_bf16"], prod = p.entries["product"];
  const std::string report = p.report();
  p.entries.clear();
  p.enabled = was;
  EXPECT_EQ(round.calls, 2);
  EXPECT_EQ(round.bytes, 2.0 * n * 6);
  EXPECT_EQ(prod.flops, 3e9);
  // product: 3e9 FLOPs in ≥ 30 ms, at most 0.1 TFLOP/s; to_bf16's GB/s.
  auto row = [&](const std::string &name) {
    std::istringstream in(report);
    for (std::string line; std::getline(in, line);)
      if (line.rfind(name + " ", 0) == 0)
        return line;
    return std::string();
  };
  std::istringstream prodRow(row("product")), roundRow(row("to_bf16")), idleRow(row("idle"));
  std::string name, share, gbs, tflops;
  double ms = 0;
  long long calls = 0;
  ASSERT_TRUE(prodRow >> name >> ms >> calls >> share >> gbs >> tflops) << report;
  EXPECT_EQ(gbs, "-");
  EXPECT_GT(std::stod(tflops), 0.0);
  EXPECT_NEAR(std::stod(tflops), prod.flops / (prod.ms * 1e-3) / 1e12, 0.05) << report;
  ASSERT_TRUE(roundRow >> name >> ms >> calls >> share >> gbs >> tflops) << report;
  EXPECT_NEAR(std::stod(gbs), round.bytes / (round.ms * 1e-3) / 1e9,
              0.051 + 1e-3 * std::stod(gbs))
      << report;
  EXPECT_EQ(tflops, "-");
  ASSERT_TRUE(idleRow >> name >> ms >> calls >> share >> gbs >> tflops) << report;
  EXPECT_EQ(gbs, "-");
  EXPECT_EQ(tflops, "-");
}

// --profile's breakdown by kind (issue 7: products, recurrence, memory
// hierarchy, elementwise, optimizer, idle): each entry counts under its
// kind, idle is the wall time since start() that no scope covers, and the
// memory hierarchy's share of the products' time is printed (issue 5).
TEST(TrainerCpu, ProfileBreaksDownByKind) {
  EXPECT_EQ(Profile::kindOf("gemm"), "products");
  EXPECT_EQ(Profile::kindOf("gemm:ffn.dw"), "products");
  EXPECT_EQ(Profile::kindOf("gemm_mdi"), "memory hierarchy");
  EXPECT_EQ(Profile::kindOf("gated_bwd"), "recurrence");
  EXPECT_EQ(Profile::kindOf("level1_fwd"), "memory hierarchy");
  EXPECT_EQ(Profile::kindOf("mem_scan_bwd"), "memory hierarchy");
  EXPECT_EQ(Profile::kindOf("mdi_write_softmax_bwd"), "memory hierarchy");
  EXPECT_EQ(Profile::kindOf("combine_fwd"), "memory hierarchy");
  EXPECT_EQ(Profile::kindOf("decode_level1_push"), "memory hierarchy");
  EXPECT_EQ(Profile::kindOf("adamw_bf16"), "optimizer");
  EXPECT_EQ(Profile::kindOf("sumsq"), "optimizer");
  EXPECT_EQ(Profile::kindOf("to_bf16"), "elementwise");
  EXPECT_EQ(Profile::kindOf("xent"), "elementwise");
  EXPECT_EQ(Profile::kindOf("decay_bwd"), "elementwise");
  EXPECT_EQ(Profile::kindOf("allreduce"), "other");

  Profile &p = Profile::get();
  const bool was = p.enabled;
  p.entries.clear();
  p.start();
  p.add("gemm", 40.0);
  p.add("gemm:proj", 40.0);
  p.add("gemm_mdi", 6.0);
  p.add("level1_bwd", 4.0);
  p.add("gated_fwd", 30.0);
  p.add("adamw", 5.0);
  p.add("rmsnorm_fwd", 3.0);
  std::this_thread::sleep_for(std::chrono::milliseconds(200)); // > the 128 ms added
  const std::string report = p.report();
  p.entries.clear();
  p.enabled = was;
  auto field = [&](const std::string &kind) {
    const size_t at = report.find("\n" + kind + " ", report.find("by kind"));
    if (at == std::string::npos)
      return -1.0;
    return std::stod(report.substr(at + 1 + kind.size()));
  };
  EXPECT_NEAR(field("products"), 80.0, 0.05) << report;
  EXPECT_NEAR(field("memory hierarchy"), 10.0, 0.05) << report;
  EXPECT_NEAR(field("recurrence"), 30.0, 0.05) << report;
  EXPECT_NEAR(field("optimizer"), 5.0, 0.05) << report;
  EXPECT_NEAR(field("elementwise"), 3.0, 0.05) << report;
  EXPECT_GE(field("idle"), 200.0 - 128.0 - 1.0) << report;
  EXPECT_GT(field("wall"), 199.0) << report;
  EXPECT_NE(report.find("memory hierarchy / products: 12.5%"), std::string::npos) << report;
}

// Profile::pause/resume (the trainer's first step and evaluations): a
// scope run while paused is not timed, and the paused wall time is neither
// work nor idle.
TEST(TrainerCpu, ProfilePauseIsNeitherWorkNorIdle) {
  Profile &p = Profile::get();
  const bool was = p.enabled;
  p.entries.clear();
  p.start();
  {
    ProfileScope a("timed", rt::DeviceKind::cpu);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  p.pause();
  EXPECT_FALSE(p.enabled);
  {
    ProfileScope b("paused", rt::DeviceKind::cpu);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  p.resume();
  EXPECT_TRUE(p.enabled);
  const std::string report = p.report();
  const bool timedPaused = p.entries.count("paused") > 0;
  const double timed = p.entries["timed"].ms;
  p.entries.clear();
  p.enabled = was;
  EXPECT_FALSE(timedPaused) << report;
  EXPECT_GE(timed, 20.0);
  const size_t at = report.find("\nwall ");
  ASSERT_NE(at, std::string::npos) << report;
  const double wall = std::stod(report.substr(at + 6));
  EXPECT_GE(wall + 0.051, timed) << report; // the report prints wall to 0.1 ms
  EXPECT_LT(wall, 300.0) << report; // the paused 300 ms are not in it
}

// The generated to_bf16 kernel (the operands of bf16 products): round to
// nearest even, as rt::toBF16; infinities, NaN and the extremes survive.
std::vector<uint16_t> toBf16Kernel(KernelLibrary &lib, const std::vector<float> &x) {
  const int64_t n = int64_t(x.size());
  FBuf in;
  HBuf out;
  in.reset(lib.device(), n);
  in.upload(x.data(), n);
  out.reset(lib.device(), n);
  lib("to_bf16", Arr(in), Arr(out.data(), n), n);
  return out.toHost();
}

std::vector<float> bf16Inputs() {
  std::mt19937_64 rng(freshSeed());
  std::vector<float> x = normals(100003, rng);
  const float special[] = {0.0f, -0.0f, 1.0f + 1.0f / 256, 1.0f + 3.0f / 256, 3.4e38f, -1e-40f,
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity()};
  std::copy(std::begin(special), std::end(special), x.begin());
  return x;
}

TEST(TrainerCpu, ToBf16RoundsToNearestEven) {
  KernelLibrary lib(manifest("dense"));
  std::vector<float> x = bf16Inputs();
  x.push_back(std::numeric_limits<float>::quiet_NaN());
  std::vector<uint16_t> y = toBf16Kernel(lib, x);
  ASSERT_EQ(y.size(), x.size());
  for (size_t i = 0; i + 1 < x.size(); ++i)
    ASSERT_EQ(y[i], rt::toBF16(x[i])) << i << ": " << x[i];
  EXPECT_TRUE(std::isnan(rt::fromBF16(y.back())));
  EXPECT_EQ(y[2], 0x3f80); // 1 + 2^-8 is a tie: to the even 1.0
  EXPECT_EQ(y[3], 0x3f82); // 1 + 3·2^-8 is a tie: to the even 1 + 2^-6
}

// Recomputation, keeping each layer's level-0 states (the default) or not:
// the same kernels on the same inputs, so bit-identical losses and
// gradients; less memory than keeping everything, least without the
// states; and with them the backward launches exactly one kernel fewer a
// layer (the sequential recurrence is not run again).
TEST(TrainerCpu, RecomputeGivesIdenticalGradientsInLessMemory) {
  KernelLibrary lib(manifest("dense"));
  ParamLayout layout(lib.config());
  const int64_t L = lib.config().L;
  std::vector<float> params = initParams(lib.config(), layout, freshSeed());
  std::vector<int32_t> tok(3 * 21);
  for (size_t i = 0; i < tok.size(); ++i)
    tok[i] = int32_t((i * 11 + 5) % 37);
  // kept: each layer's input and h kept; bare: h recomputed too.
  Model plain(lib, layout), kept(lib, layout), bare(lib, layout);
  kept.setRecompute(true);
  bare.setRecompute(true);
  bare.setKeepStates(false);
  std::vector<float> g[3];
  double loss[3];
  uint64_t backwardLaunches[3];
  Model *models[3] = {&plain, &kept, &bare};
  for (int i = 0; i < 3; ++i) {
    g[i].assign(size_t(layout.numel()), 0.0f);
    loss[i] = models[i]->forward(params.data(), tok.data(), 3, 21);
    uint64_t before = lib.launches();
    models[i]->backward(params.data(), g[i].data());
    backwardLaunches[i] = lib.launches() - before;
  }
  EXPECT_FALSE(plain.keptStates());
  EXPECT_TRUE(kept.keptStates());
  EXPECT_FALSE(bare.keptStates());
  for (int i = 1; i < 3; ++i) {
    EXPECT_EQ(loss[0], loss[i]);
    EXPECT_EQ(g[0], g[i]);
  }
  EXPECT_LT(kept.activationBytes(), plain.activationBytes());
  EXPECT_LT(bare.activationBytes(), kept.activationBytes());
  // The last layer's activations are forward's: L − 1 layers recomputed
  // (bare runs their recurrence again).
  EXPECT_EQ(kept.recomputedLayers(), uint64_t(L - 1));
  EXPECT_EQ(bare.recomputedLayers(), uint64_t(L - 1));
  EXPECT_EQ(backwardLaunches[2] - backwardLaunches[1], uint64_t(L - 1));
  // A second backward of the same forward recomputes every layer.
  std::vector<float> again(size_t(layout.numel()), 0.0f);
  kept.backward(params.data(), again.data());
  EXPECT_EQ(kept.recomputedLayers(), uint64_t(2 * L - 1));
  EXPECT_EQ(again, g[0]);
}

// The dense test model, fresh parameters and 2 × 9 tokens (step·i + first
// mod 37).
struct DenseCase {
  KernelLibrary lib{manifest("dense")};
  ParamLayout layout{lib.config()};
  Model model{lib, layout};
  std::vector<float> params = initParams(lib.config(), layout, freshSeed());
  std::vector<int32_t> tok;
  DenseCase(int32_t step, int32_t first) : tok(2 * 9) {
    for (size_t i = 0; i < tok.size(); ++i)
      tok[i] = int32_t((int32_t(i) * step + first) % 37);
  }
};

TEST(TrainerCpu, BackwardScalesAndAccumulates) {
  DenseCase dc(7, 3);
  auto &[lib, layout, model, params, tok] = dc;
  std::vector<float> g1(size_t(layout.numel()), 0.0f), g2(size_t(layout.numel()), 0.0f);
  model.forward(params.data(), tok.data(), 2, 9);
  model.backward(params.data(), g1.data());
  model.forward(params.data(), tok.data(), 2, 9);
  model.backward(params.data(), g2.data(), 0.5f);
  model.forward(params.data(), tok.data(), 2, 9);
  model.backward(params.data(), g2.data(), 0.5f);
  for (size_t i = 0; i < g1.size(); ++i)
    ASSERT_NEAR(g1[i], g2[i], 1e-6f + 1e-5f * std::abs(g1[i])) << i;
}

// The trainer's step: forward without the loss, whose head backward runs
// (lastLoss), gives the loss and gradients of forward + backward bit for
// bit; and the gradients for a loss gradient scaled by a power of two are
// those gradients times it, exactly (what --overflow-retries relies on).
TEST(TrainerCpu, LossFromBackwardAndPowerOfTwoScalesAreExact) {
  DenseCase dc(5, 1);
  auto &[lib, layout, model, params, tok] = dc;
  const size_t n = size_t(layout.numel());
  std::vector<float> g1(n, 0.0f), g2(n, 0.0f), g3(n, 0.0f);
  const double loss = model.forward(params.data(), tok.data(), 2, 9);
  EXPECT_EQ(model.lastLoss(), loss);
  model.backward(params.data(), g1.data());
  EXPECT_EQ(model.lastLoss(), loss);
  EXPECT_TRUE(std::isnan(model.forward(params.data(), tok.data(), 2, 9, /*loss=*/false)));
  EXPECT_TRUE(std::isnan(model.lastLoss()));
  model.backward(params.data(), g2.data());
  EXPECT_EQ(model.lastLoss(), loss);
  EXPECT_EQ(g1, g2);
  model.forward(params.data(), tok.data(), 2, 9, false);
  model.backward(params.data(), g3.data(), 0x1p-40f);
  EXPECT_EQ(model.lastLoss(), loss);
  size_t nonzero = 0;
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(g3[i], std::ldexp(g1[i], -40)) << i;
    nonzero += g1[i] != 0;
  }
  EXPECT_GT(nonzero, n / 2);
}

TEST(TrainerCpu, RejectsBadTokensAndShapes) {
  KernelLibrary lib(manifest("dense"));
  ParamLayout layout(lib.config());
  Model model(lib, layout);
  std::vector<float> params = initParams(lib.config(), layout, 1);
  std::vector<int32_t> tok = {1, 2, 37};
  EXPECT_THROW(model.forward(params.data(), tok.data(), 1, 3), Error);
  EXPECT_THROW(model.forward(params.data(), tok.data(), 0, 3), Error);
  EXPECT_THROW(KernelLibrary("/nonexistent/x.train.json"), Error);
}

// --optimizer-states bf16: m and v rounded to bf16 (nearest even) after
// every update, the update computed from the rounded moments in fp32; a
// shard that cuts tensors; pullState gives the stored moments exactly and
// pushState restores them (bit-exact resume).
TEST(TrainerCpu, AdamWBf16StatesMatchFormula) {
  KernelLibrary lib(manifest("dense"));
  ParamLayout layout(lib.config());
  const int64_t n = layout.numel(), lo = 333, hi = n - 111;
  std::mt19937_64 rng(freshSeed());
  std::vector<float> p = normals(n, rng), g = normals(n, rng);
  AdamW opt(lib, layout, lo, hi, true);
  EXPECT_TRUE(opt.bf16States());
  EXPECT_EQ(opt.stateBytes(), 4 * (hi - lo));
  AdamWConfig cfg;
  cfg.lr = 0.01f;
  std::vector<float> pr = p, mr(size_t(n), 0.0f), vr(size_t(n), 0.0f);
  auto bf = [](float x) { return rt::fromBF16(rt::toBF16(x)); };
  const float clip = 0.7f;
  for (int64_t t = 1; t <= 3; ++t) {
    opt.step(p.data(), g.data() + lo, t, cfg.lr, clip, cfg);
    const float bc1 = float(1.0 / (1.0 - std::pow(0.9, double(t))));
    const float bc2 = float(1.0 / (1.0 - std::pow(0.95, double(t))));
    for (const ParamInfo &info : layout.tensors())
      for (int64_t i = std::max(lo, info.offset); i < std::min(hi, info.offset + info.numel); ++i) {
        float gi = g[size_t(i)] * clip;
        mr[size_t(i)] = bf(0.9f * mr[size_t(i)] + (1 - 0.9f) * gi);
        vr[size_t(i)] = bf(0.95f * vr[size_t(i)] + (1 - 0.95f) * (gi * gi));
        float wd = info.decay ? 0.1f : 0.0f;
        float upd = mr[size_t(i)] * bc1 / (std::sqrt(vr[size_t(i)] * bc2) + 1e-8f) +
                    wd * pr[size_t(i)];
        pr[size_t(i)] -= 0.01f * upd;
      }
  }
  for (int64_t i = 0; i < n; ++i)
    ASSERT_NEAR(p[size_t(i)], pr[size_t(i)], 1e-6 * (1 + std::abs(pr[size_t(i)]))) << i;
  opt.pullState();
  ASSERT_EQ(int64_t(opt.m.size()), hi - lo);
  for (int64_t i = lo; i < hi; ++i) {
    // Rounding may differ by one bf16 ulp where fp32 sums differ in order.
    ASSERT_NEAR(opt.m[size_t(i - lo)], mr[size_t(i)], 1e-2 * std::abs(mr[size_t(i)]) + 1e-30) << i;
    ASSERT_NEAR(opt.v[size_t(i - lo)], vr[size_t(i)], 1e-2 * std::abs(vr[size_t(i)]) + 1e-30) << i;
  }
  // Round trip through the host copies (a checkpoint) changes nothing.
  std::vector<float> m0 = opt.m, v0 = opt.v, p1 = p;
  opt.pushState();
  opt.dropHostState();
  EXPECT_TRUE(opt.m.empty());
  AdamW twin(lib, layout, lo, hi, true);
  twin.m = m0;
  twin.v = v0;
  twin.pushState();
  opt.step(p.data(), g.data() + lo, 4, cfg.lr, clip, cfg);
  twin.step(p1.data(), g.data() + lo, 4, cfg.lr, clip, cfg);
  EXPECT_EQ(p, p1);
}

// Section 4 of the spec: N(0, 0.02) matrices, N(0, 0.02/√(2L)) for W_o and
// W_2, logit(decay_init) for λ and μ, ones for the norms, zeros for b_g,
// B_γ, ρ; reproducible from the seed (drawn in blocks by several threads).
TEST(TrainerCpu, InitFollowsSection4AndTheSeed) {
  KernelLibrary lib(manifest("dense"));
  const ModelConfig &c = lib.config();
  ParamLayout layout(c);
  std::vector<float> a = initParams(c, layout, 7), b = initParams(c, layout, 7),
                     d = initParams(c, layout, 8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, d);
  const double logit = std::log(c.decayInit / (1 - c.decayInit));
  for (const ParamInfo &t : layout.tensors()) {
    std::string base = t.name.substr(t.name.rfind('.') + 1);
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < t.numel; ++i) {
      sum += a[size_t(t.offset + i)];
      sq += double(a[size_t(t.offset + i)]) * a[size_t(t.offset + i)];
    }
    const double mean = sum / double(t.numel), sd = std::sqrt(sq / double(t.numel) - mean * mean);
    if (base == "lambda" || base == "mu") {
      EXPECT_NEAR(mean, logit, 1e-5) << t.name;
      EXPECT_LT(sd, 1e-5) << t.name;
    } else if (base == "w_in" || base == "w_ffn" || base == "final_norm") {
      EXPECT_EQ(mean, 1.0) << t.name;
    } else if (base == "b_g" || base == "B_gamma" || base == "rho") {
      EXPECT_EQ(sq, 0.0) << t.name;
    } else if (t.numel >= 4096) {
      const double want = base == "W_o" || base == "W_2" ? 0.02 / std::sqrt(2.0 * double(c.L)) : 0.02;
      EXPECT_NEAR(sd, want, 0.05 * want) << t.name;
      EXPECT_NEAR(mean, 0.0, 5 * want / std::sqrt(double(t.numel))) << t.name;
    }
  }
}

TEST(TrainerCpu, AdamWAndSumSqMatchFormulas) {
  KernelLibrary lib(manifest("dense"));
  ParamLayout layout(lib.config());
  const int64_t n = layout.numel();
  std::mt19937_64 rng(freshSeed());
  std::vector<float> p = normals(n, rng), g = normals(n, rng);
  AdamW opt(lib, layout);
  double ss = 0;
  for (float x : g)
    ss += double(x) * x;
  EXPECT_NEAR(opt.gradNorm(g), std::sqrt(ss), 1e-5 * std::sqrt(ss));
  {
    // Finite gradients far beyond fp32's sqrt(max) (1.8e19): the norm stays
    // finite and exact in f64 (an fp32 sum read +inf, and the trainer
    // skipped such a step as non-finite).
    std::vector<float> big(g.size());
    double bss = 0;
    for (size_t i = 0; i < g.size(); ++i) {
      big[i] = g[i] * 3e30f;
      bss += double(big[i]) * big[i];
    }
    const double norm = opt.gradNorm(big);
    EXPECT_TRUE(std::isfinite(norm));
    EXPECT_NEAR(norm, std::sqrt(bss), 1e-12 * std::sqrt(bss));
  }
  AdamWConfig cfg;
  cfg.lr = 0.01f;
  std::vector<double> pd(p.begin(), p.end()), md(size_t(n), 0.0), vd(size_t(n), 0.0);
  const float clip = 0.7f;
  // One launch per run of adjacent tensors that share their decay, fewer
  // than one per tensor (the tiny layout alternates, but not tensor by tensor).
  int64_t runs = 0;
  const auto &ts = layout.tensors();
  for (size_t i = 0; i < ts.size(); ++i)
    runs += i == 0 || ts[i].decay != ts[i - 1].decay;
  ASSERT_LT(runs, int64_t(ts.size()));
  for (int64_t t = 1; t <= 3; ++t) {
    const uint64_t before = lib.launches();
    opt.step(p, g, t, cfg.lr, clip, cfg);
    EXPECT_EQ(lib.launches() - before, uint64_t(runs));
    for (const ParamInfo &info : layout.tensors())
      for (int64_t i = info.offset; i < info.offset + info.numel; ++i) {
        double gi = double(g[size_t(i)]) * clip;
        md[size_t(i)] = 0.9 * md[size_t(i)] + 0.1 * gi;
        vd[size_t(i)] = 0.95 * vd[size_t(i)] + 0.05 * gi * gi;
        double mh = md[size_t(i)] / (1 - std::pow(0.9, double(t)));
        double vh = vd[size_t(i)] / (1 - std::pow(0.95, double(t)));
        double wd = info.decay ? 0.1 : 0.0;
        pd[size_t(i)] -= 0.01 * (mh / (std::sqrt(vh) + 1e-8) + wd * pd[size_t(i)]);
      }
  }
  for (int64_t i = 0; i < n; ++i)
    ASSERT_NEAR(p[size_t(i)], pd[size_t(i)], 1e-5 * (1 + std::abs(pd[size_t(i)]))) << i;
}

TEST(TrainerCpu, LayoutMatchesSpecNamesAndCount) {
  KernelLibrary lib(manifest("dense"));
  ParamLayout layout(lib.config());
  EXPECT_EQ(layout.numel(), lib.config().paramCount);
  EXPECT_EQ(layout.tensors().front().name, "embed");
  EXPECT_EQ(layout.tensors().back().name, "final_norm");
  EXPECT_EQ(layout.get("layers.1.S").shape, (std::vector<int64_t>{2, 5, 12}));
  EXPECT_EQ(layout.get("layers.0.mu").shape, (std::vector<int64_t>{2, 5}));
  EXPECT_THROW(layout.get("layers.9.W_q"), Error);
}

} // namespace

namespace {

// Decoding token by token with the carried state gives, at every position,
// the logits of the parallel forward over the whole sequence (T = 23: five
// full chunks of 4 and a partial one; both gates).
void checkGeneratorMatchesForward(const std::string &gate,
                                  rt::DeviceKind dev = rt::DeviceKind::cpu) {
  KernelLibrary lib(manifest(gate)), devLib(manifest(gate), dev);
  const ModelConfig &c = lib.config();
  ParamLayout layout(c);
  uint64_t seed = freshSeed();
  SCOPED_TRACE("gate " + gate + ", seed " + std::to_string(seed));
  std::vector<float> params = initParams(c, layout, seed);
  std::mt19937_64 rng(seed + 1);
  std::uniform_real_distribution<float> u(-0.3f, 0.3f);
  for (float &p : params)
    p += u(rng);
  const int64_t B = 2, T = 23, V = c.V;
  std::vector<int32_t> tok(size_t(B * T));
  for (int32_t &t : tok)
    t = int32_t(rng() % uint64_t(V));
  Model model(lib, layout);
  model.setKeepLogits(true);
  model.forward(params.data(), tok.data(), B, T);
  std::vector<float> ref = model.logits();
  Generator gen(devLib, layout, B);
  Arrays arr(dev, params);
  const int64_t bytes = gen.stateBytes();
  double maxRef = 0, maxErr = 0;
  std::vector<int32_t> step(static_cast<size_t>(B));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t b = 0; b < B; ++b)
      step[size_t(b)] = tok[size_t(b * T + t)];
    const std::vector<float> &lg = gen.step(arr.p.data(), step.data());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t v = 0; v < V; ++v) {
        double r = ref[size_t((b * T + t) * V + v)];
        maxRef = std::max(maxRef, std::abs(r));
        maxErr = std::max(maxErr, std::abs(double(lg[size_t(b * V + v)]) - r));
      }
  }
  EXPECT_LE(maxErr, 1e-4 * maxRef) << "max |logit| " << maxRef;
  EXPECT_EQ(gen.stateBytes(), bytes) << "the state grew while generating";
  EXPECT_EQ(gen.position(), T);
}

// Generator::setBf16Weights: the products of Model's --matmul bf16 (bf16
// weights and activations, fp32 accumulation), token by token. Against the
// bf16 forward the logits agree to the order of fp32 sums (often bit for bit
// on the CPU; on the GPU cuBLASLt sums a 2-row product in another order than
// the forward's, and an activation rounded across a bf16 boundary now and
// then moves a logit by up to ~6e-3 of the largest); against the fp32
// forward they differ by bf16's rounding everywhere: the mean error tells
// the two apart.
void checkGeneratorBf16(rt::DeviceKind dev) {
  KernelLibrary lib(manifest("dense")), devLib(manifest("dense"), dev);
  const ModelConfig &c = lib.config();
  ParamLayout layout(c);
  const uint64_t seed = freshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::vector<float> params = initParams(c, layout, seed);
  std::mt19937_64 rng(seed + 1);
  std::uniform_real_distribution<float> u(-0.3f, 0.3f);
  for (float &p : params)
    p += u(rng);
  const int64_t B = 2, T = 2 * c.C + 3, V = c.V;
  std::vector<int32_t> tok(size_t(B * T));
  for (int32_t &t : tok)
    t = int32_t(rng() % uint64_t(V));
  std::vector<float> ref[2];
  for (int bf = 0; bf < 2; ++bf) {
    Model model(lib, layout);
    model.setKeepLogits(true);
    if (bf)
      model.setMatmul(Model::Matmul::bf16);
    model.forward(params.data(), tok.data(), B, T);
    ref[bf] = model.logits();
  }
  Generator gen(devLib, layout, B);
  gen.setBf16Weights(true);
  Arrays arr(dev, params);
  double maxRef = 0, err16 = 0, err32 = 0, sum16 = 0, sum32 = 0;
  std::vector<int32_t> step(static_cast<size_t>(B));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t b = 0; b < B; ++b)
      step[size_t(b)] = tok[size_t(b * T + t)];
    const std::vector<float> &lg = gen.step(arr.p.data(), step.data());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t v = 0; v < V; ++v) {
        const size_t i = size_t((b * T + t) * V + v);
        maxRef = std::max(maxRef, std::abs(double(ref[1][i])));
        const double e16 = std::abs(double(lg[size_t(b * V + v)]) - ref[1][i]),
                     e32 = std::abs(double(lg[size_t(b * V + v)]) - ref[0][i]);
        err16 = std::max(err16, e16);
        err32 = std::max(err32, e32);
        sum16 += e16;
        sum32 += e32;
      }
  }
  std::cout << "bf16 generator: max |logit| " << maxRef << ", error vs bf16 forward " << err16
            << " (max), " << sum16 << " (sum); vs fp32 forward " << err32 << ", " << sum32 << "\n";
  EXPECT_LE(err16, 1e-2 * maxRef);
  EXPECT_GT(sum32, 3 * sum16) << "bf16 products are indistinguishable from fp32 ones";
  // Every parameter, each run of the layout padded to 128 elements.
  const int64_t runs = int64_t(Model::paramRunsOf(layout).size());
  EXPECT_GE(gen.bf16WeightBytes(), 2 * layout.numel());
  EXPECT_LT(gen.bf16WeightBytes(), 2 * (layout.numel() + 128 * runs));
}

TEST(TrainerCpu, GeneratorMatchesForwardDense) { checkGeneratorMatchesForward("dense"); }
TEST(TrainerCpu, GeneratorBf16MatchesBf16Forward) { checkGeneratorBf16(rt::DeviceKind::cpu); }
TEST(TrainerCpu, GeneratorMatchesForwardPerHead) { checkGeneratorMatchesForward("per_head"); }

TEST(TrainerCpu, GeneratorStartsNewSegmentsAfterTmax) {
  KernelLibrary lib(manifest("dense"));
  const ModelConfig &c = lib.config();
  ParamLayout layout(c);
  std::vector<float> params = initParams(c, layout, 3);
  Generator gen(lib, layout, 1);
  std::vector<int32_t> t = {5};
  for (int64_t i = 0; i < c.Tmax + 3; ++i) {
    const std::vector<float> &lg = gen.step(params.data(), t.data());
    for (float x : lg)
      ASSERT_TRUE(std::isfinite(x));
  }
  EXPECT_EQ(gen.position(), 3);
  std::vector<int32_t> bad = {int32_t(c.V)};
  EXPECT_THROW(gen.step(params.data(), bad.data()), Error);
}

/// The ranges backward() reports as final tile the gradient array exactly
/// once, layer L−1 first, and hold their final values when reported (what
/// data parallelism's overlapped reductions rely on).
void checkGradReadyHook(rt::DeviceKind dev) {
  KernelLibrary lib(manifest("dense"), dev);
  const ModelConfig &c = lib.config();
  ParamLayout layout(c);
  Model model(lib, layout);
  std::mt19937_64 rng(freshSeed());
  std::vector<float> params = initParams(c, layout, rng());
  const int64_t B = 2, T = 13, P = layout.numel();
  std::vector<int32_t> tok(size_t(B * T));
  for (auto &t : tok)
    t = int32_t(rng() % uint64_t(c.V));
  Arrays arr(dev, params);
  std::vector<std::pair<int64_t, int64_t>> ranges;
  std::vector<float> seen(size_t(P), NAN);
  model.setGradReadyHook([&](int64_t a, int64_t b) {
    ranges.push_back({a, b});
    arr.g.download(seen.data() + a, b - a, a);
  });
  model.forward(arr.p.data(), tok.data(), B, T);
  model.backward(arr.p.data(), arr.g.data());
  model.setGradReadyHook({});
  ASSERT_EQ(int64_t(ranges.size()), c.L + 2);
  for (int64_t l = 0; l < c.L; ++l)
    EXPECT_EQ(ranges[size_t(l)].first, layout.layer(c.L - 1 - l, "w_in")) << l;
  std::vector<int> covered(size_t(P), 0);
  for (auto [a, b] : ranges)
    for (int64_t i = a; i < b; ++i)
      ++covered[size_t(i)];
  std::vector<float> final = arr.g.toHost();
  for (int64_t i = 0; i < P; ++i) {
    ASSERT_EQ(covered[size_t(i)], 1) << i;
    ASSERT_EQ(seen[size_t(i)], final[size_t(i)]) << i; // bit for bit
  }
}

TEST(Trainer, GradReadyHookTilesTheGradients) { checkGradReadyHook(rt::DeviceKind::cpu); }

/// GradSync's bucketed reduction into the owner's shard and the all-gather,
/// on one rank: the shard is the gradient array, bit for bit, whatever the
/// order and size of the ranges.
void checkGradSyncOneRank(std::unique_ptr<dist::GradSync> sync, rt::DeviceKind dev) {
  std::mt19937_64 rng(freshSeed());
  const int64_t S = 100003;
  std::vector<float> g = normals(S, rng);
  FBuf grads, shard;
  grads.reset(dev, S);
  grads.upload(g.data(), S);
  shard.reset(dev, S);
  sync->begin(grads.data(), shard.data(), S);
  for (auto [a, b] : {std::pair<int64_t, int64_t>{70000, S}, {1, 70000}, {0, 1}})
    sync->ready(a, b);
  sync->finish();
  EXPECT_EQ(shard.toHost(), g);
  sync->allgather(grads.data(), S);
  EXPECT_EQ(grads.toHost(), g);
  EXPECT_EQ(sync->asyncError(), "");
}

TEST(Trainer, HostGradSyncOneRank) {
  checkGradSyncOneRank(dist::hostGradSync(dist::Comm::world()), rt::DeviceKind::cpu);
}

} // namespace

// The same checks on the GPU training library (label `gpu`): fp32 kernels,
// cuBLASLt products, the same tolerances as the CPU.
#define REQUIRE_GPU()                                                                              \
  if (!rt::gpuAvailable())                                                                         \
  GTEST_SKIP() << "no CUDA device"

TEST(TrainerGpu, DenseGateMatchesOracle) {
  REQUIRE_GPU();
  checkAgainstOracle("dense", kCases, 0, rt::DeviceKind::gpu);
}
TEST(TrainerGpu, PerHeadGateMatchesOracle) {
  REQUIRE_GPU();
  checkAgainstOracle("per_head", kCases, 0, rt::DeviceKind::gpu);
}
TEST(TrainerGpu, RecomputeAndBlockedHeadMatchOracle) {
  REQUIRE_GPU();
  checkAgainstOracle("dense", {{2, 11}, {1, 17}, {2, 64}}, 1, rt::DeviceKind::gpu);
}

TEST(TrainerGpu, Bf16ProductsMatchOracle) {
  REQUIRE_GPU();
  checkAgainstOracle("dense", kCases, 2, rt::DeviceKind::gpu);
  checkAgainstOracle("per_head", {{2, 11}, {1, 17}, {2, 64}}, 2, rt::DeviceKind::gpu);
}
TEST(TrainerGpu, Bf16OperandCopiesAreReusedExactly) {
  REQUIRE_GPU();
  checkBf16Reuse(rt::DeviceKind::gpu);
}
TEST(TrainerGpu, Level0BesideMemoryMatchesSerial) {
  REQUIRE_GPU();
  checkOverlapMatchesSerial();
}
TEST(TrainerGpu, ToBf16MatchesCpu) {
  REQUIRE_GPU();
  KernelLibrary cpuLib(manifest("dense")), gpuLib(manifest("dense"), rt::DeviceKind::gpu);
  std::vector<float> x = bf16Inputs();
  EXPECT_EQ(toBf16Kernel(gpuLib, x), toBf16Kernel(cpuLib, x));
  // Lengths around the GPU kernel's 1,024-element blocks: every element
  // written, none past n (a guard of 0xFFFF after it stays).
  for (int64_t n : {1, 3, 1023, 1024, 1025, 4097}) {
    SCOPED_TRACE("n " + std::to_string(n));
    std::vector<float> xs(x.begin(), x.begin() + n);
    const int64_t guard = 2048;
    FBuf in;
    HBuf out;
    in.reset(gpuLib.device(), n);
    in.upload(xs.data(), n);
    out.reset(gpuLib.device(), n + guard);
    std::vector<uint16_t> poison(size_t(n + guard), 0xFFFF);
    out.upload(poison.data(), n + guard);
    gpuLib("to_bf16", Arr(in), Arr(out.data(), n), n);
    std::vector<uint16_t> got = out.toHost(), want = toBf16Kernel(cpuLib, xs);
    EXPECT_EQ(std::vector<uint16_t>(got.begin(), got.begin() + n), want);
    EXPECT_EQ(std::vector<uint16_t>(got.begin() + n, got.end()),
              std::vector<uint16_t>(size_t(guard), 0xFFFF));
  }
}

TEST(TrainerGpu, GeneratorBf16MatchesBf16Forward) {
  REQUIRE_GPU();
  checkGeneratorBf16(rt::DeviceKind::gpu);
}
TEST(TrainerGpu, GeneratorMatchesForward) {
  REQUIRE_GPU();
  checkGeneratorMatchesForward("dense", rt::DeviceKind::gpu);
  checkGeneratorMatchesForward("per_head", rt::DeviceKind::gpu);
}

TEST(TrainerGpu, GradReadyHookTilesTheGradients) {
  REQUIRE_GPU();
  checkGradReadyHook(rt::DeviceKind::gpu);
}

// NCCL with one rank (the single-GPU machine): set LD_LIBRARY_PATH to a
// libnccl.so.2 (bench/train-gpu.sh does); MMREC_REQUIRE_NCCL=1 turns its
// absence into a failure instead of a skip.
TEST(TrainerGpu, NcclGradSyncOneRank) {
  REQUIRE_GPU();
  std::string why;
  if (!dist::ncclAvailable(&why)) {
    if (const char *req = std::getenv("MMREC_REQUIRE_NCCL"); req && *req == '1')
      FAIL() << why;
    GTEST_SKIP() << why;
  }
  auto sync = dist::ncclGradSync(dist::Comm::world());
  std::cout << "collectives: " << sync->name() << "\n";
  checkGradSyncOneRank(std::move(sync), rt::DeviceKind::gpu);
}

TEST(TrainerGpu, StagedGradSyncOneRank) {
  REQUIRE_GPU();
  checkGradSyncOneRank(dist::stagedGradSync(dist::Comm::world()), rt::DeviceKind::gpu);
}

TEST(TrainerGpu, AdamWBf16StatesMatchCpu) {
  REQUIRE_GPU();
  KernelLibrary cpuLib(manifest("dense")), gpuLib(manifest("dense"), rt::DeviceKind::gpu);
  ParamLayout layout(cpuLib.config());
  const int64_t n = layout.numel(), lo = 1001, hi = n - 777;
  std::mt19937_64 rng(freshSeed());
  std::vector<float> p = normals(n, rng), g = normals(n, rng);
  AdamW cpu(cpuLib, layout, lo, hi, true), gpu(gpuLib, layout, lo, hi, true);
  Arrays dev(rt::DeviceKind::gpu, p);
  dev.g.upload(g.data() + lo, hi - lo);
  AdamWConfig cfg;
  for (int64_t t = 1; t <= 3; ++t) {
    cpu.step(p.data(), g.data() + lo, t, 0.01f, 0.7f, cfg);
    gpu.step(dev.p.data(), dev.g.data(), t, 0.01f, 0.7f, cfg);
  }
  std::vector<float> pg = dev.p.toHost();
  for (int64_t i = 0; i < n; ++i)
    ASSERT_NEAR(pg[size_t(i)], p[size_t(i)], 1e-6 * (1 + std::abs(p[size_t(i)]))) << i;
  cpu.pullState();
  gpu.pullState();
  for (int64_t i = 0; i < hi - lo; ++i) {
    ASSERT_NEAR(gpu.m[size_t(i)], cpu.m[size_t(i)], 1e-2 * std::abs(cpu.m[size_t(i)]) + 1e-30) << i;
    ASSERT_NEAR(gpu.v[size_t(i)], cpu.v[size_t(i)], 1e-2 * std::abs(cpu.v[size_t(i)]) + 1e-30) << i;
  }
}

TEST(TrainerGpu, AdamWMatchesCpu) {
  REQUIRE_GPU();
  KernelLibrary cpuLib(manifest("dense")), gpuLib(manifest("dense"), rt::DeviceKind::gpu);
  ParamLayout layout(cpuLib.config());
  const int64_t n = layout.numel();
  std::mt19937_64 rng(freshSeed());
  std::vector<float> p = normals(n, rng), g = normals(n, rng);
  // A shard that starts and ends inside tensors.
  const int64_t lo = 1001, hi = n - 777;
  AdamW cpu(cpuLib, layout, lo, hi), gpu(gpuLib, layout, lo, hi);
  Arrays dev(rt::DeviceKind::gpu, p);
  dev.g.upload(g.data() + lo, hi - lo);
  std::vector<float> gShard(g.begin() + lo, g.begin() + hi);
  EXPECT_NEAR(gpu.sumSquares(dev.g.data(), hi - lo), cpu.sumSquares(gShard.data(), hi - lo),
              1e-5 * cpu.sumSquares(gShard.data(), hi - lo));
  AdamWConfig cfg;
  for (int64_t t = 1; t <= 3; ++t) {
    cpu.step(p.data(), gShard.data(), t, 0.01f, 0.7f, cfg);
    gpu.step(dev.p.data(), dev.g.data(), t, 0.01f, 0.7f, cfg);
  }
  std::vector<float> pg = dev.p.toHost();
  for (int64_t i = 0; i < n; ++i)
    ASSERT_NEAR(pg[size_t(i)], p[size_t(i)], 1e-6 * (1 + std::abs(p[size_t(i)]))) << i;
  gpu.pullState();
  for (int64_t i = 0; i < hi - lo; ++i) {
    ASSERT_NEAR(gpu.m[size_t(i)], cpu.m[size_t(i)], 1e-6) << i;
    ASSERT_NEAR(gpu.v[size_t(i)], cpu.v[size_t(i)], 1e-6) << i;
  }
}
