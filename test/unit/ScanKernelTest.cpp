//===- ScanKernelTest.cpp - generated scan kernels vs the float64 oracle -===//
//
// The kernels come from mmrec-compile on test/Inputs/scan_kernels.mlir.
// Every case draws fresh random inputs (the seed is printed on failure),
// runs the generated kernel (forward and adjoint) on the CPU or the GPU,
// and compares with the float64 oracle (lib/Reference) by
// ‖out − ref‖ / ‖ref on |inputs|‖ per output (relErrScaled: relative to
// the magnitude of the terms, which cancellation cannot shrink). GPU cases
// poison every output first so that an unwritten element fails; they skip
// when no GPU is present and carry the ctest label `gpu`.
//
//===----------------------------------------------------------------------===//

#include "KernelTestUtil.h"
#include "Reference/Scan.h"
#include "mmrec/runtime.h"
// SCAN_VARIANT: the same tests on kernels compiled with other options.
#ifndef SCAN_VARIANT
#define SCAN_VARIANT scan_kernels
#endif
#define MMREC_STR2(x) #x
#define MMREC_STR(x) MMREC_STR2(x)
#include MMREC_STR(SCAN_VARIANT.h)

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

using namespace mmrec::rt;
namespace K = mmrec::gen::SCAN_VARIANT;
namespace ref = mmrec::ref;

using namespace mmrec::test;

namespace {

enum class Variant { f32, f32_rev, bf16, slots, gated };

struct Shape { int64_t B, T, N; };

/// One forward + adjoint check of `v` at `s`; ℓ drawn in [lmin, lmax]
/// (values outside the clamp bounds exercise the clamp).
void checkScan(Where where, Variant v, Shape s, double lmin, double lmax, double tol) {
  uint64_t seed = freshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " B" + std::to_string(s.B) + " T" +
               std::to_string(s.T) + " N" + std::to_string(s.N));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> U(-1, 1), L(lmin, lmax);
  const bool slots = v == Variant::slots;
  const int64_t S = slots ? 3 : s.N, E = slots ? 8 : 1, N = S * E;
  const DType io = v == Variant::bf16 ? DType::bf16 : DType::f32;
  const bool hasInit = v != Variant::f32_rev, reverse = v == Variant::f32_rev;
  std::vector<int64_t> full{s.B, s.T}, st{s.B}, lshape{s.B, s.T, S};
  if (slots) { full.insert(full.end(), {S, E}); st.insert(st.end(), {S, E}); }
  else { full.push_back(N); st.push_back(N); }

  HostArray la(DType::f32, lshape), b(io, full), h0(io, st), h(io, full), fin(io, st);
  for (int64_t i = 0; i < la.numel(); ++i) la.set(i, L(rng));
  // The gated variant takes logits x; the oracle gets ℓ_raw = log σ(x).
  const bool gated = v == Variant::gated;
  std::vector<double> laRef = la.toDouble();
  if (gated)
    for (auto &x : laRef) x = -std::log1p(std::exp(-std::fabs(x))) + std::min(x, 0.0);
  for (int64_t i = 0; i < b.numel(); ++i) b.set(i, U(rng));
  for (int64_t i = 0; i < h0.numel(); ++i) h0.set(i, hasInit ? U(rng) : 0.0);
  h.poison();
  fin.poison();

  // Forward.
  {
    Runner run(where);
    switch (v) {
    case Variant::f32: K::scan_f32_kernel(run(la), run(b), run(h0), run(h), run(fin)); break;
    case Variant::f32_rev: K::scan_f32_rev_kernel(run(la), run(b), run(h), run(fin)); break;
    case Variant::bf16: K::scan_bf16_kernel(run(la), run(b), run(h0), run(h), run(fin)); break;
    case Variant::slots: K::scan_slots_kernel(run(la), run(b), run(h0), run(h), run(fin)); break;
    case Variant::gated: K::scan_gated_kernel(run(la), run(b), run(h0), run(h), run(fin)); break;
    }
    run.finish();
  }
  ref::ScanResult r = ref::scanForward(laRef, b.toDouble(), h0.toDouble(), s.B, s.T, S,
                                       E, -50.0, 0.0, reverse);
  auto absOf = [](std::vector<double> v) {
    for (double &x : v) x = std::fabs(x);
    return v;
  };
  const std::vector<double> bAbs = absOf(b.toDouble()), h0Abs = absOf(h0.toDouble());
  ref::ScanResult ra =
      ref::scanForward(laRef, bAbs, h0Abs, s.B, s.T, S, E, -50.0, 0.0, reverse);
  EXPECT_LE(relErrScaled(h.toDouble(), r.h, ra.h), tol) << "states h";
  EXPECT_LE(relErrScaled(fin.toDouble(), r.final, ra.final), tol) << "final state";
  if (slots)
    return; // the broadcast form has no adjoint kernel (memory-hierarchy issue)

  // Adjoint, from the kernel's own forward states (as training uses it).
  HostArray dy(io, full), dfin(io, st), dla(DType::f32, lshape), db(io, full), dh0(io, st);
  for (int64_t i = 0; i < dy.numel(); ++i) dy.set(i, U(rng));
  for (int64_t i = 0; i < dfin.numel(); ++i) dfin.set(i, U(rng));
  dla.poison();
  db.poison();
  dh0.poison();
  {
    Runner run(where);
    switch (v) {
    case Variant::f32:
      K::scan_f32_grad_kernel(run(la), run(h), run(h0), run(dy), run(dfin), run(dla), run(db),
                              run(dh0));
      break;
    case Variant::f32_rev:
      K::scan_f32_rev_grad_kernel(run(la), run(h), run(dy), run(dfin), run(dla), run(db));
      break;
    case Variant::bf16:
      K::scan_bf16_grad_kernel(run(la), run(h), run(h0), run(dy), run(dfin), run(dla), run(db),
                               run(dh0));
      break;
    case Variant::slots: break;
    case Variant::gated:
      K::scan_gated_grad_kernel(run(la), run(h), run(h0), run(dy), run(dfin), run(dla), run(db),
                                run(dh0));
      break;
    }
    run.finish();
  }
  ref::ScanGrads g = ref::scanBackward(laRef, b.toDouble(), h0.toDouble(), s.B, s.T, S,
                                       E, -50.0, 0.0, reverse, dy.toDouble(), dfin.toDouble());
  ref::ScanGrads ga =
      ref::scanBackward(laRef, bAbs, h0Abs, s.B, s.T, S, E, -50.0, 0.0, reverse,
                        absOf(dy.toDouble()), absOf(dfin.toDouble()));
  EXPECT_LE(relErrScaled(db.toDouble(), g.db, ga.db), tol) << "grad_b";
  if (gated) // d/dx = dℓ · d(log σ(x))/dx = dℓ · σ(-x)
    for (size_t i = 0; i < g.dlog.size(); ++i) {
      double x = la.get(int64_t(i));
      g.dlog[i] *= 1.0 / (1.0 + std::exp(x));
      ga.dlog[i] *= 1.0 / (1.0 + std::exp(x));
    }
  EXPECT_LE(relErrScaled(dla.toDouble(), g.dlog, ga.dlog), tol)
      << (gated ? "grad of the gate logits" : "grad_log_decay");
  if (hasInit) {
    EXPECT_LE(relErrScaled(dh0.toDouble(), g.dh0, ga.dh0), tol) << "grad_init";
  }
}

const Shape kShapes[] = {{1, 1, 1}, {3, 7, 5}, {2, 128, 33}, {1, 1000, 64}, {2, 4097, 12},
                         {1, 513, 257}, {5, 64, 128}};

void allShapes(Where where, Variant v, double tol) {
  for (const Shape &s : kShapes) {
    if (v == Variant::slots && s.N != 5 && s.N != 33)
      continue;
    checkScan(where, v, s, -3.0, 0.0, tol);
  }
}

bool haveGpu() { return gpuAvailable(); }

} // namespace

// ---- CPU (CI) ----------------------------------------------------------------
// fp32 kernels against float64: relative error ≤ 1e-6; bf16 I/O: 1e-2.
TEST(ScanKernelCpu, F32) { allShapes(Where::cpu, Variant::f32, 1e-6); }
TEST(ScanKernelCpu, F32Reverse) { allShapes(Where::cpu, Variant::f32_rev, 1e-6); }
TEST(ScanKernelCpu, BF16) { allShapes(Where::cpu, Variant::bf16, 1e-2); }
TEST(ScanKernelCpu, SlotBroadcast) { allShapes(Where::cpu, Variant::slots, 1e-6); }
TEST(ScanKernelCpu, FusedDecayGate) {
  for (const Shape &s : kShapes)
    checkScan(Where::cpu, Variant::gated, s, -8.0, 30.0, 1e-6);
}
TEST(ScanKernelCpu, ClampBoundsAreExercised) {
  // ℓ drawn across both clamp bounds: values below -50 and above 0.
  checkScan(Where::cpu, Variant::f32, {2, 300, 17}, -80.0, 5.0, 1e-6);
}
TEST(ScanKernelCpu, ExtremeDecaysStayFinite) {
  // γ = 0.001 and 0.999 over 32K steps, ℓ at the clamp bounds -50 and 0:
  // everything finite (relErr is infinite otherwise). With γ near 1 the fp32
  // state sums 32K terms, so the bound is the accumulation error, not 1e-6.
  for (double l : {std::log(0.001), std::log(0.999), -50.0, 0.0})
    checkScan(Where::cpu, Variant::f32, {1, 32768, 3}, l, l, 1e-4);
}
TEST(ScanKernelCpu, NoStepsPassTheStateThrough) {
  // T = 0: final = init (zeros without one), grad_init = grad_final.
  for (Variant v : {Variant::f32, Variant::f32_rev, Variant::bf16, Variant::gated})
    checkScan(Where::cpu, v, {3, 0, 5}, -3.0, 0.0, 1e-6);
}
TEST(ScanKernelCpu, ShapeMismatchIsAClearError) {
  HostArray la(DType::f32, {2, 3, 4}), b(DType::f32, {2, 3, 4}), h0(DType::f32, {2, 5}),
      h(DType::f32, {2, 3, 4}), fin(DType::f32, {2, 4});
  Runner run(Where::cpu);
  try {
    K::scan_f32_kernel(run(la), run(b), run(h0), run(h), run(fin));
    FAIL() << "expected an error";
  } catch (const Error &e) {
    EXPECT_STREQ(e.what(), "scan_f32_kernel: argument 'init' must have shape [2, 4], got [2, 5]");
  }
  HostArray bad(DType::bf16, {2, 3, 4});
  EXPECT_THROW(K::scan_f32_kernel(run(la), run(bad), run(h0), run(h), run(fin)), Error);
}

// ---- GPU (label gpu; run on the device machine) -----------------------------
// fp32 ≤ 1e-5 (exp is ex2.approx), bf16 I/O ≤ 1e-2.
#define GPU_TEST(name, body)                                                            \
  TEST(ScanKernelGpu, name) {                                                           \
    if (!haveGpu()) GTEST_SKIP() << "no GPU";                                          \
    body;                                                                               \
  }
GPU_TEST(F32, allShapes(Where::gpu, Variant::f32, 1e-5))
GPU_TEST(F32Reverse, allShapes(Where::gpu, Variant::f32_rev, 1e-5))
GPU_TEST(BF16, allShapes(Where::gpu, Variant::bf16, 1e-2))
GPU_TEST(SlotBroadcast, allShapes(Where::gpu, Variant::slots, 1e-5))
GPU_TEST(FusedDecayGate, {
  for (const Shape &s : kShapes)
    checkScan(Where::gpu, Variant::gated, s, -8.0, 30.0, 1e-5);
})
GPU_TEST(ClampBoundsAreExercised, checkScan(Where::gpu, Variant::f32, {2, 300, 17}, -80, 5, 1e-5))
GPU_TEST(LongSequenceManyBlocks, checkScan(Where::gpu, Variant::f32, {1, 32768, 4096}, -0.05, 0, 1e-5))
GPU_TEST(LongSequenceBF16, checkScan(Where::gpu, Variant::bf16, {2, 20000, 1024}, -0.05, 0, 1e-2))
GPU_TEST(NoStepsPassTheStateThrough, {
  for (Variant v : {Variant::f32, Variant::f32_rev, Variant::bf16, Variant::gated})
    checkScan(Where::gpu, v, {3, 0, 5}, -3.0, 0.0, 1e-6);
})
GPU_TEST(ExtremeDecaysStayFinite, {
  for (double l : {std::log(0.001), std::log(0.999), -50.0, 0.0})
    checkScan(Where::gpu, Variant::f32, {1, 32768, 3}, l, l, 1e-4);
})
