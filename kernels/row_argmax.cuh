// Device version of Backend::row_argmax (reference: ReferenceBackend in host/cpu/reference_backend.cpp).
#pragma once

#include <cstdint>

#include "device_memory.cuh"

namespace convergent::cuda {

// Column of the first maximum of each row of the row-major (rows x cols) matrix `m` (rows `stride`
// apart, cols >= 1), to out[rows]. NaN entries take no part in the maximum; the smallest row-major
// index r * cols + c of a NaN is folded into *first_nan with atomicMin (set it to ~0ull first), for the
// caller to turn into the interface's error.
void launch_row_argmax(const double* m, std::int64_t rows, std::int64_t cols, std::int64_t stride,
                       std::int64_t* out, unsigned long long* first_nan, StreamRef stream);

}  // namespace convergent::cuda
