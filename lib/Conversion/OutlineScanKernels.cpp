//===- OutlineScanKernels.cpp - scans to fused kernels ------------------===//
//
// Generates the kernels of every mmrec.scan / mmrec.scan_grad (see
// ScanKernels.h) and records them in the module's `mmrec.kernels` array:
//   { name, op ("scan" | "scan_grad"), target, element_type, has_init,
//     reverse, inner, vec, steps, warps, clamp_min, clamp_max, args }
//
//===----------------------------------------------------------------------===//

#include "lib/Conversion/GatedKernels.h"
#include "lib/Conversion/ScanKernels.h"

#include "dialect/MMRecOps.h"
#include "dialect/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

namespace mlir::mmrec {
#define GEN_PASS_DEF_MMRECOUTLINESCANKERNELS
#include "dialect/Passes.h.inc"
} // namespace mlir::mmrec

using namespace mlir;
using namespace mlir::mmrec;

namespace {

struct OutlineScanKernelsPass
    : mlir::mmrec::impl::MMRecOutlineScanKernelsBase<OutlineScanKernelsPass> {
  using Base::Base;

  DictionaryAttr describe(OpBuilder &b, const ScanKernelSpec &s, bool gpu,
                         RankedTensorType seqType, int64_t logRank) {
    SmallVector<NamedAttribute> d;
    auto set = [&](StringRef k, Attribute v) { d.push_back(b.getNamedAttr(k, v)); };
    set("name", b.getStringAttr(s.name));
    set("op", b.getStringAttr(s.kind == ScanKernelKind::Forward ? "scan" : "scan_grad"));
    set("target", b.getStringAttr(gpu ? "nvptx" : "cpu"));
    set("element_type", TypeAttr::get(s.elementType));
    set("has_init", b.getBoolAttr(s.hasInit));
    set("reverse", b.getBoolAttr(s.reverse));
    set("inner", b.getI64IntegerAttr(s.inner));
    set("gate_logits", b.getBoolAttr(s.gateLogits));
    set("vec", b.getI64IntegerAttr(s.vec));
    set("steps", b.getI64IntegerAttr(s.steps));
    set("warps", b.getI64IntegerAttr(s.warps));
    set("min_blocks", b.getI64IntegerAttr(s.minBlocks));
    if (gpu)
      set("ticket", b.getBoolAttr(s.ticket));
    set("shared_bytes", b.getI64IntegerAttr(gpu ? s.sharedBytes() : 0));
    set("clamp_min", b.getF64FloatAttr(s.clampMin));
    set("clamp_max", b.getF64FloatAttr(s.clampMax));
    SmallVector<Attribute> args;
    for (const std::string &a : s.arrayArgs())
      args.push_back(b.getStringAttr(a));
    set("args", b.getArrayAttr(args));
    SmallVector<int64_t> shape;
    for (int64_t d : seqType.getShape())
      shape.push_back(ShapedType::isDynamic(d) ? -1 : d);
    set("shape", b.getDenseI64ArrayAttr(shape));
    set("log_rank", b.getI64IntegerAttr(logRank));
    return b.getDictionaryAttr(d);
  }

  DictionaryAttr describeGated(OpBuilder &b, const GatedKernelSpec &s, bool gpu,
                               StringRef publicName) {
    SmallVector<NamedAttribute> d;
    auto set = [&](StringRef k, Attribute v) { d.push_back(b.getNamedAttr(k, v)); };
    set("name", b.getStringAttr(s.name));
    set("public_name", b.getStringAttr(publicName));
    set("op", b.getStringAttr(s.adjoint ? "gated_recurrence_grad" : "gated_recurrence"));
    set("target", b.getStringAttr(gpu ? "nvptx" : "cpu"));
    set("element_type", TypeAttr::get(s.elementType));
    set("has_init", b.getBoolAttr(s.hasInit));
    set("channels", b.getI64IntegerAttr(s.channels));
    set("heads", b.getI64IntegerAttr(s.heads));
    set("per_head", b.getBoolAttr(s.perHead));
    set("rows", b.getI64IntegerAttr(s.rows));
    set("threads", b.getI64IntegerAttr(s.threads()));
    set("shared_bytes", b.getI64IntegerAttr(gpu ? s.sharedBytes() : 0));
    set("cooperative", b.getBoolAttr(s.cooperative));
    set("channels_per_block", b.getI64IntegerAttr(s.channelsPerBlock));
    set("mma", b.getBoolAttr(s.mma));
    set("clamp_min", b.getF64FloatAttr(s.clampMin));
    set("clamp_max", b.getF64FloatAttr(s.clampMax));
    SmallVector<Attribute> args;
    for (const std::string &a : s.arrayArgs())
      args.push_back(b.getStringAttr(a));
    set("args", b.getArrayAttr(args));
    return b.getDictionaryAttr(d);
  }

  /// Kernels of a mmrec.gated_recurrence(_grad): on the GPU one persistent
  /// kernel per block height R ∈ {1, 2, 4} (the launcher picks by B·H), when
  /// W_g's block fits in shared memory; on the CPU one loop nest.
  LogicalResult outlineGated(Operation *op, OpBuilder &b, bool gpu,
                             llvm::function_ref<Operation *()> getGpuModule,
                             SmallVectorImpl<Attribute> &kernels, const std::string &name) {
    GatedKernelSpec spec;
    spec.name = name;
    Value z = op->getOperand(0), gate = op->getOperand(2);
    if (auto f = llvm::dyn_cast<GatedRecurrenceOp>(op)) {
      spec.hasInit = bool(f.getInit());
      spec.clampMin = f.getClampMin().convertToDouble();
      spec.clampMax = f.getClampMax().convertToDouble();
    } else {
      auto g = llvm::cast<GatedRecurrenceGradOp>(op);
      spec.adjoint = true;
      spec.hasInit = bool(g.getInit());
      spec.clampMin = g.getClampMin().convertToDouble();
      spec.clampMax = g.getClampMax().convertToDouble();
    }
    auto zt = llvm::cast<RankedTensorType>(z.getType());
    auto wt = llvm::cast<RankedTensorType>(gate.getType());
    if (zt.isDynamicDim(2) || !wt.hasStaticShape())
      return op->emitOpError() << "the channel count and W_g's shape must be static to "
                                  "generate a kernel";
    spec.elementType = zt.getElementType();
    spec.channels = zt.getDimSize(2);
    spec.perHead = wt.getRank() == 3;
    spec.heads = spec.perHead ? wt.getDimSize(0) : 1;
    if (!getElementTypeOrSelf(op->getOperand(1).getType()).isF32())
      return op->emitOpError() << "kernels take fp32 log-space decays";
    if (!gpu) {
      buildCpuGatedKernel(b, op->getLoc(), getModuleOp(op), spec);
      kernels.push_back(describeGated(b, spec, false, name));
      return success();
    }
    if (spec.elementType.isF64())
      return op->emitOpError() << "the nvptx target supports bf16, f16 and f32 I/O, not f64";
    // 227 KiB: the H100's opt-in shared memory per block.
    for (int64_t rows : {1, 2, 4}) {
      GatedKernelSpec v = spec;
      v.rows = rows;
      v.name = name + "_r" + std::to_string(rows);
      if (v.sharedBytes() > 227 * 1024)
        continue;
      buildGpuGatedKernel(b, op->getLoc(), getGpuModule(), v);
      kernels.push_back(describeGated(b, v, true, name));
    }
    // A dense gate too large for one block: the cooperative kernel.
    if (!spec.perHead && spec.sharedBytes() > 227 * 1024) {
      GatedKernelSpec v = spec;
      v.cooperative = true;
      v.channelsPerBlock = GatedKernelSpec::coopChannels(spec.channels);
      v.name = name + "_coop";
      if (GatedKernelSpec::mmaApplies(spec.elementType, spec.channels)) {
        v.mma = true;
        v.channelsPerBlock = 32;
      }
      if (v.channelsPerBlock == 0)
        return op->emitOpError() << "no split of " << spec.channels
                                 << " channels into at most 128 blocks of at most 256";
      buildGpuCoopGatedKernel(b, op->getLoc(), getGpuModule(), v);
      kernels.push_back(describeGated(b, v, true, name));
    }
    return success();
  }

  static ModuleOp getModuleOp(Operation *op) {
    return op->getParentOfType<ModuleOp>();
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    bool gpu;
    if (target == "nvptx")
      gpu = true;
    else if (target == "cpu")
      gpu = false;
    else {
      module.emitError() << "mmrec-outline-scan-kernels: unknown target '" << target
                         << "' (expected cpu or nvptx)";
      return signalPassFailure();
    }
    OpBuilder b(module.getContext());
    SmallVector<Attribute> kernels;
    if (auto existing = module->getAttrOfType<ArrayAttr>("mmrec.kernels"))
      kernels.append(existing.begin(), existing.end());

    Operation *gpuModule = nullptr;
    auto getGpuModule = [&]() {
      if (!gpuModule) {
        b.setInsertionPointToEnd(module.getBody());
        gpuModule = gpu::GPUModuleOp::create(b, module.getLoc(), "mmrec_kernels");
        module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(), b.getUnitAttr());
      }
      return gpuModule;
    };

    llvm::StringMap<int> used;
    WalkResult result = module.walk([&](Operation *op) -> WalkResult {
      if (llvm::isa<GatedRecurrenceOp, GatedRecurrenceGradOp>(op)) {
        auto func = op->getParentOfType<func::FuncOp>();
        std::string base = func ? func.getSymName().str() : "gated";
        int count = used[base]++;
        std::string name = (count ? base + "_" + std::to_string(count) : base) + "_kernel";
        if (failed(outlineGated(op, b, gpu, getGpuModule, kernels, name)))
          return WalkResult::interrupt();
        op->setAttr("mmrec.kernel", b.getStringAttr(name));
        return WalkResult::advance();
      }
      if (!llvm::isa<ScanOp, ScanGradOp>(op))
        return WalkResult::advance();
      ScanKernelSpec spec;
      auto func = op->getParentOfType<func::FuncOp>();
      std::string base = func ? func.getSymName().str() : "scan";
      int count = used[base]++;
      spec.name = (count ? base + "_" + std::to_string(count) : base) + "_kernel";
      Type bType;
      int64_t logRank = llvm::cast<RankedTensorType>(op->getOperand(0).getType()).getRank();
      if (auto scan = llvm::dyn_cast<ScanOp>(op)) {
        spec.kind = ScanKernelKind::Forward;
        bType = scan.getB().getType();
        spec.hasInit = bool(scan.getInit());
        spec.reverse = scan.getReverse();
        spec.clampMin = scan.getClampMin().convertToDouble();
        spec.clampMax = scan.getClampMax().convertToDouble();
        spec.gateLogits = scan.getGateLogits();
        auto la = llvm::cast<RankedTensorType>(scan.getLogDecay().getType());
        auto bt = llvm::cast<RankedTensorType>(bType);
        for (int64_t i = la.getRank(); i < bt.getRank(); ++i) {
          if (bt.isDynamicDim(i))
            return op->emitOpError() << "broadcast axes of b must be static to generate a kernel";
          spec.inner *= bt.getDimSize(i);
        }
      } else {
        auto grad = llvm::cast<ScanGradOp>(op);
        spec.kind = ScanKernelKind::Adjoint;
        bType = grad.getH().getType();
        spec.hasInit = bool(grad.getInit());
        spec.reverse = grad.getReverse();
        spec.clampMin = grad.getClampMin().convertToDouble();
        spec.clampMax = grad.getClampMax().convertToDouble();
        spec.gateLogits = grad.getGateLogits();
      }
      spec.elementType = getElementTypeOrSelf(bType);
      if (!getElementTypeOrSelf(op->getOperand(0).getType()).isF32())
        return op->emitOpError() << "kernels take fp32 log-space decays";
      if (gpu && spec.elementType.isF64())
        return op->emitOpError() << "the nvptx target supports bf16, f16 and f32 I/O, not f64";
      unsigned bytes = spec.elementType.getIntOrFloatBitWidth() / 8;
      // 4 channels a thread by default (16-byte loads of fp32; for 16-bit
      // I/O, 8 channels held 253 registers in the forward and ran slower,
      // H200 B8·T2048 bf16 68% → 71% of the floor with 4; the adjoint holds
      // twice the registers a step).
      spec.vec = vec > 0 ? vec : std::min<int64_t>(16 / bytes, 4);
      if (spec.inner > 1 && spec.inner % spec.vec != 0)
        spec.vec = 1;
      spec.steps = steps > 0 ? steps : 8;
      // The 16-bit adjoint moves 8 bytes of each input a step (4 channels):
      // 12 steps a thread keep more bytes in flight (16 measured faster
      // still but spills: 276 bytes). It replaces the long-block variant
      // (8 × 8); its unstaged form is the long variant (see below).
      const bool defaultTiling16 = vec == 0 && steps == 8 && warps == 4 && bytes == 2;
      const bool wideAdjoint = defaultTiling16 && spec.kind == ScanKernelKind::Adjoint;
      if (wideAdjoint)
        spec.steps = 12;
      // The 16-bit forward likewise moves 8 bytes of each input a step: 16
      // steps a thread give its blocks the bytes of the fp32 forward's
      // (244 registers, no spills). H100, B8·T2048·D4096 bf16, blocks placed
      // by index (session 22): 91.6% of the HBM floor against 88.4–89.7%
      // with 8 steps. Long sequences keep the long-block variant below.
      if (defaultTiling16 && spec.kind == ScanKernelKind::Forward)
        spec.steps = 16;
      spec.warps = warps;
      spec.minBlocks = minBlocks;
      // The 16-bit adjoint stages its inputs in shared memory where the
      // sequence is split over many channel tiles (H100 B8·T2048·D4096 bf16:
      // 0.392 ms against 0.420 unstaged, session 18); over few channels and
      // long sequences the unstaged one is faster (B1·T32768: fwd+bwd 82.9%
      // of the floor against 80.0%) and is built below as its long variant.
      spec.stage = stage == 1 || (stage < 0 && wideAdjoint);
      spec.stream = stream == 1;
      // Blocks take their place along T from blockIdx.x unless asked for the
      // atomic ticket: H100, session 22, forward B8·T2048 bf16 85.9 → 88.4–89.7%
      // and B1·T32768 bf16 89.2 → 93.0–93.4% of the floor, fwd+bwd +3–5 points.
      spec.ticket = ticket == 1;
      if (gpu) {
        buildGpuScanKernel(b, op->getLoc(), getGpuModule(), spec);
        kernels.push_back(describe(b, spec, true, llvm::cast<RankedTensorType>(bType), logRank));
        // Long sequences over few channels (B = 1, T = 32768) are limited by
        // the serial resolution of carries along T: a variant with longer
        // blocks shortens the chain. The launcher picks it. Measured on the
        // H200 (B1·T32768·D4096, forward, % of the floor): fp32 4 × 16 85%
        // (8 × 16: 76%); 16-bit I/O 8 × 16 with its inputs staged in shared
        // memory 81% (unstaged 69%). The adjoint: 8 × 8.
        if (wideAdjoint && stage < 0) {
          ScanKernelSpec longer = spec;
          longer.stage = false;
          longer.name += "_long";
          buildGpuScanKernel(b, op->getLoc(), getGpuModule(), longer);
          kernels.push_back(describe(b, longer, true, llvm::cast<RankedTensorType>(bType), logRank));
        }
        if (spec.vec > 1 && steps == 8 && warps == 4 && !wideAdjoint) {
          ScanKernelSpec longer = spec;
          const bool fwd = spec.kind == ScanKernelKind::Forward;
          longer.warps = fwd && bytes == 4 ? 4 : 8;
          longer.steps = fwd ? 16 : 8;
          longer.vec = std::min<int64_t>(spec.vec, 4);
          if (spec.inner > 1 && spec.inner % longer.vec != 0)
            longer.vec = 1;
          longer.stage = stage == 1 || (stage < 0 && fwd && bytes == 2);
          longer.name += "_long";
          buildGpuScanKernel(b, op->getLoc(), getGpuModule(), longer);
          kernels.push_back(describe(b, longer, true, llvm::cast<RankedTensorType>(bType), logRank));
        }
        if (spec.vec > 1) {
          ScanKernelSpec scalar = spec;
          scalar.vec = 1;
          scalar.steps = 8;
          scalar.stage = false;
          scalar.name += "_v1";
          buildGpuScanKernel(b, op->getLoc(), getGpuModule(), scalar);
          kernels.push_back(describe(b, scalar, true, llvm::cast<RankedTensorType>(bType), logRank));
        }
      } else {
        spec.vec = 1;
        buildCpuScanKernel(b, op->getLoc(), module, spec);
        kernels.push_back(describe(b, spec, false, llvm::cast<RankedTensorType>(bType), logRank));
      }
      op->setAttr("mmrec.kernel", b.getStringAttr(spec.name));
      return WalkResult::advance();
    });
    if (result.wasInterrupted())
      return signalPassFailure();
    module->setAttr("mmrec.kernels", b.getArrayAttr(kernels));
  }
};

} // namespace
