//===- Passes.h - mmrec passes ----------------------------------*- C++ -*-===//
#ifndef MMREC_DIALECT_PASSES_H
#define MMREC_DIALECT_PASSES_H

#include "mlir/Pass/Pass.h"

namespace mlir::mmrec {

#define GEN_PASS_DECL
#include "dialect/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "dialect/Passes.h.inc"

/// Appends the `mmrec-default` pipeline (canonicalize, cse, param-count,
/// classify-recurrences) to `pm`.
void buildMMRecDefaultPipeline(OpPassManager &pm);

/// Appends what mmrec-compile runs before outlining kernels: mmrec-default,
/// mmrec-fuse-scan-producers, mmrec-scan-adjoint.
void buildMMRecCompilerPipeline(OpPassManager &pm);

/// Registers the mmrec pass pipelines (`mmrec-default`, ...).
void registerMMRecPipelines();

} // namespace mlir::mmrec

#endif // MMREC_DIALECT_PASSES_H
