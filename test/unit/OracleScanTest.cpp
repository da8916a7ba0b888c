//===- OracleScanTest.cpp - the scan reference checks itself -------------===//
//
// Finite differences on the float64 scan reference (lib/Reference/Scan.h):
// every gradient it returns, with and without an initial state, forward and
// reverse, plain and slot-broadcast, with ℓ on both sides of the clamps.
//
//===----------------------------------------------------------------------===//

#include "Reference/Scan.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace mmrec::ref;

namespace {

struct Problem {
  int64_t B, T, S, E;
  bool init, reverse;
};

/// L = Σ w_h·h + Σ w_f·final, so dL/dh = w_h and dL/dfinal = w_f.
double loss(const std::vector<double> &la, const std::vector<double> &b,
            const std::vector<double> &h0, const Problem &p, const std::vector<double> &wh,
            const std::vector<double> &wf) {
  ScanResult r = scanForward(la, b, h0, p.B, p.T, p.S, p.E, -3.0, -0.05, p.reverse);
  double L = 0;
  for (size_t i = 0; i < r.h.size(); ++i) L += wh[i] * r.h[i];
  for (size_t i = 0; i < r.final.size(); ++i) L += wf[i] * r.final[i];
  return L;
}

void checkGradients(const Problem &p, uint64_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> U(-1, 1), Lw(-4.0, 0.5);
  int64_t N = p.S * p.E;
  std::vector<double> la(p.B * p.T * p.S), b(p.B * p.T * N), h0(p.init ? p.B * N : 0);
  std::vector<double> wh(p.B * p.T * N), wf(p.B * N);
  for (auto &x : la) {
    x = Lw(rng);
    // Keep FD probes away from the clamp kinks at -3 and -0.05.
    while (std::fabs(x + 3.0) < 1e-3 || std::fabs(x + 0.05) < 1e-3) x = Lw(rng);
  }
  for (auto *v : {&b, &h0, &wh, &wf})
    for (auto &x : *v) x = U(rng);
  ScanGrads g = scanBackward(la, b, h0, p.B, p.T, p.S, p.E, -3.0, -0.05, p.reverse, wh, wf);
  const double eps = 1e-6;
  auto fd = [&](std::vector<double> &v, size_t i) {
    double keep = v[i];
    v[i] = keep + eps;
    double up = loss(la, b, h0, p, wh, wf);
    v[i] = keep - eps;
    double dn = loss(la, b, h0, p, wh, wf);
    v[i] = keep;
    return (up - dn) / (2 * eps);
  };
  for (size_t i = 0; i < la.size(); ++i)
    EXPECT_NEAR(g.dlog[i], fd(la, i), 1e-6 * (1 + std::fabs(g.dlog[i]))) << "dlog[" << i << "]";
  for (size_t i = 0; i < b.size(); ++i)
    EXPECT_NEAR(g.db[i], fd(b, i), 1e-6 * (1 + std::fabs(g.db[i]))) << "db[" << i << "]";
  for (size_t i = 0; i < h0.size(); ++i)
    EXPECT_NEAR(g.dh0[i], fd(h0, i), 1e-6 * (1 + std::fabs(g.dh0[i]))) << "dh0[" << i << "]";
  // Clamped decays get no gradient.
  for (size_t i = 0; i < la.size(); ++i) {
    if (la[i] < -3.0 || la[i] > -0.05) {
      EXPECT_EQ(g.dlog[i], 0.0);
    }
  }
}

uint64_t seed() { return std::random_device{}(); }

} // namespace

TEST(ScanReference, GradientsForward) { checkGradients({2, 9, 3, 1, true, false}, seed()); }
TEST(ScanReference, GradientsReverseNoInit) { checkGradients({1, 7, 4, 1, false, true}, seed()); }
TEST(ScanReference, GradientsSlotBroadcast) { checkGradients({2, 5, 2, 3, true, false}, seed()); }
TEST(ScanReference, GradientsSingleStep) { checkGradients({3, 1, 2, 1, true, true}, seed()); }

TEST(ScanReference, ConstantDecayClosedForm) {
  // γ constant, b = 1: h_t = Σ_{k=0..t} γ^k + γ^{t+1} h0.
  const int64_t T = 50;
  double l = std::log(0.9), h0v = 2.0;
  std::vector<double> la(T, l), b(T, 1.0), h0{h0v};
  ScanResult r = scanForward(la, b, h0, 1, T, 1, 1, -50, 0, false);
  for (int64_t t = 0; t < T; ++t) {
    double expect = (1 - std::pow(0.9, t + 1)) / (1 - 0.9) + std::pow(0.9, t + 1) * h0v;
    EXPECT_NEAR(r.h[t], expect, 1e-12);
  }
  EXPECT_EQ(r.final[0], r.h[T - 1]);
  // Reverse order: the same sums counted from the end.
  ScanResult rr = scanForward(la, b, h0, 1, T, 1, 1, -50, 0, true);
  EXPECT_NEAR(rr.h[0], r.h[T - 1], 1e-12);
  EXPECT_EQ(rr.final[0], rr.h[0]);
}

TEST(ScanReference, ClampBounds) {
  // ℓ = -80 is clamped to -50 (γ = e^-50), ℓ = +3 to 0 (γ = 1).
  std::vector<double> la{-80.0, 3.0}, b{0.5, 0.25}, h0{1.0};
  ScanResult r = scanForward(la, b, h0, 1, 2, 1, 1, -50, 0, false);
  EXPECT_NEAR(r.h[0], std::exp(-50.0) + 0.5, 1e-15);
  EXPECT_NEAR(r.h[1], r.h[0] + 0.25, 1e-15);
}

TEST(ScanReference, NoStepsPassTheStateThrough) {
  // T = 0: the final state is h0 and dL/dh0 = dL/dfinal.
  std::vector<double> h0{0.5, -2.0}, dfinal{3.0, 0.25};
  ScanResult r = scanForward({}, {}, h0, 1, 0, 2, 1, -50, 0, false);
  ASSERT_EQ(r.final.size(), 2u);
  EXPECT_EQ(r.final, h0);
  ScanGrads g = scanBackward({}, {}, h0, 1, 0, 2, 1, -50, 0, false, {}, dfinal);
  EXPECT_EQ(g.dh0, dfinal);
  EXPECT_TRUE(g.db.empty());
}
