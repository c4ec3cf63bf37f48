// Device version of Backend::smallest_eigenpairs (reference: LAPACK dsyevr in host/cpu/reference_backend.cpp).
#pragma once

#include <cstdint>

#include "convergent/backend.hpp"
#include "device_memory.cuh"

namespace convergent::cuda {

// The k smallest eigenpairs of the symmetric n x n host matrix `a` (its row-major upper triangle is
// read). Synchronises: returns host data.
Eigenpairs smallest_eigenpairs_on_device(cusolverDnHandle_t handle, StreamRef stream, MatrixView<const double> a,
                                         std::int64_t k);

}  // namespace convergent::cuda
