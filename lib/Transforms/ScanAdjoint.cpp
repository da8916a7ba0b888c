//===- ScanAdjoint.cpp - reverse mode of scan functions -------------------===//
//
// For `func @f(ℓ, b[, h0]) -> (h, final)` computing one mmrec.scan of its
// arguments, adds
//   func @f_grad(ℓ, b[, h0], h, final, dh, dfinal) -> (dℓ, db[, dh0])
// made of one mmrec.scan_grad. The gradient with respect to b is the reverse
// scan g itself; the others are fused into the same kernel by the outliner.
// Likewise a function made of one mmrec.gated_recurrence gets an @f_grad of
// one mmrec.gated_recurrence_grad.
//
//===----------------------------------------------------------------------===//

#include "dialect/MMRecOps.h"
#include "dialect/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

namespace mlir::mmrec {
#define GEN_PASS_DEF_MMRECSCANADJOINT
#include "dialect/Passes.h.inc"
} // namespace mlir::mmrec

using namespace mlir;
using namespace mlir::mmrec;

namespace {

/// Adds @<f>_grad(f's arguments..., h, final, dh, dfinal) -> results right
/// after f and returns its entry block, with `b` at its start.
Block *startGradFunc(OpBuilder &b, func::FuncOp f, Type h, Type fin, ArrayRef<Type> results) {
  SmallVector<Type> args(f.getArgumentTypes());
  args.append({h, fin, h, fin});
  auto g = func::FuncOp::create(b, f.getLoc(), (f.getSymName() + "_grad").str(),
                                b.getFunctionType(args, results));
  Block *entry = g.addEntryBlock();
  b.setInsertionPointToStart(entry);
  return entry;
}

struct ScanAdjointPass : mlir::mmrec::impl::MMRecScanAdjointBase<ScanAdjointPass> {
  /// func @f(z, ℓ, W_g, b_g[, h0]) -> (h, final) made of one
  /// mmrec.gated_recurrence gets
  /// @f_grad(z, ℓ, W_g, b_g[, h0], h, final, dh, dfinal) -> (dz, dℓ, dW_g, db_g[, dh0]).
  void addGatedAdjoint(ModuleOp module, func::FuncOp f, GatedRecurrenceOp rec) {
    Block &entryF = f.getBody().front();
    auto ret = llvm::dyn_cast<func::ReturnOp>(entryF.getTerminator());
    bool argsOnly = llvm::all_of(rec->getOperands(), [&](Value v) {
      return llvm::isa<BlockArgument>(v) && llvm::cast<BlockArgument>(v).getOwner() == &entryF;
    });
    // A larger function (a model's @layer) is not an adjoint candidate.
    if (!ret || ret.getNumOperands() != 2 || ret.getOperand(0) != rec.getH() ||
        ret.getOperand(1) != rec.getFinal())
      return;
    if (!argsOnly) {
      f.emitRemark() << "mmrec-scan-adjoint: no adjoint for @" << f.getSymName()
                     << ": it must return (h, final) of one mmrec.gated_recurrence of its "
                        "arguments";
      return;
    }
    if (SymbolTable::lookupSymbolIn(module, (f.getSymName() + "_grad").str()))
      return;
    OpBuilder b(module.getContext());
    b.setInsertionPointAfter(f);
    Location loc = f.getLoc();
    Type h = rec.getH().getType(), fin = rec.getFinal().getType();
    auto la = llvm::cast<RankedTensorType>(rec.getLogDecay().getType());
    auto gradLa = RankedTensorType::get(la.getShape(), la.getElementType());
    SmallVector<Type> results{h, gradLa, rec.getGate().getType(), rec.getBias().getType()};
    if (rec.getInit())
      results.push_back(fin);
    Block *entry = startGradFunc(b, f, h, fin, results);
    unsigned n = f.getNumArguments();
    auto argOf = [&](Value v) {
      return entry->getArgument(llvm::cast<BlockArgument>(v).getArgNumber());
    };
    Value init = rec.getInit() ? argOf(rec.getInit()) : Value();
    auto grad = GatedRecurrenceGradOp::create(
        b, loc, h, gradLa, rec.getGate().getType(), rec.getBias().getType(),
        rec.getInit() ? fin : Type(), argOf(rec.getZ()), argOf(rec.getLogDecay()),
        argOf(rec.getGate()), argOf(rec.getBias()), entry->getArgument(n),
        entry->getArgument(n + 2), entry->getArgument(n + 3), init, rec.getClampMinAttr(),
        rec.getClampMaxAttr());
    func::ReturnOp::create(b, loc, grad->getResults());
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<func::FuncOp> funcs(module.getOps<func::FuncOp>());
    for (func::FuncOp f : funcs) {
      SmallVector<GatedRecurrenceOp> recs(f.getOps<GatedRecurrenceOp>());
      if (recs.size() == 1 && f.getBody().getBlocks().size() == 1) {
        addGatedAdjoint(module, f, recs.front());
        continue;
      }
      SmallVector<ScanOp> scans(f.getOps<ScanOp>());
      if (scans.size() != 1 || f.getBody().getBlocks().size() != 1)
        continue;
      ScanOp scan = scans.front();
      auto ret = llvm::dyn_cast<func::ReturnOp>(f.getBody().front().getTerminator());
      bool argsOnly = llvm::all_of(scan->getOperands(), [&](Value v) {
        return llvm::isa<BlockArgument>(v) &&
               llvm::cast<BlockArgument>(v).getOwner() == &f.getBody().front();
      });
      if (!ret || ret.getNumOperands() != 2 || ret.getOperand(0) != scan.getH() ||
          ret.getOperand(1) != scan.getFinal() || !argsOnly) {
        f.emitRemark() << "mmrec-scan-adjoint: no adjoint for @" << f.getSymName()
                       << ": it must return (h, final) of one mmrec.scan of its arguments";
        continue;
      }
      if (llvm::cast<RankedTensorType>(scan.getLogDecay().getType()).getRank() !=
          llvm::cast<RankedTensorType>(scan.getB().getType()).getRank()) {
        f.emitRemark() << "mmrec-scan-adjoint: no adjoint for @" << f.getSymName()
                       << ": its decay is broadcast over trailing axes (the memory "
                          "hierarchy's adjoint is generated with the memory ops)";
        continue;
      }
      if (SymbolTable::lookupSymbolIn(module, (f.getSymName() + "_grad").str()))
        continue;
      OpBuilder b(module.getContext());
      b.setInsertionPointAfter(f);
      Location loc = f.getLoc();
      Type la = scan.getLogDecay().getType(), h = scan.getH().getType();
      Type fin = scan.getFinal().getType();
      auto gradLa = RankedTensorType::get(llvm::cast<RankedTensorType>(la).getShape(),
                                          llvm::cast<RankedTensorType>(la).getElementType());
      SmallVector<Type> results{gradLa, h};
      if (scan.getInit())
        results.push_back(fin);
      Block *entry = startGradFunc(b, f, h, fin, results);
      unsigned n = f.getNumArguments();
      auto argOf = [&](Value v) {
        return entry->getArgument(llvm::cast<BlockArgument>(v).getArgNumber());
      };
      Value init = scan.getInit() ? argOf(scan.getInit()) : Value();
      auto grad = ScanGradOp::create(
          b, loc, gradLa, h, scan.getInit() ? fin : Type(), argOf(scan.getLogDecay()),
          entry->getArgument(n), init, entry->getArgument(n + 2), entry->getArgument(n + 3),
          scan.getClampMinAttr(), scan.getClampMaxAttr(), scan.getReverseAttr(),
          scan.getGateLogitsAttr());
      func::ReturnOp::create(b, loc, grad->getResults());
    }
  }
};

} // namespace
