//===- Pipelines.cpp - the mmrec pass pipelines ---------------------------===//
//
// `mmrec-default` is what `mmrec-compile` runs before code generation:
//   1. canonicalize, cse        — tidy the model file;
//   2. mmrec-param-count        — check every parameter against mmrec.config;
//   3. mmrec-classify-recurrences — affine recurrences become log-space scans,
//                                   the others stay sequential (with a remark).
// The compiler pipeline (mmrec-compile, before outlining, and the fuzz target
// test/fuzz/fuzz_mlir.cpp) adds mmrec-fuse-scan-producers and
// mmrec-scan-adjoint.
//
//===----------------------------------------------------------------------===//

#include "dialect/Passes.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

void mlir::mmrec::buildMMRecDefaultPipeline(OpPassManager &pm) {
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());
  MMRecParamCountOptions opts;
  opts.print = false;
  opts.requireConfig = false;
  pm.addPass(createMMRecParamCount(opts));
  pm.addPass(createMMRecClassifyRecurrences());
}

void mlir::mmrec::buildMMRecCompilerPipeline(OpPassManager &pm) {
  buildMMRecDefaultPipeline(pm);
  pm.addPass(createMMRecFuseScanProducers());
  pm.addPass(createMMRecScanAdjoint());
}

void mlir::mmrec::registerMMRecPipelines() {
  PassPipelineRegistration<>("mmrec-default",
                             "The default mmrec pipeline: tidy, then check the model",
                             buildMMRecDefaultPipeline);
}
