//===- MMRecDialect.cpp - mmrec dialect, attributes ---------------------===//
//
// Dialect registration, the `#mmrec.logspace` tensor encoding and the
// `#mmrec.config` model configuration with its parameter-count formula.
//
//===----------------------------------------------------------------------===//

#include "dialect/MMRecDialect.h"
#include "dialect/MMRecAttrs.h"
#include "dialect/MMRecOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

using namespace mlir;
using namespace mlir::mmrec;

#include "dialect/MMRecDialect.cpp.inc"
#include "dialect/MMRecEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "dialect/MMRecAttrs.cpp.inc"

void MMRecDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialect/MMRecOps.cpp.inc"
      >();
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialect/MMRecAttrs.cpp.inc"
      >();
}

std::string mlir::mmrec::formatShortestDouble(double v) {
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof(buf), "%.1f", v);
    return buf;
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v)
      break;
  }
  std::string s(buf);
  if (s.find_first_of(".ein") == std::string::npos)
    s += ".0";
  else if (s.find('.') == std::string::npos && s.find('e') != std::string::npos)
    s.insert(s.find('e'), ".0");
  return s;
}

LogSpaceAttr mlir::mmrec::getLogSpaceEncoding(Type type) {
  auto ranked = llvm::dyn_cast<RankedTensorType>(type);
  if (!ranked)
    return {};
  return llvm::dyn_cast_or_null<LogSpaceAttr>(ranked.getEncoding());
}

//===----------------------------------------------------------------------===//
// LogSpaceAttr
//===----------------------------------------------------------------------===//

LogicalResult LogSpaceAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                   APFloat min, APFloat max) {
  double lo = min.convertToDouble(), hi = max.convertToDouble();
  if (!(lo < hi))
    return emitError() << "#mmrec.logspace: min (" << formatShortestDouble(lo)
                       << ") must be less than max (" << formatShortestDouble(hi) << ")";
  if (hi > 0.0)
    return emitError() << "#mmrec.logspace: max (" << formatShortestDouble(hi)
                       << ") must be <= 0 (a decay is at most 1)";
  return success();
}

LogicalResult LogSpaceAttr::verifyEncoding(
    ArrayRef<int64_t> shape, Type elementType,
    function_ref<InFlightDiagnostic()> emitError) const {
  // The parser calls this even when the element type failed to parse (its
  // error is already reported): never dereference a null type.
  if (!elementType)
    return emitError() << "#mmrec.logspace needs a valid element type (f32 or f64)";
  if (!elementType.isF32() && !elementType.isF64())
    return emitError() << "#mmrec.logspace encodes log-space decays, which "
                          "must be f32 or f64, not "
                       << elementType;
  return success();
}

//===----------------------------------------------------------------------===//
// ConfigAttr
//===----------------------------------------------------------------------===//

LogicalResult ConfigAttr::verify(
    function_ref<InFlightDiagnostic()> emitError, StringRef name,
    int64_t vocab, int64_t hidden, int64_t layers, int64_t heads,
    int64_t memories, int64_t memorySize, int64_t ffn, int64_t chunk,
    int64_t maxSeqLen, int64_t decayRank, GateKind gate, APFloat decayInit,
    APFloat clampMin, APFloat clampMax, APFloat eps, bool tie) {
  auto positive = [&](StringRef field, int64_t v) -> LogicalResult {
    if (v > 0)
      return success();
    return emitError() << "#mmrec.config: field '" << field
                       << "' must be positive, got " << v;
  };
  if (failed(positive("vocab_size", vocab)) ||
      failed(positive("hidden_dim", hidden)) ||
      failed(positive("num_layers", layers)) ||
      failed(positive("num_heads", heads)) ||
      failed(positive("num_memories", memories)) ||
      failed(positive("memory_size", memorySize)) ||
      failed(positive("ffn_dim", ffn)) ||
      failed(positive("chunk_size", chunk)) ||
      failed(positive("max_seq_len", maxSeqLen)) ||
      failed(positive("decay_rank", decayRank)))
    return failure();
  if (hidden % heads != 0)
    return emitError() << "#mmrec.config: field 'num_heads' (" << heads
                       << ") must divide hidden_dim (" << hidden << ")";
  if (hidden % memories != 0)
    return emitError() << "#mmrec.config: field 'num_memories' (" << memories
                       << ") must divide hidden_dim (" << hidden << ")";
  double d = decayInit.convertToDouble();
  if (!(d > 0.0 && d < 1.0))
    return emitError() << "#mmrec.config: field 'decay_init' must be in (0, 1), got "
                       << formatShortestDouble(d);
  double lo = clampMin.convertToDouble(), hi = clampMax.convertToDouble();
  if (!(lo < hi) || hi > 0.0)
    return emitError() << "#mmrec.config: fields 'log_clamp_min' (" << formatShortestDouble(lo)
                       << ") and 'log_clamp_max' (" << formatShortestDouble(hi)
                       << ") must satisfy min < max <= 0";
  if (!(eps.convertToDouble() > 0.0))
    return emitError() << "#mmrec.config: field 'norm_eps' must be positive";
  // Absurd sizes are refused before anything is sized from them (as the
  // trainer's manifest reader does): with at most 10^13 parameters the
  // int64 arithmetic of getParamCount() and of the passes cannot overflow.
  long double D = hidden, F = ffn, r = decayRank, M = memorySize, Nm = memories;
  long double params = (long double)layers * (6 * D * D + 2 * D * r + 4 * D + M * D +
                                              Nm * M + 3 * Nm + 3 * D * F) +
                       (long double)vocab * D + D;
  if (params > 1e13L) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.3Lg", params);
    return emitError() << "#mmrec.config: the sizes imply about " << buf
                       << " parameters; at most 10^13 are accepted";
  }
  if (!tie)
    return emitError() << "#mmrec.config: field 'tie_embeddings' must be true "
                          "(MMREC_SPEC ties the LM head to the embedding)";
  return success();
}

int64_t ConfigAttr::getLayerParamCount() const {
  int64_t D = getHiddenDim(), r = getDecayRank(), F = getFfnDim();
  int64_t gate = getGate() == GateKind::dense ? D * D : D * D / getNumHeads();
  return 4 * D * D + D * D + gate + D + 2 * D * r + D +
         getMemorySize() * D + getNumMemories() * getMemorySize() +
         3 * getNumMemories() + 3 * D * F + 2 * D;
}

int64_t ConfigAttr::getParamCount() const {
  return getNumLayers() * getLayerParamCount() +
         getVocabSize() * getHiddenDim() + getHiddenDim();
}

//===----------------------------------------------------------------------===//
// Dialect attribute verification
//===----------------------------------------------------------------------===//

LogicalResult MMRecDialect::verifyOperationAttribute(Operation *op,
                                                     NamedAttribute attr) {
  if (attr.getName() == getConfigAttrName()) {
    if (!llvm::isa<ModuleOp>(op))
      return op->emitError() << "'" << getConfigAttrName()
                             << "' may only be attached to a builtin.module";
    if (!llvm::isa<ConfigAttr>(attr.getValue()))
      return op->emitError() << "'" << getConfigAttrName()
                             << "' must be a #mmrec.config attribute";
    return success();
  }
  if (attr.getName() == "mmrec.kernels" || attr.getName() == "mmrec.train_kernels") {
    if (!llvm::isa<ModuleOp>(op) || !llvm::isa<ArrayAttr>(attr.getValue()))
      return op->emitError() << "'" << attr.getName().getValue()
                             << "' must be an array on a builtin.module";
    return success();
  }
  // Which level-0 kernels a GPU training library has (mmrec-build-train-kernels).
  if (attr.getName() == "mmrec.train_gated_kernels") {
    if (!llvm::isa<ModuleOp>(op) || !llvm::isa<StringAttr>(attr.getValue()))
      return op->emitError() << "'mmrec.train_gated_kernels' must be a string on a builtin.module";
    return success();
  }
  if (attr.getName() == "mmrec.kernel") {
    if (!llvm::isa<ScanOp, ScanGradOp, GatedRecurrenceOp, GatedRecurrenceGradOp>(op) || !llvm::isa<StringAttr>(attr.getValue()))
      return op->emitError() << "'mmrec.kernel' must be a string on a mmrec.scan, mmrec.scan_grad, mmrec.gated_recurrence or mmrec.gated_recurrence_grad";
    return success();
  }
  return op->emitError() << "unknown mmrec attribute '" << attr.getName().getValue()
                         << "' on an operation";
}

LogicalResult MMRecDialect::verifyRegionArgAttribute(Operation *op,
                                                     unsigned regionIndex,
                                                     unsigned argIndex,
                                                     NamedAttribute attr) {
  if (attr.getName() == getParamAttrName()) {
    auto name = llvm::dyn_cast<StringAttr>(attr.getValue());
    if (!name || name.getValue().empty())
      return op->emitError() << "argument #" << argIndex << ": '"
                             << getParamAttrName()
                             << "' must be a non-empty string naming the parameter";
    return success();
  }
  return op->emitError() << "argument #" << argIndex
                         << ": unknown mmrec argument attribute '"
                         << attr.getName().getValue() << "'";
}
