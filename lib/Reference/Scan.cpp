//===- Scan.cpp - float64 reference of the log-space linear scan --------===//

#include "Reference/Scan.h"

#include <algorithm>
#include <cmath>

namespace mmrec::ref {

namespace {
double clampLog(double l, double lo, double hi) { return std::min(std::max(l, lo), hi); }
} // namespace

ScanResult scanForward(const std::vector<double> &la, const std::vector<double> &b,
                       const std::vector<double> &h0, int64_t B, int64_t T, int64_t S,
                       int64_t E, double lo, double hi, bool reverse) {
  const int64_t N = S * E;
  ScanResult r;
  r.h.assign(size_t(B * T * N), 0.0);
  r.final.assign(size_t(B * N), 0.0);
  for (int64_t bi = 0; bi < B; ++bi)
    for (int64_t n = 0; n < N; ++n) {
      double h = h0.empty() ? 0.0 : h0[bi * N + n];
      for (int64_t s = 0; s < T; ++s) {
        int64_t t = reverse ? T - 1 - s : s;
        double g = std::exp(clampLog(la[(bi * T + t) * S + n / E], lo, hi));
        h = g * h + b[(bi * T + t) * N + n];
        r.h[(bi * T + t) * N + n] = h;
      }
      r.final[bi * N + n] = h;
    }
  return r;
}

ScanGrads scanBackward(const std::vector<double> &la, const std::vector<double> &b,
                       const std::vector<double> &h0, int64_t B, int64_t T, int64_t S,
                       int64_t E, double lo, double hi, bool reverse,
                       const std::vector<double> &dh, const std::vector<double> &dfinal) {
  const int64_t N = S * E;
  ScanResult fwd = scanForward(la, b, h0, B, T, S, E, lo, hi, reverse);
  ScanGrads g;
  g.dlog.assign(size_t(B * T * S), 0.0);
  g.db.assign(size_t(B * T * N), 0.0);
  g.dh0.assign(size_t(B * N), 0.0);
  auto timeOf = [&](int64_t s) { return reverse ? T - 1 - s : s; };
  if (T == 0) { // no step: the final state is h0 itself
    if (!dfinal.empty())
      g.dh0 = dfinal;
    return g;
  }
  for (int64_t bi = 0; bi < B; ++bi)
    for (int64_t n = 0; n < N; ++n) {
      // g_s = dL/dh at forward step s, accumulated from the last step back.
      double gNext = 0.0, gammaNext = 0.0;
      for (int64_t s = T - 1; s >= 0; --s) {
        int64_t t = timeOf(s);
        double gs = dh[(bi * T + t) * N + n] +
                    (s == T - 1 ? dfinal[bi * N + n] : gammaNext * gNext);
        double raw = la[(bi * T + t) * S + n / E];
        double gamma = std::exp(clampLog(raw, lo, hi));
        double hPrev = s == 0 ? (h0.empty() ? 0.0 : h0[bi * N + n])
                              : fwd.h[(bi * T + timeOf(s - 1)) * N + n];
        g.db[(bi * T + t) * N + n] = gs;
        if (raw >= lo && raw <= hi)
          g.dlog[(bi * T + t) * S + n / E] += gs * gamma * hPrev;
        if (s == 0)
          g.dh0[bi * N + n] = gamma * gs;
        gNext = gs;
        gammaNext = gamma;
      }
    }
  return g;
}

} // namespace mmrec::ref
