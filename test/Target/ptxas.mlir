// Every generated kernel assembles with ptxas for sm_90 without spills or
// local memory (--check-spills fails otherwise).
// REQUIRES: ptxas
// RUN: rm -rf %t && mmrec-compile %S/../Inputs/scan_kernels.mlir -o %t --check-spills 2>/dev/null | FileCheck %s
// RUN: FileCheck %s --check-prefix=LOG < %t/scan_kernels.ptxas.log
// RUN: not grep -E "[1-9][0-9]* bytes (stack frame|spill)" %t/scan_kernels.ptxas.log
// No libdevice call is left for the link: the kernels need nothing but the PTX.
// RUN: not grep __nv_ %t/scan_kernels.ptx
// 36 kernels: the 16-bit adjoint has a staged default and an unstaged long
// variant.
// CHECK: mmrec-compile: scan_kernels: 36 kernels (cubin assembled)
// LOG: Compiling entry function 'scan_f32_kernel' for 'sm_90'
// LOG: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
