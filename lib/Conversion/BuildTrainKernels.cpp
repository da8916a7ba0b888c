//===- BuildTrainKernels.cpp - the mmrec-build-train-kernels pass ---------===//
//
// Reads the module's mmrec.config and adds the training kernels of
// TrainKernels.h, recording them in `mmrec.train_kernels`.
//
//===----------------------------------------------------------------------===//

#include "dialect/MMRecAttrs.h"
#include "dialect/MMRecDialect.h"
#include "dialect/Passes.h"
#include "lib/Conversion/TrainKernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

namespace mlir::mmrec {
#define GEN_PASS_DEF_MMRECBUILDTRAINKERNELS
#include "dialect/Passes.h.inc"
} // namespace mlir::mmrec

using namespace mlir;
using namespace mlir::mmrec;

namespace {

struct BuildTrainKernels : mlir::mmrec::impl::MMRecBuildTrainKernelsBase<BuildTrainKernels> {
  using MMRecBuildTrainKernelsBase::MMRecBuildTrainKernelsBase;
  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto cfg = module->getAttrOfType<ConfigAttr>(MMRecDialect::getConfigAttrName());
    if (!cfg) {
      module.emitError() << "mmrec-build-train-kernels: the module has no '"
                         << MMRecDialect::getConfigAttrName() << "' attribute";
      return signalPassFailure();
    }
    TrainConfig c;
    c.V = cfg.getVocabSize();
    c.D = cfg.getHiddenDim();
    c.L = cfg.getNumLayers();
    c.H = cfg.getNumHeads();
    c.Nm = cfg.getNumMemories();
    c.M = cfg.getMemorySize();
    c.F = cfg.getFfnDim();
    c.C = cfg.getChunkSize();
    c.r = cfg.getDecayRank();
    c.Tmax = cfg.getMaxSeqLen();
    c.perHead = cfg.getGate() == GateKind::per_head;
    c.eps = cfg.getNormEps().convertToDouble();
    c.clampMin = cfg.getLogClampMin().convertToDouble();
    c.clampMax = cfg.getLogClampMax().convertToDouble();
    c.gatedBf16 = gatedBf16;
    c.gatedCluster = gatedCluster;
    if (target != "cpu" && target != "nvptx") {
      module.emitError() << "mmrec-build-train-kernels: unknown target '" << target
                         << "' (expected cpu or nvptx)";
      return signalPassFailure();
    }
    if (gatedBf16 && target != "nvptx") {
      module.emitError() << "mmrec-build-train-kernels: gated-bf16 applies to target=nvptx";
      return signalPassFailure();
    }
    if (gatedCluster && !gatedBf16) {
      module.emitError() << "mmrec-build-train-kernels: gated-cluster needs gated-bf16 (the "
                            "clustered kernels are the tensor-core ones)";
      return signalPassFailure();
    }
    OpBuilder b(module.getContext());
    buildTrainKernels(b, module.getLoc(), module, c, target == "nvptx");
    SmallVector<Attribute> list;
    auto strings = [&](const std::vector<std::string> &v) {
      SmallVector<Attribute> a;
      for (const std::string &s : v)
        a.push_back(b.getStringAttr(s));
      return b.getArrayAttr(a);
    };
    for (const TrainKernelSig &s : trainKernelSignatures(c))
      list.push_back(b.getDictionaryAttr({
          b.getNamedAttr("name", b.getStringAttr("train_" + s.name)),
          b.getNamedAttr("arrays", strings(s.arrays)),
          b.getNamedAttr("indices", strings(s.indices)),
      }));
    module->setAttr("mmrec.train_kernels", b.getArrayAttr(list));
    if (target == "nvptx") // which level-0 kernels (mmrec-compile's manifest)
      module->setAttr("mmrec.train_gated_kernels", b.getStringAttr(gatedGpuKernels(c)));
  }
};

} // namespace
