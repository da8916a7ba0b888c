//===- MMRecOps.h - mmrec operations ----------------------------*- C++ -*-===//
#ifndef MMREC_DIALECT_MMRECOPS_H
#define MMREC_DIALECT_MMRECOPS_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/ControlFlowInterfaces.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "dialect/MMRecAttrs.h"
#include "dialect/MMRecDialect.h"

#define GET_OP_CLASSES
#include "dialect/MMRecOps.h.inc"

#endif // MMREC_DIALECT_MMRECOPS_H
