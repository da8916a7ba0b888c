//===- MMRecOps.cpp - mmrec operation verifiers -------------------------===//
//
// Verifiers name the offending operand or attribute and say what was
// expected. Dynamic dimensions (`?`) are compatible with anything; static
// ones must agree.
//
//===----------------------------------------------------------------------===//

#include "dialect/MMRecOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/TypeUtilities.h"
#include "llvm/Support/MathExtras.h"

#include <cmath>

using namespace mlir;
using namespace mlir::mmrec;

namespace {

bool isDyn(int64_t d) { return ShapedType::isDynamic(d); }
bool compatible(int64_t a, int64_t b) { return isDyn(a) || isDyn(b) || a == b; }

std::string dimStr(int64_t d) { return isDyn(d) ? "?" : std::to_string(d); }

RankedTensorType ranked(Value v) { return llvm::cast<RankedTensorType>(v.getType()); }

/// Checks that `value`'s type has rank `rank`.
LogicalResult expectRank(Operation *op, StringRef name, Type type, int64_t rank) {
  auto t = llvm::cast<RankedTensorType>(type);
  if (t.getRank() == rank)
    return success();
  return op->emitOpError() << name << " must have rank " << rank << ", got "
                           << type;
}

/// Checks dimension `dim` of `name` against `expected` (may be dynamic).
LogicalResult expectDim(Operation *op, StringRef name, Type type, int64_t dim,
                        int64_t expected, StringRef what) {
  int64_t got = llvm::cast<RankedTensorType>(type).getDimSize(dim);
  if (compatible(got, expected))
    return success();
  return op->emitOpError() << name << " dimension " << dim << " (" << got
                           << ") must equal " << what << " ("
                           << expected << ")";
}

LogicalResult expectSameElementType(Operation *op, StringRef a, Type ta,
                                    StringRef b, Type tb) {
  if (getElementTypeOrSelf(ta) == getElementTypeOrSelf(tb))
    return success();
  return op->emitOpError() << a << " and " << b
                           << " must have the same element type, got "
                           << getElementTypeOrSelf(ta) << " and "
                           << getElementTypeOrSelf(tb);
}

LogicalResult expectNoEncoding(Operation *op, StringRef name, Type type) {
  if (!llvm::cast<RankedTensorType>(type).getEncoding())
    return success();
  return op->emitOpError() << name << " must not carry an encoding, got "
                           << type;
}

/// Checks that `type` carries `#mmrec.logspace<min, max>` with these bounds.
LogicalResult expectLogSpace(Operation *op, StringRef name, Type type,
                             double min, double max) {
  LogSpaceAttr enc = getLogSpaceEncoding(type);
  if (!enc)
    return op->emitOpError() << name
                             << " must carry a #mmrec.logspace encoding, got "
                             << type;
  if (enc.getMinValue() != min || enc.getMaxValue() != max)
    return op->emitOpError() << name << " encoding bounds ["
                             << formatShortestDouble(enc.getMinValue()) << ", "
                             << formatShortestDouble(enc.getMaxValue())
                             << "] must equal the clamp bounds [" << formatShortestDouble(min)
                             << ", " << formatShortestDouble(max) << "]";
  return success();
}

LogicalResult expectClampBounds(Operation *op, double min, double max) {
  if (min < max && max <= 0.0)
    return success();
  return op->emitOpError() << "clamp bounds must satisfy clamp_min < clamp_max <= 0, got ["
                           << formatShortestDouble(min) << ", " << formatShortestDouble(max)
                           << "]";
}

/// ⌈T / C⌉, dynamic when T is (no overflow for T near INT64_MAX).
int64_t numChunks(int64_t t, int64_t chunk) {
  return isDyn(t) ? ShapedType::kDynamic : t / chunk + (t % chunk != 0);
}

/// a × b of two dimensions, dynamic when either is; an error naming `what`
/// when the product does not fit int64 (no tensor can have it).
FailureOr<int64_t> dimProduct(Operation *op, StringRef what, int64_t a, int64_t b) {
  if (isDyn(a) || isDyn(b))
    return ShapedType::kDynamic;
  int64_t p;
  if (llvm::MulOverflow(a, b, p))
    return op->emitOpError() << what << " (" << a << " x " << b << ") overflows int64";
  return p;
}

/// Checks that all of `types` have exactly `shape` (up to dynamic dims).
LogicalResult expectShape(Operation *op, StringRef name, Type type,
                          ArrayRef<int64_t> shape, StringRef what) {
  auto t = llvm::cast<RankedTensorType>(type);
  if (t.getRank() != static_cast<int64_t>(shape.size()))
    return op->emitOpError() << name << " must have rank " << shape.size()
                             << " (" << what << "), got " << type;
  for (auto [i, d] : llvm::enumerate(shape))
    if (!compatible(t.getDimSize(i), d))
      return op->emitOpError() << name << " dimension " << i << " ("
                               << t.getDimSize(i) << ") must be " << dimStr(d)
                               << " (" << what << ")";
  return success();
}

} // namespace

//===----------------------------------------------------------------------===//
// Normalization and the decay gate
//===----------------------------------------------------------------------===//

LogicalResult RMSNormOp::verify() {
  Type in = getInput().getType(), w = getWeight().getType();
  if (ranked(getInput()).getRank() < 1)
    return emitOpError() << "input must have rank >= 1";
  if (failed(expectRank(*this, "weight", w, 1)) ||
      failed(expectDim(*this, "weight", w, 0,
                       ranked(getInput()).getShape().back(),
                       "the input's last dimension")) ||
      failed(expectSameElementType(*this, "input", in, "weight", w)))
    return failure();
  if (!(getEps().convertToDouble() > 0.0))
    return emitOpError() << "eps must be positive, got " << formatShortestDouble(getEps().convertToDouble());
  return success();
}

LogicalResult GroupRMSNormOp::verify() {
  auto t = ranked(getInput());
  if (t.getRank() < 1)
    return emitOpError() << "input must have rank >= 1";
  int64_t d = t.getShape().back();
  if (!isDyn(d) && d % getGroups() != 0)
    return emitOpError() << "groups (" << getGroups()
                         << ") must divide the last dimension (" << d << ")";
  if (!(getEps().convertToDouble() > 0.0))
    return emitOpError() << "eps must be positive, got " << formatShortestDouble(getEps().convertToDouble());
  return success();
}

LogicalResult LogDecayOp::verify() {
  double lo = getClampMin().convertToDouble(), hi = getClampMax().convertToDouble();
  if (failed(expectClampBounds(*this, lo, hi)) ||
      failed(expectNoEncoding(*this, "input", getInput().getType())) ||
      failed(expectLogSpace(*this, "result", getResult().getType(), lo, hi)))
    return failure();
  auto in = ranked(getInput()), out = ranked(getResult());
  if (in.getElementType() != out.getElementType() ||
      failed(verifyCompatibleShape(in.getShape(), out.getShape())))
    return emitOpError() << "result must have the input's shape and element type, got "
                         << out << " for input " << in;
  return success();
}

LogicalResult ExpDecayOp::verify() {
  if (!getLogSpaceEncoding(getInput().getType()))
    return emitOpError() << "input must carry a #mmrec.logspace encoding, got "
                         << getInput().getType();
  if (failed(expectNoEncoding(*this, "result", getResult().getType())))
    return failure();
  auto in = ranked(getInput()), out = ranked(getResult());
  if (in.getElementType() != out.getElementType() ||
      failed(verifyCompatibleShape(in.getShape(), out.getShape())))
    return emitOpError() << "result must have the input's shape and element type, got "
                         << out << " for input " << in;
  return success();
}

//===----------------------------------------------------------------------===//
// Products, embedding, loss
//===----------------------------------------------------------------------===//

static LogicalResult verifyBias(Operation *op, Value bias, Type result,
                                int64_t n) {
  if (!bias)
    return success();
  if (failed(expectRank(op, "bias", bias.getType(), 1)) ||
      failed(expectDim(op, "bias", bias.getType(), 0, n,
                       "the result's last dimension")) ||
      failed(expectSameElementType(op, "bias", bias.getType(), "result", result)))
    return failure();
  return success();
}

LogicalResult MatmulOp::verify() {
  auto lhs = ranked(getLhs()), rhs = ranked(getRhs()), res = ranked(getResult());
  if (lhs.getRank() < 1)
    return emitOpError() << "lhs must have rank >= 1";
  if (failed(expectRank(*this, "rhs", rhs, 2)) ||
      failed(expectSameElementType(*this, "lhs", lhs, "rhs", rhs)))
    return failure();
  int64_t k = lhs.getShape().back();
  int64_t rk = getTransposeRhs() ? rhs.getDimSize(1) : rhs.getDimSize(0);
  int64_t n = getTransposeRhs() ? rhs.getDimSize(0) : rhs.getDimSize(1);
  if (!compatible(k, rk))
    return emitOpError() << "contraction mismatch: lhs has " << dimStr(k)
                         << " columns but rhs has " << dimStr(rk)
                         << (getTransposeRhs() ? " columns (transpose_rhs)"
                                               : " rows");
  SmallVector<int64_t> expected(lhs.getShape());
  expected.back() = n;
  if (failed(expectShape(*this, "result", res, expected,
                         "lhs's batch dimensions, then rhs's output dimension")))
    return failure();
  return verifyBias(*this, getBias(), res, n);
}

LogicalResult BlockDiagMatmulOp::verify() {
  auto lhs = ranked(getLhs()), rhs = ranked(getRhs()), res = ranked(getResult());
  if (lhs.getRank() < 1)
    return emitOpError() << "lhs must have rank >= 1";
  if (failed(expectRank(*this, "rhs", rhs, 3)) ||
      failed(expectSameElementType(*this, "lhs", lhs, "rhs", rhs)))
    return failure();
  if (!compatible(rhs.getDimSize(1), rhs.getDimSize(2)))
    return emitOpError() << "rhs blocks must be square, got "
                         << rhs.getDimSize(1) << "x" << rhs.getDimSize(2);
  int64_t h = rhs.getDimSize(0), dh = rhs.getDimSize(1);
  FailureOr<int64_t> hd = dimProduct(*this, "heads x head_dim", h, dh);
  if (failed(hd))
    return failure();
  int64_t d = *hd;
  if (!compatible(lhs.getShape().back(), d))
    return emitOpError() << "lhs's last dimension (" << dimStr(lhs.getShape().back())
                         << ") must equal heads x head_dim (" << dimStr(d) << ")";
  if (failed(expectShape(*this, "result", res, lhs.getShape(), "the lhs shape")))
    return failure();
  return verifyBias(*this, getBias(), res, d);
}

LogicalResult EmbeddingOp::verify() {
  auto table = ranked(getTable()), ids = ranked(getIds());
  if (failed(expectRank(*this, "table", table, 2)) ||
      failed(expectSameElementType(*this, "table", table, "result",
                                   getResult().getType())))
    return failure();
  SmallVector<int64_t> expected(ids.getShape());
  expected.push_back(table.getDimSize(1));
  return expectShape(*this, "result", getResult().getType(), expected,
                     "the ids' shape, then the table's row size");
}

LogicalResult CrossEntropyOp::verify() {
  auto logits = ranked(getLogits());
  if (logits.getRank() < 2)
    return emitOpError() << "logits must have rank >= 2 (..., vocab), got " << logits;
  return expectShape(*this, "targets", getTargets().getType(),
                     logits.getShape().drop_back(),
                     "the logits' shape without the vocabulary axis");
}

//===----------------------------------------------------------------------===//
// Recurrences
//===----------------------------------------------------------------------===//

/// The shape of a per-step slice: `shape` without axis 1.
static SmallVector<int64_t> dropSeqAxis(ArrayRef<int64_t> shape) {
  SmallVector<int64_t> s(shape);
  s.erase(s.begin() + 1);
  return s;
}

YieldOp RecurrenceOp::getYield() {
  return llvm::cast<YieldOp>(getBody().front().getTerminator());
}

LogicalResult RecurrenceOp::verify() {
  if (getInputs().empty())
    return emitOpError() << "needs at least one input sequence (it fixes T)";
  if (getInits().empty())
    return emitOpError() << "needs at least one carried state";
  int64_t batch = ShapedType::kDynamic, steps = ShapedType::kDynamic;
  for (auto [i, v] : llvm::enumerate(getInputs())) {
    auto t = ranked(v);
    if (t.getRank() < 2)
      return emitOpError() << "input #" << i
                           << " must have rank >= 2 (batch, sequence, ...), got " << t;
    if (!compatible(t.getDimSize(0), batch) || !compatible(t.getDimSize(1), steps))
      return emitOpError() << "input #" << i << " (" << t
                           << ") disagrees with the other inputs on the batch or sequence size";
    if (isDyn(batch)) batch = t.getDimSize(0);
    if (isDyn(steps)) steps = t.getDimSize(1);
  }
  if (getSequences().size() != getInits().size() ||
      getFinals().size() != getInits().size())
    return emitOpError() << "must have one sequence result and one final result per "
                            "carried state (" << getInits().size() << "), got "
                         << getSequences().size() << " and " << getFinals().size();
  for (auto [i, v] : llvm::enumerate(getInits())) {
    auto t = ranked(v);
    if (t.getRank() < 1 || !compatible(t.getDimSize(0), batch))
      return emitOpError() << "init #" << i << " (" << t
                           << ") must have the inputs' batch size as dimension 0";
    SmallVector<int64_t> seq(t.getShape());
    seq.insert(seq.begin() + 1, steps);
    std::string name = "sequence result #" + std::to_string(i);
    if (failed(expectShape(*this, name, getSequences()[i].getType(), seq,
                           "the state's shape with the sequence axis inserted at 1")) ||
        failed(expectSameElementType(*this, name, getSequences()[i].getType(),
                                     "its init", t)))
      return failure();
    if (getFinals()[i].getType() != t)
      return emitOpError() << "final result #" << i << " must have its init's type "
                           << t << ", got " << getFinals()[i].getType();
  }
  return success();
}

LogicalResult RecurrenceOp::verifyRegions() {
  Block &body = getBody().front();
  size_t nIn = getInputs().size(), nState = getInits().size();
  if (body.getNumArguments() != nIn + nState)
    return emitOpError() << "body must have " << nIn + nState
                         << " arguments (one step slice per input, then the "
                         << nState << " carried states), got " << body.getNumArguments();
  for (size_t i = 0; i < nIn; ++i) {
    auto t = ranked(getInputs()[i]);
    auto expected = RankedTensorType::get(dropSeqAxis(t.getShape()),
                                          t.getElementType(), t.getEncoding());
    Type got = body.getArgument(i).getType();
    auto gotT = llvm::dyn_cast<RankedTensorType>(got);
    if (!gotT || gotT.getElementType() != expected.getElementType() ||
        gotT.getEncoding() != expected.getEncoding() ||
        failed(verifyCompatibleShape(gotT.getShape(), expected.getShape())))
      return emitOpError() << "body argument #" << i << " must be the step slice "
                           << expected << " of input #" << i << ", got " << got;
  }
  for (size_t i = 0; i < nState; ++i) {
    Type got = body.getArgument(nIn + i).getType();
    if (got != getInits()[i].getType())
      return emitOpError() << "body argument #" << nIn + i << " (carried state #" << i
                           << ") must have its init's type "
                           << getInits()[i].getType() << ", got " << got;
  }
  YieldOp yield = getYield();
  if (yield.getValues().size() != nState)
    return yield.emitOpError() << "must yield " << nState
                               << " next state(s), got " << yield.getValues().size();
  for (size_t i = 0; i < nState; ++i)
    if (yield.getValues()[i].getType() != getInits()[i].getType())
      return yield.emitOpError() << "next state #" << i << " must have type "
                                 << getInits()[i].getType() << ", got "
                                 << yield.getValues()[i].getType();
  return success();
}

LogicalResult ScanOp::verify() {
  double lo = getClampMin().convertToDouble(), hi = getClampMax().convertToDouble();
  if (failed(expectClampBounds(*this, lo, hi)))
    return failure();
  auto la = ranked(getLogDecay()), b = ranked(getB());
  if (getGateLogits() && getLogSpaceEncoding(la))
    return emitOpError() << "with gate_logits the first operand holds logits, not a "
                            "#mmrec.logspace tensor";
  if (getLogSpaceEncoding(la) &&
      failed(expectLogSpace(*this, "log_decay", la, lo, hi)))
    return failure();
  if (la.getRank() < 2)
    return emitOpError() << "log_decay must have rank >= 2 (batch, sequence, ...), got "
                         << la;
  if (b.getRank() < la.getRank())
    return emitOpError() << "b (rank " << b.getRank()
                         << ") must have at least the rank of log_decay (rank "
                         << la.getRank() << ")";
  for (int64_t i = 0; i < la.getRank(); ++i)
    if (!compatible(la.getDimSize(i), b.getDimSize(i)))
      return emitOpError() << "log_decay dimension " << i << " ("
                           << la.getDimSize(i) << ") must equal b's (" << b.getDimSize(i)
                           << "): the decay broadcasts only over b's trailing axes";
  if (failed(expectNoEncoding(*this, "b", b)))
    return failure();
  if (getH().getType() != b)
    return emitOpError() << "h must have b's type " << b << ", got " << getH().getType();
  auto finalType = RankedTensorType::get(dropSeqAxis(b.getShape()), b.getElementType());
  if (getFinal().getType() != finalType)
    return emitOpError() << "final must be " << finalType
                         << " (b's type without the sequence axis), got "
                         << getFinal().getType();
  if (getInit() && getInit().getType() != finalType)
    return emitOpError() << "init must be " << finalType
                         << " (b's type without the sequence axis), got "
                         << getInit().getType();
  return success();
}

LogicalResult ScanGradOp::verify() {
  double lo = getClampMin().convertToDouble(), hi = getClampMax().convertToDouble();
  if (failed(expectClampBounds(*this, lo, hi)))
    return failure();
  auto la = ranked(getLogDecay()), h = ranked(getH());
  if (la.getRank() < 2)
    return emitOpError() << "log_decay must have rank >= 2 (batch, sequence, ...), got " << la;
  if (failed(verifyCompatibleShape(la.getShape(), h.getShape())))
    return emitOpError() << "log_decay " << la << " and h " << h
                         << " must have the same shape (broadcast decays have no adjoint kernel yet)";
  if (getGradH().getType() != h || getGradB().getType() != h)
    return emitOpError() << "grad_h and grad_b must have h's type " << h;
  if (getGradLogDecay().getType() != RankedTensorType::get(la.getShape(), la.getElementType()))
    return emitOpError() << "grad_log_decay must be log_decay's shape and element type "
                            "without an encoding, got " << getGradLogDecay().getType();
  auto finalType = RankedTensorType::get(dropSeqAxis(h.getShape()), h.getElementType());
  if (getGradFinal().getType() != finalType)
    return emitOpError() << "grad_final must be " << finalType << ", got "
                         << getGradFinal().getType();
  if (bool(getInit()) != bool(getGradInit()))
    return emitOpError() << "has a grad_init result exactly when it has an init operand";
  if (getInit() && (getInit().getType() != finalType || getGradInit().getType() != finalType))
    return emitOpError() << "init and grad_init must be " << finalType;
  return success();
}

namespace {

/// The operands that mmrec.gated_recurrence and its adjoint share.
LogicalResult verifyGatedOperands(Operation *op, Value z, Value logDecay, Value gate,
                                  Value bias, Value init, double lo, double hi) {
  if (failed(expectClampBounds(op, lo, hi)))
    return failure();
  auto zt = ranked(z), lt = ranked(logDecay), wt = ranked(gate);
  if (failed(expectRank(op, "z", zt, 3)) || failed(expectNoEncoding(op, "z", zt)))
    return failure();
  if (getLogSpaceEncoding(lt) && failed(expectLogSpace(op, "log_decay", lt, lo, hi)))
    return failure();
  if (failed(expectShape(op, "log_decay", lt, zt.getShape(), "z's shape (batch, T, D)")))
    return failure();
  int64_t d = zt.getDimSize(2);
  if (wt.getRank() == 2) {
    if (failed(expectShape(op, "gate", wt, {d, d}, "D x D for the dense gate")))
      return failure();
  } else if (wt.getRank() == 3) {
    int64_t h = wt.getDimSize(0), dh = wt.getDimSize(1);
    if (!compatible(wt.getDimSize(2), dh))
      return op->emitOpError() << "gate blocks must be square (H, dh, dh), got " << wt;
    FailureOr<int64_t> hd = dimProduct(op, "gate blocks x block size", h, dh);
    if (failed(hd))
      return failure();
    if (!isDyn(*hd) && !isDyn(d) && *hd != d)
      return op->emitOpError() << "gate has " << h << " blocks of " << dh
                               << " channels, which must cover z's " << d << " channels";
  } else {
    return op->emitOpError() << "gate must be (D, D) for the dense gate or (H, dh, dh) for "
                                "the per-head gate, got "
                             << wt;
  }
  if (failed(expectSameElementType(op, "z", zt, "gate", wt)) ||
      failed(expectShape(op, "bias", bias.getType(), {d}, "D")) ||
      failed(expectSameElementType(op, "z", zt, "bias", bias.getType())))
    return failure();
  if (init && (failed(expectShape(op, "init", init.getType(), {zt.getDimSize(0), d},
                                  "batch, D")) ||
               failed(expectSameElementType(op, "z", zt, "init", init.getType()))))
    return failure();
  return success();
}

RankedTensorType stateTypeOf(RankedTensorType seq) {
  return RankedTensorType::get({seq.getDimSize(0), seq.getDimSize(2)}, seq.getElementType());
}

} // namespace

LogicalResult GatedRecurrenceOp::verify() {
  if (failed(verifyGatedOperands(*this, getZ(), getLogDecay(), getGate(), getBias(), getInit(),
                                 getClampMin().convertToDouble(),
                                 getClampMax().convertToDouble())))
    return failure();
  auto z = ranked(getZ());
  if (getH().getType() != z)
    return emitOpError() << "h must have z's type " << z << ", got " << getH().getType();
  if (getFinal().getType() != stateTypeOf(z))
    return emitOpError() << "final must be " << stateTypeOf(z) << " (batch, D), got "
                         << getFinal().getType();
  return success();
}

LogicalResult GatedRecurrenceGradOp::verify() {
  if (failed(verifyGatedOperands(*this, getZ(), getLogDecay(), getGate(), getBias(), getInit(),
                                 getClampMin().convertToDouble(),
                                 getClampMax().convertToDouble())))
    return failure();
  auto z = ranked(getZ());
  if (getH().getType() != z || getGradH().getType() != z || getGradZ().getType() != z)
    return emitOpError() << "h, grad_h and grad_z must have z's type " << z;
  if (getGradFinal().getType() != stateTypeOf(z))
    return emitOpError() << "grad_final must be " << stateTypeOf(z) << " (batch, D), got "
                         << getGradFinal().getType();
  auto lt = ranked(getLogDecay());
  if (getGradLogDecay().getType() != RankedTensorType::get(lt.getShape(), lt.getElementType()))
    return emitOpError() << "grad_log_decay must be log_decay's shape and element type "
                            "without an encoding, got "
                         << getGradLogDecay().getType();
  if (getGradGate().getType() != getGate().getType() ||
      getGradBias().getType() != getBias().getType())
    return emitOpError() << "grad_gate and grad_bias must have the types of gate and bias";
  if (bool(getInit()) != bool(getGradInit()))
    return emitOpError() << "has a grad_init result exactly when it has an init operand";
  if (getInit() && getGradInit().getType() != getInit().getType())
    return emitOpError() << "grad_init must have init's type " << getInit().getType();
  return success();
}

//===----------------------------------------------------------------------===//
// Memory hierarchy
//===----------------------------------------------------------------------===//

LogicalResult ChunkMeanOp::verify() {
  auto in = ranked(getInput());
  if (failed(expectRank(*this, "input", in, 3)) ||
      failed(expectSameElementType(*this, "input", in, "result",
                                   getResult().getType())))
    return failure();
  return expectShape(*this, "result", getResult().getType(),
                     {in.getDimSize(0), numChunks(in.getDimSize(1), getChunk()),
                      in.getDimSize(2)},
                     "batch, ceil(T / chunk), channels");
}

LogicalResult ChunkAttendOp::verify() {
  auto q = ranked(getQ());
  if (failed(expectRank(*this, "q", q, 3)))
    return failure();
  int64_t b = q.getDimSize(0), t = q.getDimSize(1), d = q.getDimSize(2);
  if (!isDyn(d) && d % getGroups() != 0)
    return emitOpError() << "groups (" << getGroups()
                         << ") must divide the channel dimension (" << d << ")";
  SmallVector<int64_t> chunks{b, numChunks(t, getChunk()), d};
  if (failed(expectShape(*this, "keys", getKeys().getType(), chunks,
                         "batch, ceil(T / chunk), channels")) ||
      failed(expectShape(*this, "values", getValues().getType(), chunks,
                         "batch, ceil(T / chunk), channels")))
    return failure();
  if (getResult().getType() != q)
    return emitOpError() << "result must have q's type " << q << ", got "
                         << getResult().getType();
  return success();
}

/// Checks slots (N_m, M, d_m) against activations with D channels; returns
/// N_m, M, d_m.
static LogicalResult verifySlots(Operation *op, Type slotsType, int64_t d,
                                 int64_t &nm, int64_t &m, int64_t &dm) {
  if (failed(expectRank(op, "slots", slotsType, 3)))
    return failure();
  auto s = llvm::cast<RankedTensorType>(slotsType);
  nm = s.getDimSize(0), m = s.getDimSize(1), dm = s.getDimSize(2);
  FailureOr<int64_t> nmdm = dimProduct(op, "slots num_memories x mem_dim", nm, dm);
  if (failed(nmdm))
    return failure();
  int64_t prod = *nmdm;
  if (!compatible(prod, d))
    return op->emitOpError() << "slots (" << s << ") must split the " << dimStr(d)
                             << " channels into num_memories x mem_dim, got "
                             << dimStr(nm) << " x " << dimStr(dm);
  return success();
}

LogicalResult MDIWriteOp::verify() {
  auto k = ranked(getK());
  if (failed(expectRank(*this, "k", k, 3)))
    return failure();
  if (getV().getType() != k)
    return emitOpError() << "v must have k's type " << k << ", got " << getV().getType();
  int64_t b = k.getDimSize(0), t = k.getDimSize(1), nm, m, dm;
  if (failed(verifySlots(*this, getSlots().getType(), k.getDimSize(2), nm, m, dm)) ||
      failed(expectShape(*this, "decay_logits", getDecayLogits().getType(), {nm, m},
                         "num_memories, memory_size")))
    return failure();
  double lo = getClampMin().convertToDouble();
  if (failed(expectClampBounds(*this, lo, 0.0)) ||
      failed(expectLogSpace(*this, "log_beta", getLogBeta().getType(), lo, 0.0)))
    return failure();
  int64_t nc = numChunks(t, getChunk());
  if (failed(expectShape(*this, "log_beta", getLogBeta().getType(), {b, nc, nm, m},
                         "batch, chunks, num_memories, memory_size")) ||
      failed(expectShape(*this, "update", getUpdate().getType(), {b, nc, nm, m, dm},
                         "batch, chunks, num_memories, memory_size, mem_dim")))
    return failure();
  return success();
}

LogicalResult MDIReadOp::verify() {
  auto q = ranked(getQ());
  if (failed(expectRank(*this, "q", q, 3)))
    return failure();
  int64_t b = q.getDimSize(0), t = q.getDimSize(1), nm, m, dm;
  if (failed(verifySlots(*this, getSlots().getType(), q.getDimSize(2), nm, m, dm)) ||
      failed(expectShape(*this, "memory", getMemory().getType(),
                         {b, numChunks(t, getChunk()), nm, m, dm},
                         "batch, chunks, num_memories, memory_size, mem_dim")) ||
      failed(expectShape(*this, "init", getInit().getType(), {b, nm, m, dm},
                         "batch, num_memories, memory_size, mem_dim")))
    return failure();
  if (getResult().getType() != q)
    return emitOpError() << "result must have q's type " << q << ", got "
                         << getResult().getType();
  return success();
}

LogicalResult HDSCombineOp::verify() {
  Type l0 = getLevel0().getType();
  if (getLevel1().getType() != l0 || getLevel2().getType() != l0 ||
      getResult().getType() != l0)
    return emitOpError() << "level0, level1, level2 and the result must have the same type, got "
                         << l0 << ", " << getLevel1().getType() << ", "
                         << getLevel2().getType() << " -> " << getResult().getType();
  auto rho = ranked(getRho());
  if (failed(expectRank(*this, "rho", rho, 2)) ||
      failed(expectDim(*this, "rho", rho, 1, 3, "the number of HDS levels")))
    return failure();
  int64_t d = ranked(getLevel0()).getShape().back(), nm = rho.getDimSize(0);
  if (!isDyn(d) && !isDyn(nm) && d % nm != 0)
    return emitOpError() << "rho's " << nm << " groups must divide the " << d
                         << " channels";
  return success();
}

#define GET_OP_CLASSES
#include "dialect/MMRecOps.cpp.inc"
