// A module without mmrec.config has no training kernels: a located error.
// RUN: not mmrec-opt %s --mmrec-build-train-kernels -o /dev/null 2>&1 | FileCheck %s

// CHECK: build-train-kernels-errors.mlir:[[@LINE+1]]:1: error: mmrec-build-train-kernels: the module has no 'mmrec.config' attribute
module {
}
