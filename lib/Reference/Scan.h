//===- Scan.h - float64 reference of the log-space linear scan --*- C++ -*-===//
//
// h_t = exp(clamp(ℓ_t, lo, hi)) · h_{t-1} + b_t along axis 1 of (B, T, S, E)
// arrays (ℓ is (B, T, S): one decay per S-slot, broadcast over E channels;
// E = 1 for a plain per-channel scan), h_{-1} = h0 (zeros when h0 is
// empty), in forward or reverse order; and its exact vector-Jacobian
// product. Plain double-precision loops: the judge of the generated scan
// kernels (MMREC_SPEC level 0 decays and the level-2 memory recurrence).
//
//===----------------------------------------------------------------------===//

#ifndef MMREC_REFERENCE_SCAN_H
#define MMREC_REFERENCE_SCAN_H

#include <cstdint>
#include <vector>

namespace mmrec::ref {

struct ScanResult {
  std::vector<double> h;     // (B, T, S, E)
  std::vector<double> final; // (B, S, E): the state after the last step
};

struct ScanGrads {
  std::vector<double> dlog; // (B, T, S); zero where the clamp is active
  std::vector<double> db;   // (B, T, S, E)
  std::vector<double> dh0;  // (B, S, E)
};

ScanResult scanForward(const std::vector<double> &logDecay, const std::vector<double> &b,
                       const std::vector<double> &h0, int64_t B, int64_t T, int64_t S,
                       int64_t E, double clampMin, double clampMax, bool reverse);

/// Gradients of L given dL/dh (every step) and dL/dfinal.
ScanGrads scanBackward(const std::vector<double> &logDecay, const std::vector<double> &b,
                       const std::vector<double> &h0, int64_t B, int64_t T, int64_t S,
                       int64_t E, double clampMin, double clampMax, bool reverse,
                       const std::vector<double> &dh, const std::vector<double> &dfinal);

} // namespace mmrec::ref

#endif // MMREC_REFERENCE_SCAN_H
