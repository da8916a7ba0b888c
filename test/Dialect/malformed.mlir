// Malformed input gives a located diagnostic and a non-zero exit, never a crash.
// RUN: not mmrec-opt %S/Inputs/truncated.mlir 2>&1 | FileCheck %s --check-prefix=TRUNC
// RUN: not mmrec-opt %S/Inputs/unknown-op.mlir 2>&1 | FileCheck %s --check-prefix=UNKNOWN
// RUN: not mmrec-opt %S/Inputs/syntax.mlir 2>&1 | FileCheck %s --check-prefix=SYNTAX
// RUN: not mmrec-opt %S/Inputs/wrong-type.mlir 2>&1 | FileCheck %s --check-prefix=TYPE
// RUN: not mmrec-opt %S/Inputs/binary.mlir 2>&1 | FileCheck %s --check-prefix=BINARY
// RUN: not mmrec-opt %S/Inputs/does-not-exist.mlir 2>&1 | FileCheck %s --check-prefix=MISSING
// RUN: not mmrec-compile %S/Inputs/unknown-op.mlir -o %t 2>&1 | FileCheck %s --check-prefix=UNKNOWN
// RUN: not mmrec-opt %S/Inputs/null-element-type.mlir 2>&1 | FileCheck %s --check-prefix=NULLTYPE

// TRUNC: truncated.mlir:3:9: error: expected operation name in quotes
// UNKNOWN: unknown-op.mlir:2:8: error: custom op 'mmrec.nope' is unknown
// SYNTAX: syntax.mlir:2:39: error: expected '>' in tensor type
// TYPE: wrong-type.mlir:2:22: error: use of value '%x' expects different type than prior uses: 'tensor<4xf16>' vs 'tensor<4xf32>'
// BINARY: binary.mlir:1:2: error: unexpected character
// Fuzz finding (test/fuzz/regressions/mlir/): a #mmrec.logspace tensor whose
// element type does not parse was verified with a null type (SEGV).
// NULLTYPE: null-element-type.mlir:1:29: error: undefined symbol alias id 'x'
// NULLTYPE: null-element-type.mlir:1:70: error: #mmrec.logspace needs a valid element type (f32 or f64)
// MISSING: cannot open input file '{{.*}}does-not-exist.mlir': No such file or directory
