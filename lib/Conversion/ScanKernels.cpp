//===- ScanKernels.cpp - kernel generation for mmrec.scan ---------------===//
//
// See ScanKernels.h for the contract. The GPU kernel, per block:
//
//   0. thread 0 takes a ticket (atomic add on ws[0]); the ticket orders the
//      blocks so that a block's predecessor along T started before it:
//      ticket = (chunk · B + batch) · tiles + tile. Without
//      ScanKernelSpec::ticket the block index takes its place (the
//      hardware's in-order dispatch gives the same guarantee in practice).
//   1. every thread loads its L steps of V channels (16-byte vector loads
//      when V > 1), and scans them locally from zero in registers, keeping
//      the steps' decays γ_j = exp(ℓ_j) and inputs; a staged kernel
//      (ScanKernelSpec::stage) instead copies the inputs into dynamic shared
//      memory with cp.async, and keeps γ there, so that no registers hold
//      them while the block waits for its carry;
//   2. warps (consecutive pieces of the block's chunk of T) exchange their
//      aggregates (Σℓ, the local state after L steps) through shared memory: each warp folds
//      those of the warps before it into an affine map h ↦ exp(A)·h + B;
//   3. the last warp publishes the block's aggregate, looks back over the
//      predecessor blocks until it finds an inclusive prefix, publishes its
//      own inclusive prefix and hands the carry-in to the block through
//      shared memory. Every (batch, chunk, channel) has one 16-byte status
//      word {tag, A, B, P} written by one st.volatile.v4 and read by one
//      ld.volatile.v4, so a reader sees a tag and its values together and
//      no fence is needed; tag = 4·epoch + 1 (aggregate A, B) or + 2
//      (inclusive prefix P), with the epoch a launch argument that the
//      runtime increments per launch (words of earlier launches read as
//      "not yet", so the buffer is never cleared between launches);
//   4. every thread reruns its L steps from the carry-in and writes its
//      outputs (and the adjoint's gradient terms) once.
// Log-space sums only decrease (ℓ ≤ clamp_max ≤ 0), so exp never overflows.
//
//===----------------------------------------------------------------------===//

#include "lib/Conversion/ScanKernels.h"

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

#include <algorithm>
#include <cmath>

using namespace mlir;
using namespace mlir::mmrec;

std::vector<std::string> ScanKernelSpec::arrayArgs() const {
  std::vector<std::string> a;
  if (kind == ScanKernelKind::Forward) {
    a = {"log_decay", "b"};
    if (hasInit) a.push_back("init");
    a.push_back("h");
    a.push_back("final");
  } else {
    a = {"log_decay", "h"};
    if (hasInit) a.push_back("init");
    a.push_back("grad_h");
    a.push_back("grad_final");
    a.push_back("grad_log_decay");
    a.push_back("grad_b");
    if (hasInit) a.push_back("grad_init");
  }
  return a;
}

std::vector<Type> ScanKernelSpec::arrayTypes(MLIRContext *ctx, bool gpu) const {
  std::vector<Type> t;
  Type f32 = Float32Type::get(ctx);
  for (const std::string &n : arrayArgs())
    t.push_back(n == "log_decay" || n == "grad_log_decay" ? f32 : elementType);
  if (gpu) {
    t.push_back(IntegerType::get(ctx, 32)); // ws: the ticket counter
    t.push_back(IntegerType::get(ctx, 32)); // status: 4 words per (batch, chunk, channel)
  }
  return t;
}

int64_t ScanKernelSpec::sharedBytes() const {
  if (!staged())
    return 0;
  // ℓ (fp32) and the second input, each [L][threads][V]; the adjoint's
  // epilogue operands ℓ_t (fp32) and h_prev too.
  int64_t perStep = 32 * warps * vec * (4 + elementType.getIntOrFloatBitWidth() / 8);
  return steps * perStep * (kind == ScanKernelKind::Adjoint ? 2 : 1);
}

namespace {

/// Shared state of one kernel being built.
struct KernelBuilder {
  ImplicitLocOpBuilder &b;
  const ScanKernelSpec &spec;
  Type f32, et;
  VectorType vf, ve; // vector<V x f32>, vector<V x et>

  KernelBuilder(ImplicitLocOpBuilder &b, const ScanKernelSpec &spec)
      : b(b), spec(spec), f32(b.getF32Type()), et(spec.elementType),
        vf(VectorType::get({spec.vec}, b.getF32Type())),
        ve(VectorType::get({spec.vec}, spec.elementType)) {}

  Value idx(int64_t v) { return arith::ConstantIndexOp::create(b, v); }
  Value i32(int64_t v) { return arith::ConstantIntOp::create(b, v, 32); }
  Value splat(double v) {
    return arith::ConstantOp::create(b, vf, DenseElementsAttr::get(vf, b.getF32FloatAttr(v)));
  }
  /// A constant of `like`'s type (a scalar or a vector of f32).
  Value splatLike(Value like, double v) {
    if (auto vt = llvm::dyn_cast<VectorType>(like.getType()))
      return arith::ConstantOp::create(b, vt, DenseElementsAttr::get(vt, b.getF32FloatAttr(v)));
    return arith::ConstantOp::create(b, b.getF32FloatAttr(v));
  }
  Value add(Value x, Value y) { return arith::AddFOp::create(b, x, y); }
  Value mul(Value x, Value y) { return arith::MulFOp::create(b, x, y); }
  Value addi(Value x, Value y) { return arith::AddIOp::create(b, x, y); }
  Value subi(Value x, Value y) { return arith::SubIOp::create(b, x, y); }
  Value muli(Value x, Value y) { return arith::MulIOp::create(b, x, y); }
  Value divui(Value x, Value y) { return arith::DivUIOp::create(b, x, y); }
  Value remui(Value x, Value y) { return arith::RemUIOp::create(b, x, y); }
  Value ult(Value x, Value y) { return arith::CmpIOp::create(b, arith::CmpIPredicate::ult, x, y); }
  Value eq(Value x, Value y) { return arith::CmpIOp::create(b, arith::CmpIPredicate::eq, x, y); }
  Value andi(Value x, Value y) { return arith::AndIOp::create(b, x, y); }
  Value select(Value c, Value x, Value y) { return arith::SelectOp::create(b, c, x, y); }

  /// exp(x) for a vector of f32. On GPUs as exp2(x·log2 e) (ex2.approx);
  /// on CPUs through math.exp.
  Value exp(Value x, bool gpu) {
    if (!gpu)
      return math::ExpOp::create(b, x);
    Value scaled = mul(x, splat(M_LOG2E));
    // One scalar exp2 per lane (NVPTX: ex2.approx.f32).
    Value out = scaled;
    for (int64_t i = 0; i < spec.vec; ++i) {
      Value e = vector::ExtractOp::create(b, scaled, i);
      e = NVVM::InlinePtxOp::create(b, TypeRange{f32}, ValueRange{e}, ValueRange{},
                                    "ex2.approx.ftz.f32 $0, $1;", Value())
              ->getResult(0);
      out = vector::InsertOp::create(b, e, out, i);
    }
    return out;
  }

  /// log(1 + u) for u in [0, 1]: lg2.approx on GPUs, math.log1p on CPUs.
  Value log1p(Value u, bool gpu) {
    if (!gpu)
      return math::Log1pOp::create(b, u);
    Value x = add(u, splatLike(u, 1.0));
    Value out = x;
    for (int64_t i = 0; i < spec.vec; ++i) {
      Value e = vector::ExtractOp::create(b, x, i);
      e = NVVM::InlinePtxOp::create(b, TypeRange{f32}, ValueRange{e}, ValueRange{},
                                    "lg2.approx.ftz.f32 $0, $1;", Value())
              ->getResult(0);
      out = vector::InsertOp::create(b, e, out, i);
    }
    return mul(out, splatLike(out, M_LN2));
  }
  /// softplus(y) = max(y, 0) + log1p(exp(-|y|)), stable everywhere.
  Value softplus(Value y, bool gpu) {
    // |y| as max(y, -y): no libdevice call on GPUs.
    Value negY = arith::NegFOp::create(b, y);
    Value negAbs = arith::NegFOp::create(b, arith::MaximumFOp::create(b, y, negY));
    Value relu = arith::MaximumFOp::create(b, y, splatLike(y, 0.0));
    return add(relu, log1p(exp(negAbs, gpu), gpu));
  }
  /// The raw (unclamped) log decay of a loaded operand: itself, or
  /// log σ(x) = -softplus(-x) for gate logits.
  Value rawLog(Value x, bool gpu) {
    if (!spec.gateLogits)
      return x;
    return arith::NegFOp::create(b, softplus(arith::NegFOp::create(b, x), gpu));
  }
  /// d(raw log decay)/dx: 1, or σ(-x) = exp(-softplus(x)) for gate logits.
  Value rawLogDerivative(Value x, bool gpu) {
    if (!spec.gateLogits)
      return splatLike(x, 1.0);
    return exp(arith::NegFOp::create(b, softplus(x, gpu)), gpu);
  }

  Value clampL(Value l) {
    Value lo = arith::MaximumFOp::create(b, l, splat(spec.clampMin));
    return arith::MinimumFOp::create(b, lo, splat(spec.clampMax));
  }

  /// `vector<V x f32>` loaded from `mem` at `i` (a V-aligned element index),
  /// extended to f32; zero where `cond` is false (when given). The load
  /// itself is unconditional, so `i` must be in bounds: callers clamp it.
  /// Branch-free loads let every step's loads be in flight at once.
  Value loadVec(Value mem, Value i, Value cond = {}) {
    auto type = llvm::cast<MemRefType>(mem.getType());
    VectorType vt = VectorType::get({spec.vec}, type.getElementType());
    unsigned bytes = type.getElementTypeBitWidth() / 8 * spec.vec;
    Value v = streamable(bytes) ? streamLoad(mem, i, vt)
                                : Value(vector::LoadOp::create(b, vt, mem, ValueRange{i},
                                                               /*nontemporal=*/false,
                                                               llvm::MaybeAlign(bytes)));
    if (type.getElementType() != f32)
      v = arith::ExtFOp::create(b, vf, v);
    return cond ? select(cond, v, splat(0.0)) : v;
  }

  /// ℓ for the V channels starting at element index `i` of b's layout,
  /// clamped; zero where `cond` is false.
  /// The decay operand for the V channels at element index `i` of b's
  /// layout (loaded unconditionally: `i` must be in bounds).
  Value loadDecayOperand(Value la, Value i) {
    if (spec.inner == 1)
      return loadVec(la, i);
    // All V channels share one slot (the spec requires V | E).
    Value slot = divui(i, idx(spec.inner));
    Value x = memref::LoadOp::create(b, la, ValueRange{slot});
    return vector::BroadcastOp::create(b, vf, x);
  }
  /// ℓ (clamped, or raw) at `i`; zero — the identity step — where `cond`
  /// is false.
  Value loadLog(Value la, Value i, Value cond, bool raw = false) {
    Value v = rawLog(loadDecayOperand(la, i), /*gpu=*/true);
    if (!raw)
      v = clampL(v);
    return select(cond, v, splat(0.0));
  }

  void storeVec(Value v, Value mem, Value i, Value cond) {
    auto ifOp = scf::IfOp::create(b, TypeRange{}, cond, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(ifOp.thenBlock());
    auto type = llvm::cast<MemRefType>(mem.getType());
    Value x = v;
    if (type.getElementType() != f32)
      x = arith::TruncFOp::create(b, VectorType::get({spec.vec}, type.getElementType()), v);
    unsigned bytes = type.getElementTypeBitWidth() / 8 * spec.vec;
    if (streamable(bytes))
      return streamStore(x, mem, i);
    vector::StoreOp::create(b, x, mem, ValueRange{i}, false, llvm::MaybeAlign(bytes));
  }

  // --- streaming accesses (ScanKernelSpec::stream) ---
  bool streamable(unsigned bytes) const {
    return spec.stream && (bytes == 4 || bytes == 8 || bytes == 16);
  }
  /// The global address of element `i` of `mem`, as i64.
  Value address(Value mem, Value i) {
    auto type = llvm::cast<MemRefType>(mem.getType());
    Value base = memref::ExtractAlignedPointerAsIndexOp::create(b, mem);
    Value off = arith::MulIOp::create(b, i, idx(type.getElementTypeBitWidth() / 8));
    return arith::IndexCastOp::create(b, b.getI64Type(), arith::AddIOp::create(b, base, off));
  }
  static std::string wordList(unsigned words, unsigned first) {
    std::string l = words > 1 ? "{" : "";
    for (unsigned w = 0; w < words; ++w)
      l += (w ? ", $" : "$") + std::to_string(first + w);
    return l + (words > 1 ? "}" : "");
  }
  static std::string vecSuffix(unsigned words) {
    return words > 1 ? ".v" + std::to_string(words) : "";
  }
  /// `vt` loaded from element `i` of `mem` by one ld.global.cs of 32-bit words.
  Value streamLoad(Value mem, Value i, VectorType vt) {
    unsigned words = vt.getNumElements() * vt.getElementTypeBitWidth() / 32;
    Type i32t = b.getI32Type();
    SmallVector<Type> fields(words, i32t);
    Type res = words > 1 ? Type(LLVM::LLVMStructType::getLiteral(b.getContext(), fields)) : i32t;
    std::string code = "{ .reg .u64 mmrec_g; cvta.to.global.u64 mmrec_g, $" +
                       std::to_string(words) + "; ld.global.cs" + vecSuffix(words) + ".b32 " +
                       wordList(words, 0) + ", [mmrec_g]; }";
    std::string cons;
    for (unsigned w = 0; w < words; ++w)
      cons += "=r,";
    cons += "l";
    auto op = LLVM::InlineAsmOp::create(b, res, ValueRange{address(mem, i)}, code, cons,
                                        /*has_side_effects=*/false, /*is_align_stack=*/false,
                                        LLVM::TailCallKind::None, LLVM::AsmDialectAttr(),
                                        ArrayAttr());
    SmallVector<Value> ws;
    for (unsigned w = 0; w < words; ++w)
      ws.push_back(words > 1 ? Value(LLVM::ExtractValueOp::create(b, op.getResult(0), w))
                             : op.getResult(0));
    Value v = vector::FromElementsOp::create(b, VectorType::get({int64_t(words)}, i32t), ws);
    return vector::BitCastOp::create(b, vt, v);
  }
  /// `x` (a vector) stored at element `i` of `mem` by one st.global.cs.
  void streamStore(Value x, Value mem, Value i) {
    auto vt = llvm::cast<VectorType>(x.getType());
    unsigned words = vt.getNumElements() * vt.getElementTypeBitWidth() / 32;
    Type i32t = b.getI32Type();
    Value v = vector::BitCastOp::create(b, VectorType::get({int64_t(words)}, i32t), x);
    SmallVector<Value> operands = {address(mem, i)};
    std::string cons = "l";
    for (unsigned w = 0; w < words; ++w) {
      operands.push_back(vector::ExtractOp::create(b, v, int64_t(w)));
      cons += ",r";
    }
    std::string code = "{ .reg .u64 mmrec_g; cvta.to.global.u64 mmrec_g, $0; st.global.cs" +
                       vecSuffix(words) + ".b32 [mmrec_g], " + wordList(words, 1) + "; }";
    LLVM::InlineAsmOp::create(b, TypeRange{}, operands, code, cons, /*has_side_effects=*/true,
                              /*is_align_stack=*/false, LLVM::TailCallKind::None,
                              LLVM::AsmDialectAttr(), ArrayAttr());
  }

  // --- raw pointer access for the look-back protocol (volatile: bypass L1) ---
  Value ptrTo(Value mem, Value i, Type elem) {
    Value base = memref::ExtractAlignedPointerAsIndexOp::create(b, mem);
    Value base64 = arith::IndexCastOp::create(b, b.getI64Type(), base);
    auto ptrTy = LLVM::LLVMPointerType::get(b.getContext());
    Value p = LLVM::IntToPtrOp::create(b, ptrTy, base64);
    Value i64 = arith::IndexCastOp::create(b, b.getI64Type(), i);
    return LLVM::GEPOp::create(b, ptrTy, elem, p, ValueRange{i64});
  }
  Value volatileLoad(Value mem, Value i, Type type, Type elem, unsigned align) {
    return LLVM::LoadOp::create(b, type, ptrTo(mem, i, elem), align, /*isVolatile=*/true);
  }
  void volatileStore(Value v, Value mem, Value i, Type elem, unsigned align) {
    LLVM::StoreOp::create(b, v, ptrTo(mem, i, elem), align, /*isVolatile=*/true);
  }
  /// Volatile vector load of f32 that only touches memory where `cond`.
  Value guardedVolatileLoad(Value cond, Value mem, Value i) {
    auto ifOp = scf::IfOp::create(b, TypeRange{vf}, cond, true);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(ifOp.thenBlock());
    scf::YieldOp::create(b, volatileLoad(mem, i, vf, f32, 4 * spec.vec));
    b.setInsertionPointToStart(ifOp.elseBlock());
    scf::YieldOp::create(b, splat(0.0));
    return ifOp.getResult(0);
  }
  /// Orders the look-back protocol's accesses at GPU scope (acquire-release:
  /// cheaper than membar.gl's sequentially consistent fence).
  void fence() {
    NVVM::InlinePtxOp::create(b, TypeRange{}, ValueRange{}, ValueRange{},
                              "fence.acq_rel.gpu;", Value());
  }
};

/// The kernel's argument types: one 1-D memref per array, then B, T, N
/// (and, on GPUs, the launch's epoch, which tags its status words).
SmallVector<Type> kernelArgTypes(const ScanKernelSpec &spec, MLIRContext *ctx, bool gpu) {
  SmallVector<Type> types;
  for (Type t : spec.arrayTypes(ctx, gpu))
    types.push_back(MemRefType::get({ShapedType::kDynamic}, t));
  types.append(gpu ? 4 : 3, IndexType::get(ctx));
  return types;
}

/// The array arguments of a kernel, in the order of ScanKernelSpec::arrayArgs.
struct ArrayArgs {
  Value la, b, init, h, fin, dy, dfin, dla, db, dinit;
  template <class Next> ArrayArgs(const ScanKernelSpec &spec, Next next) {
    la = next();
    if (spec.kind == ScanKernelKind::Forward) {
      b = next();
      if (spec.hasInit) init = next();
      h = next();
      fin = next();
      return;
    }
    h = next();
    if (spec.hasInit) init = next();
    dy = next();
    dfin = next();
    dla = next();
    db = next();
    if (spec.hasInit) dinit = next();
  }
};

/// Time index of logical step `s`: the scan walks s = 0..T-1.
Value timeOf(KernelBuilder &k, Value s, Value T, bool rev) {
  if (!rev)
    return s;
  return k.subi(k.subi(T, k.idx(1)), s);
}

} // namespace

//===----------------------------------------------------------------------===//
// GPU
//===----------------------------------------------------------------------===//

void mlir::mmrec::buildGpuScanKernel(OpBuilder &builder, Location loc,
                                     Operation *gpuModule,
                                     const ScanKernelSpec &spec) {
  MLIRContext *ctx = builder.getContext();
  ImplicitLocOpBuilder b(loc, builder);
  b.setInsertionPointToEnd(&gpuModule->getRegion(0).front());

  const int64_t V = spec.vec, L = spec.steps, W = spec.warps;
  const int64_t CB = spec.channelsPerBlock(), CL = spec.stepsPerBlock();
  const bool adjoint = spec.kind == ScanKernelKind::Adjoint;
  // The adjoint runs against the forward's direction.
  const bool rev = adjoint ? !spec.reverse : spec.reverse;

  SmallVector<Type> argTypes = kernelArgTypes(spec, ctx, /*gpu=*/true);
  auto wgSpace = gpu::AddressSpaceAttr::get(ctx, gpu::AddressSpace::Workgroup);
  Type f32 = b.getF32Type();
  SmallVector<Type> workgroup = {
      MemRefType::get({W * CB}, f32, MemRefLayoutAttrInterface{}, wgSpace), // A per warp
      MemRefType::get({W * CB}, f32, MemRefLayoutAttrInterface{}, wgSpace), // B per warp
      MemRefType::get({CB}, f32, MemRefLayoutAttrInterface{}, wgSpace),     // carry-in
      MemRefType::get({1}, b.getIndexType(), MemRefLayoutAttrInterface{}, wgSpace)}; // ticket
  auto func = gpu::GPUFuncOp::create(b, spec.name, b.getFunctionType(argTypes, {}),
                                     workgroup);
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
  func.setKnownBlockSizeAttr(b.getDenseI32ArrayAttr({int32_t(32 * W), 1, 1}));
  if (spec.minBlocks > 0)
    func->setAttr("nvvm.minctasm", b.getI32IntegerAttr(int32_t(spec.minBlocks)));
  b.setInsertionPointToStart(&func.getBody().front());
  KernelBuilder k(b, spec);

  // Arguments.
  unsigned a = 0;
  auto next = [&]() { return func.getArgument(a++); };
  ArrayArgs arr(spec, next);
  Value la = arr.la, bIn = arr.b, init = arr.init, hOut = arr.h, fin = arr.fin;
  Value hIn = arr.h, dy = arr.dy, dfin = arr.dfin, dla = arr.dla, db = arr.db;
  Value dinit = arr.dinit;
  Value ws = next(), status = next();
  Value Bsz = next(), T = next(), N = next(), epoch = next();
  Value smA = func.getWorkgroupAttributions()[0], smB = func.getWorkgroupAttributions()[1];
  Value smC = func.getWorkgroupAttributions()[2], smT = func.getWorkgroupAttributions()[3];

  Value c0 = k.idx(0), c1 = k.idx(1);
  Value tid = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  Value warp = k.divui(tid, k.idx(32)), lane = k.remui(tid, k.idx(32));
  Value tiles = k.divui(k.addi(N, k.idx(CB - 1)), k.idx(CB));
  Value chunks = k.divui(k.addi(T, k.idx(CL - 1)), k.idx(CL));
  Value perChunk = k.muli(Bsz, tiles);

  // 0. Ticket (or the block index, ScanKernelSpec::ticket).
  Value ticket;
  if (spec.ticket) {
    auto ifOp = scf::IfOp::create(b, TypeRange{}, k.eq(tid, c0), false);
    {
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(ifOp.thenBlock());
      Value t = memref::AtomicRMWOp::create(b, arith::AtomicRMWKind::addi, k.i32(1), ws,
                                            ValueRange{c0});
      memref::StoreOp::create(b, arith::IndexCastUIOp::create(b, b.getIndexType(), t), smT,
                              ValueRange{c0});
    }
    gpu::BarrierOp::create(b);
    ticket = memref::LoadOp::create(b, smT, ValueRange{c0});
  } else {
    ticket = gpu::BlockIdOp::create(b, gpu::Dimension::x);
  }
  Value chunk = k.divui(ticket, perChunk);
  Value rest = k.remui(ticket, perChunk);
  Value bi = k.divui(rest, tiles), tile = k.remui(rest, tiles);
  Value n0 = k.addi(k.muli(tile, k.idx(CB)), k.muli(lane, k.idx(V)));
  Value active = k.ult(n0, N);
  Value rowBase = k.muli(bi, T); // row (bi, t) starts at (rowBase + t)·N
  Value Tm1 = k.subi(T, c1);
  // Store indices use n0 (stores are guarded); load indices are clamped
  // into bounds so that loads need no branch.
  Value n0c = k.select(active, n0, c0);
  auto elemIdx = [&](Value t) { return k.addi(k.muli(k.addi(rowBase, t), N), n0); };
  auto loadIdx = [&](Value t) {
    Value tc = arith::MinUIOp::create(b, t, Tm1);
    return k.addi(k.muli(k.addi(rowBase, tc), N), n0c);
  };
  Value s0 = k.addi(k.muli(chunk, k.idx(CL)), k.muli(warp, k.idx(L)));

  // Staged: step j's inputs of thread tid live at [j][tid][V] of shared
  // arrays (two, four for the adjoint; consecutive threads' pieces are
  // adjacent: no bank conflicts), filled by cp.async, so no register holds
  // them.
  const bool stage = spec.staged();
  const int64_t NT = 32 * W;
  const int64_t eb = spec.elementType.getIntOrFloatBitWidth() / 8;
  // Byte offsets of the arrays: ℓ, x (dy for the adjoint), then the
  // adjoint's ℓ_t and h_prev.
  const int64_t offX = L * NT * V * 4, offE = offX + L * NT * V * eb, offH = offE + L * NT * V * 4;
  Value smL, smX, smE, smH, smBase;
  if (stage) {
    auto bytesType = MemRefType::get({ShapedType::kDynamic}, b.getI8Type(),
                                     MemRefLayoutAttrInterface{}, wgSpace);
    Value dyn = gpu::DynamicSharedMemoryOp::create(b, bytesType);
    auto view = [&](Type et, int64_t byteOffset) -> Value {
      return memref::ViewOp::create(
          b, MemRefType::get({L * NT * V}, et, MemRefLayoutAttrInterface{}, wgSpace), dyn,
          k.idx(byteOffset), ValueRange{});
    };
    smL = view(f32, 0);
    smX = view(spec.elementType, offX);
    if (adjoint) {
      smE = view(f32, offE);
      smH = view(spec.elementType, offH);
    }
    smBase = memref::ExtractAlignedPointerAsIndexOp::create(b, dyn);
  }
  auto stageIdx = [&](int64_t j) { return k.muli(k.addi(k.idx(j * NT), tid), k.idx(V)); };
  // Step j's V elements of a staged array of the I/O type, as f32.
  auto loadStagedX = [&](Value sm, int64_t j) -> Value {
    Value v = vector::LoadOp::create(b, k.ve, sm, ValueRange{stageIdx(j)});
    return spec.elementType != f32 ? Value(arith::ExtFOp::create(b, k.vf, v)) : v;
  };
  // cp.async of `bytes` (a multiple of 4, at most 16 a copy) from element
  // `i` of `mem` to byte `dst` of the dynamic shared memory.
  auto copyAsync = [&](Value mem, Value i, Value dst, int64_t bytes) {
    auto type = llvm::cast<MemRefType>(mem.getType());
    int64_t srcBytes = type.getElementTypeBitWidth() / 8;
    Value base = memref::ExtractAlignedPointerAsIndexOp::create(b, mem);
    for (int64_t o = 0; o < bytes; o += 16) {
      int64_t n = std::min<int64_t>(16, bytes - o);
      Value src = arith::IndexCastOp::create(
          b, b.getI64Type(), k.addi(base, k.addi(k.muli(i, k.idx(srcBytes)), k.idx(o))));
      Value d = arith::IndexCastOp::create(b, b.getI32Type(),
                                           k.addi(smBase, k.addi(dst, k.idx(o))));
      std::string code = "{ .reg .u64 mmrec_g; cvta.to.global.u64 mmrec_g, $1; cp.async." +
                         std::string(n == 16 ? "cg" : "ca") + ".shared.global [$0], [mmrec_g], " +
                         std::to_string(n) + "; }";
      NVVM::InlinePtxOp::create(b, TypeRange{}, ValueRange{d, src}, ValueRange{}, code, Value());
    }
  };

  // 1. Local scan of L steps in registers: all loads first, then the chain.
  SmallVector<Value> sIdx, tIdx, valid, ls, xs;
  // The adjoint's neighbours of step s (time t): next(t), the adjoint's
  // previous step, carries ℓ into the scan; prev(t), the forward's previous
  // step, carries h_prev into the epilogue.
  auto hasNextOf = [&](Value s, Value ok) {
    return k.andi(ok, arith::CmpIOp::create(b, arith::CmpIPredicate::ugt, s, c0));
  };
  auto nextOf = [&](Value t) { return rev ? k.addi(t, c1) : k.subi(t, c1); };
  auto hasPrevOf = [&](Value s, Value ok) {
    return k.andi(ok, arith::CmpIOp::create(b, arith::CmpIPredicate::ult, s, Tm1));
  };
  auto prevOf = [&](Value t) { return rev ? k.subi(t, c1) : k.addi(t, c1); };
  if (stage) {
    for (int64_t j = 0; j < L; ++j) {
      Value s = k.addi(s0, k.idx(j));
      Value t = timeOf(k, s, T, rev);
      Value off = stageIdx(j);
      if (!adjoint) {
        copyAsync(la, loadIdx(t), k.muli(off, k.idx(4)), 4 * V);
        copyAsync(bIn, loadIdx(t), k.addi(k.idx(offX), k.muli(off, k.idx(eb))), V * eb);
        continue;
      }
      Value ok = k.andi(k.ult(s, T), active);
      copyAsync(la, loadIdx(k.select(hasNextOf(s, ok), nextOf(t), t)), k.muli(off, k.idx(4)),
                4 * V);
      copyAsync(dy, loadIdx(t), k.addi(k.idx(offX), k.muli(off, k.idx(eb))), V * eb);
      copyAsync(la, loadIdx(t), k.addi(k.idx(offE), k.muli(off, k.idx(4))), 4 * V);
      copyAsync(hIn, loadIdx(k.select(hasPrevOf(s, ok), prevOf(t), t)),
                k.addi(k.idx(offH), k.muli(off, k.idx(eb))), V * eb);
    }
    NVVM::InlinePtxOp::create(b, TypeRange{}, ValueRange{}, ValueRange{},
                              "cp.async.wait_all;", Value());
  }
  for (int64_t j = 0; j < L; ++j) {
    Value s = k.addi(s0, k.idx(j));
    Value t = timeOf(k, s, T, rev);
    Value ok = k.andi(k.ult(s, T), active);
    if (stage) {
      // Read back after cp.async.wait_all (this thread's own copies); the
      // adjoint's ℓ is next(t)'s, the identity where there is none.
      Value off = stageIdx(j);
      Value lv = vector::LoadOp::create(b, k.vf, smL, ValueRange{off});
      Value lok = adjoint ? hasNextOf(s, ok) : ok;
      ls.push_back(k.select(lok, k.clampL(k.rawLog(lv, true)), k.splat(0.0)));
      xs.push_back(k.select(ok, loadStagedX(smX, j), k.splat(0.0)));
    } else if (!adjoint) {
      ls.push_back(k.loadLog(la, loadIdx(t), ok));
      xs.push_back(k.loadVec(bIn, loadIdx(t), ok));
    } else {
      // g_t = dy_t + γ_{next(t)} g_{next(t)}; next(t) is the adjoint's
      // previous step (s - 1).
      Value hasNext = hasNextOf(s, ok);
      ls.push_back(k.loadLog(la, loadIdx(k.select(hasNext, nextOf(t), t)), hasNext));
      xs.push_back(k.loadVec(dy, loadIdx(t), ok));
    }
    sIdx.push_back(s); tIdx.push_back(t); valid.push_back(ok);
  }
  // The steps' decays γ_j = exp(ℓ_j) are kept (one ex2 a step): step 4
  // reruns the chain from the carry-in, h_j = γ_j·h_{j−1} + x_j, instead of
  // keeping h_loc[j] and Σℓ and paying a second exp a step (measured on the
  // H200: bf16 B8·T2048 forward 59% → 64% of the floor, fp32 unchanged).
  // Staged, γ_j goes back to shared memory in ℓ_j's place, and step 4
  // reads γ_j and x_j from there.
  SmallVector<Value> gs;
  Value hl = k.splat(0.0), cl = k.splat(0.0);
  for (int64_t j = 0; j < L; ++j) {
    gs.push_back(k.exp(ls[j], true));
    if (stage)
      vector::StoreOp::create(b, gs[j], smL, ValueRange{stageIdx(j)});
    hl = k.add(k.mul(gs[j], hl), xs[j]);
    cl = k.add(cl, ls[j]);
  }

  // 2. Warp aggregates through shared memory; exclusive prefix of the warp.
  Value smIdx = k.addi(k.muli(warp, k.idx(CB)), k.muli(lane, k.idx(V)));
  vector::StoreOp::create(b, cl, smA, ValueRange{smIdx});
  vector::StoreOp::create(b, hl, smB, ValueRange{smIdx});
  gpu::BarrierOp::create(b);
  auto fold = scf::ForOp::create(b, c0, warp, c1, ValueRange{k.splat(0.0), k.splat(0.0)});
  {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(fold.getBody());
    Value w = fold.getInductionVar();
    Value i = k.addi(k.muli(w, k.idx(CB)), k.muli(lane, k.idx(V)));
    Value Aw = vector::LoadOp::create(b, k.vf, smA, ValueRange{i});
    Value Bw = vector::LoadOp::create(b, k.vf, smB, ValueRange{i});
    Value Aacc = fold.getRegionIterArgs()[0], Bacc = fold.getRegionIterArgs()[1];
    // Apply warp w after the accumulated map: h ↦ exp(Aw)(exp(Aacc)h + Bacc) + Bw.
    Value An = k.add(Aacc, Aw);
    Value Bn = k.add(k.mul(k.exp(Aw, true), Bacc), Bw);
    scf::YieldOp::create(b, ValueRange{An, Bn});
  }
  Value Aex = fold.getResult(0), Bex = fold.getResult(1);

  // Adjoint: the epilogue's loads (ℓ_t and h_prev(t)) do not depend on the
  // carry; issue them now so that they are in flight during the look-back
  // (staged: they are in shared memory already, read in step 4).
  SmallVector<Value> epiOperand, epiHp;
  if (adjoint && !stage) {
    for (int64_t j = 0; j < L; ++j) {
      Value t = tIdx[j], ok = valid[j];
      Value isEnd = k.andi(ok, k.eq(sIdx[j], Tm1));
      epiOperand.push_back(k.loadDecayOperand(la, loadIdx(t)));
      // prev(t) in the forward's order is the adjoint's next step.
      Value hasPrev = hasPrevOf(sIdx[j], ok);
      Value hp = k.loadVec(hIn, loadIdx(k.select(hasPrev, prevOf(t), t)), hasPrev);
      if (spec.hasInit) {
        Value h0 = k.loadVec(init, k.addi(k.muli(bi, N), n0c), k.andi(ok, isEnd));
        hp = k.select(isEnd, h0, hp);
      }
      epiHp.push_back(hp);
    }
  }

  // 3. The last warp: publish the aggregate, look back, publish the prefix.
  // Each (batch, chunk, channel) has one 16-byte status word {tag, A, B, P}
  // written with a single vector store: tag = epoch·4 + 1 (aggregate A, B)
  // or + 2 (inclusive prefix P too). A reader sees a whole word or none of
  // it (the single-word tile status of CUB's decoupled look-back), so no
  // fence separates values from flags, and one load a predecessor returns
  // both. Words of earlier launches carry smaller tags: unpublished.
  {
    Value isLast = k.eq(warp, k.idx(W - 1));
    auto ifLast = scf::IfOp::create(b, TypeRange{}, isLast, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(ifLast.thenBlock());
    Type i32 = b.getI32Type(), i1 = b.getI1Type();
    VectorType word = VectorType::get({4}, i32);
    Value ep = arith::IndexCastOp::create(b, i32, epoch);
    Value tagAgg = arith::AddIOp::create(b, k.muli(ep, k.i32(4)), k.i32(1));
    Value tagPre = arith::AddIOp::create(b, k.muli(ep, k.i32(4)), k.i32(2));
    Value Ablk = k.add(Aex, cl);
    Value Bblk = k.add(k.mul(k.exp(cl, true), Bex), hl);
    // Word index (in i32 units) of channel n0 + i at chunk `ch`.
    auto wordAt = [&](Value ch, int64_t i) {
      return k.muli(k.addi(k.muli(k.addi(k.muli(bi, chunks), ch), N), k.addi(n0, k.idx(i))),
                    k.idx(4));
    };
    auto bits = [&](Value vec, int64_t i) {
      return arith::BitcastOp::create(b, i32, vector::ExtractOp::create(b, vec, i));
    };
    // Channels past N (inactive lanes) neither publish nor read.
    auto publish = [&](Value ch, Value tag, Value A, Value Bv, Value P) {
      auto ifAct = scf::IfOp::create(b, TypeRange{}, active, false);
      OpBuilder::InsertionGuard g3(b);
      b.setInsertionPointToStart(ifAct.thenBlock());
      for (int64_t i = 0; i < V; ++i) {
        Value w = vector::FromElementsOp::create(
            b, word, ValueRange{tag, bits(A, i), bits(Bv, i), bits(P, i)});
        k.volatileStore(w, status, wordAt(ch, i), i32, 16);
      }
    };
    Value initV;
    if (!adjoint)
      initV = spec.hasInit ? k.loadVec(init, k.addi(k.muli(bi, N), n0c), active)
                           : k.splat(0.0);
    else
      initV = k.loadVec(dfin, k.addi(k.muli(bi, N), n0c), active);
    Value isFirst = k.eq(chunk, c0);
    auto ifFirst = scf::IfOp::create(b, TypeRange{k.vf}, isFirst, true);
    {
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(ifFirst.thenBlock());
      scf::YieldOp::create(b, initV);
      b.setInsertionPointToStart(ifFirst.elseBlock());
      publish(chunk, tagAgg, Ablk, Bblk, k.splat(0.0));
      // Look back: p = chunk-1, chunk-2, ... until an inclusive prefix.
      SmallVector<Type> wordTypes(V, word);
      auto loop = scf::WhileOp::create(
          b, TypeRange{b.getIndexType(), k.vf, k.vf, i1, k.vf},
          ValueRange{k.subi(chunk, c1), k.splat(0.0), k.splat(0.0),
                     arith::ConstantIntOp::create(b, 0, 1), k.splat(0.0)});
      {
        OpBuilder::InsertionGuard g3(b);
        SmallVector<Location> locs(5, loc);
        Block *before = b.createBlock(&loop.getBefore(), {}, loop->getResultTypes(), locs);
        Value done = before->getArgument(3);
        Value notDone = arith::XOrIOp::create(b, done, arith::ConstantIntOp::create(b, 1, 1));
        scf::ConditionOp::create(b, notDone, before->getArguments());
        Block *after = b.createBlock(&loop.getAfter(), {}, loop->getResultTypes(), locs);
        Value p = after->getArgument(0);
        Value Aacc = after->getArgument(1), Bacc = after->getArgument(2);
        // Spin until the predecessor's words of all V channels are published
        // (inactive lanes read nothing and see prefixes of zeros).
        auto spin = scf::WhileOp::create(b, TypeRange(wordTypes), ValueRange{});
        {
          OpBuilder::InsertionGuard g4(b);
          b.createBlock(&spin.getBefore());
          SmallVector<Value> words;
          Value ready = active;
          Value idle = vector::FromElementsOp::create(
              b, word, ValueRange{tagPre, k.i32(0), k.i32(0), k.i32(0)});
          for (int64_t i = 0; i < V; ++i) {
            auto ifAct = scf::IfOp::create(b, TypeRange{word}, active, true);
            {
              OpBuilder::InsertionGuard g5(b);
              b.setInsertionPointToStart(ifAct.thenBlock());
              scf::YieldOp::create(b, k.volatileLoad(status, wordAt(p, i), word, i32, 16));
              b.setInsertionPointToStart(ifAct.elseBlock());
              scf::YieldOp::create(b, idle);
            }
            Value w = ifAct.getResult(0);
            words.push_back(w);
            Value tag = vector::ExtractOp::create(b, w, 0);
            ready = k.andi(ready, arith::CmpIOp::create(b, arith::CmpIPredicate::uge, tag, tagAgg));
          }
          ready = arith::OrIOp::create(
              b, ready, arith::XOrIOp::create(b, active, arith::ConstantIntOp::create(b, 1, 1)));
          Value notReady = arith::XOrIOp::create(b, ready, arith::ConstantIntOp::create(b, 1, 1));
          scf::ConditionOp::create(b, notReady, words);
          SmallVector<Location> wlocs(V, loc);
          b.createBlock(&spin.getAfter(), {}, wordTypes, wlocs);
          scf::YieldOp::create(b, ValueRange{});
        }
        // All V words prefixes: done; else fold the aggregates (a prefix
        // word holds its chunk's A and B too) and go on to p − 1.
        Value allPrefix = arith::ConstantIntOp::create(b, 1, 1);
        Value Ap = k.splat(0.0), Bp = k.splat(0.0), Pp = k.splat(0.0);
        for (int64_t i = 0; i < V; ++i) {
          Value w = spin.getResult(i);
          allPrefix = k.andi(allPrefix, k.eq(vector::ExtractOp::create(b, w, 0), tagPre));
          auto f = [&](int64_t j) {
            return arith::BitcastOp::create(b, f32, vector::ExtractOp::create(b, w, j));
          };
          Ap = vector::InsertOp::create(b, f(1), Ap, i);
          Bp = vector::InsertOp::create(b, f(2), Bp, i);
          Pp = vector::InsertOp::create(b, f(3), Pp, i);
        }
        Value eA = k.exp(Aacc, true);
        Value carry = k.add(k.mul(eA, Pp), Bacc);
        // Chunk p comes before the accumulated chunks p+1..chunk-1.
        Value An = k.add(Aacc, Ap);
        Value Bn = k.add(k.mul(eA, Bp), Bacc);
        scf::YieldOp::create(b, ValueRange{k.subi(p, c1), k.select(allPrefix, Aacc, An),
                                           k.select(allPrefix, Bacc, Bn), allPrefix, carry});
      }
      scf::YieldOp::create(b, loop.getResult(4));
    }
    Value carry = ifFirst.getResult(0);
    // Publish the inclusive prefix.
    Value P = k.add(k.mul(k.exp(Ablk, true), carry), Bblk);
    publish(chunk, tagPre, Ablk, Bblk, P);
    vector::StoreOp::create(b, carry, smC, ValueRange{k.muli(lane, k.idx(V))});
  }
  gpu::BarrierOp::create(b);

  // 4. Apply the carry and write.
  Value carry = vector::LoadOp::create(b, k.vf, smC, ValueRange{k.muli(lane, k.idx(V))});
  Value hin = k.add(k.mul(k.exp(Aex, true), carry), Bex);
  Value h = hin;
  // Staged adjoint with an initial state: h_prev of the first step is init,
  // loaded once here.
  Value initStaged;
  if (stage && adjoint && spec.hasInit)
    initStaged = k.loadVec(init, k.addi(k.muli(bi, N), n0c), active);
  for (int64_t j = 0; j < L; ++j) {
    if (stage) {
      // Steps past T or channels past N are never stored: no select.
      Value g = vector::LoadOp::create(b, k.vf, smL, ValueRange{stageIdx(j)});
      h = k.add(k.mul(g, h), loadStagedX(smX, j));
    } else {
      h = k.add(k.mul(gs[j], h), xs[j]);
    }
    Value t = tIdx[j], ok = valid[j];
    Value isEnd = k.andi(ok, k.eq(sIdx[j], Tm1));
    Value finIdx = k.addi(k.muli(bi, N), n0);
    if (!adjoint) {
      k.storeVec(h, hOut, elemIdx(t), ok);
      k.storeVec(h, fin, finIdx, isEnd);
      continue;
    }
    // Adjoint epilogue: g = h here. grad_b = g; grad_ℓ = g·γ_t·h_prev(t)
    // (zero where the clamp is active); grad_init = γ_first · g_first.
    k.storeVec(h, db, elemIdx(t), ok);
    Value operand, hp;
    if (stage) {
      operand = vector::LoadOp::create(b, k.vf, smE, ValueRange{stageIdx(j)});
      hp = k.select(hasPrevOf(sIdx[j], ok), loadStagedX(smH, j), k.splat(0.0));
      if (spec.hasInit)
        hp = k.select(isEnd, initStaged, hp);
    } else {
      operand = epiOperand[j];
      hp = epiHp[j];
    }
    Value raw = k.rawLog(operand, true);
    Value inRange = arith::AndIOp::create(
        b, arith::CmpFOp::create(b, arith::CmpFPredicate::OGE, raw, k.splat(spec.clampMin)),
        arith::CmpFOp::create(b, arith::CmpFPredicate::OLE, raw, k.splat(spec.clampMax)));
    Value gamma = k.exp(k.clampL(raw), true);
    Value dl = k.select(inRange, k.mul(k.mul(h, gamma), hp), k.splat(0.0));
    if (spec.gateLogits)
      dl = k.mul(dl, k.rawLogDerivative(operand, true));
    if (spec.inner == 1)
      k.storeVec(dl, dla, elemIdx(t), ok);
    if (spec.hasInit)
      k.storeVec(k.mul(gamma, h), dinit, finIdx, isEnd);
  }
  gpu::ReturnOp::create(b);
}

//===----------------------------------------------------------------------===//
// CPU
//===----------------------------------------------------------------------===//

void mlir::mmrec::buildCpuScanKernel(OpBuilder &builder, Location loc,
                                     ModuleOp module, const ScanKernelSpec &spec) {
  MLIRContext *ctx = builder.getContext();
  ImplicitLocOpBuilder b(loc, builder);
  b.setInsertionPointToEnd(module.getBody());
  const bool adjoint = spec.kind == ScanKernelKind::Adjoint;
  const bool rev = adjoint ? !spec.reverse : spec.reverse;

  SmallVector<Type> argTypes = kernelArgTypes(spec, ctx, /*gpu=*/false);
  auto func = func::FuncOp::create(b, spec.name, b.getFunctionType(argTypes, {}));
  func->setAttr("llvm.emit_c_interface", b.getUnitAttr());
  Block *entry = func.addEntryBlock();
  b.setInsertionPointToStart(entry);
  ScanKernelSpec scalar = spec;
  scalar.vec = 1;
  KernelBuilder k(b, scalar);
  Type f32 = b.getF32Type();

  unsigned a = 0;
  auto next = [&]() { return func.getArgument(a++); };
  ArrayArgs arr(spec, next);
  Value la = arr.la, bIn = arr.b, init = arr.init, hOut = arr.h, fin = arr.fin;
  Value hIn = arr.h, dy = arr.dy, dfin = arr.dfin, dla = arr.dla, db = arr.db;
  Value dinit = arr.dinit;
  Value Bsz = next(), T = next(), N = next();
  Value c0 = k.idx(0), c1 = k.idx(1);
  Value lo = arith::ConstantOp::create(b, b.getF32FloatAttr(spec.clampMin));
  Value hi = arith::ConstantOp::create(b, b.getF32FloatAttr(spec.clampMax));
  Value zero = arith::ConstantOp::create(b, b.getF32FloatAttr(0.0));
  auto ld = [&](Value mem, Value i) -> Value {
    Value v = memref::LoadOp::create(b, mem, ValueRange{i});
    if (v.getType() != f32)
      v = arith::ExtFOp::create(b, f32, v);
    return v;
  };
  auto st = [&](Value v, Value mem, Value i) {
    Type et = llvm::cast<MemRefType>(mem.getType()).getElementType();
    if (et != f32)
      v = arith::TruncFOp::create(b, et, v);
    memref::StoreOp::create(b, v, mem, ValueRange{i});
  };
  auto clamp = [&](Value l) {
    return arith::MinimumFOp::create(b, arith::MaximumFOp::create(b, l, lo), hi);
  };
  auto ldOperand = [&](Value elem) {
    Value i = spec.inner == 1 ? elem : k.divui(elem, k.idx(spec.inner));
    return memref::LoadOp::create(b, la, ValueRange{i}).getResult();
  };
  auto ldLog = [&](Value elem) { return k.rawLog(ldOperand(elem), /*gpu=*/false); };

  auto bLoop = scf::ForOp::create(b, c0, Bsz, c1);
  b.setInsertionPointToStart(bLoop.getBody());
  Value bi = bLoop.getInductionVar();
  auto sLoop = scf::ForOp::create(b, c0, T, c1);
  b.setInsertionPointToStart(sLoop.getBody());
  Value s = sLoop.getInductionVar();
  Value t = timeOf(k, s, T, rev);
  Value isFirst = k.eq(s, c0);
  Value isLast = k.eq(s, k.subi(T, c1));
  Value tPrevStep = rev ? k.addi(t, c1) : k.subi(t, c1); // time of step s-1
  Value tNextStep = rev ? k.subi(t, c1) : k.addi(t, c1); // time of step s+1
  auto nLoop = scf::ForOp::create(b, c0, N, c1);
  b.setInsertionPointToStart(nLoop.getBody());
  Value n = nLoop.getInductionVar();
  auto at = [&](Value tt) { return k.addi(k.muli(k.addi(k.muli(bi, T), tt), N), n); };
  Value fi = k.addi(k.muli(bi, N), n);
  Value prevT = k.select(isFirst, t, tPrevStep);
  if (!adjoint) {
    Value prev = memref::LoadOp::create(b, hOut, ValueRange{at(prevT)});
    if (prev.getType() != f32) prev = arith::ExtFOp::create(b, f32, prev);
    Value start = spec.hasInit ? ld(init, fi) : zero;
    prev = k.select(isFirst, start, prev);
    Value l = clamp(ldLog(at(t)));
    Value h = k.add(k.mul(math::ExpOp::create(b, l), prev), ld(bIn, at(t)));
    st(h, hOut, at(t));
    auto ifLast = scf::IfOp::create(b, TypeRange{}, isLast, false);
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(ifLast.thenBlock());
    st(h, fin, fi);
  } else {
    // g (kept in grad_b) of the adjoint's previous step, at time tPrevStep.
    Value gPrev = ld(db, at(prevT));
    Value lPrev = clamp(ldLog(at(prevT)));
    Value carry = k.mul(math::ExpOp::create(b, lPrev), gPrev);
    Value g = k.add(ld(dy, at(t)), k.select(isFirst, ld(dfin, fi), carry));
    st(g, db, at(t));
    Value operand = ldOperand(at(t));
    Value raw = k.rawLog(operand, false);
    Value inRange = arith::AndIOp::create(
        b, arith::CmpFOp::create(b, arith::CmpFPredicate::OGE, raw, lo),
        arith::CmpFOp::create(b, arith::CmpFPredicate::OLE, raw, hi));
    Value gamma = math::ExpOp::create(b, clamp(raw));
    Value hpT = k.select(isLast, t, tNextStep);
    Value hp = ld(hIn, at(hpT));
    Value start = spec.hasInit ? ld(init, fi) : zero;
    hp = k.select(isLast, start, hp);
    Value dl = k.select(inRange, k.mul(k.mul(g, gamma), hp), zero);
    if (spec.gateLogits)
      dl = k.mul(dl, k.rawLogDerivative(operand, false));
    if (spec.inner == 1) {
      st(dl, dla, at(t));
    } else {
      // One decay per `inner` channels: dℓ is the sum over them, built up
      // as n runs through the slot's channels in order.
      Value slot = k.divui(at(t), k.idx(spec.inner));
      Value first = k.eq(k.remui(n, k.idx(spec.inner)), c0);
      Value acc = k.select(first, zero, ld(dla, slot));
      st(k.add(acc, dl), dla, slot);
    }
    if (spec.hasInit) {
      auto ifLast = scf::IfOp::create(b, TypeRange{}, isLast, false);
      OpBuilder::InsertionGuard g2(b);
      b.setInsertionPointToStart(ifLast.thenBlock());
      st(k.mul(gamma, g), dinit, fi);
    }
  }
  b.setInsertionPointAfter(bLoop);
  func::ReturnOp::create(b);
}
