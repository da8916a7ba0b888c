//===- blas_cpu.cpp - gemm: validation, dispatch and the OpenBLAS back end -===//

#include "mmrec/blas.h"

#include <cblas.h>

#include <algorithm>
#include <string>
#include <vector>

namespace mmrec::rt {
namespace detail {

void checkGemm(const GemmDesc &d, DType abType, DType cType) {
  auto bad = [](const std::string &msg) { throw Error("gemm: " + msg); };
  if (d.m < 0 || d.n < 0 || d.k < 0)
    bad("m, n, k must be >= 0, got " + std::to_string(d.m) + ", " + std::to_string(d.n) + ", " +
        std::to_string(d.k));
  if (d.batch < 1)
    bad("batch must be >= 1, got " + std::to_string(d.batch));
  const int64_t aCols = d.transA ? d.m : d.k, bCols = d.transB ? d.k : d.n;
  if (d.lda < std::max<int64_t>(aCols, 1))
    bad("lda (" + std::to_string(d.lda) + ") must be >= " + std::to_string(std::max<int64_t>(aCols, 1)) +
        ", the row length of A as stored");
  if (d.ldb < std::max<int64_t>(bCols, 1))
    bad("ldb (" + std::to_string(d.ldb) + ") must be >= " + std::to_string(std::max<int64_t>(bCols, 1)) +
        ", the row length of B as stored");
  if (d.ldc < std::max<int64_t>(d.n, 1))
    bad("ldc (" + std::to_string(d.ldc) + ") must be >= n (" + std::to_string(std::max<int64_t>(d.n, 1)) + ")");
  if (d.strideA < 0 || d.strideB < 0 || d.strideC < 0)
    bad("batch strides must be >= 0");
  if (d.groups < 1)
    bad("groups must be >= 1, got " + std::to_string(d.groups));
  if (d.groupStrideA < 0 || d.groupStrideB < 0 || d.groupStrideC < 0)
    bad("group strides must be >= 0");
  const bool ok = (abType == DType::f32 && cType == DType::f32) ||
                  (abType == DType::bf16 && (cType == DType::bf16 || cType == DType::f32));
  if (!ok)
    bad(std::string("unsupported dtypes: A/B ") + dtypeName(abType) + ", C " + dtypeName(cType) +
        " (supported: f32/f32, bf16/bf16, bf16/f32)");
}

namespace {
float loadAs(DType t, const void *p, int64_t i) {
  if (t == DType::f32)
    return static_cast<const float *>(p)[i];
  return fromBF16(static_cast<const uint16_t *>(p)[i]);
}
/// Copies a rows×cols matrix with row stride ld into packed fp32.
std::vector<float> packed(DType t, const void *p, int64_t rows, int64_t cols, int64_t ld) {
  std::vector<float> out(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      out[size_t(r * cols + c)] = loadAs(t, p, r * ld + c);
  return out;
}
} // namespace

void gemmCpu(const GemmDesc &d, DType abType, const void *A, const void *B, DType cType,
             void *C) {
  const size_t es = dtypeSize(abType), cs = dtypeSize(cType);
  const int64_t aRows = d.transA ? d.k : d.m, aCols = d.transA ? d.m : d.k;
  const int64_t bRows = d.transB ? d.n : d.k, bCols = d.transB ? d.k : d.n;
  for (int64_t i = 0; i < d.batch; ++i) {
    const char *a = static_cast<const char *>(A) + size_t(i * d.strideA) * es;
    const char *b = static_cast<const char *>(B) + size_t(i * d.strideB) * es;
    char *c = static_cast<char *>(C) + size_t(i * d.strideC) * cs;
    if (d.k == 0) { // C = beta·C
      for (int64_t r = 0; r < d.m; ++r)
        for (int64_t j = 0; j < d.n; ++j) {
          int64_t o = r * d.ldc + j;
          float v = d.beta == 0 ? 0.0f : d.beta * loadAs(cType, c, o);
          if (cType == DType::f32) reinterpret_cast<float *>(c)[o] = v;
          else reinterpret_cast<uint16_t *>(c)[o] = toBF16(v);
        }
      continue;
    }
    if (abType == DType::f32) {
      cblas_sgemm(CblasRowMajor, d.transA ? CblasTrans : CblasNoTrans,
                  d.transB ? CblasTrans : CblasNoTrans, int(d.m), int(d.n), int(d.k), d.alpha,
                  reinterpret_cast<const float *>(a), int(d.lda),
                  reinterpret_cast<const float *>(b), int(d.ldb), d.beta,
                  reinterpret_cast<float *>(c), int(d.ldc));
      continue;
    }
    std::vector<float> af = packed(abType, a, aRows, aCols, d.lda);
    std::vector<float> bf = packed(abType, b, bRows, bCols, d.ldb);
    std::vector<float> cf(size_t(d.m * d.n), 0.0f);
    if (d.beta != 0)
      cf = packed(cType, c, d.m, d.n, d.ldc);
    cblas_sgemm(CblasRowMajor, d.transA ? CblasTrans : CblasNoTrans,
                d.transB ? CblasTrans : CblasNoTrans, int(d.m), int(d.n), int(d.k), d.alpha,
                af.data(), int(aCols), bf.data(), int(bCols), d.beta, cf.data(), int(d.n));
    for (int64_t r = 0; r < d.m; ++r)
      for (int64_t j = 0; j < d.n; ++j) {
        float v = cf[size_t(r * d.n + j)];
        int64_t o = r * d.ldc + j;
        if (cType == DType::f32) reinterpret_cast<float *>(c)[o] = v;
        else reinterpret_cast<uint16_t *>(c)[o] = toBF16(v);
      }
  }
}

GemmGroup gemmGroup(const GemmDesc &d, int64_t j, DType abType, const void *A, const void *B,
                    DType cType, void *C) {
  const size_t es = dtypeSize(abType), cs = dtypeSize(cType);
  GemmDesc g = d;
  g.groups = 1;
  return {g, static_cast<const char *>(A) + size_t(j * d.groupStrideA) * es,
          static_cast<const char *>(B) + size_t(j * d.groupStrideB) * es,
          static_cast<char *>(C) + size_t(j * d.groupStrideC) * cs};
}

#if !MMREC_HAVE_CUDA
void gemmGpu(const GemmDesc &, DType, const void *, const void *, DType, void *, Stream) {
  throw Error("gemm: this build of the runtime has no CUDA support");
}
#endif

} // namespace detail

void gemm(const GemmDesc &d, DType abType, const void *A, const void *B, DType cType, void *C,
          DeviceKind device, Stream stream) {
  detail::checkGemm(d, abType, cType);
  if (d.m == 0 || d.n == 0)
    return;
  if (device == DeviceKind::cpu) {
    for (int64_t j = 0; j < d.groups; ++j) {
      const detail::GemmGroup g = detail::gemmGroup(d, j, abType, A, B, cType, C);
      detail::gemmCpu(g.d, abType, g.A, g.B, cType, g.C);
    }
  } else
    detail::gemmGpu(d, abType, A, B, cType, C, stream);
}

} // namespace mmrec::rt
