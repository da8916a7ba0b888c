//===- MMRecDialect.h - the mmrec dialect -----------------------*- C++ -*-===//
#ifndef MMREC_DIALECT_MMRECDIALECT_H
#define MMREC_DIALECT_MMRECDIALECT_H

#include "mlir/IR/Dialect.h"

#include "dialect/MMRecDialect.h.inc"

#endif // MMREC_DIALECT_MMRECDIALECT_H
