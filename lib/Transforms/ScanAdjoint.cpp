//===- ScanAdjoint.cpp - reverse mode of scan functions -------------------===//
//
// For `func @f(ℓ, b[, h0]) -> (h, final)` computing one mmrec.scan of its
// arguments, adds
//   func @f_grad(ℓ, b[, h0], h, final, dh, dfinal) -> (dℓ, db[, dh0])
// made of one mmrec.scan_grad. The gradient with respect to b is the reverse
// scan g itself; the others are fused into the same kernel by the outliner.
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

struct ScanAdjointPass : mlir::mmrec::impl::MMRecScanAdjointBase<ScanAdjointPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<func::FuncOp> funcs(module.getOps<func::FuncOp>());
    for (func::FuncOp f : funcs) {
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
      SmallVector<Type> args(f.getArgumentTypes());
      args.append({h, fin, h, fin});
      auto gradLa = RankedTensorType::get(llvm::cast<RankedTensorType>(la).getShape(),
                                          llvm::cast<RankedTensorType>(la).getElementType());
      SmallVector<Type> results{gradLa, h};
      if (scan.getInit())
        results.push_back(fin);
      auto g = func::FuncOp::create(b, loc, (f.getSymName() + "_grad").str(),
                                    b.getFunctionType(args, results));
      Block *entry = g.addEntryBlock();
      b.setInsertionPointToStart(entry);
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
