//===- mmrec-opt.cpp - mlir-opt with the mmrec dialect and passes -------===//
//
// An `mlir-opt`-style driver: parses a model file, verifies it, runs the
// passes or pipelines named on the command line (`--mmrec-default` for the
// default pipeline) and prints the result. Every upstream dialect, pass and
// LLVM translation is registered too, so that the whole lowering (down to
// `gpu-module-to-binary`) can be run and tested from here.
//
//===----------------------------------------------------------------------===//

#include "dialect/MMRecDialect.h"
#include "dialect/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::registerAllPasses();
  mlir::mmrec::registerMMRecPasses();
  mlir::mmrec::registerMMRecPipelines();

  mlir::DialectRegistry registry;
  registry.insert<mlir::mmrec::MMRecDialect>();
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  mlir::registerAllToLLVMIRTranslations(registry);
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "mmrec optimizer driver\n", registry));
}
