// The CPU backend: OpenBLAS for the batch products, LAPACK for eigenpairs. It is also the oracle the
// CUDA backend is tested against.
#pragma once

#include <memory>

#include "convergent/backend.hpp"

namespace convergent::detail {

std::unique_ptr<Backend> make_reference_backend(const BackendOptions& options);

}  // namespace convergent::detail
