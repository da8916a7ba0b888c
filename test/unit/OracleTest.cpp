//===- OracleTest.cpp - the float64 oracle checks itself -----------------===//
//
// Parameter counts (section 6), initialization (section 4), finite-difference
// checks of every gradient of the layer (every parameter tensor, x, h0, Mem0)
// and of the model loss (every parameter tensor), on ragged shapes (T not a
// multiple of C, T < C) and both gate kinds; the segment-carry property of
// section 3; causality. Seeds are fresh each run and printed on failure.
//
//===----------------------------------------------------------------------===//

#include "Reference/Oracle.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace mmrec::ref;

namespace {

uint64_t freshSeed() { return (uint64_t(std::random_device{}()) << 32) ^ std::random_device{}(); }

Config fdConfig(bool dense) {
  Config c{"fd", 11, 8, 2, 2, 2, 3, 6, 3, 64, 2};
  c.denseGate = dense;
  return c;
}

Tensor<double> randomTensor(std::vector<int64_t> shape, std::mt19937_64 &rng, double s = 1.0) {
  Tensor<double> t(std::move(shape));
  std::uniform_real_distribution<double> U(-s, s);
  for (auto &x : t.data) x = U(rng);
  return t;
}

/// Indices to probe in a tensor of n elements: all when small, else a sample.
std::vector<int64_t> probes(int64_t n, std::mt19937_64 &rng, int64_t k = 5) {
  std::vector<int64_t> out;
  if (n <= k) {
    for (int64_t i = 0; i < n; ++i) out.push_back(i);
    return out;
  }
  std::uniform_int_distribution<int64_t> U(0, n - 1);
  for (int64_t i = 0; i < k; ++i) out.push_back(U(rng));
  return out;
}

void expectGradNear(double analytic, double fd, const std::string &what) {
  EXPECT_NEAR(analytic, fd, 1e-6 * std::max(1.0, std::fabs(fd))) << what;
}

/// Central difference of f around v[i].
template <class F> double centralDiff(double &v, F f) {
  const double eps = 1e-5, keep = v;
  v = keep + eps;
  double up = f();
  v = keep - eps;
  double dn = f();
  v = keep;
  return (up - dn) / (2 * eps);
}

void checkLayerGradients(bool dense, int64_t B, int64_t T) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed) + (dense ? " dense" : " per_head") + " B" +
               std::to_string(B) + " T" + std::to_string(T));
  std::mt19937_64 rng(seed);
  Config c = fdConfig(dense);
  Params<double> p = randomParams(c, seed);
  Tensor<double> x = randomTensor({B, T, c.D}, rng), h0 = randomTensor({B, c.D}, rng, 0.5);
  Tensor<double> mem0 = randomTensor({B, c.Nm, c.M, c.dm()}, rng, 0.5);
  Tensor<double> wy = randomTensor({B, T, c.D}, rng), wh = randomTensor({B, c.D}, rng);
  Tensor<double> wm = randomTensor({B, c.Nm, c.M, c.dm()}, rng);
  const int l = 1;
  auto loss = [&]() {
    LayerOut<double> o = layerForward(c, p, l, x, h0, mem0);
    double L = 0;
    for (int64_t i = 0; i < o.y.numel(); ++i) L += o.y[i] * wy[i];
    for (int64_t i = 0; i < o.h.numel(); ++i) L += o.h[i] * wh[i];
    for (int64_t i = 0; i < o.mem.numel(); ++i) L += o.mem[i] * wm[i];
    return L;
  };
  LayerGrads g = layerGrads(c, p, l, x, h0, mem0, wy, wh, wm);
  ASSERT_EQ(g.params.size(), layerParamNames().size());
  for (const std::string &n : layerParamNames()) {
    std::string name = "layers.1." + n;
    Tensor<double> &t = p.at(name);
    for (int64_t i : probes(t.numel(), rng))
      expectGradNear(g.params.at(name)[i], centralDiff(t[i], loss), name + "[" + std::to_string(i) + "]");
  }
  for (int64_t i : probes(x.numel(), rng, 8))
    expectGradNear(g.x[i], centralDiff(x[i], loss), "x[" + std::to_string(i) + "]");
  for (int64_t i : probes(h0.numel(), rng))
    expectGradNear(g.h0[i], centralDiff(h0[i], loss), "h0[" + std::to_string(i) + "]");
  for (int64_t i : probes(mem0.numel(), rng))
    expectGradNear(g.mem0[i], centralDiff(mem0[i], loss), "mem0[" + std::to_string(i) + "]");
}

} // namespace

TEST(Oracle, ParameterCounts) {
  EXPECT_EQ(Config::b7().paramCount(), 5919806016);
  EXPECT_EQ(Config::small().paramCount(), 127255440);
  EXPECT_EQ(Config::tiny().paramCount(), 541964);
  Config head = Config::tiny();
  head.denseGate = false;
  EXPECT_EQ(head.paramCount(), 541964 - 2 * (128 * 128 - 128 * 128 / 4));
  // The named tensors add up to the formula.
  for (Config c : {Config::tiny(), Config::small(), Config::b7(), head}) {
    int64_t total = 0;
    for (auto &[name, shape] : paramShapes(c)) {
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      total += n;
    }
    EXPECT_EQ(total, c.paramCount()) << c.name;
  }
  EXPECT_EQ(paramShapes(Config::tiny()).count("layers.1.W_g"), 1u);
  EXPECT_EQ(paramShapes(head).at("layers.0.W_g"), (std::vector<int64_t>{4, 32, 32}));
}

TEST(Oracle, InitialDecayIsExactlyDecayInit) {
  Config c = fdConfig(true);
  Params<double> p = initParams(c, freshSeed());
  std::mt19937_64 rng(1);
  Tensor<double> x = randomTensor({2, 5, c.D}, rng), h0({2, c.D}), mem0({2, c.Nm, c.M, c.dm()});
  LayerOut<double> o = layerForward(c, p, 0, x, h0, mem0);
  for (double g : o.gamma.data)
    EXPECT_NEAR(g, 0.99, 1e-14);
  // Section 4's other rules.
  for (double v : p.at("layers.0.B_gamma").data) EXPECT_EQ(v, 0.0);
  for (double v : p.at("layers.1.rho").data) EXPECT_EQ(v, 0.0);
  for (double v : p.at("final_norm").data) EXPECT_EQ(v, 1.0);
  for (double v : p.at("layers.0.mu").data) EXPECT_NEAR(v, std::log(0.99 / 0.01), 1e-12);
}

TEST(Oracle, LayerGradientsDenseRagged) { checkLayerGradients(true, 2, 7); }
TEST(Oracle, LayerGradientsDenseShorterThanChunk) { checkLayerGradients(true, 1, 2); }
TEST(Oracle, LayerGradientsPerHead) { checkLayerGradients(false, 2, 5); }

TEST(Oracle, ModelGradients) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Config c = fdConfig(true);
  Params<double> p = randomParams(c, seed, 0.2);
  const int64_t B = 2, T = 5;
  std::vector<int> tokens(B * T);
  std::uniform_int_distribution<int> U(0, int(c.V) - 1);
  for (auto &t : tokens) t = U(rng);
  double loss = 0;
  Params<double> g = modelGrads(c, p, tokens, B, T, &loss);
  EXPECT_NEAR(loss, modelLoss(c, p, tokens, B, T), 1e-12);
  ASSERT_EQ(g.size(), paramShapes(c).size());
  auto L = [&]() { return modelLoss(c, p, tokens, B, T); };
  for (auto &[name, t] : p)
    for (int64_t i : probes(t.numel(), rng, 3))
      expectGradNear(g.at(name)[i], centralDiff(t[i], L), name + "[" + std::to_string(i) + "]");
}

TEST(Oracle, ModelRejectsBadTokens) {
  Config c = fdConfig(true);
  Params<double> p = initParams(c, 1);
  EXPECT_THROW(modelLoss(c, p, std::vector<int>{1, 2, 99}, 1, 3), std::out_of_range);
  EXPECT_THROW(modelLoss(c, p, std::vector<int>{1, 2}, 1, 3), std::invalid_argument);
}

TEST(Oracle, SegmentCarry) {
  // Split at a chunk boundary and carry (h, Mem): the same final h and Mem,
  // and the same outputs for every token of the first segment.
  uint64_t seed = freshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Config c = fdConfig(true);
  Params<double> p = randomParams(c, seed);
  const int64_t B = 2, T = 9, split = 6; // chunks of 3
  Tensor<double> x = randomTensor({B, T, c.D}, rng), h0 = randomTensor({B, c.D}, rng, 0.5);
  Tensor<double> mem0 = randomTensor({B, c.Nm, c.M, c.dm()}, rng, 0.5);
  auto slice = [&](int64_t t0, int64_t t1) {
    Tensor<double> s({B, t1 - t0, c.D});
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t j = 0; j < c.D; ++j) s[(b * (t1 - t0) + t - t0) * c.D + j] = x[(b * T + t) * c.D + j];
    return s;
  };
  LayerOut<double> full = layerForward(c, p, 0, x, h0, mem0);
  LayerOut<double> first = layerForward(c, p, 0, slice(0, split), h0, mem0);
  LayerOut<double> second = layerForward(c, p, 0, slice(split, T), first.h, first.mem);
  for (int64_t i = 0; i < full.h.numel(); ++i) EXPECT_NEAR(second.h[i], full.h[i], 1e-12);
  for (int64_t i = 0; i < full.mem.numel(); ++i) EXPECT_NEAR(second.mem[i], full.mem[i], 1e-12);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < split; ++t)
      for (int64_t j = 0; j < c.D; ++j)
        EXPECT_NEAR(first.y[(b * split + t) * c.D + j], full.y[(b * T + t) * c.D + j], 1e-12);
}

TEST(Oracle, Causality) {
  // Perturbing token t changes no output before t.
  uint64_t seed = freshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  Config c = fdConfig(false);
  Params<double> p = randomParams(c, seed);
  const int64_t B = 1, T = 10;
  Tensor<double> x = randomTensor({B, T, c.D}, rng), h0({B, c.D}), mem0({B, c.Nm, c.M, c.dm()});
  LayerOut<double> a = layerForward(c, p, 0, x, h0, mem0);
  for (int64_t t = 1; t < T; ++t) {
    Tensor<double> xp = x;
    for (int64_t j = 0; j < c.D; ++j) xp[t * c.D + j] += 0.5;
    LayerOut<double> b = layerForward(c, p, 0, xp, h0, mem0);
    for (int64_t s = 0; s < t; ++s)
      for (int64_t j = 0; j < c.D; ++j)
        ASSERT_EQ(a.y[s * c.D + j], b.y[s * c.D + j]) << "token " << t << " changed output " << s;
    bool changed = false;
    for (int64_t j = 0; j < c.D; ++j) changed |= a.y[t * c.D + j] != b.y[t * c.D + j];
    EXPECT_TRUE(changed) << "token " << t << " did not change its own output";
  }
}
