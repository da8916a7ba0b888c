//===- GatedKernels.cpp - kernels of mmrec.gated_recurrence --------------===//
//
// See GatedKernels.h for the contract and the GPU kernels' structure.
//
// GPU forward, per step t (block = R rows × one head, thread j = channel):
//   acc_r = b_j + Σ_i hs[cur][r][i] · W[i][j]     (shared W, broadcast h)
//   h_r   = z_r · σ(acc_r) + γ_r · h_r            (h_r in a register)
//   hs[nxt][r][j] = h_r; store h; barrier
// GPU adjoint, per step t from T−1 down to 0:
//   g_r  += dh_t;  acc_r = b_j + Σ_i hp[cur][r][i] · W[i][j]   (s_t recomputed)
//   a_r   = g_r z_r s (1 − s);  as[cur][r][j] = a_r;  hp[nxt][r][j] = h_{t−2}
//   store dz, dℓ, grad_pre; barrier
//   g_r   = γ_r g_r + Σ_k as[cur][r][k] · W[j][k]
//
//===----------------------------------------------------------------------===//

#include "lib/Conversion/GatedKernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include <cmath>

using namespace mlir;
using namespace mlir::mmrec;

std::vector<std::string> GatedKernelSpec::arrayArgs() const {
  std::vector<std::string> a = {"z", "log_decay", "gate", "bias"};
  if (hasInit)
    a.push_back("init");
  if (!adjoint) {
    a.push_back("h");
    a.push_back("final");
    if (cooperative)
      a.push_back("sync");
    return a;
  }
  for (const char *n : {"h", "grad_h", "grad_final", "grad_z", "grad_log_decay", "grad_pre",
                        "grad_pre0"})
    a.push_back(n);
  if (hasInit)
    a.push_back("grad_init");
  if (cooperative)
    for (const char *n : {"sync", "pact", "pact0", "gbuf"})
      a.push_back(n);
  return a;
}

int64_t GatedKernelSpec::coopChannels(int64_t D) {
  for (int64_t dc = 1; dc <= kCoopThreads; ++dc)
    if (D % dc == 0 && D / dc <= 128)
      return dc;
  return 0;
}

int64_t GatedKernelSpec::sharedBytes() const {
  if (cooperative && mma) { // bf16 rows (padded), W fragments, warp partials,
                             // the cluster's partial sums
    int64_t x = (groupCluster ? 2 : 1) * ((8 * (mmaK() + 8) * 2 + 15) / 16 * 16);
    int64_t w = (kMmaThreads / 32) * (mmaTilesPerWarp() - mmaRegTiles()) * mmaMTiles() * 32 * 16;
    int64_t red = (kMmaThreads / 32) * mmaMTiles() * 32 * 4 * 4;
    return x + w + red + (cluster > 1 ? cluster * 8 * 32 * 4 : 0);
  }
  if (cooperative) // a tile of staged rows, then the product's partial sums
    return coopRows() * (channels + threads()) * 4;
  int64_t dh = headDim();
  int64_t w = (dh * wStride() * (wHalf() ? 2 : 4) + 15) / 16 * 16;
  int64_t state = 2 * rows * dh * 4;
  return w + (adjoint ? 2 * state : state);
}

namespace {

/// Small scalar helpers shared by the CPU and GPU builders.
struct Gen {
  ImplicitLocOpBuilder &b;
  const GatedKernelSpec &spec;
  bool gpu;
  Type f32;
  Gen(ImplicitLocOpBuilder &b, const GatedKernelSpec &spec, bool gpu)
      : b(b), spec(spec), gpu(gpu), f32(b.getF32Type()) {}

  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, v); }
  Value cst(double v) { return arith::ConstantOp::create(b, b.getF32FloatAttr(v)); }
  Value add(Value x, Value y) { return arith::AddFOp::create(b, x, y); }
  Value sub(Value x, Value y) { return arith::SubFOp::create(b, x, y); }
  Value mul(Value x, Value y) { return arith::MulFOp::create(b, x, y); }
  /// x·y + acc. On CPUs as llvm.intr.fmuladd (fused where the target has
  /// FMA; the x86-64-v2 baseline has not, and math.fma / llvm.intr.fma would
  /// become calls to libm's fmaf).
  Value fma(Value x, Value y, Value acc) {
    if (!gpu)
      return LLVM::FMulAddOp::create(b, x, y, acc);
    return math::FmaOp::create(b, x, y, acc);
  }
  Value addi(Value x, Value y) { return arith::AddIOp::create(b, x, y); }
  Value subi(Value x, Value y) { return arith::SubIOp::create(b, x, y); }
  Value muli(Value x, Value y) { return arith::MulIOp::create(b, x, y); }
  Value minui(Value x, Value y) { return arith::MinUIOp::create(b, x, y); }
  Value ult(Value x, Value y) { return arith::CmpIOp::create(b, arith::CmpIPredicate::ult, x, y); }
  Value ugt(Value x, Value y) { return arith::CmpIOp::create(b, arith::CmpIPredicate::ugt, x, y); }
  Value eq(Value x, Value y) { return arith::CmpIOp::create(b, arith::CmpIPredicate::eq, x, y); }
  Value andi(Value x, Value y) { return arith::AndIOp::create(b, x, y); }
  Value select(Value c, Value x, Value y) { return arith::SelectOp::create(b, c, x, y); }

  Value ptx(StringRef code, Value x) {
    return NVVM::InlinePtxOp::create(b, TypeRange{f32}, ValueRange{x}, ValueRange{}, code,
                                     Value())
        ->getResult(0);
  }
  /// exp(x): ex2.approx on GPUs (no libdevice), math.exp on CPUs.
  Value exp(Value x) {
    if (!gpu)
      return math::ExpOp::create(b, x);
    return ptx("ex2.approx.ftz.f32 $0, $1;", mul(x, cst(M_LOG2E)));
  }
  /// σ(x) = 1 / (1 + exp(−x)); exp(−x) may overflow to +inf, giving 0.
  Value sigmoid(Value x) {
    Value den = add(cst(1.0), exp(arith::NegFOp::create(b, x)));
    if (!gpu)
      return arith::DivFOp::create(b, cst(1.0), den);
    return ptx("rcp.approx.ftz.f32 $0, $1;", den);
  }
  Value clamp(Value l) {
    return arith::MinimumFOp::create(b, arith::MaximumFOp::create(b, l, cst(spec.clampMin)),
                                     cst(spec.clampMax));
  }
  /// 1 where lo ≤ ℓ ≤ hi (the clamp passes the gradient), else 0.
  Value clampMask(Value l) {
    Value in = andi(arith::CmpFOp::create(b, arith::CmpFPredicate::OGE, l, cst(spec.clampMin)),
                    arith::CmpFOp::create(b, arith::CmpFPredicate::OLE, l, cst(spec.clampMax)));
    return select(in, cst(1.0), cst(0.0));
  }
  Value ld(Value mem, Value i) {
    Value v = memref::LoadOp::create(b, mem, ValueRange{i});
    if (v.getType() != f32)
      v = arith::ExtFOp::create(b, f32, v);
    return v;
  }
  void st(Value v, Value mem, Value i) {
    Type et = llvm::cast<MemRefType>(mem.getType()).getElementType();
    if (et != f32)
      v = arith::TruncFOp::create(b, et, v);
    memref::StoreOp::create(b, v, mem, ValueRange{i});
  }
  void stIf(Value cond, Value v, Value mem, Value i) {
    auto ifOp = scf::IfOp::create(b, TypeRange{}, cond, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(ifOp.thenBlock());
    st(v, mem, i);
  }
  /// for (i = lo; i < hi; ++i) body(i), no loop-carried values.
  template <class F> void loop(Value lo, Value hi, F body) {
    auto f = scf::ForOp::create(b, lo, hi, idx(1));
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(f.getBody());
    body(f.getInductionVar());
  }
};

/// The array arguments, by name.
struct Arrays {
  Value z, l, w, bias, init, h, fin, dh, dfin, dz, dl, dpre, dpre0, dinit;
  Value sync, pact, pact0, gbuf; // cooperative kernels
  template <class Next> Arrays(const GatedKernelSpec &s, Next next) {
    z = next(); l = next(); w = next(); bias = next();
    if (s.hasInit) init = next();
    h = next();
    if (!s.adjoint) {
      fin = next();
      if (s.cooperative) sync = next();
      return;
    }
    dh = next(); dfin = next(); dz = next(); dl = next(); dpre = next(); dpre0 = next();
    if (s.hasInit) dinit = next();
    if (s.cooperative) { sync = next(); pact = next(); pact0 = next(); gbuf = next(); }
  }
};

SmallVector<Type> argTypes(const GatedKernelSpec &s, MLIRContext *ctx) {
  SmallVector<Type> t;
  Type f32 = Float32Type::get(ctx);
  for (const std::string &n : s.arrayArgs()) {
    Type e = s.elementType;
    if (n == "log_decay" || n == "grad_log_decay" || n == "pact" || n == "pact0" || n == "gbuf")
      e = f32;
    else if (n == "sync")
      e = IntegerType::get(ctx, 32);
    t.push_back(MemRefType::get({ShapedType::kDynamic}, e));
  }
  // B, T; the cooperative adjoint also takes its chunk of steps [lo, hi)
  // and the chunk capacity of `pact`.
  t.append(s.cooperative && s.adjoint ? 5 : 2, IndexType::get(ctx));
  return t;
}

/// A `gpu.func` kernel for `spec` with a known block size of `threads`,
/// the builder at the start of its body.
gpu::GPUFuncOp createGpuKernel(ImplicitLocOpBuilder &b, Operation *gpuModule,
                               const GatedKernelSpec &spec, int64_t threads) {
  b.setInsertionPointToEnd(&gpuModule->getRegion(0).front());
  auto func = gpu::GPUFuncOp::create(b, spec.name,
                                     b.getFunctionType(argTypes(spec, b.getContext()), {}));
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
  func.setKnownBlockSizeAttr(b.getDenseI32ArrayAttr({int32_t(threads), 1, 1}));
  b.setInsertionPointToStart(&func.getBody().front());
  return func;
}

/// A volatile load of `type` at element `i` of `mem` (what other blocks wrote
/// during this launch: L1 is not coherent across SMs).
Value volatileLoad(ImplicitLocOpBuilder &b, Value mem, Value i, Type type, unsigned align) {
  auto mt = llvm::cast<MemRefType>(mem.getType());
  Value base = memref::ExtractAlignedPointerAsIndexOp::create(b, mem);
  auto ptrTy = LLVM::LLVMPointerType::get(b.getContext());
  Value base64 = arith::IndexCastOp::create(b, b.getI64Type(), base);
  Value p = LLVM::IntToPtrOp::create(b, ptrTy, base64);
  Value i64 = arith::IndexCastOp::create(b, b.getI64Type(), i);
  Value gep = LLVM::GEPOp::create(b, ptrTy, mt.getElementType(), p, ValueRange{i64});
  return LLVM::LoadOp::create(b, type, gep, align, /*isVolatile=*/true);
}

} // namespace

//===----------------------------------------------------------------------===//
// CPU
//===----------------------------------------------------------------------===//

void mlir::mmrec::buildCpuGatedKernel(OpBuilder &builder, Location loc, ModuleOp module,
                                      const GatedKernelSpec &spec) {
  ImplicitLocOpBuilder b(loc, builder);
  b.setInsertionPointToEnd(module.getBody());
  auto func = func::FuncOp::create(b, spec.name,
                                   b.getFunctionType(argTypes(spec, b.getContext()), {}));
  func->setAttr("llvm.emit_c_interface", b.getUnitAttr());
  b.setInsertionPointToStart(func.addEntryBlock());
  Gen k(b, spec, /*gpu=*/false);
  unsigned ai = 0;
  Arrays a(spec, [&]() { return func.getArgument(ai++); });
  Value B = func.getArgument(ai++), T = func.getArgument(ai++);
  const int64_t D = spec.channels, H = spec.heads, dh = spec.headDim();
  Value c0 = k.idx(0), c1 = k.idx(1), cD = k.idx(D), cH = k.idx(H), cdh = k.idx(dh);
  auto buf = [&]() {
    return memref::AllocaOp::create(b, MemRefType::get({D}, k.f32)).getResult();
  };
  Value hp = buf(), acc = buf(), g = buf(), av = buf();
  auto ldb = [&](Value mem, Value i) { return memref::LoadOp::create(b, mem, ValueRange{i}).getResult(); };
  auto stb = [&](Value v, Value mem, Value i) { memref::StoreOp::create(b, v, mem, ValueRange{i}); };
  // acc[hd·dh + j] += Σ_i x[hd·dh + i] · W[hd][i][j]  (j contiguous).
  auto productW = [&](Value x) {
    k.loop(c0, cH, [&](Value hd) {
      Value base = k.muli(hd, cdh), wBase = k.muli(hd, k.idx(dh * dh));
      k.loop(c0, cdh, [&](Value i) {
        Value xi = ldb(x, k.addi(base, i));
        Value wRow = k.addi(wBase, k.muli(i, cdh));
        k.loop(c0, cdh, [&](Value j) {
          Value o = k.addi(base, j);
          stb(k.fma(xi, k.ld(a.w, k.addi(wRow, j)), ldb(acc, o)), acc, o);
        });
      });
    });
  };
  // acc[hd·dh + i] += Σ_j y[hd·dh + j] · W[hd][i][j]  (a dot product per i).
  auto productWt = [&](Value y) {
    k.loop(c0, cH, [&](Value hd) {
      Value base = k.muli(hd, cdh), wBase = k.muli(hd, k.idx(dh * dh));
      k.loop(c0, cdh, [&](Value i) {
        Value wRow = k.addi(wBase, k.muli(i, cdh));
        auto dot = scf::ForOp::create(b, c0, cdh, c1, ValueRange{k.cst(0.0)});
        {
          OpBuilder::InsertionGuard gd(b);
          b.setInsertionPointToStart(dot.getBody());
          Value j = dot.getInductionVar();
          Value s = k.fma(ldb(y, k.addi(base, j)), k.ld(a.w, k.addi(wRow, j)),
                          dot.getRegionIterArgs()[0]);
          scf::YieldOp::create(b, s);
        }
        Value o = k.addi(base, i);
        stb(k.add(ldb(acc, o), dot.getResult(0)), acc, o);
      });
    });
  };

  k.loop(c0, B, [&](Value bi) {
    Value rowD = k.muli(bi, cD);
    auto at = [&](Value t, Value j) { return k.addi(k.muli(k.addi(k.muli(bi, T), t), cD), j); };
    auto initAt = [&](Value j) { return spec.hasInit ? k.ld(a.init, k.addi(rowD, j)) : k.cst(0.0); };
    if (!spec.adjoint) {
      k.loop(c0, cD, [&](Value j) { stb(initAt(j), hp, j); });
      k.loop(c0, T, [&](Value t) {
        k.loop(c0, cD, [&](Value j) { stb(k.ld(a.bias, j), acc, j); });
        productW(hp);
        k.loop(c0, cD, [&](Value j) {
          Value s = k.sigmoid(ldb(acc, j));
          Value gamma = k.exp(k.clamp(k.ld(a.l, at(t, j))));
          Value hn = k.add(k.mul(k.ld(a.z, at(t, j)), s), k.mul(gamma, ldb(hp, j)));
          k.st(hn, a.h, at(t, j));
          stb(hn, hp, j);
        });
      });
      k.loop(c0, cD, [&](Value j) { k.st(ldb(hp, j), a.fin, k.addi(rowD, j)); });
      return;
    }
    k.loop(c0, cD, [&](Value j) { stb(k.ld(a.dfin, k.addi(rowD, j)), g, j); });
    k.loop(c0, T, [&](Value s) {
      Value t = k.subi(k.subi(T, c1), s);
      Value notFirst = k.ugt(t, c0);
      Value tPrev = k.select(notFirst, k.subi(t, c1), c0);
      k.loop(c0, cD, [&](Value j) {
        Value fromH = k.ld(a.h, at(tPrev, j));
        stb(k.select(notFirst, fromH, initAt(j)), hp, j);
        stb(k.add(ldb(g, j), k.ld(a.dh, at(t, j))), g, j);
        stb(k.ld(a.bias, j), acc, j);
      });
      productW(hp);
      k.loop(c0, cD, [&](Value j) {
        Value sg = k.sigmoid(ldb(acc, j));
        Value gj = ldb(g, j);
        Value lraw = k.ld(a.l, at(t, j));
        Value gamma = k.exp(k.clamp(lraw));
        Value av_ = k.mul(k.mul(gj, k.ld(a.z, at(t, j))), k.mul(sg, k.sub(k.cst(1.0), sg)));
        stb(av_, av, j);
        k.st(k.mul(gj, sg), a.dz, at(t, j));
        k.st(k.mul(k.clampMask(lraw), k.mul(k.mul(gj, gamma), ldb(hp, j))), a.dl, at(t, j));
        auto ifOp = scf::IfOp::create(b, TypeRange{}, notFirst, true);
        {
          OpBuilder::InsertionGuard gd(b);
          b.setInsertionPointToStart(ifOp.thenBlock());
          k.st(av_, a.dpre, at(tPrev, j));
          b.setInsertionPointToStart(ifOp.elseBlock());
          k.st(av_, a.dpre0, k.addi(rowD, j));
        }
        stb(k.mul(gamma, gj), acc, j);
      });
      productWt(av);
      k.loop(c0, cD, [&](Value j) { stb(ldb(acc, j), g, j); });
    });
    k.loop(c0, cD, [&](Value j) {
      k.st(k.cst(0.0), a.dpre, at(k.subi(T, c1), j));
      if (spec.hasInit)
        k.st(ldb(g, j), a.dinit, k.addi(rowD, j));
    });
  });
  func::ReturnOp::create(b);
}

//===----------------------------------------------------------------------===//
// GPU
//===----------------------------------------------------------------------===//

void mlir::mmrec::buildGpuGatedKernel(OpBuilder &builder, Location loc, Operation *gpuModule,
                                      const GatedKernelSpec &spec) {
  MLIRContext *ctx = builder.getContext();
  ImplicitLocOpBuilder b(loc, builder);
  gpu::GPUFuncOp func = createGpuKernel(b, gpuModule, spec, spec.threads());
  Gen k(b, spec, /*gpu=*/true);
  Type f32 = k.f32;
  unsigned ai = 0;
  Arrays a(spec, [&]() { return func.getArgument(ai++); });
  Value B = func.getArgument(ai++), T = func.getArgument(ai++);
  const int64_t D = spec.channels, H = spec.heads, dh = spec.headDim(), R = spec.rows;
  const int64_t WS = spec.wStride(), P = std::max<int64_t>(spec.prefetch, 2);
  Value c0 = k.idx(0), c1 = k.idx(1), cD = k.idx(D);

  // Shared memory: W's block, then the double-buffered states (and, for the
  // adjoint, the double-buffered pre-activation gradients).
  auto wg = gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup);
  auto bytesType = MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                                   MemRefLayoutAttrInterface{}, wg);
  Value smem = gpu::DynamicSharedMemoryOp::create(b, bytesType);
  const bool wHalf = spec.wHalf();
  int64_t wBytes = (dh * WS * (wHalf ? 2 : 4) + 15) / 16 * 16, stateLen = 2 * R * dh;
  auto view = [&](int64_t byteOffset, int64_t len) {
    auto t = MemRefType::get({len}, f32, MemRefLayoutAttrInterface{}, wg);
    return memref::ViewOp::create(b, t, smem, k.idx(byteOffset), ValueRange{}).getResult();
  };
  Value Ws = wHalf ? memref::ViewOp::create(b,
                                            MemRefType::get({dh * WS}, b.getBF16Type(),
                                                            MemRefLayoutAttrInterface{}, wg),
                                            smem, k.idx(0), ValueRange{})
                         .getResult()
                   : view(0, dh * WS);
  Value hs = view(wBytes, stateLen);
  Value as = spec.adjoint ? view(wBytes + stateLen * 4, stateLen) : Value();

  Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  Value bid = gpu::BlockIdOp::create(b, gpu::Dimension::x);
  Value head = arith::RemUIOp::create(b, bid, k.idx(H));
  Value group = arith::DivUIOp::create(b, bid, k.idx(H));
  Value active = k.ult(tid, k.idx(dh));
  Value j = k.minui(tid, k.idx(dh - 1)); // clamped: loads stay in bounds
  Value chan = k.addi(k.muli(head, k.idx(dh)), j);
  SmallVector<Value> row, valid;
  for (int64_t r = 0; r < R; ++r) {
    Value bRow = k.addi(k.muli(group, k.idx(R)), k.idx(r));
    valid.push_back(k.andi(k.ult(bRow, B), active));
    row.push_back(k.minui(bRow, k.subi(B, c1)));
  }
  auto at = [&](int64_t r, Value t) { return k.addi(k.muli(k.addi(k.muli(row[r], T), t), cD), chan); };
  auto stateAt = [&](int64_t r) { return k.addi(k.muli(row[r], cD), chan); };
  auto ldS = [&](Value mem, Value i) { return memref::LoadOp::create(b, mem, ValueRange{i}).getResult(); };
  auto stS = [&](Value v, Value mem, Value i) { memref::StoreOp::create(b, v, mem, ValueRange{i}); };
  auto barrier = [&]() { gpu::BarrierOp::create(b); };

  // W's block: Ws[i·WS + j] = W[head][i][j] (dense: W[i][j]).
  {
    Value wBase = k.muli(head, k.idx(dh * dh));
    k.loop(c0, k.idx(dh), [&](Value i) {
      Value v = k.ld(a.w, k.addi(wBase, k.addi(k.muli(i, k.idx(dh)), j)));
      if (wHalf)
        v = arith::TruncFOp::create(b, b.getBF16Type(), v);
      stS(v, Ws, k.addi(k.muli(i, k.idx(WS)), j));
    });
  }
  Value bias = k.ld(a.bias, chan);
  auto initOf = [&](int64_t r) { return spec.hasInit ? k.ld(a.init, stateAt(r)) : k.cst(0.0); };

  // Σ_i x[base + i] · Ws[i·WS + j] for R rows of x at xBase + r·dh (shared),
  // with 4 partial sums per row for instruction-level parallelism.
  auto productW = [&](Value x, Value xBase, bool transposed) {
    SmallVector<SmallVector<Value, 4>> part(R, SmallVector<Value, 4>(4, k.cst(0.0)));
    const bool vec4 = dh % 4 == 0;
    auto vt = VectorType::get({4}, f32);
    for (int64_t i = 0; i < dh; i += (vec4 ? 4 : 1)) {
      int64_t n = vec4 ? 4 : 1;
      SmallVector<Value, 4> w;
      for (int64_t q = 0; q < n; ++q) {
        // W[i+q][j] (rows of the block) or W[j][i+q] (the transposed product).
        Value wi = transposed ? k.addi(k.muli(j, k.idx(WS)), k.idx(i + q))
                              : k.addi(k.idx((i + q) * WS), j);
        Value wv = ldS(Ws, wi);
        w.push_back(wHalf ? arith::ExtFOp::create(b, f32, wv).getResult() : wv);
      }
      for (int64_t r = 0; r < R; ++r) {
        Value xi = k.addi(xBase, k.idx(r * dh + i));
        if (vec4) {
          Value v = vector::LoadOp::create(b, vt, x, ValueRange{xi});
          for (int64_t q = 0; q < 4; ++q)
            part[r][q] = k.fma(vector::ExtractOp::create(b, v, q), w[q], part[r][q]);
        } else {
          part[r][i % 4] = k.fma(ldS(x, xi), w[0], part[r][i % 4]);
        }
      }
    }
    SmallVector<Value> out;
    for (int64_t r = 0; r < R; ++r)
      out.push_back(k.add(k.add(part[r][0], part[r][1]), k.add(part[r][2], part[r][3])));
    return out;
  };

  if (!spec.adjoint) {
    // Prologue: state buffer 0 holds h_{-1}; the first P steps' inputs load.
    SmallVector<Value> carried;
    for (int64_t r = 0; r < R; ++r) {
      Value h0 = initOf(r);
      stS(h0, hs, k.addi(k.idx(r * dh), j));
      carried.push_back(h0);
    }
    barrier();
    auto loadStep = [&](Value t, SmallVector<Value> &out) {
      for (int64_t r = 0; r < R; ++r) {
        out.push_back(k.ld(a.z, at(r, t)));
        out.push_back(k.ld(a.l, at(r, t)));
      }
    };
    Value last = k.subi(T, c1);
    for (int64_t p = 0; p < P; ++p)
      loadStep(k.minui(k.idx(p), last), carried);
    auto loopOp = scf::ForOp::create(b, c0, T, c1, carried);
    {
      OpBuilder::InsertionGuard gd(b);
      b.setInsertionPointToStart(loopOp.getBody());
      Value t = loopOp.getInductionVar();
      auto it = loopOp.getRegionIterArgs();
      SmallVector<Value> hOld(it.begin(), it.begin() + R);
      SmallVector<Value> queue(it.begin() + R, it.end());
      SmallVector<Value> next;
      loadStep(k.minui(k.addi(t, k.idx(P)), last), next);
      Value cur = arith::AndIOp::create(b, t, c1);
      Value curBase = k.muli(cur, k.idx(R * dh));
      Value nxtBase = k.muli(k.subi(c1, cur), k.idx(R * dh));
      SmallVector<Value> acc = productW(hs, curBase, /*transposed=*/false);
      SmallVector<Value> yields;
      for (int64_t r = 0; r < R; ++r) {
        Value z = queue[2 * r], l = queue[2 * r + 1];
        Value hn = k.add(k.mul(z, k.sigmoid(k.add(acc[r], bias))),
                         k.mul(k.exp(k.clamp(l)), hOld[r]));
        stS(hn, hs, k.addi(nxtBase, k.addi(k.idx(r * dh), j)));
        k.stIf(valid[r], hn, a.h, at(r, t));
        yields.push_back(hn);
      }
      barrier();
      yields.append(queue.begin() + 2 * R, queue.end());
      yields.append(next.begin(), next.end());
      scf::YieldOp::create(b, yields);
    }
    for (int64_t r = 0; r < R; ++r)
      k.stIf(valid[r], loopOp.getResult(r), a.fin, stateAt(r));
    gpu::ReturnOp::create(b);
    return;
  }

  // Adjoint. Per step t the inputs are z_t, ℓ_t, dh_t and hv_t = h_{t−1}
  // (init or 0 at t = 0); hp[cur] holds hv_t of the block's channels.
  Value last = k.subi(T, c1);
  auto hvAt = [&](int64_t r, Value t) {
    Value notFirst = k.ugt(t, c0);
    Value fromH = k.ld(a.h, at(r, k.select(notFirst, k.subi(t, c1), c0)));
    return k.select(notFirst, fromH, initOf(r));
  };
  // Logical step s runs t = T−1−s; steps past the end repeat t = 0.
  auto timeOf = [&](Value s) { return k.subi(last, k.minui(s, last)); };
  auto loadStep = [&](Value s, SmallVector<Value> &out) {
    Value t = timeOf(s);
    for (int64_t r = 0; r < R; ++r) {
      out.push_back(k.ld(a.z, at(r, t)));
      out.push_back(k.ld(a.l, at(r, t)));
      out.push_back(k.ld(a.dh, at(r, t)));
      out.push_back(hvAt(r, t));
    }
  };
  SmallVector<Value> carried;
  for (int64_t r = 0; r < R; ++r)
    carried.push_back(k.ld(a.dfin, stateAt(r)));
  for (int64_t p = 0; p < P; ++p)
    loadStep(k.idx(p), carried);
  // hp[0] = hv of step 0 (t = T−1).
  for (int64_t r = 0; r < R; ++r)
    stS(carried[R + 4 * r + 3], hs, k.addi(k.idx(r * dh), j));
  barrier();
  auto loopOp = scf::ForOp::create(b, c0, T, c1, carried);
  {
    OpBuilder::InsertionGuard gd(b);
    b.setInsertionPointToStart(loopOp.getBody());
    Value s = loopOp.getInductionVar();
    Value t = k.subi(last, s);
    auto it = loopOp.getRegionIterArgs();
    SmallVector<Value> g(it.begin(), it.begin() + R);
    SmallVector<Value> queue(it.begin() + R, it.end());
    SmallVector<Value> next;
    loadStep(k.addi(s, k.idx(P)), next);
    Value cur = arith::AndIOp::create(b, s, c1);
    Value curBase = k.muli(cur, k.idx(R * dh));
    Value nxtBase = k.muli(k.subi(c1, cur), k.idx(R * dh));
    Value notFirst = k.ugt(t, c0);
    SmallVector<Value> acc = productW(hs, curBase, /*transposed=*/false);
    SmallVector<Value> gamma;
    for (int64_t r = 0; r < R; ++r) {
      Value z = queue[4 * r], lraw = queue[4 * r + 1], dy = queue[4 * r + 2], hv = queue[4 * r + 3];
      Value hvNext = queue[4 * R + 4 * r + 3]; // hv of step s+1 (t−1)
      g[r] = k.add(g[r], dy);
      Value sg = k.sigmoid(k.add(acc[r], bias));
      Value gm = k.exp(k.clamp(lraw));
      gamma.push_back(gm);
      Value av = k.mul(k.mul(g[r], z), k.mul(sg, k.sub(k.cst(1.0), sg)));
      stS(av, as, k.addi(curBase, k.addi(k.idx(r * dh), j)));
      stS(hvNext, hs, k.addi(nxtBase, k.addi(k.idx(r * dh), j)));
      k.stIf(valid[r], k.mul(g[r], sg), a.dz, at(r, t));
      k.stIf(valid[r], k.mul(k.clampMask(lraw), k.mul(k.mul(g[r], gm), hv)), a.dl, at(r, t));
      auto ifOp = scf::IfOp::create(b, TypeRange{}, valid[r], false);
      {
        OpBuilder::InsertionGuard g2(b);
        b.setInsertionPointToStart(ifOp.thenBlock());
        auto inner = scf::IfOp::create(b, TypeRange{}, notFirst, true);
        b.setInsertionPointToStart(inner.thenBlock());
        k.st(av, a.dpre, at(r, k.select(notFirst, k.subi(t, c1), c0)));
        b.setInsertionPointToStart(inner.elseBlock());
        k.st(av, a.dpre0, stateAt(r));
      }
    }
    barrier();
    SmallVector<Value> back = productW(as, curBase, /*transposed=*/true);
    SmallVector<Value> yields;
    for (int64_t r = 0; r < R; ++r)
      yields.push_back(k.fma(gamma[r], g[r], back[r]));
    yields.append(queue.begin() + 4 * R, queue.end());
    yields.append(next.begin(), next.end());
    scf::YieldOp::create(b, yields);
  }
  for (int64_t r = 0; r < R; ++r) {
    k.stIf(valid[r], k.cst(0.0), a.dpre, at(r, last));
    if (spec.hasInit)
      k.stIf(valid[r], loopOp.getResult(r), a.dinit, stateAt(r));
  }
  gpu::ReturnOp::create(b);
}

//===----------------------------------------------------------------------===//
// GPU, dense gate: the cooperative kernels
//===----------------------------------------------------------------------===//
//
// Forward, per step t and tile of batch rows: the rows of h_{t-1} (other
// blocks' outputs) are staged in shared memory, the block's products
// x·W[:, c0..c0+Dc) are formed — on tensor cores with W's slice held as mma
// fragments (spec.mma), else by FP32 FMAs streaming W — and thread (b, c)
// finishes h_t; then a grid-wide barrier (one counter; thread 0 of each
// block adds 1 and spins until it reads (t+1)·blocks, with acquire-release
// fences around it). Adjoint, per chunk of steps and per step: thread (b, c)
// forms a_t from the chunk's pre-activations and publishes it in grad_pre;
// barrier; back = a_t·W[c0..c0+Dc, :]ᵀ the same two ways; g ← γ·g + back.
// With groupCluster (tensor cores only) a row group is one thread-block
// cluster: the rows pass between its blocks through distributed shared
// memory and the grid barrier becomes the cluster barrier (see `publish`).

void mlir::mmrec::buildGpuCoopGatedKernel(OpBuilder &builder, Location loc, Operation *gpuModule,
                                          const GatedKernelSpec &spec) {
  MLIRContext *ctx = builder.getContext();
  ImplicitLocOpBuilder b(loc, builder);
  const int64_t NT = spec.threads();
  gpu::GPUFuncOp func = createGpuKernel(b, gpuModule, spec, NT);
  // .reqnctapercluster: the runtime launches in clusters.
  if (spec.mma && (spec.cluster > 1 || spec.groupCluster))
    func->setAttr(NVVM::NVVMDialect::getClusterDimAttrName(),
                  b.getDenseI32ArrayAttr(
                      {int32_t(spec.groupCluster ? spec.channels / spec.channelsPerBlock
                                                 : spec.cluster),
                       1, 1}));
  Gen k(b, spec, /*gpu=*/true);
  Type f32 = k.f32, i32 = b.getI32Type();
  unsigned ai = 0;
  Arrays a(spec, [&]() { return func.getArgument(ai++); });
  Value B = func.getArgument(ai++), T = func.getArgument(ai++);
  Value tLo, tHi, cap;
  if (spec.adjoint) {
    tLo = func.getArgument(ai++);
    tHi = func.getArgument(ai++);
    cap = func.getArgument(ai++);
  }
  const int64_t D = spec.channels, Dc = spec.channelsPerBlock, KS = NT / Dc;
  const int64_t RB = spec.coopRows(), NB = D / Dc;
  const int64_t KC = (D + KS - 1) / KS; // k per thread (forward)
  Value c0 = k.idx(0), c1 = k.idx(1), cD = k.idx(D);

  auto wg = gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup);
  Value smem = gpu::DynamicSharedMemoryOp::create(
      b, MemRefType::get({ShapedType::kDynamic}, b.getI8Type(), MemRefLayoutAttrInterface{}, wg));
  Value X = memref::ViewOp::create(
                b, MemRefType::get({RB * D}, f32, MemRefLayoutAttrInterface{}, wg), smem,
                k.idx(0), ValueRange{})
                .getResult();
  Value part = memref::ViewOp::create(
                   b, MemRefType::get({NT * RB}, f32, MemRefLayoutAttrInterface{}, wg), smem,
                   k.idx(RB * D * 4), ValueRange{})
                   .getResult();
  Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  Value bid = gpu::BlockIdOp::create(b, gpu::Dimension::x);
  Value chanBase = k.muli(bid, k.idx(Dc));
  // Row groups (blockIdx.y of gridDim.y, at most GatedKernelSpec::
  // kCoopMaxGroups): batch rows are independent recurrences, so group g owns
  // the tiles of TR rows that start at g·TR, g·TR + groups·TR, ..., and its
  // D / Dc blocks meet at their own grid barrier (counter word 8·g of
  // `sync`). One group is the whole batch.
  const int64_t TR = spec.mma ? GatedKernelSpec::kCoopGroupRows : RB;
  Value grp = gpu::BlockIdOp::create(b, gpu::Dimension::y);
  Value groups = gpu::GridDimOp::create(b, gpu::Dimension::y);
  Value tileStart = k.muli(grp, k.idx(TR)), tileStep = k.muli(groups, k.idx(TR));
  Value counter = k.muli(grp, k.idx(8));
  auto ownsRow = [&](Value bRow) {
    return k.eq(arith::RemUIOp::create(b, arith::DivUIOp::create(b, bRow, k.idx(TR)), groups),
                grp);
  };

  // Loads of what other blocks wrote during this launch: volatile (L1 is
  // not coherent across SMs).
  auto vld = [&](Value mem, Value i) -> Value {
    auto mt = llvm::cast<MemRefType>(mem.getType());
    Value v = volatileLoad(b, mem, i, mt.getElementType(), mt.getElementTypeBitWidth() / 8);
    if (v.getType() != f32 && llvm::isa<FloatType>(v.getType()))
      v = arith::ExtFOp::create(b, f32, v);
    return v;
  };
  auto fence = [&]() {
    NVVM::InlinePtxOp::create(b, TypeRange{}, ValueRange{}, ValueRange{}, "fence.acq_rel.gpu;",
                              Value());
  };
  // All blocks have finished step `t` (an index) when this returns.
  auto gridBarrier = [&](Value t) {
    gpu::BarrierOp::create(b);
    auto ifT0 = scf::IfOp::create(b, TypeRange{}, k.ult(tid, c1), false);
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(ifT0.thenBlock());
      fence();
      memref::AtomicRMWOp::create(b, arith::AtomicRMWKind::addi,
                                  arith::ConstantIntOp::create(b, 1, 32), a.sync,
                                  ValueRange{counter});
      Value target = arith::IndexCastOp::create(b, i32, k.muli(k.addi(t, c1), k.idx(NB)));
      auto spin = scf::WhileOp::create(b, TypeRange{}, ValueRange{});
      {
        OpBuilder::InsertionGuard g2(b);
        b.createBlock(&spin.getBefore());
        Value v = vld(a.sync, counter);
        scf::ConditionOp::create(
            b, arith::CmpIOp::create(b, arith::CmpIPredicate::slt, v, target), ValueRange{});
        b.createBlock(&spin.getAfter());
        scf::YieldOp::create(b);
      }
      fence();
    }
    gpu::BarrierOp::create(b);
  };
  auto forRange = [&](Value lo, Value hi, Value step, auto body) {
    auto f = scf::ForOp::create(b, lo, hi, step);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(f.getBody());
    body(f.getInductionVar());
  };
  // body(bRow, chan) for every row of this block's group and channel of the
  // block, a (row, channel) pair a thread.
  auto forOwned = [&](auto body) {
    forRange(tid, k.muli(B, k.idx(Dc)), k.idx(NT), [&](Value e) {
      Value bRow = arith::DivUIOp::create(b, e, k.idx(Dc));
      auto op = scf::IfOp::create(b, TypeRange{}, ownsRow(bRow), false);
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(op.thenBlock());
      body(bRow, k.addi(chanBase, arith::RemUIOp::create(b, e, k.idx(Dc))));
    });
  };
  // X[r][0..D) = src[rowStart(b0 + r) ..] as fp32 for the tile's rows (rows
  // past B repeat row B−1): 16-byte volatile loads, all in flight at once.
  const int64_t es = spec.elementType.getIntOrFloatBitWidth() / 8;
  const int64_t V = D % (16 / es) == 0 ? 16 / es : 1;
  auto stage = [&](Value src, auto rowStart, Value b0) {
    Value perRow = k.idx(D / V);
    forRange(tid, k.idx(RB * D / V), k.idx(NT), [&](Value q) {
      Value r = arith::DivUIOp::create(b, q, perRow);
      Value col = k.muli(arith::RemUIOp::create(b, q, perRow), k.idx(V));
      Value bRow = k.minui(k.addi(b0, r), k.subi(B, c1));
      Value at = k.addi(rowStart(bRow), col);
      auto mt = llvm::cast<MemRefType>(src.getType());
      auto vt = VectorType::get({V}, mt.getElementType());
      Value v = volatileLoad(b, src, at, vt, unsigned(V * es));
      if (mt.getElementType() != f32)
        v = arith::ExtFOp::create(b, VectorType::get({V}, f32), v);
      vector::StoreOp::create(b, v, X, ValueRange{k.addi(k.muli(r, cD), col)});
    });
  };
  auto stageZero = [&]() {
    forRange(tid, k.idx(RB * D), k.idx(NT), [&](Value q) {
      memref::StoreOp::create(b, k.cst(0.0), X, ValueRange{q});
    });
  };
  auto initAt = [&](Value bRow, Value chan) {
    return spec.hasInit ? k.ld(a.init, k.addi(k.muli(bRow, cD), chan)) : k.cst(0.0);
  };
  auto seqAt = [&](Value bRow, Value t, Value chan) {
    return k.addi(k.muli(k.addi(k.muli(bRow, T), t), cD), chan);
  };

  // The forward's last part for (row, channel) given the pre-activation p:
  // h_t = z·σ(p) + γ·h_{t-1}, stored (and the final state at t = T−1).
  auto finishForward = [&](Value bRow, Value t, Value chan, Value notFirst, Value p) {
    auto ifh = scf::IfOp::create(b, TypeRange{f32}, notFirst, true);
    {
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(ifh.thenBlock());
      scf::YieldOp::create(b, vld(a.h, seqAt(bRow, k.subi(t, c1), chan)));
      b.setInsertionPointToStart(ifh.elseBlock());
      scf::YieldOp::create(b, initAt(bRow, chan));
    }
    Value z = k.ld(a.z, seqAt(bRow, t, chan));
    Value gm = k.exp(k.clamp(k.ld(a.l, seqAt(bRow, t, chan))));
    Value hn = k.add(k.mul(z, k.sigmoid(p)), k.mul(gm, ifh.getResult(0)));
    k.st(hn, a.h, seqAt(bRow, t, chan));
    k.stIf(k.eq(t, k.subi(T, c1)), hn, a.fin, k.addi(k.muli(bRow, cD), chan));
  };

  // --- Tensor-core product (spec.mma): block = 32 channels (2 m-tiles of 16)
  // × 8 batch rows (n = 8); warp w owns k-tiles w, w + NW, ... of the
  // contraction. A = the block's W_g slice as mma fragments (loop-invariant:
  // registers, then shared memory), B = staged bf16 rows, C in fp32; the
  // warps' partial tiles meet in shared memory (`red`).
  const int64_t NW = NT / 32, KT = spec.mma ? spec.mmaTilesPerWarp() : 0;
  const int64_t RK = spec.mma ? spec.mmaRegTiles() : 0;
  // Cluster split (GatedKernelSpec::cluster): the block multiplies the
  // k-range [kBase, kBase + KB) for the cluster's MT·16 = 32·G channels
  // from mBase; G = 1 is the whole contraction for the block's own 32.
  const int64_t G = spec.mma ? spec.cluster : 1, MT = spec.mma ? spec.mmaMTiles() : 2;
  const int64_t KB = D / G, XS = KB + 8; // padded rows of the staged operand
  Value rank = G > 1 ? arith::RemUIOp::create(b, bid, k.idx(G)).getResult() : c0;
  Value kBase = k.muli(rank, k.idx(KB));
  // (groupCluster: the block's own Dc channels.)
  Value mBase = spec.groupCluster
                    ? chanBase
                    : k.muli(arith::DivUIOp::create(b, bid, k.idx(G)), k.idx(32 * G));
  Type bf16 = b.getBF16Type(), i32t = b.getI32Type();
  Value Xb, Wf, red, xred, mLane, mWarp, gid, tig;
  SmallVector<SmallVector<Value>> regA; // [j·MT + mt] for j < RK
  auto wfIndex = [&](int64_t j, int64_t mt) {
    return k.muli(k.addi(k.muli(k.addi(k.muli(k.addi(k.muli(mWarp, k.idx(KT - RK)), k.idx(j - RK)),
                                              k.idx(MT)),
                                        k.idx(mt)),
                               k.idx(32)),
                        mLane),
                  k.idx(4));
  };
  // aElem(m, kk): element (m, kk) of the A operand, m < 32·G channels from
  // mBase, kk a global index of the contraction.
  auto mmaSetup = [&](auto aElem) {
    // groupCluster: two buffers of the 8 rows (see `publish`).
    int64_t xBytes = (spec.groupCluster ? 2 : 1) * ((8 * XS * 2 + 15) / 16 * 16);
    int64_t wBytes = NW * (KT - RK) * MT * 32 * 16;
    int64_t redBytes = NW * MT * 32 * 4 * 4;
    auto mk = [&](Type e, int64_t n) {
      return MemRefType::get({n}, e, MemRefLayoutAttrInterface{}, wg);
    };
    Xb = memref::ViewOp::create(b, mk(bf16, xBytes / 2), smem, k.idx(0), ValueRange{}).getResult();
    Wf = memref::ViewOp::create(b, mk(i32t, std::max<int64_t>(1, wBytes / 4)), smem,
                                k.idx(xBytes), ValueRange{})
             .getResult();
    red = memref::ViewOp::create(b, mk(f32, NW * MT * 32 * 4), smem, k.idx(xBytes + wBytes),
                                 ValueRange{})
              .getResult();
    if (G > 1) // xred[q][r][c]: rank q's partial sums for (row r, channel c)
      xred = memref::ViewOp::create(b, mk(f32, G * 8 * 32), smem,
                                    k.idx(xBytes + wBytes + redBytes), ValueRange{})
                 .getResult();
    mLane = arith::RemUIOp::create(b, tid, k.idx(32));
    mWarp = arith::DivUIOp::create(b, tid, k.idx(32));
    gid = arith::DivUIOp::create(b, mLane, k.idx(4));
    tig = arith::RemUIOp::create(b, mLane, k.idx(4));
    auto pack = [&](Value lo, Value hi) -> Value {
      if (lo.getType() != bf16) { // fp32 W_g (the training library): rounded
        lo = arith::TruncFOp::create(b, bf16, lo);
        hi = arith::TruncFOp::create(b, bf16, hi);
      }
      Value v = vector::FromElementsOp::create(b, VectorType::get({2}, bf16), ValueRange{lo, hi});
      return LLVM::BitcastOp::create(b, i32t, v);
    };
    for (int64_t j = 0; j < KT; ++j)
      for (int64_t mt = 0; mt < MT; ++mt) {
        Value k0 = k.addi(kBase, k.muli(k.addi(mWarp, k.idx(j * NW)), k.idx(16)));
        Value m0 = k.addi(gid, k.idx(mt * 16)), m8 = k.addi(m0, k.idx(8));
        Value kA = k.addi(k0, k.muli(tig, k.idx(2)));
        Value kA1 = k.addi(kA, c1), kB = k.addi(kA, k.idx(8)), kB1 = k.addi(kA, k.idx(9));
        SmallVector<Value> f{pack(aElem(m0, kA), aElem(m0, kA1)), pack(aElem(m8, kA), aElem(m8, kA1)),
                             pack(aElem(m0, kB), aElem(m0, kB1)), pack(aElem(m8, kB), aElem(m8, kB1))};
        if (j < RK) {
          regA.push_back(f);
          continue;
        }
        Value v = vector::FromElementsOp::create(b, VectorType::get({4}, i32t), f);
        vector::StoreOp::create(b, v, Wf, ValueRange{wfIndex(j, mt)});
      }
    gpu::BarrierOp::create(b);
  };
  // Xb[r][·] = columns [kBase, kBase + KB) of the bf16 row rowStart(b0 + r)
  // of src, 16 bytes at a time (fp32 rows, as in the training library, are
  // rounded to bf16 here).
  auto mmaStage = [&](Value src, auto rowStart, Value b0) {
    const bool wide = llvm::cast<MemRefType>(src.getType()).getElementType().isF32();
    const int64_t V = wide ? 4 : 8;
    Value perRow = k.idx(KB / V);
    forRange(tid, k.idx(8 * KB / V), k.idx(NT), [&](Value q) {
      Value r = arith::DivUIOp::create(b, q, perRow);
      Value col = k.muli(arith::RemUIOp::create(b, q, perRow), k.idx(V));
      Value bRow = k.minui(k.addi(b0, r), k.subi(B, c1));
      Value at = k.addi(k.addi(rowStart(bRow), kBase), col);
      Value v = volatileLoad(b, src, at, VectorType::get({V}, wide ? f32 : bf16), 16u);
      if (wide)
        v = arith::TruncFOp::create(b, VectorType::get({V}, bf16), v);
      vector::StoreOp::create(b, v, Xb, ValueRange{k.addi(k.muli(r, k.idx(XS)), col)});
    });
  };
  auto mmaZero = [&]() {
    forRange(tid, k.idx(8 * XS), k.idx(NT), [&](Value q) {
      memref::StoreOp::create(b, arith::ConstantOp::create(b, b.getFloatAttr(bf16, 0.0)), Xb,
                              ValueRange{q});
    });
  };
  // The warp's partial (16·MT) × 8 tile of A·Xbᵀ into `red`; the rows of
  // Xb from element xOff (groupCluster: the buffer of the step).
  auto mmaProduct = [&](Value xOff = Value()) {
    auto resTy = LLVM::LLVMStructType::getLiteral(ctx, {f32, f32, f32, f32});
    SmallVector<SmallVector<Value>> acc(MT, SmallVector<Value>(4, k.cst(0.0)));
    Value xRow = k.muli(gid, k.idx(XS));
    if (xOff)
      xRow = k.addi(xOff, xRow);
    auto v2 = VectorType::get({2}, bf16);
    for (int64_t j = 0; j < KT; ++j) {
      Value k0 = k.muli(k.addi(mWarp, k.idx(j * NW)), k.idx(16));
      Value kx = k.addi(xRow, k.addi(k0, k.muli(tig, k.idx(2))));
      Value bf0 = LLVM::BitcastOp::create(b, i32t, vector::LoadOp::create(b, v2, Xb, ValueRange{kx}));
      Value bf1 = LLVM::BitcastOp::create(
          b, i32t, vector::LoadOp::create(b, v2, Xb, ValueRange{k.addi(kx, k.idx(8))}));
      for (int64_t mt = 0; mt < MT; ++mt) {
        SmallVector<Value> af;
        if (j < RK) {
          af = regA[j * MT + mt];
        } else {
          Value v = vector::LoadOp::create(b, VectorType::get({4}, i32t), Wf,
                                           ValueRange{wfIndex(j, mt)});
          for (int64_t q = 0; q < 4; ++q)
            af.push_back(vector::ExtractOp::create(b, v, q));
        }
        Value res = NVVM::MmaOp::create(
            b, resTy, af, ValueRange{bf0, bf1}, acc[mt], ArrayRef<int64_t>{16, 8, 16},
            std::nullopt, std::nullopt,
            std::array<NVVM::MMATypes, 2>{NVVM::MMATypes::bf16, NVVM::MMATypes::bf16},
            std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row, NVVM::MMALayout::col});
        for (int64_t q = 0; q < 4; ++q)
          acc[mt][q] = LLVM::ExtractValueOp::create(b, res, ArrayRef<int64_t>{q});
      }
    }
    for (int64_t mt = 0; mt < MT; ++mt)
      for (int64_t q = 0; q < 4; ++q)
        memref::StoreOp::create(
            b, acc[mt][q], red,
            ValueRange{k.addi(
                k.muli(k.addi(k.muli(k.addi(k.muli(mWarp, k.idx(MT)), k.idx(mt)), k.idx(32)), mLane),
                       k.idx(4)),
                k.idx(q))});
  };
  // Σ over warps of output (channel cc < 32·G, row r) of the tile: C fragment
  // (row gid = m mod 8, col = r) sits in lane 4·gid + r/2, slot 2·(m/8) + r%2.
  auto mmaSum = [&](Value r, Value cc) {
    Value mt = arith::DivUIOp::create(b, cc, k.idx(16));
    Value m = arith::RemUIOp::create(b, cc, k.idx(16));
    Value ln = k.addi(k.muli(arith::RemUIOp::create(b, m, k.idx(8)), k.idx(4)),
                      arith::DivUIOp::create(b, r, k.idx(2)));
    Value slot = k.addi(k.muli(arith::DivUIOp::create(b, m, k.idx(8)), k.idx(2)),
                        arith::RemUIOp::create(b, r, k.idx(2)));
    Value p = k.cst(0.0);
    for (int64_t w = 0; w < NW; ++w) {
      Value at = k.addi(k.muli(k.addi(k.muli(k.addi(k.idx(w * MT), mt), k.idx(32)), ln), k.idx(4)),
                        slot);
      p = k.add(p, memref::LoadOp::create(b, red, ValueRange{at}));
    }
    return p;
  };
  // barrier.cluster (arrive releases, wait acquires by default): every thread of the
  // cluster's blocks arrives (it subsumes the block's barrier).
  auto clusterBarrier = [&]() {
    NVVM::InlinePtxOp::create(b, TypeRange{}, ValueRange{}, ValueRange{},
                              "barrier.cluster.arrive.aligned;", Value());
    NVVM::InlinePtxOp::create(b, TypeRange{}, ValueRange{}, ValueRange{},
                              "barrier.cluster.wait.aligned;", Value());
  };
  // G > 1, after mmaProduct and a block barrier, by every thread: this
  // block's partial sums for the cluster's 32·G channels go to the owning
  // blocks' xred[rank] (st.shared::cluster through mapa), then a cluster
  // barrier makes all G of them visible. G = 1: nothing.
  auto clusterReduce = [&]() {
    if (G == 1)
      return;
    Value xb = arith::IndexCastOp::create(
        b, i32t, memref::ExtractAlignedPointerAsIndexOp::create(b, xred).getResult());
    forRange(tid, k.idx(8 * 32 * G), k.idx(NT), [&](Value e) {
      Value r = arith::DivUIOp::create(b, e, k.idx(32 * G));
      Value cc = arith::RemUIOp::create(b, e, k.idx(32 * G));
      Value p = mmaSum(r, cc);
      Value dest = arith::IndexCastOp::create(b, i32t, arith::DivUIOp::create(b, cc, k.idx(32)));
      Value at = k.addi(k.muli(k.addi(k.muli(rank, k.idx(8)), r), k.idx(32)),
                        arith::RemUIOp::create(b, cc, k.idx(32)));
      Value local = arith::AddIOp::create(
          b, xb, arith::IndexCastOp::create(b, i32t, k.muli(at, k.idx(4))));
      Value remote = NVVM::InlinePtxOp::create(b, TypeRange{i32t}, ValueRange{local, dest},
                                               ValueRange{}, "mapa.shared::cluster.u32 $0, $1, $2;",
                                               Value())
                         ->getResult(0);
      NVVM::InlinePtxOp::create(b, TypeRange{}, ValueRange{remote, p}, ValueRange{},
                                "st.shared::cluster.f32 [$0], $1;", Value());
    });
    clusterBarrier();
  };
  // The full product for (row r, own channel cc < 32) after clusterReduce.
  auto finalSum = [&](Value r, Value cc) -> Value {
    if (G == 1)
      return mmaSum(r, cc);
    Value p = k.cst(0.0);
    for (int64_t q = 0; q < G; ++q)
      p = k.add(p, memref::LoadOp::create(
                       b, xred, ValueRange{k.addi(k.muli(k.addi(k.idx(q * 8), r), k.idx(32)), cc)}));
    return p;
  };
  // After the uses of finalSum in a loop over row tiles (B > 8): the next
  // tile's clusterReduce writes xred again.
  auto tileBarrier = [&]() {
    if (G > 1)
      clusterBarrier();
    else
      gpu::BarrierOp::create(b);
  };

  // --- The bf16 exchange of the MMA kernels (GatedKernelSpec::coopSyncWords):
  // from byte 256 of `sync`, two [B][D] bf16 arrays, alternating by step.
  // Each step's h_t (forward) or a_t (adjoint) is published there rounded
  // as the next product stages it, so every block reads back half the
  // bytes of the fp32 arrays (the same values: staging rounded them too).
  auto ptrTy = LLVM::LLVMPointerType::get(ctx);
  auto xchAt = [&](Value parity, Value bRow, Value col) -> Value {
    Value base = memref::ExtractAlignedPointerAsIndexOp::create(b, a.sync);
    Value base64 = arith::IndexCastOp::create(b, b.getI64Type(), k.addi(base, k.idx(256)));
    Value p = LLVM::IntToPtrOp::create(b, ptrTy, base64);
    Value i = k.addi(k.muli(k.addi(k.muli(parity, B), bRow), cD), col);
    Value i64 = arith::IndexCastOp::create(b, b.getI64Type(), i);
    return LLVM::GEPOp::create(b, ptrTy, bf16, p, ValueRange{i64});
  };
  auto xchStore = [&](Value parity, Value bRow, Value chan, Value v) {
    LLVM::StoreOp::create(b, arith::TruncFOp::create(b, bf16, v), xchAt(parity, bRow, chan), 2);
  };
  // Xb[r][·] = columns [kBase, kBase + KB) of exchange row min(b0 + r, B − 1)
  // of `parity`, 16 bytes at a time.
  auto mmaStageX = [&](Value parity, Value b0) {
    Value perRow = k.idx(KB / 8);
    forRange(tid, k.idx(8 * KB / 8), k.idx(NT), [&](Value q) {
      Value r = arith::DivUIOp::create(b, q, perRow);
      Value col = k.muli(arith::RemUIOp::create(b, q, perRow), k.idx(8));
      Value bRow = k.minui(k.addi(b0, r), k.subi(B, c1));
      Value v = LLVM::LoadOp::create(b, VectorType::get({8}, bf16),
                                     xchAt(parity, bRow, k.addi(kBase, col)), 16,
                                     /*isVolatile=*/true);
      vector::StoreOp::create(b, v, Xb, ValueRange{k.addi(k.muli(r, k.idx(XS)), col)});
    });
  };
  // The register-resident variant: B ≤ 8·groups (one tile of rows a group)
  // and room for the exchange. Thread tid < 8·Dc owns (row, channel) =
  // (tileStart + tid / Dc, tid % Dc) for the whole launch: its state or
  // carried gradient stays in a register and its per-step inputs are loaded
  // a step ahead, off the sequential chain.
  Value syncWords = memref::DimOp::create(b, a.sync, 0);
  Value fastCond = k.andi(
      arith::CmpIOp::create(b, arith::CmpIPredicate::ule, B, tileStep),
      arith::CmpIOp::create(b, arith::CmpIPredicate::uge, syncWords,
                            k.addi(k.idx(64), k.muli(B, cD))));
  auto owner = [&]() {
    struct {
      Value r, rr, cc, active, bR, chan, si;
    } o;
    o.r = arith::DivUIOp::create(b, tid, k.idx(Dc));
    o.rr = arith::RemUIOp::create(b, o.r, k.idx(8));
    o.cc = arith::RemUIOp::create(b, tid, k.idx(Dc));
    o.active = k.andi(k.ult(tid, k.idx(8 * Dc)), k.ult(k.addi(tileStart, o.r), B));
    o.bR = k.minui(k.addi(tileStart, o.r), k.subi(B, c1));
    o.chan = k.addi(chanBase, o.cc);
    o.si = k.addi(k.muli(o.bR, cD), o.chan);
    return o;
  };
  auto ifThen = [&](Value cond, auto body) {
    auto op = scf::IfOp::create(b, TypeRange{}, cond, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(op.thenBlock());
    body();
  };

  // --- Row groups as clusters (spec.groupCluster). Every block of a
  // cluster keeps two buffers of the group's 8 rows in Xb (elements
  // [0, XB) and [XB, 2·XB)). A step's values (h_t forward, a_t adjoint) go,
  // rounded to bf16, into this block's Dc columns of a buffer; after a block
  // barrier `publish` copies those columns to the same place in the other
  // NB − 1 blocks (16-byte st.shared::cluster at the peer's address from
  // mapa), and the cluster barrier (arrive releases, wait acquires) makes
  // them visible before the product reads the buffer. A block writes a
  // buffer only after passing the cluster barrier that follows every
  // block's last read of it, so one cluster barrier a step suffices.
  const int64_t XB = 8 * XS;
  auto gclBarrierArrive = [&]() { NVVM::ClusterArriveOp::create(b, b.getUnitAttr()); };
  auto gclBarrierWait = [&]() { NVVM::ClusterWaitOp::create(b, b.getUnitAttr()); };
  // The owner of (row o.r < 8, channel o.cc) stores v in buffer `buf`.
  auto gclStore = [&](Value buf, Value r, Value cc, Value v) {
    ifThen(k.ult(tid, k.idx(8 * Dc)), [&] {
      Value at = k.addi(k.muli(buf, k.idx(XB)), k.addi(k.muli(r, k.idx(XS)), k.addi(chanBase, cc)));
      memref::StoreOp::create(b, arith::TruncFOp::create(b, bf16, v), Xb, ValueRange{at});
    });
  };
  auto publish = [&](Value buf) {
    const int64_t CH = Dc / 8, PER = 8 * CH; // 16-byte pieces a row, a block
    Value xb = arith::IndexCastOp::create(
        b, i32t, memref::ExtractAlignedPointerAsIndexOp::create(b, Xb).getResult());
    forRange(tid, k.idx((NB - 1) * PER), k.idx(NT), [&](Value q) {
      Value peer = arith::RemUIOp::create(
          b, k.addi(k.addi(bid, c1), arith::DivUIOp::create(b, q, k.idx(PER))), k.idx(NB));
      Value e = arith::RemUIOp::create(b, q, k.idx(PER));
      Value at = k.addi(k.addi(k.muli(buf, k.idx(XB)),
                               k.muli(arith::DivUIOp::create(b, e, k.idx(CH)), k.idx(XS))),
                        k.addi(chanBase, k.muli(arith::RemUIOp::create(b, e, k.idx(CH)), k.idx(8))));
      Value v = vector::LoadOp::create(b, VectorType::get({8}, bf16), Xb, ValueRange{at});
      Value w = vector::BitCastOp::create(b, VectorType::get({4}, i32t), v);
      Value local = arith::AddIOp::create(
          b, xb, arith::IndexCastOp::create(b, i32t, k.muli(at, k.idx(2))));
      Value remote = NVVM::InlinePtxOp::create(
                         b, TypeRange{i32t},
                         ValueRange{local, arith::IndexCastOp::create(b, i32t, peer)}, ValueRange{},
                         "mapa.shared::cluster.u32 $0, $1, $2;", Value())
                         ->getResult(0);
      SmallVector<Value> ops{remote};
      for (int64_t q4 = 0; q4 < 4; ++q4)
        ops.push_back(vector::ExtractOp::create(b, w, q4));
      NVVM::InlinePtxOp::create(b, TypeRange{}, ops, ValueRange{},
                                "st.shared::cluster.v4.b32 [$0], {$1, $2, $3, $4};", Value());
    });
  };

  if (spec.groupCluster && !spec.adjoint) {
    mmaSetup([&](Value m, Value kk) -> Value {
      return memref::LoadOp::create(b, a.w, ValueRange{k.addi(k.muli(kk, cD), k.addi(mBase, m))});
    });
    auto o = owner();
    Value bias = k.ld(a.bias, o.chan);
    // Buffer 0: h_{-1} of the group's rows, staged by each block.
    if (spec.hasInit)
      mmaStage(a.init, [&](Value bRow) { return k.muli(bRow, cD); }, tileStart);
    else
      mmaZero();
    // Every block of the cluster has started (its shared memory may be
    // written) and buffer 0 is staged.
    gclBarrierArrive();
    gclBarrierWait();
    auto loop = scf::ForOp::create(
        b, c0, T, c1,
        ValueRange{initAt(o.bR, o.chan), k.ld(a.z, seqAt(o.bR, c0, o.chan)),
                   k.ld(a.l, seqAt(o.bR, c0, o.chan))});
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(loop.getBody());
      Value t = loop.getInductionVar();
      Value hp = loop.getRegionIterArgs()[0], zc = loop.getRegionIterArgs()[1],
            lc = loop.getRegionIterArgs()[2];
      Value cur = arith::RemUIOp::create(b, t, k.idx(2)), nxt = k.subi(c1, cur);
      mmaProduct(k.muli(cur, k.idx(XB)));
      gpu::BarrierOp::create(b);
      // Step t + 1's inputs, in flight across the exchange.
      Value tn = k.minui(k.addi(t, c1), k.subi(T, c1));
      Value zn = k.ld(a.z, seqAt(o.bR, tn, o.chan)), ln = k.ld(a.l, seqAt(o.bR, tn, o.chan));
      Value p = k.add(bias, mmaSum(o.rr, o.cc));
      Value hn = k.add(k.mul(zc, k.sigmoid(p)), k.mul(k.exp(k.clamp(lc)), hp));
      gclStore(nxt, o.r, o.cc, hn);
      gpu::BarrierOp::create(b);
      publish(nxt);
      gclBarrierArrive();
      ifThen(o.active, [&] {
        k.st(hn, a.h, seqAt(o.bR, t, o.chan));
        k.stIf(k.eq(t, k.subi(T, c1)), hn, a.fin, o.si);
      });
      gclBarrierWait();
      scf::YieldOp::create(b, ValueRange{hn, zn, ln});
    }
    gpu::ReturnOp::create(b);
    return;
  }

  if (spec.mma && !spec.adjoint) {
    // A[m][kk] = W[kk][c0 + m]: the forward reads W's columns.
    mmaSetup([&](Value m, Value kk) -> Value {
      return memref::LoadOp::create(b, a.w, ValueRange{k.addi(k.muli(kk, cD), k.addi(mBase, m))});
    });
    auto fastIf = scf::IfOp::create(b, TypeRange{}, fastCond, true);
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(fastIf.thenBlock());
      auto o = owner();
      Value bias = k.ld(a.bias, o.chan);
      Value h0 = initAt(o.bR, o.chan);
      auto loop = scf::ForOp::create(
          b, c0, T, c1,
          ValueRange{h0, k.ld(a.z, seqAt(o.bR, c0, o.chan)), k.ld(a.l, seqAt(o.bR, c0, o.chan))});
      b.setInsertionPointToStart(loop.getBody());
      Value t = loop.getInductionVar();
      Value hp = loop.getRegionIterArgs()[0], zc = loop.getRegionIterArgs()[1],
            lc = loop.getRegionIterArgs()[2];
      auto ifs = scf::IfOp::create(b, TypeRange{}, k.ugt(t, c0), true);
      {
        OpBuilder::InsertionGuard g2(b);
        b.setInsertionPointToStart(ifs.thenBlock());
        mmaStageX(arith::RemUIOp::create(b, k.subi(t, c1), k.idx(2)), tileStart);
        b.setInsertionPointToStart(ifs.elseBlock());
        if (spec.hasInit)
          mmaStage(a.init, [&](Value bRow) { return k.muli(bRow, cD); }, tileStart);
        else
          mmaZero();
      }
      gpu::BarrierOp::create(b);
      mmaProduct();
      gpu::BarrierOp::create(b);
      // Step t + 1's inputs, in flight across the grid barrier.
      Value tn = k.minui(k.addi(t, c1), k.subi(T, c1));
      Value zn = k.ld(a.z, seqAt(o.bR, tn, o.chan)), ln = k.ld(a.l, seqAt(o.bR, tn, o.chan));
      clusterReduce();
      Value p = k.add(bias, finalSum(o.rr, o.cc));
      Value hn = k.add(k.mul(zc, k.sigmoid(p)), k.mul(k.exp(k.clamp(lc)), hp));
      ifThen(o.active, [&] {
        k.st(hn, a.h, seqAt(o.bR, t, o.chan));
        k.stIf(k.eq(t, k.subi(T, c1)), hn, a.fin, o.si);
        xchStore(arith::RemUIOp::create(b, t, k.idx(2)), o.bR, o.chan, hn);
      });
      gridBarrier(t);
      scf::YieldOp::create(b, ValueRange{hn, zn, ln});
      b.setInsertionPointToStart(fastIf.elseBlock());
    forRange(c0, T, c1, [&](Value t) {
      Value notFirst = k.ugt(t, c0);
      forRange(tileStart, B, tileStep, [&](Value b0) {
        auto ifs = scf::IfOp::create(b, TypeRange{}, notFirst, true);
        {
          OpBuilder::InsertionGuard g(b);
          b.setInsertionPointToStart(ifs.thenBlock());
          mmaStage(a.h, [&](Value bRow) { return seqAt(bRow, k.subi(t, c1), c0); }, b0);
          b.setInsertionPointToStart(ifs.elseBlock());
          if (spec.hasInit)
            mmaStage(a.init, [&](Value bRow) { return k.muli(bRow, cD); }, b0);
          else
            mmaZero();
        }
        gpu::BarrierOp::create(b);
        mmaProduct();
        gpu::BarrierOp::create(b);
        clusterReduce();
        // Thread e finishes (r, c) = (e / 32, e % 32) of the tile.
        forRange(tid, k.idx(8 * Dc), k.idx(NT), [&](Value e) {
          Value r = arith::DivUIOp::create(b, e, k.idx(Dc));
          Value cc = arith::RemUIOp::create(b, e, k.idx(Dc));
          Value bRow = k.addi(b0, r);
          auto ifB = scf::IfOp::create(b, TypeRange{}, k.ult(bRow, B), false);
          OpBuilder::InsertionGuard g(b);
          b.setInsertionPointToStart(ifB.thenBlock());
          Value chan = k.addi(chanBase, cc);
          Value p = k.add(k.ld(a.bias, chan), finalSum(r, cc));
          finishForward(bRow, t, chan, notFirst, p);
        });
        tileBarrier();
      });
      gridBarrier(t);
    });
    }
    gpu::ReturnOp::create(b);
    return;
  }

  if (!spec.adjoint) {
    Value c = arith::RemUIOp::create(b, tid, k.idx(Dc));
    Value ks = arith::DivUIOp::create(b, tid, k.idx(Dc));
    Value active = k.ult(tid, k.idx(KS * Dc));
    Value kLo = k.minui(k.muli(ks, k.idx(KC)), cD);
    Value kHi = k.minui(k.addi(kLo, k.idx(KC)), cD);
    Value wCol = k.addi(chanBase, c);
    forRange(c0, T, c1, [&](Value t) {
      Value notFirst = k.ugt(t, c0);
      forRange(tileStart, B, tileStep, [&](Value b0) {
        // x = h_{t-1} (other blocks' outputs), init, or zeros, staged.
        auto ifs = scf::IfOp::create(b, TypeRange{}, notFirst, true);
        {
          OpBuilder::InsertionGuard g(b);
          b.setInsertionPointToStart(ifs.thenBlock());
          stage(a.h, [&](Value bRow) { return seqAt(bRow, k.subi(t, c1), c0); }, b0);
          b.setInsertionPointToStart(ifs.elseBlock());
          if (spec.hasInit)
            stage(a.init, [&](Value bRow) { return k.muli(bRow, cD); }, b0);
          else
            stageZero();
        }
        gpu::BarrierOp::create(b);
        // Partial sums of RB rows over this thread's k-chunk, U k at a time.
        const int64_t U = KC % 8 == 0 ? 8 : KC % 4 == 0 ? 4 : 1;
        SmallVector<Value> init(RB, k.cst(0.0));
        auto kl = scf::ForOp::create(b, kLo, kHi, k.idx(U), init);
        {
          OpBuilder::InsertionGuard g(b);
          b.setInsertionPointToStart(kl.getBody());
          Value kk = kl.getInductionVar();
          SmallVector<Value> w;
          for (int64_t u = 0; u < U; ++u)
            w.push_back(k.ld(a.w, k.addi(k.muli(k.addi(kk, k.idx(u)), cD), wCol)));
          SmallVector<Value> out(kl.getRegionIterArgs().begin(), kl.getRegionIterArgs().end());
          auto vt = VectorType::get({U}, f32);
          for (int64_t r = 0; r < RB; ++r) {
            Value xv = vector::LoadOp::create(b, vt, X, ValueRange{k.addi(k.idx(r * D), kk)});
            for (int64_t u = 0; u < U; ++u)
              out[r] = k.fma(vector::ExtractOp::create(b, xv, u), w[u], out[r]);
          }
          scf::YieldOp::create(b, out);
        }
        for (int64_t r = 0; r < RB; ++r) {
          auto ifA = scf::IfOp::create(b, TypeRange{}, active, false);
          OpBuilder::InsertionGuard g(b);
          b.setInsertionPointToStart(ifA.thenBlock());
          memref::StoreOp::create(b, kl.getResult(r), part,
                                  ValueRange{k.addi(k.muli(k.idx(r), k.idx(NT)), tid)});
        }
        gpu::BarrierOp::create(b);
        // Thread e finishes pair (r, c) = (e / Dc, e % Dc) of the tile.
        forRange(tid, k.idx(RB * Dc), k.idx(NT), [&](Value e) {
          Value r = arith::DivUIOp::create(b, e, k.idx(Dc));
          Value cc = arith::RemUIOp::create(b, e, k.idx(Dc));
          Value bRow = k.addi(b0, r);
          auto ifB = scf::IfOp::create(b, TypeRange{}, k.ult(bRow, B), false);
          OpBuilder::InsertionGuard g(b);
          b.setInsertionPointToStart(ifB.thenBlock());
          Value chan = k.addi(chanBase, cc);
          Value p = k.ld(a.bias, chan);
          for (int64_t q = 0; q < KS; ++q)
            p = k.add(p, memref::LoadOp::create(
                             b, part, ValueRange{k.addi(k.muli(r, k.idx(NT)),
                                                        k.addi(k.idx(q * Dc), cc))}));
          finishForward(bRow, t, chan, notFirst, p);
        });
        gpu::BarrierOp::create(b);
      });
      gridBarrier(t);
    });
    gpu::ReturnOp::create(b);
    return;
  }

  // Adjoint, steps [tLo, tHi) of one launch (the launcher walks chunks from
  // the end, so that `pact` holds one chunk). gbuf[b][chan] carries
  // γ_{t+1}·g_{t+1} + back_{t+1} (the part of g_t that does not come from
  // grad_h_t) across steps and launches; the first launch starts it at
  // grad_final and zeroes grad_pre's last row.
  auto ifFirst = scf::IfOp::create(b, TypeRange{}, k.eq(tHi, T), false);
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(ifFirst.thenBlock());
    forOwned([&](Value bRow, Value chan) {
      Value i = k.addi(k.muli(bRow, cD), chan);
      memref::StoreOp::create(b, k.ld(a.dfin, i), a.gbuf, ValueRange{i});
      k.st(k.cst(0.0), a.dpre, seqAt(bRow, k.subi(T, c1), chan));
    });
  }
  gpu::BarrierOp::create(b);
  if (spec.mma) // A[m][kk] = W[c0 + m][kk]: the adjoint reads W's rows.
    mmaSetup([&](Value m, Value kk) -> Value {
      return memref::LoadOp::create(b, a.w, ValueRange{k.addi(k.muli(k.addi(mBase, m), cD), kk)});
    });
  // The register-resident adjoints (see `owner`): g and step t − 1's inputs
  // in registers. Per step, after the owner's stores of dz, dℓ and a_t:
  // publishA(o, s, a_t) hands a_t to the exchange, then (the next step's
  // inputs in flight) exchange(o, s) returns the owner's element of
  // a_t·W_gᵀ.
  auto residentAdjoint = [&](auto publishA, auto exchange) {
    auto o = owner();
    Value bias = k.ld(a.bias, o.chan);
    auto inputs = [&](Value t) -> SmallVector<Value> {
      Value nf = k.ugt(t, c0);
      Value tPrev = k.select(nf, k.subi(t, c1), c0);
      Value pa = k.addi(k.muli(k.addi(k.muli(o.bR, cap), k.subi(t, tLo)), cD), o.chan);
      Value pre = k.select(nf, k.ld(a.pact, pa), k.ld(a.pact0, o.si));
      Value hv = k.select(nf, k.ld(a.h, seqAt(o.bR, tPrev, o.chan)), initAt(o.bR, o.chan));
      return {pre, hv, k.ld(a.z, seqAt(o.bR, t, o.chan)), k.ld(a.l, seqAt(o.bR, t, o.chan)),
              k.ld(a.dh, seqAt(o.bR, t, o.chan))};
    };
    SmallVector<Value> init0 = {memref::LoadOp::create(b, a.gbuf, ValueRange{o.si})};
    for (Value v : inputs(k.subi(tHi, c1)))
      init0.push_back(v);
    auto loop = scf::ForOp::create(b, c0, k.subi(tHi, tLo), c1, init0);
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(loop.getBody());
      Value s = loop.getInductionVar();
      auto it = loop.getRegionIterArgs();
      Value g0 = it[0], pre = it[1], hv = it[2], z = it[3], lraw = it[4], dh = it[5];
      Value t = k.subi(k.subi(tHi, c1), s);
      Value notFirst = k.ugt(t, c0);
      Value gt = k.add(g0, dh);
      Value sg = k.sigmoid(k.add(pre, bias));
      Value gm = k.exp(k.clamp(lraw));
      Value av = k.mul(k.mul(gt, z), k.mul(sg, k.sub(k.cst(1.0), sg)));
      ifThen(o.active, [&] {
        k.st(k.mul(gt, sg), a.dz, seqAt(o.bR, t, o.chan));
        k.st(k.mul(k.clampMask(lraw), k.mul(k.mul(gt, gm), hv)), a.dl, seqAt(o.bR, t, o.chan));
        auto ifN = scf::IfOp::create(b, TypeRange{}, notFirst, true);
        {
          OpBuilder::InsertionGuard g2(b);
          b.setInsertionPointToStart(ifN.thenBlock());
          k.st(av, a.dpre, seqAt(o.bR, k.subi(t, c1), o.chan));
          b.setInsertionPointToStart(ifN.elseBlock());
          k.st(av, a.dpre0, o.si);
        }
      });
      publishA(o, s, av);
      // Step t − 1's inputs (t = tLo: repeated, unused), in flight across
      // the exchange.
      SmallVector<Value> next = inputs(k.select(k.ugt(t, tLo), k.subi(t, c1), tLo));
      SmallVector<Value> yields = {k.add(k.mul(gm, gt), exchange(o, s))};
      yields.append(next.begin(), next.end());
      scf::YieldOp::create(b, yields);
    }
    ifThen(o.active, [&] {
      memref::StoreOp::create(b, loop.getResult(0), a.gbuf, ValueRange{o.si});
    });
  };
  scf::IfOp adjFast;
  if (spec.groupCluster) {
    // In a cluster (see `publish`): a_t through the blocks' shared memory.
    // Every block of the cluster has started before the first exchange.
    gclBarrierArrive();
    gclBarrierWait();
    auto bufOf = [&](Value s) { return arith::RemUIOp::create(b, s, k.idx(2)).getResult(); };
    residentAdjoint(
        [&](const auto &o, Value s, Value av) { gclStore(bufOf(s), o.r, o.cc, av); },
        [&](const auto &o, Value s) {
          gpu::BarrierOp::create(b);
          publish(bufOf(s));
          gclBarrierArrive();
          gclBarrierWait();
          mmaProduct(k.muli(bufOf(s), k.idx(XB)));
          gpu::BarrierOp::create(b);
          return mmaSum(o.rr, o.cc);
        });
  } else if (spec.mma) {
    // Cooperative: a_t through the exchange in `sync`, for B ≤ 8·groups.
    adjFast = scf::IfOp::create(b, TypeRange{}, fastCond, true);
    b.setInsertionPointToStart(adjFast.thenBlock());
    auto parityOf = [&](Value s) { return arith::RemUIOp::create(b, s, k.idx(2)).getResult(); };
    residentAdjoint(
        [&](const auto &o, Value s, Value av) {
          ifThen(o.active, [&] { xchStore(parityOf(s), o.bR, o.chan, av); });
        },
        [&](const auto &o, Value s) {
          gridBarrier(s);
          mmaStageX(parityOf(s), tileStart);
          gpu::BarrierOp::create(b);
          mmaProduct();
          gpu::BarrierOp::create(b);
          clusterReduce();
          return finalSum(o.rr, o.cc);
        });
    b.setInsertionPointToStart(adjFast.elseBlock());
  }
  Value lane = arith::RemUIOp::create(b, tid, k.idx(32));
  Value warp = arith::DivUIOp::create(b, tid, k.idx(32));
  const int64_t warps = NT / 32;
  // The step loop of the other variants (groupCluster's is above).
  auto stepLoop = [&](Value s) {
    Value t = k.subi(k.subi(tHi, c1), s);
    Value notFirst = k.ugt(t, c0);
    Value tPrev = k.select(notFirst, k.subi(t, c1), c0);
    // pact[b][t − tLo] = h_{t-1}·W_g (from the product before this launch).
    auto pactAt = [&](Value bRow, Value chan) {
      return k.addi(k.muli(k.addi(k.muli(bRow, cap), k.subi(t, tLo)), cD), chan);
    };
    // Phase A: a_t for this block's channels.
    forOwned([&](Value bRow, Value chan) {
      Value si = k.addi(k.muli(bRow, cD), chan);
      Value g = k.add(memref::LoadOp::create(b, a.gbuf, ValueRange{si}),
                      k.ld(a.dh, seqAt(bRow, t, chan)));
      Value pre = k.select(notFirst, k.ld(a.pact, pactAt(bRow, chan)), k.ld(a.pact0, si));
      Value sg = k.sigmoid(k.add(pre, k.ld(a.bias, chan)));
      Value lraw = k.ld(a.l, seqAt(bRow, t, chan));
      Value gm = k.exp(k.clamp(lraw));
      Value hv = k.select(notFirst, k.ld(a.h, seqAt(bRow, tPrev, chan)), initAt(bRow, chan));
      Value av = k.mul(k.mul(g, k.ld(a.z, seqAt(bRow, t, chan))), k.mul(sg, k.sub(k.cst(1.0), sg)));
      k.st(k.mul(g, sg), a.dz, seqAt(bRow, t, chan));
      k.st(k.mul(k.clampMask(lraw), k.mul(k.mul(g, gm), hv)), a.dl, seqAt(bRow, t, chan));
      auto ifN = scf::IfOp::create(b, TypeRange{}, notFirst, true);
      {
        OpBuilder::InsertionGuard g2(b);
        b.setInsertionPointToStart(ifN.thenBlock());
        k.st(av, a.dpre, seqAt(bRow, tPrev, chan));
        b.setInsertionPointToStart(ifN.elseBlock());
        k.st(av, a.dpre0, si);
      }
      memref::StoreOp::create(b, k.mul(gm, g), a.gbuf, ValueRange{si});
    });
    gridBarrier(s);
    if (spec.mma) {
      // Phase B on tensor cores: back = a_t·W_gᵀ for the block's channels.
      forRange(tileStart, B, tileStep, [&](Value b0) {
        auto ifs = scf::IfOp::create(b, TypeRange{}, notFirst, true);
        {
          OpBuilder::InsertionGuard g(b);
          b.setInsertionPointToStart(ifs.thenBlock());
          mmaStage(a.dpre, [&](Value bRow) { return seqAt(bRow, tPrev, c0); }, b0);
          b.setInsertionPointToStart(ifs.elseBlock());
          mmaStage(a.dpre0, [&](Value bRow) { return k.muli(bRow, cD); }, b0);
        }
        gpu::BarrierOp::create(b);
        mmaProduct();
        gpu::BarrierOp::create(b);
        clusterReduce();
        forRange(tid, k.idx(8 * Dc), k.idx(NT), [&](Value e) {
          Value r = arith::DivUIOp::create(b, e, k.idx(Dc));
          Value cc = arith::RemUIOp::create(b, e, k.idx(Dc));
          Value bRow = k.addi(b0, r);
          auto ifB = scf::IfOp::create(b, TypeRange{}, k.ult(bRow, B), false);
          OpBuilder::InsertionGuard g(b);
          b.setInsertionPointToStart(ifB.thenBlock());
          Value si = k.addi(k.muli(bRow, cD), k.addi(chanBase, cc));
          memref::StoreOp::create(
              b, k.add(memref::LoadOp::create(b, a.gbuf, ValueRange{si}), finalSum(r, cc)), a.gbuf,
              ValueRange{si});
        });
        tileBarrier();
      });
      return;
    }
    // Phase B: back[b][c] = Σ_j a_t[b][j]·W[c][j] for a tile of rows staged
    // in shared memory; warp w for channels c ≡ w (mod warps), lanes along j.
    forRange(tileStart, B, tileStep, [&](Value b0) {
      auto ifs = scf::IfOp::create(b, TypeRange{}, notFirst, true);
      {
        OpBuilder::InsertionGuard g(b);
        b.setInsertionPointToStart(ifs.thenBlock());
        stage(a.dpre, [&](Value bRow) { return seqAt(bRow, tPrev, c0); }, b0);
        b.setInsertionPointToStart(ifs.elseBlock());
        stage(a.dpre0, [&](Value bRow) { return k.muli(bRow, cD); }, b0);
      }
      gpu::BarrierOp::create(b);
      forRange(warp, k.idx(Dc), k.idx(warps), [&](Value cc) {
        Value chan = k.addi(chanBase, cc);
        // U independent W loads in flight per lane (D % (32·U) == 0).
        const int64_t U = D % 256 == 0 ? 8 : D % 128 == 0 ? 4 : 1;
        SmallVector<Value> init(RB, k.cst(0.0));
        auto jl = scf::ForOp::create(b, lane, cD, k.idx(32 * U), init);
        {
          OpBuilder::InsertionGuard g(b);
          b.setInsertionPointToStart(jl.getBody());
          Value j = jl.getInductionVar();
          SmallVector<Value> w, js;
          for (int64_t u = 0; u < U; ++u) {
            js.push_back(k.addi(j, k.idx(32 * u)));
            w.push_back(k.ld(a.w, k.addi(k.muli(chan, cD), js.back())));
          }
          SmallVector<Value> out(jl.getRegionIterArgs().begin(), jl.getRegionIterArgs().end());
          for (int64_t u = 0; u < U; ++u)
            for (int64_t r = 0; r < RB; ++r) {
              Value x = memref::LoadOp::create(b, X, ValueRange{k.addi(k.idx(r * D), js[u])});
              out[r] = k.fma(x, w[u], out[r]);
            }
          scf::YieldOp::create(b, out);
        }
        for (int64_t r = 0; r < RB; ++r) {
          Value v = jl.getResult(r);
          for (int off = 16; off >= 1; off /= 2)
            v = k.add(v, gpu::ShuffleOp::create(b, v, arith::ConstantIntOp::create(b, off, 32),
                                                arith::ConstantIntOp::create(b, 32, 32),
                                                gpu::ShuffleMode::XOR)
                             .getShuffleResult());
          Value bRow = k.addi(b0, k.idx(r));
          auto ifW = scf::IfOp::create(b, TypeRange{}, k.andi(k.ult(lane, c1), k.ult(bRow, B)),
                                       false);
          OpBuilder::InsertionGuard g(b);
          b.setInsertionPointToStart(ifW.thenBlock());
          Value si = k.addi(k.muli(bRow, cD), chan);
          memref::StoreOp::create(b, k.add(memref::LoadOp::create(b, a.gbuf, ValueRange{si}), v),
                                  a.gbuf, ValueRange{si});
        }
      });
      gpu::BarrierOp::create(b);
    });
    gpu::BarrierOp::create(b);
  };
  if (!spec.groupCluster)
    forRange(c0, k.subi(tHi, tLo), c1, stepLoop);
  if (spec.mma) {
    if (!spec.groupCluster)
      b.setInsertionPointAfter(adjFast);
    // The register-resident variants' owner of (row, channel) is not the
    // thread that forOwned gives it below (and gbuf may be grad_init
    // itself): its store must land first.
    gpu::BarrierOp::create(b);
  }
  // After step 0, gbuf holds g_{-1} = grad_init.
  if (spec.hasInit) {
    auto ifLast = scf::IfOp::create(b, TypeRange{}, k.eq(tLo, c0), false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(ifLast.thenBlock());
    forOwned([&](Value bRow, Value chan) {
      Value si = k.addi(k.muli(bRow, cD), chan);
      k.st(memref::LoadOp::create(b, a.gbuf, ValueRange{si}), a.dinit, si);
    });
  }
  gpu::ReturnOp::create(b);
}
