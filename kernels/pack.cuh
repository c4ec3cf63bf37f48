// Device reading of one net's ActivationBlock as it came from the file (any dtype, either byte order,
// the block's own strides), mirroring host/cpu/pack.cpp (the reference): the exact float64 value of every
// element into columns of the row-major batch, and the scan for NaN and infinity that comes first.
#pragma once

#include <cstdint>

#include "convergent/activation.hpp"
#include "device_memory.cuh"

namespace convergent::cuda {

// `block.data` points to DEVICE memory holding the block with its own strides (all >= 0) and byte order.
// Writes rows [0, block.rows()) and columns [col_offset, col_offset + block.units) of the row-major
// float64 batch `out`, whose rows are `out_stride` values apart. float64 holds every float16, float32
// and float64 value exactly, so nothing is rounded here (host/cpu/pack.cpp's pack_block into doubles).
void launch_pack(const ActivationBlock& block, double* out, std::int64_t out_stride, std::int64_t col_offset,
                 StreamRef stream);

// Marks each sample row of the block that holds a NaN or infinity in `row_bad` (1; other rows are left
// alone) and lowers `*first_nonfinite` to the smallest batch-wide row-major index (row * batch_units +
// col_offset + unit) of such an element. Integer atomics only, so the result does not depend on the
// order threads run in.
void launch_find_nonfinite(const ActivationBlock& block, std::int64_t batch_units, std::int64_t col_offset,
                           unsigned char* row_bad, unsigned long long* first_nonfinite, StreamRef stream);

}  // namespace convergent::cuda
