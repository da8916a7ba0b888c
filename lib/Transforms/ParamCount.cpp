//===- ParamCount.cpp - check and count a model's parameters ------------===//
//
// Every function argument named by `mmrec.param` is checked against the
// shape MMREC_SPEC gives that parameter under the module's `mmrec.config`.
// The model function holds the whole model (`embed`, `final_norm`, and each
// per-layer tensor stacked along a leading L axis as `layers.<name>`); any
// other function holding parameters is a layer function (`<name>`, no L
// axis). The model's total is checked against the formula of MMREC_SPEC
// section 6 and printed.
//
//===----------------------------------------------------------------------===//

#include "dialect/MMRecAttrs.h"
#include "dialect/MMRecDialect.h"
#include "dialect/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/raw_ostream.h"

namespace mlir::mmrec {
#define GEN_PASS_DEF_MMRECPARAMCOUNT
#include "dialect/Passes.h.inc"
} // namespace mlir::mmrec

using namespace mlir;
using namespace mlir::mmrec;

namespace {

/// The shape of every per-layer parameter under `cfg` (MMREC_SPEC section 2).
llvm::StringMap<SmallVector<int64_t>> layerParamShapes(ConfigAttr cfg) {
  int64_t D = cfg.getHiddenDim(), r = cfg.getDecayRank(), F = cfg.getFfnDim();
  int64_t Nm = cfg.getNumMemories(), M = cfg.getMemorySize(), dm = cfg.getMemDim();
  int64_t H = cfg.getNumHeads(), dh = cfg.getHeadDim();
  llvm::StringMap<SmallVector<int64_t>> s;
  s["w_in"] = {D};
  s["W_q"] = {D, D};
  s["W_k"] = {D, D};
  s["W_v"] = {D, D};
  s["W_z"] = {D, D};
  s["A_gamma"] = {D, r};
  s["B_gamma"] = {r, D};
  s["lambda"] = {D};
  if (cfg.getGate() == GateKind::dense)
    s["W_g"] = {D, D};
  else
    s["W_g"] = {H, dh, dh};
  s["b_g"] = {D};
  s["S"] = {Nm, M, dm};
  s["mu"] = {Nm, M};
  s["rho"] = {Nm, 3};
  s["W_o"] = {D, D};
  s["w_ffn"] = {D};
  s["W_1"] = {D, F};
  s["W_3"] = {D, F};
  s["W_2"] = {F, D};
  return s;
}

std::string shapeStr(ArrayRef<int64_t> shape) {
  std::string s;
  llvm::raw_string_ostream os(s);
  llvm::interleave(shape, os, "x");
  return s;
}

struct ParamCountPass : mlir::mmrec::impl::MMRecParamCountBase<ParamCountPass> {
  using Base::Base;

  /// Checks the parameters of `func` against `expected`; returns the number
  /// of elements, or failure.
  FailureOr<int64_t> checkFunc(func::FuncOp func,
                               const llvm::StringMap<SmallVector<int64_t>> &expected) {
    llvm::StringMap<bool> seen;
    int64_t total = 0;
    for (unsigned i = 0, e = func.getNumArguments(); i < e; ++i) {
      auto name = func.getArgAttrOfType<StringAttr>(i, MMRecDialect::getParamAttrName());
      if (!name)
        continue;
      auto it = expected.find(name.getValue());
      if (it == expected.end()) {
        func.emitError() << "argument #" << i << ": unknown parameter '"
                         << name.getValue() << "'";
        return failure();
      }
      if (!seen.try_emplace(name.getValue(), true).second) {
        func.emitError() << "argument #" << i << ": parameter '" << name.getValue()
                         << "' appears twice";
        return failure();
      }
      auto type = llvm::dyn_cast<RankedTensorType>(func.getArgumentTypes()[i]);
      if (!type || !type.hasStaticShape() || type.getShape() != ArrayRef(it->second)) {
        func.emitError() << "argument #" << i << ": parameter '" << name.getValue()
                         << "' must be a tensor of shape " << shapeStr(it->second)
                         << " under the module's mmrec.config, got "
                         << func.getArgumentTypes()[i];
        return failure();
      }
      total += type.getNumElements();
    }
    for (const auto &entry : expected)
      if (!seen.count(entry.getKey())) {
        func.emitError() << "parameter '" << entry.getKey() << "' (shape "
                         << shapeStr(entry.getValue()) << ") is missing";
        return failure();
      }
    return total;
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto cfg = module->getAttrOfType<ConfigAttr>(MMRecDialect::getConfigAttrName());
    if (!cfg && !requireConfig)
      return;
    if (!cfg) {
      module.emitError() << "mmrec-param-count needs a module with an '"
                         << MMRecDialect::getConfigAttrName() << "' attribute";
      return signalPassFailure();
    }
    llvm::StringMap<SmallVector<int64_t>> layer = layerParamShapes(cfg);
    llvm::StringMap<SmallVector<int64_t>> model;
    model["embed"] = {cfg.getVocabSize(), cfg.getHiddenDim()};
    model["final_norm"] = {cfg.getHiddenDim()};
    for (const auto &entry : layer) {
      SmallVector<int64_t> stacked{cfg.getNumLayers()};
      stacked.append(entry.getValue().begin(), entry.getValue().end());
      model[("layers." + entry.getKey()).str()] = stacked;
    }

    func::FuncOp modelOp;
    for (auto func : module.getOps<func::FuncOp>()) {
      bool hasParams = false;
      for (unsigned i = 0, e = func.getNumArguments(); i < e; ++i)
        hasParams |= bool(func.getArgAttr(i, MMRecDialect::getParamAttrName()));
      if (func.getSymName() == modelFunc) {
        modelOp = func;
        continue;
      }
      if (hasParams && failed(checkFunc(func, layer)))
        return signalPassFailure();
    }
    if (!modelOp) {
      module.emitError() << "no model function '@" << modelFunc << "' in the module";
      return signalPassFailure();
    }
    FailureOr<int64_t> total = checkFunc(modelOp, model);
    if (failed(total))
      return signalPassFailure();
    if (*total != cfg.getParamCount()) {
      modelOp.emitError() << "parameter count " << *total
                          << " differs from the MMREC_SPEC formula's "
                          << cfg.getParamCount();
      return signalPassFailure();
    }
    if (print)
      llvm::outs() << cfg.getName() << ": " << *total << " parameters ("
                   << model.size() << " tensors)\n";
  }
};

} // namespace
