//===- Oracle.cpp - configuration, tensors, parameters ------------------===//
//
// The configuration and parameter count of MMREC_SPEC (sections 1 and 6),
// the Tensor type, stable scalar functions, and the parameters with their
// section-4 initialization. The primitives are in Primitives.cpp, the layer
// and the model in Layer.cpp.
//
//===----------------------------------------------------------------------===//

#include "Reference/Oracle.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <stdexcept>

namespace mmrec::ref {

//===----------------------------------------------------------------------===//
// Configuration
//===----------------------------------------------------------------------===//

int64_t Config::layerParamCount() const {
  const int64_t gateParams = gate == Gate::Dense ? D * D : D * D / H;
  return 4 * D * D        // W_q, W_k, W_v, W_z
         + D * D          // W_o
         + gateParams     // W_g
         + D              // b_g
         + 2 * D * r      // A_γ, B_γ
         + D              // λ
         + M * D          // S: N_m · M · d_m
         + Nm * M         // μ
         + 3 * Nm         // ρ
         + 3 * D * F      // W_1, W_3, W_2
         + 2 * D;         // w_in, w_ffn
}

int64_t Config::paramCount() const { return L * layerParamCount() + V * D + D; }

void Config::validate() const {
  if (V <= 0 || D <= 0 || L <= 0 || H <= 0 || Nm <= 0 || M <= 0 || F <= 0 || C <= 0 || r <= 0)
    throw std::invalid_argument("Config " + name + ": every size must be positive");
  if (D % H != 0)
    throw std::invalid_argument("Config " + name + ": D must be divisible by H");
  if (D % Nm != 0)
    throw std::invalid_argument("Config " + name + ": D must be divisible by N_m");
  if (!(clampMin <= clampMax))
    throw std::invalid_argument("Config " + name + ": log_clamp_min > log_clamp_max");
}

Config Config::custom(int64_t V, int64_t D, int64_t L, int64_t H, int64_t Nm, int64_t M,
                      int64_t F, int64_t C, int64_t r, Gate gate) {
  Config c;
  c.V = V, c.D = D, c.L = L, c.H = H, c.Nm = Nm, c.M = M, c.F = F, c.C = C, c.r = r;
  c.gate = gate;
  c.Tmax = 0;
  return c;
}

Config Config::tiny() {
  Config c = custom(256, 128, 2, 4, 2, 32, 384, 16, 16);
  c.name = "mmrec-tiny";
  c.Tmax = 256;
  return c;
}

Config Config::small() {
  Config c = custom(32000, 768, 12, 12, 4, 256, 2048, 64, 64);
  c.name = "mmrec-small";
  c.Tmax = 4096;
  return c;
}

Config Config::b7() {
  Config c = custom(32000, 4096, 24, 32, 8, 1024, 11008, 128, 128);
  c.name = "mmrec-7b";
  c.Tmax = 32768;
  return c;
}

//===----------------------------------------------------------------------===//
// Tensor
//===----------------------------------------------------------------------===//

Tensor::Tensor(std::vector<int64_t> s, double fill) : shape(std::move(s)) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0)
      throw std::invalid_argument("Tensor: negative dimension");
    n *= d;
  }
  data.assign(size_t(n), fill);
}

int64_t Tensor::dim(int64_t i) const {
  if (i < 0)
    i += rank();
  if (i < 0 || i >= rank())
    throw std::out_of_range("Tensor::dim: axis out of range");
  return shape[size_t(i)];
}

int64_t Tensor::offset(std::initializer_list<int64_t> idx) const {
  assert(int64_t(idx.size()) == rank() && "Tensor::at: one index per axis");
  int64_t off = 0, axis = 0;
  for (int64_t i : idx) {
    assert(i >= 0 && i < shape[size_t(axis)] && "Tensor::at: index out of range");
    off = off * shape[size_t(axis)] + i;
    ++axis;
  }
  return off;
}

void addInto(Tensor &a, const Tensor &b) {
  if (b.empty())
    return;
  if (a.empty()) {
    a = b;
    return;
  }
  if (a.numel() != b.numel())
    throw std::invalid_argument("addInto: size mismatch");
  for (int64_t i = 0; i < a.numel(); ++i) a[i] += b[i];
}

double dot(const Tensor &a, const Tensor &b) {
  if (a.numel() != b.numel())
    throw std::invalid_argument("dot: size mismatch");
  double s = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) s += a[i] * b[i];
  return s;
}

//===----------------------------------------------------------------------===//
// Scalar functions
//===----------------------------------------------------------------------===//

double sigmoid(double x) {
  if (x >= 0)
    return 1.0 / (1.0 + std::exp(-x));
  double e = std::exp(x);
  return e / (1.0 + e);
}

double softplus(double x) { return std::max(x, 0.0) + std::log1p(std::exp(-std::fabs(x))); }

double logSigmoid(double x) { return -softplus(-x); }

double silu(double x) { return x * sigmoid(x); }

//===----------------------------------------------------------------------===//
// Parameters
//===----------------------------------------------------------------------===//

std::vector<std::pair<std::string, Tensor *>> LayerParams::named() {
  return {{"w_in", &w_in},       {"W_q", &W_q},     {"W_k", &W_k},         {"W_v", &W_v},
          {"W_z", &W_z},         {"A_gamma", &A_gamma}, {"B_gamma", &B_gamma},
          {"lambda", &lambda},   {"W_g", &W_g},     {"b_g", &b_g},         {"S", &S},
          {"mu", &mu},           {"rho", &rho},     {"W_o", &W_o},         {"w_ffn", &w_ffn},
          {"W_1", &W_1},         {"W_3", &W_3},     {"W_2", &W_2}};
}

std::vector<std::pair<std::string, const Tensor *>> LayerParams::named() const {
  std::vector<std::pair<std::string, const Tensor *>> out;
  for (auto &[name, t] : const_cast<LayerParams *>(this)->named()) out.push_back({name, t});
  return out;
}

LayerParams LayerParams::zeros(const Config &c) {
  c.validate();
  LayerParams p;
  p.w_in = Tensor({c.D});
  p.W_q = Tensor({c.D, c.D});
  p.W_k = Tensor({c.D, c.D});
  p.W_v = Tensor({c.D, c.D});
  p.W_z = Tensor({c.D, c.D});
  p.A_gamma = Tensor({c.D, c.r});
  p.B_gamma = Tensor({c.r, c.D});
  p.lambda = Tensor({c.D});
  p.W_g = c.gate == Gate::Dense ? Tensor({c.D, c.D}) : Tensor({c.H, c.dh(), c.dh()});
  p.b_g = Tensor({c.D});
  p.S = Tensor({c.Nm, c.M, c.dm()});
  p.mu = Tensor({c.Nm, c.M});
  p.rho = Tensor({c.Nm, 3});
  p.W_o = Tensor({c.D, c.D});
  p.w_ffn = Tensor({c.D});
  p.W_1 = Tensor({c.D, c.F});
  p.W_3 = Tensor({c.D, c.F});
  p.W_2 = Tensor({c.F, c.D});
  return p;
}

std::vector<std::pair<std::string, Tensor *>> ModelParams::named() {
  std::vector<std::pair<std::string, Tensor *>> out{{"embed", &embed}};
  for (size_t l = 0; l < layers.size(); ++l)
    for (auto &[name, t] : layers[l].named())
      out.push_back({"layers." + std::to_string(l) + "." + name, t});
  out.push_back({"final_norm", &final_norm});
  return out;
}

std::vector<std::pair<std::string, const Tensor *>> ModelParams::named() const {
  std::vector<std::pair<std::string, const Tensor *>> out;
  for (auto &[name, t] : const_cast<ModelParams *>(this)->named()) out.push_back({name, t});
  return out;
}

Tensor &ModelParams::get(const std::string &name) {
  for (auto &[n, t] : named())
    if (n == name)
      return *t;
  throw std::out_of_range("ModelParams: no parameter named " + name);
}

const Tensor &ModelParams::get(const std::string &name) const {
  return const_cast<ModelParams *>(this)->get(name);
}

int64_t ModelParams::numel() const {
  int64_t n = 0;
  for (auto &[name, t] : named()) n += t->numel();
  return n;
}

ModelParams ModelParams::zeros(const Config &c) {
  ModelParams p;
  p.embed = Tensor({c.V, c.D});
  for (int64_t l = 0; l < c.L; ++l) p.layers.push_back(LayerParams::zeros(c));
  p.final_norm = Tensor({c.D});
  return p;
}

namespace {

/// Standard normal draws from one stream, scaled per tensor.
struct NormalSource {
  std::mt19937_64 &rng;
  std::normal_distribution<double> n{0.0, 1.0};
  void fill(Tensor &t, double stddev) {
    for (double &x : t.data) x = stddev * n(rng);
  }
};

void fillConstant(Tensor &t, double value) {
  for (double &x : t.data) x = value;
}

LayerParams initLayer(const Config &c, NormalSource &src) {
  LayerParams p = LayerParams::zeros(c);
  const double logitInit = std::log(c.decayInit / (1.0 - c.decayInit));
  const double outStd = 0.02 / std::sqrt(2.0 * double(c.L));
  // Drawn in named() order; constants draw nothing.
  fillConstant(p.w_in, 1.0);
  src.fill(p.W_q, 0.02);
  src.fill(p.W_k, 0.02);
  src.fill(p.W_v, 0.02);
  src.fill(p.W_z, 0.02);
  src.fill(p.A_gamma, 0.02);
  fillConstant(p.B_gamma, 0.0);
  fillConstant(p.lambda, logitInit);
  src.fill(p.W_g, 0.02);
  fillConstant(p.b_g, 0.0);
  src.fill(p.S, 0.02);
  fillConstant(p.mu, logitInit);
  fillConstant(p.rho, 0.0);
  src.fill(p.W_o, outStd);
  fillConstant(p.w_ffn, 1.0);
  src.fill(p.W_1, 0.02);
  src.fill(p.W_3, 0.02);
  src.fill(p.W_2, outStd);
  return p;
}

void perturb(Tensor &t, std::mt19937_64 &rng, double scale) {
  std::uniform_real_distribution<double> u(-scale, scale);
  for (double &x : t.data) x += u(rng);
}

} // namespace

LayerParams initLayerParams(const Config &c, std::mt19937_64 &rng) {
  NormalSource src{rng};
  return initLayer(c, src);
}

ModelParams initModelParams(const Config &c, uint64_t seed) {
  c.validate();
  std::mt19937_64 rng(seed);
  NormalSource src{rng};
  ModelParams p;
  p.embed = Tensor({c.V, c.D});
  src.fill(p.embed, 0.02);
  for (int64_t l = 0; l < c.L; ++l) p.layers.push_back(initLayer(c, src));
  p.final_norm = Tensor({c.D}, 1.0);
  return p;
}

void randomize(LayerParams &p, uint64_t seed, double scale) {
  std::mt19937_64 rng(seed);
  for (auto &[name, t] : p.named()) perturb(*t, rng, scale);
}

void randomize(ModelParams &p, uint64_t seed, double scale) {
  std::mt19937_64 rng(seed);
  for (auto &[name, t] : p.named()) perturb(*t, rng, scale);
}

} // namespace mmrec::ref
