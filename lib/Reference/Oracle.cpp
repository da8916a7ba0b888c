//===- Oracle.cpp - the float64 oracle of MMREC_SPEC -------------------===//

#include "Reference/Oracle.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace mmrec::ref {

//===----------------------------------------------------------------------===//
// Configuration
//===----------------------------------------------------------------------===//

int64_t Config::layerParamCount() const {
  int64_t gate = denseGate ? D * D : D * D / H;
  return 4 * D * D + D * D + gate + D + 2 * D * r + D + M * D + Nm * M + 3 * Nm + 3 * D * F +
         2 * D;
}
int64_t Config::paramCount() const { return L * layerParamCount() + V * D + D; }

Config Config::tiny() { return {"mmrec-tiny", 256, 128, 2, 4, 2, 32, 384, 16, 256, 16}; }
Config Config::small() { return {"mmrec-small", 32000, 768, 12, 12, 4, 256, 2048, 64, 4096, 64}; }
Config Config::b7() {
  return {"mmrec-7b", 32000, 4096, 24, 32, 8, 1024, 11008, 128, 32768, 128};
}

//===----------------------------------------------------------------------===//
// Tape
//===----------------------------------------------------------------------===//

Tape &Tape::get() {
  thread_local Tape t;
  return t;
}

int Tape::push(int a, double da, int b, double db) {
  nodes_.push_back({a, b, da, db});
  return int(nodes_.size()) - 1;
}

void Tape::backward(int out) {
  grads_.assign(nodes_.size(), 0.0);
  if (out < 0)
    return;
  grads_[size_t(out)] = 1.0;
  for (int i = out; i >= 0; --i) {
    double g = grads_[size_t(i)];
    if (g == 0.0)
      continue;
    const Node &n = nodes_[size_t(i)];
    if (n.a >= 0) grads_[size_t(n.a)] += n.da * g;
    if (n.b >= 0) grads_[size_t(n.b)] += n.db * g;
  }
}

namespace {
Var make(double v, int a, double da, int b, double db) {
  Var r(v);
  if (a >= 0 || b >= 0)
    r.id = Tape::get().push(a, da, b, db);
  return r;
}
} // namespace

Var operator+(const Var &x, const Var &y) { return make(x.v + y.v, x.id, 1, y.id, 1); }
Var operator-(const Var &x, const Var &y) { return make(x.v - y.v, x.id, 1, y.id, -1); }
Var operator*(const Var &x, const Var &y) { return make(x.v * y.v, x.id, y.v, y.id, x.v); }
Var operator/(const Var &x, const Var &y) {
  return make(x.v / y.v, x.id, 1 / y.v, y.id, -x.v / (y.v * y.v));
}
Var operator-(const Var &x) { return make(-x.v, x.id, -1, -1, 0); }
Var exp(const Var &x) {
  double e = std::exp(x.v);
  return make(e, x.id, e, -1, 0);
}
Var log(const Var &x) { return make(std::log(x.v), x.id, 1 / x.v, -1, 0); }
Var log1p(const Var &x) { return make(std::log1p(x.v), x.id, 1 / (1 + x.v), -1, 0); }
Var sqrt(const Var &x) {
  double s = std::sqrt(x.v);
  return make(s, x.id, 0.5 / s, -1, 0);
}

//===----------------------------------------------------------------------===//
// Parameters
//===----------------------------------------------------------------------===//

const std::vector<std::string> &layerParamNames() {
  static const std::vector<std::string> n = {"w_in", "W_q", "W_k", "W_v", "W_z", "A_gamma",
                                             "B_gamma", "lambda", "W_g", "b_g", "S", "mu",
                                             "rho", "W_o", "w_ffn", "W_1", "W_3", "W_2"};
  return n;
}

std::map<std::string, std::vector<int64_t>> paramShapes(const Config &c) {
  std::map<std::string, std::vector<int64_t>> s;
  s["embed"] = {c.V, c.D};
  s["final_norm"] = {c.D};
  for (int64_t l = 0; l < c.L; ++l) {
    std::string p = "layers." + std::to_string(l) + ".";
    s[p + "w_in"] = {c.D};
    for (const char *n : {"W_q", "W_k", "W_v", "W_z", "W_o"}) s[p + n] = {c.D, c.D};
    s[p + "A_gamma"] = {c.D, c.r};
    s[p + "B_gamma"] = {c.r, c.D};
    s[p + "lambda"] = {c.D};
    s[p + "W_g"] = c.denseGate ? std::vector<int64_t>{c.D, c.D}
                               : std::vector<int64_t>{c.H, c.dh(), c.dh()};
    s[p + "b_g"] = {c.D};
    s[p + "S"] = {c.Nm, c.M, c.dm()};
    s[p + "mu"] = {c.Nm, c.M};
    s[p + "rho"] = {c.Nm, 3};
    s[p + "w_ffn"] = {c.D};
    s[p + "W_1"] = {c.D, c.F};
    s[p + "W_3"] = {c.D, c.F};
    s[p + "W_2"] = {c.F, c.D};
  }
  return s;
}

static std::string baseName(const std::string &n) { return n.substr(n.rfind('.') + 1); }

Params<double> initParams(const Config &c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const double logitInit = std::log(c.decayInit / (1 - c.decayInit));
  Params<double> p;
  for (auto &[name, shape] : paramShapes(c)) {
    Tensor<double> t(shape);
    std::string b = baseName(name);
    double stdev = 0.0, fill = 0.0;
    if (b == "final_norm" || b == "w_in" || b == "w_ffn")
      fill = 1.0;
    else if (b == "lambda" || b == "mu")
      fill = logitInit;
    else if (b == "W_o" || b == "W_2")
      stdev = 0.02 / std::sqrt(2.0 * double(c.L));
    else if (b == "b_g" || b == "B_gamma" || b == "rho")
      fill = 0.0;
    else
      stdev = 0.02; // embed, W_q/k/v/z, W_1, W_3, A_gamma, W_g, S
    std::normal_distribution<double> N(0.0, stdev > 0 ? stdev : 1.0);
    for (auto &x : t.data) x = stdev > 0 ? N(rng) : fill;
    p[name] = std::move(t);
  }
  return p;
}

Params<double> randomParams(const Config &c, uint64_t seed, double scale) {
  Params<double> p = initParams(c, seed);
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
  std::uniform_real_distribution<double> U(-scale, scale);
  for (auto &[name, t] : p)
    for (auto &x : t.data) x += U(rng);
  return p;
}

Params<Var> toVar(const Params<double> &p) {
  Params<Var> r;
  for (auto &[name, t] : p) r[name] = toVar(t);
  return r;
}

Tensor<Var> toVar(const Tensor<double> &t) {
  Tensor<Var> r;
  r.shape = t.shape;
  r.data.reserve(t.data.size());
  for (double x : t.data) r.data.push_back(Var::input(x));
  return r;
}

//===----------------------------------------------------------------------===//
// Scalar helpers (one definition for double and Var)
//===----------------------------------------------------------------------===//

namespace {

using std::exp;
using std::log;
using std::log1p;
using std::sqrt;

template <class S> S sigmoid(const S &x) { return S(1.0) / (S(1.0) + exp(-x)); }
/// softplus(y) = log(1 + e^y), stable on both sides.
template <class S> S softplus(const S &y) {
  return val(y) > 0 ? y + log1p(exp(-y)) : log1p(exp(y));
}
/// log σ(x) = -softplus(-x).
template <class S> S logSigmoid(const S &x) { return -softplus(S(-x)); }
/// Clamp that passes no gradient where it is active.
template <class S> S clampS(const S &x, double lo, double hi) {
  if (val(x) < lo) return S(lo);
  if (val(x) > hi) return S(hi);
  return x;
}

/// In-place softmax of v (max subtracted as a constant: it cancels exactly).
template <class S> void softmax(std::vector<S> &v) {
  double m = -INFINITY;
  for (auto &x : v) m = std::max(m, val(x));
  S sum(0.0);
  for (auto &x : v) { x = exp(x - S(m)); sum += x; }
  for (auto &x : v) x = x / sum;
}

/// out[j] = Σ_i in[i] · W[i][j] (+ bias[j]): a row vector times a K×N matrix.
template <class S>
std::vector<S> rowTimes(const S *in, const Tensor<S> &W, int64_t K, int64_t N,
                        const Tensor<S> *bias = nullptr) {
  std::vector<S> out(static_cast<size_t>(N), S(0.0));
  for (int64_t j = 0; j < N; ++j) {
    S acc = bias ? (*bias)[j] : S(0.0);
    for (int64_t i = 0; i < K; ++i) acc += in[i] * W[i * N + j];
    out[size_t(j)] = acc;
  }
  return out;
}

template <class S> std::vector<S> rmsNorm(const S *x, int64_t n, const S *w, double eps) {
  S ss(0.0);
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  S inv = S(1.0) / sqrt(ss / S(double(n)) + S(eps));
  std::vector<S> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[size_t(i)] = x[i] * inv * (w ? w[i] : S(1.0));
  return out;
}

} // namespace

//===----------------------------------------------------------------------===//
// The layer
//===----------------------------------------------------------------------===//

template <class S>
LayerOut<S> layerForward(const Config &c, const Params<S> &p, int l, const Tensor<S> &x,
                         const Tensor<S> &h0, const Tensor<S> &mem0) {
  const int64_t B = x.shape[0], T = x.shape[1], D = c.D, Nm = c.Nm, M = c.M, dm = c.dm();
  const int64_t nc = (T + c.C - 1) / c.C;
  const std::string pre = "layers." + std::to_string(l) + ".";
  auto P = [&](const char *n) -> const Tensor<S> & { return p.at(pre + n); };
  const double scale = 1.0 / std::sqrt(double(dm));

  LayerOut<S> out;
  out.y = Tensor<S>({B, T, D});
  out.h = Tensor<S>({B, D});
  out.mem = Tensor<S>({B, Nm, M, dm});
  out.gamma = Tensor<S>({B, T, D});

  for (int64_t b = 0; b < B; ++b) {
    // u, q, k, v, z, ℓ, γ for every token.
    std::vector<std::vector<S>> q(T), k(T), v(T), z(T), gamma(T);
    for (int64_t t = 0; t < T; ++t) {
      const S *xt = &x[(b * T + t) * D];
      std::vector<S> u = rmsNorm(xt, D, P("w_in").data.data(), c.eps);
      q[t] = rowTimes(u.data(), P("W_q"), D, D);
      k[t] = rowTimes(u.data(), P("W_k"), D, D);
      v[t] = rowTimes(u.data(), P("W_v"), D, D);
      z[t] = rowTimes(u.data(), P("W_z"), D, D);
      std::vector<S> a = rowTimes(u.data(), P("A_gamma"), D, c.r);
      std::vector<S> preG = rowTimes(a.data(), P("B_gamma"), c.r, D, &P("lambda"));
      gamma[t].resize(size_t(D));
      for (int64_t j = 0; j < D; ++j) {
        S ell = clampS(logSigmoid(preG[size_t(j)]), c.clampMin, c.clampMax);
        gamma[t][size_t(j)] = exp(ell);
        out.gamma[(b * T + t) * D + j] = gamma[t][size_t(j)];
      }
    }

    // Level 0: h_t = z_t ⊙ σ(h_{t-1}·W_g + b_g) + γ_t ⊙ h_{t-1}.
    std::vector<std::vector<S>> hs(T);
    std::vector<S> h(&h0[b * D], &h0[b * D] + D);
    for (int64_t t = 0; t < T; ++t) {
      std::vector<S> pg(static_cast<size_t>(D));
      if (c.denseGate) {
        pg = rowTimes(h.data(), P("W_g"), D, D, &P("b_g"));
      } else {
        const int64_t dh = c.dh();
        for (int64_t hd = 0; hd < c.H; ++hd)
          for (int64_t j = 0; j < dh; ++j) {
            S acc = P("b_g")[hd * dh + j];
            for (int64_t i = 0; i < dh; ++i)
              acc += h[size_t(hd * dh + i)] * P("W_g")[(hd * dh + i) * dh + j];
            pg[size_t(hd * dh + j)] = acc;
          }
      }
      std::vector<S> hn(static_cast<size_t>(D));
      for (int64_t j = 0; j < D; ++j)
        hn[size_t(j)] = z[t][size_t(j)] * sigmoid(pg[size_t(j)]) +
                        gamma[t][size_t(j)] * h[size_t(j)];
      h = hn;
      hs[t] = h;
    }
    for (int64_t j = 0; j < D; ++j) out.h[b * D + j] = h[size_t(j)];

    std::vector<std::vector<S>> o(T, std::vector<S>(size_t(D), S(0.0)));
    for (int64_t m = 0; m < Nm; ++m) {
      const int64_t off = m * dm;
      // ω = softmax(ρ_m).
      std::vector<S> omega = {P("rho")[m * 3], P("rho")[m * 3 + 1], P("rho")[m * 3 + 2]};
      softmax(omega);

      // Level 1: chunk means and the causal read over completed chunks.
      std::vector<std::vector<S>> K1(nc, std::vector<S>(size_t(dm), S(0.0))), V1 = K1;
      for (int64_t ch = 0; ch < nc; ++ch) {
        int64_t t0 = ch * c.C, t1 = std::min(T, t0 + c.C);
        for (int64_t t = t0; t < t1; ++t)
          for (int64_t i = 0; i < dm; ++i) {
            K1[ch][size_t(i)] += k[t][size_t(off + i)];
            V1[ch][size_t(i)] += v[t][size_t(off + i)];
          }
        for (int64_t i = 0; i < dm; ++i) {
          K1[ch][size_t(i)] = K1[ch][size_t(i)] / S(double(t1 - t0));
          V1[ch][size_t(i)] = V1[ch][size_t(i)] / S(double(t1 - t0));
        }
      }

      // Level 2: write addresses, masses, values, decays; the memory scan.
      const Tensor<S> &Sk = P("S");
      auto slotScores = [&](const std::vector<S> &vec) {
        std::vector<S> sc(static_cast<size_t>(M));
        for (int64_t s = 0; s < M; ++s) {
          S acc(0.0);
          for (int64_t i = 0; i < dm; ++i) acc += vec[size_t(off + i)] * Sk[(m * M + s) * dm + i];
          sc[size_t(s)] = acc * S(scale);
        }
        softmax(sc);
        return sc;
      };
      // mems[ch] = Mem after chunk ch; memBefore(ch) = Mem_{ch-1}.
      std::vector<std::vector<S>> mems(nc, std::vector<S>(size_t(M * dm)));
      std::vector<S> cur(static_cast<size_t>(M * dm));
      for (int64_t s = 0; s < M; ++s)
        for (int64_t i = 0; i < dm; ++i)
          cur[size_t(s * dm + i)] = mem0[((b * Nm + m) * M + s) * dm + i];
      std::vector<S> init = cur;
      for (int64_t ch = 0; ch < nc; ++ch) {
        int64_t t0 = ch * c.C, t1 = std::min(T, t0 + c.C);
        std::vector<S> n(static_cast<size_t>(M), S(0.0));
        std::vector<S> wv(static_cast<size_t>(M * dm), S(0.0));
        for (int64_t t = t0; t < t1; ++t) {
          std::vector<S> w = slotScores(k[t]);
          for (int64_t s = 0; s < M; ++s) {
            n[size_t(s)] += w[size_t(s)];
            for (int64_t i = 0; i < dm; ++i)
              wv[size_t(s * dm + i)] += w[size_t(s)] * v[t][size_t(off + i)];
          }
        }
        for (int64_t s = 0; s < M; ++s) {
          S denom = val(n[size_t(s)]) > 1e-6 ? n[size_t(s)] : S(1e-6);
          S logBeta = clampS(n[size_t(s)] * logSigmoid(P("mu")[m * M + s]), c.clampMin, 0.0);
          S beta = exp(logBeta);
          for (int64_t i = 0; i < dm; ++i) {
            S U = wv[size_t(s * dm + i)] / denom;
            cur[size_t(s * dm + i)] = beta * cur[size_t(s * dm + i)] + (S(1.0) - beta) * U;
          }
        }
        mems[ch] = cur;
      }
      for (int64_t s = 0; s < M; ++s)
        for (int64_t i = 0; i < dm; ++i)
          out.mem[((b * Nm + m) * M + s) * dm + i] = cur[size_t(s * dm + i)];

      // Reads and the combination.
      for (int64_t t = 0; t < T; ++t) {
        int64_t ct = t / c.C;
        // GroupRMSNorm(h_t) over this group.
        std::vector<S> hn = rmsNorm(&hs[t][size_t(off)], dm, static_cast<const S *>(nullptr), c.eps);
        std::vector<S> y1(static_cast<size_t>(dm), S(0.0));
        if (ct > 0) {
          std::vector<S> sc(static_cast<size_t>(ct));
          for (int64_t cp = 0; cp < ct; ++cp) {
            S acc(0.0);
            for (int64_t i = 0; i < dm; ++i) acc += q[t][size_t(off + i)] * K1[cp][size_t(i)];
            sc[size_t(cp)] = acc * S(scale);
          }
          softmax(sc);
          for (int64_t cp = 0; cp < ct; ++cp)
            for (int64_t i = 0; i < dm; ++i) y1[size_t(i)] += sc[size_t(cp)] * V1[cp][size_t(i)];
        }
        std::vector<S> a = slotScores(q[t]);
        const std::vector<S> &memPrev = ct == 0 ? init : mems[ct - 1];
        for (int64_t i = 0; i < dm; ++i) {
          S y2(0.0);
          for (int64_t s = 0; s < M; ++s) y2 += a[size_t(s)] * memPrev[size_t(s * dm + i)];
          o[t][size_t(off + i)] = omega[0] * hn[size_t(i)] + omega[1] * y1[size_t(i)] + omega[2] * y2;
        }
      }
    }

    // Output projection, residual and the SwiGLU FFN.
    for (int64_t t = 0; t < T; ++t) {
      std::vector<S> ao = rowTimes(o[t].data(), P("W_o"), D, D);
      std::vector<S> x1(static_cast<size_t>(D));
      for (int64_t j = 0; j < D; ++j) x1[size_t(j)] = x[(b * T + t) * D + j] + ao[size_t(j)];
      std::vector<S> u2 = rmsNorm(x1.data(), D, P("w_ffn").data.data(), c.eps);
      std::vector<S> f1 = rowTimes(u2.data(), P("W_1"), D, c.F);
      std::vector<S> f3 = rowTimes(u2.data(), P("W_3"), D, c.F);
      std::vector<S> act(static_cast<size_t>(c.F));
      for (int64_t j = 0; j < c.F; ++j)
        act[size_t(j)] = f1[size_t(j)] * sigmoid(f1[size_t(j)]) * f3[size_t(j)];
      std::vector<S> f2 = rowTimes(act.data(), P("W_2"), c.F, D);
      for (int64_t j = 0; j < D; ++j) out.y[(b * T + t) * D + j] = x1[size_t(j)] + f2[size_t(j)];
    }
  }
  return out;
}

//===----------------------------------------------------------------------===//
// The model
//===----------------------------------------------------------------------===//

template <class S>
S modelLoss(const Config &c, const Params<S> &p, const std::vector<int> &tokens, int64_t B,
            int64_t T) {
  if (int64_t(tokens.size()) != B * T)
    throw std::invalid_argument("modelLoss: tokens must hold B*T ids");
  const int64_t D = c.D;
  const Tensor<S> &E = p.at("embed");
  Tensor<S> x({B, T, D});
  for (int64_t i = 0; i < B * T; ++i) {
    int id = tokens[size_t(i)];
    if (id < 0 || id >= c.V)
      throw std::out_of_range("modelLoss: token id " + std::to_string(id) + " outside [0, V)");
    for (int64_t j = 0; j < D; ++j) x[i * D + j] = E[id * D + j];
  }
  for (int l = 0; l < c.L; ++l) {
    Tensor<S> h0({B, D}), mem0({B, c.Nm, c.M, c.dm()});
    x = layerForward(c, p, l, x, h0, mem0).y;
  }
  S total(0.0);
  int64_t count = 0;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t + 1 < T; ++t) {
      std::vector<S> xf = rmsNorm(&x[(b * T + t) * D], D, p.at("final_norm").data.data(), c.eps);
      std::vector<S> logits(static_cast<size_t>(c.V));
      double m = -INFINITY;
      for (int64_t v = 0; v < c.V; ++v) {
        S acc(0.0);
        for (int64_t j = 0; j < D; ++j) acc += xf[size_t(j)] * E[v * D + j];
        logits[size_t(v)] = acc;
        m = std::max(m, val(acc));
      }
      S sum(0.0);
      for (auto &lg : logits) sum += exp(lg - S(m));
      int target = tokens[size_t(b * T + t + 1)];
      total += (log(sum) + S(m)) - logits[size_t(target)];
      ++count;
    }
  return count ? total / S(double(count)) : S(0.0);
}

template LayerOut<double> layerForward(const Config &, const Params<double> &, int,
                                       const Tensor<double> &, const Tensor<double> &,
                                       const Tensor<double> &);
template LayerOut<Var> layerForward(const Config &, const Params<Var> &, int, const Tensor<Var> &,
                                    const Tensor<Var> &, const Tensor<Var> &);
template double modelLoss(const Config &, const Params<double> &, const std::vector<int> &,
                          int64_t, int64_t);
template Var modelLoss(const Config &, const Params<Var> &, const std::vector<int> &, int64_t,
                       int64_t);

Params<double> modelGrads(const Config &c, const Params<double> &p,
                          const std::vector<int> &tokens, int64_t B, int64_t T, double *loss) {
  Tape &tape = Tape::get();
  tape.clear();
  Params<Var> pv = toVar(p);
  Var L = modelLoss(c, pv, tokens, B, T);
  tape.backward(L.id);
  if (loss) *loss = L.v;
  Params<double> g;
  for (auto &[name, t] : pv) {
    Tensor<double> gt(t.shape);
    for (int64_t i = 0; i < t.numel(); ++i) gt[i] = t[i].grad();
    g[name] = std::move(gt);
  }
  tape.clear();
  return g;
}

LayerGrads layerGrads(const Config &c, const Params<double> &p, int l, const Tensor<double> &x,
                      const Tensor<double> &h0, const Tensor<double> &mem0,
                      const Tensor<double> &wy, const Tensor<double> &wh,
                      const Tensor<double> &wm) {
  Tape &tape = Tape::get();
  tape.clear();
  Params<Var> pv = toVar(p);
  Tensor<Var> xv = toVar(x), hv = toVar(h0), mv = toVar(mem0);
  LayerOut<Var> out = layerForward(c, pv, l, xv, hv, mv);
  Var L(0.0);
  for (int64_t i = 0; i < out.y.numel(); ++i) L += out.y[i] * Var(wy[i]);
  for (int64_t i = 0; i < out.h.numel(); ++i) L += out.h[i] * Var(wh[i]);
  for (int64_t i = 0; i < out.mem.numel(); ++i) L += out.mem[i] * Var(wm[i]);
  tape.backward(L.id);
  auto grads = [](const Tensor<Var> &t) {
    Tensor<double> g(t.shape);
    for (int64_t i = 0; i < t.numel(); ++i) g[i] = t[i].grad();
    return g;
  };
  LayerGrads r;
  const std::string pre = "layers." + std::to_string(l) + ".";
  for (auto &[name, t] : pv)
    if (name.rfind(pre, 0) == 0) r.params[name] = grads(t);
  r.x = grads(xv);
  r.h0 = grads(hv);
  r.mem0 = grads(mv);
  tape.clear();
  return r;
}

} // namespace mmrec::ref
