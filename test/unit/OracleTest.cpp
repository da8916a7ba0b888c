//===- OracleTest.cpp - the float64 oracle checks itself -----------------===//
//
// Tests of lib/Reference/Oracle.h against MMREC_SPEC:
//  * finite differences (central, double precision) of every backward: each
//    primitive with respect to each of its inputs, the layer with respect to
//    every parameter tensor, x, h0 and Mem0 (with incoming gradients on y,
//    h_final and Mem_final), and the model loss with respect to every
//    parameter tensor; every entry is probed, plus one random direction;
//    ragged shapes (T not a multiple of C, T < C, odd D, d_m and B) and both
//    gate kinds;
//  * the segment-carry property (section 3) and causality;
//  * small cases with a closed form: constant-decay scan, clamps at their
//    bounds, a linear level 0, one-slot level 2, level-1 chunk means;
//  * parameter counts (section 6) and initialization (section 4).
// Seeds are fresh each run and printed on failure (SCOPED_TRACE); set
// ORACLE_SEED=<seed> to replay one (with --gtest_filter=<that test>).
// ORACLE_FD_VERBOSE=1 prints how much of the tolerance each check used.
//
//===----------------------------------------------------------------------===//

#include "Reference/Oracle.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <functional>
#include <random>
#include <set>

using namespace mmrec::ref;

namespace {

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

/// A fresh seed per use, or ORACLE_SEED from the environment (to replay a
/// failure: every test traces the seeds it draws).
uint64_t freshSeed() {
  if (const char *fixed = std::getenv("ORACLE_SEED"))
    return std::strtoull(fixed, nullptr, 10);
  static std::random_device rd;
  return (uint64_t(rd()) << 32) ^ rd();
}

std::string seedTrace(uint64_t seed) { return "seed " + std::to_string(seed); }

Tensor randomTensor(std::vector<int64_t> shape, std::mt19937_64 &rng, double lo = -1.0,
                    double hi = 1.0) {
  Tensor t(std::move(shape));
  std::uniform_real_distribution<double> u(lo, hi);
  for (double &x : t.data) x = u(rng);
  return t;
}

Tensor randomLike(const Tensor &t, std::mt19937_64 &rng) { return randomTensor(t.shape, rng); }

/// Finite-difference check of an analytic gradient. `loss` is evaluated at
/// the current contents of the probed tensor, which is perturbed in place
/// and restored.
///
/// The difference is the five-point central stencil
///   fd = (8(L(x+h) − L(x−h)) − (L(x+2h) − L(x−2h))) / 12h,   h = 3e-5,
/// whose truncation error is O(h⁴ L⁽⁵⁾): random problems occasionally put a
/// norm's input near zero (RMS ≈ 0.03), where the plain three-point
/// stencil's O(h² L''') error reaches 1e-6 at h = 1e-5, while this one stays
/// near 1e-9. Rounding noise is ≈ 1e-16·|L|/h.
///
/// Per entry: |g − fd| ≤ kRelTol·max(|fd|, scale) + kAbsTol·(1 + |L|), where
/// scale is the largest |g| of the tensor, so a wrong gradient (off by an
/// amount of the order of the gradients themselves) fails, while the noise
/// of the difference does not. Along one random direction u:
/// |⟨g, u⟩ − fd_u| ≤ kRelTol·Σ|g_i u_i| + kAbsTol·(1 + |L|).
constexpr double kStep = 3e-5;
constexpr double kRelTol = 1e-6;
constexpr double kAbsTol = 1e-9;

class GradChecker {
public:
  GradChecker(std::function<double()> loss, std::mt19937_64 &rng)
      : loss_(std::move(loss)), rng_(rng) {}

  void check(const std::string &name, Tensor &x, const Tensor &grad) {
    SCOPED_TRACE("gradient of " + name);
    ASSERT_EQ(x.numel(), grad.numel()) << name << ": gradient has the wrong size";
    const double L = loss_();
    ASSERT_TRUE(std::isfinite(L));
    double scale = 0.0;
    for (double g : grad.data) scale = std::max(scale, std::fabs(g));
    const double noise = kAbsTol * (1.0 + std::fabs(L));
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double keep = x[i];
      auto at = [&](double offset) {
        x[i] = keep + offset;
        return loss_();
      };
      const double fd = stencil(at);
      x[i] = keep;
      const double err = std::fabs(grad[i] - fd);
      const double tol = kRelTol * std::max(std::fabs(fd), scale) + noise;
      worst_ = std::max(worst_, err / tol);
      EXPECT_LE(err, tol) << name << "[" << i << "]: analytic " << grad[i]
                          << ", finite difference " << fd;
    }
    // One random direction.
    Tensor u = randomLike(x, rng_);
    const Tensor keep = x;
    double expect = 0.0, mag = 0.0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      expect += grad[i] * u[i];
      mag += std::fabs(grad[i] * u[i]);
    }
    auto along = [&](double offset) {
      for (int64_t i = 0; i < x.numel(); ++i) x[i] = keep[i] + offset * u[i];
      return loss_();
    };
    const double fd = stencil(along);
    x = keep;
    worst_ = std::max(worst_, std::fabs(expect - fd) / (kRelTol * mag + noise));
    EXPECT_LE(std::fabs(expect - fd), kRelTol * mag + noise)
        << name << " along a random direction: analytic " << expect << ", fd " << fd;
    ++checked_;
  }

  int checked() const { return checked_; }
  ~GradChecker() {
    if (std::getenv("ORACLE_FD_VERBOSE"))
      std::printf("  [fd] %d tensors, largest error / tolerance %.3g\n", checked_, worst_);
  }

private:
  /// d/dε f(ε) at 0 by the five-point central stencil.
  template <class F> static double stencil(F f) {
    return (8 * (f(kStep) - f(-kStep)) - (f(2 * kStep) - f(-2 * kStep))) / (12 * kStep);
  }

  std::function<double()> loss_;
  std::mt19937_64 &rng_;
  double worst_ = 0.0;
  int checked_ = 0;
};

//===----------------------------------------------------------------------===//
// Configuration, parameter count, initialization
//===----------------------------------------------------------------------===//

TEST(OracleConfig, ParameterCounts) {
  EXPECT_EQ(Config::b7().paramCount(), 5919806016);
  EXPECT_EQ(Config::small().paramCount(), 127255440);
  EXPECT_EQ(Config::tiny().paramCount(), 541964);
  // per_head: the gate term is D²/H instead of D², in every layer.
  for (Config c : {Config::tiny(), Config::small(), Config::b7()}) {
    Config head = c;
    head.gate = Gate::PerHead;
    EXPECT_EQ(c.paramCount() - head.paramCount(), c.L * (c.D * c.D - c.D * c.D / c.H)) << c.name;
  }
  Config head = Config::tiny();
  head.gate = Gate::PerHead;
  EXPECT_EQ(head.paramCount(), 541964 - 2 * (128 * 128 - 128 * 32));
}

TEST(OracleConfig, NamedTensorsMatchTheFormula) {
  for (Gate gate : {Gate::Dense, Gate::PerHead}) {
    Config c = Config::tiny();
    c.gate = gate;
    ModelParams p = ModelParams::zeros(c);
    EXPECT_EQ(p.numel(), c.paramCount());
    auto named = p.named();
    ASSERT_EQ(named.size(), size_t(2 + 18 * c.L));
    EXPECT_EQ(named.front().first, "embed");
    EXPECT_EQ(named[1].first, "layers.0.w_in");
    EXPECT_EQ(named[18].first, "layers.0.W_2");
    EXPECT_EQ(named.back().first, "final_norm");
    std::set<std::string> unique;
    for (auto &[name, t] : named) unique.insert(name);
    EXPECT_EQ(unique.size(), named.size());
    EXPECT_EQ(&p.get("layers.1.W_q"), &p.layers[1].W_q);
    EXPECT_THROW(p.get("layers.2.W_q"), std::out_of_range);
    const std::vector<int64_t> wg = gate == Gate::Dense ? std::vector<int64_t>{128, 128}
                                                        : std::vector<int64_t>{4, 32, 32};
    EXPECT_EQ(p.get("layers.0.W_g").shape, wg);
    EXPECT_EQ(p.get("layers.0.S").shape, (std::vector<int64_t>{2, 32, 64}));
    EXPECT_EQ(p.get("layers.0.mu").shape, (std::vector<int64_t>{2, 32}));
    EXPECT_EQ(p.get("layers.0.rho").shape, (std::vector<int64_t>{2, 3}));
  }
}

TEST(OracleConfig, Validate) {
  EXPECT_NO_THROW(Config::tiny().validate());
  EXPECT_THROW(Config::custom(7, 6, 1, 4, 2, 3, 5, 3, 2).validate(), std::invalid_argument);
  EXPECT_THROW(Config::custom(7, 6, 1, 3, 4, 3, 5, 3, 2).validate(), std::invalid_argument);
  EXPECT_THROW(Config::custom(7, 6, 1, 3, 2, 3, 5, 0, 2).validate(), std::invalid_argument);
}

TEST(OracleInit, FollowsSection4) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed));
  Config c = Config::tiny();
  ModelParams p = initModelParams(c, seed);
  const double logit = std::log(0.99 / 0.01);
  auto stddev = [](const Tensor &t) {
    double s = 0.0, s2 = 0.0;
    for (double x : t.data) s += x, s2 += x * x;
    const double n = double(t.numel());
    return std::sqrt(s2 / n - (s / n) * (s / n));
  };
  EXPECT_NEAR(stddev(p.embed), 0.02, 0.0005);
  for (double x : p.final_norm.data) EXPECT_EQ(x, 1.0);
  for (const LayerParams &l : p.layers) {
    for (const Tensor *t : {&l.w_in, &l.w_ffn})
      for (double x : t->data) EXPECT_EQ(x, 1.0);
    for (const Tensor *t : {&l.B_gamma, &l.b_g, &l.rho})
      for (double x : t->data) EXPECT_EQ(x, 0.0);
    for (const Tensor *t : {&l.lambda, &l.mu})
      for (double x : t->data) EXPECT_DOUBLE_EQ(x, logit);
    for (const Tensor *t : {&l.W_q, &l.W_k, &l.W_v, &l.W_z, &l.W_g, &l.W_1, &l.W_3})
      EXPECT_NEAR(stddev(*t), 0.02, 0.001);
    EXPECT_NEAR(stddev(l.A_gamma), 0.02, 0.002);
    EXPECT_NEAR(stddev(l.S), 0.02, 0.002);
    EXPECT_NEAR(stddev(l.W_o), 0.02 / std::sqrt(4.0), 0.0005);
    EXPECT_NEAR(stddev(l.W_2), 0.02 / std::sqrt(4.0), 0.0005);
  }
  // Reproducible, and the seed matters.
  ModelParams again = initModelParams(c, seed), other = initModelParams(c, seed + 1);
  EXPECT_EQ(again.layers[1].W_2.data, p.layers[1].W_2.data);
  EXPECT_EQ(again.embed.data, p.embed.data);
  EXPECT_NE(other.embed.data, p.embed.data);
}

TEST(OracleInit, EveryInitialDecayIsExactlyDecayInit) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed));
  std::mt19937_64 rng(seed);
  Config c = Config::custom(11, 8, 2, 2, 2, 4, 6, 3, 2);
  ModelParams p = initModelParams(c, seed);
  Tensor x = randomTensor({2, 7, c.D}, rng, -2, 2);
  LayerOut o = layerForward(c, p.layers[0], x);
  for (double g : o.cache.gamma.data) EXPECT_NEAR(g, 0.99, 1e-15);
  // Level 2 at init: β_{c,s} = 0.99^{n_{c,s}}.
  const Level2Out &l2 = o.cache.level2;
  for (int64_t i = 0; i < l2.n.numel(); ++i)
    EXPECT_NEAR(l2.logBeta[i], l2.n[i] * std::log(0.99), 1e-14);
}

//===----------------------------------------------------------------------===//
// Log-space linear scan
//===----------------------------------------------------------------------===//

struct ScanCase {
  std::vector<int64_t> logShape, bShape;
  bool init, reverse;
};

void checkScanGradients(const ScanCase &sc) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed));
  std::mt19937_64 rng(seed);
  const double lo = -3.0, hi = -0.05;
  // ℓ on both sides of the clamps, never within 1e-3 of a kink.
  Tensor la = randomTensor(sc.logShape, rng, -4.0, 0.5);
  for (double &x : la.data)
    while (std::fabs(x - lo) < 1e-3 || std::fabs(x - hi) < 1e-3)
      x = randomTensor({1}, rng, -4, 0.5)[0];
  Tensor b = randomTensor(sc.bShape, rng);
  std::vector<int64_t> st{sc.bShape[0]};
  st.insert(st.end(), sc.bShape.begin() + 2, sc.bShape.end());
  Tensor h0 = sc.init ? randomTensor(st, rng) : Tensor{};
  Tensor wh = randomTensor(sc.bShape, rng), wf = randomTensor(st, rng);
  auto loss = [&] {
    LinearScanOut r = linearScan(la, b, h0, lo, hi, sc.reverse);
    return dot(r.h, wh) + dot(r.final, wf);
  };
  LinearScanGrads g = linearScanBackward(la, b, h0, lo, hi, sc.reverse, wh, wf);
  EXPECT_EQ(g.dLogDecay.shape, la.shape);
  EXPECT_EQ(g.db.shape, b.shape);
  EXPECT_EQ(g.dh0.shape, st);
  GradChecker check(loss, rng);
  check.check("logDecay", la, g.dLogDecay);
  check.check("b", b, g.db);
  if (sc.init)
    check.check("h0", h0, g.dh0);
  for (int64_t i = 0; i < la.numel(); ++i)
    if (la[i] < lo || la[i] > hi) {
      EXPECT_EQ(g.dLogDecay[i], 0.0) << "clamped ℓ must get no gradient";
    }
}

TEST(OracleScan, GradientsWithInit) { checkScanGradients({{2, 9, 3}, {2, 9, 3}, true, false}); }
TEST(OracleScan, GradientsReverseNoInit) {
  checkScanGradients({{3, 7, 4}, {3, 7, 4}, false, true});
}
TEST(OracleScan, GradientsReverseWithInit) {
  checkScanGradients({{1, 5, 2}, {1, 5, 2}, true, true});
}
TEST(OracleScan, GradientsBroadcastOverInner) {
  // The level-2 form: ℓ (B, T, N_m, M), b (B, T, N_m, M, d_m).
  checkScanGradients({{2, 5, 2, 3}, {2, 5, 2, 3, 3}, true, false});
}
TEST(OracleScan, GradientsSingleStep) { checkScanGradients({{3, 1, 2}, {3, 1, 2}, true, true}); }

TEST(OracleScan, ConstantDecayClosedForm) {
  // γ constant, b = 1: h_t = Σ_{k=0..t} γ^k + γ^{t+1} h0.
  const int64_t T = 50;
  const double g = 0.9, h0v = 2.0;
  Tensor la({1, T, 1}, std::log(g)), b({1, T, 1}, 1.0), h0({1, 1}, h0v);
  LinearScanOut r = linearScan(la, b, h0, -50, 0);
  for (int64_t t = 0; t < T; ++t) {
    const double expect = (1 - std::pow(g, t + 1)) / (1 - g) + std::pow(g, t + 1) * h0v;
    EXPECT_NEAR(r.h[t], expect, 1e-12) << "t = " << t;
  }
  EXPECT_EQ(r.final[0], r.h[T - 1]);
  LinearScanOut rr = linearScan(la, b, h0, -50, 0, /*reverse=*/true);
  EXPECT_NEAR(rr.h[0], r.h[T - 1], 1e-12);
  EXPECT_EQ(rr.final[0], rr.h[0]);
  // Broadcast: each of S decays applies to all of its E channels.
  Tensor la2({1, 2, 2}), b2({1, 2, 2, 3}, 1.0);
  la2.at(0, 0, 0) = la2.at(0, 1, 0) = std::log(0.5);
  la2.at(0, 0, 1) = la2.at(0, 1, 1) = std::log(0.25);
  LinearScanOut r2 = linearScan(la2, b2, Tensor{}, -50, 0);
  for (int64_t e = 0; e < 3; ++e) {
    EXPECT_NEAR(r2.h.at(0, 1, 0, e), 1.5, 1e-15);
    EXPECT_NEAR(r2.h.at(0, 1, 1, e), 1.25, 1e-15);
  }
}

TEST(OracleScan, ClampBoundaries) {
  // ℓ = -80 → -50 (γ = e^-50), +3 → 0 (γ = 1): values, and no gradient.
  Tensor la({1, 4, 1}), b({1, 4, 1}), h0({1, 1}, 1.0);
  la[0] = -80.0, la[1] = 3.0, la[2] = -50.0, la[3] = 0.0;
  b[0] = 0.5, b[1] = 0.25, b[2] = 0.125, b[3] = 2.0;
  LinearScanOut r = linearScan(la, b, h0, -50, 0);
  const double h0v = std::exp(-50.0) + 0.5, h1 = h0v + 0.25, h2 = std::exp(-50.0) * h1 + 0.125,
               h3 = h2 + 2.0;
  EXPECT_NEAR(r.h[0], h0v, 1e-15);
  EXPECT_NEAR(r.h[1], h1, 1e-15);
  EXPECT_NEAR(r.h[2], h2, 1e-15);
  EXPECT_NEAR(r.h[3], h3, 1e-15);
  Tensor dh({1, 4, 1}, 1.0), dfin({1, 1}, 0.0);
  LinearScanGrads g = linearScanBackward(la, b, h0, -50, 0, false, dh, dfin);
  EXPECT_EQ(g.dLogDecay[0], 0.0);
  EXPECT_EQ(g.dLogDecay[1], 0.0);
  // Exactly on a bound the clamp is not active: dℓ_t = (dL/dh_t) γ_t h_{t-1}.
  EXPECT_NEAR(g.dLogDecay[2], (1.0 + 1.0) * std::exp(-50.0) * h1, 1e-30);
  EXPECT_NEAR(g.dLogDecay[3], 1.0 * 1.0 * h2, 1e-15);
}

//===----------------------------------------------------------------------===//
// Decay gate
//===----------------------------------------------------------------------===//

TEST(OracleDecayGate, Gradients) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed));
  std::mt19937_64 rng(seed);
  for (std::pair<double, double> bounds : {std::pair{-50.0, 0.0}, std::pair{-2.0, -0.1}}) {
    const double lo = bounds.first, hi = bounds.second;
    Tensor pre = randomTensor({3, 4, 5}, rng, -6, 6);
    for (double &x : pre.data) // keep FD probes away from the clamp kinks
      while (std::fabs(logSigmoid(x) - lo) < 1e-3 || std::fabs(logSigmoid(x) - hi) < 1e-3)
        x = randomTensor({1}, rng, -6, 6)[0];
    Tensor w = randomLike(pre, rng);
    auto loss = [&] { return dot(decayGate(pre, lo, hi), w); };
    Tensor g = decayGateBackward(pre, lo, hi, w);
    GradChecker(loss, rng).check("pre", pre, g);
    for (int64_t i = 0; i < pre.numel(); ++i)
      if (logSigmoid(pre[i]) < lo || logSigmoid(pre[i]) > hi) {
        EXPECT_EQ(g[i], 0.0);
      }
  }
}

TEST(OracleDecayGate, StableAndClamped) {
  Tensor pre({6});
  pre[0] = -800, pre[1] = -60, pre[2] = -40, pre[3] = std::log(0.99 / 0.01), pre[4] = 40,
  pre[5] = 800;
  Tensor l = decayGate(pre, -50, 0);
  EXPECT_EQ(l[0], -50.0);
  EXPECT_EQ(l[1], -50.0);
  EXPECT_NEAR(l[2], -40.0, 1e-15);
  EXPECT_NEAR(l[3], std::log(0.99), 1e-16);
  EXPECT_NEAR(l[4], -std::exp(-40.0), 1e-30);
  EXPECT_EQ(l[5], 0.0);
  Tensor g = decayGateBackward(pre, -50, 0, Tensor({6}, 1.0));
  EXPECT_EQ(g[0], 0.0);
  EXPECT_EQ(g[1], 0.0); // logσ(-60) ≈ -60 < -50: clamped
  EXPECT_NEAR(g[2], 1.0, 1e-15);
  EXPECT_NEAR(g[3], 0.01, 1e-15);
  for (double x : g.data) EXPECT_TRUE(std::isfinite(x));
  // Scalar helpers on both sides.
  EXPECT_NEAR(softplus(0.0), std::log(2.0), 1e-16);
  EXPECT_EQ(softplus(-800), 0.0);
  EXPECT_EQ(softplus(800), 800.0);
  EXPECT_NEAR(sigmoid(-800), 0.0, 1e-300);
  EXPECT_EQ(sigmoid(800), 1.0);
}

//===----------------------------------------------------------------------===//
// Level 0: the gated recurrence
//===----------------------------------------------------------------------===//

void checkRecurrenceGradients(Gate gate, int64_t B, int64_t T, int64_t D, int64_t H) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed) + (gate == Gate::Dense ? " dense" : " per_head"));
  std::mt19937_64 rng(seed);
  Tensor z = randomTensor({B, T, D}, rng), gamma = randomTensor({B, T, D}, rng, 0.3, 1.0);
  Tensor Wg = gate == Gate::Dense ? randomTensor({D, D}, rng)
                                  : randomTensor({H, D / H, D / H}, rng);
  Tensor bg = randomTensor({D}, rng), h0 = randomTensor({B, D}, rng);
  Tensor wh = randomTensor({B, T, D}, rng), wf = randomTensor({B, D}, rng);
  auto loss = [&] {
    RecurrenceOut r = gatedRecurrence(z, gamma, Wg, bg, h0);
    return dot(r.h, wh) + dot(r.final, wf);
  };
  RecurrenceGrads g = gatedRecurrenceBackward(z, gamma, Wg, bg, h0, wh, wf);
  GradChecker check(loss, rng);
  check.check("z", z, g.dz);
  check.check("gamma", gamma, g.dgamma);
  check.check("W_g", Wg, g.dWg);
  check.check("b_g", bg, g.dbg);
  check.check("h0", h0, g.dh0);
}

TEST(OracleRecurrence, GradientsDense) { checkRecurrenceGradients(Gate::Dense, 2, 6, 5, 1); }
TEST(OracleRecurrence, GradientsPerHead) { checkRecurrenceGradients(Gate::PerHead, 3, 5, 6, 3); }
TEST(OracleRecurrence, GradientsSingleStep) { checkRecurrenceGradients(Gate::Dense, 1, 1, 3, 1); }

TEST(OracleRecurrence, LinearCaseClosedForm) {
  // W_g = 0, b_g = 0: σ(0) = 1/2, so h_t = z_t / 2 + γ_t h_{t-1}.
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed));
  std::mt19937_64 rng(seed);
  const int64_t B = 2, T = 6, D = 3;
  Tensor z = randomTensor({B, T, D}, rng), gamma = randomTensor({B, T, D}, rng, 0, 1);
  Tensor h0 = randomTensor({B, D}, rng);
  RecurrenceOut r = gatedRecurrence(z, gamma, Tensor({D, D}), Tensor({D}), h0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < D; ++j) {
      double h = h0.at(b, j);
      for (int64_t t = 0; t < T; ++t) {
        h = z.at(b, t, j) / 2 + gamma.at(b, t, j) * h;
        EXPECT_NEAR(r.h.at(b, t, j), h, 1e-14);
      }
      EXPECT_EQ(r.final.at(b, j), r.h.at(b, T - 1, j));
    }
  // Absent h0 means zeros.
  RecurrenceOut r0 = gatedRecurrence(z, gamma, Tensor({D, D}), Tensor({D}), Tensor{});
  RecurrenceOut rz = gatedRecurrence(z, gamma, Tensor({D, D}), Tensor({D}), Tensor({B, D}));
  EXPECT_EQ(r0.h.data, rz.h.data);
}

TEST(OracleRecurrence, GateActsOnTheRight) {
  // Row-vector convention: the gate pre-activation is h_{t-1}·W_g, so with
  // h_{-1} = e_0 it is W_g's row 0.
  Tensor Wg({2, 2}), bg({2}), h0({1, 2});
  Wg.at(0, 0) = 0.3, Wg.at(0, 1) = -1.2, Wg.at(1, 0) = 2.0, Wg.at(1, 1) = 0.7;
  bg[0] = 0.1, bg[1] = -0.2;
  h0[0] = 1.0;
  Tensor z({1, 1, 2}, 1.0), gamma({1, 1, 2}, 0.5);
  RecurrenceOut r = gatedRecurrence(z, gamma, Wg, bg, h0);
  EXPECT_NEAR(r.h[0], sigmoid(0.3 + 0.1) + 0.5, 1e-15);
  EXPECT_NEAR(r.h[1], sigmoid(-1.2 - 0.2), 1e-15);
}

TEST(OracleRecurrence, PerHeadIsBlockDiagonalDense) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed));
  std::mt19937_64 rng(seed);
  const int64_t B = 2, T = 4, H = 3, dh = 2, D = H * dh;
  Tensor z = randomTensor({B, T, D}, rng), gamma = randomTensor({B, T, D}, rng, 0, 1);
  Tensor blocks = randomTensor({H, dh, dh}, rng), bg = randomTensor({D}, rng);
  Tensor h0 = randomTensor({B, D}, rng), dh_ = randomTensor({B, T, D}, rng);
  Tensor dense({D, D});
  for (int64_t k = 0; k < H; ++k)
    for (int64_t i = 0; i < dh; ++i)
      for (int64_t j = 0; j < dh; ++j) dense.at(k * dh + i, k * dh + j) = blocks.at(k, i, j);
  RecurrenceOut a = gatedRecurrence(z, gamma, blocks, bg, h0);
  RecurrenceOut b = gatedRecurrence(z, gamma, dense, bg, h0);
  for (int64_t i = 0; i < a.h.numel(); ++i) EXPECT_NEAR(a.h[i], b.h[i], 1e-14);
  RecurrenceGrads ga = gatedRecurrenceBackward(z, gamma, blocks, bg, h0, dh_, Tensor{});
  RecurrenceGrads gb = gatedRecurrenceBackward(z, gamma, dense, bg, h0, dh_, Tensor{});
  for (int64_t k = 0; k < H; ++k)
    for (int64_t i = 0; i < dh; ++i)
      for (int64_t j = 0; j < dh; ++j)
        EXPECT_NEAR(ga.dWg.at(k, i, j), gb.dWg.at(k * dh + i, k * dh + j), 1e-13);
  for (int64_t i = 0; i < ga.dh0.numel(); ++i) EXPECT_NEAR(ga.dh0[i], gb.dh0[i], 1e-13);
}

//===----------------------------------------------------------------------===//
// Generic primitives
//===----------------------------------------------------------------------===//

TEST(OraclePrimitives, MatmulGradients) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed));
  std::mt19937_64 rng(seed);
  Tensor A = randomTensor({2, 3, 5}, rng), W = randomTensor({5, 4}, rng);
  Tensor w = randomTensor({2, 3, 4}, rng);
  MatmulGrads g = matmulBackward(A, W, w);
  GradChecker check([&] { return dot(matmul(A, W), w); }, rng);
  check.check("A", A, g.dA);
  check.check("W", W, g.dW);
  // A hand case.
  Tensor a({1, 2}), m({2, 2});
  a[0] = 1, a[1] = 2, m[0] = 3, m[1] = 4, m[2] = 5, m[3] = 6;
  Tensor y = matmul(a, m);
  EXPECT_EQ(y[0], 13.0);
  EXPECT_EQ(y[1], 16.0);
  EXPECT_EQ(transpose(m).at(0, 1), 5.0);
}

TEST(OraclePrimitives, RmsNormGradients) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed));
  std::mt19937_64 rng(seed);
  Tensor x = randomTensor({3, 2, 7}, rng), wt = randomTensor({7}, rng), w = randomLike(x, rng);
  RmsNormGrads g = rmsNormBackward(x, wt, 1e-6, w);
  GradChecker check([&] { return dot(rmsNorm(x, wt, 1e-6), w); }, rng);
  check.check("x", x, g.dx);
  check.check("w", wt, g.dw);
  // Hand case: x = (3, 4), mean(x²) = 12.5.
  Tensor h({2});
  h[0] = 3, h[1] = 4;
  Tensor y = rmsNorm(h, Tensor({2}, 2.0), 0.0);
  EXPECT_NEAR(y[0], 2 * 3 / std::sqrt(12.5), 1e-15);
  EXPECT_NEAR(y[1], 2 * 4 / std::sqrt(12.5), 1e-15);
}

TEST(OraclePrimitives, GroupRmsNormGradients) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed));
  std::mt19937_64 rng(seed);
  Tensor x = randomTensor({2, 3, 9}, rng), w = randomLike(x, rng);
  Tensor g = groupRmsNormBackward(x, 3, 1e-6, w);
  GradChecker([&] { return dot(groupRmsNorm(x, 3, 1e-6), w); }, rng).check("x", x, g);
  // Each group is normalized on its own.
  Tensor y = groupRmsNorm(x, 3, 0.0);
  for (int64_t row = 0; row < 6; ++row)
    for (int64_t grp = 0; grp < 3; ++grp) {
      double ss = 0;
      for (int64_t i = 0; i < 3; ++i) ss += std::pow(y[row * 9 + grp * 3 + i], 2);
      EXPECT_NEAR(ss / 3, 1.0, 1e-14);
    }
}

TEST(OraclePrimitives, SwigluGradients) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed));
  std::mt19937_64 rng(seed);
  Tensor a = randomTensor({4, 5}, rng, -4, 4), b = randomTensor({4, 5}, rng),
         w = randomTensor({4, 5}, rng);
  SwigluGrads g = swigluBackward(a, b, w);
  GradChecker check([&] { return dot(swiglu(a, b), w); }, rng);
  check.check("a", a, g.da);
  check.check("b", b, g.db);
  EXPECT_NEAR(swiglu(Tensor({1}, 2.0), Tensor({1}, 3.0))[0], 3 * 2 / (1 + std::exp(-2.0)), 1e-15);
}

TEST(OraclePrimitives, SoftmaxGradients) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed));
  std::mt19937_64 rng(seed);
  Tensor x = randomTensor({3, 6}, rng, -3, 3), w = randomTensor({3, 6}, rng);
  Tensor g = softmaxBackward(softmax(x), w);
  GradChecker([&] { return dot(softmax(x), w); }, rng).check("x", x, g);
  Tensor big({3});
  big[0] = 1000, big[1] = 1000, big[2] = -1000;
  Tensor s = softmax(big);
  EXPECT_EQ(s[0], 0.5);
  EXPECT_EQ(s[2], 0.0);
}

TEST(OraclePrimitives, CrossEntropyGradients) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed));
  std::mt19937_64 rng(seed);
  Tensor logits = randomTensor({2, 4, 7}, rng, -3, 3);
  std::vector<int> targets{0, 6, -1, 3, 2, -1, 5, 1}; // -1: ignored
  Tensor g = crossEntropyBackward(logits, targets, 0.7);
  GradChecker([&] { return 0.7 * crossEntropy(logits, targets); }, rng).check("logits", logits, g);
  for (int64_t j = 0; j < 7; ++j) EXPECT_EQ(g.at(0, 2, j), 0.0);
  // Uniform logits: log V.
  EXPECT_NEAR(crossEntropy(Tensor({3, 5}, 0.25), {0, 4, 2}), std::log(5.0), 1e-15);
  EXPECT_EQ(crossEntropy(Tensor({1, 5}), {-1}), 0.0);
}

//===----------------------------------------------------------------------===//
// HDS level 1
//===----------------------------------------------------------------------===//

void checkLevel1Gradients(int64_t B, int64_t T, int64_t Nm, int64_t dm, int64_t C) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed) + " T " + std::to_string(T) + " C " + std::to_string(C));
  std::mt19937_64 rng(seed);
  const int64_t D = Nm * dm;
  Tensor q = randomTensor({B, T, D}, rng, -2, 2), k = randomTensor({B, T, D}, rng, -2, 2);
  Tensor v = randomTensor({B, T, D}, rng), w = randomTensor({B, T, D}, rng);
  Level1Grads g = hdsLevel1Backward(q, k, v, Nm, C, w);
  GradChecker check([&] { return dot(hdsLevel1(q, k, v, Nm, C).y1, w); }, rng);
  check.check("q", q, g.dq);
  check.check("k", k, g.dk);
  check.check("v", v, g.dv);
}

TEST(OracleLevel1, GradientsRagged) { checkLevel1Gradients(2, 8, 2, 3, 3); }
TEST(OracleLevel1, GradientsMultipleOfC) { checkLevel1Gradients(1, 9, 3, 2, 3); }
TEST(OracleLevel1, GradientsOneTokenChunks) { checkLevel1Gradients(3, 5, 1, 3, 1); }
TEST(OracleLevel1, GradientsShorterThanChunk) { checkLevel1Gradients(2, 2, 2, 2, 3); }

TEST(OracleLevel1, ChunkMeansAndCausalRead) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed));
  std::mt19937_64 rng(seed);
  const int64_t B = 1, T = 7, C = 3, D = 4, Nm = 2;
  Tensor q = randomTensor({B, T, D}, rng), k = randomTensor({B, T, D}, rng),
         v = randomTensor({B, T, D}, rng);
  Level1Out o = hdsLevel1(q, k, v, Nm, C);
  ASSERT_EQ(o.K1.shape, (std::vector<int64_t>{1, 3, 4}));
  for (int64_t j = 0; j < D; ++j) {
    EXPECT_NEAR(o.K1.at(0, 1, j), (k.at(0, 3, j) + k.at(0, 4, j) + k.at(0, 5, j)) / 3, 1e-15);
    EXPECT_EQ(o.K1.at(0, 2, j), k.at(0, 6, j)); // the partial chunk: its one token
    EXPECT_EQ(o.V1.at(0, 2, j), v.at(0, 6, j));
    for (int64_t t = 0; t < C; ++t) // chunk 0 sees nothing
      EXPECT_EQ(o.y1.at(0, t, j), 0.0);
    for (int64_t t = C; t < 2 * C; ++t) // one earlier chunk: weight 1
      EXPECT_NEAR(o.y1.at(0, t, j), o.V1.at(0, 0, j), 1e-15);
  }
  // Token 6 reads chunks 0 and 1 with softmax weights, per group.
  for (int64_t m = 0; m < Nm; ++m) {
    double s[2];
    for (int64_t c = 0; c < 2; ++c) {
      s[c] = 0;
      for (int64_t i = 0; i < 2; ++i) s[c] += q.at(0, 6, m * 2 + i) * o.K1.at(0, c, m * 2 + i);
      s[c] /= std::sqrt(2.0);
    }
    const double a0 = 1 / (1 + std::exp(s[1] - s[0]));
    for (int64_t i = 0; i < 2; ++i)
      EXPECT_NEAR(o.y1.at(0, 6, m * 2 + i),
                  a0 * o.V1.at(0, 0, m * 2 + i) + (1 - a0) * o.V1.at(0, 1, m * 2 + i), 1e-15);
  }
}

//===----------------------------------------------------------------------===//
// HDS level 2
//===----------------------------------------------------------------------===//

struct Level2Case {
  int64_t B, T, Nm, M, dm, C;
  double clampMin;
  // Slot 0 of group 0 gets a write mass n in (1e-7, 1e-6): max(n, 1e-6) is
  // active, and μ = -2e6 makes 1 − β of order 1 there, so that the gradient
  // of U through that branch is visible. Needs M = 2.
  bool tinyMass;
};

void checkLevel2Gradients(const Level2Case &lc) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed) + " T " + std::to_string(lc.T) + " C " + std::to_string(lc.C));
  std::mt19937_64 rng(seed);
  const int64_t D = lc.Nm * lc.dm;
  Tensor q = randomTensor({lc.B, lc.T, D}, rng, -2, 2);
  Tensor k = randomTensor({lc.B, lc.T, D}, rng, -2, 2);
  Tensor v = randomTensor({lc.B, lc.T, D}, rng);
  Tensor S = randomTensor({lc.Nm, lc.M, lc.dm}, rng);
  if (lc.tinyMass) {
    // Group 0: every token has the same key κ; S_0 = −λκ/|κ|², S_1 = 0, so
    // w_{t,0} = σ(−λ/√d_m) = 2e-7 and n ≤ C · 2e-7.
    ASSERT_EQ(lc.M, 2);
    ASSERT_LE(lc.C, 4);
    Tensor kappa = randomTensor({lc.dm}, rng, 0.5, 1.0);
    const double lambda = std::sqrt(double(lc.dm)) * std::log(1 / 2e-7 - 1);
    for (int64_t i = 0; i < lc.dm; ++i) {
      S.at(0, 0, i) = -lambda * kappa[i] / dot(kappa, kappa);
      S.at(0, 1, i) = 0.0;
      for (int64_t b = 0; b < lc.B; ++b)
        for (int64_t t = 0; t < lc.T; ++t) k.at(b, t, i) = kappa[i];
    }
  }
  auto drawMu = [&] {
    Tensor mu = randomTensor({lc.Nm, lc.M}, rng, -4, 4);
    if (lc.tinyMass)
      mu.at(0, 0) = -2e6;
    return mu;
  };
  Tensor mu = drawMu();
  Tensor m0 = randomTensor({lc.B, lc.Nm, lc.M, lc.dm}, rng);
  // Redraw μ until no n·logσ(μ) lies within 1e-3 of the clamp (a kink).
  for (int tries = 0;; ++tries) {
    ASSERT_LT(tries, 100);
    Level2Out f = hdsLevel2(q, k, v, S, mu, m0, lc.C, lc.clampMin);
    bool nearKink = false;
    for (int64_t i = 0; i < f.n.numel(); ++i) {
      const int64_t ms = i % (lc.Nm * lc.M);
      nearKink |= std::fabs(f.n[i] * logSigmoid(mu[ms]) - lc.clampMin) < 1e-3;
      nearKink |= std::fabs(f.n[i] - 1e-6) < 1e-9;
    }
    if (lc.tinyMass) {
      for (int64_t b = 0; b < lc.B; ++b)
        for (int64_t c = 0; c < f.n.dim(1); ++c) {
          ASSERT_GT(f.n.at(b, c, 0, 0), 1e-7);
          ASSERT_LT(f.n.at(b, c, 0, 0), 0.9e-6);
          ASSERT_LT(f.logBeta.at(b, c, 0, 0), -0.1); // 1 − β not small
        }
    }
    if (!nearKink)
      break;
    mu = drawMu();
  }
  Tensor wy = randomTensor({lc.B, lc.T, D}, rng), wm = randomLike(m0, rng);
  auto loss = [&] {
    Level2Out o = hdsLevel2(q, k, v, S, mu, m0, lc.C, lc.clampMin);
    return dot(o.y2, wy) + dot(o.memFinal, wm);
  };
  Level2Grads g = hdsLevel2Backward(q, k, v, S, mu, m0, lc.C, lc.clampMin, wy, wm);
  GradChecker check(loss, rng);
  check.check("q", q, g.dq);
  check.check("k", k, g.dk);
  check.check("v", v, g.dv);
  check.check("S", S, g.dS);
  check.check("mu", mu, g.dmu);
  check.check("m0", m0, g.dm0);
}

TEST(OracleLevel2, GradientsRagged) { checkLevel2Gradients({2, 7, 2, 3, 3, 3, -50, false}); }
TEST(OracleLevel2, GradientsShorterThanChunk) {
  checkLevel2Gradients({3, 2, 1, 4, 2, 3, -50, false});
}
TEST(OracleLevel2, GradientsMultipleOfC) { checkLevel2Gradients({1, 8, 2, 2, 3, 4, -50, false}); }
TEST(OracleLevel2, GradientsWithActiveDecayClamp) {
  // clamp_min = -3: chunks of 3 tokens with μ ≈ -4 have n·logσ(μ) < -3.
  checkLevel2Gradients({2, 9, 2, 3, 2, 3, -3, false});
}
TEST(OracleLevel2, GradientsWithTinyWriteMass) {
  // max(n, 1e-6) active for slot 0 of group 0, in full and partial chunks.
  checkLevel2Gradients({2, 7, 2, 2, 3, 3, -50, true});
}

TEST(OracleLevel2, OneSlotClosedForm) {
  // M = 1: w = a = 1, n = chunk length, U = chunk mean of v, β = σ(μ)^n,
  // y2_t = Mem_{c(t)-1}.
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed));
  std::mt19937_64 rng(seed);
  const int64_t B = 2, T = 8, C = 3, Nm = 2, dm = 2, D = 4;
  Tensor q = randomTensor({B, T, D}, rng), k = randomTensor({B, T, D}, rng);
  Tensor v = randomTensor({B, T, D}, rng), S = randomTensor({Nm, 1, dm}, rng);
  Tensor mu = randomTensor({Nm, 1}, rng, -1, 3), m0 = randomTensor({B, Nm, 1, dm}, rng);
  Level2Out o = hdsLevel2(q, k, v, S, mu, m0, C, -50);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t m = 0; m < Nm; ++m)
      for (int64_t i = 0; i < dm; ++i) {
        double mem = m0.at(b, m, 0, i);
        for (int64_t c = 0; c * C < T; ++c) {
          const int64_t t0 = c * C, t1 = std::min(T, t0 + C);
          for (int64_t t = t0; t < t1; ++t)
            EXPECT_NEAR(o.y2.at(b, t, m * dm + i), mem, 1e-14) << "read before chunk " << c;
          double mean = 0;
          for (int64_t t = t0; t < t1; ++t) mean += v.at(b, t, m * dm + i) / double(t1 - t0);
          const double beta = std::pow(sigmoid(mu.at(m, 0)), double(t1 - t0));
          mem = beta * mem + (1 - beta) * mean;
          EXPECT_NEAR(o.mems.at(b, c, m, 0, i), mem, 1e-14);
          EXPECT_NEAR(o.n.at(b, c, m, 0), double(t1 - t0), 1e-14);
        }
        EXPECT_NEAR(o.memFinal.at(b, m, 0, i), mem, 1e-14);
      }
}

TEST(OracleLevel2, MassFloorAndDecayClamp) {
  // Slot 1's key points away from k: its write mass is below 1e-6 and U is
  // divided by 1e-6, not by n. μ = -60 with clamp -50: logβ = -50.
  const int64_t dm = 1;
  Tensor q({1, 2, 1}, 1.0), k({1, 2, 1}, 1.0), v({1, 2, 1});
  v[0] = 0.5, v[1] = -1.5;
  Tensor S({1, 2, dm}), mu({1, 2});
  S[0] = 20, S[1] = -20, mu[0] = 2.0, mu[1] = -60;
  Level2Out o = hdsLevel2(q, k, v, S, mu, Tensor{}, 2, -50);
  const double w1 = 1 / (1 + std::exp(40.0)); // softmax(20, -20)[1]
  EXPECT_NEAR(o.n.at(0, 0, 0, 1), 2 * w1, 1e-30);
  ASSERT_LT(o.n.at(0, 0, 0, 1), 1e-6);
  EXPECT_NEAR(o.U.at(0, 0, 0, 1, 0), w1 * (0.5 - 1.5) / 1e-6, 1e-22);
  EXPECT_NEAR(o.U.at(0, 0, 0, 0, 0), -0.5, 1e-15);
  EXPECT_NEAR(o.logBeta.at(0, 0, 0, 0), (1 - w1) * 2 * logSigmoid(2.0), 1e-15);
  EXPECT_NEAR(o.logBeta.at(0, 0, 0, 1), 2 * w1 * logSigmoid(-60.0), 1e-25);
  Level2Out clampHit = hdsLevel2(q, k, v, S, Tensor({1, 2}, -60.0), Tensor{}, 2, -50);
  EXPECT_EQ(clampHit.logBeta.at(0, 0, 0, 0), -50.0); // n ≈ 2: 2·logσ(-60) ≈ -120
  Level2Grads g = hdsLevel2Backward(q, k, v, S, Tensor({1, 2}, -60.0), Tensor{}, 2, -50, Tensor{},
                                    Tensor({1, 1, 2, 1}, 1.0));
  EXPECT_EQ(g.dmu.at(0, 0), 0.0); // clamped: no gradient to μ
}

//===----------------------------------------------------------------------===//
// The combination
//===----------------------------------------------------------------------===//

TEST(OracleCombine, Gradients) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed));
  std::mt19937_64 rng(seed);
  const int64_t B = 2, T = 3, Nm = 3, dm = 3, D = Nm * dm;
  Tensor h = randomTensor({B, T, D}, rng), y1 = randomTensor({B, T, D}, rng);
  Tensor y2 = randomTensor({B, T, D}, rng), rho = randomTensor({Nm, 3}, rng, -2, 2);
  Tensor w = randomTensor({B, T, D}, rng);
  CombineGrads g = combineBackward(h, y1, y2, rho, 1e-6, w);
  GradChecker check([&] { return dot(combine(h, y1, y2, rho, 1e-6), w); }, rng);
  check.check("h", h, g.dh);
  check.check("y1", y1, g.dy1);
  check.check("y2", y2, g.dy2);
  check.check("rho", rho, g.drho);
  // ρ = 0: equal weights 1/3.
  Tensor o = combine(h, y1, y2, Tensor({Nm, 3}), 1e-6);
  Tensor hn = groupRmsNorm(h, dm, 1e-6);
  for (int64_t i = 0; i < o.numel(); ++i) EXPECT_NEAR(o[i], (hn[i] + y1[i] + y2[i]) / 3, 1e-15);
}

//===----------------------------------------------------------------------===//
// One layer
//===----------------------------------------------------------------------===//

struct LayerCase {
  Config cfg;
  int64_t B, T;
};

Config fdConfig(int64_t D, int64_t H, int64_t Nm, int64_t M, int64_t C, Gate gate) {
  return Config::custom(/*V=*/7, D, /*L=*/2, H, Nm, M, /*F=*/5, C, /*r=*/2, gate);
}

std::string describe(const LayerCase &lc) {
  return (lc.cfg.gate == Gate::Dense ? "dense" : "per_head") + std::string(" D ") +
         std::to_string(lc.cfg.D) + " N_m " + std::to_string(lc.cfg.Nm) + " C " +
         std::to_string(lc.cfg.C) + " B " + std::to_string(lc.B) + " T " + std::to_string(lc.T);
}

void checkLayerGradients(const LayerCase &lc) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed) + " " + describe(lc));
  std::mt19937_64 rng(seed);
  const Config &c = lc.cfg;
  LayerParams p = initLayerParams(c, rng);
  randomize(p, rng(), 0.5);
  Tensor x = randomTensor({lc.B, lc.T, c.D}, rng, -2, 2), h0 = randomTensor({lc.B, c.D}, rng);
  Tensor mem0 = randomTensor({lc.B, c.Nm, c.M, c.dm()}, rng);
  Tensor wy = randomLike(x, rng), wh = randomLike(h0, rng), wm = randomLike(mem0, rng);
  auto loss = [&] {
    LayerOut o = layerForward(c, p, x, h0, mem0);
    return dot(o.y, wy) + dot(o.hFinal, wh) + dot(o.memFinal, wm);
  };
  LayerOut fwd = layerForward(c, p, x, h0, mem0);
  LayerGrads g = layerBackward(c, p, fwd, wy, wh, wm);
  GradChecker check(loss, rng);
  auto params = p.named();
  auto grads = g.params.named();
  ASSERT_EQ(params.size(), grads.size());
  for (size_t i = 0; i < params.size(); ++i) {
    ASSERT_EQ(params[i].first, grads[i].first);
    EXPECT_EQ(params[i].second->shape, grads[i].second->shape) << params[i].first;
    check.check(params[i].first, *params[i].second, *grads[i].second);
  }
  check.check("x", x, g.dx);
  check.check("h0", h0, g.dh0);
  check.check("mem0", mem0, g.dmem0);
  EXPECT_EQ(check.checked(), 21);
}

TEST(OracleLayer, GradientsDenseRagged) {
  checkLayerGradients({fdConfig(6, 3, 2, 3, 3, Gate::Dense), 2, 7});
}
TEST(OracleLayer, GradientsPerHeadShorterThanChunk) {
  checkLayerGradients({fdConfig(6, 3, 2, 3, 3, Gate::PerHead), 3, 2});
}
TEST(OracleLayer, GradientsDenseOddDims) {
  checkLayerGradients({fdConfig(9, 3, 3, 2, 4, Gate::Dense), 1, 9});
}
TEST(OracleLayer, GradientsPerHeadMultipleOfC) {
  checkLayerGradients({fdConfig(9, 3, 3, 2, 4, Gate::PerHead), 3, 8});
}

/// Copies tokens [t0, t1) of x (B, T, D).
Tensor sliceT(const Tensor &x, int64_t t0, int64_t t1) {
  const int64_t B = x.dim(0), D = x.dim(2);
  Tensor s({B, t1 - t0, D});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t j = 0; j < D; ++j) s.at(b, t - t0, j) = x.at(b, t, j);
  return s;
}

void checkSegmentCarry(Gate gate, int64_t T, int64_t split) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed) + " T " + std::to_string(T) + " split " + std::to_string(split));
  std::mt19937_64 rng(seed);
  const Config c = fdConfig(6, 3, 2, 3, 3, gate);
  ASSERT_EQ(split % c.C, 0);
  LayerParams p = initLayerParams(c, rng);
  randomize(p, rng(), 0.5);
  const int64_t B = 2;
  Tensor x = randomTensor({B, T, c.D}, rng, -2, 2), h0 = randomTensor({B, c.D}, rng);
  Tensor mem0 = randomTensor({B, c.Nm, c.M, c.dm()}, rng);
  auto near = [](double a, double b) { return std::fabs(a - b) <= 1e-12 * (1 + std::fabs(b)); };

  for (bool level1Off : {false, true}) {
    SCOPED_TRACE(level1Off ? "ω_1 = 0" : "learned ω");
    if (level1Off) // ρ_1 = -1e4: ω_1 is exactly 0, so level 1 drops out
      for (int64_t m = 0; m < c.Nm; ++m) p.rho.at(m, 1) = -1e4;
    LayerOut full = layerForward(c, p, x, h0, mem0);
    LayerOut first = layerForward(c, p, sliceT(x, 0, split), h0, mem0);
    LayerOut second = layerForward(c, p, sliceT(x, split, T), first.hFinal, first.memFinal);
    for (int64_t i = 0; i < full.hFinal.numel(); ++i)
      EXPECT_PRED2(near, second.hFinal[i], full.hFinal[i]) << "h_final[" << i << "]";
    for (int64_t i = 0; i < full.memFinal.numel(); ++i)
      EXPECT_PRED2(near, second.memFinal[i], full.memFinal[i]) << "Mem_final[" << i << "]";
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < split; ++t)
        for (int64_t j = 0; j < c.D; ++j)
          EXPECT_PRED2(near, first.y.at(b, t, j), full.y.at(b, t, j)) << "y at t " << t;
    // The second segment differs from the unsplit run only through level 1.
    bool differs = false;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = split; t < T; ++t)
        for (int64_t j = 0; j < c.D; ++j) {
          const double a = second.y.at(b, t - split, j), e = full.y.at(b, t, j);
          if (level1Off) {
            EXPECT_PRED2(near, a, e) << "y at t " << t;
          }
          differs |= !near(a, e);
        }
    if (!level1Off && T - split > c.C) {
      EXPECT_TRUE(differs) << "level 1 should restart with the segment";
    }
  }
}

TEST(OracleLayer, SegmentCarryDense) { checkSegmentCarry(Gate::Dense, 11, 6); }
TEST(OracleLayer, SegmentCarryPerHead) { checkSegmentCarry(Gate::PerHead, 9, 3); }

TEST(OracleLayer, Causality) {
  for (Gate gate : {Gate::Dense, Gate::PerHead}) {
    const uint64_t seed = freshSeed();
    SCOPED_TRACE(seedTrace(seed));
    std::mt19937_64 rng(seed);
    const Config c = fdConfig(6, 3, 2, 3, 3, gate);
    LayerParams p = initLayerParams(c, rng);
    randomize(p, rng(), 0.5);
    const int64_t B = 1, T = 10;
    Tensor x = randomTensor({B, T, c.D}, rng, -2, 2);
    LayerOut a = layerForward(c, p, x);
    for (int64_t t = 0; t < T; ++t) {
      Tensor xp = x;
      for (int64_t j = 0; j < c.D; ++j) xp.at(0, t, j) += 0.5;
      LayerOut b = layerForward(c, p, xp);
      for (int64_t s = 0; s < t; ++s)
        for (int64_t j = 0; j < c.D; ++j)
          ASSERT_EQ(a.y.at(0, s, j), b.y.at(0, s, j)) << "token " << t << " changed output " << s;
      bool changed = false;
      for (int64_t j = 0; j < c.D; ++j) changed |= a.y.at(0, t, j) != b.y.at(0, t, j);
      EXPECT_TRUE(changed) << "token " << t << " did not change its own output";
    }
  }
}

TEST(OracleLayer, AbsentStatesAreZeros) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed));
  std::mt19937_64 rng(seed);
  const Config c = fdConfig(6, 3, 2, 3, 3, Gate::Dense);
  LayerParams p = initLayerParams(c, rng);
  randomize(p, rng(), 0.5);
  Tensor x = randomTensor({2, 5, c.D}, rng);
  LayerOut a = layerForward(c, p, x);
  LayerOut b = layerForward(c, p, x, Tensor({2, c.D}), Tensor({2, c.Nm, c.M, c.dm()}));
  EXPECT_EQ(a.y.data, b.y.data);
  EXPECT_THROW(layerForward(c, p, x, Tensor({3, c.D})), std::invalid_argument);
  EXPECT_THROW(layerForward(c, p, Tensor({2, 5, c.D + 1})), std::invalid_argument);
}

//===----------------------------------------------------------------------===//
// The model
//===----------------------------------------------------------------------===//

std::vector<int> randomTokens(int64_t n, int64_t V, std::mt19937_64 &rng) {
  std::uniform_int_distribution<int> u(0, int(V) - 1);
  std::vector<int> t(static_cast<size_t>(n));
  for (int &x : t) x = u(rng);
  return t;
}

void checkModelGradients(Gate gate, int64_t B, int64_t T) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed) + (gate == Gate::Dense ? " dense" : " per_head"));
  std::mt19937_64 rng(seed);
  const Config c = fdConfig(6, 3, 2, 3, 3, gate);
  ModelParams p = initModelParams(c, rng());
  randomize(p, rng(), 0.5);
  const std::vector<int> tokens = randomTokens(B * T, c.V, rng);
  ModelOut fwd = modelForward(c, p, tokens, B, T);
  ModelParams g = modelBackward(c, p, fwd);
  GradChecker check([&] { return modelLoss(c, p, tokens, B, T); }, rng);
  auto params = p.named();
  auto grads = g.named();
  ASSERT_EQ(params.size(), grads.size());
  for (size_t i = 0; i < params.size(); ++i) {
    ASSERT_EQ(params[i].first, grads[i].first);
    EXPECT_EQ(params[i].second->shape, grads[i].second->shape) << params[i].first;
    check.check(params[i].first, *params[i].second, *grads[i].second);
  }
  EXPECT_EQ(check.checked(), 2 + 18 * c.L);
}

TEST(OracleModel, GradientsDense) { checkModelGradients(Gate::Dense, 2, 7); }
TEST(OracleModel, GradientsPerHead) { checkModelGradients(Gate::PerHead, 3, 4); }

TEST(OracleModel, LossAndCausality) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed));
  std::mt19937_64 rng(seed);
  const Config c = fdConfig(6, 3, 2, 3, 3, Gate::Dense);
  ModelParams p = initModelParams(c, rng());
  randomize(p, rng(), 0.5);
  const int64_t B = 2, T = 7;
  std::vector<int> tokens = randomTokens(B * T, c.V, rng);
  ModelOut a = modelForward(c, p, tokens, B, T);
  // The loss is the mean of -log softmax(logits_t)[token_{t+1}] over t < T-1.
  double expect = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t + 1 < T; ++t) {
      double z = 0;
      for (int64_t v = 0; v < c.V; ++v) z += std::exp(a.logits.at(b, t, v));
      expect += std::log(z) - a.logits.at(b, t, int64_t(tokens[size_t(b * T + t + 1)]));
    }
  EXPECT_NEAR(a.loss, expect / double(B * (T - 1)), 1e-13);
  // Changing token t changes no logits before t.
  for (int64_t t = 1; t < T; ++t) {
    std::vector<int> other = tokens;
    other[size_t(t)] = (other[size_t(t)] + 1) % int(c.V);
    ModelOut b = modelForward(c, p, other, B, T);
    for (int64_t s = 0; s < t; ++s)
      for (int64_t v = 0; v < c.V; ++v)
        ASSERT_EQ(a.logits.at(0, s, v), b.logits.at(0, s, v)) << "token " << t << " position " << s;
  }
  // One token: nothing to predict.
  EXPECT_EQ(modelLoss(c, p, {3, 4}, 2, 1), 0.0);
  EXPECT_THROW(modelLoss(c, p, {1, 2, 7}, 1, 3), std::out_of_range);
  EXPECT_THROW(modelLoss(c, p, {1, 2}, 1, 3), std::invalid_argument);
}

TEST(OracleModel, TinyConfigInitialLossIsNearLogV) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE(seedTrace(seed));
  std::mt19937_64 rng(seed);
  const Config c = Config::tiny();
  ModelParams p = initModelParams(c, seed);
  const int64_t B = 1, T = 40; // two full chunks of 16 and a partial one
  const std::vector<int> tokens = randomTokens(B * T, c.V, rng);
  ModelOut fwd = modelForward(c, p, tokens, B, T);
  // Logits are small at init (std ≈ 0.02·√D ≈ 0.23), except each position's
  // own token (≈ 0.02·D = 2.56): the loss is ln V + ≈0.07, ± ≈0.04.
  EXPECT_NEAR(fwd.loss, std::log(256.0) + 0.07, 0.25);
  ModelParams g = modelBackward(c, p, fwd);
  for (auto &[name, t] : g.named())
    for (double x : t->data) ASSERT_TRUE(std::isfinite(x)) << name;
}

} // namespace
