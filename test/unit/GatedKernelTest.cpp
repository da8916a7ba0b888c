//===- GatedKernelTest.cpp - generated gated-recurrence kernels vs the oracle ===//
//
// The kernels come from mmrec-compile on test/Inputs/gated_kernels.mlir:
// the level-0 recurrence h_t = z_t ⊙ σ(h_{t-1}·W_g + b_g) + γ_t ⊙ h_{t-1}
// with a dense W_g (D = 48), per-head W_g (3 heads of 64, no init, clamp at
// -8), bf16 I/O (2 heads of 33), 4 heads of 128, 2 bf16 heads of 256, and
// dense gates beyond one GPU block
// (D = 320 fp32; D = 768 bf16 with init; the 7B model's D = 4096 bf16),
// which the GPU runs as cooperative kernels (the bf16 forwards on tensor
// cores). Every case draws fresh random inputs
// (the seed is printed on failure), runs the generated forward and adjoint
// (whose W_g and b_g gradients are products through BLAS / cuBLASLt) and
// compares every output with the float64 oracle (lib/Reference) by
// ‖out − ref‖ / ‖ref‖. GPU cases poison every output first and carry the
// ctest label `gpu`.
//
//===----------------------------------------------------------------------===//

#include "KernelTestUtil.h"
#include "Reference/Oracle.h"
#include "gated_kernels.h"

#include <gtest/gtest.h>

using namespace mmrec::test;
namespace K = mmrec::gen::gated_kernels;
namespace ref = mmrec::ref;

namespace {

enum class Variant { dense, heads, bf16, wide, b7, h128, small, h256 };

struct Config {
  int64_t D, H;
  bool perHead, hasInit;
  DType io;
  double lo;
};

Config configOf(Variant v) {
  switch (v) {
  case Variant::dense: return {48, 1, false, true, DType::f32, -50.0};
  case Variant::heads: return {192, 3, true, false, DType::f32, -8.0};
  case Variant::bf16: return {66, 2, true, true, DType::bf16, -50.0};
  case Variant::wide: return {320, 1, false, true, DType::f32, -50.0};
  case Variant::b7: return {4096, 1, false, false, DType::bf16, -50.0};
  case Variant::h128: return {512, 4, true, true, DType::f32, -50.0};
  case Variant::small: return {768, 1, false, true, DType::bf16, -50.0};
  case Variant::h256: return {512, 2, true, true, DType::bf16, -50.0};
  }
  return {};
}

ref::Tensor tensorOf(const HostArray &a) {
  ref::Tensor t(a.shape);
  t.data = a.toDouble();
  return t;
}

/// One forward + adjoint check. ℓ is drawn in [lmin, lmax] (beyond the
/// clamp bounds exercises them); W_g ~ U(-w, w).
void checkGated(Where where, Variant v, int64_t B, int64_t T, double tol, double lmin = -10.0,
                double lmax = 0.5) {
  const Config c = configOf(v);
  const double w = 2.0 / std::sqrt(double(c.D / c.H)); // pre-activations O(1)
  const uint64_t seed = freshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " B" + std::to_string(B) + " T" +
               std::to_string(T));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> U(-1, 1), L(lmin, lmax), Wd(-w, w);
  const int64_t D = c.D, dh = D / c.H;
  std::vector<int64_t> seq{B, T, D}, st{B, D}, wshape = c.perHead
                                                          ? std::vector<int64_t>{c.H, dh, dh}
                                                          : std::vector<int64_t>{D, D};
  HostArray z(c.io, seq), l(DType::f32, seq), W(c.io, wshape), bg(c.io, {D}), h0(c.io, st),
      h(c.io, seq), fin(c.io, st);
  for (int64_t i = 0; i < z.numel(); ++i) z.set(i, U(rng));
  for (int64_t i = 0; i < l.numel(); ++i) l.set(i, L(rng));
  for (int64_t i = 0; i < W.numel(); ++i) W.set(i, Wd(rng));
  for (int64_t i = 0; i < bg.numel(); ++i) bg.set(i, 0.5 * U(rng));
  for (int64_t i = 0; i < h0.numel(); ++i) h0.set(i, U(rng));
  h.poison();
  fin.poison();
  {
    Runner run(where);
    switch (v) {
    case Variant::dense:
      K::gated_dense_kernel(run(z), run(l), run(W), run(bg), run(h0), run(h), run(fin));
      break;
    case Variant::heads: K::gated_heads_kernel(run(z), run(l), run(W), run(bg), run(h), run(fin)); break;
    case Variant::bf16:
      K::gated_bf16_kernel(run(z), run(l), run(W), run(bg), run(h0), run(h), run(fin));
      break;
    case Variant::wide:
      K::gated_wide_kernel(run(z), run(l), run(W), run(bg), run(h0), run(h), run(fin));
      break;
    case Variant::b7: K::gated_7b_kernel(run(z), run(l), run(W), run(bg), run(h), run(fin)); break;
    case Variant::h128:
      K::gated_h128_kernel(run(z), run(l), run(W), run(bg), run(h0), run(h), run(fin));
      break;
    case Variant::small:
      K::gated_768_kernel(run(z), run(l), run(W), run(bg), run(h0), run(h), run(fin));
      break;
    case Variant::h256:
      K::gated_h256_kernel(run(z), run(l), run(W), run(bg), run(h0), run(h), run(fin));
      break;
    }
    run.finish();
  }
  // The oracle takes γ = exp(clamp(ℓ)).
  ref::Tensor gamma = tensorOf(l);
  std::vector<double> mask(gamma.data.size());
  for (size_t i = 0; i < gamma.data.size(); ++i) {
    double x = gamma.data[i];
    mask[i] = x >= c.lo && x <= 0.0 ? 1.0 : 0.0;
    gamma.data[i] = std::exp(std::min(std::max(x, c.lo), 0.0));
  }
  ref::Tensor zt = tensorOf(z), Wt = tensorOf(W), bt = tensorOf(bg),
              h0t = c.hasInit ? tensorOf(h0) : ref::Tensor();
  ref::RecurrenceOut r = ref::gatedRecurrence(zt, gamma, Wt, bt, h0t);
  EXPECT_LE(relErr(h.toDouble(), r.h.data), tol) << "states h";
  EXPECT_LE(relErr(fin.toDouble(), r.final.data), tol) << "final state";

  // Adjoint from the kernel's own forward states, as training uses it.
  HostArray dy(c.io, seq), dfin(c.io, st), dz(c.io, seq), dl(DType::f32, seq), dW(c.io, wshape),
      db(c.io, {D}), dh0(c.io, st);
  for (int64_t i = 0; i < dy.numel(); ++i) dy.set(i, U(rng));
  for (int64_t i = 0; i < dfin.numel(); ++i) dfin.set(i, U(rng));
  for (HostArray *a : {&dz, &dl, &dW, &db, &dh0}) a->poison();
  {
    Runner run(where);
    switch (v) {
    case Variant::dense:
      K::gated_dense_grad_kernel(run(z), run(l), run(W), run(bg), run(h0), run(h), run(dy),
                                 run(dfin), run(dz), run(dl), run(dW), run(db), run(dh0));
      break;
    case Variant::heads:
      K::gated_heads_grad_kernel(run(z), run(l), run(W), run(bg), run(h), run(dy), run(dfin),
                                 run(dz), run(dl), run(dW), run(db));
      break;
    case Variant::bf16:
      K::gated_bf16_grad_kernel(run(z), run(l), run(W), run(bg), run(h0), run(h), run(dy),
                                run(dfin), run(dz), run(dl), run(dW), run(db), run(dh0));
      break;
    case Variant::wide:
      K::gated_wide_grad_kernel(run(z), run(l), run(W), run(bg), run(h0), run(h), run(dy),
                                run(dfin), run(dz), run(dl), run(dW), run(db), run(dh0));
      break;
    case Variant::b7:
      K::gated_7b_grad_kernel(run(z), run(l), run(W), run(bg), run(h), run(dy), run(dfin),
                              run(dz), run(dl), run(dW), run(db));
      break;
    case Variant::h128:
      K::gated_h128_grad_kernel(run(z), run(l), run(W), run(bg), run(h0), run(h), run(dy),
                                run(dfin), run(dz), run(dl), run(dW), run(db), run(dh0));
      break;
    case Variant::small:
      K::gated_768_grad_kernel(run(z), run(l), run(W), run(bg), run(h0), run(h), run(dy),
                               run(dfin), run(dz), run(dl), run(dW), run(db), run(dh0));
      break;
    case Variant::h256:
      K::gated_h256_grad_kernel(run(z), run(l), run(W), run(bg), run(h0), run(h), run(dy),
                                run(dfin), run(dz), run(dl), run(dW), run(db), run(dh0));
      break;
    }
    run.finish();
  }
  ref::RecurrenceGrads g =
      ref::gatedRecurrenceBackward(zt, gamma, Wt, bt, h0t, tensorOf(dy), tensorOf(dfin));
  // dℓ = dγ · γ where the clamp passes the gradient.
  std::vector<double> dlRef(g.dgamma.data.size());
  for (size_t i = 0; i < dlRef.size(); ++i) dlRef[i] = g.dgamma.data[i] * gamma.data[i] * mask[i];
  EXPECT_LE(relErr(dz.toDouble(), g.dz.data), tol) << "grad_z";
  EXPECT_LE(relErr(dl.toDouble(), dlRef), tol) << "grad_log_decay";
  EXPECT_LE(relErr(dW.toDouble(), g.dWg.data), tol) << "grad_gate";
  EXPECT_LE(relErr(db.toDouble(), g.dbg.data), tol) << "grad_bias";
  if (c.hasInit) {
    EXPECT_LE(relErr(dh0.toDouble(), g.dh0.data), tol) << "grad_init";
  }
}

struct BT { int64_t B, T; };
// T = 1, 5, 513 (ragged), 2048; B = 1, 3, 8.
const BT kShapes[] = {{1, 1}, {3, 5}, {2, 513}, {8, 64}, {1, 2048}};

void allShapes(Where where, Variant v, double tol) {
  for (const BT &s : kShapes)
    checkGated(where, v, s.B, s.T, tol);
}

} // namespace

// ---- CPU (CI) ----------------------------------------------------------------
// fp32 relative error ≤ 1e-4, bf16 I/O ≤ 2e-2 (the bounds).
TEST(GatedKernelCpu, Dense) { allShapes(Where::cpu, Variant::dense, 1e-4); }
TEST(GatedKernelCpu, PerHead) { allShapes(Where::cpu, Variant::heads, 1e-4); }
TEST(GatedKernelCpu, BF16) { allShapes(Where::cpu, Variant::bf16, 2e-2); }
TEST(GatedKernelCpu, PerHead128) {
  checkGated(Where::cpu, Variant::h128, 1, 1, 1e-4);
  checkGated(Where::cpu, Variant::h128, 3, 5, 1e-4);
  checkGated(Where::cpu, Variant::h128, 8, 130, 1e-4);
}
TEST(GatedKernelCpu, PerHead256) {
  checkGated(Where::cpu, Variant::h256, 3, 5, 2e-2);
  checkGated(Where::cpu, Variant::h256, 2, 70, 2e-2);
}
TEST(GatedKernelCpu, DenseWide) {
  checkGated(Where::cpu, Variant::wide, 1, 1, 1e-4);
  checkGated(Where::cpu, Variant::wide, 3, 5, 1e-4);
  checkGated(Where::cpu, Variant::wide, 2, 130, 1e-4);
}
TEST(GatedKernelCpu, DenseSmallModel) {
  checkGated(Where::cpu, Variant::small, 3, 5, 2e-2);
  checkGated(Where::cpu, Variant::small, 9, 33, 2e-2);
}
TEST(GatedKernelCpu, Dense7B) {
  checkGated(Where::cpu, Variant::b7, 1, 1, 2e-2);
  checkGated(Where::cpu, Variant::b7, 3, 4, 2e-2);
}
TEST(GatedKernelCpu, ThousandStepsAtUnitDecayStayFinite) {
  // γ → 1 (ℓ = 0) for 1000 steps: the state grows but stays finite.
  checkGated(Where::cpu, Variant::dense, 2, 1000, 1e-4, 0.0, 0.0);
  checkGated(Where::cpu, Variant::heads, 2, 1000, 1e-4, 0.0, 0.0);
}
TEST(GatedKernelCpu, NoStepsPassTheStateThrough) {
  // T = 0: final = init (zeros without one), grad_init = grad_final, no
  // gradient for W_g and b_g — against the oracle like every other shape.
  for (Variant v : {Variant::dense, Variant::heads, Variant::bf16, Variant::wide})
    checkGated(Where::cpu, v, 3, 0, 1e-6);
}
TEST(GatedKernelCpu, ShapeMismatchIsAClearError) {
  HostArray z(DType::f32, {2, 3, 48}), l(DType::f32, {2, 3, 48}), W(DType::f32, {48, 47}),
      bg(DType::f32, {48}), h0(DType::f32, {2, 48}), h(DType::f32, {2, 3, 48}),
      fin(DType::f32, {2, 48});
  Runner run(Where::cpu);
  try {
    K::gated_dense_kernel(run(z), run(l), run(W), run(bg), run(h0), run(h), run(fin));
    FAIL() << "expected an error";
  } catch (const Error &e) {
    EXPECT_STREQ(e.what(),
                 "gated_dense_kernel: argument 'gate' must have shape [48, 48], got [48, 47]");
  }
  HostArray bad(DType::bf16, {2, 3, 48}), W2(DType::f32, {48, 48});
  EXPECT_THROW(K::gated_dense_kernel(run(bad), run(l), run(W2), run(bg), run(h0), run(h), run(fin)),
               Error);
}

// ---- GPU (label gpu; run on the device machine) -----------------------------
#define GPU_TEST(name, body)                                                            \
  TEST(GatedKernelGpu, name) {                                                          \
    if (!gpuAvailable()) GTEST_SKIP() << "no GPU";                                     \
    body;                                                                               \
  }
GPU_TEST(Dense, allShapes(Where::gpu, Variant::dense, 1e-4))
GPU_TEST(PerHead, allShapes(Where::gpu, Variant::heads, 1e-4))
GPU_TEST(BF16, allShapes(Where::gpu, Variant::bf16, 2e-2))
GPU_TEST(PerHead128, allShapes(Where::gpu, Variant::h128, 1e-4))
GPU_TEST(PerHead256, {
  // dh = 256: W_g's block in shared memory as bf16.
  checkGated(Where::gpu, Variant::h256, 1, 1, 2e-2);
  checkGated(Where::gpu, Variant::h256, 3, 5, 2e-2);
  checkGated(Where::gpu, Variant::h256, 8, 513, 2e-2);
})
// The cooperative kernels of the dense gate (W_g beyond one block).
GPU_TEST(DenseWideCooperative, {
  for (const BT &s : kShapes)
    if (s.T <= 513) checkGated(Where::gpu, Variant::wide, s.B, s.T, 1e-4);
  checkGated(Where::gpu, Variant::wide, 11, 37, 1e-4); // more rows than one tile of 8
})
GPU_TEST(DenseSmallModelTensorCores, {
  // bf16, D = 768, an initial state: the tensor-core forward, 9 rows = 2 tiles.
  checkGated(Where::gpu, Variant::small, 1, 1, 2e-2);
  checkGated(Where::gpu, Variant::small, 3, 5, 2e-2);
  checkGated(Where::gpu, Variant::small, 9, 513, 2e-2);
})
GPU_TEST(Dense7BCooperative, {
  checkGated(Where::gpu, Variant::b7, 1, 1, 2e-2);
  checkGated(Where::gpu, Variant::b7, 3, 4, 2e-2);
  checkGated(Where::gpu, Variant::b7, 8, 9, 2e-2);
})
GPU_TEST(ManyRowsPerBlock, {
  // B·H large enough that the launcher picks blocks of 2 and 4 rows.
  checkGated(Where::gpu, Variant::heads, 400, 9, 1e-4);
  checkGated(Where::gpu, Variant::heads, 800, 5, 1e-4);
  checkGated(Where::gpu, Variant::bf16, 1111, 3, 2e-2);
})
GPU_TEST(NoStepsPassTheStateThrough, {
  for (Variant v : {Variant::dense, Variant::heads, Variant::bf16, Variant::wide, Variant::small})
    checkGated(Where::gpu, v, 3, 0, 1e-6);
})
GPU_TEST(ThousandStepsAtUnitDecayStayFinite, {
  checkGated(Where::gpu, Variant::dense, 2, 1000, 1e-4, 0.0, 0.0);
  checkGated(Where::gpu, Variant::heads, 2, 1000, 1e-4, 0.0, 0.0);
  checkGated(Where::gpu, Variant::wide, 2, 1000, 1e-4, 0.0, 0.0);
})
