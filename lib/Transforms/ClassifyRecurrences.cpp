//===- ClassifyRecurrences.cpp - affine recurrences become log-space scans ===//
//
// A `mmrec.recurrence` with one carried state whose step is affine in that
// state, h_t = A_t ⊙ h_{t-1} + B_t with A and B independent of h, is
// rewritten into
//   ℓ = log A (in log space, clamped), B over the whole sequence (the step's
//   state-free ops, lifted from per-step slices to sequences), and
//   mmrec.scan ℓ, B init h0.
// A must be a decay given in log space: `mmrec.exp_decay ℓ_t` (ℓ is then the
// input itself) or `mmrec.sigmoid x_t` (ℓ = clamp(log σ(x)) = clamp(-softplus(-x))
// through mmrec.log_decay).
// The seed's nonlinear level-0 step h_t = z_t ⊙ σ(h·W_g + b_g) + γ_t ⊙ h
// becomes mmrec.gated_recurrence (a persistent kernel keeps W_g on chip).
// Anything else stays a sequential recurrence, with a remark that says why.
//
//===----------------------------------------------------------------------===//

#include "dialect/MMRecOps.h"
#include "dialect/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/DenseMap.h"

namespace mlir::mmrec {
#define GEN_PASS_DEF_MMRECCLASSIFYRECURRENCES
#include "dialect/Passes.h.inc"
} // namespace mlir::mmrec

using namespace mlir;
using namespace mlir::mmrec;

namespace {

/// The affine form a ⊙ h + b of a value in the step region; a null `a`
/// means 0 (independent of h), a null `b` means 0, `isH` marks h itself.
struct Affine {
  Value a, b;
  bool one = false; // a == 1
};

class Classifier {
public:
  Classifier(RecurrenceOp op) : op(op), h(op.getStateArg(0)) {}

  /// Why the step is not affine, or empty when it is; fills A and B.
  std::string analyze() {
    Value next = op.getYield().getValues()[0];
    std::string why;
    FailureOr<Affine> f = form(next, why);
    if (failed(f))
      return why;
    if (!f->a && !f->one)
      return "the next state does not depend on the previous one";
    if (f->one)
      return "the decay is exactly 1 (not a log-space decay)";
    A = f->a;
    B = f->b;
    return "";
  }

  Value A, B;

private:
  bool dependsOnH(Value v) {
    auto it = deps.find(v);
    if (it != deps.end())
      return it->second;
    bool d = v == h;
    if (Operation *def = v.getDefiningOp())
      if (op.getBody().isAncestor(def->getParentRegion()))
        for (Value o : def->getOperands())
          d |= dependsOnH(o);
    return deps[v] = d;
  }

  FailureOr<Affine> form(Value v, std::string &why) {
    if (v == h)
      return Affine{Value(), Value(), true};
    if (!dependsOnH(v))
      return Affine{Value(), v, false};
    Operation *def = v.getDefiningOp();
    auto sum = [&](Value x, Value y, bool sub) -> FailureOr<Affine> {
      FailureOr<Affine> fx = form(x, why), fy = form(y, why);
      if (failed(fx) || failed(fy))
        return failure();
      if ((fx->a || fx->one) && (fy->a || fy->one)) {
        why = "the state appears in both operands of a sum";
        return failure();
      }
      if (sub && (fy->a || fy->one)) {
        why = "the state is subtracted";
        return failure();
      }
      Affine r = (fx->a || fx->one) ? *fx : *fy;
      Value other = (fx->a || fx->one) ? fy->b : fx->b;
      if (other && r.b) {
        OpBuilder bld(def);
        r.b = sub ? Value(arith::SubFOp::create(bld, def->getLoc(), r.b, other))
                  : Value(arith::AddFOp::create(bld, def->getLoc(), r.b, other));
      } else if (other) {
        if (sub) {
          OpBuilder bld(def);
          r.b = arith::NegFOp::create(bld, def->getLoc(), other);
        } else {
          r.b = other;
        }
      }
      return r;
    };
    if (auto add = llvm::dyn_cast<arith::AddFOp>(def))
      return sum(add.getLhs(), add.getRhs(), false);
    if (auto sub = llvm::dyn_cast<arith::SubFOp>(def))
      return sum(sub.getLhs(), sub.getRhs(), true);
    if (auto mul = llvm::dyn_cast<arith::MulFOp>(def)) {
      Value x = mul.getLhs(), y = mul.getRhs();
      if (dependsOnH(x) && dependsOnH(y)) {
        why = "the state is multiplied by itself";
        return failure();
      }
      if (!dependsOnH(x))
        std::swap(x, y);
      FailureOr<Affine> fx = form(x, why);
      if (failed(fx))
        return failure();
      if (fx->b) {
        why = "a decay multiplies a sum that includes a state-free term";
        return failure();
      }
      if (!fx->one) {
        why = "the state is multiplied by two decays";
        return failure();
      }
      return Affine{y, Value(), false};
    }
    why = "'" + def->getName().getStringRef().str() + "' is applied to the state";
    return failure();
  }

  RecurrenceOp op;
  Value h;
  llvm::DenseMap<Value, bool> deps;
};

/// `t` with the sequence axis (of size `steps`) inserted at position 1.
RankedTensorType withSeqAxis(Type t, int64_t steps) {
  auto r = llvm::cast<RankedTensorType>(t);
  SmallVector<int64_t> shape(r.getShape());
  shape.insert(shape.begin() + 1, steps);
  return RankedTensorType::get(shape, r.getElementType(), r.getEncoding());
}

struct ClassifyRecurrencesPass
    : mlir::mmrec::impl::MMRecClassifyRecurrencesBase<ClassifyRecurrencesPass> {
  using Base::Base;

  /// Rebuilds `v` (a state-free value of the step) over the whole sequence.
  FailureOr<Value> lift(OpBuilder &b, RecurrenceOp op, Value v, IRMapping &map,
                        int64_t steps, std::string &why) {
    if (Value m = map.lookupOrNull(v))
      return m;
    if (auto arg = llvm::dyn_cast<BlockArgument>(v)) {
      if (arg.getOwner() == &op.getBody().front() && arg.getArgNumber() < op.getInputs().size()) {
        Value seq = op.getInputs()[arg.getArgNumber()];
        map.map(v, seq);
        return seq;
      }
    }
    Operation *def = v.getDefiningOp();
    if (!def || !op.getBody().isAncestor(def->getParentRegion()))
      return v; // defined above: a weight, used as is by matmuls
    bool elementwise = def->hasTrait<OpTrait::Elementwise>() ||
                       llvm::isa<arith::ArithDialect, math::MathDialect>(def->getDialect()) ||
                       llvm::isa<ExpDecayOp, LogDecayOp>(def);
    bool matmul = llvm::isa<MatmulOp>(def);
    if (!elementwise && !matmul) {
      why = "'" + def->getName().getStringRef().str() + "' cannot be lifted to the sequence";
      return failure();
    }
    SmallVector<Value> operands;
    for (auto [i, o] : llvm::enumerate(def->getOperands())) {
      bool fromStep = llvm::isa<BlockArgument>(o) ||
                      (o.getDefiningOp() && op.getBody().isAncestor(o.getDefiningOp()->getParentRegion()));
      if (matmul && i > 0) { // weights and bias stay as they are
        if (fromStep) {
          why = "a matmul's weight is computed inside the step";
          return failure();
        }
        operands.push_back(o);
        continue;
      }
      if (!fromStep) {
        why = "an elementwise op of the step uses a value defined outside it";
        return failure();
      }
      FailureOr<Value> l = lift(b, op, o, map, steps, why);
      if (failed(l))
        return failure();
      operands.push_back(*l);
    }
    SmallVector<Type> types;
    for (Type t : def->getResultTypes()) {
      // Only a tensor with a leading batch axis gains a sequence axis.
      auto rt = llvm::dyn_cast<RankedTensorType>(t);
      if (!rt || rt.getRank() < 1) {
        std::string ts;
        llvm::raw_string_ostream(ts) << t;
        why = "'" + def->getName().getStringRef().str() + "' produces " + ts +
              ", which cannot be lifted to the sequence";
        return failure();
      }
      types.push_back(withSeqAxis(t, steps));
    }
    OperationState st(def->getLoc(), def->getName(), operands, types, def->getAttrs());
    Operation *clone = b.create(st);
    for (auto [r, c] : llvm::zip(def->getResults(), clone->getResults()))
      map.map(r, c);
    return map.lookup(v);
  }

  /// The seed's level-0 form, h_t = z_t ⊙ σ(h·W_g + b_g) + exp_decay(ℓ_t) ⊙ h
  /// (products and the sum in either order; W_g dense through mmrec.matmul
  /// or per head through mmrec.block_diag_matmul, both with a bias, W_g and
  /// b_g defined outside the step), becomes mmrec.gated_recurrence.
  LogicalResult matchGated(RecurrenceOp op) {
    if (op.getNumStates() != 1 || op.getReverse())
      return failure();
    Block &body = op.getBody().front();
    Value h = op.getStateArg(0);
    auto inputIndex = [&](Value v) -> int {
      auto arg = llvm::dyn_cast<BlockArgument>(v);
      if (!arg || arg.getOwner() != &body || arg.getArgNumber() >= op.getInputs().size())
        return -1;
      return int(arg.getArgNumber());
    };
    auto outside = [&](Value v) { return v && !op->isAncestor(v.getParentBlock()->getParentOp()); };
    auto add = op.getYield().getValues()[0].getDefiningOp<arith::AddFOp>();
    if (!add)
      return failure();
    for (int order = 0; order < 2; ++order) {
      auto gatePart = (order ? add.getRhs() : add.getLhs()).getDefiningOp<arith::MulFOp>();
      auto decayPart = (order ? add.getLhs() : add.getRhs()).getDefiningOp<arith::MulFOp>();
      if (!gatePart || !decayPart)
        continue;
      // γ_t ⊙ h with γ_t = exp_decay(ℓ_t), ℓ_t a sequence input.
      Value decay = decayPart.getLhs() == h ? decayPart.getRhs()
                    : decayPart.getRhs() == h ? decayPart.getLhs() : Value();
      auto exp = decay ? decay.getDefiningOp<ExpDecayOp>() : ExpDecayOp();
      int lIdx = exp ? inputIndex(exp.getInput()) : -1;
      if (lIdx < 0)
        continue;
      // z_t ⊙ σ(pre) in either order.
      for (int zo = 0; zo < 2; ++zo) {
        Value zv = zo ? gatePart.getRhs() : gatePart.getLhs();
        auto sig = (zo ? gatePart.getLhs() : gatePart.getRhs()).getDefiningOp<SigmoidOp>();
        int zIdx = inputIndex(zv);
        if (zIdx < 0 || !sig)
          continue;
        Value W, bias;
        if (auto mm = sig.getInput().getDefiningOp<MatmulOp>()) {
          if (mm.getLhs() != h || mm.getTransposeRhs())
            continue;
          W = mm.getRhs();
          bias = mm.getBias();
        } else if (auto bd = sig.getInput().getDefiningOp<BlockDiagMatmulOp>()) {
          if (bd.getLhs() != h)
            continue;
          W = bd.getRhs();
          bias = bd.getBias();
        } else {
          continue;
        }
        if (!outside(W) || !outside(bias))
          continue;
        Value zSeq = op.getInputs()[zIdx], lSeq = op.getInputs()[lIdx];
        auto lt = llvm::cast<RankedTensorType>(lSeq.getType());
        auto enc = getLogSpaceEncoding(lt);
        if (!enc)
          continue;
        OpBuilder b(op);
        auto rec = GatedRecurrenceOp::create(
            b, op.getLoc(), op.getSequences()[0].getType(), op.getFinals()[0].getType(), zSeq,
            lSeq, W, bias, op.getInits()[0], b.getF64FloatAttr(enc.getMinValue()),
            b.getF64FloatAttr(enc.getMaxValue()));
        if (failed(mlir::verify(rec))) {
          rec.erase();
          return failure();
        }
        op.getSequences()[0].replaceAllUsesWith(rec.getH());
        op.getFinals()[0].replaceAllUsesWith(rec.getFinal());
        op.erase();
        return success();
      }
    }
    return failure();
  }

  void runOnOperation() override {
    SmallVector<RecurrenceOp> recs;
    getOperation()->walk([&](RecurrenceOp r) { recs.push_back(r); });
    for (RecurrenceOp op : recs) {
      if (succeeded(matchGated(op)))
        continue;
      if (op.getNumStates() != 1) {
        op.emitRemark() << "sequential recurrence: " << op.getNumStates() << " carried states";
        continue;
      }
      Classifier c(op);
      std::string why = c.analyze();
      if (!why.empty()) {
        op.emitRemark() << "sequential recurrence: " << why;
        continue;
      }
      // ℓ from the decay A.
      Value decayIn;
      bool viaSigmoid = false;
      if (auto e = c.A.getDefiningOp<ExpDecayOp>()) {
        decayIn = e.getInput();
      } else if (auto s = c.A.getDefiningOp<SigmoidOp>()) {
        decayIn = s.getInput();
        viaSigmoid = true;
      } else {
        op.emitRemark() << "sequential recurrence: the decay is not given in log space "
                           "(mmrec.exp_decay) nor as a sigmoid";
        continue;
      }
      Value init = op.getInits()[0];
      auto seqType = llvm::cast<RankedTensorType>(op.getSequences()[0].getType());
      int64_t steps = seqType.getDimSize(1);
      OpBuilder b(op);
      IRMapping map;
      std::string liftWhy;
      FailureOr<Value> l = lift(b, op, decayIn, map, steps, liftWhy);
      FailureOr<Value> bSeq = failed(l) ? l : lift(b, op, c.B, map, steps, liftWhy);
      if (failed(l) || failed(bSeq)) {
        op.emitRemark() << "sequential recurrence: " << liftWhy;
        continue;
      }
      Value logDecay = *l;
      auto lt = llvm::cast<RankedTensorType>(logDecay.getType());
      if (viaSigmoid || !getLogSpaceEncoding(lt)) {
        auto enc = LogSpaceAttr::get(b.getContext(), llvm::APFloat(clampMin),
                                     llvm::APFloat(clampMax));
        auto encType = RankedTensorType::get(lt.getShape(), lt.getElementType(), enc);
        if (!viaSigmoid) {
          op.emitRemark() << "sequential recurrence: the decay's log is not marked log-space";
          continue;
        }
        logDecay = LogDecayOp::create(b, op.getLoc(), encType, logDecay,
                                      b.getF64FloatAttr(clampMin), b.getF64FloatAttr(clampMax));
      }
      auto enc = getLogSpaceEncoding(logDecay.getType());
      auto scan = ScanOp::create(b, op.getLoc(), seqType, op.getFinals()[0].getType(), logDecay,
                                 *bSeq, init, b.getF64FloatAttr(enc.getMinValue()),
                                 b.getF64FloatAttr(enc.getMaxValue()), op.getReverseAttr());
      op.getSequences()[0].replaceAllUsesWith(scan.getH());
      op.getFinals()[0].replaceAllUsesWith(scan.getFinal());
      op.erase();
    }
  }
};

} // namespace
