//===- blas_cuda.cpp - gemm on the GPU through cuBLASLt --------------------===//
//
// cuBLASLt is opened with dlopen at first use (like the driver in cuda.cpp):
// the runtime links neither. Row-major C = op(A)·op(B) is computed as the
// column-major Cᵀ = op(B)ᵀ·op(A)ᵀ, whose operands are the stored arrays
// themselves; batches are strided layouts, and two batch axes (groups of
// strided batches) one pointer-array batch.
//
//===----------------------------------------------------------------------===//

#include "mmrec/blas.h"

#include <cublasLt.h>
#include <dlfcn.h>

#include <array>
#include <map>
#include <mutex>
#include <optional>
#include <vector>
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
  /// A workspace a stream: products on two streams may run at once.
  std::map<Stream, void *> workspaces;
  size_t workspaceBytes = size_t(32) << 20;
  void *workspace(Stream s) {
    void *&w = workspaces[s];
    if (!w)
      w = gpu::alloc(workspaceBytes);
    return w;
  }
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
    workspace(nullptr);
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

/// A column-major layout rows×cols, leading dimension ld, batched: strided
/// (`stride` elements apart) or, with `pointers`, through pointer arrays.
cublasLtMatrixLayout_t layout(Lt &l, DType t, int64_t rows, int64_t cols, int64_t ld,
                              int64_t batch, int64_t stride, bool pointers) {
  cublasLtMatrixLayout_t lay;
  check(l.cublasLtMatrixLayoutCreate(&lay, cudaType(t), uint64_t(rows), uint64_t(cols), ld),
        "cublasLtMatrixLayoutCreate");
  if (batch > 1) {
    int32_t count = int32_t(batch);
    check(l.cublasLtMatrixLayoutSetAttribute(lay, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                             sizeof(count)),
          "setting the batch count");
    if (pointers) {
      uint32_t mode = CUBLASLT_BATCH_MODE_POINTER_ARRAY;
      check(l.cublasLtMatrixLayoutSetAttribute(lay, CUBLASLT_MATRIX_LAYOUT_BATCH_MODE, &mode,
                                               sizeof(mode)),
            "setting the pointer-array batch mode");
    } else {
      check(l.cublasLtMatrixLayoutSetAttribute(lay, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                               &stride, sizeof(stride)),
            "setting the batch stride");
    }
  }
  return lay;
}

/// The largest power of two (at most 256) that divides the address of
/// every batch of an operand: cuBLASLt's heuristic assumes 256-byte aligned
/// operands unless told otherwise, and sub-matrices (a group's columns, a
/// chunk's rows) are often less aligned.
uint32_t alignment(const void *p, int64_t batch, int64_t stride, int64_t groups,
                   int64_t groupStride, DType t) {
  const uint64_t es = t == DType::f32 ? 4 : 2;
  uint64_t bits = reinterpret_cast<uintptr_t>(p) | 256;
  if (batch > 1)
    bits |= uint64_t(stride) * es;
  if (groups > 1)
    bits |= uint64_t(groupStride) * es;
  return uint32_t(bits & (~bits + 1));
}

/// One cublasLtMatmul for `d` (groups = 1: a strided batch), or for all its
/// groups·batch products through the device pointer arrays `ptrs` (X's, Y's
/// and C's addresses, groups·batch each). Returns false only where `ptrs`
/// is given and cuBLASLt has no pointer-array algorithm for the problem.
bool matmul(const GemmDesc &d, DType abType, const void *A, const void *B, DType cType, void *C,
            Stream stream, void *const *ptrs) {
  Lt &l = lt();
  static std::mutex mu; // the heuristic cache, the workspaces
  std::lock_guard<std::mutex> lock(mu);
  const bool pa = ptrs != nullptr;
  const int64_t batch = pa ? d.batch * d.groups : d.batch;
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
  cublasLtMatrixLayout_t lx = d.transB
                                  ? layout(l, abType, d.k, d.n, d.ldb, batch, d.strideB, pa)
                                  : layout(l, abType, d.n, d.k, d.ldb, batch, d.strideB, pa);
  cublasLtMatrixLayout_t ly = d.transA
                                  ? layout(l, abType, d.m, d.k, d.lda, batch, d.strideA, pa)
                                  : layout(l, abType, d.k, d.m, d.lda, batch, d.strideA, pa);
  cublasLtMatrixLayout_t lc = layout(l, cType, d.n, d.m, d.ldc, batch, d.strideC, pa);
  // The heuristic's answer is cached per problem (shapes, layouts, types,
  // operand alignments): a training step repeats the same few dozen.
  const int64_t groups = pa ? d.groups : 1;
  const uint32_t alX = alignment(B, d.batch, d.strideB, groups, d.groupStrideB, abType),
                 alY = alignment(A, d.batch, d.strideA, groups, d.groupStrideA, abType),
                 alC = alignment(C, d.batch, d.strideC, groups, d.groupStrideC, cType);
  const std::array<int64_t, 20> key = {
      d.m,        d.n,       d.k,       d.transA,  d.transB,          d.lda,
      d.ldb,      d.ldc,     batch,     d.strideA, d.strideB,         d.strideC,
      int64_t(compute), int64_t(abType), int64_t(cType), alX,          alY,
      alC,        pa,        0};
  // nullopt: the heuristic found nothing (remembered, for pointer arrays).
  static std::map<std::array<int64_t, 20>, std::optional<cublasLtMatmulAlgo_t>> algos;
  cublasStatus_t hs = CUBLAS_STATUS_SUCCESS;
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
    int returned = 0;
    hs = l.cublasLtMatmulAlgoGetHeuristic(l.handle, desc, lx, ly, lc, lc, pref, 1, &result,
                                          &returned);
    l.cublasLtMatmulPreferenceDestroy(pref);
    if (hs == CUBLAS_STATUS_SUCCESS && returned > 0)
      found = algos.emplace(key, result.algo).first;
    else if (pa)
      found = algos.emplace(key, std::nullopt).first;
  }
  const bool have = found != algos.end() && found->second.has_value();
  cublasStatus_t ms = CUBLAS_STATUS_NOT_SUPPORTED;
  if (have) {
    const int64_t n = d.batch * d.groups;
    const void *X = pa ? static_cast<const void *>(ptrs) : B;
    const void *Y = pa ? static_cast<const void *>(ptrs + n) : A;
    void *Cp = pa ? static_cast<void *>(const_cast<void **>(ptrs + 2 * n)) : C;
    ms = l.cublasLtMatmul(l.handle, desc, &d.alpha, X, lx, Y, ly, &d.beta, Cp, lc, Cp, lc,
                          &*found->second, l.workspace(stream), l.workspaceBytes,
                          static_cast<cudaStream_t>(stream));
  }
  l.cublasLtMatrixLayoutDestroy(lc);
  l.cublasLtMatrixLayoutDestroy(ly);
  l.cublasLtMatrixLayoutDestroy(lx);
  l.cublasLtMatmulDescDestroy(desc);
  if (!have && pa)
    return false;
  if (!have)
    throw Error("gemm: cuBLASLt has no algorithm for m=" + std::to_string(d.m) +
                " n=" + std::to_string(d.n) + " k=" + std::to_string(d.k) +
                (hs != CUBLAS_STATUS_SUCCESS
                     ? " (heuristic status " + std::to_string(int(hs)) + ")"
                     : std::string()));
  check(ms, "cublasLtMatmul");
  return true;
}

/// Device arrays of the addresses of every product's X, Y and C operands
/// (groups·batch each, in that order), built once per set of operands and
/// strides: a training step repeats the same few dozen. The cache is
/// emptied (after a device synchronization) when it grows past 4096 sets.
void *const *pointerArrays(const GemmDesc &d, DType abType, const void *A, const void *B,
                           DType cType, void *C) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  using Key = std::array<int64_t, 14>;
  static std::map<Key, void **> cache;
  const Key key = {int64_t(reinterpret_cast<uintptr_t>(A)),
                   int64_t(reinterpret_cast<uintptr_t>(B)),
                   int64_t(reinterpret_cast<uintptr_t>(C)),
                   d.batch, d.groups, d.strideA, d.strideB, d.strideC, d.groupStrideA,
                   d.groupStrideB, d.groupStrideC, int64_t(abType), int64_t(cType), 0};
  if (auto it = cache.find(key); it != cache.end())
    return it->second;
  if (cache.size() >= 4096) {
    gpu::synchronize();
    for (auto &kv : cache)
      gpu::free(kv.second);
    cache.clear();
  }
  const int64_t n = d.batch * d.groups;
  const size_t es = dtypeSize(abType), cs = dtypeSize(cType);
  std::vector<const void *> host(size_t(3 * n));
  for (int64_t j = 0; j < d.groups; ++j)
    for (int64_t i = 0; i < d.batch; ++i) {
      const int64_t q = j * d.batch + i;
      host[size_t(q)] = static_cast<const char *>(B) + size_t(j * d.groupStrideB + i * d.strideB) * es;
      host[size_t(n + q)] =
          static_cast<const char *>(A) + size_t(j * d.groupStrideA + i * d.strideA) * es;
      host[size_t(2 * n + q)] =
          static_cast<const char *>(C) + size_t(j * d.groupStrideC + i * d.strideC) * cs;
    }
  void **dev = static_cast<void **>(gpu::alloc(host.size() * sizeof(void *)));
  gpu::copyToDevice(dev, host.data(), host.size() * sizeof(void *));
  cache.emplace(key, dev);
  return dev;
}

} // namespace

void gemmGpu(const GemmDesc &d, DType abType, const void *A, const void *B, DType cType, void *C,
             Stream stream) {
  if (d.k == 0) {
    if (d.beta == 1)
      return;
    throw Error("gemm: k = 0 with beta != 1 is not supported on the GPU");
  }
  if (!stream)
    stream = gpu::currentStream();
  if (d.groups == 1) {
    matmul(d, abType, A, B, cType, C, stream, nullptr);
    return;
  }
  // Two batch axes: one pointer-array batch of groups·batch products.
  if (matmul(d, abType, A, B, cType, C, stream, pointerArrays(d, abType, A, B, cType, C)))
    return;
  // No pointer-array algorithm: one strided batch a group.
  for (int64_t j = 0; j < d.groups; ++j) {
    const GemmGroup g = gemmGroup(d, j, abType, A, B, cType, C);
    matmul(g.d, abType, g.A, g.B, cType, g.C, stream, nullptr);
  }
}

} // namespace mmrec::rt::detail
