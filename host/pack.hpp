// The CPU reference for turning a net's ActivationBlock (any dtype, any axis order) into float32 columns
// of a row-major batch. The CUDA backend does the same on the device, or calls this for layouts it
// cannot copy as one contiguous span.
#pragma once

#include <cstdint>
#include <vector>

#include "convergent/activation.hpp"
#include "convergent/matrix.hpp"

namespace convergent {

float half_to_float(std::uint16_t bits);

// Writes block's samples [first_row, first_row + out.rows), in (image, y, x) order, into rows
// [0, out.rows) and columns [col_offset, col_offset + block.units) of `out`, converting to float32 (or to
// float64, for matrices read whole such as `convergent match`).
void pack_block(const ActivationBlock& block, MatrixView<float> out, std::int64_t col_offset,
                std::int64_t first_row = 0);
void pack_block(const ActivationBlock& block, MatrixView<double> out, std::int64_t col_offset,
                std::int64_t first_row = 0);

}  // namespace convergent
