//===- Oracle.h - the float64 oracle of MMREC_SPEC --------------*- C++ -*-===//
//
// A plain, sequential, double-precision implementation of
// /work/shared/MMREC_SPEC.md ("the spec"): the judge for every kernel, for
// the compiler's generated code and for the trainer. It shares nothing with
// the compiler and depends only on the C++17 standard library.
//
// Design
// ------
// * Tensors are row-major `std::vector<double>` with a shape (`Tensor`).
//   Layouts: x, q, k, v, z, γ, h (B, T, D); h0 (B, D); Mem (B, N_m, M, d_m);
//   per-chunk quantities (B, n_c, ...) with n_c = ⌈T / C⌉.
// * The spec is built from composable primitives. Every primitive has a
//   forward function `f(...)` and an exact vector-Jacobian product
//   `fBackward(forward inputs..., dL/d outputs)` that returns dL/d inputs.
//   Backward functions recompute whatever forward values they need from the
//   forward inputs, so each can be called on its own by a kernel test.
//   Gradients of outputs that a caller does not care about may be passed as
//   empty tensors (`Tensor{}`), which mean zeros.
// * `layerForward` composes the primitives exactly in the order of spec
//   section 2 and keeps every intermediate in a `LayerCache`;
//   `layerBackward` walks the same composition in reverse. `modelForward` /
//   `modelBackward` do the same for section 3 (tied embeddings, mean
//   next-token cross-entropy).
// * Gradients are the exact derivatives of the forward as written: no
//   truncation through time (level 0 back-propagates through every step,
//   level 2 through every chunk and into Mem_{-1}), no approximations.
//   Convention: a clamp passes no gradient where it is active (value
//   strictly outside [lo, hi]); exactly on a bound the gradient passes.
//   max(n, 1e-6) passes the gradient to n only where n > 1e-6.
// * Readable rather than fast: plain loops, no blocking, no threads. Use
//   small problems.
//
// Choices that the spec leaves open are marked "Convention:" next to the
// declaration they concern.
//
//===----------------------------------------------------------------------===//

#ifndef MMREC_REFERENCE_ORACLE_H
#define MMREC_REFERENCE_ORACLE_H

#include <cstdint>
#include <initializer_list>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace mmrec::ref {

//===----------------------------------------------------------------------===//
// Configuration (spec section 1) and parameter count (section 6)
//===----------------------------------------------------------------------===//

/// `Dense`: W_g is D×D. `PerHead`: W_g is block-diagonal, H blocks of dh×dh,
/// stored as (H, dh, dh); block `hd` maps channels [hd·dh, (hd+1)·dh).
enum class Gate { Dense, PerHead };

struct Config {
  std::string name = "custom";
  int64_t V = 0;    // vocab_size
  int64_t D = 0;    // hidden_dim
  int64_t L = 0;    // num_layers
  int64_t H = 1;    // num_heads
  int64_t Nm = 1;   // num_memories (N_m)
  int64_t M = 1;    // memory_size_M (slots per memory)
  int64_t F = 0;    // ffn_dim
  int64_t C = 1;    // chunk_size
  int64_t Tmax = 0; // max_seq_len (segment length; not used by the math)
  int64_t r = 0;    // decay_rank
  Gate gate = Gate::Dense;
  double decayInit = 0.99;
  double clampMin = -50.0; // log_clamp_min
  double clampMax = 0.0;   // log_clamp_max
  double eps = 1e-6;       // norm_eps
  // num_hds_levels = 3 and tie_embeddings = true are fixed by the spec.

  int64_t dm() const { return D / Nm; } // mem_dim d_m
  int64_t dh() const { return D / H; }  // head_dim
  /// Section 6, one layer: 4D² + D² + gate + D + 2Dr + D + M·D + N_m·M + 3N_m
  /// + 3DF + 2D, with gate = D² (dense) or D²/H (per_head).
  int64_t layerParamCount() const;
  /// Section 6: L·layerParamCount() + V·D + D.
  int64_t paramCount() const;
  /// Throws std::invalid_argument unless every size is positive and D is
  /// divisible by H and by N_m.
  void validate() const;

  static Config tiny();  // mmrec-tiny
  static Config small(); // mmrec-small
  static Config b7();    // mmrec-7b
  static Config custom(int64_t V, int64_t D, int64_t L, int64_t H, int64_t Nm, int64_t M,
                       int64_t F, int64_t C, int64_t r, Gate gate = Gate::Dense);
};

//===----------------------------------------------------------------------===//
// Tensor
//===----------------------------------------------------------------------===//

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<double> data;

  Tensor() = default;
  explicit Tensor(std::vector<int64_t> shape, double fill = 0.0);
  static Tensor zerosLike(const Tensor &t) { return Tensor(t.shape); }

  int64_t numel() const { return int64_t(data.size()); }
  int64_t rank() const { return int64_t(shape.size()); }
  /// Size of axis i; negative i counts from the end.
  int64_t dim(int64_t i) const;
  /// True for a default-constructed tensor ("absent": zeros by convention).
  bool empty() const { return shape.empty() && data.empty(); }

  double &operator[](int64_t i) { return data[size_t(i)]; }
  double operator[](int64_t i) const { return data[size_t(i)]; }
  /// Row-major element access with one index per axis (bounds asserted).
  template <class... I> double &at(I... idx) { return data[size_t(offset({int64_t(idx)...}))]; }
  template <class... I> double at(I... idx) const {
    return data[size_t(offset({int64_t(idx)...}))];
  }
  int64_t offset(std::initializer_list<int64_t> idx) const;
};

/// Elementwise a += b (a may be empty: it becomes a copy of b).
void addInto(Tensor &a, const Tensor &b);
/// Σ a_i b_i.
double dot(const Tensor &a, const Tensor &b);

//===----------------------------------------------------------------------===//
// Scalar functions (numerically stable on both sides)
//===----------------------------------------------------------------------===//

double sigmoid(double x);
double softplus(double x);    // log(1 + e^x)
double logSigmoid(double x);  // log σ(x) = -softplus(-x)
double silu(double x);        // x σ(x)

//===----------------------------------------------------------------------===//
// Generic primitives
//===----------------------------------------------------------------------===//

/// Y = A·W: A (..., K) as rows, W (K, N); Y (..., N).
Tensor matmul(const Tensor &A, const Tensor &W);
struct MatmulGrads {
  Tensor dA, dW;
};
MatmulGrads matmulBackward(const Tensor &A, const Tensor &W, const Tensor &dY);
/// Transpose of a 2-D tensor.
Tensor transpose(const Tensor &W);
/// Y = X + bias over the last axis (bias of size X.dim(-1)).
Tensor addBias(const Tensor &X, const Tensor &bias);

/// RMSNorm over the last axis: y = x / sqrt(mean(x²) + eps) ⊙ w. `w` empty:
/// no weight (and dw is returned empty).
Tensor rmsNorm(const Tensor &x, const Tensor &w, double eps);
struct RmsNormGrads {
  Tensor dx, dw;
};
RmsNormGrads rmsNormBackward(const Tensor &x, const Tensor &w, double eps, const Tensor &dy);

/// GroupRMSNorm: RMSNorm without weight over each group of `groupSize`
/// consecutive channels of the last axis.
Tensor groupRmsNorm(const Tensor &x, int64_t groupSize, double eps);
Tensor groupRmsNormBackward(const Tensor &x, int64_t groupSize, double eps, const Tensor &dy);

/// SwiGLU: silu(a) ⊙ b.
Tensor swiglu(const Tensor &a, const Tensor &b);
struct SwigluGrads {
  Tensor da, db;
};
SwigluGrads swigluBackward(const Tensor &a, const Tensor &b, const Tensor &dy);

/// Softmax over the last axis (max-subtracted).
Tensor softmax(const Tensor &x);
/// Backward from the softmax *output* y: dx = y ⊙ (dy − Σ y dy).
Tensor softmaxBackward(const Tensor &y, const Tensor &dy);

/// Mean cross-entropy of rows of `logits` (..., V) against `targets` (one per
/// row); rows whose target is negative are ignored. Convention: 0 when no
/// row counts.
double crossEntropy(const Tensor &logits, const std::vector<int> &targets);
/// d(dloss · crossEntropy)/d logits = dloss · (softmax − onehot) / count.
Tensor crossEntropyBackward(const Tensor &logits, const std::vector<int> &targets,
                            double dloss = 1.0);

//===----------------------------------------------------------------------===//
// MM-Rec primitives (spec section 2)
//===----------------------------------------------------------------------===//

/// Decay gate: ℓ = clamp(logσ(pre), lo, hi) elementwise.
Tensor decayGate(const Tensor &pre, double lo, double hi);
/// dpre = dℓ · σ(−pre) where lo ≤ logσ(pre) ≤ hi, 0 where the clamp is active.
Tensor decayGateBackward(const Tensor &pre, double lo, double hi, const Tensor &dl);

/// Log-space linear scan along axis 1:
///   h_t = exp(clamp(ℓ_t, lo, hi)) · h_{t-1} + b_t,   h_{-1} = h0 (zeros if empty)
/// `reverse`: t runs from T−1 down to 0 (h_{-1} then sits after T−1).
/// Shapes: ℓ (B, T, S...) and b (B, T, S..., E...): ℓ is broadcast over the
/// trailing `inner` = numel(b)/numel(ℓ) channels of b (inner = 1: one decay
/// per channel, the level-0 form; inner = d_m with S = (N_m, M): level 2).
/// h0 has numel B·numel(b)/(B·T) (its shape is not otherwise checked).
/// Returns every h (shape of b) and the final state (B, b.shape[2:]).
struct LinearScanOut {
  Tensor h, final;
};
LinearScanOut linearScan(const Tensor &logDecay, const Tensor &b, const Tensor &h0, double lo,
                         double hi, bool reverse = false);
/// Given dL/dh (every step; may be empty) and dL/dfinal (may be empty):
/// dℓ (shape of ℓ; 0 where the clamp is active), db, dh0 (B, b.shape[2:]).
struct LinearScanGrads {
  Tensor dLogDecay, db, dh0;
};
LinearScanGrads linearScanBackward(const Tensor &logDecay, const Tensor &b, const Tensor &h0,
                                   double lo, double hi, bool reverse, const Tensor &dh,
                                   const Tensor &dfinal);

/// Level 0, the nonlinear gated recurrence, sequential over t:
///   h_t = z_t ⊙ σ(h_{t-1}·W_g + b_g) + γ_t ⊙ h_{t-1},   h_{-1} = h0 (zeros if empty)
/// z, γ (B, T, D); W_g (D, D) for the dense gate or (H, dh, dh) for per_head
/// (the gate kind follows from W_g's rank); b_g (D); h0 (B, D).
/// Returns every h (B, T, D) and the final state h_{T-1} (B, D).
struct RecurrenceOut {
  Tensor h, final;
};
RecurrenceOut gatedRecurrence(const Tensor &z, const Tensor &gamma, const Tensor &Wg,
                              const Tensor &bg, const Tensor &h0);
/// Exact backpropagation through all T steps, from dL/dh (every step; may be
/// empty) and dL/dfinal (may be empty).
struct RecurrenceGrads {
  Tensor dz, dgamma, dWg, dbg, dh0;
};
RecurrenceGrads gatedRecurrenceBackward(const Tensor &z, const Tensor &gamma, const Tensor &Wg,
                                        const Tensor &bg, const Tensor &h0, const Tensor &dh,
                                        const Tensor &dfinal);

/// HDS level 1 for q, k, v (B, T, D) split into Nm groups of d_m, chunks of C:
///   K1_c = mean_{t∈c} k_t, V1_c = mean_{t∈c} v_t   (the last chunk may be
///   partial: mean over its present tokens; note that y1 only ever reads
///   completed chunks, so a partial chunk's K1, V1 never reach y1)
///   y1_t = Σ_{c'<c(t)} softmax_{c'}(q_t·K1_{c'}/√d_m) V1_{c'}, 0 in chunk 0.
/// Returns y1 (B, T, D) and K1, V1 (B, n_c, D).
struct Level1Out {
  Tensor y1, K1, V1;
};
Level1Out hdsLevel1(const Tensor &q, const Tensor &k, const Tensor &v, int64_t Nm, int64_t C);
struct Level1Grads {
  Tensor dq, dk, dv;
};
Level1Grads hdsLevel1Backward(const Tensor &q, const Tensor &k, const Tensor &v, int64_t Nm,
                              int64_t C, const Tensor &dy1);

/// HDS level 2, the MDI memory, for q, k, v (B, T, D); slot keys S (N_m, M,
/// d_m); decay logits μ (N_m, M); Mem_{-1} = m0 (B, N_m, M, d_m; zeros if
/// empty); chunks of C; logβ clamped to [clampMin, 0]:
///   w_t = softmax_s(k_t·S_s/√d_m), a_t = softmax_s(q_t·S_s/√d_m)
///   n_c = Σ_{t∈c} w_t, U_c = Σ_{t∈c} w_t v_t / max(n_c, 1e-6)
///   logβ_c = clamp(n_c·logσ(μ), clampMin, 0)   (0 as the spec writes it,
///            not log_clamp_max; the two agree in every configuration)
///   Mem_c = β_c ⊙ Mem_{c-1} + (1 − β_c) ⊙ U_c   (a linearScan over chunks with
///                                               ℓ = logβ broadcast over d_m)
///   y2_t = Σ_s a_{t,s} Mem_{c(t)-1}[s]
/// Convention: 1 − β is evaluated as −expm1(logβ) (the same number, without
/// cancellation when β ≈ 1). The recurrence is evaluated sequentially, so
/// there are no running sums Σ logβ to clamp (section 5): a kernel that
/// clamps those sums at log_clamp_min differs by at most e^-50·|Mem|.
/// Every intermediate is returned for kernel tests.
struct Level2Out {
  Tensor y2;       // (B, T, D)
  Tensor memFinal; // (B, N_m, M, d_m): Mem after the last (possibly partial) chunk
  Tensor w, a;     // (B, T, N_m, M): write and read addresses
  Tensor n;        // (B, n_c, N_m, M): write mass
  Tensor U;        // (B, n_c, N_m, M, d_m): written value
  Tensor logBeta;  // (B, n_c, N_m, M)
  Tensor mems;     // (B, n_c, N_m, M, d_m): Mem_c after chunk c
};
Level2Out hdsLevel2(const Tensor &q, const Tensor &k, const Tensor &v, const Tensor &S,
                    const Tensor &mu, const Tensor &m0, int64_t C, double clampMin);
/// From dL/dy2 (may be empty) and dL/dmemFinal (may be empty).
struct Level2Grads {
  Tensor dq, dk, dv, dS, dmu, dm0;
};
Level2Grads hdsLevel2Backward(const Tensor &q, const Tensor &k, const Tensor &v, const Tensor &S,
                              const Tensor &mu, const Tensor &m0, int64_t C, double clampMin,
                              const Tensor &dy2, const Tensor &dmemFinal);

/// The HDS combination: o_t = ω_0·GroupRMSNorm(h_t) + ω_1·y1_t + ω_2·y2_t per
/// group m, ω = softmax(ρ_m); h, y1, y2 (B, T, D); ρ (N_m, 3).
Tensor combine(const Tensor &h, const Tensor &y1, const Tensor &y2, const Tensor &rho,
               double eps);
struct CombineGrads {
  Tensor dh, dy1, dy2, drho;
};
CombineGrads combineBackward(const Tensor &h, const Tensor &y1, const Tensor &y2,
                             const Tensor &rho, double eps, const Tensor &dout);

//===----------------------------------------------------------------------===//
// Parameters (spec names; checkpoint names `embed`, `final_norm`,
// `layers.{l}.<name>`)
//===----------------------------------------------------------------------===//

struct LayerParams {
  Tensor w_in;    // (D)
  Tensor W_q, W_k, W_v, W_z; // (D, D) each
  Tensor A_gamma; // (D, r)
  Tensor B_gamma; // (r, D)
  Tensor lambda;  // (D)
  Tensor W_g;     // (D, D) dense, (H, dh, dh) per_head
  Tensor b_g;     // (D)
  Tensor S;       // (N_m, M, d_m)
  Tensor mu;      // (N_m, M)
  Tensor rho;     // (N_m, 3)
  Tensor W_o;     // (D, D)
  Tensor w_ffn;   // (D)
  Tensor W_1, W_3; // (D, F)
  Tensor W_2;     // (F, D)

  /// Every tensor with its name, in the order above (the spec's order).
  std::vector<std::pair<std::string, Tensor *>> named();
  std::vector<std::pair<std::string, const Tensor *>> named() const;
  /// All tensors of the shapes of `cfg`, filled with zeros.
  static LayerParams zeros(const Config &cfg);
};

struct ModelParams {
  Tensor embed; // E (V, D), tied with the output projection
  std::vector<LayerParams> layers;
  Tensor final_norm; // w_f (D)

  /// Every tensor by checkpoint name: `embed`, `layers.0.w_in`, ...,
  /// `layers.{L-1}.W_2`, `final_norm` (in this order).
  std::vector<std::pair<std::string, Tensor *>> named();
  std::vector<std::pair<std::string, const Tensor *>> named() const;
  /// The tensor of a checkpoint name (throws std::out_of_range if none).
  Tensor &get(const std::string &name);
  const Tensor &get(const std::string &name) const;
  int64_t numel() const;
  static ModelParams zeros(const Config &cfg);
};

/// Section 4's initialization: W_q, W_k, W_v, W_z, W_1, W_3, A_γ, W_g, S, E
/// ~ N(0, 0.02); W_o, W_2 ~ N(0, 0.02/√(2L)); b_g = B_γ = ρ = 0;
/// λ = μ = logit(decay_init); norm weights 1.
/// Convention: one std::mt19937_64(seed) stream and one
/// std::normal_distribution<double>(0, 1) whose draws are scaled by the
/// standard deviation, consumed in `named()` order, element by element.
ModelParams initModelParams(const Config &cfg, uint64_t seed);
/// One layer's initialization drawing from `rng` (in `named()` order).
LayerParams initLayerParams(const Config &cfg, std::mt19937_64 &rng);
/// For tests: adds U(−scale, scale) to every entry of every tensor (so B_γ,
/// ρ, b_g become nonzero and the decays input-dependent).
void randomize(LayerParams &p, uint64_t seed, double scale = 0.5);
void randomize(ModelParams &p, uint64_t seed, double scale = 0.5);

//===----------------------------------------------------------------------===//
// One layer (section 2) and the model (section 3)
//===----------------------------------------------------------------------===//

/// Every intermediate of one layer's forward, named as in section 2.
struct LayerCache {
  Tensor x, h0, mem0;       // inputs (h0, mem0 materialized: zeros if absent)
  Tensor u;                 // RMSNorm(x) ⊙ w_in
  Tensor q, k, v, z;        // u·W_{q,k,v,z}
  Tensor ua;                // u·A_γ (B, T, r)
  Tensor pre;               // λ + (u·A_γ)·B_γ
  Tensor ell, gamma;        // ℓ = clamp(logσ(pre)), γ = exp(ℓ)
  RecurrenceOut level0;     // h (B, T, D), final (B, D)
  Level1Out level1;
  Level2Out level2;
  Tensor o;                 // the combination (B, T, D)
  Tensor x1;                // x + o·W_o
  Tensor u2;                // RMSNorm(x1) ⊙ w_ffn
  Tensor f1, f3, g;         // u2·W_1, u2·W_3, silu(f1) ⊙ f3
};

struct LayerOut {
  Tensor y;        // (B, T, D)
  Tensor hFinal;   // (B, D)
  Tensor memFinal; // (B, N_m, M, d_m)
  LayerCache cache;
};

/// One layer on x (B, T, D) from states h0 (B, D) and mem0 (B, N_m, M, d_m);
/// empty states mean zeros (a document start).
LayerOut layerForward(const Config &cfg, const LayerParams &p, const Tensor &x,
                      const Tensor &h0 = Tensor{}, const Tensor &mem0 = Tensor{});

struct LayerGrads {
  LayerParams params; // dL/d every parameter
  Tensor dx, dh0, dmem0;
};
/// Gradients given dL/dy, dL/dhFinal and dL/dmemFinal (each may be empty).
LayerGrads layerBackward(const Config &cfg, const LayerParams &p, const LayerOut &fwd,
                         const Tensor &dy, const Tensor &dhFinal = Tensor{},
                         const Tensor &dmemFinal = Tensor{});

struct ModelOut {
  double loss = 0.0;
  int64_t B = 0, T = 0;
  std::vector<int> tokens;   // (B, T)
  std::vector<int> targets;  // (B, T): tokens[b, t+1], −1 at t = T−1
  Tensor x0;                 // E[tokens] (B, T, D)
  std::vector<LayerOut> layers;
  Tensor xf;                 // RMSNorm(x_L) ⊙ w_f
  Tensor logits;             // (B, T, V), every position (the last is not in the loss)
};

/// The model on tokens (B·T ids in [0, V), row-major): every layer from zero
/// states, tied output projection, loss = mean cross-entropy of positions
/// 0..T−2 predicting tokens 1..T−1 over all B sequences (0 when T = 1).
/// Throws std::invalid_argument / std::out_of_range on bad tokens.
ModelOut modelForward(const Config &cfg, const ModelParams &p, const std::vector<int> &tokens,
                      int64_t B, int64_t T);
/// Just the loss.
double modelLoss(const Config &cfg, const ModelParams &p, const std::vector<int> &tokens,
                 int64_t B, int64_t T);
/// d(dloss · loss)/d every parameter.
ModelParams modelBackward(const Config &cfg, const ModelParams &p, const ModelOut &fwd,
                          double dloss = 1.0);

} // namespace mmrec::ref

#endif // MMREC_REFERENCE_ORACLE_H
