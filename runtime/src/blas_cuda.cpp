//===- blas_cuda.cpp - gemm on the GPU through cuBLASLt --------------------===//
//
// cuBLASLt is opened with dlopen at first use (like the driver in cuda.cpp):
// the runtime links neither. Row-major C = op(A)·op(B) is computed as the
// column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, whose operands are the stored arrays
// themselves; batches are strided layouts.
//
//===----------------------------------------------------------------------===//

#include "mmrec/blas.h"

#include <cublasLt.h>
#include <dlfcn.h>

#include <array>
#include <map>
#include <mutex>
#include <string>

namespace mmrec::rt::detail {
namespace {

#define MMREC_LT_FUNCTIONS(X)                                                                 \
  X(cublasLtCreate)                                                                          \
  X(cublasLtMatmulDescCreate)                                                                \
  X(cublasLtMatmulDescSetAttribute)                                                          \
  X(cublasLtMatmulDescDestroy)                                                               \
  X(cublasLtMatrixLayoutCreate)                                                              \
  X(cublasLtMatrixLayoutSetAttribute)                                                        \
  X(cublasLtMatrixLayoutDestroy)                                                             \
  X(cublasLtMatmulPreferenceCreate)                                                          \
  X(cublasLtMatmulPreferenceSetAttribute)                                                    \
  X(cublasLtMatmulPreferenceDestroy)                                                         \
  X(cublasLtMatmulAlgoGetHeuristic)                                                          \
  X(cublasLtMatmul)

struct Lt {
#define MMREC_LT_MEMBER(name) decltype(&::name) name = nullptr;
  MMREC_LT_FUNCTIONS(MMREC_LT_MEMBER)
#undef MMREC_LT_MEMBER
  cublasLtHandle_t handle = nullptr;
  void *workspace = nullptr;
  size_t workspaceBytes = size_t(32) << 20;
  std::string error;

  Lt() {
    void *lib = dlopen("libcublasLt.so.13", RTLD_NOW | RTLD_LOCAL);
    if (!lib)
      lib = dlopen("libcublasLt.so", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      error = std::string("cannot load cuBLASLt (libcublasLt.so.13): ") + dlerror();
      return;
    }
#define MMREC_LT_LOAD(name)                                                                   \
  name = reinterpret_cast<decltype(name)>(dlsym(lib, #name));                                 \
  if (!name) {                                                                                \
    error = "cuBLASLt lacks " #name;                                                          \
    return;                                                                                   \
  }
    MMREC_LT_FUNCTIONS(MMREC_LT_LOAD)
#undef MMREC_LT_LOAD
    gpu::alloc(1); // makes the driver's primary context current
    if (cublasLtCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
      error = "cublasLtCreate failed";
      return;
    }
    workspace = gpu::alloc(workspaceBytes);
  }
};

Lt &lt() {
  static Lt l;
  if (!l.error.empty())
    throw Error("gemm: " + l.error);
  return l;
}

void check(cublasStatus_t s, const char *what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("gemm: ") + what + " failed with cuBLAS status " +
                std::to_string(int(s)));
}

cudaDataType_t cudaType(DType t) { return t == DType::f32 ? CUDA_R_32F : CUDA_R_16BF; }

/// A column-major layout rows×cols, leading dimension ld, batched.
cublasLtMatrixLayout_t layout(Lt &l, DType t, int64_t rows, int64_t cols, int64_t ld,
                              int64_t batch, int64_t stride) {
  cublasLtMatrixLayout_t lay;
  check(l.cublasLtMatrixLayoutCreate(&lay, cudaType(t), uint64_t(rows), uint64_t(cols), ld),
        "cublasLtMatrixLayoutCreate");
  if (batch > 1) {
    int32_t count = int32_t(batch);
    check(l.cublasLtMatrixLayoutSetAttribute(lay, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                             sizeof(count)),
          "setting the batch count");
    check(l.cublasLtMatrixLayoutSetAttribute(lay, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                             &stride, sizeof(stride)),
          "setting the batch stride");
  }
  return lay;
}

/// The largest power of two (at most 256) that divides the address of
/// every batch of an operand: cuBLASLt's heuristic assumes 256-byte aligned
/// operands unless told otherwise, and sub-matrices (a group's columns, a
/// chunk's rows) are often less aligned.
uint32_t alignment(const void *p, int64_t batch, int64_t stride, DType t) {
  uint64_t bits = reinterpret_cast<uintptr_t>(p) | 256;
  if (batch > 1)
    bits |= uint64_t(stride) * (t == DType::f32 ? 4 : 2);
  return uint32_t(bits & (~bits + 1));
}

} // namespace

void gemmGpu(const GemmDesc &d, DType abType, const void *A, const void *B, DType cType, void *C,
             Stream stream) {
  if (d.k == 0) {
    if (d.beta == 1)
      return;
    throw Error("gemm: k = 0 with beta != 1 is not supported on the GPU");
  }
  Lt &l = lt();
  static std::mutex mu; // one workspace
  std::lock_guard<std::mutex> lock(mu);
  // Column-major view: Cᵀ (n×m) = X (n×k) · Y (k×m) with X = op(B)ᵀ, Y = op(A)ᵀ.
  cublasOperation_t opX = d.transB ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t opY = d.transA ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasLtMatmulDesc_t desc;
  const cublasComputeType_t compute = abType != DType::f32 ? CUBLAS_COMPUTE_32F
                                      : d.fastBf16          ? CUBLAS_COMPUTE_32F_FAST_16BF
                                      : d.tf32              ? CUBLAS_COMPUTE_32F_FAST_TF32
                                                            : CUBLAS_COMPUTE_32F;
  check(l.cublasLtMatmulDescCreate(&desc, compute, CUDA_R_32F),
        "cublasLtMatmulDescCreate");
  check(l.cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &opX, sizeof(opX)),
        "setting TRANSA");
  check(l.cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &opY, sizeof(opY)),
        "setting TRANSB");
  // Stored B is (transB ? n×k : k×n) row-major = col-major (cols × rows).
  cublasLtMatrixLayout_t lx = d.transB ? layout(l, abType, d.k, d.n, d.ldb, d.batch, d.strideB)
                                       : layout(l, abType, d.n, d.k, d.ldb, d.batch, d.strideB);
  cublasLtMatrixLayout_t ly = d.transA ? layout(l, abType, d.m, d.k, d.lda, d.batch, d.strideA)
                                       : layout(l, abType, d.k, d.m, d.lda, d.batch, d.strideA);
  cublasLtMatrixLayout_t lc = layout(l, cType, d.n, d.m, d.ldc, d.batch, d.strideC);
  // The heuristic's answer is cached per problem (shapes, layouts, types,
  // operand alignments): a training step repeats the same few dozen.
  const uint32_t alX = alignment(B, d.batch, d.strideB, abType),
                 alY = alignment(A, d.batch, d.strideA, abType),
                 alC = alignment(C, d.batch, d.strideC, cType);
  const std::array<int64_t, 20> key = {
      d.m, d.n, d.k, d.transA, d.transB, d.lda, d.ldb, d.ldc, d.batch, d.strideA, d.strideB,
      d.strideC, int64_t(compute), int64_t(abType), int64_t(cType), alX, alY, alC, 0, 0};
  static std::map<std::array<int64_t, 20>, cublasLtMatmulAlgo_t> algos;
  cublasStatus_t hs = CUBLAS_STATUS_SUCCESS;
  int returned = 1;
  auto found = algos.find(key);
  if (found == algos.end()) {
    cublasLtMatmulPreference_t pref;
    check(l.cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
    uint64_t wsBytes = l.workspaceBytes;
    check(l.cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                 &wsBytes, sizeof(wsBytes)),
          "setting the workspace size");
    const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> aligns[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alX},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alY},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alC},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alC}};
    for (auto [attr, bytes] : aligns)
      check(l.cublasLtMatmulPreferenceSetAttribute(pref, attr, &bytes, sizeof(bytes)),
            "setting an operand's alignment");
    cublasLtMatmulHeuristicResult_t result;
    returned = 0;
    hs = l.cublasLtMatmulAlgoGetHeuristic(l.handle, desc, lx, ly, lc, lc, pref, 1, &result,
                                          &returned);
    l.cublasLtMatmulPreferenceDestroy(pref);
    if (hs == CUBLAS_STATUS_SUCCESS && returned > 0)
      found = algos.emplace(key, result.algo).first;
  }
  cublasStatus_t ms = CUBLAS_STATUS_NOT_SUPPORTED;
  if (hs == CUBLAS_STATUS_SUCCESS && returned > 0)
    ms = l.cublasLtMatmul(l.handle, desc, &d.alpha, B, lx, A, ly, &d.beta, C, lc, C, lc,
                          &found->second, l.workspace, l.workspaceBytes,
                          static_cast<cudaStream_t>(stream));
  l.cublasLtMatrixLayoutDestroy(lc);
  l.cublasLtMatrixLayoutDestroy(ly);
  l.cublasLtMatrixLayoutDestroy(lx);
  l.cublasLtMatmulDescDestroy(desc);
  if (hs != CUBLAS_STATUS_SUCCESS || returned == 0)
    throw Error("gemm: cuBLASLt has no algorithm for m=" + std::to_string(d.m) +
                " n=" + std::to_string(d.n) + " k=" + std::to_string(d.k));
  check(ms, "cublasLtMatmul");
}

} // namespace mmrec::rt::detail
