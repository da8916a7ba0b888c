// Model files: the MLIR front end of mmrec-compile / mmrec-opt on arbitrary
// bytes. The input is parsed as a module with the mmrec dialect and every
// upstream dialect registered (as the tools do), verified, and, when it
// verifies, run through the compiler pipeline (mmrec-default,
// mmrec-fuse-scan-producers, mmrec-scan-adjoint) with the verifier after each
// pass, and, on a clone, through the mmrec passes of that pipeline alone
// (without canonicalize/cse first). Diagnostics are swallowed: an error is an accepted outcome; a crash,
// an abort (assertion, llvm_unreachable, report_fatal_error), a sanitizer
// report, a hang or an allocation proportional to a declared tensor size
// (-rss_limit_mb) is a finding.
//
// Built by scripts/fuzz with the mmrec dialect and passes instrumented
// (CMake option MMREC_FUZZ, clang); the Debian libMLIR.so is not, so coverage
// guides the search through mmrec's parsers, verifiers and passes only.
// Without MMREC_FUZZ_MAIN it is also linked with ReplayMain.cpp into
// mmrec-fuzz-replay-mlir, which ctest runs on test/fuzz/regressions/mlir/.
#include "dialect/MMRecDialect.h"
#include "dialect/Passes.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/InitAllDialects.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/Support/SourceMgr.h"

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

namespace {

const mlir::DialectRegistry &registry() {
  static const mlir::DialectRegistry *r = [] {
    auto *reg = new mlir::DialectRegistry;
    reg->insert<mlir::mmrec::MMRecDialect>();
    mlir::registerAllDialects(*reg);
    return reg;
  }();
  return *r;
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  (void)registry();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // Model files are a few KiB; larger inputs only slow the search.
  if (size > 64 * 1024)
    return 0;
  mlir::MLIRContext ctx(registry(), mlir::MLIRContext::Threading::DISABLED);
  ctx.printOpOnDiagnostic(false);
  ctx.allowUnregisteredDialects(false);
  mlir::ScopedDiagnosticHandler swallow(&ctx, [](mlir::Diagnostic &) { return mlir::success(); });

  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(
          llvm::StringRef(reinterpret_cast<const char *>(data), size), "fuzz.mlir"),
      llvm::SMLoc());
  // parseSourceFile verifies the module it returns.
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceFile<mlir::ModuleOp>(sourceMgr, &ctx);
  if (!module)
    return 0;
  // The mmrec passes alone first (as `mmrec-opt --mmrec-classify-recurrences`
  // and the lit tests run them), on a clone: canonicalization would fold
  // away much of what they must cope with.
  {
    mlir::OwningOpRef<mlir::ModuleOp> clone = module->clone();
    mlir::PassManager pm(&ctx);
    pm.enableVerifier(true);
    pm.addPass(mlir::mmrec::createMMRecClassifyRecurrences());
    pm.addPass(mlir::mmrec::createMMRecFuseScanProducers());
    pm.addPass(mlir::mmrec::createMMRecScanAdjoint());
    (void)pm.run(*clone);
  }
  mlir::PassManager pm(&ctx);
  pm.enableVerifier(true);
  mlir::mmrec::buildMMRecCompilerPipeline(pm);
  (void)pm.run(*module);
  return 0;
}
