// The exact parameter counts of MMREC_SPEC section 6, from the model files.
// RUN: mmrec-opt %models/mmrec-tiny.mlir --mmrec-param-count -o /dev/null | FileCheck %s --check-prefix=TINY
// RUN: mmrec-opt %models/mmrec-small.mlir --mmrec-param-count -o /dev/null | FileCheck %s --check-prefix=SMALL
// RUN: mmrec-opt %models/mmrec-7b.mlir --mmrec-param-count -o /dev/null | FileCheck %s --check-prefix=B7
// The per-head gate replaces the dense D² of W_g by D²/H: for tiny,
// 541964 - 2·(128² - 128²/4) = 541964 - 24576 = 517388.
// RUN: python3 %models/../scripts/gen-models.py --print tiny --gate per_head | mmrec-opt --mmrec-param-count -o /dev/null | FileCheck %s --check-prefix=HEAD
// The pass does not change the module.
// RUN: mmrec-opt %models/mmrec-tiny.mlir --mmrec-param-count=print=false | FileCheck %s --check-prefix=SAME

// TINY: mmrec-tiny: 541964 parameters (20 tensors)
// SMALL: mmrec-small: 127255440 parameters (20 tensors)
// B7: mmrec-7b: 5919806016 parameters (20 tensors)
// HEAD: mmrec-tiny: 517388 parameters (20 tensors)
// SAME: func.func @layer(
// SAME: func.func @model(
