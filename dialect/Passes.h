//===- Passes.h - mmrec passes ----------------------------------*- C++ -*-===//
#ifndef MMREC_DIALECT_PASSES_H
#define MMREC_DIALECT_PASSES_H

#include "mlir/Pass/Pass.h"

namespace mlir::mmrec {

#define GEN_PASS_DECL
#include "dialect/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "dialect/Passes.h.inc"

/// Registers the mmrec pass pipelines (`mmrec-default`, ...).
void registerMMRecPipelines();

} // namespace mlir::mmrec

#endif // MMREC_DIALECT_PASSES_H
