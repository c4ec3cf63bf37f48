// The CPU backend's JointCounter (Backend::joint_counter): a blocked counting kernel, exact in int64. It
// is the oracle the CUDA backend's int8 GEMM is tested against.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "convergent/backend.hpp"

namespace convergent::detail {

// Counts on `threads` threads. Throws Error when the counts, 8 (row_units bins) (col_units bins) bytes,
// cannot be allocated.
std::unique_ptr<JointCounter> make_cpu_joint_counter(std::int64_t row_units, std::optional<std::int64_t> col_units,
                                                     const JointCountOptions& options, int threads);

}  // namespace convergent::detail
