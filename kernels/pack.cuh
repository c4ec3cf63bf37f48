// Device packing of one net's activations into float32 columns of the row-major batch: dtype conversion
// and the NCHW / NHWC / strided-to-rows transpose, mirroring host/pack.cpp (the reference).
#pragma once

#include <cstdint>

#include "convergent/activation.hpp"
#include "device_memory.cuh"

namespace convergent::cuda {

// `block.data` points to DEVICE memory holding the block with its own strides (all >= 0). Writes rows
// [0, block.rows()) and columns [col_offset, col_offset + block.units) of the row-major batch `out`,
// whose rows are `out_stride` floats apart.
void launch_pack(const ActivationBlock& block, float* out, std::int64_t out_stride, std::int64_t col_offset,
                 StreamRef stream);

}  // namespace convergent::cuda
