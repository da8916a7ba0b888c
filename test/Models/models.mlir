// The three model files parse, verify, round-trip and go through the
// default pipeline, whose classification turns the seed's core recurrence
// into mmrec.gated_recurrence (dense W_g) and leaves no mmrec.recurrence.
// RUN: mmrec-opt %models/mmrec-tiny.mlir | mmrec-opt | FileCheck %s --check-prefixes=CHECK,SRC
// RUN: mmrec-opt %models/mmrec-small.mlir | mmrec-opt | FileCheck %s --check-prefixes=CHECK,SRC
// RUN: mmrec-opt %models/mmrec-7b.mlir | mmrec-opt | FileCheck %s --check-prefixes=CHECK,SRC
// RUN: mmrec-opt %models/mmrec-tiny.mlir --mmrec-default | FileCheck %s --check-prefixes=CHECK,LOWERED
// CHECK: mmrec.config = #mmrec.config<name = "mmrec-
// CHECK: func.func @layer(
// SRC: mmrec.recurrence ins(
// SRC: mmrec.sigmoid
// LOWERED-NOT: mmrec.recurrence
// LOWERED: mmrec.gated_recurrence %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} init %{{.+}} : tensor<?x?x128xf32>, tensor<?x?x128xf32, #mmrec.logspace<min = -50.0, max = 0.0>>, tensor<128x128xf32>, tensor<128xf32>, tensor<?x128xf32>
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
