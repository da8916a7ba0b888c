// The committed model files are exactly what scripts/gen-models.py writes.
// RUN: python3 %models/../scripts/gen-models.py --print tiny | diff - %models/mmrec-tiny.mlir
// RUN: python3 %models/../scripts/gen-models.py --print small | diff - %models/mmrec-small.mlir
// RUN: python3 %models/../scripts/gen-models.py --print 7b | diff - %models/mmrec-7b.mlir
