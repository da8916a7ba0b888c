//===- gemm.h - row-major matrix products for the trainer (internal) ------===//
#ifndef MMREC_RUNTIME_TRAIN_GEMM_H
#define MMREC_RUNTIME_TRAIN_GEMM_H

#include "mmrec/blas.h"

namespace mmrec::train::detail {

/// The product C (m×n) = op(A)·op(B) + beta·C of dense row-major arrays:
/// A stored m×k (k×m when transA), B stored k×n (n×k when transB).
inline rt::GemmDesc denseGemm(int64_t m, int64_t n, int64_t k, bool transA, bool transB,
                              float beta) {
  rt::GemmDesc d;
  d.m = m;
  d.n = n;
  d.k = k;
  d.transA = transA;
  d.transB = transB;
  d.lda = transA ? m : k;
  d.ldb = transB ? k : n;
  d.ldc = n;
  d.beta = beta;
  return d;
}

/// denseGemm's product in fp32 (TF32 with `tf32` on the GPU).
inline void mm(const float *A, const float *B, float *C, int64_t m, int64_t n, int64_t k,
               bool transA, bool transB, float beta,
               rt::DeviceKind device = rt::DeviceKind::cpu, bool tf32 = false) {
  if (m == 0 || n == 0)
    return;
  rt::GemmDesc d = denseGemm(m, n, k, transA, transB, beta);
  d.tf32 = tf32;
  rt::gemm(d, rt::DType::f32, A, B, rt::DType::f32, C, device);
}

} // namespace mmrec::train::detail

#endif
