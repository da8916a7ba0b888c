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

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/ErrorHandling.h"

#include <cmath>
#include <functional>

using namespace mlir;
using namespace mlir::mmrec;

namespace {

/// Scalar loop-nest builder: f32 values, index arithmetic, loops.
///
/// Kernels are written once for both targets. `par` marks a loop whose
/// iterations are independent: on the CPU it is a plain loop; for the GPU
/// (`gpu` set) a `par` at the top of a kernel becomes a `gpu.launch` of one
/// thread per iteration (nested ones stay loops), so a kernel is a sequence
/// of launches on one stream, each finishing before the next starts. Inside
/// a launch, `accum` is an atomic add (iterations of one `par` that add into
/// the same element, such as a weight gradient summed over rows) and `buf`
/// is per-thread scratch; memory is touched only inside launches (the host
/// part of a GPU kernel only computes sizes).
struct K {
  static constexpr int64_t kThreads = 256; // threads per block of a GPU `par`
  ImplicitLocOpBuilder &b;
  Type f32, f64;
  bool gpu = false, inLaunch = false;
  Block *allocBlock = nullptr; // where `buf` places its allocas
  /// GPU: the gpu.module that holds kernels built as gpu.func (the level-0
  /// recurrence's persistent and cooperative kernels), created at first use.
  std::function<Operation *()> gpuModule;
  K(ImplicitLocOpBuilder &b, bool gpu, Block *entry)
      : b(b), f32(b.getF32Type()), f64(b.getF64Type()), gpu(gpu), allocBlock(entry) {}

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
  Value remui(Value x, Value y) { return arith::RemUIOp::create(b, x, y); }
  Value minui(Value x, Value y) { return arith::MinUIOp::create(b, x, y); }
  Value cmpi(arith::CmpIPredicate p, Value x, Value y) { return arith::CmpIOp::create(b, p, x, y); }
  Value cmpf(arith::CmpFPredicate p, Value x, Value y) { return arith::CmpFOp::create(b, p, x, y); }
  Value select(Value c, Value x, Value y) { return arith::SelectOp::create(b, c, x, y); }
  /// 1.0 where `c`, else 0.0.
  Value mask(Value c) { return select(c, cst(1.0), cst(0.0)); }
  /// σ(x) = 1/(1 + exp(−x)): a few ulp from σ on both sides in fp32 (for
  /// x < −88, exp(−x) is +inf or the GPU expansion's largest value and σ
  /// underflows to 0 as it should); one exp and one division, where
  /// exp(−softplus(−x)) took an exp, a log1p and a second exp.
  Value sigmoid(Value x) { return div(cst(1.0), add(cst(1.0), exp(neg(x)))); }
  /// softplus(x) = max(x, 0) + log1p(exp(−|x|)).
  Value softplus(Value x) {
    Value negAbs = neg(max(x, neg(x)));
    return add(max(x, cst(0.0)), log1p(exp(negAbs)));
  }
  Value logSigmoid(Value x) { return neg(softplus(neg(x))); }
  /// The f32 value of a (non-negative) index.
  Value toF32(Value i) {
    return arith::UIToFPOp::create(b, f32, arith::IndexCastOp::create(b, b.getI64Type(), i));
  }

  /// A GPU kernel touches device memory only from inside a launch.
  void touch() {
    if (gpu && !inLaunch)
      llvm::report_fatal_error("train kernel: memory access outside a GPU launch");
  }
  Value ld(Value mem, Value i) {
    touch();
    Value v = memref::LoadOp::create(b, mem, ValueRange{i});
    if (v.getType().isInteger(32))
      return arith::IndexCastOp::create(b, b.getIndexType(), v);
    return v;
  }
  void st(Value v, Value mem, Value i) {
    touch();
    memref::StoreOp::create(b, v, mem, ValueRange{i});
  }
  /// mem[i] += v, where no other iteration of the enclosing `par` writes mem[i].
  void addTo(Value mem, Value i, Value v) { st(add(ld(mem, i), v), mem, i); }
  /// mem[i] += v, where other iterations of the enclosing `par` may add to
  /// mem[i] too: an atomic add inside a GPU launch.
  void accum(Value mem, Value i, Value v) {
    if (gpu && inLaunch) {
      memref::AtomicRMWOp::create(b, arith::AtomicRMWKind::addf, v, mem, ValueRange{i});
      return;
    }
    addTo(mem, i, v);
  }

  template <class F> void loop(Value lo, Value hi, F body, int64_t step = 1) {
    auto f = scf::ForOp::create(b, lo, hi, idx(step));
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(f.getBody());
    body(f.getInductionVar());
  }
  template <class F> void loop(int64_t n, F body) { loop(idx(0), idx(n), body); }
  /// Builds the body of `launch` with body(launch): allocas go to its entry
  /// (per thread), memory may be touched, and the terminator is added.
  template <class F> void inside(gpu::LaunchOp launch, F body) {
    OpBuilder::InsertionGuard g(b);
    Block &entry = launch.getBody().front();
    b.setInsertionPointToStart(&entry);
    Block *saved = allocBlock;
    allocBlock = &entry;
    inLaunch = true;
    body(launch);
    gpu::TerminatorOp::create(b);
    inLaunch = false;
    allocBlock = saved;
  }
  /// Independent iterations body(i), i in [0, n): see the struct's comment.
  template <class F> void par(Value n, F body) {
    if (!gpu || inLaunch)
      return loop(idx(0), n, body);
    Value tpb = idx(kThreads), one = idx(1);
    // A launch of zero blocks is an error: skip empty ranges.
    ifThen(cmpi(arith::CmpIPredicate::ugt, n, idx(0)), [&] {
      Value blocks = divui(addi(n, idx(kThreads - 1)), tpb);
      inside(gpu::LaunchOp::create(b, blocks, one, one, tpb, one, one), [&](gpu::LaunchOp l) {
        Value i = addi(muli(l.getBlockIds().x, tpb), l.getThreadIds().x);
        ifThen(cmpi(arith::CmpIPredicate::ult, i, n), [&] { body(i); });
      });
    });
  }
  template <class F> void par(int64_t n, F body) { par(idx(n), body); }
  /// Elementwise over [0, n): store(i, value(i)). On the GPU a block of 256
  /// threads takes 4 × 256 indices (i = 1024·block + tid + 256·u, coalesced)
  /// and each thread computes its 4 values (at indices clamped into range)
  /// before any of its stores, so that their loads are in flight together:
  /// a store between them would serialize them (the arrays are not known
  /// apart). A thread an index reached 53% of the copy rate (to_bf16), this
  /// 98% (TrainKernelsGpu.ElementwiseSpeed).
  template <class V, class S> void parBatched(Value n, V value, S store) {
    if (!gpu || inLaunch)
      return loop(idx(0), n, [&](Value i) { store(i, value(i)); });
    constexpr int64_t kT = 256, kU = 4;
    blocks(divui(addi(n, idx(kT * kU - 1)), idx(kT * kU)), kT, {},
           [&](Value blk, Value tid, ArrayRef<Value>) {
             Value base = addi(muli(blk, idx(kT * kU)), tid), last = subi(n, idx(1));
             SmallVector<Value> v;
             for (int64_t u = 0; u < kU; ++u) // in bounds: n > 0 in a launch
               v.push_back(value(minui(addi(base, idx(u * kT)), last)));
             for (int64_t u = 0; u < kU; ++u) {
               Value i = addi(base, idx(u * kT));
               ifThen(cmpi(arith::CmpIPredicate::ult, i, n), [&] { store(i, v[size_t(u)]); });
             }
           });
  }
  /// GPU only: one block of `threads` threads per index of [0, n), whose
  /// threads cooperate through shared arrays (`shared`: their sizes in
  /// floats) and `barrier()`; body(block, thread, shared arrays). Every
  /// thread runs the body (no bounds guard).
  template <class F>
  void blocks(Value n, int64_t threads, ArrayRef<int64_t> shared, F body,
              StringRef nameSuffix = "") {
    if (!gpu || inLaunch)
      llvm::report_fatal_error("train kernel: K::blocks is for the top of a GPU kernel");
    auto ws = gpu::AddressSpaceAttr::get(b.getContext(), gpu::AddressSpace::Workgroup);
    SmallVector<Type> types;
    for (int64_t sz : shared)
      types.push_back(MemRefType::get({sz}, f32, MemRefLayoutAttrInterface{}, ws));
    ifThen(cmpi(arith::CmpIPredicate::ugt, n, idx(0)), [&] {
      Value one = idx(1);
      auto launch = gpu::LaunchOp::create(b, n, one, one, idx(threads), one, one, Value(),
                                          Type(), ValueRange{}, types);
      if (!nameSuffix.empty()) {
        // The outlined kernel's name: <function><suffix> (the runtime launches
        // kernels named *_coop cooperatively).
        auto fn = launch->getParentOfType<func::FuncOp>();
        std::string name = (fn.getSymName() + nameSuffix).str();
        launch.setModuleAttr(FlatSymbolRefAttr::get(b.getContext(), name));
        launch.setFunctionAttr(FlatSymbolRefAttr::get(b.getContext(), name));
      }
      inside(launch, [&](gpu::LaunchOp l) {
        SmallVector<Value> smem(l.getWorkgroupAttributions().begin(),
                                l.getWorkgroupAttributions().end());
        body(l.getBlockIds().x, l.getThreadIds().x, ArrayRef<Value>(smem));
      });
    });
  }
  void barrier() { gpu::BarrierOp::create(b); }
  /// GPU only: one warp per index of [0, n) (8 warps a block); body(w, lane).
  template <class F> void warps(Value n, F body) {
    if (!gpu || inLaunch)
      llvm::report_fatal_error("train kernel: K::warps is for the top of a GPU kernel");
    ifThen(cmpi(arith::CmpIPredicate::ugt, n, idx(0)), [&] {
      Value one = idx(1);
      Value blocks = divui(addi(n, idx(7)), idx(8));
      inside(gpu::LaunchOp::create(b, blocks, one, one, idx(256), one, one),
             [&](gpu::LaunchOp l) {
               Value tid = l.getThreadIds().x;
               Value w = addi(muli(l.getBlockIds().x, idx(8)), divui(tid, idx(32)));
               Value lane = remui(tid, idx(32));
               ifThen(cmpi(arith::CmpIPredicate::ult, w, n), [&] { body(w, lane); });
             });
    });
  }
  /// Row-parallel loops: body(row, lane) for rows [0, n), one warp per row
  /// on the GPU (lanes split the row's elements through `rowLoop` and
  /// `rowSum`, coalesced), one iteration per row on the CPU (lane 0).
  template <class F> void rows(Value n, F body) {
    if (gpu && !inLaunch)
      return warps(n, [&](Value r, Value lane) { body(r, lane); });
    par(n, [&](Value r) { body(r, idx(0)); });
  }
  /// body(j) for this lane's elements j of [0, n) of the row (`rows`).
  template <class F> void rowLoop(Value lane, Value n, F body) {
    loop(lane, n, body, gpu ? 32 : 1);
  }
  template <class F> void rowLoop(Value lane, int64_t n, F body) { rowLoop(lane, idx(n), body); }
  /// GPU: body(i, j) for the lane's elements j = lane + 32·i of [0, n),
  /// unrolled over i (a constant index: per-lane buffers indexed by i stay in
  /// registers, where a loop's variable index puts them in local memory).
  template <class F> void laneElements(Value lane, int64_t n, F body) {
    for (int64_t i = 0; 32 * i < n; ++i) {
      Value j = addi(lane, idx(32 * i));
      if (32 * (i + 1) <= n)
        body(idx(i), j);
      else
        ifThen(cmpi(arith::CmpIPredicate::ult, j, idx(n)), [&] { body(idx(i), j); });
    }
  }
  /// rowLoop with store(j, value(j)): on the GPU each lane computes 4 of its
  /// elements (32 apart) before storing any, so that their loads are in
  /// flight together (a store between them would serialize them: the arrays
  /// are not known apart). value(j) may read what store(j) writes, but no
  /// other element's. value may return several Values (a std::array).
  template <class V, class S> void rowLoopBatched(Value lane, int64_t n, V value, S store) {
    if (!gpu)
      return rowLoop(lane, n, [&](Value j) { store(j, value(j)); });
    constexpr int64_t kU = 4;
    const bool whole = n % (32 * kU) == 0;
    loop(
        lane, idx(n),
        [&](Value j0) {
          SmallVector<Value> js;
          SmallVector<decltype(value(j0))> vs;
          for (int64_t u = 0; u < kU; ++u) {
            js.push_back(addi(j0, idx(32 * u)));
            vs.push_back(value(whole ? js.back() : minui(js.back(), idx(n - 1))));
          }
          for (int64_t u = 0; u < kU; ++u) {
            if (whole)
              store(js[size_t(u)], vs[size_t(u)]);
            else
              ifThen(cmpi(arith::CmpIPredicate::ult, js[size_t(u)], idx(n)),
                     [&] { store(js[size_t(u)], vs[size_t(u)]); });
          }
        },
        32 * kU);
  }
  /// Σ_j body(j) over the row, on every lane (`rows`).
  template <class F> Value rowSum(Value lane, Value n, F body) {
    Value part = fold(lane, n, cst(0.0), body, [&](Value a, Value x) { return add(a, x); },
                      gpu ? 32 : 1);
    return gpu ? warpSum(part) : part;
  }
  /// With n known: on the GPU each lane evaluates its elements j = lane + 32·i
  /// in batches of up to 16 (all of them when there are at most 16), so that
  /// a batch's loads are in flight together, and adds them in the loop's
  /// order (the same sum). A loop of one element an iteration waited a load's
  /// latency an element (level 1's row dots: 16 round trips a dot product).
  template <class F> Value rowSum(Value lane, int64_t n, F body) {
    if (!gpu || n <= 32)
      return rowSum(lane, idx(n), body);
    const int64_t per = (n + 31) / 32, kU = per <= 16 ? per : 8;
    const bool whole = n % (32 * kU) == 0;
    auto batch = [&](Value j0, Value acc) {
      SmallVector<Value> vs;
      for (int64_t u = 0; u < kU; ++u) {
        Value j = addi(j0, idx(32 * u));
        if (whole) {
          vs.push_back(body(j));
          continue;
        }
        Value v = body(minui(j, idx(n - 1))); // in bounds; past n it adds 0
        vs.push_back(select(cmpi(arith::CmpIPredicate::ult, j, idx(n)), v, cst(0.0)));
      }
      for (Value v : vs)
        acc = add(acc, v);
      return acc;
    };
    Value part;
    if (per == kU) {
      part = batch(lane, cst(0.0));
    } else {
      auto f = scf::ForOp::create(b, lane, idx(n), idx(32 * kU), ValueRange{cst(0.0)});
      OpBuilder::InsertionGuard g(b);
      b.setInsertionPointToStart(f.getBody());
      scf::YieldOp::create(b, batch(f.getInductionVar(), f.getRegionIterArgs()[0]));
      part = f.getResult(0);
    }
    return warpSum(part);
  }
  /// body() on one lane of the row (`rows`).
  template <class F> void rowOnce(Value lane, F body) {
    if (!gpu)
      return body();
    ifThen(cmpi(arith::CmpIPredicate::eq, lane, idx(0)), body);
  }
  /// GPU: the maximum of `v` over the warp.
  Value warpMax(Value v) {
    for (int32_t off = 16; off >= 1; off /= 2)
      v = max(v, gpu::ShuffleOp::create(b, v, off, 32, gpu::ShuffleMode::XOR).getShuffleResult());
    return v;
  }
  /// GPU: `v` of lane `src` (an index).
  Value fromLane(Value v, Value src) {
    Value s32 = arith::IndexCastOp::create(b, b.getI32Type(), src);
    Value w32 = arith::ConstantIntOp::create(b, 32, 32);
    return gpu::ShuffleOp::create(b, v.getType(), b.getI1Type(), v, s32, w32,
                                  gpu::ShuffleModeAttr::get(b.getContext(), gpu::ShuffleMode::IDX))
        .getShuffleResult();
  }
  /// GPU: the sum of `v` over the 32 lanes of the warp (xor shuffles).
  Value warpSum(Value v) {
    for (int32_t off = 16; off >= 1; off /= 2)
      v = add(v, gpu::ShuffleOp::create(b, v, off, 32, gpu::ShuffleMode::XOR).getShuffleResult());
    return v;
  }
  /// warpSum of an f64 (each shuffle moves its two 32-bit halves).
  Value warpSum64(Value v) {
    Type i32 = b.getI32Type(), i64 = b.getI64Type(), f64t = b.getF64Type();
    for (int32_t off = 16; off >= 1; off /= 2) {
      Value bits = arith::BitcastOp::create(b, i64, v);
      Value lo = arith::TruncIOp::create(b, i32, bits);
      Value hi = arith::TruncIOp::create(
          b, i32, arith::ShRUIOp::create(b, bits, arith::ConstantIntOp::create(b, i64, 32)));
      auto shfl = [&](Value x) {
        return gpu::ShuffleOp::create(b, x, off, 32, gpu::ShuffleMode::XOR).getShuffleResult();
      };
      Value lo2 = arith::ExtUIOp::create(b, i64, shfl(lo));
      Value hi2 = arith::ShLIOp::create(b, arith::ExtUIOp::create(b, i64, shfl(hi)),
                                        arith::ConstantIntOp::create(b, i64, 32));
      Value other = arith::BitcastOp::create(b, f64t, arith::OrIOp::create(b, hi2, lo2));
      v = arith::AddFOp::create(b, v, other);
    }
    return v;
  }
  /// `par` over the index space dims[0] × dims[1] × …; body gets one index
  /// per dimension (the last varies fastest).
  template <class F> void par(std::initializer_list<Value> dims, F body) {
    SmallVector<Value> ds(dims);
    Value n = ds[0];
    for (size_t i = 1; i < ds.size(); ++i)
      n = muli(n, ds[i]);
    par(n, [&](Value flat) {
      SmallVector<Value> ids(ds.size());
      for (size_t i = ds.size(); i-- > 1;) {
        ids[i] = remui(flat, ds[i]);
        flat = divui(flat, ds[i]);
      }
      ids[0] = flat;
      body(ids);
    });
  }
  /// Folds body(i) over [lo, hi) with `combine`, starting from `init`.
  template <class F, class C>
  Value fold(Value lo, Value hi, Value init, F body, C combine, int64_t step = 1) {
    auto f = scf::ForOp::create(b, lo, hi, idx(step), ValueRange{init});
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
  /// Scratch of n floats: one per kernel call on the CPU (at the function's
  /// entry, never inside a loop), one per thread inside a GPU launch.
  Value buf(int64_t n) {
    OpBuilder::InsertionGuard g(b);
    b.setInsertionPointToStart(allocBlock);
    return memref::AllocaOp::create(b, MemRefType::get({n}, f32));
  }
};

using Args = llvm::StringMap<Value>;
using Body = std::function<void(K &, Args &)>;

bool isTokenArray(const std::string &n) { return n == "tokens" || n == "targets"; }
/// f64 accumulators (sumsq's: a gradient whose norm exceeds 1.8e19 must not
/// read as non-finite).
bool isF64Array(const std::string &n) { return n == "ss64"; }
/// AdamW's moments stored in bf16 (adamw_bf16); the bf16 copy of a matrix
/// product's operand (to_bf16).
bool isBf16Array(const std::string &n) {
  return n == "m16" || n == "v16" || n == "x16" || n == "h16" || n == "dP16" || n == "y16" ||
         n == "o16" || n == "g16" || n == "p16" || n == "df1_16" || n == "df3_16" ||
         n == "dlogits16" || n == "dx16" || n == "dpre16" || n == "dp16" || n == "dw16" ||
         n == "dy2_16" || n == "q16" || n == "k16" || n == "v16" || n == "dq16" || n == "dk16" ||
         n == "dv16";
}

/// Whether the kernel's `bf16` index asks for the bf16 copies of its
/// outputs (the operands of the next bf16 products, written beside the
/// fp32 values instead of by a separate to_bf16 pass).
Value wantsCopies(K &k, Args &a) { return k.cmpi(arith::CmpIPredicate::ne, a["bf16"], k.idx(0)); }
/// With `round`, also stores v rounded to bf16 (nearest even) at mem16[i].
void store16(K &k, Value round, Value v, Value mem16, Value i) {
  k.ifThen(round, [&] { k.st(arith::TruncFOp::create(k.b, k.b.getBF16Type(), v), mem16, i); });
}

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

GatedKernelSpec gatedSpec(const TrainConfig &c, bool adjoint, MLIRContext *ctx);
/// The level-0 kernels' arrays: GatedKernels.h's, then `sync` (int32, one
/// per batch row: the GPU kernels' row barriers; unused on the CPU).
std::vector<std::string> trainGatedArrays(const TrainConfig &c, bool adjoint) {
  MLIRContext ctx;
  std::vector<std::string> a = gatedSpec(c, adjoint, &ctx).arrayArgs();
  a.push_back("sync");
  return a;
}
void addGpuRecurrences(const TrainConfig &c, std::vector<Kernel> &ks);

/// The kernels of a training step; with `gpu`, also the level-0 recurrence
/// (on the CPU it comes from GatedKernels.h).
std::vector<Kernel> kernels(const TrainConfig &c, bool gpu = false) {
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

  // out[j] += Σ_n term(n, i = n·D + j) over the rows: sums over spans of
  // kSpan rows per channel (coalesced along j), one add a span (atomic on
  // the GPU) — an atomic an element was most of a kernel's time.
  auto addColumnSums = [=](K &k, Value rows, Value out, auto term) {
    constexpr int64_t kSpan = 128;
    Value spans = k.divui(k.addi(rows, k.idx(kSpan - 1)), k.idx(kSpan));
    k.par({spans, k.idx(D)}, [&](ArrayRef<Value> sj) {
      Value j = sj[1], n0 = k.muli(sj[0], k.idx(kSpan));
      Value acc = k.sum(n0, k.minui(rows, k.addi(n0, k.idx(kSpan))),
                        [&](Value n) { return term(n, k.addi(k.muli(n, k.idx(D)), j)); });
      k.accum(out, j, acc);
    });
  };

  // --- RMSNorm: y = x·r ⊙ w, r = (mean x² + ε)^−½; rstd[n] = r.
  // dx += r·(dy⊙w − x̂·mean(dy⊙w⊙x̂)), x̂ = x·r;  dw += Σ_n dy ⊙ x̂.
  // With bf16 ≠ 0 also y16 = bf16(y) (the operand of the products that follow).
  add("rmsnorm_fwd", {"x", "w", "y", "y16", "rstd"}, {"rows", "bf16"}, [=](K &k, Args &a) {
    Value round = wantsCopies(k, a);
    k.rows(a["rows"], [&](Value n, Value lane) {
      Value base = k.muli(n, k.idx(D));
      Value ss = k.rowSum(lane, D, [&](Value j) {
        Value x = k.ld(a["x"], k.addi(base, j));
        return k.mul(x, x);
      });
      Value r = k.div(k.cst(1.0), k.sqrt(k.add(k.mul(ss, k.cst(1.0 / D)), k.cst(eps))));
      k.rowOnce(lane, [&] { k.st(r, a["rstd"], n); });
      k.rowLoopBatched(
          lane, D,
          [&](Value j) { return k.mul(k.mul(k.ld(a["x"], k.addi(base, j)), r), k.ld(a["w"], j)); },
          [&](Value j, Value y) {
            Value i = k.addi(base, j);
            k.st(y, a["y"], i);
            store16(k, round, y, a["y16"], i);
          });
    });
  });
  // With bf16 ≠ 0 also dx16 = bf16(dx) as accumulated (the next products' operand).
  add("rmsnorm_bwd", {"x", "w", "rstd", "dy", "dx", "dx16", "dw"}, {"rows", "bf16"},
      [=](K &k, Args &a) {
    Value round = wantsCopies(k, a);
    if (k.gpu && D % 32 == 0 && D <= 1024) {
      // GPU, a row in registers (D / 32 elements a lane): a block of 8 warps
      // takes kRows rows a warp, reads x and dy once, and sums dw's terms in
      // registers, then in shared memory, then one atomic add a channel and
      // block (a second pass over the columns read x and dy again).
      constexpr int64_t kT = 256, kW = kT / 32, kRows = 16;
      const int64_t Q = D / 32;
      Value rows = a["rows"];
      Value nb = k.divui(k.addi(rows, k.idx(kW * kRows - 1)), k.idx(kW * kRows));
      k.blocks(nb, kT, {D}, [&](Value blk, Value tid, ArrayRef<Value> sm) {
        Value sdw = sm[0];
        k.loop(tid, k.idx(D), [&](Value j) { k.st(k.cst(0.0), sdw, j); }, kT);
        k.barrier();
        Value warp = k.divui(tid, k.idx(32)), lane = k.remui(tid, k.idx(32));
        Value xs = k.buf(Q), dyws = k.buf(Q), dxs = k.buf(Q), acc = k.buf(Q);
        k.laneElements(lane, D, [&](Value i, Value) { k.st(k.cst(0.0), acc, i); });
        Value n0 = k.muli(k.addi(k.muli(blk, k.idx(kW)), warp), k.idx(kRows));
        k.loop(n0, k.minui(rows, k.addi(n0, k.idx(kRows))), [&](Value n) {
          Value base = k.muli(n, k.idx(D));
          Value r = k.ld(a["rstd"], n);
          Value part = k.cst(0.0);
          // All of the row's loads before any store (which could alias
          // them); dw's term dy·x̂ is summed here.
          k.laneElements(lane, D, [&](Value i, Value j) {
            Value at = k.addi(base, j);
            Value x = k.ld(a["x"], at), dy = k.ld(a["dy"], at);
            Value dyw = k.mul(dy, k.ld(a["w"], j));
            k.st(x, xs, i);
            k.st(dyw, dyws, i);
            k.st(k.ld(a["dx"], at), dxs, i);
            part = k.add(part, k.mul(dyw, x));
            k.st(k.add(k.ld(acc, i), k.mul(dy, k.mul(x, r))), acc, i);
          });
          Value meanDot = k.mul(k.mul(k.warpSum(part), r), k.cst(1.0 / D));
          k.laneElements(lane, D, [&](Value i, Value j) {
            Value at = k.addi(base, j);
            Value xh = k.mul(k.ld(xs, i), r);
            Value dx = k.add(k.ld(dxs, i), k.mul(r, k.sub(k.ld(dyws, i), k.mul(xh, meanDot))));
            k.st(dx, a["dx"], at);
            store16(k, round, dx, a["dx16"], at);
          });
        });
        k.laneElements(lane, D, [&](Value i, Value j) { k.accum(sdw, j, k.ld(acc, i)); });
        k.barrier();
        k.loop(tid, k.idx(D), [&](Value j) { k.accum(a["dw"], j, k.ld(sdw, j)); }, kT);
      });
      return;
    }
    k.rows(a["rows"], [&](Value n, Value lane) {
      Value base = k.muli(n, k.idx(D));
      Value r = k.ld(a["rstd"], n);
      Value dot = k.rowSum(lane, D, [&](Value j) {
        Value i = k.addi(base, j);
        return k.mul(k.mul(k.ld(a["dy"], i), k.ld(a["w"], j)), k.mul(k.ld(a["x"], i), r));
      });
      Value meanDot = k.mul(dot, k.cst(1.0 / D));
      k.rowLoopBatched(
          lane, D,
          [&](Value j) {
            Value i = k.addi(base, j);
            Value xh = k.mul(k.ld(a["x"], i), r);
            Value dy = k.ld(a["dy"], i);
            return k.add(k.ld(a["dx"], i),
                         k.mul(r, k.sub(k.mul(dy, k.ld(a["w"], j)), k.mul(xh, meanDot))));
          },
          [&](Value j, Value dx) {
            Value i = k.addi(base, j);
            k.st(dx, a["dx"], i);
            store16(k, round, dx, a["dx16"], i);
          });
    });
    // dw_j += Σ_n dy_nj · x_nj · r_n.
    addColumnSums(k, a["rows"], a["dw"], [&](Value n, Value i) {
      return k.mul(k.ld(a["dy"], i), k.mul(k.ld(a["x"], i), k.ld(a["rstd"], n)));
    });
  });

  // --- Decay gate: ℓ = clamp(logσ(pre + λ), lo, hi).
  // dpre = dℓ·σ(−(pre + λ)) where the clamp is inactive, else 0; dλ += Σ_n dpre.
  add("decay_fwd", {"pre", "lambda", "ell"}, {"rows"}, [=](K &k, Args &a) {
    // Batched like swiglu_fwd: a transcendental-heavy map, 4 elements a
    // thread computed before any store.
    k.parBatched(
        k.muli(a["rows"], k.idx(D)),
        [&](Value i) {
          Value l = k.logSigmoid(k.add(k.ld(a["pre"], i), k.ld(a["lambda"], k.remui(i, k.idx(D)))));
          return k.min(k.max(l, k.cst(lo)), k.cst(hi));
        },
        [&](Value i, Value l) { k.st(l, a["ell"], i); });
  });
  // With bf16 ≠ 0 also dpre16 = bf16(dpre).
  add("decay_bwd", {"pre", "lambda", "dell", "dpre", "dpre16", "dlambda"}, {"rows", "bf16"},
      [=](K &k, Args &a) {
    Value round = wantsCopies(k, a);
    k.parBatched(
        k.muli(a["rows"], k.idx(D)),
        [&](Value i) {
          Value p = k.add(k.ld(a["pre"], i), k.ld(a["lambda"], k.remui(i, k.idx(D))));
          Value l = k.logSigmoid(p);
          Value in = arith::AndIOp::create(k.b, k.cmpf(arith::CmpFPredicate::OGE, l, k.cst(lo)),
                                           k.cmpf(arith::CmpFPredicate::OLE, l, k.cst(hi)));
          return k.mul(k.mul(k.ld(a["dell"], i), k.sigmoid(k.neg(p))), k.mask(in));
        },
        [&](Value i, Value g) {
          k.st(g, a["dpre"], i);
          store16(k, round, g, a["dpre16"], i);
        });
    // dλ_j += Σ_n dpre_nj.
    addColumnSums(k, a["rows"], a["dlambda"], [&](Value, Value i) { return k.ld(a["dpre"], i); });
  });

  // --- Level 1. K1_c, V1_c: means over chunk c; y1_t = Σ_{c<c(t)} p_c V1_c,
  // p = softmax_c(q_t·K1_c/√d) per group.
  // Backward: dp_c = dy·V1_c, ds_c = p_c(dp_c − Σ p dp); dq += Σ ds_c K1_c/√d,
  // dK1_c += ds_c q/√d, dV1_c += p_c dy; dk_t += dK1_{c(t)}/|c(t)| (same for v).
  // 1/|c| for the chunk [t0, t1).
  auto invCount = [](K &k, Value t0, Value t1) { return k.div(k.cst(1.0), k.toF32(k.subi(t1, t0))); };
  // K1, V1 of (batch row bi, chunk ch, channel j).
  auto chunkMean = [=](K &k, Args &a, Value bi, Value ch, Value j, Value T, Value nC) {
    Value t0 = k.muli(ch, k.idx(C)), t1 = chunkEnd(k, T, ch);
    Value inv = invCount(k, t0, t1);
    Value out = k.addi(k.muli(k.addi(k.muli(bi, nC), ch), k.idx(D)), j);
    auto at = [&](Value t) { return k.addi(k.muli(k.addi(k.muli(bi, T), t), k.idx(D)), j); };
    // With `bf16` ≠ 0, q, k and v are also written rounded (the slot
    // products' operands) as they are read.
    Value round = wantsCopies(k, a);
    auto read = [&](const char *x, Value t) {
      Value v = k.ld(a[x], at(t));
      store16(k, round, v, a[std::string(x) + "16"], at(t));
      return v;
    };
    Value sk = k.sum(t0, t1, [&](Value t) { return read("k", t); });
    Value sv = k.sum(t0, t1, [&](Value t) { return read("v", t); });
    k.ifThen(round, [&] { k.loop(t0, t1, [&](Value t) { read("q", t); }); });
    k.st(k.mul(sk, inv), a["K1"], out);
    k.st(k.mul(sv, inv), a["V1"], out);
  };
  // Scratch over the chunks of one segment: T ≤ max_seq_len (the runtime
  // checks it).
  const int64_t chunkBuf = nCmax + 1;
  // Training: a warp per (token, group) row (lanes along the channels; a
  // loop on the CPU) with an online softmax over the visible chunks, so no
  // probability is stored: forward y1 = Σ_c p_c V1_c and lse = m + log z a
  // row; backward pass A forms δ = Σ_c p_c dp_c = dy·y1 (dp_c = dy·V1_c)
  // into `stat` and dq = Σ_c ds_c K1_c/√d, ds_c = p_c(dp_c − δ); pass B, a
  // warp per (token span of C tokens, chunk c before it, group), sums the
  // span's dK1_c = Σ_t ds_tc q_t/√d and dV1_c = Σ_t p_tc dy_t in registers
  // and adds them in (an atomic add per channel and span on the GPU).
  const int64_t Q = (d + 31) / 32;
  // body(i, j) for the lane's channels j of the group (i: its slot in a
  // per-lane buffer of chanBuf(k) floats).
  // On the GPU unrolled over the Q slots (K::laneElements).
  auto ownCh = [=](K &k, Value lane, auto body) {
    if (!k.gpu)
      return k.loop(d, [&](Value j) { body(j, j); });
    k.laneElements(lane, d, body);
  };
  auto chanBuf = [=](K &k) { return k.buf(k.gpu ? Q : d); };
  // Row r of (B, T, G): batch row, token, group, its chunk c(t) and the
  // offset of its channels in (B, T, D).
  struct TokRow {
    Value bi, t, g, cT, base;
  };
  auto tokRow = [=](K &k, Value r, Value T) {
    TokRow x;
    x.g = k.remui(r, k.idx(G));
    Value bt = k.divui(r, k.idx(G));
    x.bi = k.divui(bt, T), x.t = k.remui(bt, T), x.cT = k.divui(x.t, k.idx(C));
    x.base = k.addi(k.muli(bt, k.idx(D)), k.muli(x.g, k.idx(d)));
    return x;
  };
  // Offset of group g of chunk ch of batch row bi in (B, nC, D).
  auto chunkAt = [=](K &k, Value bi, Value nC, Value ch, Value g) {
    return k.addi(k.muli(k.addi(k.muli(bi, nC), ch), k.idx(D)), k.muli(g, k.idx(d)));
  };
  // dot(x[xb..], y[yb..]) over the group's channels, on every lane.
  auto rowDot = [=](K &k, Value lane, Value x, Value xb, Value y, Value yb) {
    return k.rowSum(lane, d, [&](Value j) {
      return k.mul(k.ld(x, k.addi(xb, j)), k.ld(y, k.addi(yb, j)));
    });
  };
  // Online softmax state (m, z) in a 2-float buffer, and one chunk's update:
  // returns the rescale of what was summed so far and e = exp(s − m_new).
  auto onlineStep = [=](K &k, Value mz, Value s) {
    Value m = k.ld(mz, k.idx(0)), mn = k.max(m, s);
    Value scale = k.exp(k.sub(m, mn)), e = k.exp(k.sub(s, mn));
    k.st(mn, mz, k.idx(0));
    k.st(k.add(k.mul(k.ld(mz, k.idx(1)), scale), e), mz, k.idx(1));
    return std::make_pair(scale, e);
  };
  // The GPU level-1 kernels (gpuLevel1Fwd, gpuLevel1Bwd): chunks a tile,
  // such that K1, V1 (l1Tile·d each), the adjoint's ds (C·l1Tile), δ and
  // lse (C each) fit 48 KB of static shared memory; 0 (the warp-per-row
  // kernels) where not even one chunk does.
  const int64_t l1Tile = std::min<int64_t>(nCmax, (12288 - 2 * C) / (2 * d + C));
  // The GPU level-1 kernels' blocks: one per (batch row bi, span sp of C
  // tokens, group g), 8 warps; body(span, shared arrays).
  struct Span {
    Value bi, g, sp, warp, lane, t0, nTok;
    std::function<Value(Value)> tokBase, tokRowAt; // of span token tl
  };
  auto spanBlocks = [=](K &k, Args &a, Value T, Value nC, ArrayRef<int64_t> shared, auto body) {
    k.blocks(k.muli(k.muli(a["B"], k.idx(G)), nC), 256, shared,
             [&](Value blk, Value tid, ArrayRef<Value> sm) {
      Span x;
      x.sp = k.remui(blk, nC);
      Value bg = k.divui(blk, nC);
      x.g = k.remui(bg, k.idx(G)), x.bi = k.divui(bg, k.idx(G));
      x.warp = k.divui(tid, k.idx(32)), x.lane = k.remui(tid, k.idx(32));
      x.t0 = k.muli(x.sp, k.idx(C)), x.nTok = k.subi(chunkEnd(k, T, x.sp), x.t0);
      // Offset of token t0 + tl's group channels in (B, T, D); its (token,
      // group) row.
      auto bt = [&k, x, T](Value tl) { return k.addi(k.muli(x.bi, T), k.addi(x.t0, tl)); };
      x.tokBase = [&k, x, bt, D, d](Value tl) {
        return k.addi(k.muli(bt(tl), k.idx(D)), k.muli(x.g, k.idx(d)));
      };
      x.tokRowAt = [&k, x, bt, G](Value tl) {
        return k.addi(k.muli(bt(tl), k.idx(G)), x.g);
      };
      body(x, tid, sm);
    });
  };
  // sK, sV ← K1, V1 of chunks [cLo, cLo + nv) of the span's (row, group).
  auto stageChunks = [=](K &k, Args &a, const Span &x, Value nC, Value tid, Value cLo, Value nv,
                         Value sK, Value sV) {
    Value cD = k.idx(d);
    k.loop(
        tid, k.muli(nv, cD),
        [&](Value e) {
          Value at =
              k.addi(chunkAt(k, x.bi, nC, k.addi(cLo, k.divui(e, cD)), x.g), k.remui(e, cD));
          k.st(k.ld(a["K1"], at), sK, e);
          k.st(k.ld(a["V1"], at), sV, e);
        },
        256);
  };
  // The span's visible chunks [0, sp) in tiles of l1Tile, each staged into
  // sK, sV before body(tile, nv, last) (nv chunks; last: the last tile) and
  // followed by a block barrier.
  auto forChunkTiles = [=](K &k, Args &a, const Span &x, Value nC, Value tid, Value sK, Value sV,
                           auto body) {
    const int64_t CT = l1Tile;
    Value nTiles = k.divui(k.addi(x.sp, k.idx(CT - 1)), k.idx(CT));
    k.loop(k.idx(0), nTiles, [&](Value tile) {
      Value cLo = k.muli(tile, k.idx(CT)), nv = k.minui(k.idx(CT), k.subi(x.sp, cLo));
      Value last = k.cmpi(arith::CmpIPredicate::eq, tile, k.subi(nTiles, k.idx(1)));
      stageChunks(k, a, x, nC, tid, cLo, nv, sK, sV);
      k.barrier();
      body(tile, nv, last);
      k.barrier();
    });
  };
  // GPU forward: a block per (batch row, span of C tokens, group), whose
  // tokens all see the chunks before the span. Those are walked in tiles of
  // l1Tile chunks staged in shared memory (K1, V1 of a chunk were read from
  // L2 once a token); warp w takes tokens w, w + 8, ... with an online
  // softmax. Across tiles a token's running max and sum stay in shared
  // memory and its unnormalized sum in y1 (one tile up to l1Tile·C tokens).
  auto gpuLevel1Fwd = [=](K &k, Args &a, Value T, Value nC) {
    constexpr int64_t kT = 256, kW = kT / 32;
    const int64_t CT = l1Tile;
    Value c0 = k.idx(0), cD = k.idx(d);
    spanBlocks(k, a, T, nC, {CT * d, CT * d, C, C},
               [&](const Span &x, Value tid, ArrayRef<Value> sm) {
      Value sK = sm[0], sV = sm[1], sM = sm[2], sZ = sm[3];
      Value sp = x.sp, warp = x.warp, lane = x.lane, nTok = x.nTok;
      auto tokBase = x.tokBase, tokRowAt = x.tokRowAt;
      // The first span sees no chunk: y1 = 0, lse = 0.
      k.ifThen(k.cmpi(arith::CmpIPredicate::eq, sp, c0), [&] {
        k.loop(
            warp, nTok,
            [&](Value tl) {
              Value base = tokBase(tl);
              k.rowOnce(lane, [&] { k.st(k.cst(0.0), a["lse"], tokRowAt(tl)); });
              ownCh(k, lane, [&](Value, Value j) { k.st(k.cst(0.0), a["y1"], k.addi(base, j)); });
            },
            kW);
      });
      forChunkTiles(k, a, x, nC, tid, sK, sV, [&](Value tile, Value nv, Value lastTile) {
        Value first = k.cmpi(arith::CmpIPredicate::eq, tile, c0);
        k.loop(
            warp, nTok,
            [&](Value tl) {
              Value base = tokBase(tl);
              Value mz = k.buf(2), acc = chanBuf(k);
              k.st(k.select(first, k.cst(-INFINITY), k.ld(sM, tl)), mz, k.idx(0));
              k.st(k.select(first, k.cst(0.0), k.ld(sZ, tl)), mz, k.idx(1));
              ownCh(k, lane, [&](Value i, Value j) {
                k.st(k.select(first, k.cst(0.0), k.ld(a["y1"], k.addi(base, j))), acc, i);
              });
              k.loop(c0, nv, [&](Value cl) {
                Value cb = k.muli(cl, cD);
                Value s = k.mul(rowDot(k, lane, a["q"], base, sK, cb), k.cst(invSqrtD));
                auto [scale, e] = onlineStep(k, mz, s);
                ownCh(k, lane, [&](Value i, Value j) {
                  k.st(k.add(k.mul(k.ld(acc, i), scale), k.mul(e, k.ld(sV, k.addi(cb, j)))), acc,
                       i);
                });
              });
              Value m = k.ld(mz, k.idx(0)), z = k.ld(mz, k.idx(1));
              // z ≥ 1 here: the running max's own term is exp(0).
              Value inv = k.select(lastTile, k.div(k.cst(1.0), z), k.cst(1.0));
              ownCh(k, lane, [&](Value i, Value j) {
                k.st(k.mul(k.ld(acc, i), inv), a["y1"], k.addi(base, j));
              });
              k.rowOnce(lane, [&] {
                k.st(m, sM, tl);
                k.st(z, sZ, tl);
                k.ifThen(lastTile, [&] { k.st(k.add(m, k.log(z)), a["lse"], tokRowAt(tl)); });
              });
            },
            kW);
      });
    });
  };
  // lse[r] = log Σ_c exp(s_c) of token-group row r (0 where no chunk is
  // visible): backward's softmax without a second pass over the chunks.
  // With bf16 ≠ 0 also q16, k16, v16: the bf16 copies of q, k, v.
  add("level1_fwd", {"q", "k", "v", "K1", "V1", "y1", "lse", "q16", "k16", "v16"},
      {"B", "T", "bf16"}, [=](K &k, Args &a) {
    Value T = a["T"], nC = numChunks(k, T);
    k.par({a["B"], nC, k.idx(D)}, [&](ArrayRef<Value> i) { chunkMean(k, a, i[0], i[1], i[2], T, nC); });
    if (k.gpu && l1Tile >= 1) {
      gpuLevel1Fwd(k, a, T, nC);
      return;
    }
    k.rows(k.muli(k.muli(a["B"], T), k.idx(G)), [&](Value r, Value lane) {
      TokRow x = tokRow(k, r, T);
      Value mz = k.buf(2), acc = chanBuf(k);
      k.st(k.cst(-INFINITY), mz, k.idx(0));
      k.st(k.cst(0.0), mz, k.idx(1));
      ownCh(k, lane, [&](Value i, Value) { k.st(k.cst(0.0), acc, i); });
      k.loop(k.idx(0), x.cT, [&](Value ch) {
        Value cb = chunkAt(k, x.bi, nC, ch, x.g);
        Value s = k.mul(rowDot(k, lane, a["q"], x.base, a["K1"], cb), k.cst(invSqrtD));
        auto [scale, e] = onlineStep(k, mz, s);
        ownCh(k, lane, [&](Value i, Value j) {
          k.st(k.add(k.mul(k.ld(acc, i), scale), k.mul(e, k.ld(a["V1"], k.addi(cb, j)))), acc, i);
        });
      });
      // y1 = 0 in chunk 0 (no chunk visible: z = 0).
      Value z = k.ld(mz, k.idx(1)), some = k.cmpf(arith::CmpFPredicate::OGT, z, k.cst(0.0));
      Value inv = k.select(some, k.div(k.cst(1.0), z), k.cst(0.0));
      Value lse = k.select(some, k.add(k.ld(mz, k.idx(0)), k.log(z)), k.cst(0.0));
      k.rowOnce(lane, [&] { k.st(lse, a["lse"], r); });
      ownCh(k, lane, [&](Value i, Value j) {
        k.st(k.mul(k.ld(acc, i), inv), a["y1"], k.addi(x.base, j));
      });
    });
  });
  auto gpuLevel1Bwd = [=](K &k, Args &a, Value T, Value nC, Value round) {
    constexpr int64_t kT = 256, kW = kT / 32;
    const int64_t CT = l1Tile;
    // Tokens a warp forms at once in the chunk walk (independent chains of
    // loads and shuffles), fewer where a token's q and dy1 take many
    // registers.
    const int64_t U = d <= 256 ? 4 : 2;
    Value c0 = k.idx(0), cD = k.idx(d);
    spanBlocks(k, a, T, nC, {CT * d, CT * d, C * CT, C, C},
               [&](const Span &x, Value tid, ArrayRef<Value> sm) {
      Value sK = sm[0], sV = sm[1], sDS = sm[2], sDelta = sm[3], sLse = sm[4];
      Value sp = x.sp, bi = x.bi, g = x.g, warp = x.warp, lane = x.lane, nTok = x.nTok;
      auto tokBase = x.tokBase, tokRowAt = x.tokRowAt;
      // δ = dy1·y1 and lse of the span's tokens.
      k.loop(
          warp, nTok,
          [&](Value tl) {
            Value base = tokBase(tl), r = tokRowAt(tl);
            Value delta = rowDot(k, lane, a["dy1"], base, a["y1"], base);
            k.rowOnce(lane, [&] {
              k.st(delta, a["stat"], r);
              k.st(delta, sDelta, tl);
              k.st(k.ld(a["lse"], r), sLse, tl);
            });
          },
          kW);
      // dq gets Σ_c ds_c K1_c a tile at a time and its copy in the last
      // tile; the first span sees no chunk and only writes the copy.
      k.ifThen(k.cmpi(arith::CmpIPredicate::eq, sp, c0), [&] {
        k.ifThen(round, [&] {
          k.loop(
              tid, k.muli(nTok, cD),
              [&](Value e) {
                Value at = k.addi(tokBase(k.divui(e, cD)), k.remui(e, cD));
                store16(k, round, k.ld(a["dq"], at), a["dq16"], at);
              },
              kT);
        });
      });
      k.barrier();
      forChunkTiles(k, a, x, nC, tid, sK, sV, [&](Value tile, Value nv, Value lastTile) {
        Value cLo = k.muli(tile, k.idx(CT));
        // Warp per chunk cl of the tile: every token of the span, U at once.
        k.loop(
            warp, nv,
            [&](Value cl) {
              Value cb = k.muli(cl, cD);
              Value aK = chanBuf(k), aV = chanBuf(k);
              ownCh(k, lane, [&](Value i, Value) {
                k.st(k.cst(0.0), aK, i);
                k.st(k.cst(0.0), aV, i);
              });
              k.loop(
                  c0, nTok,
                  [&](Value tl0) {
                    SmallVector<Value> base, p, ds, tls, valid;
                    for (int64_t u = 0; u < U; ++u) {
                      Value tl = k.addi(tl0, k.idx(u));
                      valid.push_back(k.cmpi(arith::CmpIPredicate::ult, tl, nTok));
                      tls.push_back(k.minui(tl, k.subi(nTok, k.idx(1))));
                      base.push_back(tokBase(tls.back()));
                    }
                    for (int64_t u = 0; u < U; ++u) {
                      Value s = k.mul(rowDot(k, lane, a["q"], base[u], sK, cb), k.cst(invSqrtD));
                      Value dp = rowDot(k, lane, a["dy1"], base[u], sV, cb);
                      Value pu = k.select(valid[u], k.exp(k.sub(s, k.ld(sLse, tls[u]))),
                                          k.cst(0.0));
                      p.push_back(pu);
                      ds.push_back(
                          k.mul(k.mul(pu, k.sub(dp, k.ld(sDelta, tls[u]))), k.cst(invSqrtD)));
                    }
                    ownCh(k, lane, [&](Value i, Value j) {
                      Value sk = k.ld(aK, i), sv = k.ld(aV, i);
                      for (int64_t u = 0; u < U; ++u) {
                        sk = k.add(sk, k.mul(ds[u], k.ld(a["q"], k.addi(base[u], j))));
                        sv = k.add(sv, k.mul(p[u], k.ld(a["dy1"], k.addi(base[u], j))));
                      }
                      k.st(sk, aK, i);
                      k.st(sv, aV, i);
                    });
                    k.rowOnce(lane, [&] {
                      for (int64_t u = 0; u < U; ++u)
                        k.ifThen(valid[u], [&] {
                          k.st(ds[u], sDS, k.addi(k.muli(tls[u], k.idx(CT)), cl));
                        });
                    });
                  },
                  U);
              Value gb = chunkAt(k, bi, nC, k.addi(cLo, cl), g);
              ownCh(k, lane, [&](Value i, Value j) {
                k.accum(a["dK1"], k.addi(gb, j), k.ld(aK, i));
                k.accum(a["dV1"], k.addi(gb, j), k.ld(aV, i));
              });
            },
            kW);
        k.barrier();
        // Warp per token: dq += Σ_cl ds[tl][cl]·K1_cl.
        k.loop(
            warp, nTok,
            [&](Value tl) {
              Value base = tokBase(tl), acc = chanBuf(k);
              ownCh(k, lane, [&](Value i, Value) { k.st(k.cst(0.0), acc, i); });
              k.loop(c0, nv, [&](Value cl) {
                Value dsv = k.ld(sDS, k.addi(k.muli(tl, k.idx(CT)), cl));
                ownCh(k, lane, [&](Value i, Value j) {
                  k.st(k.add(k.ld(acc, i), k.mul(dsv, k.ld(sK, k.addi(k.muli(cl, cD), j)))), acc,
                       i);
                });
              });
              ownCh(k, lane, [&](Value i, Value j) {
                Value at = k.addi(base, j);
                Value sum = k.add(k.ld(a["dq"], at), k.ld(acc, i));
                k.st(sum, a["dq"], at);
                k.ifThen(lastTile, [&] { store16(k, round, sum, a["dq16"], at); });
              });
            },
            kW);
      });
    });
  };
  // Backward takes forward's lse and y1: δ = Σ_c p_c dp_c = dy1·y1 (y1 =
  // Σ_c p_c V1_c), so no pass over the chunks forms the softmax's statistics.
  // It is the last to add into dq, dk and dv: with bf16 ≠ 0 it also writes
  // their bf16 copies dq16, dk16, dv16 (the projections' products take them).
  add("level1_bwd",
      {"q", "K1", "V1", "y1", "lse", "dy1", "dq", "dk", "dv", "dK1", "dV1", "stat", "dq16", "dk16",
       "dv16"},
      {"B", "T", "bf16"}, [=](K &k, Args &a) {
        Value T = a["T"], nC = numChunks(k, T);
        Value round = wantsCopies(k, a);
        // x[i] += v, and its copy with `round`.
        auto addTo16 = [&](const char *x, Value i, Value v) {
          Value sum = k.add(k.ld(a[x], i), v);
          k.st(sum, a[x], i);
          store16(k, round, sum, a[std::string(x) + "16"], i);
        };
        // GPU: one fused kernel, a block per (batch row, span of C tokens,
        // group). The span's tokens see the same chunks (those before it),
        // which it walks in tiles of l1Tile: K1_c and V1_c staged in shared
        // memory; warp w takes chunks w, w + 8, ... of the tile and walks the
        // span's tokens, summing dK1_c and dV1_c in registers (one atomic add
        // a channel at the end) and leaving ds_tc in shared memory; then warp
        // w takes tokens w, w + 8, ... and adds Σ_c ds_tc K1_c to dq. Each
        // (token, chunk) pair is formed once, where passes A and B below form
        // it twice, and q, dy1 come from L1 instead of L2 a chunk.
        auto zeroChunkGrads = [&] {
          k.par({a["B"], nC, k.idx(D)}, [&](ArrayRef<Value> i) {
            Value at = k.addi(k.muli(k.addi(k.muli(i[0], nC), i[1]), k.idx(D)), i[2]);
            k.st(k.cst(0.0), a["dK1"], at);
            k.st(k.cst(0.0), a["dV1"], at);
          });
        };
        if (k.gpu && l1Tile >= 1) {
          zeroChunkGrads();
          gpuLevel1Bwd(k, a, T, nC, round);
        } else {
        // Pass A, per token row: δ into stat, dq.
        k.rows(k.muli(k.muli(a["B"], T), k.idx(G)), [&](Value r, Value lane) {
          TokRow x = tokRow(k, r, T);
          Value lse = k.ld(a["lse"], r);
          Value delta = rowDot(k, lane, a["dy1"], x.base, a["y1"], x.base);
          k.rowOnce(lane, [&] { k.st(delta, a["stat"], r); });
          Value acc = chanBuf(k);
          ownCh(k, lane, [&](Value i, Value) { k.st(k.cst(0.0), acc, i); });
          k.loop(k.idx(0), x.cT, [&](Value ch) {
            Value cb = chunkAt(k, x.bi, nC, ch, x.g);
            Value s = k.mul(rowDot(k, lane, a["q"], x.base, a["K1"], cb), k.cst(invSqrtD));
            Value dp = rowDot(k, lane, a["dy1"], x.base, a["V1"], cb);
            Value ds = k.mul(k.mul(k.exp(k.sub(s, lse)), k.sub(dp, delta)), k.cst(invSqrtD));
            ownCh(k, lane, [&](Value i, Value j) {
              k.st(k.add(k.ld(acc, i), k.mul(ds, k.ld(a["K1"], k.addi(cb, j)))), acc, i);
            });
          });
          ownCh(k, lane, [&](Value i, Value j) { addTo16("dq", k.addi(x.base, j), k.ld(acc, i)); });
        });
        // Pass B, per (batch row, token span sp, chunk ch < sp, group): the
        // span's share of dK1_ch, dV1_ch — its C tokens summed in registers,
        // then one add per channel (atomic on the GPU). A row per (chunk,
        // group) that walked all the later tokens left the GPU nearly idle
        // (B·nC·G warps, each a loop of up to T steps).
        zeroChunkGrads();
        k.rows(k.muli(k.muli(k.muli(a["B"], nC), nC), k.idx(G)), [&](Value r, Value lane) {
          Value g = k.remui(r, k.idx(G)), rest = k.divui(r, k.idx(G));
          Value ch = k.remui(rest, nC), bs = k.divui(rest, nC);
          Value bi = k.divui(bs, nC), sp = k.remui(bs, nC);
          k.ifThen(k.cmpi(arith::CmpIPredicate::ult, ch, sp), [&] {
            Value cb = chunkAt(k, bi, nC, ch, g);
            Value aK = chanBuf(k), aV = chanBuf(k);
            ownCh(k, lane, [&](Value i, Value) {
              k.st(k.cst(0.0), aK, i);
              k.st(k.cst(0.0), aV, i);
            });
            k.loop(k.muli(sp, k.idx(C)), chunkEnd(k, T, sp), [&](Value t) {
              Value row = k.addi(k.muli(bi, T), t);
              Value base = k.addi(k.muli(row, k.idx(D)), k.muli(g, k.idx(d)));
              Value st = k.addi(k.muli(row, k.idx(G)), g);
              Value s = k.mul(rowDot(k, lane, a["q"], base, a["K1"], cb), k.cst(invSqrtD));
              Value dp = rowDot(k, lane, a["dy1"], base, a["V1"], cb);
              Value p = k.exp(k.sub(s, k.ld(a["lse"], st)));
              Value ds = k.mul(k.mul(p, k.sub(dp, k.ld(a["stat"], st))), k.cst(invSqrtD));
              ownCh(k, lane, [&](Value i, Value j) {
                k.st(k.add(k.ld(aK, i), k.mul(ds, k.ld(a["q"], k.addi(base, j)))), aK, i);
                k.st(k.add(k.ld(aV, i), k.mul(p, k.ld(a["dy1"], k.addi(base, j)))), aV, i);
              });
            });
            ownCh(k, lane, [&](Value i, Value j) {
              k.accum(a["dK1"], k.addi(cb, j), k.ld(aK, i));
              k.accum(a["dV1"], k.addi(cb, j), k.ld(aV, i));
            });
          });
        });
        }
        k.par({a["B"], T, k.idx(D)}, [&](ArrayRef<Value> i) {
          Value bi = i[0], t = i[1], j = i[2];
          Value ch = k.divui(t, k.idx(C));
          Value inv = invCount(k, k.muli(ch, k.idx(C)), chunkEnd(k, T, ch));
          Value at = k.addi(k.muli(k.addi(k.muli(bi, T), t), k.idx(D)), j);
          Value cAt = k.addi(k.muli(k.addi(k.muli(bi, nC), ch), k.idx(D)), j);
          addTo16("dk", at, k.mul(k.ld(a["dK1"], cAt), inv));
          addTo16("dv", at, k.mul(k.ld(a["dV1"], cAt), inv));
        });
      });

  // --- Level 2 (MDI). Its products — the slot logits x·S_gᵀ, the chunk sums
  // P_c = w_cᵀ·v_c, the reads a_c·Mem_{c−1} and their gradients — are matrix
  // products that the runtime runs on cuBLASLt / BLAS (mmrec::train::Model);
  // these kernels do everything between them:
  //   slot_softmax            p = softmax_s(logit/√d) per (token, group), in place
  //   mdi_chunk_fwd           n = Σ_t w, lb = clamp(n·logσ(μ), lo, 0),
  //                           wu = (1 − β)·P/max(n, 1e-6) per (chunk, group, slot)
  //   slot_softmax_bwd        dl = p(dp − Σ p dp)/√d, in place (the read)
  //   mdi_chunk_bwd           dP, dn and dμ from dlb, dwu
  //   mdi_write_softmax_bwd   the write's dl from dw + dn_{c(t)}, in place
  // (w, a: (B, T, G, M); n, lb: (B, nC, G, M); P, wu, mems: (B, nC, G, M, d)).
  // Chunk c reads Mem_{c−1} (the initial memory for c = 0) in place: the
  // runtime points its product at the previous chunk's state.
  //
  // --- GPU: one warp per row of M slots, slot s owned by lane s mod 32 (its
  // value in registers `sc`, R = ⌈M/32⌉ of them per lane).
  const int64_t R = (M + 31) / 32;
  // body(r, s) for the slots this lane owns.
  // The lane's slots s = lane + 32·r, unrolled over r (K::laneElements).
  auto ownSlots = [=](K &k, Value lane, auto body) { k.laneElements(lane, M, body); };
  // sc ← softmax over the slots of sc·invSqrtD, written to out[outBase + s].
  // With `round`, also out16[outBase + s] = bf16 of it.
  auto warpSoftmax = [=](K &k, Value lane, Value sc, Value out, Value outBase,
                         Value round = {}, Value out16 = {}) {
    // Unrolled like ownSlots (the same order of operations as a loop).
    auto inRange = [&](int64_t r) {
      return k.cmpi(arith::CmpIPredicate::ult, k.addi(lane, k.idx(32 * r)), k.idx(M));
    };
    Value mLoc = k.cst(-INFINITY);
    for (int64_t r = 0; r < R; ++r) {
      Value v = k.mul(k.ld(sc, k.idx(r)), k.cst(invSqrtD));
      if (32 * (r + 1) > M)
        v = k.select(inRange(r), v, k.cst(-INFINITY));
      mLoc = k.max(mLoc, v);
    }
    Value m = k.warpMax(mLoc);
    Value zLoc = k.cst(0.0);
    for (int64_t r = 0; r < R; ++r) {
      Value e = k.exp(k.sub(k.mul(k.ld(sc, k.idx(r)), k.cst(invSqrtD)), m));
      if (32 * (r + 1) > M)
        e = k.select(inRange(r), e, k.cst(0.0));
      k.st(e, sc, k.idx(r));
      zLoc = k.add(zLoc, e);
    }
    Value inv = k.div(k.cst(1.0), k.warpSum(zLoc));
    ownSlots(k, lane, [&](Value r, Value s) {
      Value p = k.mul(k.ld(sc, r), inv), i = k.addi(outBase, s);
      k.st(p, out, i);
      if (round)
        store16(k, round, p, out16, i);
    });
  };
  // out[outBase + s] = p_s(dp_s − Σ p dp)/√d for the row at `base` of the
  // probabilities p and the upstream gradient dp(s) (in place when out is
  // dp's array): a warp per row on the GPU, a loop on the CPU. With `round`,
  // also out16[base + s] = bf16 of it.
  auto softmaxBackwardRow = [=](K &k, Value lane, Value p, Value base, auto dp, Value out,
                                Value round, Value out16) {
    if (k.gpu) {
      Value sc = k.buf(R);
      Value loc = k.cst(0.0); // unrolled like ownSlots
      for (int64_t r = 0; r < R; ++r) {
        Value s = k.addi(lane, k.idx(32 * r));
        Value ok = k.cmpi(arith::CmpIPredicate::ult, s, k.idx(M));
        Value sIn = k.select(ok, s, k.idx(0));
        Value g = dp(sIn);
        k.st(g, sc, k.idx(r));
        loc = k.add(loc, k.select(ok, k.mul(k.ld(p, k.addi(base, sIn)), g), k.cst(0.0)));
      }
      Value pdp = k.warpSum(loc);
      ownSlots(k, lane, [&](Value r, Value s) {
        Value i = k.addi(base, s);
        Value v = k.mul(k.mul(k.ld(p, i), k.sub(k.ld(sc, r), pdp)), k.cst(invSqrtD));
        k.st(v, out, i);
        store16(k, round, v, out16, i);
      });
      return;
    }
    Value pdp = k.sum(M, [&](Value s) { return k.mul(k.ld(p, k.addi(base, s)), dp(s)); });
    k.loop(M, [&](Value s) {
      Value i = k.addi(base, s);
      Value v = k.mul(k.mul(k.ld(p, i), k.sub(dp(s), pdp)), k.cst(invSqrtD));
      k.st(v, out, i);
      store16(k, round, v, out16, i);
    });
  };
  // With bf16 ≠ 0 also p16 = bf16(p) (the operand of the products that follow).
  add("slot_softmax", {"p", "p16"}, {"rows", "bf16"}, [=](K &k, Args &a) {
    Value round = wantsCopies(k, a);
    k.rows(a["rows"], [&](Value r, Value lane) {
      Value base = k.muli(r, k.idx(M));
      if (k.gpu) {
        Value sc = k.buf(R);
        ownSlots(k, lane, [&](Value i, Value s) { k.st(k.ld(a["p"], k.addi(base, s)), sc, i); });
        warpSoftmax(k, lane, sc, a["p"], base, round, a["p16"]);
        return;
      }
      k.loop(M, [&](Value s) {
        Value i = k.addi(base, s);
        k.st(k.mul(k.ld(a["p"], i), k.cst(invSqrtD)), a["p"], i);
      });
      softmaxInPlace(k, a["p"], k.idx(M), base);
      k.ifThen(round, [&] {
        k.loop(M, [&](Value s) {
          Value i = k.addi(base, s);
          k.st(arith::TruncFOp::create(k.b, k.b.getBF16Type(), k.ld(a["p"], i)), a["p16"], i);
        });
      });
    });
  });
  // With bf16 ≠ 0 also dp16 = bf16(dl) (the operand of the products that follow).
  add("slot_softmax_bwd", {"p", "dp", "dp16"}, {"rows", "bf16"}, [=](K &k, Args &a) {
    Value round = wantsCopies(k, a);
    k.rows(a["rows"], [&](Value r, Value lane) {
      Value base = k.muli(r, k.idx(M));
      softmaxBackwardRow(
          k, lane, a["p"], base, [&](Value s) { return k.ld(a["dp"], k.addi(base, s)); }, a["dp"],
          round, a["dp16"]);
    });
  });
  // Offset of slot (bi, chunk ch, g, s) in (B, nC, G, M).
  auto slotOf = [=](K &k, Value bi, Value nC, Value ch, Value g, Value s) {
    return k.addi(k.muli(k.addi(k.muli(k.addi(k.muli(bi, nC), ch), k.idx(G)), g), k.idx(M)), s);
  };
  // The write's dl: dp = dw + dn[b, c(t), g, s] (the write mass n is a sum
  // of w over the chunk), dl = w(dp − Σ w dp)/√d into dw. With bf16 ≠ 0 also
  // dw16 = bf16(dl).
  add("mdi_write_softmax_bwd", {"w", "dn", "dw", "dw16"}, {"B", "T", "bf16"}, [=](K &k, Args &a) {
    Value T = a["T"], nC = numChunks(k, T);
    Value round = wantsCopies(k, a);
    k.rows(k.muli(k.muli(a["B"], T), k.idx(G)), [&](Value r, Value lane) {
      Value g = k.remui(r, k.idx(G)), bt = k.divui(r, k.idx(G));
      Value bi = k.divui(bt, T), ch = k.divui(k.remui(bt, T), k.idx(C));
      Value base = k.muli(r, k.idx(M)), nb = slotOf(k, bi, nC, ch, g, k.idx(0));
      softmaxBackwardRow(k, lane, a["w"], base, [&](Value s) {
        return k.add(k.ld(a["dw"], k.addi(base, s)), k.ld(a["dn"], k.addi(nb, s)));
      }, a["dw"], round, a["dw16"]);
    });
  });
  add("mdi_chunk_fwd", {"w", "mu", "n", "lb"}, {"B", "T"}, [=](K &k, Args &a) {
    Value T = a["T"], nC = numChunks(k, T);
    // n and lb per slot: coalesced along s (w is (.., G, M)).
    k.par({a["B"], nC, k.idx(G), k.idx(M)}, [&](ArrayRef<Value> i) {
      Value bi = i[0], ch = i[1], g = i[2], s = i[3];
      Value n = k.sum(k.muli(ch, k.idx(C)), chunkEnd(k, T, ch), [&](Value t) {
        Value row = k.addi(k.muli(bi, T), t);
        return k.ld(a["w"], k.addi(k.muli(k.addi(k.muli(row, k.idx(G)), g), k.idx(M)), s));
      });
      Value ls = k.logSigmoid(k.ld(a["mu"], k.addi(k.muli(g, k.idx(M)), s)));
      Value slot = slotOf(k, bi, nC, ch, g, s);
      k.st(n, a["n"], slot);
      k.st(k.min(k.max(k.mul(n, ls), k.cst(lo)), k.cst(0.0)), a["lb"], slot);
    });
  });
  // --- The memory scan over the chunks, Mem_c = β_c·Mem_{c−1} + (1 − β_c)·U_c
  // with U_c = P_c/max(n_c, 1e-6), β = exp(clamp(lb)) per slot (d
  // channels a slot), Mem_{−1} = init: (1 − β)·U is formed here from the chunk
  // sums P, never stored. With bf16 ≠ 0 the states are also written rounded
  // to bf16 (h16: the operand of the read's bf16 products, no separate
  // rounding pass); h16 is not touched otherwise. Arrays (B, T = chunks, N).
  add("mem_scan_fwd", {"log_decay", "P", "n", "init", "h", "h16", "final"},
      {"B", "T", "N", "bf16"}, [=](K &k, Args &a) {
        Value T = a["T"], N = a["N"];
        Value round = k.cmpi(arith::CmpIPredicate::ne, a["bf16"], k.idx(0));
        // A slot's β, 1 − β and 1/max(n, 1e-6) from its raw log decay and n.
        struct Coeffs {
          Value beta, omb, inv;
        };
        auto coeffs = [&](Value lRaw, Value n) {
          Value l = k.min(k.max(lRaw, k.cst(lo)), k.cst(0.0));
          return Coeffs{k.exp(l), k.neg(k.expm1(l)), k.div(k.cst(1.0), k.max(n, k.cst(1e-6)))};
        };
        // h = β·h_prev + (1 − β)·(P/n), written (and its bf16 copy) at e.
        auto update = [&](const Coeffs &c, Value hp, Value P) {
          return k.add(k.mul(c.beta, hp), k.mul(c.omb, k.mul(P, c.inv)));
        };
        auto write = [&](Value h, Value e) {
          k.st(h, a["h"], e);
          k.ifThen(round, [&] {
            k.st(arith::TruncFOp::create(k.b, k.b.getBF16Type(), h), a["h16"], e);
          });
        };
        auto step = [&](Value e, Value hp) {
          Value slot = k.divui(e, k.idx(d));
          Value h = update(coeffs(k.ld(a["log_decay"], slot), k.ld(a["n"], slot)), hp,
                           k.ld(a["P"], e));
          write(h, e);
          return h;
        };
        auto at = [&](Value bi, Value t, Value n) {
          return k.addi(k.muli(k.addi(k.muli(bi, T), t), N), n);
        };
        if (!k.gpu) {
          // Chunk by chunk, contiguous along the channels.
          k.loop(k.idx(0), a["B"], [&](Value bi) {
            k.loop(k.idx(0), T, [&](Value t) {
              k.loop(k.idx(0), N, [&](Value n) {
                Value fi = k.addi(k.muli(bi, N), n);
                Value first = k.cmpi(arith::CmpIPredicate::eq, t, k.idx(0));
                Value tp = k.select(first, k.idx(0), k.subi(t, k.idx(1)));
                Value hp = k.select(first, k.ld(a["init"], fi), k.ld(a["h"], at(bi, tp, n)));
                Value h = step(at(bi, t, n), hp);
                k.ifThen(k.cmpi(arith::CmpIPredicate::eq, t, k.subi(T, k.idx(1))),
                         [&] { k.st(h, a["final"], fi); });
              });
            });
            k.ifThen(k.cmpi(arith::CmpIPredicate::eq, T, k.idx(0)), [&] {
              k.loop(k.idx(0), N, [&](Value n) {
                Value fi = k.addi(k.muli(bi, N), n);
                k.st(k.ld(a["init"], fi), a["final"], fi);
              });
            });
          });
          return;
        }
        // A thread per (batch row, U channels 32 apart: coalesced), the
        // chunks in groups of kG. Each group's loads are issued before any
        // of its stores (a store between them would serialize them: the
        // arrays are not known apart), and β = exp(clamp(ℓ)), 1 − β and
        // 1/max(n, 1e-6), which belong to a slot (d channels), are computed
        // once a chunk for the thread's U channels when they share a slot
        // (d a multiple of 32), else per channel. Computed per element
        // (expm1 and two divisions, about 150 instructions) the kernel was
        // bound by instruction issue: 4.5 ms a call at the 7B shapes against
        // 1.3 ms for its bytes.
        // With d a multiple of 32, a thread takes U channels of one slot, U
        // the largest divisor of d / 32 up to 8 (6 at mmrec-small's d 192, 8
        // at the 7B's 512): segments of 32·U channels never cross a slot, and
        // as N is a whole number of slots (slot = element / d), every
        // channel a thread takes is in range.
        constexpr int64_t kG = 4;
        const bool slotShared = d % 32 == 0;
        int64_t U = slotShared ? 8 : 1;
        while ((d / 32) % U != 0)
          --U;
        Value Tm1 = k.subi(T, k.idx(1)), Nm1 = k.subi(N, k.idx(1));
        Value segs = k.divui(k.addi(N, k.idx(32 * U - 1)), k.idx(32 * U));
        k.par(k.muli(k.muli(a["B"], segs), k.idx(32)), [&](Value fi) {
          Value lane = k.remui(fi, k.idx(32)), w = k.divui(fi, k.idx(32));
          Value bi = k.divui(w, segs), seg = k.remui(w, segs);
          SmallVector<Value> nOk, nc, h0;
          for (int64_t u = 0; u < U; ++u) {
            Value n = k.addi(k.addi(k.muli(seg, k.idx(32 * U)), lane), k.idx(32 * u));
            nOk.push_back(k.cmpi(arith::CmpIPredicate::ult, n, N));
            // Loads in bounds (stores are guarded); no clamp needed when
            // slotShared, which keeps the U addresses one base apart by
            // constants.
            nc.push_back(slotShared ? n : k.minui(n, Nm1));
            h0.push_back(k.ld(a["init"], k.addi(k.muli(bi, N), nc.back())));
          }
          auto loop = scf::ForOp::create(k.b, k.idx(0), T, k.idx(kG), h0);
          {
            OpBuilder::InsertionGuard g(k.b);
            k.b.setInsertionPointToStart(loop.getBody());
            Value t0 = loop.getInductionVar();
            // Loads: P for every (chunk, channel), ℓ and n per slot.
            SmallVector<Value> tOk;
            SmallVector<SmallVector<Value>> e(kG), P(kG), l(kG), nn(kG);
            for (int64_t j = 0; j < kG; ++j) {
              Value t = k.addi(t0, k.idx(j));
              tOk.push_back(k.cmpi(arith::CmpIPredicate::ult, t, T));
              Value tc = k.minui(t, Tm1); // T > 0 here
              for (int64_t u = 0; u < U; ++u) {
                e[j].push_back(at(bi, tc, nc[u]));
                P[j].push_back(k.ld(a["P"], e[j].back()));
                if (u == 0) { // U = 1 unless the U channels share a slot
                  Value slot = k.divui(e[j].back(), k.idx(d));
                  l[j].push_back(k.ld(a["log_decay"], slot));
                  nn[j].push_back(k.ld(a["n"], slot));
                }
              }
            }
            SmallVector<Value> h(loop.getRegionIterArgs().begin(), loop.getRegionIterArgs().end());
            for (int64_t j = 0; j < kG; ++j) {
              Coeffs c = coeffs(l[j][0], nn[j][0]);
              for (int64_t u = 0; u < U; ++u) {
                h[u] = k.select(tOk[j], update(c, h[u], P[j][u]), h[u]);
                Value ok = slotShared ? tOk[j] : arith::AndIOp::create(k.b, tOk[j], nOk[u]);
                k.ifThen(ok, [&] { write(h[u], e[j][u]); });
              }
            }
            scf::YieldOp::create(k.b, h);
          }
          for (int64_t u = 0; u < U; ++u)
            k.ifThen(nOk[u], [&] {
              k.st(loop.getResult(unsigned(u)), a["final"], k.addi(k.muli(bi, N), nc[u]));
            });
        });
      });
  // --- The memory scan's adjoint with the chunk write's (mdi_chunk_fwd's
  // and the (1 − β)·U that mem_scan_fwd forms) fused in, a warp per (batch
  // row, slot) walking the chunks backwards, its lanes along the slot's d
  // channels (the CPU: one iteration per slot, every channel). Per chunk c,
  // with g = ∂Mem_c + β_{c+1}·g_{c+1} (∂Mem_{T} = grad_final):
  //   dβ-term  Σ_j g_j·Mem_{c−1,j} (Mem_{−1} = init), Σ = Σ_j g_j P_j,
  //   dlb = β·(Σ_j g_j·Mem_{c−1,j}) − β·Σ/nn (wu = (1 − β)·P/nn depends on
  //   lb through 1 − β), dP = (1 − β)·g/nn; where the clamp of n·logσ(μ) is
  //   inactive dn = dlb·logσ(μ) and dμ += dlb·n·σ(−μ); where n > 1e-6
  //   dn −= (1 − β)·Σ/nn² (nn = max(n, 1e-6)); grad_init = β_0·g_0.
  // g (the gradient of (1 − β)·U) is never stored. With bf16 ≠ 0 dP is also
  // written rounded to bf16 (dP16, the operand of a bf16 product).
  add("mem_scan_bwd",
      {"mems", "init", "grad_h", "grad_final", "mu", "n", "P", "dmu", "dP", "dP16", "dn",
       "grad_init"},
      {"B", "T", "bf16"}, [=](K &k, Args &a) {
        Value nC = numChunks(k, a["T"]);
        Value round = k.cmpi(arith::CmpIPredicate::ne, a["bf16"], k.idx(0));
        const int64_t GMd = G * M * d;
        // Channels a lane owns: j = lane + 32·i (i < Q) on the GPU, every
        // channel on the CPU.
        const int64_t Q = k.gpu ? (d + 31) / 32 : d, stride = k.gpu ? 32 : 1;
        auto total = [&](Value part) { return k.gpu ? k.warpSum(part) : part; };
        // A slot's dn and its dμ share, from ghp = Σ g·h_prev and sdp = Σ g·P
        // over its channels: dlogβ = β·ghp − β·sdp/n (zero where the clamp
        // of raw = n·logσ(μ) is active), dn = dlogβ·logσ(μ) − (1 − β)·sdp/n²
        // (for n > 1e-6), dμ += dlogβ·n·σ(−μ).
        auto slotGrads = [&](Value lane, Value slot, Value gs, Value raw, Value nv, Value ls,
                             Value smu, Value beta, Value omb, Value inv, Value ghp, Value sdp) {
          Value dlb = k.sub(k.mul(beta, ghp), k.mul(beta, k.mul(sdp, inv)));
          Value in = arith::AndIOp::create(k.b, k.cmpf(arith::CmpFPredicate::OGE, raw, k.cst(lo)),
                                           k.cmpf(arith::CmpFPredicate::OLE, raw, k.cst(0.0)));
          Value dlbIn = k.mul(dlb, k.mask(in));
          Value big = k.mask(k.cmpf(arith::CmpFPredicate::OGT, nv, k.cst(1e-6)));
          Value dn = k.sub(k.mul(dlbIn, ls), k.mul(big, k.mul(k.mul(omb, sdp), k.mul(inv, inv))));
          k.rowOnce(lane, [&] {
            k.st(dn, a["dn"], slot);
            k.accum(a["dmu"], gs, k.mul(k.mul(dlbIn, nv), smu));
          });
        };
        if (k.gpu) {
          // The same, unrolled over the lane's Q channels: each chunk's 3·Q
          // loads are issued before any of its stores, the carry lives in
          // registers (a store between the loads would serialize them).
          k.warps(k.muli(a["B"], k.idx(G * M)), [&](Value r, Value lane) {
            Value bi = k.divui(r, k.idx(G * M)), gs = k.remui(r, k.idx(G * M));
            Value fin = k.muli(bi, k.idx(GMd));
            SmallVector<Value> ch0, ok, carry0;
            for (int64_t i = 0; i < Q; ++i) {
              Value j = k.addi(lane, k.idx(32 * i));
              ok.push_back(d % 32 == 0 ? Value()
                                       : k.cmpi(arith::CmpIPredicate::ult, j, k.idx(d)));
              ch0.push_back(k.addi(k.muli(gs, k.idx(d)), d % 32 == 0 ? j : k.minui(j, k.idx(d - 1))));
              carry0.push_back(k.ld(a["grad_final"], k.addi(fin, ch0.back())));
            }
            auto guarded = [&](int64_t i, auto body) {
              if (ok[size_t(i)])
                k.ifThen(ok[size_t(i)], body);
              else
                body();
            };
            auto masked = [&](int64_t i, Value v) {
              return ok[size_t(i)] ? k.mul(v, k.mask(ok[size_t(i)])) : v;
            };
            Value muV = k.ld(a["mu"], gs), ls = k.logSigmoid(muV), smu = k.sigmoid(k.neg(muV));
            auto loop = scf::ForOp::create(k.b, k.idx(0), nC, k.idx(1), carry0);
            {
              OpBuilder::InsertionGuard guard(k.b);
              k.b.setInsertionPointToStart(loop.getBody());
              Value s = loop.getInductionVar();
              Value ch = k.subi(k.subi(nC, k.idx(1)), s);
              Value slot = k.addi(k.muli(k.addi(k.muli(bi, nC), ch), k.idx(G * M)), gs);
              Value nv = k.ld(a["n"], slot), raw = k.mul(nv, ls);
              Value first = k.cmpi(arith::CmpIPredicate::eq, ch, k.idx(0));
              Value prev = k.select(first, k.idx(0), k.subi(ch, k.idx(1)));
              Value base = k.muli(k.addi(k.muli(bi, nC), ch), k.idx(GMd));
              Value pbase = k.muli(k.addi(k.muli(bi, nC), prev), k.idx(GMd));
              SmallVector<Value> gh, hp, pv;
              for (int64_t i = 0; i < Q; ++i) {
                Value n = ch0[size_t(i)];
                gh.push_back(k.ld(a["grad_h"], k.addi(base, n)));
                hp.push_back(k.select(first, k.ld(a["init"], k.addi(fin, n)),
                                      k.ld(a["mems"], k.addi(pbase, n))));
                pv.push_back(k.ld(a["P"], k.addi(base, n)));
              }
              Value lb = k.min(k.max(raw, k.cst(lo)), k.cst(0.0));
              Value beta = k.exp(lb), omb = k.neg(k.expm1(lb));
              Value inv = k.div(k.cst(1.0), k.max(nv, k.cst(1e-6)));
              Value p0 = k.cst(0.0), p1 = k.cst(0.0);
              SmallVector<Value> dP, carry;
              for (int64_t i = 0; i < Q; ++i) {
                Value g = k.add(gh[size_t(i)], loop.getRegionIterArgs()[size_t(i)]);
                dP.push_back(k.mul(k.mul(omb, g), inv));
                p0 = k.add(p0, masked(i, k.mul(g, hp[size_t(i)])));
                p1 = k.add(p1, masked(i, k.mul(g, pv[size_t(i)])));
                carry.push_back(k.mul(beta, g));
              }
              for (int64_t i = 0; i < Q; ++i)
                guarded(i, [&] {
                  Value e = k.addi(base, ch0[size_t(i)]);
                  k.st(dP[size_t(i)], a["dP"], e);
                  k.ifThen(round, [&] {
                    k.st(arith::TruncFOp::create(k.b, k.b.getBF16Type(), dP[size_t(i)]), a["dP16"],
                         e);
                  });
                });
              Value ghp = k.warpSum(p0), sdp = k.warpSum(p1);
              slotGrads(lane, slot, gs, raw, nv, ls, smu, beta, omb, inv, ghp, sdp);
              scf::YieldOp::create(k.b, carry);
            }
            for (int64_t i = 0; i < Q; ++i)
              guarded(i, [&] {
                k.st(loop.getResult(unsigned(i)), a["grad_init"], k.addi(fin, ch0[size_t(i)]));
              });
          });
          return;
        }
        k.rows(k.muli(a["B"], k.idx(G * M)), [&](Value r, Value lane) {
          Value bi = k.divui(r, k.idx(G * M)), gs = k.remui(r, k.idx(G * M));
          Value carry = k.buf(Q), part = k.buf(2);
          auto ownCh = [&](auto body) {
            k.loop(Q, [&](Value i) {
              Value j = k.addi(lane, k.muli(i, k.idx(stride)));
              auto run = [&] { body(i, k.addi(k.muli(gs, k.idx(d)), j)); };
              if (d % stride == 0)
                run();
              else
                k.ifThen(k.cmpi(arith::CmpIPredicate::ult, j, k.idx(d)), run);
            });
          };
          Value fin = k.muli(bi, k.idx(GMd));
          ownCh([&](Value i, Value n) { k.st(k.ld(a["grad_final"], k.addi(fin, n)), carry, i); });
          Value muV = k.ld(a["mu"], gs), ls = k.logSigmoid(muV), smu = k.sigmoid(k.neg(muV));
          k.loop(k.idx(0), nC, [&](Value s) {
            Value ch = k.subi(k.subi(nC, k.idx(1)), s);
            Value slot = k.addi(k.muli(k.addi(k.muli(bi, nC), ch), k.idx(G * M)), gs);
            Value nv = k.ld(a["n"], slot), raw = k.mul(nv, ls);
            Value lb = k.min(k.max(raw, k.cst(lo)), k.cst(0.0));
            Value beta = k.exp(lb), omb = k.neg(k.expm1(lb));
            Value inv = k.div(k.cst(1.0), k.max(nv, k.cst(1e-6)));
            Value first = k.cmpi(arith::CmpIPredicate::eq, ch, k.idx(0));
            Value prev = k.select(first, k.idx(0), k.subi(ch, k.idx(1)));
            Value base = k.muli(k.addi(k.muli(bi, nC), ch), k.idx(GMd));
            Value pbase = k.muli(k.addi(k.muli(bi, nC), prev), k.idx(GMd));
            k.st(k.cst(0.0), part, k.idx(0));
            k.st(k.cst(0.0), part, k.idx(1));
            ownCh([&](Value i, Value n) {
              Value e = k.addi(base, n);
              Value g = k.add(k.ld(a["grad_h"], e), k.ld(carry, i));
              Value hp = k.select(first, k.ld(a["init"], k.addi(fin, n)),
                                  k.ld(a["mems"], k.addi(pbase, n)));
              Value dP = k.mul(k.mul(omb, g), inv);
              k.st(dP, a["dP"], e);
              k.ifThen(round, [&] {
                k.st(arith::TruncFOp::create(k.b, k.b.getBF16Type(), dP), a["dP16"], e);
              });
              k.st(k.add(k.ld(part, k.idx(0)), k.mul(g, hp)), part, k.idx(0));
              k.st(k.add(k.ld(part, k.idx(1)), k.mul(g, k.ld(a["P"], e))), part, k.idx(1));
              k.st(k.mul(beta, g), carry, i);
            });
            Value ghp = total(k.ld(part, k.idx(0))), sdp = total(k.ld(part, k.idx(1)));
            slotGrads(lane, slot, gs, raw, nv, ls, smu, beta, omb, inv, ghp, sdp);
          });
          ownCh([&](Value i, Value n) {
            k.st(k.ld(carry, i), a["grad_init"], k.addi(fin, n));
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
  add("combine_fwd", {"h", "y1", "y2", "rho", "hrstd", "o", "o16"}, {"rows", "bf16"},
      [=](K &k, Args &a) {
    Value round = wantsCopies(k, a);
    k.rows(k.muli(a["rows"], k.idx(G)), [&](Value ng, Value lane) {
      {
        Value n = k.divui(ng, k.idx(G)), g = k.remui(ng, k.idx(G));
        auto w = omegas(k, a["rho"], g);
        Value base = k.addi(k.muli(n, k.idx(D)), k.muli(g, k.idx(d)));
        Value ss = k.rowSum(lane, d, [&](Value j) {
          Value h = k.ld(a["h"], k.addi(base, j));
          return k.mul(h, h);
        });
        Value r = k.div(k.cst(1.0), k.sqrt(k.add(k.mul(ss, k.cst(1.0 / d)), k.cst(eps))));
        k.rowOnce(lane, [&] { k.st(r, a["hrstd"], ng); });
        k.rowLoopBatched(
            lane, d,
            [&](Value j) {
              Value i = k.addi(base, j);
              return k.add(k.mul(w[0], k.mul(k.ld(a["h"], i), r)),
                           k.add(k.mul(w[1], k.ld(a["y1"], i)), k.mul(w[2], k.ld(a["y2"], i))));
            },
            [&](Value j, Value o) {
              Value i = k.addi(base, j);
              k.st(o, a["o"], i);
              store16(k, round, o, a["o16"], i);
            });
      }
    });
  });
  // With bf16 ≠ 0 also dy2_16 = bf16(dy2) (the operand of the read's products).
  // A warp walks kRhoSpan tokens of one group and sums their dρ terms in
  // registers: one atomic add per ρ element a span, where an add a token
  // row sent all rows' adds to the same 3·G addresses.
  constexpr int64_t kRhoSpan = 8;
  add("combine_bwd",
      {"h", "y1", "y2", "rho", "hrstd", "do", "dh", "dy1", "dy2", "dy2_16", "drho"},
      {"rows", "bf16"}, [=](K &k, Args &a) {
        Value round = wantsCopies(k, a);
        Value spans = k.divui(k.addi(a["rows"], k.idx(kRhoSpan - 1)), k.idx(kRhoSpan));
        k.rows(k.muli(spans, k.idx(G)), [&](Value sg, Value lane) {
          Value sp = k.divui(sg, k.idx(G)), g = k.remui(sg, k.idx(G));
          auto w = omegas(k, a["rho"], g);
          Value acc = k.buf(3);
          for (int i = 0; i < 3; ++i)
            k.st(k.cst(0.0), acc, k.idx(i));
          Value n0 = k.muli(sp, k.idx(kRhoSpan));
          k.loop(n0, k.minui(a["rows"], k.addi(n0, k.idx(kRhoSpan))), [&](Value n) {
            Value base = k.addi(k.muli(n, k.idx(D)), k.muli(g, k.idx(d)));
            Value r = k.ld(a["hrstd"], k.addi(k.muli(n, k.idx(G)), g));
            Value dw0 = k.rowSum(lane, d, [&](Value j) {
              Value i = k.addi(base, j);
              return k.mul(k.ld(a["do"], i), k.mul(k.ld(a["h"], i), r));
            });
            Value dw1 = k.rowSum(lane, d, [&](Value j) {
              Value i = k.addi(base, j);
              return k.mul(k.ld(a["do"], i), k.ld(a["y1"], i));
            });
            Value dw2 = k.rowSum(lane, d, [&](Value j) {
              Value i = k.addi(base, j);
              return k.mul(k.ld(a["do"], i), k.ld(a["y2"], i));
            });
            Value meanDot = k.mul(k.mul(w[0], dw0), k.cst(1.0 / d)); // mean(dĥ·ĥ)
            k.rowLoopBatched(
                lane, d,
                [&](Value j) {
                  Value i = k.addi(base, j);
                  Value dO = k.ld(a["do"], i);
                  Value hh = k.mul(k.ld(a["h"], i), r);
                  return std::array<Value, 3>{
                      k.mul(r, k.sub(k.mul(w[0], dO), k.mul(hh, meanDot))), k.mul(w[1], dO),
                      k.mul(w[2], dO)};
                },
                [&](Value j, const std::array<Value, 3> &gr) {
                  Value i = k.addi(base, j);
                  k.st(gr[0], a["dh"], i);
                  k.st(gr[1], a["dy1"], i);
                  k.st(gr[2], a["dy2"], i);
                  store16(k, round, gr[2], a["dy2_16"], i);
                });
            Value wd = k.add(k.mul(w[0], dw0), k.add(k.mul(w[1], dw1), k.mul(w[2], dw2)));
            Value dws[3] = {dw0, dw1, dw2};
            for (int i = 0; i < 3; ++i)
              k.st(k.add(k.ld(acc, k.idx(i)), k.mul(w[i], k.sub(dws[i], wd))), acc, k.idx(i));
          });
          k.rowOnce(lane, [&] {
            for (int i = 0; i < 3; ++i)
              k.accum(a["drho"], k.addi(k.muli(g, k.idx(3)), k.idx(i)), k.ld(acc, k.idx(i)));
          });
        });
      });

  // --- SwiGLU: g = silu(f1) ⊙ f3; df1 = dg·f3·σ(f1)(1 + f1(1 − σ(f1))), df3 = dg·silu(f1).
  // With bf16 ≠ 0 also the bf16 copies of g (fwd) and df1, df3 (bwd).
  add("swiglu_fwd", {"f1", "f3", "g", "g16"}, {"n", "bf16"}, [=](K &k, Args &a) {
    Value round = wantsCopies(k, a);
    k.parBatched(
        a["n"],
        [&](Value i) {
          Value x = k.ld(a["f1"], i);
          return k.mul(k.mul(x, k.sigmoid(x)), k.ld(a["f3"], i));
        },
        [&](Value i, Value g) {
          k.st(g, a["g"], i);
          store16(k, round, g, a["g16"], i);
        });
  });
  add("swiglu_bwd", {"f1", "f3", "dg", "df1", "df3", "df1_16", "df3_16"}, {"n", "bf16"},
      [=](K &k, Args &a) {
    Value round = wantsCopies(k, a);
    k.par(a["n"], [&](Value i) {
      Value x = k.ld(a["f1"], i), s = k.sigmoid(x), dg = k.ld(a["dg"], i);
      Value dsilu = k.mul(s, k.add(k.cst(1.0), k.mul(x, k.sub(k.cst(1.0), s))));
      Value df1 = k.mul(k.mul(dg, k.ld(a["f3"], i)), dsilu), df3 = k.mul(dg, k.mul(x, s));
      k.st(df1, a["df1"], i);
      k.st(df3, a["df3"], i);
      store16(k, round, df1, a["df1_16"], i);
      store16(k, round, df3, a["df3_16"], i);
    });
  });

  // --- Embedding: x[n] = E[tokens[n]]; dE[tokens[n]] += dx[n].
  add("embed_fwd", {"tokens", "E", "x"}, {"rows"}, [=](K &k, Args &a) {
    k.par({a["rows"], k.idx(D)}, [&](ArrayRef<Value> i) {
      Value n = i[0], j = i[1];
      Value src = k.muli(k.ld(a["tokens"], n), k.idx(D));
      k.st(k.ld(a["E"], k.addi(src, j)), a["x"], k.addi(k.muli(n, k.idx(D)), j));
    });
  });
  add("embed_bwd", {"tokens", "dx", "dE"}, {"rows"}, [=](K &k, Args &a) {
    k.par({a["rows"], k.idx(D)}, [&](ArrayRef<Value> i) {
      Value n = i[0], j = i[1];
      Value dst = k.muli(k.ld(a["tokens"], n), k.idx(D));
      k.accum(a["dE"], k.addi(dst, j), k.ld(a["dx"], k.addi(k.muli(n, k.idx(D)), j)));
    });
  });

  // --- Cross-entropy of a block of rows (the trainer walks the rows in
  // blocks, so the logits of the whole batch never exist at once): for rows
  // with target ≥ 0, loss[0] = Σ (lse − logit[target]) and loss[1] = their
  // count; dlogits = (softmax − onehot)·scale[0] (the trainer passes
  // dloss/count over the whole batch), zero rows where the target is negative.
  // `grad` (bits): 1 writes dlogits, 2 its bf16 copy dlogits16 (the head's
  // bf16 products' operand: no fp32 array to round), 0 the loss only (a
  // forward pass: the gradient is not wanted).
  add("xent", {"logits", "targets", "scale", "loss", "dlogits", "dlogits16"}, {"rows", "grad"},
      [=](K &k, Args &a) {
    Value want32 = k.cmpi(arith::CmpIPredicate::ne,
                          arith::AndIOp::create(k.b, a["grad"], k.idx(1)), k.idx(0));
    Value want16 = k.cmpi(arith::CmpIPredicate::ne,
                          arith::AndIOp::create(k.b, a["grad"], k.idx(2)), k.idx(0));
    Value wantAny = k.cmpi(arith::CmpIPredicate::ne, a["grad"], k.idx(0));
    auto storeGrad = [&](Value g, Value i) {
      k.ifThen(want32, [&] { k.st(g, a["dlogits"], i); });
      store16(k, want16, g, a["dlogits16"], i);
    };
    k.par(1, [&](Value) {
      k.st(k.cst(0.0), a["loss"], k.idx(0));
      k.st(k.cst(0.0), a["loss"], k.idx(1));
    });
    Value zero32 = arith::ConstantIntOp::create(k.b, 0, 32);
    if (k.gpu) {
      // One warp per row, lanes along the vocabulary.
      k.warps(a["rows"], [&](Value n, Value lane) {
        Value gscale = k.ld(a["scale"], k.idx(0));
        Value base = k.muli(n, k.idx(V));
        k.touch();
        Value t32 = memref::LoadOp::create(k.b, a["targets"], ValueRange{n});
        Value valid = arith::CmpIOp::create(k.b, arith::CmpIPredicate::sge, t32, zero32);
        Value t =
            k.select(valid, arith::IndexCastOp::create(k.b, k.b.getIndexType(), t32), k.idx(0));
        // The lane's running max and sum of exp(x − max) in one read of its
        // logits (online softmax), then the warp's: the row is read twice
        // in all (here and for the gradient), not three times. Each
        // iteration loads kU logits a lane before using any, so that their
        // loads are in flight together (one at a time left the warp waiting
        // on memory latency V/32 times a row).
        Value ninf = k.cst(-INFINITY);
        auto isNinf = [&](Value v) { return k.cmpf(arith::CmpFPredicate::OEQ, v, ninf); };
        constexpr int64_t kU = 8;
        const bool whole = V % (32 * kU) == 0;
        auto f = scf::ForOp::create(k.b, lane, k.idx(V), k.idx(32 * kU),
                                    ValueRange{ninf, k.cst(0.0)});
        {
          OpBuilder::InsertionGuard g(k.b);
          k.b.setInsertionPointToStart(f.getBody());
          Value m = f.getRegionIterArgs()[0], z = f.getRegionIterArgs()[1];
          SmallVector<Value> xs;
          for (int64_t u = 0; u < kU; ++u) {
            Value j = k.addi(f.getInductionVar(), k.idx(32 * u));
            if (whole) {
              xs.push_back(k.ld(a["logits"], k.addi(base, j)));
              continue;
            }
            // Past the row: −∞, which adds exp(−∞) = 0.
            Value x = k.ld(a["logits"], k.addi(base, k.minui(j, k.idx(V - 1))));
            xs.push_back(k.select(k.cmpi(arith::CmpIPredicate::ult, j, k.idx(V)), x, ninf));
          }
          Value mn = m;
          for (Value x : xs)
            mn = k.max(mn, x);
          Value zn = k.mul(z, k.exp(k.sub(m, mn)));
          for (Value x : xs)
            zn = k.add(zn, k.exp(k.sub(x, mn)));
          scf::YieldOp::create(k.b, ValueRange{mn, k.select(isNinf(mn), k.cst(0.0), zn)});
        }
        Value mLane = f.getResult(0), zLane = f.getResult(1);
        Value m = k.warpMax(mLane);
        Value z = k.warpSum(
            k.select(isNinf(mLane), k.cst(0.0), k.mul(zLane, k.exp(k.sub(mLane, m)))));
        Value lse = k.add(m, k.log(z));
        Value vm = k.mask(valid);
        Value coef = k.mul(vm, gscale);
        k.ifThen(wantAny, [&] {
          k.rowLoopBatched(
              lane, V,
              [&](Value j) {
                Value p = k.exp(k.sub(k.ld(a["logits"], k.addi(base, j)), lse));
                Value oh = k.mask(k.cmpi(arith::CmpIPredicate::eq, j, t));
                return k.mul(coef, k.sub(p, oh));
              },
              [&](Value j, Value g) { storeGrad(g, k.addi(base, j)); });
        });
        k.ifThen(k.cmpi(arith::CmpIPredicate::eq, lane, k.idx(0)), [&] {
          k.accum(a["loss"], k.idx(0), k.mul(vm, k.sub(lse, k.ld(a["logits"], k.addi(base, t)))));
          k.accum(a["loss"], k.idx(1), vm);
        });
      });
      return;
    }
    k.par(a["rows"], [&](Value n) {
      Value gscale = k.ld(a["scale"], k.idx(0));
      Value base = k.muli(n, k.idx(V));
      k.touch();
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
      k.ifThen(wantAny, [&] {
        k.loop(V, [&](Value j) {
          Value i = k.addi(base, j);
          Value p = k.exp(k.sub(k.ld(a["logits"], i), lse));
          Value oh = k.mask(k.cmpi(arith::CmpIPredicate::eq, j, t));
          storeGrad(k.mul(coef, k.sub(p, oh)), i);
        });
      });
      k.accum(a["loss"], k.idx(0), k.mul(vm, k.sub(lse, k.ld(a["logits"], k.addi(base, t)))));
      k.accum(a["loss"], k.idx(1), vm);
    });
  });

  // --- AdamW (decoupled weight decay), hp = [lr, β1, β2, ε, wd, 1/(1−β1^t),
  // 1/(1−β2^t), gscale]: g' = g·gscale; m = β1 m + (1−β1) g'; v = β2 v + (1−β2) g'²;
  // p −= lr·(m·bc1 / (√(v·bc2) + ε) + wd·p).
  // The hyper-parameters and the scaled gradient g' of element i.
  auto adamIn = [](K &k, Args &a, Value i, Value (&h)[8]) {
    for (int e = 0; e < 8; ++e)
      h[e] = k.ld(a["hp"], k.idx(e));
    return k.mul(k.ld(a["g"], i), h[7]);
  };
  add("adamw", {"p", "g", "m", "v", "hp"}, {"n"}, [=](K &k, Args &a) {
    k.par(a["n"], [&](Value i) {
      Value h[8];
      // Every load before the first store (the arrays may alias as far as
      // the compiler knows: a load after a store waits for it).
      Value g = adamIn(k, a, i, h);
      Value m0 = k.ld(a["m"], i), v0 = k.ld(a["v"], i), p = k.ld(a["p"], i);
      Value m = k.add(k.mul(h[1], m0), k.mul(k.sub(k.cst(1.0), h[1]), g));
      Value v = k.add(k.mul(h[2], v0), k.mul(k.sub(k.cst(1.0), h[2]), k.mul(g, g)));
      k.st(m, a["m"], i);
      k.st(v, a["v"], i);
      Value upd = k.add(k.div(k.mul(m, h[5]), k.add(k.sqrt(k.mul(v, h[6])), h[3])), k.mul(h[4], p));
      k.st(k.sub(p, k.mul(h[0], upd)), a["p"], i);
    });
  });
  // --- The same update with m and v stored in bf16 (round to nearest even
  // after each update, fp32 arithmetic): 8 bytes of state a parameter
  // instead of 12 with fp32 weights (--optimizer-states bf16).
  add("adamw_bf16", {"p", "g", "m16", "v16", "hp"}, {"n"}, [=](K &k, Args &a) {
    k.par(a["n"], [&](Value i) {
      Value h[8];
      Value g = adamIn(k, a, i, h);
      Value m0 = arith::ExtFOp::create(k.b, k.f32, k.ld(a["m16"], i));
      Value v0 = arith::ExtFOp::create(k.b, k.f32, k.ld(a["v16"], i));
      Value p = k.ld(a["p"], i); // before the stores, as in adamw
      Value m = k.add(k.mul(h[1], m0), k.mul(k.sub(k.cst(1.0), h[1]), g));
      Value v = k.add(k.mul(h[2], v0), k.mul(k.sub(k.cst(1.0), h[2]), k.mul(g, g)));
      Value m16 = arith::TruncFOp::create(k.b, k.b.getBF16Type(), m);
      Value v16 = arith::TruncFOp::create(k.b, k.b.getBF16Type(), v);
      k.st(m16, a["m16"], i);
      k.st(v16, a["v16"], i);
      // The update uses the stored (rounded) moments, as a resumed run would.
      m = arith::ExtFOp::create(k.b, k.f32, m16);
      v = arith::ExtFOp::create(k.b, k.f32, v16);
      Value upd = k.add(k.div(k.mul(m, h[5]), k.add(k.sqrt(k.mul(v, h[6])), h[3])), k.mul(h[4], p));
      k.st(k.sub(p, k.mul(h[0], upd)), a["p"], i);
    });
  });
  // --- x16 = bf16(x), round to nearest even: the operands of the bf16
  // matrix products (--matmul bf16; fp32 accumulation in cuBLASLt).
  add("to_bf16", {"x", "x16"}, {"n"}, [=](K &k, Args &a) {
    k.parBatched(
        a["n"],
        [&](Value i) { return arith::TruncFOp::create(k.b, k.b.getBF16Type(), k.ld(a["x"], i)); },
        [&](Value i, Value v) { k.st(v, a["x16"], i); });
  });
  // --- ss64[0] += Σ x², in f64 throughout (each span of kSpan elements
  // summed, then the spans added): every finite fp32 gradient has a finite
  // norm (an fp32 sum overflowed once the norm passed 1.8e19, and the
  // trainer skipped the step as non-finite).
  add("sumsq", {"x", "ss64"}, {"n"}, [=](K &k, Args &a) {
    constexpr int64_t kSpan = 4096;
    Value n = a["n"];
    Value zero64 = arith::ConstantOp::create(k.b, k.b.getF64FloatAttr(0.0));
    auto sq = [&](Value i) {
      Value x = arith::ExtFOp::create(k.b, k.f64, k.ld(a["x"], i));
      return arith::MulFOp::create(k.b, x, x).getResult();
    };
    if (k.gpu) {
      // At most kBlocks blocks of 256 threads stride over x (coalesced, 4
      // loads in flight a thread), sum in f64, reduce each warp by
      // shuffles and add once a warp: a thread per span of 4096 contiguous
      // elements read 23% of the copy rate (each warp's loads 16 KB apart)
      // and added 1.4 M times to one address at the 7B size.
      constexpr int64_t kT = 256, kU = 4, kBlocks = 2048;
      Value nb = k.minui(k.divui(k.addi(n, k.idx(kT * kU - 1)), k.idx(kT * kU)), k.idx(kBlocks));
      k.blocks(nb, kT, {}, [&](Value blk, Value tid, ArrayRef<Value>) {
        Value stride = k.muli(nb, k.idx(kT));
        Value last = k.subi(n, k.idx(1));
        auto f = scf::ForOp::create(k.b, k.addi(k.muli(blk, k.idx(kT)), tid), n,
                                    k.muli(stride, k.idx(kU)), ValueRange{zero64});
        {
          OpBuilder::InsertionGuard g(k.b);
          k.b.setInsertionPointToStart(f.getBody());
          Value i0 = f.getInductionVar(), acc = f.getRegionIterArgs()[0];
          SmallVector<Value> v;
          for (int64_t u = 0; u < kU; ++u) {
            Value i = k.addi(i0, k.muli(stride, k.idx(u)));
            Value ok = k.cmpi(arith::CmpIPredicate::ult, i, n);
            v.push_back(k.select(ok, sq(k.minui(i, last)), zero64));
          }
          for (Value x : v)
            acc = arith::AddFOp::create(k.b, acc, x);
          scf::YieldOp::create(k.b, acc);
        }
        Value total = k.warpSum64(f.getResult(0));
        k.ifThen(k.cmpi(arith::CmpIPredicate::eq, k.remui(tid, k.idx(32)), k.idx(0)),
                 [&] { k.accum(a["ss64"], k.idx(0), total); });
      });
      return;
    }
    k.par(k.divui(k.addi(n, k.idx(kSpan - 1)), k.idx(kSpan)), [&](Value blk) {
      Value lo = k.muli(blk, k.idx(kSpan));
      Value hi = k.minui(n, k.addi(lo, k.idx(kSpan)));
      Value s = k.fold(lo, hi, zero64, sq, [&](Value acc, Value x) {
        return arith::AddFOp::create(k.b, acc, x).getResult();
      });
      k.accum(a["ss64"], k.idx(0), s);
    });
  });

  // --- Decoding, one token at a time with the recurrent state carried
  // (MMREC_SPEC section 3's segments; every state has a fixed size):
  // K1, V1 (B, nCmax, D) hold the means of the segment's completed chunks,
  // ksum, vsum (B, D) the sums of the current chunk; nacc (B, G, M) and
  // Pacc (B, G, M, d) the current chunk's write mass and Σ w·v; Mem (B, G, M, d).
  // y1 = Σ_{c<done} softmax_c(q·K1_c/√d) V1_c (0 when done = 0).
  // A warp per (row, group) on the GPU: lanes along the channels for the
  // chunk logits (shuffle sums) and for y1; each lane keeps the (at most
  // nCmax) probabilities itself (a thread per (row, group) walking the
  // channels was 0.16 ms a call at the 7B shapes).
  add("decode_level1", {"q", "K1", "V1", "y1"}, {"B", "done"}, [=](K &k, Args &a) {
    k.rows(k.muli(a["B"], k.idx(G)), [&](Value r, Value lane) {
      Value bi = k.divui(r, k.idx(G)), g = k.remui(r, k.idx(G));
      Value p = k.buf(chunkBuf);
      Value kRow0 = k.muli(bi, k.idx(nCmax * D));
      Value qBase = k.addi(k.muli(bi, k.idx(D)), k.muli(g, k.idx(d)));
      auto chunkAt = [&](Value ch) {
        return k.addi(k.addi(kRow0, k.muli(ch, k.idx(D))), k.muli(g, k.idx(d)));
      };
      k.loop(k.idx(0), a["done"], [&](Value ch) {
        Value kb = chunkAt(ch);
        Value dot = k.rowSum(lane, d, [&](Value j) {
          return k.mul(k.ld(a["q"], k.addi(qBase, j)), k.ld(a["K1"], k.addi(kb, j)));
        });
        k.st(k.mul(dot, k.cst(invSqrtD)), p, ch);
      });
      softmaxInPlace(k, p, a["done"]);
      k.rowLoop(lane, d, [&](Value j) {
        Value y = k.sum(k.idx(0), a["done"], [&](Value ch) {
          return k.mul(k.ld(p, ch), k.ld(a["V1"], k.addi(chunkAt(ch), j)));
        });
        k.st(y, a["y1"], k.addi(qBase, j));
      });
    });
  });
  // ksum += k, vsum += v; with close = 1 (the token ends its chunk) the chunk
  // means go to K1, V1 at chunk `slot` (count tokens) and the sums restart.
  add("decode_level1_push", {"k", "v", "ksum", "vsum", "K1", "V1"}, {"B", "slot", "count", "close"},
      [=](K &k, Args &a) {
        Value closing = k.cmpi(arith::CmpIPredicate::ne, a["close"], k.idx(0));
        Value inv = k.div(k.cst(1.0), k.toF32(a["count"]));
        k.par({a["B"], k.idx(D)}, [&](ArrayRef<Value> ij) {
          {
            Value bi = ij[0], j = ij[1];
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
          }
        });
      });
  // The MDI of one token, per (row, group): the read y2 = Σ_s a_s Mem[s],
  // a = softmax_s(q·S_s/√d), over the memory as it stood before the token's
  // chunk, and the write address w = softmax_s(k·S_s/√d) (B, G, M) that
  // decode_mdi_update applies. Two kernels: decode_mdi_logits, the slots'
  // scaled dot products lg (B, 2, G, M: q's, then k's) a warp per (row,
  // q|k, group, slot) on the GPU (lanes along the channels, coalesced:
  // 2·B·G·M warps, 16,384 at the 7B shapes and batch 1), then decode_mdi,
  // the softmaxes and the read: on the GPU a block per (row, group, 32
  // channels of y2), each block's softmax of its 1,024 logits redone in
  // shared memory, its channels read by 8 warps over interleaved slots
  // (a block per (row, group) reading the slots' rows across the lanes was
  // 1.07 ms a call at the 7B shapes: 8 blocks for the GPU, uncoalesced).
  add("decode_mdi_logits", {"q", "k", "S", "lg"}, {"B"}, [=](K &k, Args &a) {
    k.rows(k.muli(a["B"], k.idx(2 * G * M)), [&](Value r, Value lane) {
      Value s = k.remui(r, k.idx(M));
      Value rest = k.divui(r, k.idx(M));
      Value g = k.remui(rest, k.idx(G));
      rest = k.divui(rest, k.idx(G));
      Value isK = k.remui(rest, k.idx(2)), bi = k.divui(rest, k.idx(2));
      Value xb = k.addi(k.muli(bi, k.idx(D)), k.muli(g, k.idx(d)));
      Value sb = k.muli(k.addi(k.muli(g, k.idx(M)), s), k.idx(d));
      Value useK = k.cmpi(arith::CmpIPredicate::ne, isK, k.idx(0));
      Value dot = k.rowSum(lane, d, [&](Value j) {
        Value x = k.select(useK, k.ld(a["k"], k.addi(xb, j)), k.ld(a["q"], k.addi(xb, j)));
        return k.mul(x, k.ld(a["S"], k.addi(sb, j)));
      });
      k.rowOnce(lane, [&] { k.st(k.mul(dot, k.cst(invSqrtD)), a["lg"], r); });
    });
  });
  add("decode_mdi", {"lg", "Mem", "w", "y2"}, {"B"}, [=](K &k, Args &a) {
    // lg's row of (row bi, q|k, group g).
    auto lgBase = [&](Value bi, int64_t isK, Value g) {
      return k.muli(k.addi(k.muli(k.addi(k.muli(bi, k.idx(2)), k.idx(isK)), k.idx(G)), g),
                    k.idx(M));
    };
    if (!k.gpu) {
      k.par({a["B"], k.idx(G)}, [&](ArrayRef<Value> bg) {
        Value bi = bg[0], g = bg[1];
        Value wb = k.muli(k.addi(k.muli(bi, k.idx(G)), g), k.idx(M));
        Value xb = k.addi(k.muli(bi, k.idx(D)), k.muli(g, k.idx(d)));
        // The read address goes through w (overwritten by the write's).
        auto address = [&](int64_t isK) {
          Value lb = lgBase(bi, isK, g);
          k.loop(M, [&](Value s) { k.st(k.ld(a["lg"], k.addi(lb, s)), a["w"], k.addi(wb, s)); });
          softmaxInPlace(k, a["w"], k.idx(M), wb);
        };
        address(0);
        k.loop(d, [&](Value j) {
          Value y = k.sum(M, [&](Value s) {
            return k.mul(k.ld(a["w"], k.addi(wb, s)),
                         k.ld(a["Mem"], k.addi(k.muli(k.addi(wb, s), k.idx(d)), j)));
          });
          k.st(y, a["y2"], k.addi(xb, j));
        });
        address(1);
      });
      return;
    }
    constexpr int64_t kT = 256, kW = kT / 32;
    const int64_t nJ = (d + 31) / 32;
    k.blocks(k.muli(a["B"], k.idx(G * nJ)), kT, {M, kW, kT},
             [&](Value blk, Value tid, ArrayRef<Value> sm) {
      Value sc = sm[0], red = sm[1], part = sm[2];
      Value jt = k.remui(blk, k.idx(nJ)), bg = k.divui(blk, k.idx(nJ));
      Value bi = k.divui(bg, k.idx(G)), g = k.remui(bg, k.idx(G));
      Value warp = k.divui(tid, k.idx(32)), lane = k.remui(tid, k.idx(32));
      Value wb = k.muli(bg, k.idx(M));
      Value xb = k.addi(k.muli(bi, k.idx(D)), k.muli(g, k.idx(d)));
      auto reduce = [&](Value v, bool isMax) {
        Value r = isMax ? k.warpMax(v) : k.warpSum(v);
        k.ifThen(k.cmpi(arith::CmpIPredicate::eq, lane, k.idx(0)), [&] { k.st(r, red, warp); });
        k.barrier();
        // One scalar load a lane and a second shuffle reduction (a loop over
        // red[0..8) is vectorized by LLVM into 16-byte shared loads that the
        // 4-byte alignment of the workgroup buffer does not allow).
        Value mine = k.ld(red, k.minui(lane, k.idx(kW - 1)));
        Value live = k.cmpi(arith::CmpIPredicate::ult, lane, k.idx(kW));
        mine = k.select(live, mine, k.cst(isMax ? -INFINITY : 0.0));
        Value all = isMax ? k.warpMax(mine) : k.warpSum(mine);
        k.barrier();
        return all;
      };
      // sc ← softmax_s of lg's row (bi, isK, g), over the block.
      auto softmax = [&](int64_t isK) {
        Value lb = lgBase(bi, isK, g);
        Value mx = k.fold(
            tid, k.idx(M), k.cst(-INFINITY),
            [&](Value s) {
              Value v = k.ld(a["lg"], k.addi(lb, s));
              k.st(v, sc, s);
              return v;
            },
            [&](Value acc, Value v) { return k.max(acc, v); }, kT);
        Value m = reduce(mx, true);
        Value z = k.fold(
            tid, k.idx(M), k.cst(0.0),
            [&](Value s) {
              Value e = k.exp(k.sub(k.ld(sc, s), m));
              k.st(e, sc, s);
              return e;
            },
            [&](Value acc, Value v) { return k.add(acc, v); }, kT);
        Value inv = k.div(k.cst(1.0), reduce(z, false));
        k.loop(tid, k.idx(M), [&](Value s) { k.st(k.mul(k.ld(sc, s), inv), sc, s); }, kT);
        k.barrier();
      };
      softmax(0);
      // Channel j = 32·jt + lane; warp w sums the slots s ≡ w (mod 8).
      Value j = k.addi(k.muli(jt, k.idx(32)), lane);
      Value jIn = k.minui(j, k.idx(d - 1));
      Value y = k.fold(
          warp, k.idx(M), k.cst(0.0),
          [&](Value s) {
            return k.mul(k.ld(sc, s), k.ld(a["Mem"], k.addi(k.muli(k.addi(wb, s), k.idx(d)), jIn)));
          },
          [&](Value acc, Value v) { return k.add(acc, v); }, kW);
      k.st(y, part, tid);
      k.barrier();
      k.ifThen(k.cmpi(arith::CmpIPredicate::eq, warp, k.idx(0)), [&] {
        Value tot = k.sum(kW, [&](Value w) { return k.ld(part, k.addi(k.muli(w, k.idx(32)), lane)); });
        k.ifThen(k.cmpi(arith::CmpIPredicate::ult, j, k.idx(d)),
                 [&] { k.st(tot, a["y2"], k.addi(xb, j)); });
      });
      // The write address, by the group's first block (the condition is the
      // same for every thread of a block: its barriers are safe).
      k.ifThen(k.cmpi(arith::CmpIPredicate::eq, jt, k.idx(0)), [&] {
        k.barrier(); // every thread is done with the read address
        softmax(1);
        k.loop(tid, k.idx(M), [&](Value s) { k.st(k.ld(sc, s), a["w"], k.addi(wb, s)); }, kT);
      });
    });
  });
  // The MDI write of one token, given its write address w (B, G, M) from
  // decode_mdi: nacc += w, Pacc += w·v. With close = 1 the chunk is applied
  // to the memory: logβ = clamp(n·logσ(μ), lo, 0),
  // Mem = β·Mem + (1 − β)·P/max(n, 1e-6), and the accumulators restart.
  // On the CPU an iteration per (row, group, slot) walks its d channels; on
  // the GPU a block per (row, group, 8 slots) whose 256 threads take the
  // channels (coalesced; a thread per slot striding by d was 0.46 ms a call
  // at the 7B shapes), nacc stored after a barrier (every thread reads it).
  add("decode_mdi_update", {"w", "v", "mu", "nacc", "Pacc", "Mem"}, {"B", "close"},
      [=](K &k, Args &a) {
        Value closing = k.cmpi(arith::CmpIPredicate::ne, a["close"], k.idx(0));
        // Slot s of (bi, g): its update of channels j = j0, j0 + step, …;
        // returns the new nacc.
        auto slot = [&](Value bi, Value g, Value s, Value j0, int64_t step) {
          Value gs = k.addi(k.muli(g, k.idx(M)), s);
          Value ni = k.addi(k.muli(bi, k.idx(G * M)), gs);
          Value vb = k.addi(k.muli(bi, k.idx(D)), k.muli(g, k.idx(d)));
          Value ws = k.ld(a["w"], ni);
          Value n = k.add(k.ld(a["nacc"], ni), ws);
          Value ls = k.logSigmoid(k.ld(a["mu"], gs));
          Value lb = k.min(k.max(k.mul(n, ls), k.cst(lo)), k.cst(0.0));
          Value beta = k.exp(lb), omb = k.neg(k.expm1(lb));
          Value inv = k.div(k.cst(1.0), k.max(n, k.cst(1e-6)));
          k.loop(j0, k.idx(d), [&](Value j) {
            Value pi = k.addi(k.muli(ni, k.idx(d)), j);
            Value P = k.add(k.ld(a["Pacc"], pi), k.mul(ws, k.ld(a["v"], k.addi(vb, j))));
            k.st(k.select(closing, k.cst(0.0), P), a["Pacc"], pi);
            Value mem = k.ld(a["Mem"], pi);
            Value upd = k.add(k.mul(beta, mem), k.mul(omb, k.mul(P, inv)));
            k.st(k.select(closing, upd, mem), a["Mem"], pi);
          }, step);
          return std::make_pair(ni, k.select(closing, k.cst(0.0), n));
        };
        if (!k.gpu) {
          k.par({a["B"], k.idx(G), k.idx(M)}, [&](ArrayRef<Value> i) {
            auto [ni, n] = slot(i[0], i[1], i[2], k.idx(0), 1);
            k.st(n, a["nacc"], ni);
          });
          return;
        }
        constexpr int64_t kS = 8, kT = 256;
        const int64_t tiles = (M + kS - 1) / kS;
        k.blocks(k.muli(a["B"], k.idx(G * tiles)), kT, {kS},
                 [&](Value blk, Value tid, ArrayRef<Value> sm) {
          Value tile = k.remui(blk, k.idx(tiles)), bg = k.divui(blk, k.idx(tiles));
          Value bi = k.divui(bg, k.idx(G)), g = k.remui(bg, k.idx(G));
          for (int64_t i = 0; i < kS; ++i) {
            Value s = k.addi(k.muli(tile, k.idx(kS)), k.idx(i));
            k.ifThen(k.cmpi(arith::CmpIPredicate::ult, s, k.idx(M)), [&] {
              auto [ni, n] = slot(bi, g, s, tid, kT);
              (void)ni;
              k.ifThen(k.cmpi(arith::CmpIPredicate::eq, tid, k.idx(0)),
                       [&] { k.st(n, sm[0], k.idx(i)); });
            });
          }
          k.barrier(); // every thread has read nacc
          Value s = k.addi(k.muli(tile, k.idx(kS)), tid);
          k.ifThen(arith::AndIOp::create(k.b, k.cmpi(arith::CmpIPredicate::ult, tid, k.idx(kS)),
                                         k.cmpi(arith::CmpIPredicate::ult, s, k.idx(M))),
                   [&] {
                     Value ni = k.addi(k.muli(bi, k.idx(G * M)), k.addi(k.muli(g, k.idx(M)), s));
                     k.st(k.ld(sm[0], tid), a["nacc"], ni);
                   });
        });
      });
  if (gpu)
    addGpuRecurrences(c, ks);
  return ks;
}

/// Which of GatedKernels.cpp's GPU kernels the training library's level-0
/// recurrence uses (decided from the configuration at compile time):
///  * Persistent: one block per (R batch rows, head), W_g's block in shared
///    memory for the whole sequence (buildGpuGatedKernel) — per-head gates
///    and dense gates small enough for one block (mmrec-tiny, D = 128);
///    R ∈ {1, 2, 4} is picked at run time from B·H. Any B.
///  * Cooperative: the dense gate beyond one block (mmrec-small D = 768,
///    the 7B D = 4096): buildGpuCoopGatedKernel, FP32 FMAs on fp32 arrays,
///    D / Dc blocks meeting at one grid barrier a step; used for B up to
///    kCoopMaxRows (the kernel walks the batch in tiles of 8 rows a step, so
///    its step time grows with B), the one-block-per-row kernels beyond.
///    The adjoint's pre-activations h_{t−1}·W_g come from cuBLASLt products
///    (gatedPreactProduct) before the kernel.
///    With c.gatedBf16 (and D a multiple of 256), the cooperative kernels'
///    products run on tensor cores instead (spec.mma: 32 channels a block,
///    W_g's slice as bf16 mma fragments, the staged rows rounded to bf16,
///    fp32 accumulation; the states and every array stay fp32), in
///    thread-block clusters of kGatedCluster blocks that split the
///    contraction when D is a multiple of 512 (GatedKernelSpec::cluster).
///    With c.gatedCluster too (D a multiple of 256 up to 1024), each row
///    group of 8 is one cluster of 16 blocks of D / 16 channels instead,
///    exchanging the state through distributed shared memory
///    (GatedKernelSpec::groupCluster): launched without co-residency, any B.
///  * None: the K-written kernels of addGpuRecurrences.
struct GatedFastPath {
  enum Kind { None, Persistent, Cooperative } kind = None;
  std::vector<int64_t> fwdRows, bwdRows; // Persistent: the block heights built
  int64_t channelsPerBlock = 0;          // Cooperative: Dc
  bool mma = false;                      // Cooperative: bf16 tensor-core products
  int64_t cluster = 1;                   // Cooperative, mma: GatedKernelSpec::cluster
  bool groupCluster = false;             // Cooperative, mma: GatedKernelSpec::groupCluster
};
/// Blocks per cluster of the MMA kernels when D allows (D a multiple of
/// 512): a cluster of 2 fits every GPC of an H100 / H200 with one block an SM.
constexpr int64_t kGatedCluster = 2;
constexpr int64_t kCoopMaxRows = 64;
// 227 KiB: the opt-in shared memory per block of the H100 / H200.
constexpr int64_t kMaxSharedBytes = 227 * 1024;

/// Dc for the training library's cooperative kernel: the smallest divisor of
/// D (at most the kernel's 1024 threads) that needs at most 64 blocks (so
/// that one block per SM fits with room on GPUs of 64 SMs or more, and the
/// grid barrier has half as many arrivals as at 128); 0 when there is none.
int64_t trainCoopChannels(int64_t D) {
  for (int64_t dc = 1; dc <= GatedKernelSpec::kCoopThreads; ++dc)
    if (D % dc == 0 && D / dc <= 64)
      return dc;
  return 0;
}

GatedFastPath gatedFastPath(const TrainConfig &c) {
  MLIRContext ctx;
  GatedFastPath f;
  for (bool adj : {false, true})
    for (int64_t rows : {1, 2, 4}) {
      GatedKernelSpec s = gatedSpec(c, adj, &ctx);
      s.rows = rows;
      if (s.headDim() <= 1024 && s.sharedBytes() <= kMaxSharedBytes)
        (adj ? f.bwdRows : f.fwdRows).push_back(rows);
    }
  if (!f.fwdRows.empty() && !f.bwdRows.empty() && f.fwdRows[0] == 1 && f.bwdRows[0] == 1) {
    f.kind = GatedFastPath::Persistent;
    return f;
  }
  f.fwdRows.clear();
  f.bwdRows.clear();
  if (c.perHead)
    return f;
  f.mma = c.gatedBf16 && GatedKernelSpec::mmaFits(c.D);
  f.groupCluster = f.mma && c.gatedCluster && GatedKernelSpec::groupClusterFits(c.D);
  if (f.mma && !f.groupCluster && GatedKernelSpec::mmaFits(c.D, kGatedCluster))
    f.cluster = kGatedCluster;
  f.channelsPerBlock = f.groupCluster ? c.D / GatedKernelSpec::kGroupClusterBlocks
                       : f.mma        ? 32
                                      : trainCoopChannels(c.D);
  if (f.channelsPerBlock == 0)
    return f;
  for (bool adj : {false, true}) {
    GatedKernelSpec s = gatedSpec(c, adj, &ctx);
    s.cooperative = true;
    s.mma = f.mma;
    s.cluster = f.cluster;
    s.groupCluster = f.groupCluster;
    s.channelsPerBlock = f.channelsPerBlock;
    if (s.sharedBytes() > kMaxSharedBytes)
      return f;
  }
  f.kind = GatedFastPath::Cooperative;
  return f;
}

/// The spec of a fast-path kernel of the training library.
GatedKernelSpec fastSpec(const TrainConfig &c, const GatedFastPath &f, bool adjoint,
                         int64_t rows, MLIRContext *ctx) {
  GatedKernelSpec s = gatedSpec(c, adjoint, ctx);
  if (f.kind == GatedFastPath::Cooperative) {
    s.cooperative = true;
    s.mma = f.mma;
    s.cluster = f.cluster;
    s.groupCluster = f.groupCluster;
    s.channelsPerBlock = f.channelsPerBlock;
    // The runtime launches *_coop kernels cooperatively, *_gcl kernels in
    // their clusters without co-residency (runtime/src/cuda.cpp).
    s.name += f.groupCluster ? "_gcl" : "_coop";
  } else {
    s.rows = rows;
    s.name += "_r" + std::to_string(rows);
  }
  return s;
}

/// gpu.launch_func of `spec`'s kernel (built into the gpu.module at first
/// use) on `blocks` blocks with `operands`.
void launchGated(K &k, const GatedKernelSpec &spec, Value blocks, ValueRange operands,
                 Value groups = {}) {
  auto gm = llvm::cast<gpu::GPUModuleOp>(k.gpuModule());
  auto fn = SymbolTable::lookupNearestSymbolFrom<gpu::GPUFuncOp>(
      gm, StringAttr::get(k.b.getContext(), spec.name));
  if (!fn) {
    if (spec.cooperative)
      buildGpuCoopGatedKernel(k.b, k.b.getLoc(), gm, spec);
    else
      buildGpuGatedKernel(k.b, k.b.getLoc(), gm, spec);
    fn = SymbolTable::lookupNearestSymbolFrom<gpu::GPUFuncOp>(
        gm, StringAttr::get(k.b.getContext(), spec.name));
    // One block per SM is all a cooperative kernel needs (its grid is at
    // most 128 blocks): ptxas may then use every register the block size
    // allows instead of spilling to keep room for a second block.
    if (spec.cooperative)
      fn->setAttr("nvvm.minctasm", k.b.getI32IntegerAttr(1));
  }
  Value one = k.idx(1);
  Value smem = arith::ConstantIntOp::create(k.b, spec.sharedBytes(), 32);
  gpu::LaunchFuncOp::create(k.b, fn, gpu::KernelDim3{blocks, groups ? groups : one, one},
                            gpu::KernelDim3{k.idx(spec.threads()), one, one}, smem, operands);
}

/// pact[m][n] = Σ_k x_m[k]·W[k][n] over the B·T rows m = b·T + t, x_m =
/// h[b, t−1] (t > 0) or init[b] (t = 0): rows with t > 0 go to `pact` (row
/// m), rows with t = 0 to `pact0` (row b). Two cuBLASLt products (fp32
/// operands, TF32 with `tf32`) that the host code calls through the
/// runtime's mmrecGemmF32 (runtime/src/cuda.cpp), on the stream of the
/// kernels: a batch of B products h[b, 0..T−2]·W → pact[b, 1..T−1] (rows of
/// D, batch stride T·D) and init·W → pact0. (A generated SIMT product did
/// this before: at the 7B widths it took twice the adjoint kernel's time.)
void gatedPreactProduct(K &k, int64_t D, Value h, Value init, Value W, Value pact, Value pact0,
                        Value B, Value T, bool tf32) {
  constexpr llvm::StringLiteral kFn = "mmrecGemmF32";
  auto module = k.b.getInsertionBlock()->getParentOp()->getParentOfType<ModuleOp>();
  if (!module.lookupSymbol<func::FuncOp>(kFn)) {
    OpBuilder::InsertionGuard g(k.b);
    k.b.setInsertionPointToStart(module.getBody());
    // (m, n, k, A, lda, strideA, B, ldb, strideB, C, ldc, strideC, batch,
    // tf32): row-major, no transposes, C = A·B; addresses as integers.
    SmallVector<Type> args(14, k.b.getIndexType());
    auto fn = func::FuncOp::create(k.b, kFn, k.b.getFunctionType(args, {}));
    fn.setPrivate();
  }
  auto addr = [&](Value m) -> Value {
    return memref::ExtractAlignedPointerAsIndexOp::create(k.b, m).getResult();
  };
  Value Dv = k.idx(D), zero = k.idx(0), TD = k.muli(T, Dv), Tm1 = k.subi(T, k.idx(1));
  Value flag = k.idx(tf32 ? 1 : 0);
  k.ifThen(k.cmpi(arith::CmpIPredicate::ugt, Tm1, zero), [&] {
    Value pact1 = k.addi(addr(pact), k.idx(4 * D)); // row t = 1 of batch row 0
    func::CallOp::create(k.b, kFn, TypeRange{},
                         ValueRange{Tm1, Dv, Dv, addr(h), Dv, TD, addr(W), Dv, zero, pact1, Dv, TD,
                                    B, flag});
  });
  func::CallOp::create(k.b, kFn, TypeRange{},
                       ValueRange{B, Dv, Dv, addr(init), Dv, zero, addr(W), Dv, zero, addr(pact0),
                                  Dv, zero, k.idx(1), flag});
}

/// The launches of the fast path `f` (T > 0, B > 0): see GatedFastPath.
void buildFast(K &k, Args &a, const TrainConfig &c, const GatedFastPath &f, bool adjoint) {
  MLIRContext *ctx = k.b.getContext();
  Value B = a["B"], T = a["T"];
  // The kernel's arguments by name; the cooperative adjoint's scratch
  // arrays are outputs it overwrites only after reading them: pact (the
  // pre-activations of steps t > 0) is grad_z (each thread reads pact[b, t,
  // c] before it writes dz there), pact0 (those of t = 0) is grad_pre0
  // (likewise), gbuf (the carried gradient, block-local) is grad_init (its
  // final value).
  auto operands = [&](const GatedKernelSpec &s) {
    SmallVector<Value> v;
    for (const std::string &n : s.arrayArgs())
      v.push_back(n == "pact"    ? a["grad_z"]
                  : n == "pact0" ? a["grad_pre0"]
                  : n == "gbuf"  ? a["grad_init"]
                                 : a[n]);
    v.push_back(B);
    v.push_back(T);
    if (s.cooperative && s.adjoint) {
      v.push_back(k.idx(0)); // steps [0, T) in one launch
      v.push_back(T);
      v.push_back(T); // pact holds all T steps
    }
    return v;
  };
  if (f.kind == GatedFastPath::Cooperative) {
    GatedKernelSpec s = fastSpec(c, f, adjoint, 1, ctx);
    // The grid barrier's counter (sync[0]) starts at 0.
    k.par(B, [&](Value i) { k.st(arith::ConstantIntOp::create(k.b, 0, 32), a["sync"], i); });
    if (adjoint)
      gatedPreactProduct(k, c.D, a["h"], a["init"], a["gate"], a["grad_z"], a["grad_pre0"], B, T,
                         f.mma);
    // In row groups (GatedKernelSpec::coopGroups): each group's D / Dc
    // blocks run its rows' recurrences on their own, so a step at B 32
    // costs what one at B 8 does where the device holds the blocks (the
    // runtime grants fewer groups where it does not).
    // groupCluster: one cluster a group of 8 rows, however many.
    constexpr int64_t R = GatedKernelSpec::kCoopGroupRows;
    Value groups = k.divui(k.addi(B, k.idx(R - 1)), k.idx(R));
    if (!f.groupCluster)
      groups = k.minui(groups, k.idx(GatedKernelSpec::kCoopMaxGroups));
    launchGated(k, s, k.idx(c.D / f.channelsPerBlock), operands(s), groups);
    return;
  }
  // Persistent: R rows a block, R = 4 / 2 when B·H would fill a device of
  // kSms SMs more than 4 / 2 times (the H100's and H200's 132), else 1.
  constexpr int64_t kSms = 132;
  const int64_t H = c.perHead ? c.H : 1;
  const std::vector<int64_t> &rows = adjoint ? f.bwdRows : f.fwdRows;
  Value work = k.muli(B, k.idx(H));
  std::function<void(size_t)> emit = [&](size_t i) {
    const int64_t R = rows[i];
    auto launch = [&] {
      GatedKernelSpec s = fastSpec(c, f, adjoint, R, ctx);
      Value blocks = k.muli(k.divui(k.addi(B, k.idx(R - 1)), k.idx(R)), k.idx(H));
      launchGated(k, s, blocks, operands(s));
    };
    if (i == 0)
      return launch();
    auto op = scf::IfOp::create(k.b, TypeRange{},
                                k.cmpi(arith::CmpIPredicate::ugt, work, k.idx(R * kSms)), true);
    OpBuilder::InsertionGuard g(k.b);
    k.b.setInsertionPointToStart(op.thenBlock());
    launch();
    k.b.setInsertionPointToStart(op.elseBlock());
    emit(i - 1);
  };
  emit(rows.size() - 1);
}

/// The level-0 kernel of the fast path `f` when it applies to this call
/// (T > 0, B > 0 and, for the cooperative kernel, B ≤ kCoopMaxRows);
/// `fallback` otherwise.
template <class F>
void fastOr(K &k, Args &a, const TrainConfig &c, const GatedFastPath &f, bool adjoint,
            F fallback) {
  if (f.kind == GatedFastPath::None)
    return fallback();
  Value B = a["B"], T = a["T"];
  Value use = arith::AndIOp::create(k.b, k.cmpi(arith::CmpIPredicate::ugt, T, k.idx(0)),
                                    k.cmpi(arith::CmpIPredicate::ugt, B, k.idx(0)));
  if (f.kind == GatedFastPath::Cooperative) {
    if (!f.groupCluster) // (groupCluster: each group of 8 rows on its own)
      use = arith::AndIOp::create(k.b, use,
                                  k.cmpi(arith::CmpIPredicate::ule, B, k.idx(kCoopMaxRows)));
    // The cooperative kernels stage rows of h, init (and, backward,
    // grad_pre, grad_pre0) with 16-byte loads when D % 4 == 0: those arrays
    // must be 16-byte aligned (device allocations are; views might not be).
    if (c.D % 4 == 0) {
      std::vector<const char *> staged = {"h", "init"};
      if (adjoint) {
        staged.push_back("grad_pre");
        staged.push_back("grad_pre0");
      }
      for (const char *n : staged) {
        Value p = memref::ExtractAlignedPointerAsIndexOp::create(k.b, a[n]);
        use = arith::AndIOp::create(
            k.b, use, k.cmpi(arith::CmpIPredicate::eq, k.remui(p, k.idx(16)), k.idx(0)));
      }
    }
  }
  auto op = scf::IfOp::create(k.b, TypeRange{}, use, true);
  OpBuilder::InsertionGuard g(k.b);
  k.b.setInsertionPointToStart(op.elseBlock());
  fallback();
  k.b.setInsertionPointToStart(op.thenBlock());
  buildFast(k, a, c, f, adjoint);
}

/// The level-0 gated recurrence written with `K`, for the GPU training
/// library: one launch per time step over every (row, channel) (its step
/// needs all of h_{t−1}), or GatedKernels.h's persistent and cooperative
/// kernels. The arguments are those of gatedSpec.
void addGpuRecurrences(const TrainConfig &c, std::vector<Kernel> &ks) {
  const int64_t D = c.D, dh = c.perHead ? c.D / c.H : c.D;
  const double lo = c.clampMin, hi = c.clampMax;
  auto sig = [&](bool adj, bool /*gated*/) -> TrainKernelSig {
    return {adj ? "gated_bwd" : "gated_fwd", trainGatedArrays(c, adj), {"B", "T"}};
  };
  auto clamp = [=](K &k, Value l, double top) { return k.min(k.max(l, k.cst(lo)), k.cst(top)); };
  auto inRange = [=](K &k, Value l, double top) {
    return k.mask(arith::AndIOp::create(k.b, k.cmpf(arith::CmpFPredicate::OGE, l, k.cst(lo)),
                                        k.cmpf(arith::CmpFPredicate::OLE, l, k.cst(top))));
  };
  // Element (bi, t, j) of a (B, T, D) array.
  auto at = [=](K &k, Value bi, Value T, Value t, Value j) {
    return k.addi(k.muli(k.addi(k.muli(bi, T), t), k.idx(D)), j);
  };
  // One block per batch row walks the time steps: h_{t−1} (and, backward,
  // av) in shared memory, a barrier between the steps' phases; thread `tid`
  // owns the channels tid + c·threads (c < cpt), its values in registers.
  const int64_t threads = std::min<int64_t>(1024, (D + 31) / 32 * 32);
  const int64_t cpt = (D + threads - 1) / threads;
  // body(c, j, inRange) for each channel slot of this thread.
  auto forChannels = [=](K &k, Value tid, auto body) {
    for (int64_t c = 0; c < cpt; ++c) {
      Value j = k.addi(tid, k.idx(c * threads));
      Value ok = k.cmpi(arith::CmpIPredicate::ult, j, k.idx(D));
      k.ifThen(ok, [&] { body(c, j); });
    }
  };
  // One channel's step t forward from its pre-activation and h_{t−1}[j]:
  // h = z·σ(pre) + γ·h_{t−1}, stored (and in `final` at the last step).
  auto channelForward = [=](K &k, Args &a, Value bi, Value T, Value t, Value j, Value pre,
                            Value hPrev) {
    Value e = at(k, bi, T, t, j);
    Value gamma = k.exp(clamp(k, k.ld(a["log_decay"], e), hi));
    Value h = k.add(k.mul(k.ld(a["z"], e), k.sigmoid(pre)), k.mul(gamma, hPrev));
    k.st(h, a["h"], e);
    k.ifThen(k.cmpi(arith::CmpIPredicate::eq, t, k.subi(T, k.idx(1))),
             [&] { k.st(h, a["final"], k.addi(k.muli(bi, k.idx(D)), j)); });
    return h;
  };
  // One channel's adjoint at step t: g = gIn + dh_t; writes dz, dℓ and av =
  // g·z·σ'(pre) (to grad_pre[t−1], or grad_pre0 at t = 0); returns {av, γ·g}.
  auto channelAdjoint = [=](K &k, Args &a, Value bi, Value T, Value t, Value j, Value gIn,
                            Value pre, Value hPrev) {
    Value e = at(k, bi, T, t, j);
    Value first = k.cmpi(arith::CmpIPredicate::eq, t, k.idx(0));
    Value tp = k.select(first, k.idx(0), k.subi(t, k.idx(1)));
    Value gj = k.add(gIn, k.ld(a["grad_h"], e));
    Value sg = k.sigmoid(pre);
    Value lraw = k.ld(a["log_decay"], e);
    Value gamma = k.exp(clamp(k, lraw, hi));
    Value av = k.mul(k.mul(gj, k.ld(a["z"], e)), k.mul(sg, k.sub(k.cst(1.0), sg)));
    k.st(k.mul(gj, sg), a["grad_z"], e);
    k.st(k.mul(inRange(k, lraw, hi), k.mul(k.mul(gj, gamma), hPrev)), a["grad_log_decay"], e);
    k.ifThen(first, [&] { k.st(av, a["grad_pre0"], k.addi(k.muli(bi, k.idx(D)), j)); });
    k.ifThen(arith::XOrIOp::create(k.b, first, arith::ConstantIntOp::create(k.b, 1, 1)),
             [&] { k.st(av, a["grad_pre"], at(k, bi, T, tp, j)); });
    return std::make_pair(av, k.mul(gamma, gj));
  };
  // bias_j + Σ_i hs[head(j)·dh + i] · W[head(j)][i][j mod dh], hs in shared memory.
  auto preactShared = [=](K &k, Args &a, Value hs, Value j) {
    Value hd = k.divui(j, k.idx(dh)), jj = k.remui(j, k.idx(dh));
    Value wb = k.addi(k.muli(hd, k.idx(dh * dh)), jj), hb = k.muli(hd, k.idx(dh));
    Value s = k.sum(dh, [&](Value i) {
      return k.mul(k.ld(hs, k.addi(hb, i)), k.ld(a["gate"], k.addi(wb, k.muli(i, k.idx(dh)))));
    });
    return k.add(k.ld(a["bias"], j), s);
  };
  auto rowFwd = [=](K &k, Args &a) {
                  Value T = a["T"];
                  k.blocks(a["B"], threads, {D}, [&](Value bi, Value tid, ArrayRef<Value> sm) {
                    Value hs = sm[0], hn = k.buf(cpt);
                    Value row = k.muli(bi, k.idx(D));
                    forChannels(k, tid, [&](int64_t, Value j) {
                      k.st(k.ld(a["init"], k.addi(row, j)), hs, j);
                    });
                    k.barrier();
                    k.loop(k.idx(0), T, [&](Value t) {
                      forChannels(k, tid, [&](int64_t c, Value j) {
                        Value h = channelForward(k, a, bi, T, t, j, preactShared(k, a, hs, j),
                                                 k.ld(hs, j));
                        k.st(h, hn, k.idx(c));
                      });
                      k.barrier();
                      forChannels(k, tid, [&](int64_t c, Value j) { k.st(k.ld(hn, k.idx(c)), hs, j); });
                      k.barrier();
                    });
                    k.ifThen(k.cmpi(arith::CmpIPredicate::eq, T, k.idx(0)), [&] {
                      forChannels(k, tid, [&](int64_t, Value j) {
                        k.st(k.ld(hs, j), a["final"], k.addi(row, j));
                      });
                    });
                  });
                };
  // Backward: per step (t from T−1 down), hs = h_{t−1}; g += dh_t; av =
  // g·z·σ'(pre) to shared memory and grad_pre[t−1] (grad_pre0 at t = 0);
  // dz, dℓ; then g = γ·g + Wᵀ·av.
  auto rowBwd = [=](K &k, Args &a) {
                  Value T = a["T"];
                  k.blocks(a["B"], threads, {D, D, D}, [&](Value bi, Value tid, ArrayRef<Value> sm) {
                    Value hs = sm[0], avs = sm[1], wtav = sm[2], g = k.buf(cpt);
                    Value warp = k.divui(tid, k.idx(32)), lane = k.remui(tid, k.idx(32));
                    Value row = k.muli(bi, k.idx(D));
                    forChannels(k, tid, [&](int64_t c, Value j) {
                      k.st(k.ld(a["grad_final"], k.addi(row, j)), g, k.idx(c));
                    });
                    k.loop(k.idx(0), T, [&](Value s) {
                      Value t = k.subi(k.subi(T, k.idx(1)), s);
                      Value first = k.cmpi(arith::CmpIPredicate::eq, t, k.idx(0));
                      Value tp = k.select(first, k.idx(0), k.subi(t, k.idx(1)));
                      forChannels(k, tid, [&](int64_t, Value j) {
                        k.st(k.select(first, k.ld(a["init"], k.addi(row, j)),
                                      k.ld(a["h"], at(k, bi, T, tp, j))),
                             hs, j);
                      });
                      k.barrier();
                      forChannels(k, tid, [&](int64_t c, Value j) {
                        auto [av, gNext] =
                            channelAdjoint(k, a, bi, T, t, j, k.ld(g, k.idx(c)),
                                           preactShared(k, a, hs, j), k.ld(hs, j));
                        k.st(av, avs, j);
                        k.st(gNext, g, k.idx(c));
                      });
                      k.barrier();
                      // (Wᵀ·av)_i = Σ_j W[i][j]·av_j: one warp per row i, the
                      // lanes along the row (coalesced), a shuffle reduction.
                      auto rowLoop = scf::ForOp::create(k.b, warp, k.idx(D), k.idx(threads / 32));
                      {
                        OpBuilder::InsertionGuard gd(k.b);
                        k.b.setInsertionPointToStart(rowLoop.getBody());
                        Value i = rowLoop.getInductionVar();
                        Value hd = k.divui(i, k.idx(dh)), ii = k.remui(i, k.idx(dh));
                        Value wRow = k.addi(k.muli(hd, k.idx(dh * dh)), k.muli(ii, k.idx(dh)));
                        Value hb = k.muli(hd, k.idx(dh));
                        auto part = scf::ForOp::create(k.b, lane, k.idx(dh), k.idx(32),
                                                       ValueRange{k.cst(0.0)});
                        {
                          OpBuilder::InsertionGuard gp(k.b);
                          k.b.setInsertionPointToStart(part.getBody());
                          Value jj = part.getInductionVar();
                          Value t = k.mul(k.ld(avs, k.addi(hb, jj)), k.ld(a["gate"], k.addi(wRow, jj)));
                          scf::YieldOp::create(k.b, k.add(part.getRegionIterArgs()[0], t));
                        }
                        Value sum = k.warpSum(part.getResult(0));
                        k.ifThen(k.cmpi(arith::CmpIPredicate::eq, lane, k.idx(0)),
                                 [&] { k.st(sum, wtav, i); });
                      }
                      k.barrier();
                      forChannels(k, tid, [&](int64_t c, Value j) {
                        k.st(k.add(k.ld(g, k.idx(c)), k.ld(wtav, j)), g, k.idx(c));
                      });
                    });
                    forChannels(k, tid, [&](int64_t c, Value j) {
                      k.st(k.ld(g, k.idx(c)), a["grad_init"], k.addi(row, j));
                    });
                    // grad_pre[T−1] has no following step.
                    k.ifThen(k.cmpi(arith::CmpIPredicate::ugt, T, k.idx(0)), [&] {
                      forChannels(k, tid, [&](int64_t, Value j) {
                        k.st(k.cst(0.0), a["grad_pre"], at(k, bi, T, k.subi(T, k.idx(1)), j));
                      });
                    });
                  });
                };
  // Several blocks per batch row (P of them, chosen at launch so that about
  // kRowBlocks blocks run; P = 1 falls back to the kernels above): block p
  // owns the channels [p·cpb, min(D, (p+1)·cpb)). Per step, every block
  // copies h_{t−1} (backward: also av) of its row into shared memory, its 8
  // warps split each channel's dot product over i (lanes along j: coalesced
  // W) and sum through shared memory, and the row's blocks meet at a barrier
  // made of a counter in `sync` (one per row, monotonic; membar.gl before
  // arriving and after waiting). Launched cooperatively (the kernel's name
  // ends in _coop): every block is resident.
  constexpr int64_t kRowBlocks = 128, kTpb = 256, kWarps = kTpb / 32;
  const int64_t maxGroups = ((D + 1) / 2 + 31) / 32; // 32-channel groups of a block (P ≥ 2)
  auto rowBlocks = [=](K &k, Value B) {
    Value p = k.divui(k.idx(kRowBlocks), arith::MaxUIOp::create(k.b, B, k.idx(1)));
    return k.minui(p, k.idx((D + 31) / 32));
  };
  auto membar = [](K &k) {
    NVVM::MembarOp::create(k.b, NVVM::MemScopeKindAttr::get(k.b.getContext(),
                                                            NVVM::MemScopeKind::GPU));
  };
  // The block's writes are done: thread 0 arrives at the row's counter.
  auto arrive = [=](K &k, Value sync, Value bi, Value tid) {
    k.barrier();
    k.ifThen(k.cmpi(arith::CmpIPredicate::eq, tid, k.idx(0)), [&] {
      membar(k);
      k.touch();
      memref::AtomicRMWOp::create(k.b, arith::AtomicRMWKind::addi,
                                  arith::ConstantIntOp::create(k.b, 1, 32), sync, ValueRange{bi});
    });
  };
  // Thread 0 waits until the row's counter reaches `target`; then the block.
  auto waitFor = [=](K &k, Value sync, Value bi, Value tid, Value target) {
    k.ifThen(k.cmpi(arith::CmpIPredicate::eq, tid, k.idx(0)), [&] {
      Value tgt = arith::IndexCastOp::create(k.b, k.b.getI32Type(), target);
      auto w = scf::WhileOp::create(k.b, TypeRange{}, ValueRange{});
      {
        OpBuilder::InsertionGuard g(k.b);
        k.b.createBlock(&w.getBefore());
        k.touch();
        Value cur = memref::AtomicRMWOp::create(k.b, arith::AtomicRMWKind::ori,
                                                arith::ConstantIntOp::create(k.b, 0, 32), sync,
                                                ValueRange{bi});
        scf::ConditionOp::create(k.b, k.cmpi(arith::CmpIPredicate::slt, cur, tgt), ValueRange{});
        k.b.createBlock(&w.getAfter());
        scf::YieldOp::create(k.b);
      }
      membar(k);
    });
    k.barrier();
  };
  // dst[i] = src(i) for i < D, the block's threads striding.
  auto toShared = [=](K &k, Value tid, Value dst, auto src) {
    k.loop(tid, k.idx(D), [&](Value i) { k.st(src(i), dst, i); }, kTpb);
  };
  // For the block's channels [j0, j1), in groups of 32: bias_j + Σ_i hs[head
  // rows]·W[i][j], split over the warps and summed in `red`; fn(group, j,
  // pre-activation) runs on warp 0 for each channel.
  auto columnDots = [=](K &k, Args &a, Value hs, Value red, Value j0, Value j1, Value lane,
                        Value warp, auto fn) {
    k.loop(j0, j1, [&](Value jbase) {
      Value j = k.addi(jbase, lane);
      Value valid = k.cmpi(arith::CmpIPredicate::ult, j, j1);
      Value jc = k.select(valid, j, j0);
      Value hd = k.divui(jc, k.idx(dh)), jj = k.remui(jc, k.idx(dh));
      Value wb = k.addi(k.muli(hd, k.idx(dh * dh)), jj), hb = k.muli(hd, k.idx(dh));
      Value part = k.fold(
          warp, k.idx(dh), k.cst(0.0),
          [&](Value i) {
            return k.mul(k.ld(hs, k.addi(hb, i)), k.ld(a["gate"], k.addi(wb, k.muli(i, k.idx(dh)))));
          },
          [&](Value acc, Value x) { return k.add(acc, x); }, kWarps);
      k.st(part, red, k.addi(k.muli(warp, k.idx(32)), lane));
      k.barrier();
      Value w0 = k.cmpi(arith::CmpIPredicate::eq, warp, k.idx(0));
      k.ifThen(arith::AndIOp::create(k.b, w0, valid), [&] {
        Value dot =
            k.sum(kWarps, [&](Value w) { return k.ld(red, k.addi(k.muli(w, k.idx(32)), lane)); });
        fn(k.divui(k.subi(jbase, j0), k.idx(32)), j, k.add(k.ld(a["bias"], j), dot));
      });
      k.barrier();
    }, 32);
  };
  auto zeroSync = [](K &k, Args &a) {
    k.par(a["B"], [&](Value i) { k.st(arith::ConstantIntOp::create(k.b, 0, 32), a["sync"], i); });
  };
  auto coopFwd = [=](K &k, Args &a, Value P) {
    Value T = a["T"], sync = a["sync"];
    Value cpb = k.divui(k.addi(k.idx(D), k.subi(P, k.idx(1))), P);
    zeroSync(k, a);
    k.blocks(
        k.muli(a["B"], P), kTpb, {D, kTpb},
        [&](Value bid, Value tid, ArrayRef<Value> sm) {
          Value hs = sm[0], red = sm[1];
          Value bi = k.divui(bid, P), p = k.remui(bid, P);
          Value j0 = k.minui(k.muli(p, cpb), k.idx(D));
          Value j1 = k.minui(k.addi(j0, cpb), k.idx(D));
          Value lane = k.remui(tid, k.idx(32)), warp = k.divui(tid, k.idx(32));
          Value row = k.muli(bi, k.idx(D));
          k.loop(k.idx(0), T, [&](Value t) {
            Value first = k.cmpi(arith::CmpIPredicate::eq, t, k.idx(0));
            k.ifThen(k.cmpi(arith::CmpIPredicate::ugt, t, k.idx(0)),
                     [&] { waitFor(k, sync, bi, tid, k.muli(P, t)); });
            Value tp = k.select(first, k.idx(0), k.subi(t, k.idx(1)));
            toShared(k, tid, hs, [&](Value i) {
              return k.select(first, k.ld(a["init"], k.addi(row, i)),
                              k.ld(a["h"], at(k, bi, T, tp, i)));
            });
            k.barrier();
            columnDots(k, a, hs, red, j0, j1, lane, warp, [&](Value, Value j, Value pre) {
              channelForward(k, a, bi, T, t, j, pre, k.ld(hs, j));
            });
            arrive(k, sync, bi, tid);
          });
          k.ifThen(k.cmpi(arith::CmpIPredicate::eq, T, k.idx(0)), [&] {
            k.loop(k.addi(j0, tid), j1, [&](Value j) {
              k.st(k.ld(a["init"], k.addi(row, j)), a["final"], k.addi(row, j));
            }, kTpb);
          });
        },
        "_coop");
  };
  auto coopBwd = [=](K &k, Args &a, Value P) {
    Value T = a["T"], sync = a["sync"];
    Value cpb = k.divui(k.addi(k.idx(D), k.subi(P, k.idx(1))), P);
    zeroSync(k, a);
    const int64_t own = (D + 1) / 2; // the most channels a block owns (P ≥ 2)
    k.blocks(
        k.muli(a["B"], P), kTpb, {D, D, own, kTpb},
        [&](Value bid, Value tid, ArrayRef<Value> sm) {
          Value hs = sm[0], avs = sm[1], wtav = sm[2], red = sm[3];
          Value g = k.buf(maxGroups);
          Value bi = k.divui(bid, P), p = k.remui(bid, P);
          Value j0 = k.minui(k.muli(p, cpb), k.idx(D));
          Value j1 = k.minui(k.addi(j0, cpb), k.idx(D));
          Value lane = k.remui(tid, k.idx(32)), warp = k.divui(tid, k.idx(32));
          Value w0 = k.cmpi(arith::CmpIPredicate::eq, warp, k.idx(0));
          Value row = k.muli(bi, k.idx(D));
          // Warp 0's lane owns the channels j0 + 32·c + lane: g in registers.
          auto ownChannels = [&](auto body) {
            k.ifThen(w0, [&] {
              k.loop(j0, j1, [&](Value jbase) {
                Value j = k.addi(jbase, lane);
                k.ifThen(k.cmpi(arith::CmpIPredicate::ult, j, j1),
                         [&] { body(k.divui(k.subi(jbase, j0), k.idx(32)), j); });
              }, 32);
            });
          };
          ownChannels([&](Value c, Value j) { k.st(k.ld(a["grad_final"], k.addi(row, j)), g, c); });
          k.loop(k.idx(0), T, [&](Value s) {
            Value t = k.subi(k.subi(T, k.idx(1)), s);
            Value first = k.cmpi(arith::CmpIPredicate::eq, t, k.idx(0));
            Value tp = k.select(first, k.idx(0), k.subi(t, k.idx(1)));
            toShared(k, tid, hs, [&](Value i) {
              return k.select(first, k.ld(a["init"], k.addi(row, i)),
                              k.ld(a["h"], at(k, bi, T, tp, i)));
            });
            k.barrier();
            columnDots(k, a, hs, red, j0, j1, lane, warp, [&](Value c, Value j, Value pre) {
              k.st(channelAdjoint(k, a, bi, T, t, j, k.ld(g, c), pre, k.ld(hs, j)).second, g, c);
            });
            // Every av of the step is written: the row's blocks meet.
            arrive(k, sync, bi, tid);
            waitFor(k, sync, bi, tid, k.muli(P, k.addi(s, k.idx(1))));
            toShared(k, tid, avs, [&](Value i) {
              return k.select(first, k.ld(a["grad_pre0"], k.addi(row, i)),
                              k.ld(a["grad_pre"], at(k, bi, T, tp, i)));
            });
            k.barrier();
            // (Wᵀ·av)_i for the block's rows: a warp per row, lanes along it.
            k.loop(k.addi(j0, warp), j1, [&](Value i) {
              Value hd = k.divui(i, k.idx(dh)), ii = k.remui(i, k.idx(dh));
              Value wRow = k.addi(k.muli(hd, k.idx(dh * dh)), k.muli(ii, k.idx(dh)));
              Value hb = k.muli(hd, k.idx(dh));
              Value part = k.fold(
                  lane, k.idx(dh), k.cst(0.0),
                  [&](Value jj) {
                    return k.mul(k.ld(avs, k.addi(hb, jj)), k.ld(a["gate"], k.addi(wRow, jj)));
                  },
                  [&](Value acc, Value x) { return k.add(acc, x); }, 32);
              Value sum = k.warpSum(part);
              k.ifThen(k.cmpi(arith::CmpIPredicate::eq, lane, k.idx(0)),
                       [&] { k.st(sum, wtav, k.subi(i, j0)); });
            }, kWarps);
            k.barrier();
            ownChannels([&](Value c, Value j) {
              k.st(k.add(k.ld(g, c), k.ld(wtav, k.subi(j, j0))), g, c);
            });
          });
          ownChannels([&](Value c, Value j) {
            k.st(k.ld(g, c), a["grad_init"], k.addi(row, j));
            k.ifThen(k.cmpi(arith::CmpIPredicate::ugt, T, k.idx(0)), [&] {
              k.st(k.cst(0.0), a["grad_pre"], at(k, bi, T, k.subi(T, k.idx(1)), j));
            });
          });
        },
        "_coop");
  };
  // P ≥ 2 blocks per row when the batch leaves SMs idle; else one per row.
  auto dispatch = [=](K &k, Args &a, auto coop, auto row) {
    Value P = rowBlocks(k, a["B"]);
    auto op = scf::IfOp::create(k.b, TypeRange{}, k.cmpi(arith::CmpIPredicate::uge, P, k.idx(2)),
                                true);
    OpBuilder::InsertionGuard g(k.b);
    k.b.setInsertionPointToStart(op.thenBlock());
    coop(k, a, P);
    k.b.setInsertionPointToStart(op.elseBlock());
    row(k, a);
  };
  // The fast paths: GatedKernels.cpp's kernels where the shape allows (see
  // gatedFastPath), the kernels above otherwise.
  const GatedFastPath fast = gatedFastPath(c);
  ks.push_back({sig(false, true), [=](K &k, Args &a) {
                  fastOr(k, a, c, fast, /*adjoint=*/false,
                         [&] { dispatch(k, a, coopFwd, rowFwd); });
                }});
  ks.push_back({sig(true, true), [=](K &k, Args &a) {
                  fastOr(k, a, c, fast, /*adjoint=*/true,
                         [&] { dispatch(k, a, coopBwd, rowBwd); });
                }});
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

} // namespace

std::vector<TrainKernelSig> mlir::mmrec::trainKernelSignatures(const TrainConfig &cfg) {
  std::vector<TrainKernelSig> sigs;
  for (Kernel &k : kernels(cfg))
    sigs.push_back(k.sig);
  for (bool adj : {false, true}) {
    sigs.push_back({adj ? "gated_bwd" : "gated_fwd", trainGatedArrays(cfg, adj), {"B", "T"}});
  }
  return sigs;
}

std::string mlir::mmrec::gatedGpuKernels(const TrainConfig &cfg) {
  const GatedFastPath f = gatedFastPath(cfg);
  switch (f.kind) {
  case GatedFastPath::Persistent:
    return "persistent";
  case GatedFastPath::Cooperative:
    return f.groupCluster ? "clusters-bf16" : f.mma ? "cooperative-bf16" : "cooperative";
  case GatedFastPath::None:
    break;
  }
  return "rows";
}

void mlir::mmrec::buildTrainKernels(OpBuilder &builder, Location loc, ModuleOp module,
                                    const TrainConfig &cfg, bool gpu) {
  MLIRContext *ctx = builder.getContext();
  if (gpu)
    module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(), builder.getUnitAttr());
  // Kernels written directly as gpu.func (GatedKernels.h) go to one
  // gpu.module, created when the first of them is built.
  gpu::GPUModuleOp kernelModule;
  auto getGpuModule = [&]() -> Operation * {
    if (!kernelModule) {
      OpBuilder mb(ctx);
      mb.setInsertionPointToEnd(module.getBody());
      kernelModule = gpu::GPUModuleOp::create(mb, loc, "train_gated_kernels");
    }
    return kernelModule;
  };
  for (Kernel &kern : kernels(cfg, gpu)) {
    ImplicitLocOpBuilder b(loc, builder);
    b.setInsertionPointToEnd(module.getBody());
    SmallVector<Type> types;
    for (const std::string &n : kern.sig.arrays)
      types.push_back(MemRefType::get({ShapedType::kDynamic},
                                      isTokenArray(n) || n == "sync" ? Type(b.getI32Type())
                                      : isBf16Array(n)               ? Type(b.getBF16Type())
                                      : isF64Array(n)                ? Type(b.getF64Type())
                                                                     : b.getF32Type()));
    for (size_t i = 0; i < kern.sig.indices.size(); ++i)
      types.push_back(b.getIndexType());
    auto func = func::FuncOp::create(b, "train_" + kern.sig.name, b.getFunctionType(types, {}));
    func->setAttr("llvm.emit_c_interface", b.getUnitAttr());
    Block *entry = func.addEntryBlock();
    b.setInsertionPointToStart(entry);
    Args args;
    unsigned ai = 0;
    for (const std::string &n : kern.sig.arrays)
      args[n] = func.getArgument(ai++);
    for (const std::string &n : kern.sig.indices)
      args[n] = func.getArgument(ai++);
    K k(b, gpu, entry);
    k.gpuModule = getGpuModule;
    kern.body(k, args);
    func::ReturnOp::create(b);
  }
  if (gpu)
    return;
  for (bool adj : {false, true}) {
    GatedKernelSpec g = gatedSpec(cfg, adj, ctx);
    buildCpuGatedKernel(builder, loc, module, g);
    // The trailing `sync` array of the training signature (unused here).
    auto f = module.lookupSymbol<func::FuncOp>(g.name);
    unsigned at = unsigned(g.arrayArgs().size());
    if (failed(f.insertArgument(at, MemRefType::get({ShapedType::kDynamic}, builder.getI32Type()),
                                DictionaryAttr(), loc)))
      llvm::report_fatal_error("train_gated: cannot add the sync argument");
  }
}
