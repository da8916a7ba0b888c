//===- mmrec-opt.cpp - mlir-opt with the mmrec dialect and passes -------===//
//
// An `mlir-opt`-style driver: parses a model file, verifies it, runs the
// passes or pipelines named on the command line (`--mmrec-default` for the
// default pipeline) and prints the result.
//
//===----------------------------------------------------------------------===//

#include "dialect/MMRecDialect.h"
#include "dialect/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::registerTransformsPasses();
  mlir::mmrec::registerMMRecPasses();
  mlir::mmrec::registerMMRecPipelines();

  mlir::DialectRegistry registry;
  registry.insert<mlir::mmrec::MMRecDialect, mlir::arith::ArithDialect,
                  mlir::func::FuncDialect, mlir::linalg::LinalgDialect,
                  mlir::math::MathDialect, mlir::scf::SCFDialect,
                  mlir::tensor::TensorDialect>();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "mmrec optimizer driver\n", registry));
}
