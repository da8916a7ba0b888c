// The three model files parse, verify, round-trip and go through the
// default pipeline (whose classification keeps the seed's core recurrence
// sequential, with a remark).
// RUN: mmrec-opt %models/mmrec-tiny.mlir | mmrec-opt | FileCheck %s
// RUN: mmrec-opt %models/mmrec-small.mlir | mmrec-opt | FileCheck %s
// RUN: mmrec-opt %models/mmrec-7b.mlir | mmrec-opt | FileCheck %s
// RUN: mmrec-opt %models/mmrec-tiny.mlir --mmrec-default 2>%t.err | FileCheck %s
// RUN: FileCheck %s --check-prefix=REMARK < %t.err
// CHECK: mmrec.config = #mmrec.config<name = "mmrec-
// CHECK: func.func @layer(
// CHECK: mmrec.recurrence ins(
// CHECK: mmrec.sigmoid
// CHECK: mmrec.chunk_attend
// CHECK: mmrec.mdi_write
// CHECK: mmrec.scan
// CHECK: mmrec.mdi_read
// CHECK: mmrec.hds_combine
// CHECK: mmrec.swiglu
// CHECK: func.func @model(
// CHECK: scf.for
// CHECK: func.call @layer
// CHECK: mmrec.cross_entropy
// REMARK: mmrec-tiny.mlir:{{[0-9]+}}:{{[0-9]+}}: remark: sequential recurrence: 'mmrec.sigmoid' is applied to the state
