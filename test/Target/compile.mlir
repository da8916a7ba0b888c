// mmrec-compile: the default pipeline, the adjoint, PTX through NVPTX, a CPU
// object, the launch API and the manifest.
// RUN: mmrec-compile %s --emit=mlir | FileCheck %s --check-prefix=MLIR
// RUN: mmrec-compile --help | FileCheck %s --check-prefix=HELP
// RUN: mmrec-compile %s --emit=ptx | FileCheck %s --check-prefix=PTX
// RUN: mmrec-compile %s --emit=llvm --target=cpu | FileCheck %s --check-prefix=LLVM
// RUN: rm -rf %t && mmrec-compile %s -o %t --name=k | FileCheck %s --check-prefix=OUT
// RUN: FileCheck %s --check-prefix=HDR < %t/k.h
// RUN: FileCheck %s --check-prefix=SRC < %t/k.cpp
// RUN: FileCheck %s --check-prefix=MAN < %t/k.manifest.json

// --help lists mmrec-compile's own options, not LLVM's hundreds.
// HELP: mmrec-compile options:
// HELP-NOT: --aarch64
// HELP: --emit=<string>
// HELP: --scan-ticket=<long>
// HELP: --target=<string>
// HELP-NOT: --x86

// MLIR: func.func @scan_f32_grad(
// MLIR: mmrec.scan_grad

// PTX: .target sm_90
// PTX: .visible .entry scan_f32_kernel(
// PTX: .maxntid 128, 1, 1
// The static shared buffers, read and written with 16-byte vectors, are
// declared 16-byte aligned (not the f32 element's 4).
// PTX-NOT: .shared .align {{[1248]}} .
// PTX: .shared .align 16 .b8 __wg_scan_f32_kernel_0[2048];
// PTX: .shared .align 16 .b8 __wg_scan_f32_kernel_1[2048];
// PTX: .shared .align 16 .b8 __wg_scan_f32_kernel_2[512];
// Blocks are placed along T by their index: no atomic ticket.
// PTX-NOT: atom.global
// PTX: ld.global.v4.b32
// PTX: ex2.approx.ftz.f32
// The look-back's status words: one 16-byte volatile store / load each.
// PTX: st.volatile.global.v4.b32
// PTX: ld.volatile.global.v4.b32
// PTX-NOT: fence.acq_rel.gpu
// PTX: .visible .entry scan_f32_grad_kernel(

// LLVM: define void @mmrec_cpu_compile_scan_f32_kernel(
// LLVM: define void @mmrec_cpu_compile_scan_f32_grad_kernel(

// OUT: mmrec-compile: k: 8 kernels

// HDR: namespace mmrec::gen::k {
// HDR: void scan_f32_kernel(const mmrec::rt::TensorRef &log_decay, const mmrec::rt::TensorRef &b, const mmrec::rt::TensorRef &init, const mmrec::rt::TensorRef &h, const mmrec::rt::TensorRef &final_, mmrec::rt::Stream stream = nullptr);
// HDR: void scan_f32_grad_kernel(

// Static dimensions of the model are checked at launch.
// SRC: if (seq.shape[2] != 64)
// SRC: mmrec::rt::checkArg(K, "init", init, DType::f32, state);
// SRC: mmrec_cpu_k_scan_f32_kernel(
// SRC: const bool longer = vec && N % 4 == 0 && T >= 8192 && B * N <= 16384;
// No ticket counter to zero (blocks placed by index).
// SRC: char *ws = nullptr;
// SRC: mmrec::rt::gpu::threadScanStatus(statusBytes, stream);
// SRC: const char *fnName = longer ? "scan_f32_kernel_long" : vec ? "scan_f32_kernel" : "scan_f32_kernel_v1";

// MAN: "kernels": [
// MAN: "name": "scan_f32_kernel"
// MAN: "shape": [
// MAN-NEXT: -1,
// MAN-NEXT: -1,
// MAN-NEXT: 64
func.func @scan_f32(%l: tensor<?x?x64xf32>, %b: tensor<?x?x64xf32>, %h0: tensor<?x64xf32>)
    -> (tensor<?x?x64xf32>, tensor<?x64xf32>) {
  %h, %hT = mmrec.scan %l, %b init %h0
      : tensor<?x?x64xf32>, tensor<?x?x64xf32>, tensor<?x64xf32> -> tensor<?x?x64xf32>, tensor<?x64xf32>
  return %h, %hT : tensor<?x?x64xf32>, tensor<?x64xf32>
}
