//===- FuseScanProducers.cpp - the decay gate into the scan kernel -------===//
//
// scan(log_decay(x){lo, hi}, b){lo, hi}  →  scan(x, b){lo, hi, gate_logits}
// when the log_decay has no other user: the kernel computes
// ℓ = clamp(−softplus(−x), lo, hi) as it loads x.
//
//===----------------------------------------------------------------------===//

#include "dialect/MMRecOps.h"
#include "dialect/Passes.h"

namespace mlir::mmrec {
#define GEN_PASS_DEF_MMRECFUSESCANPRODUCERS
#include "dialect/Passes.h.inc"
} // namespace mlir::mmrec

using namespace mlir;
using namespace mlir::mmrec;

namespace {
struct FuseScanProducersPass
    : mlir::mmrec::impl::MMRecFuseScanProducersBase<FuseScanProducersPass> {
  void runOnOperation() override {
    getOperation()->walk([](ScanOp scan) {
      auto gate = scan.getLogDecay().getDefiningOp<LogDecayOp>();
      if (!gate || scan.getGateLogits() || !gate->hasOneUse() ||
          gate.getClampMin() != scan.getClampMin() || gate.getClampMax() != scan.getClampMax())
        return;
      scan.getLogDecayMutable().assign(gate.getInput());
      scan.setGateLogits(true);
      gate->erase();
    });
  }
};
} // namespace
