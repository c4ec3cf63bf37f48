// Reference reading of activation blocks. Every pass walks the sample rows the same way: native float32
// and float64 rows with contiguous units are read in place; any other row (float16, big-endian, units
// strided as in NCHW) is first gathered into a float64 scratch row, which is exact for every dtype.
#include "cpu/pack.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/batch_kernels.hpp"

namespace convergent {
namespace {

template <class T>
double load(const T* p, bool swap) {
  if (!swap) return static_cast<double>(*p);
  unsigned char bytes[sizeof(T)];
  std::memcpy(bytes, p, sizeof(T));
  std::reverse(bytes, bytes + sizeof(T));
  T value;
  std::memcpy(&value, bytes, sizeof(T));
  return static_cast<double>(value);
}

template <>
double load<std::uint16_t>(const std::uint16_t* p, bool swap) {
  std::uint16_t bits = *p;
  if (swap) bits = static_cast<std::uint16_t>((bits >> 8) | (bits << 8));
  return half_to_float(bits);
}

// Calls visit(row, values) for block's samples [first_row, first_row + rows) in (image, y, x) order, with
// `row` counted from first_row and `values` pointing at the sample's `units` values (const T* read in
// place, or const double* gathered).
template <class T, class Visit>
void for_each_row(const ActivationBlock& b, std::int64_t first_row, std::int64_t rows, const Visit& visit) {
  if (rows <= 0) return;
  const T* src = static_cast<const T*>(b.data);
  const bool in_place = b.unit_stride == 1 && !b.big_endian && !std::is_same_v<T, std::uint16_t>;
  std::vector<double> scratch(in_place ? 0 : static_cast<std::size_t>(b.units));
  const std::int64_t pixels = b.height * b.width;
  std::int64_t img = first_row / pixels, y = first_row % pixels / b.width, x = first_row % b.width;
  for (std::int64_t row = 0; row < rows; ++row) {
    const T* first = src + img * b.image_stride + y * b.y_stride + x * b.x_stride;
    if constexpr (!std::is_same_v<T, std::uint16_t>) {
      if (in_place) visit(row, first);
    }
    if (!in_place) {
      for (std::int64_t u = 0; u < b.units; ++u) scratch[u] = load(first + u * b.unit_stride, b.big_endian);
      visit(row, static_cast<const double*>(scratch.data()));
    }
    if (++x == b.width) {
      x = 0;
      if (++y == b.height) y = 0, ++img;
    }
  }
}

// Runs for_each_row with the element type of the block's dtype (float16 arrives as raw bits).
template <class Visit>
void for_each_row(const ActivationBlock& b, std::int64_t first_row, std::int64_t rows, const Visit& visit) {
  switch (b.dtype) {
    case DType::float16: for_each_row<std::uint16_t>(b, first_row, rows, visit); break;
    case DType::float32: for_each_row<float>(b, first_row, rows, visit); break;
    case DType::float64: for_each_row<double>(b, first_row, rows, visit); break;
  }
}

template <class Out>
void pack_any(const ActivationBlock& block, MatrixView<Out> out, std::int64_t col_offset, std::int64_t first_row) {
  for_each_row(block, first_row, out.rows, [&](std::int64_t row, const auto* values) {
    Out* dst = out.row(row) + col_offset;
    for (std::int64_t u = 0; u < block.units; ++u) dst[u] = static_cast<Out>(values[u]);
  });
}

}  // namespace

float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exponent = (h >> 10) & 0x1fu;
  std::uint32_t mantissa = h & 0x3ffu;
  std::uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // inf or NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {
    // Subnormal half: shift until the implicit bit appears, adjusting the exponent.
    exponent = 113;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --exponent;
    }
    bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

void pack_block(const ActivationBlock& block, MatrixView<float> out, std::int64_t col_offset, std::int64_t first_row) {
  pack_any(block, out, col_offset, first_row);
}

void pack_block(const ActivationBlock& block, MatrixView<double> out, std::int64_t col_offset, std::int64_t first_row) {
  pack_any(block, out, col_offset, first_row);
}

bool pack_scaled(const ActivationBlock& block, MatrixView<float> out, std::int64_t col_offset, std::int64_t first_row,
                 const double* centre, const double* multiplier, double* sum, double* low, double* high) {
  std::fill(sum, sum + block.units, 0.0);
  std::fill(low, low + block.units, std::numeric_limits<double>::infinity());
  std::fill(high, high + block.units, -std::numeric_limits<double>::infinity());
  std::vector<double> probe(static_cast<std::size_t>(block.units), 0.0);
  for_each_row(block, first_row, out.rows, [&](std::int64_t row, const auto* values) {
    row_scale(values, block.units, centre, multiplier, out.row(row) + col_offset, sum, low, high, probe.data());
  });
  return std::all_of(probe.begin(), probe.end(), [](double p) { return p == 0.0; });
}

}  // namespace convergent
