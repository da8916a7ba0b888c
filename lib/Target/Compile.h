//===- Compile.h - from a model file to kernel images and a C++ API ---*- C++ -*-===//
//
// The back half of mmrec-compile:
//   runCompilerPipeline  — mmrec-default, mmrec-scan-adjoint, outlining;
//   emitNvptx            — the gpu.module through NVVM to PTX (and a cubin
//                          through ptxas when it is installed);
//   emitCpuObject        — the CPU kernels through LLVM to a host object;
//   emitLaunchApi        — the C++ header/source with one typed launch
//                          function per kernel, and the JSON manifest.
//
//===----------------------------------------------------------------------===//

#ifndef MMREC_TARGET_COMPILE_H
#define MMREC_TARGET_COMPILE_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LLVM.h"

#include <string>
#include <vector>

namespace mlir::mmrec {

struct CompileOptions {
  std::string name;           // base name of the outputs and C++ namespace
  std::string outDir;
  std::string arch = "sm_90";
  bool nvptx = true, cpu = true;
  bool checkSpills = false;   // fail when ptxas reports spills or local memory
  bool trainGatedBf16 = false; // GPU training library: bf16 tensor-core level-0 products
  bool trainGatedCluster = false; // ... in row groups of clusters (implies trainGatedBf16)
  std::string emit;           // "", "mlir", "llvm", "ptx", "obj"
  // GPU scan tiling (0: the generator's defaults), see mmrec-outline-scan-kernels.
  int64_t scanVec = 0, scanSteps = 8, scanWarps = 4, scanMinBlocks = 0, scanStage = -1,
          scanStream = -1, scanTicket = -1;
};

struct KernelImages {
  std::string ptx;
  std::vector<char> cubin;    // empty when ptxas is unavailable
  std::string ptxasLog;
  std::vector<char> cpuObject;
};

/// Runs the front of the pipeline on `module` (in place).
LogicalResult runCompilerPipeline(ModuleOp module);

/// Outlines kernels for the GPU into a clone of `module`, lowers them to PTX
/// and assembles a cubin when ptxas is found.
LogicalResult emitNvptx(ModuleOp module, const CompileOptions &opts, KernelImages &out,
                        ArrayAttr &kernels, std::string *llvmIR = nullptr);

/// Outlines kernels for the CPU into a clone of `module` and compiles them
/// to an object file.
LogicalResult emitCpuObject(ModuleOp module, const CompileOptions &opts, KernelImages &out,
                            ArrayAttr &kernels, std::string *llvmIR = nullptr);

/// Writes <name>.h, <name>.cpp and <name>.manifest.json into opts.outDir.
LogicalResult emitLaunchApi(ModuleOp module, const CompileOptions &opts,
                            const KernelImages &images, ArrayAttr gpuKernels,
                            ArrayAttr cpuKernels);

/// Builds the training kernels of the module's mmrec.config
/// (mmrec-build-train-kernels), compiles them to <name>.train.o, links
/// <name>.train.so (with `cc`) and writes <name>.train.json (configuration
/// and kernel signatures) into opts.outDir. With `llvmIR`, prints the LLVM IR
/// instead of writing anything.
LogicalResult emitTrainLibrary(ModuleOp module, const CompileOptions &opts,
                               std::string *llvmIR = nullptr);
} // namespace mlir::mmrec

#endif // MMREC_TARGET_COMPILE_H
