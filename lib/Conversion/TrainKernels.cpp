//===- TrainKernels.cpp - the kernels a training step needs ---------------===//
//
// See TrainKernels.h. Every body below is a loop nest written with the small
// builder `K`; the math of each kernel is stated above it (the forward is
// MMREC_SPEC section 2, the backward its exact vector-Jacobian product, with
// the conventions of lib/Reference/Oracle.h: a clamp passes no gradient where
// it is active, max(n, 1e-6) passes it only where n > 1e-6).
//
//===----------------------------------------------------------------------===//

#include "lib/Conversion/TrainKernels.h"
#include "lib/Conversion/GatedKernels.h"
#include "lib/Conversion/ScanKernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include "llvm/ADT/StringMap.h"

#include <cmath>
#include <functional>

using namespace mlir;
using namespace mlir::mmrec;

namespace {

/// Scalar loop-nest builder: f32 values, index arithmetic, loops.
struct K {
  ImplicitLocOpBuilder &b;
  Type f32, f64;
  explicit K(ImplicitLocOpBuilder &b) : b(b), f32(b.getF32Type()), f64(b.getF64Type()) {}

  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, v); }
  Value cst(double v) { return arith::ConstantOp::create(b, b.getF32FloatAttr(v)); }
  Value add(Value x, Value y) { return arith::AddFOp::create(b, x, y); }
  Value sub(Value x, Value y) { return arith::SubFOp::create(b, x, y); }
  Value mul(Value x, Value y) { return arith::MulFOp::create(b, x, y); }
  Value div(Value x, Value y) { return arith::DivFOp::create(b, x, y); }
  Value neg(Value x) { return arith::NegFOp::create(b, x); }
  Value max(Value x, Value y) { return arith::MaximumFOp::create(b, x, y); }
  Value min(Value x, Value y) { return arith::MinimumFOp::create(b, x, y); }
  Value exp(Value x) { return math::ExpOp::create(b, x); }
  Value log(Value x) { return math::LogOp::create(b, x); }
  Value log1p(Value x) { return math::Log1pOp::create(b, x); }
  Value expm1(Value x) { return math::ExpM1Op::create(b, x); }
  Value sqrt(Value x) { return math::SqrtOp::create(b, x); }
  Value addi(Value x, Value y) { return arith::AddIOp::create(b, x, y); }
  Value subi(Value x, Value y) { return arith::SubIOp::create(b, x, y); }
  Value muli(Value x, Value y) { return arith::MulIOp::create(b, x, y); }
  Value divui(Value x, Value y) { return arith::DivUIOp::create(b, x, y); }
  Value minui(Value x, Value y) { return arith::MinUIOp::create(b, x, y); }
  Value cmpi(arith::CmpIPredicate p, Value x, Value y) { return arith::CmpIOp::create(b, p, x, y); }
  Value cmpf(arith::CmpFPredicate p, Value x, Value y) { return arith::CmpFOp::create(b, p, x, y); }
  Value select(Value c, Value x, Value y) { return arith::SelectOp::create(b, c, x, y); }
  /// 1.0 where `c`, else 0.0.
  Value mask(Value c) { return select(c, cst(1.0), cst(0.0)); }
  /// σ(x), stable on both sides: exp(−softplus(−x)).
  Value sigmoid(Value x) { return exp(logSigmoid(x)); }
  /// softplus(x) = max(x, 0) + log1p(exp(−|x|)).
  Value softplus(Value x) {
    Value negAbs = neg(max(x, neg(x)));
    return add(max(x, cst(0.0)), log1p(exp(negAbs)));
  }
  Value logSigmoid(Value x) { return neg(softplus(neg(x))); }

  Value ld(Value mem, Value i) {
    Value v = memref::LoadOp::create(b, mem, ValueRange{i});
    if (v.getType().isInteger(32))
      return arith::IndexCastOp::create(b, b.getIndexType(), v);
    return v;
  }
  void st(Value v, Value mem, Value i) { memref::StoreOp::create(b, v, mem, ValueRange{i}); }
  void addTo(Value mem, Value i, Value v) { st(add(ld(mem, i), v), mem, i); }

  template <class F> void loop(Value lo, Value hi, F body) {
    auto f = scf::ForOp::create(b, lo, hi, idx(1));
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(f.getBody());
    body(f.getInductionVar());
  }
  template <class F> void loop(int64_t n, F body) { loop(idx(0), idx(n), body); }
  /// Folds body(i) over [lo, hi) with `combine`, starting from `init`.
  template <class F, class C> Value fold(Value lo, Value hi, Value init, F body, C combine) {
    auto f = scf::ForOp::create(b, lo, hi, idx(1), ValueRange{init});
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(f.getBody());
    Value v = combine(f.getRegionIterArgs()[0], body(f.getInductionVar()));
    scf::YieldOp::create(b, v);
    return f.getResult(0);
  }
  template <class F> Value sum(Value lo, Value hi, F body) {
    return fold(lo, hi, cst(0.0), body, [&](Value a, Value x) { return add(a, x); });
  }
  template <class F> Value sum(int64_t n, F body) { return sum(idx(0), idx(n), body); }
  template <class F> Value maxOver(Value lo, Value hi, F body) {
    return fold(lo, hi, cst(-INFINITY), body, [&](Value a, Value x) { return max(a, x); });
  }
  template <class F> void ifThen(Value cond, F body) {
    auto op = scf::IfOp::create(b, TypeRange{}, cond, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(op.thenBlock());
    body();
  }
  Value buf(int64_t n) { return memref::AllocaOp::create(b, MemRefType::get({n}, f32)); }
  Value buf(Value n) {
    return memref::AllocaOp::create(b, MemRefType::get({ShapedType::kDynamic}, f32), ValueRange{n});
  }
};

using Args = llvm::StringMap<Value>;
using Body = std::function<void(K &, Args &)>;

bool isTokenArray(const std::string &n) { return n == "tokens" || n == "targets"; }

struct Kernel {
  TrainKernelSig sig;
  Body body; // null: built by another generator (gated, mem_scan)
};

/// Softmax in place over buf[base, base + n).
void softmaxInPlace(K &k, Value buf, Value n, Value base = {}) {
  if (!base)
    base = k.idx(0);
  auto at = [&](Value s) { return k.addi(base, s); };
  Value m = k.maxOver(k.idx(0), n, [&](Value s) { return k.ld(buf, at(s)); });
  Value z = k.sum(k.idx(0), n, [&](Value s) {
    Value e = k.exp(k.sub(k.ld(buf, at(s)), m));
    k.st(e, buf, at(s));
    return e;
  });
  Value inv = k.div(k.cst(1.0), z);
  k.loop(k.idx(0), n, [&](Value s) { k.st(k.mul(k.ld(buf, at(s)), inv), buf, at(s)); });
}

std::vector<Kernel> kernels(const TrainConfig &c) {
  const int64_t D = c.D, V = c.V, G = c.Nm, M = c.M, d = c.dm(), C = c.C;
  const int64_t nCmax = (c.Tmax + C - 1) / C; // chunks of one segment (decoding)
  const double eps = c.eps, lo = c.clampMin, hi = c.clampMax, invSqrtD = 1.0 / std::sqrt(double(d));
  std::vector<Kernel> ks;
  auto add = [&](std::string name, std::vector<std::string> arrays,
                 std::vector<std::string> indices, Body body) {
    ks.push_back({{std::move(name), std::move(arrays), std::move(indices)}, std::move(body)});
  };
  // n_c = ⌈T / C⌉ and the token range [c·C, min(T, (c+1)·C)) of chunk c.
  auto numChunks = [C](K &k, Value T) { return k.divui(k.addi(T, k.idx(C - 1)), k.idx(C)); };
  auto chunkEnd = [C](K &k, Value T, Value ch) {
    return k.minui(T, k.muli(k.addi(ch, k.idx(1)), k.idx(C)));
  };

  // --- RMSNorm: y = x·r ⊙ w, r = (mean x² + ε)^−½; rstd[n] = r.
  // dx += r·(dy⊙w − x̂·mean(dy⊙w⊙x̂)), x̂ = x·r;  dw += Σ_n dy ⊙ x̂.
  add("rmsnorm_fwd", {"x", "w", "y", "rstd"}, {"rows"}, [=](K &k, Args &a) {
    k.loop(k.idx(0), a["rows"], [&](Value n) {
      Value base = k.muli(n, k.idx(D));
      Value ss = k.sum(D, [&](Value j) {
        Value x = k.ld(a["x"], k.addi(base, j));
        return k.mul(x, x);
      });
      Value r = k.div(k.cst(1.0), k.sqrt(k.add(k.mul(ss, k.cst(1.0 / D)), k.cst(eps))));
      k.st(r, a["rstd"], n);
      k.loop(D, [&](Value j) {
        Value i = k.addi(base, j);
        k.st(k.mul(k.mul(k.ld(a["x"], i), r), k.ld(a["w"], j)), a["y"], i);
      });
    });
  });
  add("rmsnorm_bwd", {"x", "w", "rstd", "dy", "dx", "dw"}, {"rows"}, [=](K &k, Args &a) {
    k.loop(k.idx(0), a["rows"], [&](Value n) {
      Value base = k.muli(n, k.idx(D));
      Value r = k.ld(a["rstd"], n);
      Value dot = k.sum(D, [&](Value j) {
        Value i = k.addi(base, j);
        return k.mul(k.mul(k.ld(a["dy"], i), k.ld(a["w"], j)), k.mul(k.ld(a["x"], i), r));
      });
      Value meanDot = k.mul(dot, k.cst(1.0 / D));
      k.loop(D, [&](Value j) {
        Value i = k.addi(base, j);
        Value xh = k.mul(k.ld(a["x"], i), r);
        Value dy = k.ld(a["dy"], i);
        k.addTo(a["dx"], i, k.mul(r, k.sub(k.mul(dy, k.ld(a["w"], j)), k.mul(xh, meanDot))));
        k.addTo(a["dw"], j, k.mul(dy, xh));
      });
    });
  });

  // --- Decay gate: ℓ = clamp(logσ(pre + λ), lo, hi).
  // dpre = dℓ·σ(−(pre + λ)) where the clamp is inactive, else 0; dλ += Σ_n dpre.
  add("decay_fwd", {"pre", "lambda", "ell"}, {"rows"}, [=](K &k, Args &a) {
    k.loop(k.idx(0), a["rows"], [&](Value n) {
      k.loop(D, [&](Value j) {
        Value i = k.addi(k.muli(n, k.idx(D)), j);
        Value l = k.logSigmoid(k.add(k.ld(a["pre"], i), k.ld(a["lambda"], j)));
        k.st(k.min(k.max(l, k.cst(lo)), k.cst(hi)), a["ell"], i);
      });
    });
  });
  add("decay_bwd", {"pre", "lambda", "dell", "dpre", "dlambda"}, {"rows"}, [=](K &k, Args &a) {
    k.loop(k.idx(0), a["rows"], [&](Value n) {
      k.loop(D, [&](Value j) {
        Value i = k.addi(k.muli(n, k.idx(D)), j);
        Value p = k.add(k.ld(a["pre"], i), k.ld(a["lambda"], j));
        Value l = k.logSigmoid(p);
        Value in = arith::AndIOp::create(k.b, k.cmpf(arith::CmpFPredicate::OGE, l, k.cst(lo)),
                                         k.cmpf(arith::CmpFPredicate::OLE, l, k.cst(hi)));
        Value g = k.mul(k.mul(k.ld(a["dell"], i), k.sigmoid(k.neg(p))), k.mask(in));
        k.st(g, a["dpre"], i);
        k.addTo(a["dlambda"], j, g);
      });
    });
  });

  // --- Level 1. K1_c, V1_c: means over chunk c; y1_t = Σ_{c<c(t)} p_c V1_c,
  // p = softmax_c(q_t·K1_c/√d) per group.
  // Backward: dp_c = dy·V1_c, ds_c = p_c(dp_c − Σ p dp); dq += Σ ds_c K1_c/√d,
  // dK1_c += ds_c q/√d, dV1_c += p_c dy; dk_t += dK1_{c(t)}/|c(t)| (same for v).
  auto chunkMeans = [=](K &k, Args &a, Value bi, Value T, Value nC) {
    k.loop(k.idx(0), nC, [&](Value ch) {
      Value t0 = k.muli(ch, k.idx(C)), t1 = chunkEnd(k, T, ch);
      Value inv =
          k.div(k.cst(1.0),
                arith::UIToFPOp::create(
                    k.b, k.f32, arith::IndexCastOp::create(k.b, k.b.getI64Type(), k.subi(t1, t0))));
      Value out = k.muli(k.addi(k.muli(bi, nC), ch), k.idx(D));
      k.loop(D, [&](Value j) {
        Value sk = k.sum(t0, t1, [&](Value t) {
          return k.ld(a["k"], k.addi(k.muli(k.addi(k.muli(bi, T), t), k.idx(D)), j));
        });
        Value sv = k.sum(t0, t1, [&](Value t) {
          return k.ld(a["v"], k.addi(k.muli(k.addi(k.muli(bi, T), t), k.idx(D)), j));
        });
        k.st(k.mul(sk, inv), a["K1"], k.addi(out, j));
        k.st(k.mul(sv, inv), a["V1"], k.addi(out, j));
      });
    });
  };
  // p[c] = softmax_{c < cT}(q_t,g · K1_c,g / √d).
  auto level1Probs = [=](K &k, Args &a, Value p, Value qBase, Value kRow0, Value g, Value cT) {
    k.loop(k.idx(0), cT, [&](Value ch) {
      Value kb = k.addi(k.addi(kRow0, k.muli(ch, k.idx(D))), k.muli(g, k.idx(d)));
      Value s = k.sum(d, [&](Value j) {
        return k.mul(k.ld(a["q"], k.addi(qBase, j)), k.ld(a["K1"], k.addi(kb, j)));
      });
      k.st(k.mul(s, k.cst(invSqrtD)), p, ch);
    });
    softmaxInPlace(k, p, cT);
  };
  // body(c(t), g, element offset of (b, t, group g)) for every token t of
  // batch row bi and every group g.
  auto forEachTokenGroup = [=](K &k, Value bi, Value T, auto body) {
    k.loop(k.idx(0), T, [&](Value t) {
      Value cT = k.divui(t, k.idx(C));
      Value row = k.muli(k.addi(k.muli(bi, T), t), k.idx(D));
      k.loop(G, [&](Value g) { body(cT, g, k.addi(row, k.muli(g, k.idx(d)))); });
    });
  };
  // y1[qBase + j] = Σ_{c < cT} p_c V1_c,g[j], with p from level1Probs.
  auto level1Read = [=](K &k, Args &a, Value p, Value qBase, Value kRow0, Value g, Value cT) {
    level1Probs(k, a, p, qBase, kRow0, g, cT);
    k.loop(d, [&](Value j) {
      Value y = k.sum(k.idx(0), cT, [&](Value ch) {
        Value vb = k.addi(k.addi(kRow0, k.muli(ch, k.idx(D))), k.muli(g, k.idx(d)));
        return k.mul(k.ld(p, ch), k.ld(a["V1"], k.addi(vb, j)));
      });
      k.st(y, a["y1"], k.addi(qBase, j));
    });
  };
  add("level1_fwd", {"q", "k", "v", "K1", "V1", "y1"}, {"B", "T"}, [=](K &k, Args &a) {
    Value T = a["T"], nC = numChunks(k, T);
    Value p = k.buf(k.addi(nC, k.idx(1)));
    k.loop(k.idx(0), a["B"], [&](Value bi) {
      chunkMeans(k, a, bi, T, nC);
      Value kRow0 = k.muli(k.muli(bi, nC), k.idx(D));
      forEachTokenGroup(k, bi, T, [&](Value cT, Value g, Value qBase) {
        level1Read(k, a, p, qBase, kRow0, g, cT);
      });
    });
  });
  add("level1_bwd", {"q", "K1", "V1", "dy1", "dq", "dk", "dv", "dK1", "dV1"}, {"B", "T"},
      [=](K &k, Args &a) {
        Value T = a["T"], nC = numChunks(k, T);
        Value p = k.buf(k.addi(nC, k.idx(1))), dp = k.buf(k.addi(nC, k.idx(1)));
        k.loop(k.idx(0), a["B"], [&](Value bi) {
          Value kRow0 = k.muli(k.muli(bi, nC), k.idx(D));
          k.loop(k.idx(0), k.muli(nC, k.idx(D)), [&](Value i) {
            k.st(k.cst(0.0), a["dK1"], k.addi(kRow0, i));
            k.st(k.cst(0.0), a["dV1"], k.addi(kRow0, i));
          });
          forEachTokenGroup(k, bi, T, [&](Value cT, Value g, Value qBase) {
            level1Probs(k, a, p, qBase, kRow0, g, cT);
            auto cb = [&](Value ch) {
              return k.addi(k.addi(kRow0, k.muli(ch, k.idx(D))), k.muli(g, k.idx(d)));
            };
            Value sum = k.sum(k.idx(0), cT, [&](Value ch) {
              Value dpc = k.sum(d, [&](Value j) {
                return k.mul(k.ld(a["dy1"], k.addi(qBase, j)), k.ld(a["V1"], k.addi(cb(ch), j)));
              });
              k.st(dpc, dp, ch);
              return k.mul(k.ld(p, ch), dpc);
            });
            k.loop(k.idx(0), cT, [&](Value ch) {
              Value pc = k.ld(p, ch);
              Value ds = k.mul(k.mul(pc, k.sub(k.ld(dp, ch), sum)), k.cst(invSqrtD));
              k.loop(d, [&](Value j) {
                Value qi = k.addi(qBase, j), ki = k.addi(cb(ch), j);
                k.addTo(a["dq"], qi, k.mul(ds, k.ld(a["K1"], ki)));
                k.addTo(a["dK1"], ki, k.mul(ds, k.ld(a["q"], qi)));
                k.addTo(a["dV1"], ki, k.mul(pc, k.ld(a["dy1"], qi)));
              });
            });
          });
          k.loop(k.idx(0), T, [&](Value t) {
            Value ch = k.divui(t, k.idx(C));
            Value t0 = k.muli(ch, k.idx(C)), t1 = chunkEnd(k, T, ch);
            Value inv = k.div(
                k.cst(1.0),
                arith::UIToFPOp::create(
                    k.b, k.f32, arith::IndexCastOp::create(k.b, k.b.getI64Type(), k.subi(t1, t0))));
            Value row = k.muli(k.addi(k.muli(bi, T), t), k.idx(D));
            Value crow = k.addi(kRow0, k.muli(ch, k.idx(D)));
            k.loop(D, [&](Value j) {
              k.addTo(a["dk"], k.addi(row, j), k.mul(k.ld(a["dK1"], k.addi(crow, j)), inv));
              k.addTo(a["dv"], k.addi(row, j), k.mul(k.ld(a["dV1"], k.addi(crow, j)), inv));
            });
          });
        });
      });

  // --- Level 2, the MDI write. w_t = softmax_s(k_t·S_s/√d) (kept, (B,T,G,M));
  // per chunk c and slot s: n = Σ_t w, P = Σ_t w v, U = P/max(n, 1e-6),
  // lb = clamp(n·logσ(μ), lo, 0), wu = (1 − β)·U = −expm1(lb)·U.
  auto slotAddress = [=](K &k, Value x, Value S, Value xBase, Value g, Value out, Value outBase) {
    // out[outBase + s] = softmax_s(x[xBase..]·S[g, s, :]/√d), in place (no
    // scratch: allocas inside loops would grow the stack every iteration).
    k.loop(M, [&](Value s) {
      Value sb = k.muli(k.addi(k.muli(g, k.idx(M)), s), k.idx(d));
      Value dot = k.sum(
          d, [&](Value j) { return k.mul(k.ld(x, k.addi(xBase, j)), k.ld(S, k.addi(sb, j))); });
      k.st(k.mul(dot, k.cst(invSqrtD)), out, k.addi(outBase, s));
    });
    softmaxInPlace(k, out, k.idx(M), outBase);
  };
  // The chunk statistics of (b, c, g, s): n and, in `P`, Σ_t w v.
  auto chunkStats = [=](K &k, Args &a, Value bi, Value T, Value t0, Value t1, Value g, Value s,
                        Value P) {
    auto wAt = [&](Value t) {
      return k.addi(k.muli(k.addi(k.muli(k.addi(k.muli(bi, T), t), k.idx(G)), g), k.idx(M)), s);
    };
    Value n = k.sum(t0, t1, [&](Value t) { return k.ld(a["w"], wAt(t)); });
    k.loop(d, [&](Value j) {
      Value pj = k.sum(t0, t1, [&](Value t) {
        Value vi =
            k.addi(k.addi(k.muli(k.addi(k.muli(bi, T), t), k.idx(D)), k.muli(g, k.idx(d))), j);
        return k.mul(k.ld(a["w"], wAt(t)), k.ld(a["v"], vi));
      });
      k.st(pj, P, j);
    });
    return n;
  };
  add("mdi_write_fwd", {"k", "v", "S", "mu", "w", "lb", "wu"}, {"B", "T"}, [=](K &k, Args &a) {
    Value T = a["T"], nC = numChunks(k, T);
    Value P = k.buf(d);
    k.loop(k.idx(0), a["B"], [&](Value bi) {
      k.loop(k.idx(0), T, [&](Value t) {
        Value row = k.addi(k.muli(bi, T), t);
        k.loop(G, [&](Value g) {
          slotAddress(k, a["k"], a["S"], k.addi(k.muli(row, k.idx(D)), k.muli(g, k.idx(d))), g,
                      a["w"], k.muli(k.addi(k.muli(row, k.idx(G)), g), k.idx(M)));
        });
      });
      k.loop(k.idx(0), nC, [&](Value ch) {
        Value t0 = k.muli(ch, k.idx(C)), t1 = chunkEnd(k, T, ch);
        k.loop(G, [&](Value g) {
          k.loop(M, [&](Value s) {
            Value n = chunkStats(k, a, bi, T, t0, t1, g, s, P);
            Value slot = k.addi(
                k.muli(k.addi(k.muli(k.addi(k.muli(bi, nC), ch), k.idx(G)), g), k.idx(M)), s);
            Value ls = k.logSigmoid(k.ld(a["mu"], k.addi(k.muli(g, k.idx(M)), s)));
            Value lb = k.min(k.max(k.mul(n, ls), k.cst(lo)), k.cst(0.0));
            k.st(lb, a["lb"], slot);
            Value omb = k.neg(k.expm1(lb));
            Value inv = k.div(k.cst(1.0), k.max(n, k.cst(1e-6)));
            k.loop(d, [&](Value j) {
              k.st(k.mul(omb, k.mul(k.ld(P, j), inv)), a["wu"], k.addi(k.muli(slot, k.idx(d)), j));
            });
          });
        });
      });
    });
  });
  // Backward: dlb' = dlb − β·Σ_j dwu_j U_j; where the clamp is inactive
  // dn = dlb'·logσ(μ) and dμ += dlb'·n·σ(−μ); dU = (1 − β)·dwu, dP = dU/max(n, ε),
  // dn −= Σ_j dU_j P_j/n² where n > ε; dw_t = dn + dP·v_t, dv_t += w_t·dP; then
  // through the softmax: dlogit = w(dw − Σ w dw), dk += Σ_s dlogit S_s/√d,
  // dS_s += dlogit·k/√d.
  add("mdi_write_bwd", {"k", "v", "S", "mu", "w", "dlb", "dwu", "dk", "dv", "dS", "dmu", "dw"},
      {"B", "T"}, [=](K &k, Args &a) {
        Value T = a["T"], nC = numChunks(k, T);
        Value P = k.buf(d), dP = k.buf(d);
        k.loop(k.idx(0), a["B"], [&](Value bi) {
          k.loop(k.idx(0), nC, [&](Value ch) {
            Value t0 = k.muli(ch, k.idx(C)), t1 = chunkEnd(k, T, ch);
            k.loop(G, [&](Value g) {
              k.loop(M, [&](Value s) {
                Value n = chunkStats(k, a, bi, T, t0, t1, g, s, P);
                Value slot = k.addi(
                    k.muli(k.addi(k.muli(k.addi(k.muli(bi, nC), ch), k.idx(G)), g), k.idx(M)), s);
                Value muV = k.ld(a["mu"], k.addi(k.muli(g, k.idx(M)), s));
                Value ls = k.logSigmoid(muV);
                Value raw = k.mul(n, ls);
                Value lb = k.min(k.max(raw, k.cst(lo)), k.cst(0.0));
                Value beta = k.exp(lb), omb = k.neg(k.expm1(lb));
                Value nn = k.max(n, k.cst(1e-6));
                Value inv = k.div(k.cst(1.0), nn);
                Value wuBase = k.muli(slot, k.idx(d));
                Value dwuU = k.sum(d, [&](Value j) {
                  return k.mul(k.ld(a["dwu"], k.addi(wuBase, j)), k.mul(k.ld(P, j), inv));
                });
                Value dlb = k.sub(k.ld(a["dlb"], slot), k.mul(beta, dwuU));
                Value in =
                    arith::AndIOp::create(k.b, k.cmpf(arith::CmpFPredicate::OGE, raw, k.cst(lo)),
                                          k.cmpf(arith::CmpFPredicate::OLE, raw, k.cst(0.0)));
                Value dlbIn = k.mul(dlb, k.mask(in));
                k.addTo(a["dmu"], k.addi(k.muli(g, k.idx(M)), s),
                        k.mul(k.mul(dlbIn, n), k.sigmoid(k.neg(muV))));
                Value dUP = k.sum(d, [&](Value j) {
                  Value dU = k.mul(omb, k.ld(a["dwu"], k.addi(wuBase, j)));
                  k.st(k.mul(dU, inv), dP, j);
                  return k.mul(dU, k.ld(P, j));
                });
                Value big = k.mask(k.cmpf(arith::CmpFPredicate::OGT, n, k.cst(1e-6)));
                Value dn = k.sub(k.mul(dlbIn, ls), k.mul(big, k.mul(dUP, k.mul(inv, inv))));
                k.loop(t0, t1, [&](Value t) {
                  Value row = k.addi(k.muli(bi, T), t);
                  Value wi = k.addi(k.muli(k.addi(k.muli(row, k.idx(G)), g), k.idx(M)), s);
                  Value vb = k.addi(k.muli(row, k.idx(D)), k.muli(g, k.idx(d)));
                  Value wv = k.ld(a["w"], wi);
                  Value dPv = k.sum(d, [&](Value j) {
                    Value vi = k.addi(vb, j);
                    k.addTo(a["dv"], vi, k.mul(wv, k.ld(dP, j)));
                    return k.mul(k.ld(dP, j), k.ld(a["v"], vi));
                  });
                  k.st(k.add(dn, dPv), a["dw"], wi);
                });
              });
            });
          });
          k.loop(k.idx(0), T, [&](Value t) {
            Value row = k.addi(k.muli(bi, T), t);
            k.loop(G, [&](Value g) {
              Value wb = k.muli(k.addi(k.muli(row, k.idx(G)), g), k.idx(M));
              Value kb = k.addi(k.muli(row, k.idx(D)), k.muli(g, k.idx(d)));
              Value wdw = k.sum(M, [&](Value s) {
                return k.mul(k.ld(a["w"], k.addi(wb, s)), k.ld(a["dw"], k.addi(wb, s)));
              });
              k.loop(M, [&](Value s) {
                Value wi = k.addi(wb, s);
                Value dl =
                    k.mul(k.mul(k.ld(a["w"], wi), k.sub(k.ld(a["dw"], wi), wdw)), k.cst(invSqrtD));
                Value sb = k.muli(k.addi(k.muli(g, k.idx(M)), s), k.idx(d));
                k.loop(d, [&](Value j) {
                  k.addTo(a["dk"], k.addi(kb, j), k.mul(dl, k.ld(a["S"], k.addi(sb, j))));
                  k.addTo(a["dS"], k.addi(sb, j), k.mul(dl, k.ld(a["k"], k.addi(kb, j))));
                });
              });
            });
          });
        });
      });

  // --- Level 2, the read. a_t = softmax_s(q_t·S_s/√d) (kept, (B,T,G,M));
  // y2_t = Σ_s a_s Mem_{c(t)−1}[s] (mem0 in chunk 0).
  // Backward: da_s = dy·Mem[s], dMem[s] += a_s dy (dmems / dmem0 overwritten),
  // dlogit = a(da − Σ a da), dq += Σ_s dlogit S_s/√d, dS_s += dlogit q/√d.
  auto memRow = [=](K &k, Value bi, Value nC, Value cT, Value g, Value s, Value &fromInit) {
    // Element offset of Mem_{cT−1}[g, s, 0] in mems, or of mem0[b, g, s, 0].
    fromInit = k.cmpi(arith::CmpIPredicate::eq, cT, k.idx(0));
    Value cPrev = k.select(fromInit, k.idx(0), k.subi(cT, k.idx(1)));
    Value gs = k.addi(k.muli(g, k.idx(M)), s);
    Value inMems =
        k.muli(k.addi(k.muli(k.addi(k.muli(bi, nC), cPrev), k.idx(G * M)), gs), k.idx(d));
    Value inInit = k.muli(k.addi(k.muli(bi, k.idx(G * M)), gs), k.idx(d));
    return std::make_pair(inMems, inInit);
  };
  add("mdi_read_fwd", {"q", "S", "mems", "mem0", "a", "y2"}, {"B", "T"}, [=](K &k, Args &a) {
    Value T = a["T"], nC = numChunks(k, T);
    k.loop(k.idx(0), a["B"], [&](Value bi) {
      k.loop(k.idx(0), T, [&](Value t) {
        Value row = k.addi(k.muli(bi, T), t);
        Value cT = k.divui(t, k.idx(C));
        k.loop(G, [&](Value g) {
          Value qb = k.addi(k.muli(row, k.idx(D)), k.muli(g, k.idx(d)));
          Value ab = k.muli(k.addi(k.muli(row, k.idx(G)), g), k.idx(M));
          slotAddress(k, a["q"], a["S"], qb, g, a["a"], ab);
          k.loop(d, [&](Value j) {
            Value y = k.sum(M, [&](Value s) {
              Value fromInit;
              auto [im, ii] = memRow(k, bi, nC, cT, g, s, fromInit);
              Value m = k.select(fromInit, k.ld(a["mem0"], k.addi(ii, j)),
                                 k.ld(a["mems"], k.addi(im, j)));
              return k.mul(k.ld(a["a"], k.addi(ab, s)), m);
            });
            k.st(y, a["y2"], k.addi(qb, j));
          });
        });
      });
    });
  });
  add("mdi_read_bwd", {"q", "S", "mems", "mem0", "a", "dy2", "dq", "dS", "dmems", "dmem0"},
      {"B", "T"}, [=](K &k, Args &a) {
        Value T = a["T"], nC = numChunks(k, T);
        Value da = k.buf(M);
        k.loop(k.idx(0), a["B"], [&](Value bi) {
          Value m0 = k.muli(k.muli(bi, nC), k.idx(G * M * d));
          k.loop(k.idx(0), k.muli(nC, k.idx(G * M * d)),
                 [&](Value i) { k.st(k.cst(0.0), a["dmems"], k.addi(m0, i)); });
          k.loop(G * M * d, [&](Value i) {
            k.st(k.cst(0.0), a["dmem0"], k.addi(k.muli(bi, k.idx(G * M * d)), i));
          });
          k.loop(k.idx(0), T, [&](Value t) {
            Value row = k.addi(k.muli(bi, T), t);
            Value cT = k.divui(t, k.idx(C));
            k.loop(G, [&](Value g) {
              Value qb = k.addi(k.muli(row, k.idx(D)), k.muli(g, k.idx(d)));
              Value ab = k.muli(k.addi(k.muli(row, k.idx(G)), g), k.idx(M));
              Value ada = k.sum(M, [&](Value s) {
                Value fromInit;
                auto [im, ii] = memRow(k, bi, nC, cT, g, s, fromInit);
                Value as = k.ld(a["a"], k.addi(ab, s));
                Value das = k.sum(d, [&](Value j) {
                  Value dy = k.ld(a["dy2"], k.addi(qb, j));
                  Value m = k.select(fromInit, k.ld(a["mem0"], k.addi(ii, j)),
                                     k.ld(a["mems"], k.addi(im, j)));
                  Value g0 = k.mul(as, dy);
                  k.ifThen(fromInit, [&] { k.addTo(a["dmem0"], k.addi(ii, j), g0); });
                  k.ifThen(
                      arith::XOrIOp::create(k.b, fromInit, arith::ConstantIntOp::create(k.b, 1, 1)),
                      [&] { k.addTo(a["dmems"], k.addi(im, j), g0); });
                  return k.mul(dy, m);
                });
                k.st(das, da, s);
                return k.mul(as, das);
              });
              k.loop(M, [&](Value s) {
                Value dl = k.mul(k.mul(k.ld(a["a"], k.addi(ab, s)), k.sub(k.ld(da, s), ada)),
                                 k.cst(invSqrtD));
                Value sb = k.muli(k.addi(k.muli(g, k.idx(M)), s), k.idx(d));
                k.loop(d, [&](Value j) {
                  k.addTo(a["dq"], k.addi(qb, j), k.mul(dl, k.ld(a["S"], k.addi(sb, j))));
                  k.addTo(a["dS"], k.addi(sb, j), k.mul(dl, k.ld(a["q"], k.addi(qb, j))));
                });
              });
            });
          });
        });
      });

  // --- The combination: o = ω0·ĥ + ω1·y1 + ω2·y2 per group, ĥ = h·r_g,
  // r_g = (mean_g h² + ε)^−½ (kept, (rows, G)), ω = softmax(ρ_g).
  // Backward: dy1 = ω1·do, dy2 = ω2·do, dĥ = ω0·do, dh = r(dĥ − ĥ·mean(dĥ·ĥ));
  // dω_i = Σ do·{ĥ, y1, y2}_i, dρ += ω ⊙ (dω − ω·dω).
  auto omegas = [=](K &k, Value rho, Value g) {
    Value r0 = k.ld(rho, k.muli(g, k.idx(3)));
    Value r1 = k.ld(rho, k.addi(k.muli(g, k.idx(3)), k.idx(1)));
    Value r2 = k.ld(rho, k.addi(k.muli(g, k.idx(3)), k.idx(2)));
    Value m = k.max(r0, k.max(r1, r2));
    Value e0 = k.exp(k.sub(r0, m)), e1 = k.exp(k.sub(r1, m)), e2 = k.exp(k.sub(r2, m));
    Value inv = k.div(k.cst(1.0), k.add(e0, k.add(e1, e2)));
    return std::array<Value, 3>{k.mul(e0, inv), k.mul(e1, inv), k.mul(e2, inv)};
  };
  add("combine_fwd", {"h", "y1", "y2", "rho", "hrstd", "o"}, {"rows"}, [=](K &k, Args &a) {
    k.loop(k.idx(0), a["rows"], [&](Value n) {
      k.loop(G, [&](Value g) {
        auto w = omegas(k, a["rho"], g);
        Value base = k.addi(k.muli(n, k.idx(D)), k.muli(g, k.idx(d)));
        Value ss = k.sum(d, [&](Value j) {
          Value h = k.ld(a["h"], k.addi(base, j));
          return k.mul(h, h);
        });
        Value r = k.div(k.cst(1.0), k.sqrt(k.add(k.mul(ss, k.cst(1.0 / d)), k.cst(eps))));
        k.st(r, a["hrstd"], k.addi(k.muli(n, k.idx(G)), g));
        k.loop(d, [&](Value j) {
          Value i = k.addi(base, j);
          Value o = k.add(k.mul(w[0], k.mul(k.ld(a["h"], i), r)),
                          k.add(k.mul(w[1], k.ld(a["y1"], i)), k.mul(w[2], k.ld(a["y2"], i))));
          k.st(o, a["o"], i);
        });
      });
    });
  });
  add("combine_bwd", {"h", "y1", "y2", "rho", "hrstd", "do", "dh", "dy1", "dy2", "drho"}, {"rows"},
      [=](K &k, Args &a) {
        k.loop(k.idx(0), a["rows"], [&](Value n) {
          k.loop(G, [&](Value g) {
            auto w = omegas(k, a["rho"], g);
            Value base = k.addi(k.muli(n, k.idx(D)), k.muli(g, k.idx(d)));
            Value r = k.ld(a["hrstd"], k.addi(k.muli(n, k.idx(G)), g));
            Value dw0 = k.sum(d, [&](Value j) {
              Value i = k.addi(base, j);
              return k.mul(k.ld(a["do"], i), k.mul(k.ld(a["h"], i), r));
            });
            Value dw1 = k.sum(d, [&](Value j) {
              Value i = k.addi(base, j);
              return k.mul(k.ld(a["do"], i), k.ld(a["y1"], i));
            });
            Value dw2 = k.sum(d, [&](Value j) {
              Value i = k.addi(base, j);
              return k.mul(k.ld(a["do"], i), k.ld(a["y2"], i));
            });
            Value meanDot = k.mul(k.mul(w[0], dw0), k.cst(1.0 / d)); // mean(dĥ·ĥ)
            k.loop(d, [&](Value j) {
              Value i = k.addi(base, j);
              Value dO = k.ld(a["do"], i);
              Value hh = k.mul(k.ld(a["h"], i), r);
              k.st(k.mul(r, k.sub(k.mul(w[0], dO), k.mul(hh, meanDot))), a["dh"], i);
              k.st(k.mul(w[1], dO), a["dy1"], i);
              k.st(k.mul(w[2], dO), a["dy2"], i);
            });
            Value wd = k.add(k.mul(w[0], dw0), k.add(k.mul(w[1], dw1), k.mul(w[2], dw2)));
            Value dws[3] = {dw0, dw1, dw2};
            for (int i = 0; i < 3; ++i)
              k.addTo(a["drho"], k.addi(k.muli(g, k.idx(3)), k.idx(i)),
                      k.mul(w[i], k.sub(dws[i], wd)));
          });
        });
      });

  // --- SwiGLU: g = silu(f1) ⊙ f3; df1 = dg·f3·σ(f1)(1 + f1(1 − σ(f1))), df3 = dg·silu(f1).
  add("swiglu_fwd", {"f1", "f3", "g"}, {"n"}, [=](K &k, Args &a) {
    k.loop(k.idx(0), a["n"], [&](Value i) {
      Value x = k.ld(a["f1"], i);
      k.st(k.mul(k.mul(x, k.sigmoid(x)), k.ld(a["f3"], i)), a["g"], i);
    });
  });
  add("swiglu_bwd", {"f1", "f3", "dg", "df1", "df3"}, {"n"}, [=](K &k, Args &a) {
    k.loop(k.idx(0), a["n"], [&](Value i) {
      Value x = k.ld(a["f1"], i), s = k.sigmoid(x), dg = k.ld(a["dg"], i);
      Value dsilu = k.mul(s, k.add(k.cst(1.0), k.mul(x, k.sub(k.cst(1.0), s))));
      k.st(k.mul(k.mul(dg, k.ld(a["f3"], i)), dsilu), a["df1"], i);
      k.st(k.mul(dg, k.mul(x, s)), a["df3"], i);
    });
  });

  // --- Embedding: x[n] = E[tokens[n]]; dE[tokens[n]] += dx[n].
  add("embed_fwd", {"tokens", "E", "x"}, {"rows"}, [=](K &k, Args &a) {
    k.loop(k.idx(0), a["rows"], [&](Value n) {
      Value src = k.muli(k.ld(a["tokens"], n), k.idx(D));
      k.loop(D, [&](Value j) {
        k.st(k.ld(a["E"], k.addi(src, j)), a["x"], k.addi(k.muli(n, k.idx(D)), j));
      });
    });
  });
  add("embed_bwd", {"tokens", "dx", "dE"}, {"rows"}, [=](K &k, Args &a) {
    k.loop(k.idx(0), a["rows"], [&](Value n) {
      Value dst = k.muli(k.ld(a["tokens"], n), k.idx(D));
      k.loop(D, [&](Value j) {
        k.addTo(a["dE"], k.addi(dst, j), k.ld(a["dx"], k.addi(k.muli(n, k.idx(D)), j)));
      });
    });
  });

  // --- Cross-entropy of a block of rows (the trainer walks the rows in
  // blocks, so the logits of the whole batch never exist at once): for rows
  // with target ≥ 0, loss[0] = Σ (lse − logit[target]) and loss[1] = their
  // count; dlogits = (softmax − onehot)·scale[0] (the trainer passes
  // dloss/count over the whole batch), zero rows where the target is negative.
  add("xent", {"logits", "targets", "scale", "loss", "dlogits"}, {"rows"}, [=](K &k, Args &a) {
    Value rows = a["rows"];
    Value gscale = k.ld(a["scale"], k.idx(0));
    Value zero32 = arith::ConstantIntOp::create(k.b, 0, 32);
    Value count = k.sum(k.idx(0), rows, [&](Value n) {
      Value t = memref::LoadOp::create(k.b, a["targets"], ValueRange{n});
      return k.mask(arith::CmpIOp::create(k.b, arith::CmpIPredicate::sge, t, zero32));
    });
    Value total = k.sum(k.idx(0), rows, [&](Value n) {
      Value base = k.muli(n, k.idx(V));
      Value t32 = memref::LoadOp::create(k.b, a["targets"], ValueRange{n});
      Value valid = arith::CmpIOp::create(k.b, arith::CmpIPredicate::sge, t32, zero32);
      Value t = k.select(valid, arith::IndexCastOp::create(k.b, k.b.getIndexType(), t32), k.idx(0));
      Value m = k.maxOver(k.idx(0), k.idx(V),
                          [&](Value j) { return k.ld(a["logits"], k.addi(base, j)); });
      Value z =
          k.sum(V, [&](Value j) { return k.exp(k.sub(k.ld(a["logits"], k.addi(base, j)), m)); });
      Value lse = k.add(m, k.log(z));
      Value vm = k.mask(valid);
      Value coef = k.mul(vm, gscale);
      k.loop(V, [&](Value j) {
        Value i = k.addi(base, j);
        Value p = k.exp(k.sub(k.ld(a["logits"], i), lse));
        Value oh = k.mask(k.cmpi(arith::CmpIPredicate::eq, j, t));
        k.st(k.mul(coef, k.sub(p, oh)), a["dlogits"], i);
      });
      return k.mul(vm, k.sub(lse, k.ld(a["logits"], k.addi(base, t))));
    });
    k.st(total, a["loss"], k.idx(0));
    k.st(count, a["loss"], k.idx(1));
  });

  // --- AdamW (decoupled weight decay), hp = [lr, β1, β2, ε, wd, 1/(1−β1^t),
  // 1/(1−β2^t), gscale]: g' = g·gscale; m = β1 m + (1−β1) g'; v = β2 v + (1−β2) g'²;
  // p −= lr·(m·bc1 / (√(v·bc2) + ε) + wd·p).
  add("adamw", {"p", "g", "m", "v", "hp"}, {"n"}, [=](K &k, Args &a) {
    Value h[8];
    for (int i = 0; i < 8; ++i)
      h[i] = k.ld(a["hp"], k.idx(i));
    k.loop(k.idx(0), a["n"], [&](Value i) {
      Value g = k.mul(k.ld(a["g"], i), h[7]);
      Value m = k.add(k.mul(h[1], k.ld(a["m"], i)), k.mul(k.sub(k.cst(1.0), h[1]), g));
      Value v = k.add(k.mul(h[2], k.ld(a["v"], i)), k.mul(k.sub(k.cst(1.0), h[2]), k.mul(g, g)));
      k.st(m, a["m"], i);
      k.st(v, a["v"], i);
      Value p = k.ld(a["p"], i);
      Value upd = k.add(k.div(k.mul(m, h[5]), k.add(k.sqrt(k.mul(v, h[6])), h[3])), k.mul(h[4], p));
      k.st(k.sub(p, k.mul(h[0], upd)), a["p"], i);
    });
  });
  // --- out[0] += Σ x² (accumulated in f64 within the call).
  add("sumsq", {"x", "out"}, {"n"}, [=](K &k, Args &a) {
    Value s = k.fold(
        k.idx(0), a["n"], arith::ConstantOp::create(k.b, k.b.getF64FloatAttr(0.0)),
        [&](Value i) {
          Value x = arith::ExtFOp::create(k.b, k.f64, k.ld(a["x"], i));
          return arith::MulFOp::create(k.b, x, x).getResult();
        },
        [&](Value acc, Value x) { return arith::AddFOp::create(k.b, acc, x).getResult(); });
    Value prev = arith::ExtFOp::create(k.b, k.f64, k.ld(a["out"], k.idx(0)));
    k.st(arith::TruncFOp::create(k.b, k.f32, arith::AddFOp::create(k.b, prev, s)), a["out"],
         k.idx(0));
  });

  // --- Decoding, one token at a time with the recurrent state carried
  // (MMREC_SPEC section 3's segments; every state has a fixed size):
  // K1, V1 (B, nCmax, D) hold the means of the segment's completed chunks,
  // ksum, vsum (B, D) the sums of the current chunk; nacc (B, G, M) and
  // Pacc (B, G, M, d) the current chunk's write mass and Σ w·v; Mem (B, G, M, d).
  // y1 = Σ_{c<done} softmax_c(q·K1_c/√d) V1_c (0 when done = 0).
  add("decode_level1", {"q", "K1", "V1", "y1"}, {"B", "done"}, [=](K &k, Args &a) {
    Value p = k.buf(nCmax + 1);
    k.loop(k.idx(0), a["B"], [&](Value bi) {
      Value kRow0 = k.muli(bi, k.idx(nCmax * D));
      k.loop(G, [&](Value g) {
        Value qBase = k.addi(k.muli(bi, k.idx(D)), k.muli(g, k.idx(d)));
        level1Read(k, a, p, qBase, kRow0, g, a["done"]);
      });
    });
  });
  // ksum += k, vsum += v; with close = 1 (the token ends its chunk) the chunk
  // means go to K1, V1 at chunk `slot` (count tokens) and the sums restart.
  add("decode_level1_push", {"k", "v", "ksum", "vsum", "K1", "V1"}, {"B", "slot", "count", "close"},
      [=](K &k, Args &a) {
        Value closing = k.cmpi(arith::CmpIPredicate::ne, a["close"], k.idx(0));
        Value inv =
            k.div(k.cst(1.0),
                  arith::UIToFPOp::create(
                      k.b, k.f32, arith::IndexCastOp::create(k.b, k.b.getI64Type(), a["count"])));
        k.loop(k.idx(0), a["B"], [&](Value bi) {
          k.loop(D, [&](Value j) {
            Value i = k.addi(k.muli(bi, k.idx(D)), j);
            Value ks = k.add(k.ld(a["ksum"], i), k.ld(a["k"], i));
            Value vs = k.add(k.ld(a["vsum"], i), k.ld(a["v"], i));
            k.st(k.select(closing, k.cst(0.0), ks), a["ksum"], i);
            k.st(k.select(closing, k.cst(0.0), vs), a["vsum"], i);
            k.ifThen(closing, [&] {
              Value o =
                  k.addi(k.addi(k.muli(bi, k.idx(nCmax * D)), k.muli(a["slot"], k.idx(D))), j);
              k.st(k.mul(ks, inv), a["K1"], o);
              k.st(k.mul(vs, inv), a["V1"], o);
            });
          });
        });
      });
  // The MDI write of one token: w = softmax_s(k·S_s/√d); nacc += w,
  // Pacc += w·v. With close = 1 the chunk is applied to the memory:
  // logβ = clamp(n·logσ(μ), lo, 0), Mem = β·Mem + (1 − β)·P/max(n, 1e-6), and
  // the accumulators restart.
  add("decode_mdi_write", {"k", "v", "S", "mu", "nacc", "Pacc", "Mem"}, {"B", "close"},
      [=](K &k, Args &a) {
        Value w = k.buf(M);
        Value closing = k.cmpi(arith::CmpIPredicate::ne, a["close"], k.idx(0));
        k.loop(k.idx(0), a["B"], [&](Value bi) {
          k.loop(G, [&](Value g) {
            Value kb = k.addi(k.muli(bi, k.idx(D)), k.muli(g, k.idx(d)));
            slotAddress(k, a["k"], a["S"], kb, g, w, k.idx(0));
            k.loop(M, [&](Value s) {
              Value gs = k.addi(k.muli(g, k.idx(M)), s);
              Value ni = k.addi(k.muli(bi, k.idx(G * M)), gs);
              Value ws = k.ld(w, s);
              Value n = k.add(k.ld(a["nacc"], ni), ws);
              Value ls = k.logSigmoid(k.ld(a["mu"], gs));
              Value lb = k.min(k.max(k.mul(n, ls), k.cst(lo)), k.cst(0.0));
              Value beta = k.exp(lb), omb = k.neg(k.expm1(lb));
              Value inv = k.div(k.cst(1.0), k.max(n, k.cst(1e-6)));
              k.st(k.select(closing, k.cst(0.0), n), a["nacc"], ni);
              k.loop(d, [&](Value j) {
                Value pi = k.addi(k.muli(ni, k.idx(d)), j);
                Value P = k.add(k.ld(a["Pacc"], pi), k.mul(ws, k.ld(a["v"], k.addi(kb, j))));
                k.st(k.select(closing, k.cst(0.0), P), a["Pacc"], pi);
                Value mem = k.ld(a["Mem"], pi);
                Value upd = k.add(k.mul(beta, mem), k.mul(omb, k.mul(P, inv)));
                k.st(k.select(closing, upd, mem), a["Mem"], pi);
              });
            });
          });
        });
      });
  // The MDI read of one token: y2 = Σ_s softmax_s(q·S_s/√d)·Mem[s].
  add("decode_mdi_read", {"q", "S", "Mem", "y2"}, {"B"}, [=](K &k, Args &a) {
    Value w = k.buf(M);
    k.loop(k.idx(0), a["B"], [&](Value bi) {
      k.loop(G, [&](Value g) {
        Value qb = k.addi(k.muli(bi, k.idx(D)), k.muli(g, k.idx(d)));
        slotAddress(k, a["q"], a["S"], qb, g, w, k.idx(0));
        k.loop(d, [&](Value j) {
          Value y = k.sum(M, [&](Value s) {
            Value mi = k.addi(
                k.muli(k.addi(k.muli(bi, k.idx(G * M)), k.addi(k.muli(g, k.idx(M)), s)), k.idx(d)),
                j);
            return k.mul(k.ld(w, s), k.ld(a["Mem"], mi));
          });
          k.st(y, a["y2"], k.addi(qb, j));
        });
      });
    });
  });
  return ks;
}

GatedKernelSpec gatedSpec(const TrainConfig &c, bool adjoint, MLIRContext *ctx) {
  GatedKernelSpec s;
  s.name = adjoint ? "train_gated_bwd" : "train_gated_fwd";
  s.adjoint = adjoint;
  s.elementType = Float32Type::get(ctx);
  s.hasInit = true;
  s.channels = c.D;
  s.heads = c.perHead ? c.H : 1;
  s.perHead = c.perHead;
  s.clampMin = c.clampMin;
  s.clampMax = c.clampMax;
  return s;
}

ScanKernelSpec scanSpec(const TrainConfig &c, bool adjoint, MLIRContext *ctx) {
  ScanKernelSpec s;
  s.name = adjoint ? "train_mem_scan_bwd" : "train_mem_scan_fwd";
  s.kind = adjoint ? ScanKernelKind::Adjoint : ScanKernelKind::Forward;
  s.elementType = Float32Type::get(ctx);
  s.hasInit = true;
  s.clampMin = c.clampMin;
  s.clampMax = 0.0;
  s.inner = c.dm();
  return s;
}

} // namespace

std::vector<TrainKernelSig> mlir::mmrec::trainKernelSignatures(const TrainConfig &cfg) {
  std::vector<TrainKernelSig> sigs;
  for (Kernel &k : kernels(cfg))
    sigs.push_back(k.sig);
  // Context-free copies of the generated specs' argument lists.
  MLIRContext ctx;
  for (bool adj : {false, true}) {
    GatedKernelSpec g = gatedSpec(cfg, adj, &ctx);
    sigs.push_back({adj ? "gated_bwd" : "gated_fwd", g.arrayArgs(), {"B", "T"}});
  }
  for (bool adj : {false, true}) {
    ScanKernelSpec s = scanSpec(cfg, adj, &ctx);
    sigs.push_back({adj ? "mem_scan_bwd" : "mem_scan_fwd", s.arrayArgs(), {"B", "T", "N"}});
  }
  return sigs;
}

void mlir::mmrec::buildCpuTrainKernels(OpBuilder &builder, Location loc, ModuleOp module,
                                       const TrainConfig &cfg) {
  MLIRContext *ctx = builder.getContext();
  for (Kernel &kern : kernels(cfg)) {
    ImplicitLocOpBuilder b(loc, builder);
    b.setInsertionPointToEnd(module.getBody());
    SmallVector<Type> types;
    for (const std::string &n : kern.sig.arrays)
      types.push_back(MemRefType::get({ShapedType::kDynamic},
                                      isTokenArray(n) ? Type(b.getI32Type()) : b.getF32Type()));
    for (size_t i = 0; i < kern.sig.indices.size(); ++i)
      types.push_back(b.getIndexType());
    auto func = func::FuncOp::create(b, "train_" + kern.sig.name, b.getFunctionType(types, {}));
    func->setAttr("llvm.emit_c_interface", b.getUnitAttr());
    b.setInsertionPointToStart(func.addEntryBlock());
    Args args;
    unsigned ai = 0;
    for (const std::string &n : kern.sig.arrays)
      args[n] = func.getArgument(ai++);
    for (const std::string &n : kern.sig.indices)
      args[n] = func.getArgument(ai++);
    K k(b);
    kern.body(k, args);
    func::ReturnOp::create(b);
  }
  for (bool adj : {false, true}) {
    buildCpuGatedKernel(builder, loc, module, gatedSpec(cfg, adj, ctx));
    buildCpuScanKernel(builder, loc, module, scanSpec(cfg, adj, ctx));
  }
}
