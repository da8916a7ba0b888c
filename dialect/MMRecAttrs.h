//===- MMRecAttrs.h - mmrec attributes --------------------------*- C++ -*-===//
#ifndef MMREC_DIALECT_MMRECATTRS_H
#define MMREC_DIALECT_MMRECATTRS_H

#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/TensorEncoding.h"

#include <string>

#include "dialect/MMRecEnums.h.inc"

namespace mlir::mmrec {
/// The shortest decimal form of `v` that reads back exactly, written as an
/// MLIR float literal (always with a '.'): 0.99, -50.0, 1.0e-06.
std::string formatShortestDouble(double v);
} // namespace mlir::mmrec

#define GET_ATTRDEF_CLASSES
#include "dialect/MMRecAttrs.h.inc"

namespace mlir::mmrec {
/// The `#mmrec.logspace` encoding of `type`, or null.
LogSpaceAttr getLogSpaceEncoding(Type type);
} // namespace mlir::mmrec

#endif // MMREC_DIALECT_MMRECATTRS_H
