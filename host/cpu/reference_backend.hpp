// The CPU backend: OpenBLAS for the batch products, LAPACK for eigenpairs. It is also the oracle the
// CUDA backend is tested against.
#pragma once

#include <cstdint>
#include <memory>

#include "convergent/backend.hpp"

namespace convergent::detail {

// Rows per float32 product: correlations stay within ~5e-7 of float64 on ReLU-like data, and the
// float64 merge after each product costs under 5% of it at 1024 units.
constexpr std::int64_t cpu_product_rows = 2048;

std::unique_ptr<Backend> make_reference_backend(const BackendOptions& options);

}  // namespace convergent::detail
