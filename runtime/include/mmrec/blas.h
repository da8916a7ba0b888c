//===- blas.h - matrix products for generated launchers and the trainer -===//
//
// The project's rule: matrix products go to cuBLASLt on GPUs and to an
// optimized BLAS (Debian's OpenBLAS) on CPUs; compiler-generated kernels do
// everything else. One entry point covers both, row-major, batched with
// explicit leading dimensions and strides, so that sub-matrices of larger
// arrays (a head's columns, rows t = 1..T−1) are used in place.
//
//===----------------------------------------------------------------------===//

#ifndef MMREC_BLAS_H
#define MMREC_BLAS_H

#include "mmrec/runtime.h"

namespace mmrec::rt {

/// C[i] = alpha · op(A[i]) · op(B[i]) + beta · C[i] for i < batch, row-major;
/// op(X) = X or Xᵀ. op(A) is m×k, op(B) is k×n, C is m×n. Leading
/// dimensions are row strides in elements (A is stored m×k, or k×m when
/// transA); batch strides are in elements.
struct GemmDesc {
  int64_t m = 0, n = 0, k = 0;
  bool transA = false, transB = false;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t batch = 1, strideA = 0, strideB = 0, strideC = 0;
  /// `groups` groups of `batch` products: product (j, i) of an operand
  /// starts at element j·groupStride + i·stride (two batch axes, as the
  /// memory hierarchy's products over groups × chunks need). The GPU runs
  /// them as one pointer-array batch of groups·batch products where
  /// cuBLASLt has an algorithm for it, else one strided batch a group.
  int64_t groups = 1, groupStrideA = 0, groupStrideB = 0, groupStrideC = 0;
  float alpha = 1, beta = 0;
  /// GPU, f32 operands: multiply in TF32 on the tensor cores (10-bit
  /// mantissas, fp32 accumulation); ignored on the CPU.
  bool tf32 = false;
  /// GPU, f32 operands: let cuBLASLt round them to bf16 itself and multiply
  /// on the tensor cores (CUBLAS_COMPUTE_32F_FAST_16BF, fp32 accumulation),
  /// without bf16 copies of the operands; ignored on the CPU.
  bool fastBf16 = false;
};

/// Supported: A, B f32 with C f32; A, B bf16 with C bf16 or f32. Products
/// accumulate in fp32. Throws Error("gemm: ...") naming the bad field.
void gemm(const GemmDesc &d, DType abType, const void *A, const void *B, DType cType, void *C,
          DeviceKind device, Stream stream = nullptr);

namespace detail {
/// Validates `d` and the dtypes (shared by both back ends).
void checkGemm(const GemmDesc &d, DType abType, DType cType);
void gemmCpu(const GemmDesc &d, DType abType, const void *A, const void *B, DType cType, void *C);
/// Group j of `d` alone: a one-group GemmDesc and its operands' addresses
/// (j·groupStride elements in), for the back ends that run a group a call.
struct GemmGroup {
  GemmDesc d;
  const void *A, *B;
  void *C;
};
GemmGroup gemmGroup(const GemmDesc &d, int64_t j, DType abType, const void *A, const void *B,
                    DType cType, void *C);
void gemmGpu(const GemmDesc &d, DType abType, const void *A, const void *B, DType cType, void *C,
             Stream stream);
} // namespace detail

} // namespace mmrec::rt

#endif // MMREC_BLAS_H
