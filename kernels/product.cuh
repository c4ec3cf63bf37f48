// The batch product S = Xc^T Xc of the centred (rows x units) batch, in the requested precision, through
// cuBLAS. The only heavy step of accumulation.
#pragma once

#include <cublas_v2.h>

#include <cstdint>

#include "convergent/backend.hpp"

namespace convergent::cuda {

// How the fp32 product is formed. gemm computes both triangles (twice the flops of syrk) but runs at
// near peak; syrk does half the work with less tuned kernels. The default is gemm; the environment
// variable CONVERGENT_CUDA_FP32_PRODUCT=syrk|gemm overrides it so that the two can be measured.
enum class Fp32Routine { gemm, syrk };
Fp32Routine fp32_routine_from_environment();
const char* to_string(Fp32Routine routine);

// `x` is the row-major (rows x units) batch: float for fp32/tf32, __nv_bfloat16 for bf16. Writes the
// row-major (units x units) float `s`, of which the upper triangle (j >= i) is defined (gemm fills both).
// Runs on the stream the handle is bound to.
void batch_product(cublasHandle_t handle, Precision precision, Fp32Routine routine, const void* x,
                   std::int64_t rows, std::int64_t units, float* s);

// Bytes of one batch element for the product input of this precision.
inline int product_element_bytes(Precision precision) { return precision == Precision::bf16 ? 2 : 4; }

}  // namespace convergent::cuda
