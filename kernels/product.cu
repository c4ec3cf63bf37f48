// The batch product. cuBLAS is column-major: the row-major (rows x units) batch X is, to cuBLAS, the
// column-major (units x rows) matrix A = X^T with leading dimension units, so S = X^T X = A A^T
// (op(A) = N, op(B) = T). The column-major lower triangle of S is the row-major upper triangle, which is
// the one merge_comoment reads.
#include <cstdlib>
#include <cstring>

#include "cuda_check.cuh"
#include "product.cuh"

namespace convergent::cuda {

Fp32Routine fp32_routine_from_environment() {
  const char* value = std::getenv("CONVERGENT_CUDA_FP32_PRODUCT");
  if (value == nullptr || *value == '\0' || std::strcmp(value, "gemm") == 0) return Fp32Routine::gemm;
  if (std::strcmp(value, "syrk") == 0) return Fp32Routine::syrk;
  throw Error(std::string("CONVERGENT_CUDA_FP32_PRODUCT='") + value + "': expected gemm or syrk");
}

const char* to_string(Fp32Routine routine) { return routine == Fp32Routine::gemm ? "gemm" : "syrk"; }

void batch_product(cublasHandle_t handle, Precision precision, Fp32Routine routine, const void* x,
                   std::int64_t rows, std::int64_t units, float* s) {
  if (units == 0) return;
  const int n = checked_int(units, "units");
  const int k = checked_int(rows, "batch rows");
  const float one = 1.0f;
  const float zero = 0.0f;
  switch (precision) {
    case Precision::fp32:
      // Plain fp32 math: the handle keeps CUBLAS_DEFAULT_MATH, which never substitutes TF32 for Sgemm.
      if (routine == Fp32Routine::syrk) {
        CONVERGENT_CUBLAS_CHECK(cublasSsyrk(handle, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, n, k, &one,
                                            static_cast<const float*>(x), n, &zero, s, n));
      } else {
        CONVERGENT_CUBLAS_CHECK(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_T, n, n, k, &one,
                                            static_cast<const float*>(x), n, static_cast<const float*>(x), n,
                                            &zero, s, n));
      }
      break;
    case Precision::tf32:
      CONVERGENT_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_T, n, n, k, &one, x, CUDA_R_32F, n, x,
                                           CUDA_R_32F, n, &zero, s, CUDA_R_32F, n, CUBLAS_COMPUTE_32F_FAST_TF32,
                                           CUBLAS_GEMM_DEFAULT));
      break;
    case Precision::bf16:
      // bf16 inputs, fp32 accumulation and output.
      CONVERGENT_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_T, n, n, k, &one, x, CUDA_R_16BF, n, x,
                                           CUDA_R_16BF, n, &zero, s, CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                                           CUBLAS_GEMM_DEFAULT));
      break;
  }
}

}  // namespace convergent::cuda
