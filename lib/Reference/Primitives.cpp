//===- Primitives.cpp - the oracle's primitives, forward and backward ---===//
//
// Each primitive of Oracle.h: a forward in plain loops and its exact
// vector-Jacobian product. Backward functions recompute the forward values
// they need. Shapes are checked and mismatches throw std::invalid_argument.
//
//===----------------------------------------------------------------------===//

#include "Reference/Oracle.h"
#include "Reference/Scan.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace mmrec::ref {

namespace {

void require(bool ok, const char *what) {
  if (!ok)
    throw std::invalid_argument(std::string("mmrec::ref: ") + what);
}

/// `t` if present, else zeros of `shape` (the "empty means zero" rule).
Tensor orZeros(const Tensor &t, const std::vector<int64_t> &shape) {
  if (t.empty())
    return Tensor(shape);
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  require(t.numel() == n, "tensor has the wrong number of elements");
  Tensor r = t;
  r.shape = shape;
  return r;
}

bool sameShape(const Tensor &a, const Tensor &b) { return a.shape == b.shape; }

/// In-place softmax of a small vector (max subtracted).
void softmaxInPlace(std::vector<double> &x) {
  double mx = -INFINITY;
  for (double v : x) mx = std::max(mx, v);
  double sum = 0.0;
  for (double &v : x) {
    v = std::exp(v - mx);
    sum += v;
  }
  for (double &v : x) v /= sum;
}

/// Softmax backward on small vectors: dx = y ⊙ (dy − Σ y dy).
std::vector<double> softmaxGrad(const std::vector<double> &y, const std::vector<double> &dy) {
  double s = 0.0;
  for (size_t i = 0; i < y.size(); ++i) s += y[i] * dy[i];
  std::vector<double> dx(y.size());
  for (size_t i = 0; i < y.size(); ++i) dx[i] = y[i] * (dy[i] - s);
  return dx;
}

int64_t numChunks(int64_t T, int64_t C) { return (T + C - 1) / C; }
int64_t chunkBegin(int64_t c, int64_t C) { return c * C; }
int64_t chunkEnd(int64_t c, int64_t C, int64_t T) { return std::min(T, (c + 1) * C); }

bool inClamp(double raw, double lo, double hi) { return raw >= lo && raw <= hi; }

} // namespace

//===----------------------------------------------------------------------===//
// Matmul
//===----------------------------------------------------------------------===//

Tensor matmul(const Tensor &A, const Tensor &W) {
  require(W.rank() == 2 && A.rank() >= 1 && A.dim(-1) == W.dim(0), "matmul: shapes");
  const int64_t K = W.dim(0), N = W.dim(1), rows = A.numel() / K;
  std::vector<int64_t> shape = A.shape;
  shape.back() = N;
  Tensor Y(shape);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0.0;
      for (int64_t kk = 0; kk < K; ++kk) acc += A[i * K + kk] * W[kk * N + j];
      Y[i * N + j] = acc;
    }
  return Y;
}

MatmulGrads matmulBackward(const Tensor &A, const Tensor &W, const Tensor &dY) {
  require(W.rank() == 2 && A.rank() >= 1 && A.dim(-1) == W.dim(0), "matmulBackward: shapes");
  const int64_t K = W.dim(0), N = W.dim(1), rows = A.numel() / K;
  require(dY.numel() == rows * N, "matmulBackward: dY size");
  MatmulGrads g{Tensor::zerosLike(A), Tensor::zerosLike(W)};
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t kk = 0; kk < K; ++kk) {
      double acc = 0.0;
      for (int64_t j = 0; j < N; ++j) {
        acc += dY[i * N + j] * W[kk * N + j];    // dA = dY·Wᵀ
        g.dW[kk * N + j] += A[i * K + kk] * dY[i * N + j]; // dW = Aᵀ·dY
      }
      g.dA[i * K + kk] = acc;
    }
  return g;
}

Tensor transpose(const Tensor &W) {
  require(W.rank() == 2, "transpose: 2-D only");
  Tensor R({W.dim(1), W.dim(0)});
  for (int64_t i = 0; i < W.dim(0); ++i)
    for (int64_t j = 0; j < W.dim(1); ++j) R.at(j, i) = W.at(i, j);
  return R;
}

Tensor addBias(const Tensor &X, const Tensor &bias) {
  require(bias.rank() == 1 && X.dim(-1) == bias.dim(0), "addBias: shapes");
  Tensor Y = X;
  const int64_t N = bias.dim(0);
  for (int64_t i = 0; i < Y.numel(); ++i) Y[i] += bias[i % N];
  return Y;
}

//===----------------------------------------------------------------------===//
// RMSNorm and GroupRMSNorm
//===----------------------------------------------------------------------===//

namespace {

/// RMSNorm of every run of n consecutive values (weight w of size n, or none).
Tensor rmsNormRows(const Tensor &x, int64_t n, const Tensor &w, double eps) {
  Tensor y = Tensor::zerosLike(x);
  for (int64_t row = 0; row * n < x.numel(); ++row) {
    const double *xr = &x.data[size_t(row * n)];
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += xr[i] * xr[i];
    const double inv = 1.0 / std::sqrt(ss / double(n) + eps);
    for (int64_t i = 0; i < n; ++i) y[row * n + i] = xr[i] * inv * (w.empty() ? 1.0 : w[i]);
  }
  return y;
}

/// With r = (mean(x²) + eps)^(-1/2) and y_i = x_i r w_i:
///   dw_i = Σ_rows dy_i x_i r,   dx_i = r w_i dy_i − x_i r³ / n · Σ_j dy_j w_j x_j.
RmsNormGrads rmsNormRowsBackward(const Tensor &x, int64_t n, const Tensor &w, double eps,
                                 const Tensor &dy) {
  require(dy.numel() == x.numel(), "rmsNormBackward: dy size");
  RmsNormGrads g{Tensor::zerosLike(x), w.empty() ? Tensor{} : Tensor::zerosLike(w)};
  for (int64_t row = 0; row * n < x.numel(); ++row) {
    const double *xr = &x.data[size_t(row * n)];
    const double *dyr = &dy.data[size_t(row * n)];
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += xr[i] * xr[i];
    const double r = 1.0 / std::sqrt(ss / double(n) + eps);
    double s = 0.0; // Σ_j dy_j w_j x_j
    for (int64_t i = 0; i < n; ++i) s += dyr[i] * (w.empty() ? 1.0 : w[i]) * xr[i];
    for (int64_t i = 0; i < n; ++i) {
      const double wi = w.empty() ? 1.0 : w[i];
      g.dx[row * n + i] = r * wi * dyr[i] - xr[i] * r * r * r / double(n) * s;
      if (!w.empty())
        g.dw[i] += dyr[i] * xr[i] * r;
    }
  }
  return g;
}

} // namespace

Tensor rmsNorm(const Tensor &x, const Tensor &w, double eps) {
  require(x.rank() >= 1 && (w.empty() || w.numel() == x.dim(-1)), "rmsNorm: shapes");
  return rmsNormRows(x, x.dim(-1), w, eps);
}

RmsNormGrads rmsNormBackward(const Tensor &x, const Tensor &w, double eps, const Tensor &dy) {
  require(x.rank() >= 1 && (w.empty() || w.numel() == x.dim(-1)), "rmsNormBackward: shapes");
  return rmsNormRowsBackward(x, x.dim(-1), w, eps, dy);
}

Tensor groupRmsNorm(const Tensor &x, int64_t groupSize, double eps) {
  require(groupSize > 0 && x.rank() >= 1 && x.dim(-1) % groupSize == 0, "groupRmsNorm: shapes");
  return rmsNormRows(x, groupSize, Tensor{}, eps);
}

Tensor groupRmsNormBackward(const Tensor &x, int64_t groupSize, double eps, const Tensor &dy) {
  require(groupSize > 0 && x.rank() >= 1 && x.dim(-1) % groupSize == 0,
          "groupRmsNormBackward: shapes");
  return rmsNormRowsBackward(x, groupSize, Tensor{}, eps, dy).dx;
}

//===----------------------------------------------------------------------===//
// SwiGLU, softmax, cross-entropy
//===----------------------------------------------------------------------===//

Tensor swiglu(const Tensor &a, const Tensor &b) {
  require(sameShape(a, b), "swiglu: shapes");
  Tensor y = Tensor::zerosLike(a);
  for (int64_t i = 0; i < a.numel(); ++i) y[i] = silu(a[i]) * b[i];
  return y;
}

SwigluGrads swigluBackward(const Tensor &a, const Tensor &b, const Tensor &dy) {
  require(sameShape(a, b) && dy.numel() == a.numel(), "swigluBackward: shapes");
  SwigluGrads g{Tensor::zerosLike(a), Tensor::zerosLike(b)};
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double s = sigmoid(a[i]);
    const double dsilu = s * (1.0 + a[i] * (1.0 - s)); // d(a σ(a))/da
    g.da[i] = dy[i] * b[i] * dsilu;
    g.db[i] = dy[i] * silu(a[i]);
  }
  return g;
}

Tensor softmax(const Tensor &x) {
  require(x.rank() >= 1, "softmax: rank");
  const int64_t n = x.dim(-1);
  Tensor y = Tensor::zerosLike(x);
  for (int64_t row = 0; row * n < x.numel(); ++row) {
    std::vector<double> v(x.data.begin() + row * n, x.data.begin() + (row + 1) * n);
    softmaxInPlace(v);
    std::copy(v.begin(), v.end(), y.data.begin() + row * n);
  }
  return y;
}

Tensor softmaxBackward(const Tensor &y, const Tensor &dy) {
  require(y.rank() >= 1 && dy.numel() == y.numel(), "softmaxBackward: shapes");
  const int64_t n = y.dim(-1);
  Tensor dx = Tensor::zerosLike(y);
  for (int64_t row = 0; row * n < y.numel(); ++row) {
    std::vector<double> yr(y.data.begin() + row * n, y.data.begin() + (row + 1) * n);
    std::vector<double> dr(dy.data.begin() + row * n, dy.data.begin() + (row + 1) * n);
    std::vector<double> g = softmaxGrad(yr, dr);
    std::copy(g.begin(), g.end(), dx.data.begin() + row * n);
  }
  return dx;
}

double crossEntropy(const Tensor &logits, const std::vector<int> &targets) {
  require(logits.rank() >= 1, "crossEntropy: rank");
  const int64_t V = logits.dim(-1), rows = logits.numel() / V;
  require(int64_t(targets.size()) == rows, "crossEntropy: one target per row");
  double total = 0.0;
  int64_t count = 0;
  for (int64_t row = 0; row < rows; ++row) {
    const int tgt = targets[size_t(row)];
    if (tgt < 0)
      continue;
    require(tgt < V, "crossEntropy: target outside [0, V)");
    const double *lr = &logits.data[size_t(row * V)];
    double mx = -INFINITY;
    for (int64_t j = 0; j < V; ++j) mx = std::max(mx, lr[j]);
    double sum = 0.0;
    for (int64_t j = 0; j < V; ++j) sum += std::exp(lr[j] - mx);
    total += std::log(sum) + mx - lr[tgt]; // logsumexp − logit of the target
    ++count;
  }
  return count ? total / double(count) : 0.0;
}

Tensor crossEntropyBackward(const Tensor &logits, const std::vector<int> &targets,
                            double dloss) {
  require(logits.rank() >= 1, "crossEntropyBackward: rank");
  const int64_t V = logits.dim(-1), rows = logits.numel() / V;
  require(int64_t(targets.size()) == rows, "crossEntropyBackward: one target per row");
  int64_t count = 0;
  for (int t : targets) count += t >= 0;
  Tensor d = Tensor::zerosLike(logits);
  if (count == 0)
    return d;
  for (int64_t row = 0; row < rows; ++row) {
    const int tgt = targets[size_t(row)];
    if (tgt < 0)
      continue;
    std::vector<double> p(logits.data.begin() + row * V, logits.data.begin() + (row + 1) * V);
    softmaxInPlace(p);
    for (int64_t j = 0; j < V; ++j)
      d[row * V + j] = dloss * (p[size_t(j)] - (j == tgt ? 1.0 : 0.0)) / double(count);
  }
  return d;
}

//===----------------------------------------------------------------------===//
// Decay gate
//===----------------------------------------------------------------------===//

Tensor decayGate(const Tensor &pre, double lo, double hi) {
  Tensor l = Tensor::zerosLike(pre);
  for (int64_t i = 0; i < pre.numel(); ++i) l[i] = std::clamp(logSigmoid(pre[i]), lo, hi);
  return l;
}

Tensor decayGateBackward(const Tensor &pre, double lo, double hi, const Tensor &dl) {
  require(dl.numel() == pre.numel(), "decayGateBackward: dl size");
  Tensor d = Tensor::zerosLike(pre);
  for (int64_t i = 0; i < pre.numel(); ++i)
    if (inClamp(logSigmoid(pre[i]), lo, hi))
      d[i] = dl[i] * sigmoid(-pre[i]); // d logσ(x)/dx = σ(−x)
  return d;
}

//===----------------------------------------------------------------------===//
// Linear scan (a Tensor front end of Scan.h, which the scan kernels also use)
//===----------------------------------------------------------------------===//

namespace {

struct ScanDims {
  int64_t B, T, S, E;
  std::vector<int64_t> stateShape; // (B, b.shape[2:])
};

ScanDims scanDims(const Tensor &logDecay, const Tensor &b, const Tensor &h0) {
  require(logDecay.rank() >= 2 && b.rank() >= 2, "linearScan: ℓ and b need (B, T, ...)");
  require(logDecay.dim(0) == b.dim(0) && logDecay.dim(1) == b.dim(1),
          "linearScan: ℓ and b disagree on (B, T)");
  ScanDims d;
  d.B = b.dim(0);
  d.T = b.dim(1);
  require(d.B > 0 && d.T > 0, "linearScan: B and T must be positive");
  d.S = logDecay.numel() / (d.B * d.T);
  const int64_t N = b.numel() / (d.B * d.T);
  require(d.S > 0 && N % d.S == 0, "linearScan: b's channels must be a multiple of ℓ's");
  d.E = N / d.S;
  d.stateShape = {d.B};
  d.stateShape.insert(d.stateShape.end(), b.shape.begin() + 2, b.shape.end());
  require(h0.empty() || h0.numel() == d.B * N, "linearScan: h0 size");
  return d;
}

} // namespace

LinearScanOut linearScan(const Tensor &logDecay, const Tensor &b, const Tensor &h0, double lo,
                         double hi, bool reverse) {
  ScanDims d = scanDims(logDecay, b, h0);
  ScanResult r = scanForward(logDecay.data, b.data, h0.data, d.B, d.T, d.S, d.E, lo, hi, reverse);
  LinearScanOut out{Tensor(b.shape), Tensor(d.stateShape)};
  out.h.data = std::move(r.h);
  out.final.data = std::move(r.final);
  return out;
}

LinearScanGrads linearScanBackward(const Tensor &logDecay, const Tensor &b, const Tensor &h0,
                                   double lo, double hi, bool reverse, const Tensor &dh,
                                   const Tensor &dfinal) {
  ScanDims d = scanDims(logDecay, b, h0);
  Tensor dhAll = orZeros(dh, b.shape), dfin = orZeros(dfinal, d.stateShape);
  ScanGrads g = scanBackward(logDecay.data, b.data, h0.data, d.B, d.T, d.S, d.E, lo, hi, reverse,
                             dhAll.data, dfin.data);
  LinearScanGrads out{Tensor(logDecay.shape), Tensor(b.shape), Tensor(d.stateShape)};
  out.dLogDecay.data = std::move(g.dlog);
  out.db.data = std::move(g.db);
  out.dh0.data = std::move(g.dh0);
  return out;
}

//===----------------------------------------------------------------------===//
// Level 0: the gated recurrence
//===----------------------------------------------------------------------===//

namespace {

/// W_g as `blocks` diagonal blocks of bs×bs: dense is one block of D×D,
/// per_head is H blocks of dh×dh. Entry (i, j) of block k is at
/// Wg[(k·bs + i)·bs + j] and maps input channel k·bs+i to output k·bs+j.
struct GateLayout {
  int64_t blocks, bs;
};

GateLayout gateLayout(const Tensor &Wg, int64_t D) {
  if (Wg.rank() == 2) {
    require(Wg.dim(0) == D && Wg.dim(1) == D, "gatedRecurrence: dense W_g must be (D, D)");
    return {1, D};
  }
  require(Wg.rank() == 3 && Wg.dim(1) == Wg.dim(2) && Wg.dim(0) * Wg.dim(1) == D,
          "gatedRecurrence: per_head W_g must be (H, D/H, D/H)");
  return {Wg.dim(0), Wg.dim(1)};
}

/// p = h·W_g + b_g.
std::vector<double> gatePreact(const std::vector<double> &h, const Tensor &Wg, const Tensor &bg,
                               GateLayout g) {
  std::vector<double> p(bg.data);
  for (int64_t k = 0; k < g.blocks; ++k)
    for (int64_t i = 0; i < g.bs; ++i)
      for (int64_t j = 0; j < g.bs; ++j)
        p[size_t(k * g.bs + j)] += h[size_t(k * g.bs + i)] * Wg[(k * g.bs + i) * g.bs + j];
  return p;
}

} // namespace

RecurrenceOut gatedRecurrence(const Tensor &z, const Tensor &gamma, const Tensor &Wg,
                              const Tensor &bg, const Tensor &h0) {
  require(z.rank() == 3 && sameShape(z, gamma), "gatedRecurrence: z, γ must be (B, T, D)");
  const int64_t B = z.dim(0), T = z.dim(1), D = z.dim(2);
  const GateLayout gl = gateLayout(Wg, D);
  require(bg.numel() == D, "gatedRecurrence: b_g must be (D)");
  const Tensor init = orZeros(h0, {B, D});

  RecurrenceOut out{Tensor({B, T, D}), Tensor({B, D})};
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> h(init.data.begin() + b * D, init.data.begin() + (b + 1) * D);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> p = gatePreact(h, Wg, bg, gl);
      for (int64_t j = 0; j < D; ++j)
        h[size_t(j)] = z.at(b, t, j) * sigmoid(p[size_t(j)]) + gamma.at(b, t, j) * h[size_t(j)];
      for (int64_t j = 0; j < D; ++j) out.h.at(b, t, j) = h[size_t(j)];
    }
    for (int64_t j = 0; j < D; ++j) out.final.at(b, j) = h[size_t(j)];
  }
  return out;
}

RecurrenceGrads gatedRecurrenceBackward(const Tensor &z, const Tensor &gamma, const Tensor &Wg,
                                        const Tensor &bg, const Tensor &h0, const Tensor &dh,
                                        const Tensor &dfinal) {
  require(z.rank() == 3 && sameShape(z, gamma), "gatedRecurrenceBackward: z, γ shapes");
  const int64_t B = z.dim(0), T = z.dim(1), D = z.dim(2);
  const GateLayout gl = gateLayout(Wg, D);
  const Tensor init = orZeros(h0, {B, D});
  const Tensor dhAll = orZeros(dh, {B, T, D}), dfin = orZeros(dfinal, {B, D});
  const RecurrenceOut fwd = gatedRecurrence(z, gamma, Wg, bg, init);
  auto hPrev = [&](int64_t b, int64_t t, int64_t j) {
    return t == 0 ? init.at(b, j) : fwd.h.at(b, t - 1, j);
  };

  RecurrenceGrads g{Tensor::zerosLike(z), Tensor::zerosLike(gamma), Tensor::zerosLike(Wg),
                    Tensor::zerosLike(bg), Tensor({B, D})};
  for (int64_t b = 0; b < B; ++b) {
    // carry = dL/dh_t from the steps after t (and from the final state).
    std::vector<double> carry(dfin.data.begin() + b * D, dfin.data.begin() + (b + 1) * D);
    for (int64_t t = T - 1; t >= 0; --t) {
      const size_t n = static_cast<size_t>(D);
      std::vector<double> hp(n), gt(n), dp(n);
      for (int64_t j = 0; j < D; ++j) {
        hp[size_t(j)] = hPrev(b, t, j);
        gt[size_t(j)] = dhAll.at(b, t, j) + carry[size_t(j)]; // total dL/dh_t
      }
      const std::vector<double> p = gatePreact(hp, Wg, bg, gl);
      std::vector<double> next(n); // dL/dh_{t-1}
      for (int64_t j = 0; j < D; ++j) {
        const double s = sigmoid(p[size_t(j)]);
        g.dz.at(b, t, j) = gt[size_t(j)] * s;
        g.dgamma.at(b, t, j) = gt[size_t(j)] * hp[size_t(j)];
        dp[size_t(j)] = gt[size_t(j)] * z.at(b, t, j) * s * (1.0 - s);
        g.dbg[j] += dp[size_t(j)];
        next[size_t(j)] = gamma.at(b, t, j) * gt[size_t(j)];
      }
      // Through p = h_{t-1}·W_g: dW_g += h_{t-1}ᵀ dp, dh_{t-1} += dp·W_gᵀ.
      for (int64_t k = 0; k < gl.blocks; ++k)
        for (int64_t i = 0; i < gl.bs; ++i)
          for (int64_t j = 0; j < gl.bs; ++j) {
            const int64_t in = k * gl.bs + i, outc = k * gl.bs + j, w = (k * gl.bs + i) * gl.bs + j;
            g.dWg[w] += hp[size_t(in)] * dp[size_t(outc)];
            next[size_t(in)] += dp[size_t(outc)] * Wg[w];
          }
      carry = next;
    }
    for (int64_t j = 0; j < D; ++j) g.dh0.at(b, j) = carry[size_t(j)];
  }
  return g;
}

//===----------------------------------------------------------------------===//
// HDS level 1: chunk summaries and the causal read
//===----------------------------------------------------------------------===//

namespace {

void requireQKV(const Tensor &q, const Tensor &k, const Tensor &v, int64_t Nm, int64_t C) {
  require(q.rank() == 3 && sameShape(q, k) && sameShape(q, v), "q, k, v must be (B, T, D)");
  require(Nm > 0 && q.dim(2) % Nm == 0 && C > 0, "D must split into N_m groups; C > 0");
}

/// K1, V1 (B, n_c, D): means over the tokens present in each chunk.
void chunkMeans(const Tensor &k, const Tensor &v, int64_t C, Tensor &K1, Tensor &V1) {
  const int64_t B = k.dim(0), T = k.dim(1), D = k.dim(2), nc = numChunks(T, C);
  K1 = Tensor({B, nc, D});
  V1 = Tensor({B, nc, D});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < nc; ++c) {
      const int64_t t0 = chunkBegin(c, C), t1 = chunkEnd(c, C, T);
      for (int64_t j = 0; j < D; ++j) {
        double sk = 0.0, sv = 0.0;
        for (int64_t t = t0; t < t1; ++t) {
          sk += k.at(b, t, j);
          sv += v.at(b, t, j);
        }
        K1.at(b, c, j) = sk / double(t1 - t0);
        V1.at(b, c, j) = sv / double(t1 - t0);
      }
    }
}

/// softmax over c' < ct of q_t·K1_{c'}/√d_m for group m.
std::vector<double> level1Attention(const Tensor &q, const Tensor &K1, int64_t b, int64_t t,
                                    int64_t ct, int64_t m, int64_t dm) {
  const double scale = 1.0 / std::sqrt(double(dm));
  std::vector<double> s(static_cast<size_t>(ct));
  for (int64_t c = 0; c < ct; ++c) {
    double acc = 0.0;
    for (int64_t i = 0; i < dm; ++i) acc += q.at(b, t, m * dm + i) * K1.at(b, c, m * dm + i);
    s[size_t(c)] = acc * scale;
  }
  softmaxInPlace(s);
  return s;
}

} // namespace

Level1Out hdsLevel1(const Tensor &q, const Tensor &k, const Tensor &v, int64_t Nm, int64_t C) {
  requireQKV(q, k, v, Nm, C);
  const int64_t B = q.dim(0), T = q.dim(1), D = q.dim(2), dm = D / Nm;
  Level1Out out;
  chunkMeans(k, v, C, out.K1, out.V1);
  out.y1 = Tensor({B, T, D});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t ct = t / C;
      if (ct == 0)
        continue; // no completed chunk yet: y1 = 0
      for (int64_t m = 0; m < Nm; ++m) {
        const std::vector<double> a = level1Attention(q, out.K1, b, t, ct, m, dm);
        for (int64_t i = 0; i < dm; ++i) {
          double acc = 0.0;
          for (int64_t c = 0; c < ct; ++c) acc += a[size_t(c)] * out.V1.at(b, c, m * dm + i);
          out.y1.at(b, t, m * dm + i) = acc;
        }
      }
    }
  return out;
}

Level1Grads hdsLevel1Backward(const Tensor &q, const Tensor &k, const Tensor &v, int64_t Nm,
                              int64_t C, const Tensor &dy1) {
  requireQKV(q, k, v, Nm, C);
  const int64_t B = q.dim(0), T = q.dim(1), D = q.dim(2), dm = D / Nm, nc = numChunks(T, C);
  const double scale = 1.0 / std::sqrt(double(dm));
  const Tensor dy = orZeros(dy1, q.shape);
  Tensor K1, V1;
  chunkMeans(k, v, C, K1, V1);
  Tensor dK1 = Tensor::zerosLike(K1), dV1 = Tensor::zerosLike(V1);
  Level1Grads g{Tensor::zerosLike(q), Tensor::zerosLike(k), Tensor::zerosLike(v)};

  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t ct = t / C;
      if (ct == 0)
        continue;
      for (int64_t m = 0; m < Nm; ++m) {
        const std::vector<double> a = level1Attention(q, K1, b, t, ct, m, dm);
        std::vector<double> da(static_cast<size_t>(ct), 0.0);
        for (int64_t c = 0; c < ct; ++c)
          for (int64_t i = 0; i < dm; ++i) {
            da[size_t(c)] += dy.at(b, t, m * dm + i) * V1.at(b, c, m * dm + i);
            dV1.at(b, c, m * dm + i) += a[size_t(c)] * dy.at(b, t, m * dm + i);
          }
        const std::vector<double> ds = softmaxGrad(a, da);
        for (int64_t c = 0; c < ct; ++c)
          for (int64_t i = 0; i < dm; ++i) {
            g.dq.at(b, t, m * dm + i) += scale * ds[size_t(c)] * K1.at(b, c, m * dm + i);
            dK1.at(b, c, m * dm + i) += scale * ds[size_t(c)] * q.at(b, t, m * dm + i);
          }
      }
    }
  // Through the chunk means.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < nc; ++c) {
      const int64_t t0 = chunkBegin(c, C), t1 = chunkEnd(c, C, T);
      for (int64_t t = t0; t < t1; ++t)
        for (int64_t j = 0; j < D; ++j) {
          g.dk.at(b, t, j) = dK1.at(b, c, j) / double(t1 - t0);
          g.dv.at(b, t, j) = dV1.at(b, c, j) / double(t1 - t0);
        }
    }
  return g;
}

//===----------------------------------------------------------------------===//
// HDS level 2: the MDI memory
//===----------------------------------------------------------------------===//

namespace {

constexpr double kMassFloor = 1e-6; // max(n, 1e-6) in U

struct Level2Dims {
  int64_t B, T, D, Nm, M, dm, nc;
};

Level2Dims level2Dims(const Tensor &q, const Tensor &k, const Tensor &v, const Tensor &S,
                      const Tensor &mu, const Tensor &m0, int64_t C) {
  require(S.rank() == 3, "hdsLevel2: S must be (N_m, M, d_m)");
  Level2Dims d{q.dim(0), q.dim(1), q.dim(2), S.dim(0), S.dim(1), S.dim(2), 0};
  requireQKV(q, k, v, d.Nm, C);
  require(d.Nm * d.dm == d.D, "hdsLevel2: N_m · d_m must be D");
  require(mu.rank() == 2 && mu.dim(0) == d.Nm && mu.dim(1) == d.M, "hdsLevel2: μ (N_m, M)");
  require(m0.empty() || m0.numel() == d.B * d.Nm * d.M * d.dm, "hdsLevel2: m0 size");
  d.nc = numChunks(d.T, C);
  return d;
}

/// softmax_s(x_t[m]·S[m][s]/√d_m) for every (b, t, m): (B, T, N_m, M).
Tensor slotAddresses(const Tensor &x, const Tensor &S, const Level2Dims &d) {
  const double scale = 1.0 / std::sqrt(double(d.dm));
  Tensor w({d.B, d.T, d.Nm, d.M});
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t t = 0; t < d.T; ++t)
      for (int64_t m = 0; m < d.Nm; ++m) {
        std::vector<double> s(static_cast<size_t>(d.M));
        for (int64_t sl = 0; sl < d.M; ++sl) {
          double acc = 0.0;
          for (int64_t i = 0; i < d.dm; ++i) acc += x.at(b, t, m * d.dm + i) * S.at(m, sl, i);
          s[size_t(sl)] = acc * scale;
        }
        softmaxInPlace(s);
        for (int64_t sl = 0; sl < d.M; ++sl) w.at(b, t, m, sl) = s[size_t(sl)];
      }
  return w;
}

/// Backward of slotAddresses from the address gradient dw: adds to dx and dS.
void slotAddressesBackward(const Tensor &x, const Tensor &S, const Tensor &w, const Tensor &dw,
                           const Level2Dims &d, Tensor &dx, Tensor &dS) {
  const double scale = 1.0 / std::sqrt(double(d.dm));
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t t = 0; t < d.T; ++t)
      for (int64_t m = 0; m < d.Nm; ++m) {
        std::vector<double> wr(static_cast<size_t>(d.M)), dr(static_cast<size_t>(d.M));
        for (int64_t sl = 0; sl < d.M; ++sl) {
          wr[size_t(sl)] = w.at(b, t, m, sl);
          dr[size_t(sl)] = dw.at(b, t, m, sl);
        }
        const std::vector<double> ds = softmaxGrad(wr, dr);
        for (int64_t sl = 0; sl < d.M; ++sl)
          for (int64_t i = 0; i < d.dm; ++i) {
            dx.at(b, t, m * d.dm + i) += scale * ds[size_t(sl)] * S.at(m, sl, i);
            dS.at(m, sl, i) += scale * ds[size_t(sl)] * x.at(b, t, m * d.dm + i);
          }
      }
}

/// The scan's input b_c = (1 − β_c) ⊙ U_c, with 1 − β = −expm1(logβ).
Tensor memoryWrites(const Tensor &logBeta, const Tensor &U, const Level2Dims &d) {
  Tensor bIn({d.B, d.nc, d.Nm, d.M, d.dm});
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t c = 0; c < d.nc; ++c)
      for (int64_t m = 0; m < d.Nm; ++m)
        for (int64_t s = 0; s < d.M; ++s) {
          const double oneMinusBeta = -std::expm1(logBeta.at(b, c, m, s));
          for (int64_t i = 0; i < d.dm; ++i)
            bIn.at(b, c, m, s, i) = oneMinusBeta * U.at(b, c, m, s, i);
        }
  return bIn;
}

} // namespace

Level2Out hdsLevel2(const Tensor &q, const Tensor &k, const Tensor &v, const Tensor &S,
                    const Tensor &mu, const Tensor &m0, int64_t C, double clampMin) {
  const Level2Dims d = level2Dims(q, k, v, S, mu, m0, C);
  const Tensor init = orZeros(m0, {d.B, d.Nm, d.M, d.dm});
  Level2Out out;
  out.w = slotAddresses(k, S, d);
  out.a = slotAddresses(q, S, d);

  // Write mass, written value and decay of every chunk.
  out.n = Tensor({d.B, d.nc, d.Nm, d.M});
  out.U = Tensor({d.B, d.nc, d.Nm, d.M, d.dm});
  out.logBeta = Tensor({d.B, d.nc, d.Nm, d.M});
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t c = 0; c < d.nc; ++c)
      for (int64_t m = 0; m < d.Nm; ++m)
        for (int64_t s = 0; s < d.M; ++s) {
          double n = 0.0;
          std::vector<double> P(static_cast<size_t>(d.dm), 0.0); // Σ w v
          for (int64_t t = chunkBegin(c, C); t < chunkEnd(c, C, d.T); ++t) {
            n += out.w.at(b, t, m, s);
            for (int64_t i = 0; i < d.dm; ++i)
              P[size_t(i)] += out.w.at(b, t, m, s) * v.at(b, t, m * d.dm + i);
          }
          out.n.at(b, c, m, s) = n;
          for (int64_t i = 0; i < d.dm; ++i)
            out.U.at(b, c, m, s, i) = P[size_t(i)] / std::max(n, kMassFloor);
          out.logBeta.at(b, c, m, s) = std::clamp(n * logSigmoid(mu.at(m, s)), clampMin, 0.0);
        }

  // Mem_c = β_c ⊙ Mem_{c-1} + (1 − β_c) ⊙ U_c: a log-space scan over chunks
  // with one decay per (m, s) broadcast over d_m.
  const LinearScanOut scan =
      linearScan(out.logBeta, memoryWrites(out.logBeta, out.U, d), init, clampMin, 0.0);
  out.mems = scan.h;
  out.memFinal = scan.final;

  // Reads: the memory as it stood before the token's chunk.
  out.y2 = Tensor({d.B, d.T, d.D});
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t t = 0; t < d.T; ++t) {
      const int64_t ct = t / C;
      for (int64_t m = 0; m < d.Nm; ++m)
        for (int64_t i = 0; i < d.dm; ++i) {
          double acc = 0.0;
          for (int64_t s = 0; s < d.M; ++s) {
            const double prev = ct == 0 ? init.at(b, m, s, i) : out.mems.at(b, ct - 1, m, s, i);
            acc += out.a.at(b, t, m, s) * prev;
          }
          out.y2.at(b, t, m * d.dm + i) = acc;
        }
    }
  return out;
}

Level2Grads hdsLevel2Backward(const Tensor &q, const Tensor &k, const Tensor &v, const Tensor &S,
                              const Tensor &mu, const Tensor &m0, int64_t C, double clampMin,
                              const Tensor &dy2, const Tensor &dmemFinal) {
  const Level2Dims d = level2Dims(q, k, v, S, mu, m0, C);
  const Tensor init = orZeros(m0, {d.B, d.Nm, d.M, d.dm});
  const Tensor dy = orZeros(dy2, {d.B, d.T, d.D});
  const Tensor dfin = orZeros(dmemFinal, {d.B, d.Nm, d.M, d.dm});
  const Level2Out f = hdsLevel2(q, k, v, S, mu, init, C, clampMin);

  Level2Grads g{Tensor::zerosLike(q), Tensor::zerosLike(k), Tensor::zerosLike(v),
                Tensor::zerosLike(S), Tensor::zerosLike(mu), Tensor({d.B, d.Nm, d.M, d.dm})};

  // Reads: y2_t = Σ_s a_{t,s} Mem_{c(t)-1}[s].
  Tensor dmems = Tensor::zerosLike(f.mems);
  Tensor da({d.B, d.T, d.Nm, d.M});
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t t = 0; t < d.T; ++t) {
      const int64_t ct = t / C;
      for (int64_t m = 0; m < d.Nm; ++m)
        for (int64_t s = 0; s < d.M; ++s)
          for (int64_t i = 0; i < d.dm; ++i) {
            const double gy = dy.at(b, t, m * d.dm + i);
            if (ct == 0) {
              da.at(b, t, m, s) += gy * init.at(b, m, s, i);
              g.dm0.at(b, m, s, i) += f.a.at(b, t, m, s) * gy;
            } else {
              da.at(b, t, m, s) += gy * f.mems.at(b, ct - 1, m, s, i);
              dmems.at(b, ct - 1, m, s, i) += f.a.at(b, t, m, s) * gy;
            }
          }
    }
  slotAddressesBackward(q, S, f.a, da, d, g.dq, g.dS);

  // The memory scan.
  const Tensor bIn = memoryWrites(f.logBeta, f.U, d);
  const LinearScanGrads sg =
      linearScanBackward(f.logBeta, bIn, init, clampMin, 0.0, false, dmems, dfin);
  addInto(g.dm0, sg.dh0);

  // b = (1 − β) U, logβ = clamp(n·logσ(μ)), U = P / max(n, 1e-6), n = Σ w, P = Σ w v.
  Tensor dw({d.B, d.T, d.Nm, d.M});
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t c = 0; c < d.nc; ++c)
      for (int64_t m = 0; m < d.Nm; ++m)
        for (int64_t s = 0; s < d.M; ++s) {
          const double n = f.n.at(b, c, m, s), lb = f.logBeta.at(b, c, m, s);
          const double beta = std::exp(lb), den = std::max(n, kMassFloor);
          std::vector<double> dP(static_cast<size_t>(d.dm));
          double dBeta = 0.0, dn = 0.0;
          for (int64_t i = 0; i < d.dm; ++i) {
            const double db = sg.db.at(b, c, m, s, i), U = f.U.at(b, c, m, s, i);
            const double dU = (1.0 - beta) * db;
            dBeta -= U * db;
            dP[size_t(i)] = dU / den;
            if (n > kMassFloor)
              dn -= dU * U / den; // ∂(P/n)/∂n = −P/n² = −U/n
          }
          const double dlb = sg.dLogDecay.at(b, c, m, s) + beta * dBeta;
          const double ls = logSigmoid(mu.at(m, s));
          if (inClamp(n * ls, clampMin, 0.0)) {
            dn += dlb * ls;
            g.dmu.at(m, s) += dlb * n * sigmoid(-mu.at(m, s));
          }
          for (int64_t t = chunkBegin(c, C); t < chunkEnd(c, C, d.T); ++t) {
            double acc = dn;
            for (int64_t i = 0; i < d.dm; ++i) {
              acc += dP[size_t(i)] * v.at(b, t, m * d.dm + i);
              g.dv.at(b, t, m * d.dm + i) += f.w.at(b, t, m, s) * dP[size_t(i)];
            }
            dw.at(b, t, m, s) = acc;
          }
        }
  slotAddressesBackward(k, S, f.w, dw, d, g.dk, g.dS);
  return g;
}

//===----------------------------------------------------------------------===//
// The combination
//===----------------------------------------------------------------------===//

namespace {

/// ω = softmax(ρ_m) for every group: (N_m, 3).
Tensor combinationWeights(const Tensor &rho) {
  require(rho.rank() == 2 && rho.dim(1) == 3, "combine: ρ must be (N_m, 3)");
  return softmax(rho);
}

} // namespace

Tensor combine(const Tensor &h, const Tensor &y1, const Tensor &y2, const Tensor &rho,
               double eps) {
  require(h.rank() == 3 && sameShape(h, y1) && sameShape(h, y2), "combine: h, y1, y2 shapes");
  const Tensor omega = combinationWeights(rho);
  const int64_t Nm = rho.dim(0), D = h.dim(2);
  require(D % Nm == 0, "combine: D must split into N_m groups");
  const int64_t dm = D / Nm;
  const Tensor hn = groupRmsNorm(h, dm, eps);
  Tensor o = Tensor::zerosLike(h);
  for (int64_t i = 0; i < o.numel(); ++i) {
    const int64_t m = (i % D) / dm;
    o[i] = omega.at(m, 0) * hn[i] + omega.at(m, 1) * y1[i] + omega.at(m, 2) * y2[i];
  }
  return o;
}

CombineGrads combineBackward(const Tensor &h, const Tensor &y1, const Tensor &y2,
                             const Tensor &rho, double eps, const Tensor &dout) {
  require(h.rank() == 3 && sameShape(h, y1) && sameShape(h, y2), "combineBackward: shapes");
  const Tensor omega = combinationWeights(rho);
  const int64_t Nm = rho.dim(0), D = h.dim(2), dm = D / Nm;
  const Tensor dO = orZeros(dout, h.shape);
  const Tensor hn = groupRmsNorm(h, dm, eps);
  CombineGrads g{Tensor{}, Tensor::zerosLike(y1), Tensor::zerosLike(y2), Tensor{}};
  Tensor dhn = Tensor::zerosLike(h), domega = Tensor::zerosLike(omega);
  for (int64_t i = 0; i < h.numel(); ++i) {
    const int64_t m = (i % D) / dm;
    dhn[i] = omega.at(m, 0) * dO[i];
    g.dy1[i] = omega.at(m, 1) * dO[i];
    g.dy2[i] = omega.at(m, 2) * dO[i];
    domega.at(m, 0) += dO[i] * hn[i];
    domega.at(m, 1) += dO[i] * y1[i];
    domega.at(m, 2) += dO[i] * y2[i];
  }
  g.drho = softmaxBackward(omega, domega);
  g.dh = groupRmsNormBackward(h, dm, eps, dhn);
  return g;
}

} // namespace mmrec::ref
