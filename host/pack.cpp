// Reference packing of activations into float32 rows.
#include "pack.hpp"

#include <cstring>

namespace convergent {
namespace {

// Plain casts, except that float16 arrives as raw bits.
template <class Out, class T>
Out convert(T v) {
  return static_cast<Out>(v);
}
template <>
float convert<float, std::uint16_t>(std::uint16_t v) {
  return half_to_float(v);
}
template <>
double convert<double, std::uint16_t>(std::uint16_t v) {
  return half_to_float(v);
}

template <class T, class Out>
void pack_typed(const ActivationBlock& b, MatrixView<Out> out, std::int64_t col_offset, std::int64_t first_row) {
  if (out.rows == 0) return;
  const T* src = static_cast<const T*>(b.data);
  const std::int64_t pixels = b.height * b.width;
  std::int64_t img = first_row / pixels, y = first_row % pixels / b.width, x = first_row % b.width;
  for (std::int64_t row = 0; row < out.rows; ++row) {
    const T* first = src + img * b.image_stride + y * b.y_stride + x * b.x_stride;
    Out* dst = out.row(row) + col_offset;
    if (b.unit_stride == 1) {
      for (std::int64_t u = 0; u < b.units; ++u) dst[u] = convert<Out>(first[u]);
    } else {
      for (std::int64_t u = 0; u < b.units; ++u) dst[u] = convert<Out>(first[u * b.unit_stride]);
    }
    if (++x == b.width) {
      x = 0;
      if (++y == b.height) y = 0, ++img;
    }
  }
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

template <class Out>
void pack_any(const ActivationBlock& block, MatrixView<Out> out, std::int64_t col_offset, std::int64_t first_row) {
  switch (block.dtype) {
    case DType::float16: pack_typed<std::uint16_t>(block, out, col_offset, first_row); break;
    case DType::float32: pack_typed<float>(block, out, col_offset, first_row); break;
    case DType::float64: pack_typed<double>(block, out, col_offset, first_row); break;
  }
}

void pack_block(const ActivationBlock& block, MatrixView<float> out, std::int64_t col_offset, std::int64_t first_row) {
  pack_any(block, out, col_offset, first_row);
}

void pack_block(const ActivationBlock& block, MatrixView<double> out, std::int64_t col_offset, std::int64_t first_row) {
  pack_any(block, out, col_offset, first_row);
}

}  // namespace convergent
