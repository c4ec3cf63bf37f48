// Device versions of Backend::smallest_eigenpairs, symmetric_eigenpairs and singular_value_decomposition
// (references: LAPACK dsyevr, dsyevd and dgesdd in host/cpu/reference_backend.cpp).
#pragma once

#include <cstdint>

#include "convergent/backend.hpp"
#include "device_memory.cuh"

namespace convergent::cuda {

// The k smallest eigenpairs of the symmetric n x n host matrix `a` (its row-major upper triangle is
// read). Synchronises: returns host data.
Eigenpairs smallest_eigenpairs_on_device(cusolverDnHandle_t handle, StreamRef stream, MatrixView<const double> a,
                                         std::int64_t k);

// Every eigenpair of the symmetric n x n host matrix `a` (cusolverDnDsyevd; its row-major upper triangle is
// read): values ascending, vectors as columns. Synchronises: returns host data.
Eigenpairs symmetric_eigenpairs_on_device(cusolverDnHandle_t handle, StreamRef stream, MatrixView<const double> a);

// The thin SVD of the m x n host matrix `m` (cusolverDnDgesvd, which wants at least as many rows as
// columns in its column-major view: the row-major buffer is that view of m^T, so a wide m goes as it is
// and a tall one is transposed on the host). Synchronises: returns host data.
SingularValueDecomposition singular_value_decomposition_on_device(cusolverDnHandle_t handle, StreamRef stream,
                                                                  MatrixView<const double> m, bool vectors);

}  // namespace convergent::cuda
