// Device versions of Backend::correlation and Backend::row_argmax (references in
// host/reference_backend.cpp).
#pragma once

#include <cstdint>

#include "device_memory.cuh"

namespace convergent::cuda {

// corr_ij = M2_ij / sqrt(M2_ii M2_jj), clamped to [-1, 1]; diagonal exactly 1 for live units; dead units
// (dead[i] != 0) are 0 everywhere, their diagonal included. `scale` is u doubles of scratch.
void launch_correlation(const double* m2, const unsigned char* dead, std::int64_t units, double* scale, double* corr,
                        StreamRef stream);

// Column of the first maximum of each row of the row-major (rows x cols) matrix `m` (rows `stride` apart).
void launch_row_argmax(const double* m, std::int64_t rows, std::int64_t cols, std::int64_t stride,
                       std::int64_t* out, StreamRef stream);

}  // namespace convergent::cuda
