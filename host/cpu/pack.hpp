// The CPU reference for reading a net's ActivationBlock (any dtype, either byte order, any axis order)
// as sample rows: plain conversion into a matrix, and the streaming pass's packing, where values are
// shifted and scaled before they are rounded to float32 and each unit's range is taken on the way. The CUDA backend does
// the same on the device.
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

// Like pack_block, but each value v of unit c is written as float32((v - centre[c]) * multiplier[c]), the
// subtraction in float64. Per unit, over the rows packed: sum[c] receives the float64 sum of the written
// values before rounding, low[c] and high[c] the exact minimum and maximum of v. Units are indexed from
// the block's first unit in every array. Returns false when any value is a NaN or infinity (the other
// outputs are then meaningless).
bool pack_scaled(const ActivationBlock& block, MatrixView<float> out, std::int64_t col_offset, std::int64_t first_row,
                 const double* centre, const double* multiplier, double* sum, double* low, double* high);

}  // namespace convergent
