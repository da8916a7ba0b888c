//===- mmrec-compile.cpp - model file to fused kernels and a C++ API ----===//
//
//   mmrec-compile model.mlir -o DIR [--target=all|nvptx|cpu] [--arch=sm_90]
//                 [--emit=mlir|llvm|ptx|obj] [--name=NAME] [--check-spills]
//
// Runs the default pipeline (verify, check parameters, derive adjoints),
// generates the kernels of every scan for each target and writes, into DIR:
// NAME.ptx (+ NAME.cubin and NAME.ptxas.log when ptxas is installed),
// NAME.cpu.o, NAME.h / NAME.cpp (one typed launch function per kernel) and
// NAME.manifest.json. With --emit, prints one intermediate form to stdout
// instead. Errors are reported at their file:line:col; the exit status is
// non-zero on any error.
//
//===----------------------------------------------------------------------===//

#include "tools/common/Progress.h"
#include "dialect/MMRecDialect.h"
#include "dialect/Passes.h"
#include "lib/Target/Compile.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/InitAllPasses.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
namespace cl = llvm::cl;

static cl::OptionCategory compileCat("mmrec-compile options");
static cl::opt<std::string> inputFile(cl::cat(compileCat), cl::Positional, cl::desc("<model.mlir>"),
                                      cl::Required);
static cl::opt<std::string> outDir(cl::cat(compileCat), "o", cl::desc("Output directory"),
                                   cl::value_desc("DIR"));
static cl::opt<std::string> target(cl::cat(compileCat), "target",
                                   cl::desc("all (default), nvptx or cpu"), cl::init("all"));
static cl::opt<std::string> arch(cl::cat(compileCat), "arch", cl::desc("GPU architecture"),
                                 cl::init("sm_90"));
static cl::opt<std::string> emit(cl::cat(compileCat), "emit",
                                 cl::desc("Print one form to stdout: mlir (after the default "
                                          "pipeline and outlining), llvm, ptx or obj"),
                                 cl::init(""));
static cl::opt<std::string> name(cl::cat(compileCat), "name",
                                 cl::desc("Base name of the outputs (default: the "
                                          "model file's stem)"));
static cl::opt<int64_t> scanVec(cl::cat(compileCat), "scan-vec",
                                cl::desc("GPU scans: channels per thread (0: 16 bytes)"),
                                cl::init(0));
static cl::opt<int64_t> scanSteps(cl::cat(compileCat), "scan-steps",
                                  cl::desc("GPU scans: steps per thread"), cl::init(8));
static cl::opt<int64_t> scanWarps(cl::cat(compileCat), "scan-warps",
                                  cl::desc("GPU scans: warps per block"), cl::init(4));
static cl::opt<int64_t> scanMinBlocks(cl::cat(compileCat), "scan-min-blocks",
                                      cl::desc("GPU scans: blocks per SM to leave registers for"),
                                      cl::init(0));
static cl::opt<int64_t> scanStage(
    cl::cat(compileCat), "scan-stage",
    cl::desc("GPU scans: stage the vectorized kernels' inputs in shared memory with cp.async "
             "(-1: where measured faster, the 16-bit long-block forward; 0: none; 1: every "
             "vectorized kernel, forward and adjoint)"),
    cl::init(-1));
static cl::opt<int64_t> scanStream(
    cl::cat(compileCat), "scan-stream",
    cl::desc("GPU scans: streaming (evict-first) loads of the inputs and stores of the outputs, "
             "so that L2 keeps the look-back's status words (-1: the default, none: measured "
             "slower on the H200; 0: none; 1: every kernel)"),
    cl::init(-1));
static cl::opt<int64_t> scanTicket(
    cl::cat(compileCat), "scan-ticket",
    cl::desc("GPU scans: a block's place along T from an atomic ticket (1) or from its block "
             "index, relying on in-order block dispatch as CUB does (0); -1: the default, the "
             "block index (measured faster on the H100)"),
    cl::init(-1));
static cl::opt<bool> noTrain(cl::cat(compileCat), "no-train",
                             cl::desc("Do not build the training library (NAME.train.so) of a "
                                      "model file with mmrec.config"),
                             cl::init(false));
static cl::opt<bool> trainGatedBf16(
    cl::cat(compileCat), "train-gated-bf16",
    cl::desc("GPU training library: the dense gate's cooperative level-0 products on tensor "
             "cores in bf16 (fp32 FMAs by default; changes the numerics, see "
             "docs/benchmarks/train-gpu.md)"),
    cl::init(false));
static cl::opt<bool> trainGatedCluster(
    cl::cat(compileCat), "train-gated-cluster",
    cl::desc("GPU training library: --train-gated-bf16, with each row group of the level-0 "
             "kernels one thread-block cluster of 16 that exchanges the state through "
             "distributed shared memory (D a multiple of 256 up to 1024; elsewhere as "
             "--train-gated-bf16)"),
    cl::init(false));
static cl::opt<bool> checkSpills(cl::cat(compileCat), "check-spills",
                                 cl::desc("Fail when a GPU kernel spills or uses local memory"));

static int fail(const llvm::Twine &msg) {
  llvm::errs() << "mmrec-compile: error: " << msg << "\n";
  return 1;
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  registerAllPasses();
  mlir::mmrec::registerMMRecPasses();
  mlir::mmrec::registerMMRecPipelines();
  // --help lists mmrec-compile's own options (LLVM's stay usable, shown by
  // --help-hidden).
  cl::HideUnrelatedOptions(compileCat);
  cl::ParseCommandLineOptions(argc, argv, "mmrec-compile: model file to fused kernels\n");

  if (target != "all" && target != "nvptx" && target != "cpu")
    return fail("--target must be all, nvptx or cpu, got '" + target + "'");
  if (!emit.empty() && emit != "mlir" && emit != "llvm" && emit != "ptx" && emit != "obj")
    return fail("--emit must be mlir, llvm, ptx or obj, got '" + emit + "'");
  if (emit.empty() && outDir.empty())
    return fail("an output directory (-o DIR) is required unless --emit is given");
  if (arch.empty() || arch.getValue().rfind("sm_", 0) != 0)
    return fail("--arch must look like sm_90, got '" + arch + "'");
  if (scanWarps < 1 || scanWarps > 32 || scanSteps < 1 || scanVec < 0 || scanMinBlocks < 0 ||
      scanStage < -1 || scanStage > 1 || scanStream < -1 || scanStream > 1 || scanTicket < -1 || scanTicket > 1)
    return fail("--scan-warps must be in [1, 32], --scan-stage, --scan-stream and --scan-ticket "
                "in [-1, 1] "
                "and the other --scan-* options >= 0");

  DialectRegistry registry;
  registry.insert<mlir::mmrec::MMRecDialect>();
  registerAllDialects(registry);
  registerAllExtensions(registry);
  registerAllToLLVMIRTranslations(registry);
  MLIRContext ctx(registry);
  ctx.printOpOnDiagnostic(false);
  ctx.loadAllAvailableDialects();

  llvm::SourceMgr sourceMgr;
  SourceMgrDiagnosticHandler diag(sourceMgr, &ctx);
  std::string err;
  auto file = openInputFile(inputFile, &err);
  if (!file)
    return fail(err);
  sourceMgr.AddNewSourceBuffer(std::move(file), llvm::SMLoc());
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(sourceMgr, &ctx);
  if (!module)
    return 1; // the diagnostic, with its location, is already printed
  if (failed(mlir::mmrec::runCompilerPipeline(*module)))
    return 1;

  mlir::mmrec::CompileOptions opts;
  opts.outDir = outDir;
  opts.arch = arch;
  opts.checkSpills = checkSpills;
  opts.trainGatedBf16 = trainGatedBf16 || trainGatedCluster;
  opts.trainGatedCluster = trainGatedCluster;
  opts.scanVec = scanVec;
  opts.scanSteps = scanSteps;
  opts.scanWarps = scanWarps;
  opts.scanMinBlocks = scanMinBlocks;
  opts.scanStage = scanStage;
  opts.scanStream = scanStream;
  opts.scanTicket = scanTicket;
  opts.nvptx = target != "cpu";
  opts.cpu = target != "nvptx";
  opts.name = name.empty() ? llvm::sys::path::stem(inputFile).str() : name.getValue();

  if (emit == "mlir") {
    module->print(llvm::outs());
    llvm::outs() << "\n";
    return 0;
  }
  mlir::mmrec::KernelImages images;
  ArrayAttr gpuKernels, cpuKernels;
  if (emit == "llvm") {
    std::string ir;
    if (opts.nvptx ? failed(mlir::mmrec::emitNvptx(*module, opts, images, gpuKernels, &ir))
                   : failed(mlir::mmrec::emitCpuObject(*module, opts, images, cpuKernels, &ir)))
      return 1;
    llvm::outs() << ir;
    return 0;
  }
  if (emit == "ptx") {
    if (failed(mlir::mmrec::emitNvptx(*module, opts, images, gpuKernels)))
      return 1;
    llvm::outs() << images.ptx;
    return 0;
  }
  if (emit == "obj") {
    if (failed(mlir::mmrec::emitCpuObject(*module, opts, images, cpuKernels)))
      return 1;
    llvm::outs().write(images.cpuObject.data(), images.cpuObject.size());
    return 0;
  }
  if (auto ec = llvm::sys::fs::create_directories(outDir))
    return fail("cannot create " + outDir + ": " + ec.message());
  bool train = opts.cpu && !noTrain &&
               (*module)->hasAttr(mlir::mmrec::MMRecDialect::getConfigAttrName());
  ::mmrec::tools::Progress bar("mmrec-compile: " + opts.name,
                             int64_t(opts.nvptx) + int64_t(opts.cpu) + 1 + int64_t(train));
  if (opts.nvptx) {
    bar.advance(0, "GPU kernels");
    if (failed(mlir::mmrec::emitNvptx(*module, opts, images, gpuKernels)))
      return 1;
    bar.advance();
  }
  if (opts.cpu) {
    bar.advance(0, "CPU kernels");
    if (failed(mlir::mmrec::emitCpuObject(*module, opts, images, cpuKernels)))
      return 1;
    bar.advance();
  }
  bar.advance(0, "C++ launch API");
  if (failed(mlir::mmrec::emitLaunchApi(*module, opts, images, gpuKernels, cpuKernels)))
    return 1;
  bar.advance();
  if (train) {
    bar.advance(0, opts.nvptx ? "training libraries (CPU, GPU)" : "training library");
    if (failed(mlir::mmrec::emitTrainLibrary(*module, opts)))
      return 1;
    bar.advance();
  }
  bar.done();
  size_t n = (gpuKernels ? gpuKernels.size() : 0) + (cpuKernels ? cpuKernels.size() : 0);
  llvm::outs() << "mmrec-compile: " << opts.name << ": " << n << " kernels"
               << (images.cubin.empty() ? "" : " (cubin assembled)")
               << (train ? ", training library " + opts.name + ".train.so" : "") << " -> " << outDir
               << "\n";
  return 0;
}
