//===- Oracle.h - the float64 oracle of MMREC_SPEC --------------*- C++ -*-===//
//
// A plain, sequential implementation of ../shared/MMREC_SPEC.md in double
// precision: one layer (section 2) and the model with its loss (section 3),
// readable rather than fast. It is the judge for every kernel and for the
// trainer, and deliberately shares nothing with the compiler.
//
// The forward is written once, over a scalar type S: `double` for values,
// `Var` (below) for gradients. `Var` records every scalar operation on a
// tape and `Tape::backward` applies the chain rule exactly, so the gradient
// of every parameter and input is the exact derivative of the forward as
// written (no truncation of the recurrent gradient, no approximation);
// clamps pass no gradient where they are active, as the spec says. The tape
// holds one node per scalar operation: use small problems.
//
// Layouts are row-major: x (B, T, D), h (B, D), Mem (B, N_m, M, d_m).
//
//===----------------------------------------------------------------------===//

#ifndef MMREC_REFERENCE_ORACLE_H
#define MMREC_REFERENCE_ORACLE_H

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace mmrec::ref {

//===----------------------------------------------------------------------===//
// Configuration (section 1) and parameter count (section 6)
//===----------------------------------------------------------------------===//

struct Config {
  std::string name;
  int64_t V, D, L, H, Nm, M, F, C, Tmax, r;
  bool denseGate = true;
  double decayInit = 0.99, clampMin = -50.0, clampMax = 0.0, eps = 1e-6;

  int64_t dm() const { return D / Nm; }
  int64_t dh() const { return D / H; }
  int64_t layerParamCount() const;
  int64_t paramCount() const;

  static Config tiny();
  static Config small();
  static Config b7();
};

//===----------------------------------------------------------------------===//
// Reverse-mode scalar
//===----------------------------------------------------------------------===//

/// The tape of the current thread. A node has up to two parents and the
/// partial derivative of its value with respect to each.
class Tape {
public:
  struct Node {
    int a, b;
    double da, db;
  };
  static Tape &get();
  int push(int a, double da, int b, double db);
  void clear() { nodes_.clear(); grads_.clear(); }
  size_t size() const { return nodes_.size(); }
  /// Back-propagates d(output)/d(output) = 1 from node `out`.
  void backward(int out);
  double grad(int id) const { return id < int(grads_.size()) ? grads_[id] : 0.0; }

private:
  std::vector<Node> nodes_;
  std::vector<double> grads_;
};

struct Var {
  double v = 0.0;
  int id = -1; // -1: a constant
  Var() = default;
  Var(double x) : v(x) {}
  static Var input(double x) {
    Var r(x);
    r.id = Tape::get().push(-1, 0, -1, 0);
    return r;
  }
  double grad() const { return id < 0 ? 0.0 : Tape::get().grad(id); }
};

Var operator+(const Var &x, const Var &y);
Var operator-(const Var &x, const Var &y);
Var operator*(const Var &x, const Var &y);
Var operator/(const Var &x, const Var &y);
Var operator-(const Var &x);
inline Var &operator+=(Var &x, const Var &y) { return x = x + y; }
Var exp(const Var &x);
Var log(const Var &x);
Var log1p(const Var &x);
Var sqrt(const Var &x);
inline double val(double x) { return x; }
inline double val(const Var &x) { return x.v; }

//===----------------------------------------------------------------------===//
// Tensors and parameters
//===----------------------------------------------------------------------===//

template <class S> struct Tensor {
  std::vector<int64_t> shape;
  std::vector<S> data;
  Tensor() = default;
  explicit Tensor(std::vector<int64_t> s, S fill = S(0.0)) : shape(std::move(s)) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    data.assign(size_t(n), fill);
  }
  int64_t numel() const { return int64_t(data.size()); }
  S &operator[](int64_t i) { return data[size_t(i)]; }
  const S &operator[](int64_t i) const { return data[size_t(i)]; }
};

/// Parameters by their checkpoint names: `embed`, `final_norm`,
/// `layers.{l}.W_q`, ... (section 2's names; W_g is (H, dh, dh) for
/// gate = per_head).
template <class S> using Params = std::map<std::string, Tensor<S>>;

/// The shape of every parameter of `cfg`, by checkpoint name.
std::map<std::string, std::vector<int64_t>> paramShapes(const Config &cfg);
/// The per-layer parameter names, in the order of section 2.
const std::vector<std::string> &layerParamNames();

/// Section 4's seeded initialization.
Params<double> initParams(const Config &cfg, uint64_t seed);
/// Random values everywhere (B_γ, ρ, b_g nonzero, ...) for gradient tests.
Params<double> randomParams(const Config &cfg, uint64_t seed, double scale = 0.3);

//===----------------------------------------------------------------------===//
// The layer and the model
//===----------------------------------------------------------------------===//

template <class S> struct LayerOut {
  Tensor<S> y;      // (B, T, D)
  Tensor<S> h;      // (B, D): h after the last step
  Tensor<S> mem;    // (B, N_m, M, d_m): Mem after the last chunk
  Tensor<S> gamma;  // (B, T, D): the decays, for inspection
};

/// One layer (section 2) for layer index `l` of `p`.
template <class S>
LayerOut<S> layerForward(const Config &cfg, const Params<S> &p, int l, const Tensor<S> &x,
                         const Tensor<S> &h0, const Tensor<S> &mem0);

/// Mean next-token cross-entropy of the model on tokens (B, T): positions
/// 0..T-2 predict tokens 1..T-1; every sequence starts from zero states.
template <class S>
S modelLoss(const Config &cfg, const Params<S> &p, const std::vector<int> &tokens, int64_t B,
            int64_t T);

/// Gradients of `modelLoss` with respect to every parameter (same names).
Params<double> modelGrads(const Config &cfg, const Params<double> &p,
                          const std::vector<int> &tokens, int64_t B, int64_t T, double *loss);

/// Gradients of L = Σ wy·y + Σ wh·h_final + Σ wm·mem_final of one layer.
struct LayerGrads {
  Params<double> params;
  Tensor<double> x, h0, mem0;
};
LayerGrads layerGrads(const Config &cfg, const Params<double> &p, int l, const Tensor<double> &x,
                      const Tensor<double> &h0, const Tensor<double> &mem0,
                      const Tensor<double> &wy, const Tensor<double> &wh,
                      const Tensor<double> &wm);

/// Converts parameters between scalar types (Var::input for every entry).
Params<Var> toVar(const Params<double> &p);
Tensor<Var> toVar(const Tensor<double> &t);

} // namespace mmrec::ref

#endif // MMREC_REFERENCE_ORACLE_H
