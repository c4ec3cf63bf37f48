// Device version of Backend::correlation (reference: ReferenceBackend in host/cpu/reference_backend.cpp).
#pragma once

#include <cstdint>

#include "device_memory.cuh"

namespace convergent::cuda {

// corr_ij = clamp((M2_ij * s_i) * s_j, -1, 1) with s_i = 1 / sqrt(M2_ii), for j > i, the reference's
// operations in its order, so that the two agree to the last bit; the lower triangle is the mirror of
// the upper one (exactly symmetric); the diagonal is 1 for live units. Dead units (dead[i] != 0) are 0
// everywhere, their diagonal included. Only the upper triangle of the row-major U x U `m2` is read.
// `scale` is U doubles of scratch.
void launch_correlation(const double* m2, const unsigned char* dead, std::int64_t units, double* scale, double* corr,
                        StreamRef stream);

}  // namespace convergent::cuda
