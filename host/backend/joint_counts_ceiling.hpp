// What bench_mi holds the CUDA joint counting against: the bare int8 tensor-core GEMM of the device
// (kernels/joint_counts.cu; host/backend/joint_counts_ceiling_stub.cpp without CUDA).
#pragma once

#include <cstdint>

namespace convergent::detail {

// Integer operations per second (2 m n k per product) of cublasGemmEx with int8 inputs and int32 output
// for the one-hot product's shape: (cols x rows)^T (rows x cols), data on the device, CUDA events after a
// warm-up. Throws Error without a usable CUDA backend.
double measure_int8_gemm_ceiling(std::int64_t rows, std::int64_t cols);

}  // namespace convergent::detail
