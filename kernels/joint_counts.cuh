// The CUDA backend's JointCounter (reference: host/cpu/cpu_joint_counter.cpp): joint bin counts as an int8
// tensor-core GEMM of one-hot bin indicators, exact (int32 per chunk of rows, int64 totals).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "convergent/backend.hpp"

namespace convergent::cuda {

// A counter on `device` (arguments checked by Backend::joint_counter). Throws Error when the counts and
// the one-hot buffers do not fit the device's free memory, naming what they need.
std::unique_ptr<JointCounter> make_cuda_joint_counter(int device, std::int64_t row_units,
                                                      std::optional<std::int64_t> col_units,
                                                      const JointCountOptions& options);

}  // namespace convergent::cuda
