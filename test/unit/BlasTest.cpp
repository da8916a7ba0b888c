//===- BlasTest.cpp - the runtime's gemm against a double loop ----------===//
//
// mmrec::rt::gemm on OpenBLAS (CPU, in CI) and cuBLASLt (GPU, label `gpu`):
// every transpose combination, odd sizes, batches with strides, leading
// dimensions wider than the rows, beta ≠ 0, f32 and bf16, two batch axes
// (groups interleaved in the rows, as the memory hierarchy's products lay
// them out; one pointer-array batch on the GPU), and the validation errors. Fresh random inputs; the seed is printed on failure.
//
//===----------------------------------------------------------------------===//

#include "KernelTestUtil.h"
#include "mmrec/blas.h"

#include <gtest/gtest.h>

#include <string>

using namespace mmrec::test;

namespace {

struct Case {
  int64_t m, n, k;
  bool ta, tb;
  int64_t batch, pad; // extra columns in every leading dimension
  float alpha, beta;
};

/// `groups` > 1: group g's matrices are columns g·(cols + pad) .. of rows
/// `groups` times as wide (groupStride = cols + pad, ld = groups·that).
void checkGemm(Where where, const Case &c, DType ab, DType ct, double tol, bool fastBf16 = false,
               int64_t groups = 1) {
  const uint64_t seed = freshSeed();
  SCOPED_TRACE("seed " + std::to_string(seed) + " m" + std::to_string(c.m) + " n" +
               std::to_string(c.n) + " k" + std::to_string(c.k) + (c.ta ? " tA" : "") +
               (c.tb ? " tB" : "") + " batch" + std::to_string(c.batch) + " groups" +
               std::to_string(groups));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> U(-1, 1);
  GemmDesc d;
  d.m = c.m; d.n = c.n; d.k = c.k; d.transA = c.ta; d.transB = c.tb;
  const int64_t aRows = c.ta ? c.k : c.m, aCols = c.ta ? c.m : c.k;
  const int64_t bRows = c.tb ? c.n : c.k, bCols = c.tb ? c.k : c.n;
  d.groups = groups;
  d.groupStrideA = aCols + c.pad; d.groupStrideB = bCols + c.pad; d.groupStrideC = c.n + c.pad;
  d.lda = groups * d.groupStrideA; d.ldb = groups * d.groupStrideB; d.ldc = groups * d.groupStrideC;
  d.batch = c.batch;
  d.strideA = aRows * d.lda; d.strideB = bRows * d.ldb; d.strideC = c.m * d.ldc;
  d.alpha = c.alpha; d.beta = c.beta;
  d.fastBf16 = fastBf16;
  HostArray A(ab, {c.batch * d.strideA}), B(ab, {c.batch * d.strideB}), C(ct, {c.batch * d.strideC});
  for (int64_t i = 0; i < A.numel(); ++i) A.set(i, U(rng));
  for (int64_t i = 0; i < B.numel(); ++i) B.set(i, U(rng));
  for (int64_t i = 0; i < C.numel(); ++i) C.set(i, U(rng));
  // Reference from the stored (rounded) values; the pad columns stay as
  // they were.
  std::vector<double> ref = C.toDouble();
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t q = 0; q < c.batch; ++q)
      for (int64_t i = 0; i < c.m; ++i)
        for (int64_t j = 0; j < c.n; ++j) {
          double s = 0;
          for (int64_t l = 0; l < c.k; ++l) {
            double a = A.get(g * d.groupStrideA + q * d.strideA +
                             (c.ta ? l * d.lda + i : i * d.lda + l));
            double b = B.get(g * d.groupStrideB + q * d.strideB +
                             (c.tb ? j * d.ldb + l : l * d.ldb + j));
            s += a * b;
          }
          int64_t o = g * d.groupStrideC + q * d.strideC + i * d.ldc + j;
          ref[size_t(o)] = c.alpha * s + c.beta * ref[size_t(o)];
        }
  {
    Runner run(where);
    TensorRef a = run(A), b = run(B), cc = run(C);
    gemm(d, ab, a.data, b.data, ct, cc.data,
         where == Where::cpu ? DeviceKind::cpu : DeviceKind::gpu);
    run.finish();
  }
  EXPECT_LE(relErr(C.toDouble(), ref), tol);
}

const Case kCases[] = {
    {1, 1, 1, false, false, 1, 0, 1, 0},    {7, 33, 130, false, false, 1, 0, 1, 0},
    {7, 33, 130, true, false, 1, 3, 1, 0},  {7, 33, 130, false, true, 1, 1, 1, 0},
    {33, 7, 130, true, true, 1, 2, 1, 0},   {130, 33, 7, false, false, 3, 5, 0.5f, 1},
    {64, 64, 200, true, false, 4, 0, 1, 1}, {1, 48, 513, false, false, 1, 0, 1, 1},
};

void allCases(Where where, bool fastBf16 = false) {
  for (const Case &c : kCases) {
    checkGemm(where, c, DType::f32, DType::f32, 1e-5);
    if (fastBf16) // fp32 operands rounded to bf16 by cuBLASLt: 2^-8 a factor
      checkGemm(where, c, DType::f32, DType::f32, 2e-2, true);
    checkGemm(where, c, DType::bf16, DType::f32, 1e-5);  // inputs already bf16: exact products
    checkGemm(where, c, DType::bf16, DType::bf16, 1e-2); // C rounded to bf16
    // Two batch axes: 3 groups interleaved in the rows.
    checkGemm(where, c, DType::f32, DType::f32, 1e-5, false, 3);
    checkGemm(where, c, DType::bf16, DType::f32, 1e-5, false, 3);
  }
}

} // namespace

TEST(BlasCpu, AllShapes) { allCases(Where::cpu); }

TEST(BlasCpu, KZeroScalesC) {
  checkGemm(Where::cpu, {3, 4, 0, false, false, 1, 1, 1, 0.5f}, DType::f32, DType::f32, 1e-6);
  checkGemm(Where::cpu, {3, 4, 0, false, false, 2, 1, 1, 0.5f}, DType::bf16, DType::bf16, 1e-2);
}

TEST(BlasCpu, BadArgumentsAreClearErrors) {
  float buf[64] = {};
  auto expectError = [&](GemmDesc d, DType ab, DType ct, const std::string &what) {
    try {
      gemm(d, ab, buf, buf, ct, buf, DeviceKind::cpu);
      ADD_FAILURE() << "expected an error about " << what;
    } catch (const Error &e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  GemmDesc ok;
  ok.m = 2; ok.n = 3; ok.k = 4; ok.lda = 4; ok.ldb = 3; ok.ldc = 3;
  GemmDesc d = ok; d.m = -1;
  expectError(d, DType::f32, DType::f32, "gemm: m, n, k must be >= 0");
  d = ok; d.lda = 3;
  expectError(d, DType::f32, DType::f32, "gemm: lda (3) must be >= 4");
  d = ok; d.transB = true; // B stored n×k: row length k = 4
  expectError(d, DType::f32, DType::f32, "gemm: ldb (3) must be >= 4");
  d = ok; d.ldc = 2;
  expectError(d, DType::f32, DType::f32, "gemm: ldc (2) must be >= n (3)");
  d = ok; d.batch = 0;
  expectError(d, DType::f32, DType::f32, "gemm: batch must be >= 1");
  d = ok; d.groups = 0;
  expectError(d, DType::f32, DType::f32, "gemm: groups must be >= 1");
  d = ok; d.groups = 2; d.groupStrideB = -3;
  expectError(d, DType::f32, DType::f32, "gemm: group strides must be >= 0");
  expectError(ok, DType::f32, DType::bf16, "gemm: unsupported dtypes: A/B f32, C bf16");
}

TEST(BlasGpu, AllShapes) {
  if (!gpuAvailable()) GTEST_SKIP() << "no GPU";
  allCases(Where::gpu, true);
}

// Speed of the ways to multiply fp32 activations in bf16 at the 7B layer's
// shapes (16384 tokens): bf16 operands already rounded, fp32 operands that
// cuBLASLt rounds itself (fastBf16), TF32; ms printed. Not a correctness
// test and not in ctest: --gtest_filter=BlasGpuSpeed.*.
TEST(BlasGpuSpeed, SevenBLayerShapes) {
  if (!gpuAvailable()) GTEST_SKIP() << "no GPU";
  struct Shape {
    const char *name;
    int64_t m, n, k;
    bool ta;
  } shapes[] = {{"x.W_q  16384x4096x4096", 16384, 4096, 4096, false},
                {"x.W_1  16384x11008x4096", 16384, 11008, 4096, false},
                {"dW_q   4096x4096 over 16384", 4096, 4096, 16384, true}};
  for (const Shape &sh : shapes) {
    GemmDesc d;
    d.m = sh.m; d.n = sh.n; d.k = sh.k; d.transA = sh.ta;
    d.lda = sh.ta ? sh.m : sh.k; d.ldb = sh.n; d.ldc = sh.n;
    const size_t nA = size_t(sh.m * sh.k), nB = size_t(sh.k * sh.n), nC = size_t(sh.m * sh.n);
    void *A = mmrec::rt::gpu::alloc(nA * 4), *B = mmrec::rt::gpu::alloc(nB * 4),
         *C = mmrec::rt::gpu::alloc(nC * 4);
    mmrec::rt::gpu::memsetD8(A, 0, nA * 4);
    mmrec::rt::gpu::memsetD8(B, 0, nB * 4);
    auto time = [&](DType ab, bool fast, bool tf32) {
      GemmDesc g = d;
      g.fastBf16 = fast;
      g.tf32 = tf32;
      return mmrec::rt::gpu::medianMs([&] { gemm(g, ab, A, B, DType::f32, C, DeviceKind::gpu); },
                                      2, 9);
    };
    const double tb = time(DType::bf16, false, false), tf = time(DType::f32, true, false),
                 tt = time(DType::f32, false, true);
    const double tflop = 2.0 * sh.m * sh.n * sh.k * 1e-9;
    std::printf("%-28s bf16 operands %.3f ms (%.0f TFLOP/s), fp32 + fastBf16 %.3f ms (%.0f), "
                "TF32 %.3f ms (%.0f)\n",
                sh.name, tb, tflop / tb, tf, tflop / tf, tt, tflop / tt);
    for (void *p : {A, B, C})
      mmrec::rt::gpu::free(p);
  }
}

// The level-2 (MDI) products of one 7B layer at B 8 · T 2048 (N 16,384
// tokens, N_m 8 groups of d 512, M 1,024 slots, C 128: 128 chunks), with the
// trainer's layouts (runtime/src/train/model.cpp: groupMM batches the
// groups, chunkMM / prevChunkMM the chunks of one group): TFLOP/s with bf16
// operands and, for the two the trainer keeps in fp32 (they feed a softmax's
// gradient), TF32. Per chunk-batched product one group's launch is timed
// (the trainer issues N_m of them). Not in ctest: --gtest_filter=*Mdi*.
TEST(BlasGpuSpeed, SevenBMdiShapes) {
  if (!gpuAvailable()) GTEST_SKIP() << "no GPU";
  const int64_t N = 16384, D = 4096, G = 8, d = 512, M = 1024, C = 128, nC = N / C;
  const int64_t GM = G * M, cs = G * M * d; // slot rows; one chunk's states
  struct Shape {
    const char *name;
    int64_t m, n, k;
    bool ta, tb;
    int64_t lda, ldb, ldc, batch, sA, sB, sC;
    bool fp32;              // kept in fp32 (TF32) by the trainer
    int64_t gA, gB, gC;     // per-chunk products: the group strides (0: none)
  } shapes[] = {
      {"slots q.S^T (8 groups)", N, M, d, false, true, D, d, GM, G, d, M * d, M, false, 0, 0, 0},
      {"write P=w^T.v (a chunk)", M, d, C, true, false, GM, D, d, nC, C * GM, C * D, cs, false,
       M, d, M * d},
      {"read a.Mem (a chunk)", C, d, M, false, false, GM, d, D, nC, C * GM, cs, C * D, false,
       M, M * d, d},
      {"dslot=dy2.Mem^T (a chunk)", C, M, d, false, true, D, d, GM, nC, C * D, cs, C * GM, true,
       d, M * d, M},
      {"dMem=a^T.dy2 (a chunk)", M, d, C, true, false, GM, D, d, nC, C * GM, C * D, cs, false,
       M, d, M * d},
      {"dw=v.dP^T (a chunk)", C, M, d, false, true, D, d, GM, nC, C * D, cs, C * GM, true,
       d, M * d, M},
      {"dv+=w.dP (a chunk)", C, d, M, false, false, GM, d, D, nC, C * GM, cs, C * D, false,
       M, M * d, d},
      {"dq+=dslot.S (8 groups)", N, d, M, false, false, GM, d, D, G, M, M * d, d, false, 0, 0, 0},
      {"dS+=dslot^T.q (8 groups)", M, d, N, true, false, GM, D, d, G, M, d, M * d, false, 0, 0,
       0},
  };
  // Generous extents: every operand fits in N·GM (or cs·nC) elements.
  const size_t big = size_t(std::max(N * GM, cs * nC));
  void *A = mmrec::rt::gpu::alloc(big * 4), *B = mmrec::rt::gpu::alloc(big * 4),
       *Cm = mmrec::rt::gpu::alloc(big * 4);
  mmrec::rt::gpu::memsetD8(A, 0, big * 4);
  mmrec::rt::gpu::memsetD8(B, 0, big * 4);
  for (const Shape &sh : shapes) {
    GemmDesc g;
    g.m = sh.m; g.n = sh.n; g.k = sh.k; g.transA = sh.ta; g.transB = sh.tb;
    g.lda = sh.lda; g.ldb = sh.ldb; g.ldc = sh.ldc;
    g.batch = sh.batch; g.strideA = sh.sA; g.strideB = sh.sB; g.strideC = sh.sC;
    auto time = [&](DType ab, bool tf32) {
      GemmDesc h = g;
      h.tf32 = tf32;
      return mmrec::rt::gpu::medianMs([&] { gemm(h, ab, A, B, DType::f32, Cm, DeviceKind::gpu); },
                                      2, 9);
    };
    const double tflop = 2.0 * sh.m * sh.n * sh.k * sh.batch * 1e-9;
    const double tb = time(DType::bf16, false);
    std::printf("%-28s %5lld x %5lld x %5lld x %3lld: bf16 %.3f ms (%.0f TFLOP/s)", sh.name,
                (long long)sh.m, (long long)sh.n, (long long)sh.k, (long long)sh.batch, tb,
                tflop / tb);
    if (sh.fp32) {
      const double tt = time(DType::f32, true);
      std::printf(", TF32 %.3f ms (%.0f) [the trainer's]", tt, tflop / tt);
    }
    std::printf("\n");
    if (sh.gA == 0)
      continue;
    // All 8 groups: 8 strided batches (one a group) against one call with
    // the groups as a second batch axis (pointer arrays).
    auto timeGroups = [&](DType ab, bool tf32, bool oneCall) {
      GemmDesc h = g;
      h.tf32 = tf32;
      const size_t es = ab == DType::f32 ? 4 : 2;
      return mmrec::rt::gpu::medianMs(
          [&] {
            if (oneCall) {
              GemmDesc k = h;
              k.groups = G;
              k.groupStrideA = sh.gA; k.groupStrideB = sh.gB; k.groupStrideC = sh.gC;
              gemm(k, ab, A, B, DType::f32, Cm, DeviceKind::gpu);
              return;
            }
            for (int64_t j = 0; j < G; ++j)
              gemm(h, ab, static_cast<char *>(A) + size_t(j * sh.gA) * es,
                   static_cast<char *>(B) + size_t(j * sh.gB) * es, DType::f32,
                   static_cast<char *>(Cm) + size_t(j * sh.gC) * 4, DeviceKind::gpu);
          },
          2, 9);
    };
    const DType ab = sh.fp32 ? DType::f32 : DType::bf16;
    const double t8 = timeGroups(ab, sh.fp32, false), t1 = timeGroups(ab, sh.fp32, true);
    std::printf("%-28s all 8 groups, %s: 8 calls %.3f ms (%.0f TFLOP/s), one grouped call %.3f "
                "ms (%.0f TFLOP/s)\n",
                "", sh.fp32 ? "TF32" : "bf16", t8, 8 * tflop / t8, t1, 8 * tflop / t1);
  }
  for (void *p : {A, B, Cm})
    mmrec::rt::gpu::free(p);
}
