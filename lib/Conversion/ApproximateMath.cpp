//===- ApproximateMath.cpp - the mmrec-approximate-math pass --------------===//
//
// Expands f32 math functions into polynomial arithmetic (MLIR's
// approximations) and, with `ptx`, the remaining sqrt/floor into PTX
// instructions, so that GPU kernels lower to NVVM without libdevice.
//
//===----------------------------------------------------------------------===//

#include "dialect/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::mmrec {
#define GEN_PASS_DEF_MMRECAPPROXIMATEMATH
#include "dialect/Passes.h.inc"
} // namespace mlir::mmrec

using namespace mlir;

namespace {

/// A unary f32 op as one PTX instruction `<instr> $0, $1;`.
template <class Op> struct UnaryToPtx : OpRewritePattern<Op> {
  UnaryToPtx(MLIRContext *ctx, const char *instr) : OpRewritePattern<Op>(ctx), instr(instr) {}
  LogicalResult matchAndRewrite(Op op, PatternRewriter &rw) const override {
    if (!op.getType().isF32())
      return failure();
    auto asmOp = LLVM::InlineAsmOp::create(
        rw, op.getLoc(), op.getType(), ValueRange{op.getOperand()},
        (std::string(instr) + " $0, $1;").c_str(), "=f,f", /*has_side_effects=*/false,
        /*is_align_stack=*/false, LLVM::TailCallKind::None, LLVM::AsmDialectAttr(),
        /*operand_attrs=*/ArrayAttr());
    rw.replaceOp(op, asmOp.getResult(0));
    return success();
  }
  const char *instr;
};

struct ApproximateMath : mmrec::impl::MMRecApproximateMathBase<ApproximateMath> {
  using MMRecApproximateMathBase::MMRecApproximateMathBase;
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateMathPolynomialApproximationPatterns(patterns);
    if (ptx) {
      patterns.add<UnaryToPtx<math::SqrtOp>>(&getContext(), "sqrt.rn.f32");
      patterns.add<UnaryToPtx<math::FloorOp>>(&getContext(), "cvt.rmi.f32.f32");
    }
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      return signalPassFailure();
  }
};

} // namespace
