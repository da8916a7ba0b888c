// mmrec-approximate-math: f32 math functions become polynomial arithmetic,
// math.sqrt stays.
// RUN: mmrec-opt %s --mmrec-approximate-math | FileCheck %s

// CHECK-LABEL: func.func @f(
// CHECK-NOT: math.exp
// CHECK-NOT: math.log1p
// CHECK-NOT: math.expm1
// CHECK-NOT: math.log
// CHECK: math.sqrt
func.func @f(%x: f32) -> f32 {
  %e = math.exp %x : f32
  %l = math.log1p %e : f32
  %m = math.expm1 %l : f32
  %n = math.log %m : f32
  %s = math.sqrt %n : f32
  return %s : f32
}
