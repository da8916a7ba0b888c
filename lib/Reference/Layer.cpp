//===- Layer.cpp - one MM-Rec layer and the model, forward and backward -===//
//
// Spec section 2 (one layer) and section 3 (the model and its loss) composed
// from the primitives of Primitives.cpp. The backward functions visit the
// same steps in reverse order, each through its primitive's backward.
//
//===----------------------------------------------------------------------===//

#include "Reference/Oracle.h"

#include <cmath>
#include <stdexcept>

namespace mmrec::ref {

namespace {

void require(bool ok, const std::string &what) {
  if (!ok)
    throw std::invalid_argument("mmrec::ref: " + what);
}

Tensor statesOrZeros(const Tensor &t, std::vector<int64_t> shape, const char *what) {
  Tensor z(std::move(shape));
  if (t.empty())
    return z;
  require(t.numel() == z.numel(), std::string(what) + " has the wrong size");
  z.data = t.data;
  return z;
}

Tensor add(const Tensor &a, const Tensor &b) {
  Tensor r = a;
  addInto(r, b);
  return r;
}

/// Sum over every axis but the last: the gradient of a broadcast bias.
Tensor sumRows(const Tensor &x) {
  const int64_t n = x.dim(-1);
  Tensor s({n});
  for (int64_t i = 0; i < x.numel(); ++i) s[i % n] += x[i];
  return s;
}

} // namespace

//===----------------------------------------------------------------------===//
// One layer
//===----------------------------------------------------------------------===//

LayerOut layerForward(const Config &cfg, const LayerParams &p, const Tensor &x, const Tensor &h0,
                      const Tensor &mem0) {
  cfg.validate();
  require(x.rank() == 3 && x.dim(2) == cfg.D, "layerForward: x must be (B, T, D)");
  const int64_t B = x.dim(0);
  LayerOut out;
  LayerCache &c = out.cache;
  c.x = x;
  c.h0 = statesOrZeros(h0, {B, cfg.D}, "h0");
  c.mem0 = statesOrZeros(mem0, {B, cfg.Nm, cfg.M, cfg.dm()}, "mem0");

  // Input norm, projections and the decay gate.
  c.u = rmsNorm(x, p.w_in, cfg.eps);
  c.q = matmul(c.u, p.W_q);
  c.k = matmul(c.u, p.W_k);
  c.v = matmul(c.u, p.W_v);
  c.z = matmul(c.u, p.W_z);
  c.ua = matmul(c.u, p.A_gamma);
  c.pre = addBias(matmul(c.ua, p.B_gamma), p.lambda);
  c.ell = decayGate(c.pre, cfg.clampMin, cfg.clampMax);
  c.gamma = Tensor::zerosLike(c.ell);
  for (int64_t i = 0; i < c.ell.numel(); ++i) c.gamma[i] = std::exp(c.ell[i]);

  // The three HDS levels and their combination.
  c.level0 = gatedRecurrence(c.z, c.gamma, p.W_g, p.b_g, c.h0);
  c.level1 = hdsLevel1(c.q, c.k, c.v, cfg.Nm, cfg.C);
  c.level2 = hdsLevel2(c.q, c.k, c.v, p.S, p.mu, c.mem0, cfg.C, cfg.clampMin);
  c.o = combine(c.level0.h, c.level1.y1, c.level2.y2, p.rho, cfg.eps);

  // Output projection, residual, SwiGLU FFN, residual.
  c.x1 = add(x, matmul(c.o, p.W_o));
  c.u2 = rmsNorm(c.x1, p.w_ffn, cfg.eps);
  c.f1 = matmul(c.u2, p.W_1);
  c.f3 = matmul(c.u2, p.W_3);
  c.g = swiglu(c.f1, c.f3);
  out.y = add(c.x1, matmul(c.g, p.W_2));
  out.hFinal = c.level0.final;
  out.memFinal = c.level2.memFinal;
  return out;
}

LayerGrads layerBackward(const Config &cfg, const LayerParams &p, const LayerOut &fwd,
                         const Tensor &dy, const Tensor &dhFinal, const Tensor &dmemFinal) {
  const LayerCache &c = fwd.cache;
  require(dy.empty() || dy.numel() == c.x.numel(), "layerBackward: dy size");
  LayerGrads g;
  LayerParams &gp = g.params;
  const Tensor dY = dy.empty() ? Tensor::zerosLike(c.x) : dy;

  // y = x1 + silu(u2·W_1) ⊙ (u2·W_3) · W_2
  Tensor dx1 = dY;
  MatmulGrads mW2 = matmulBackward(c.g, p.W_2, dY);
  gp.W_2 = mW2.dW;
  SwigluGrads sw = swigluBackward(c.f1, c.f3, mW2.dA);
  MatmulGrads mW1 = matmulBackward(c.u2, p.W_1, sw.da);
  MatmulGrads mW3 = matmulBackward(c.u2, p.W_3, sw.db);
  gp.W_1 = mW1.dW;
  gp.W_3 = mW3.dW;
  RmsNormGrads nFfn = rmsNormBackward(c.x1, p.w_ffn, cfg.eps, add(mW1.dA, mW3.dA));
  gp.w_ffn = nFfn.dw;
  addInto(dx1, nFfn.dx);

  // x1 = x + o·W_o
  g.dx = dx1;
  MatmulGrads mWo = matmulBackward(c.o, p.W_o, dx1);
  gp.W_o = mWo.dW;

  // o = combine(h, y1, y2)
  CombineGrads cb = combineBackward(c.level0.h, c.level1.y1, c.level2.y2, p.rho, cfg.eps, mWo.dA);
  gp.rho = cb.drho;

  // Level 2 (also receives dL/dMem_final), level 1.
  Level2Grads l2 = hdsLevel2Backward(c.q, c.k, c.v, p.S, p.mu, c.mem0, cfg.C, cfg.clampMin,
                                     cb.dy2, dmemFinal);
  gp.S = l2.dS;
  gp.mu = l2.dmu;
  g.dmem0 = l2.dm0;
  Level1Grads l1 = hdsLevel1Backward(c.q, c.k, c.v, cfg.Nm, cfg.C, cb.dy1);
  Tensor dq = add(l2.dq, l1.dq), dk = add(l2.dk, l1.dk), dv = add(l2.dv, l1.dv);

  // Level 0 (also receives dL/dh_final).
  RecurrenceGrads l0 =
      gatedRecurrenceBackward(c.z, c.gamma, p.W_g, p.b_g, c.h0, cb.dh, dhFinal);
  gp.W_g = l0.dWg;
  gp.b_g = l0.dbg;
  g.dh0 = l0.dh0;

  // γ = exp(ℓ), ℓ = decayGate(pre), pre = (u·A_γ)·B_γ + λ.
  Tensor dell = Tensor::zerosLike(c.ell);
  for (int64_t i = 0; i < dell.numel(); ++i) dell[i] = l0.dgamma[i] * c.gamma[i];
  Tensor dpre = decayGateBackward(c.pre, cfg.clampMin, cfg.clampMax, dell);
  gp.lambda = sumRows(dpre);
  MatmulGrads mB = matmulBackward(c.ua, p.B_gamma, dpre);
  gp.B_gamma = mB.dW;
  MatmulGrads mA = matmulBackward(c.u, p.A_gamma, mB.dA);
  gp.A_gamma = mA.dW;

  // q, k, v, z = u·W_{q,k,v,z}.
  MatmulGrads mq = matmulBackward(c.u, p.W_q, dq), mk = matmulBackward(c.u, p.W_k, dk);
  MatmulGrads mv = matmulBackward(c.u, p.W_v, dv), mz = matmulBackward(c.u, p.W_z, l0.dz);
  gp.W_q = mq.dW;
  gp.W_k = mk.dW;
  gp.W_v = mv.dW;
  gp.W_z = mz.dW;
  Tensor du = mA.dA;
  for (const Tensor *t : {&mq.dA, &mk.dA, &mv.dA, &mz.dA}) addInto(du, *t);

  // u = RMSNorm(x) ⊙ w_in
  RmsNormGrads nIn = rmsNormBackward(c.x, p.w_in, cfg.eps, du);
  gp.w_in = nIn.dw;
  addInto(g.dx, nIn.dx);
  return g;
}

//===----------------------------------------------------------------------===//
// The model
//===----------------------------------------------------------------------===//

ModelOut modelForward(const Config &cfg, const ModelParams &p, const std::vector<int> &tokens,
                      int64_t B, int64_t T) {
  cfg.validate();
  if (B <= 0 || T <= 0 || int64_t(tokens.size()) != B * T)
    throw std::invalid_argument("modelForward: tokens must hold B*T ids, B, T > 0");
  require(int64_t(p.layers.size()) == cfg.L, "modelForward: params have the wrong layer count");
  const int64_t D = cfg.D;
  ModelOut out;
  out.B = B;
  out.T = T;
  out.tokens = tokens;
  out.targets.assign(size_t(B * T), -1);
  out.x0 = Tensor({B, T, D});
  for (int64_t i = 0; i < B * T; ++i) {
    const int id = tokens[size_t(i)];
    if (id < 0 || id >= cfg.V)
      throw std::out_of_range("modelForward: token id " + std::to_string(id) + " outside [0, V)");
    for (int64_t j = 0; j < D; ++j) out.x0[i * D + j] = p.embed.at(int64_t(id), j);
    if ((i % T) + 1 < T)
      out.targets[size_t(i)] = tokens[size_t(i + 1)];
  }

  // Every layer from zero states (one segment).
  const Tensor *x = &out.x0;
  for (int64_t l = 0; l < cfg.L; ++l) {
    out.layers.push_back(layerForward(cfg, p.layers[size_t(l)], *x));
    x = &out.layers.back().y;
  }
  out.xf = rmsNorm(*x, p.final_norm, cfg.eps);
  out.logits = matmul(out.xf, transpose(p.embed)); // tied: xf·Eᵀ
  out.loss = crossEntropy(out.logits, out.targets);
  return out;
}

double modelLoss(const Config &cfg, const ModelParams &p, const std::vector<int> &tokens,
                 int64_t B, int64_t T) {
  return modelForward(cfg, p, tokens, B, T).loss;
}

ModelParams modelBackward(const Config &cfg, const ModelParams &p, const ModelOut &fwd,
                          double dloss) {
  const int64_t D = cfg.D;
  ModelParams g;
  g.layers.resize(size_t(cfg.L));

  // loss = CE(xf·Eᵀ), xf = RMSNorm(x_L) ⊙ w_f
  const Tensor dlogits = crossEntropyBackward(fwd.logits, fwd.targets, dloss);
  MatmulGrads out = matmulBackward(fwd.xf, transpose(p.embed), dlogits);
  g.embed = transpose(out.dW);
  const Tensor &xL = cfg.L > 0 ? fwd.layers.back().y : fwd.x0;
  RmsNormGrads nf = rmsNormBackward(xL, p.final_norm, cfg.eps, out.dA);
  g.final_norm = nf.dw;

  // Layers in reverse; no gradient flows into the (zero) initial states.
  Tensor dx = nf.dx;
  for (int64_t l = cfg.L - 1; l >= 0; --l) {
    LayerGrads lg = layerBackward(cfg, p.layers[size_t(l)], fwd.layers[size_t(l)], dx);
    g.layers[size_t(l)] = std::move(lg.params);
    dx = std::move(lg.dx);
  }

  // x0 = E[tokens]
  for (int64_t i = 0; i < fwd.B * fwd.T; ++i)
    for (int64_t j = 0; j < D; ++j) g.embed.at(int64_t(fwd.tokens[size_t(i)]), j) += dx[i * D + j];
  return g;
}

} // namespace mmrec::ref
