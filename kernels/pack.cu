// Reading kernels; the reference is host/cpu/pack.cpp. Elements are taken as raw bits (uint16/32/64 for
// float16/32/64), byte-swapped when the block is big-endian, then decoded to float64, exactly. Two shapes
// of the conversion: when units are adjacent in memory (NHWC, C-order rows) each thread converts one
// element in output order, which reads and writes coalesced; otherwise (NCHW) a 32 x 32 tile goes through
// shared memory so that both the strided reads and the row writes stay coalesced.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>

#include "pack.cuh"

namespace convergent::cuda {
namespace {

constexpr int kTile = 32;
constexpr int kTileRows = 8;

// Exact decoding, identical to host/cpu/pack.cpp's load(): half -> double and float -> double are exact.
__device__ __forceinline__ double decode(std::uint16_t bits, bool swap) {
  if (swap) bits = static_cast<std::uint16_t>((bits >> 8) | (bits << 8));
  return static_cast<double>(__half2float(__ushort_as_half(bits)));
}
__device__ __forceinline__ double decode(std::uint32_t bits, bool swap) {
  if (swap) bits = __byte_perm(bits, 0, 0x0123);  // bytes 3 2 1 0
  return static_cast<double>(__uint_as_float(bits));
}
__device__ __forceinline__ double decode(std::uint64_t bits, bool swap) {
  if (swap) {
    // The low word of the swapped value is the high word of the stored one, reversed, and vice versa.
    const std::uint32_t low = __byte_perm(static_cast<std::uint32_t>(bits >> 32), 0, 0x0123);
    const std::uint32_t high = __byte_perm(static_cast<std::uint32_t>(bits), 0, 0x0123);
    bits = (static_cast<std::uint64_t>(high) << 32) | low;
  }
  return __longlong_as_double(static_cast<long long>(bits));
}

struct BlockShape {
  std::int64_t rows, units, height, width;
  std::int64_t image_stride, unit_stride, y_stride, x_stride;
  bool big_endian;

  // Element offset of (sample row, unit); rows run image-major, then y, then x.
  __device__ std::int64_t offset(std::int64_t row, std::int64_t unit) const {
    const std::int64_t per_image = height * width;
    const std::int64_t image = row / per_image;
    const std::int64_t pos = row - image * per_image;
    const std::int64_t y = pos / width;
    const std::int64_t x = pos - y * width;
    return image * image_stride + unit * unit_stride + y * y_stride + x * x_stride;
  }
};

template <class Bits>
__device__ __forceinline__ double load(const Bits* __restrict__ src, const BlockShape& shape, std::int64_t row,
                                       std::int64_t unit) {
  return decode(src[shape.offset(row, unit)], shape.big_endian);
}

BlockShape shape_of(const ActivationBlock& b) {
  return {b.rows(), b.units, b.height, b.width, b.image_stride, b.unit_stride, b.y_stride, b.x_stride, b.big_endian};
}

// For grid-stride loops over n elements: enough blocks to fill any device, no more.
unsigned strided_blocks(std::int64_t n, int threads) {
  return static_cast<unsigned>(std::min<std::int64_t>((n + threads - 1) / threads, 65536));
}

// Units adjacent (unit_stride == 1): one element per thread, in output order.
template <class Bits>
__global__ void pack_rows_kernel(const Bits* __restrict__ src, BlockShape shape, double* __restrict__ out,
                                 std::int64_t out_stride, std::int64_t col_offset) {
  const std::int64_t total = shape.rows * shape.units;
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < total;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    const std::int64_t row = i / shape.units;
    const std::int64_t unit = i - row * shape.units;
    out[row * out_stride + col_offset + unit] = load(src, shape, row, unit);
  }
}

// Any strides: tile (32 rows x 32 units). Loads walk rows (adjacent for NCHW), stores walk units.
template <class Bits>
__global__ void pack_transpose_kernel(const Bits* __restrict__ src, BlockShape shape, double* __restrict__ out,
                                      std::int64_t out_stride, std::int64_t col_offset) {
  __shared__ double tile[kTile][kTile + 1];  // +1: no bank conflicts on the transposed read
  const std::int64_t row0 = std::int64_t{blockIdx.x} * kTile;
  const std::int64_t unit0 = std::int64_t{blockIdx.y} * kTile;
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    const std::int64_t row = row0 + threadIdx.x;
    const std::int64_t unit = unit0 + k;
    if (row < shape.rows && unit < shape.units) tile[k][threadIdx.x] = load(src, shape, row, unit);
  }
  __syncthreads();
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    const std::int64_t row = row0 + k;
    const std::int64_t unit = unit0 + threadIdx.x;
    if (row < shape.rows && unit < shape.units) out[row * out_stride + col_offset + unit] = tile[threadIdx.x][k];
  }
}

// One element per thread. Consecutive threads take consecutive units when units are adjacent in memory,
// else consecutive rows of one unit (adjacent in NCHW): reads stay mostly coalesced either way, and the
// answer is an integer minimum, the same in any order.
template <class Bits>
__global__ void find_nonfinite_kernel(const Bits* __restrict__ src, BlockShape shape, std::int64_t batch_units,
                                      std::int64_t col_offset, unsigned char* __restrict__ row_bad,
                                      unsigned long long* first_nonfinite) {
  const std::int64_t total = shape.rows * shape.units;
  const bool units_adjacent = shape.unit_stride == 1;
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < total;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    const std::int64_t row = units_adjacent ? i / shape.units : i % shape.rows;
    const std::int64_t unit = units_adjacent ? i % shape.units : i / shape.rows;
    if (!isfinite(load(src, shape, row, unit))) {
      row_bad[row] = 1;  // every writer stores the same value
      atomicMin(first_nonfinite, static_cast<unsigned long long>(row * batch_units + col_offset + unit));
    }
  }
}

template <class Bits>
void launch_pack_typed(const ActivationBlock& b, double* out, std::int64_t out_stride, std::int64_t col_offset,
                       StreamRef stream) {
  const BlockShape shape = shape_of(b);
  const Bits* src = static_cast<const Bits*>(b.data);
  if (b.unit_stride == 1) {
    constexpr int threads = 256;
    pack_rows_kernel<Bits><<<strided_blocks(shape.rows * shape.units, threads), threads, 0, stream.handle>>>(
        src, shape, out, out_stride, col_offset);
  } else {
    const dim3 threads(kTile, kTileRows);
    const dim3 blocks(static_cast<unsigned>((shape.rows + kTile - 1) / kTile),
                      static_cast<unsigned>((shape.units + kTile - 1) / kTile));
    pack_transpose_kernel<Bits><<<blocks, threads, 0, stream.handle>>>(src, shape, out, out_stride, col_offset);
  }
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

template <class Bits>
void launch_find_nonfinite_typed(const ActivationBlock& b, std::int64_t batch_units, std::int64_t col_offset,
                                 unsigned char* row_bad, unsigned long long* first_nonfinite, StreamRef stream) {
  const BlockShape shape = shape_of(b);
  constexpr int threads = 256;
  find_nonfinite_kernel<Bits><<<strided_blocks(shape.rows * shape.units, threads), threads, 0, stream.handle>>>(
      static_cast<const Bits*>(b.data), shape, batch_units, col_offset, row_bad, first_nonfinite);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_pack(const ActivationBlock& block, double* out, std::int64_t out_stride, std::int64_t col_offset,
                 StreamRef stream) {
  if (block.rows() == 0 || block.units == 0) return;
  if ((block.units + kTile - 1) / kTile > 65535)
    throw Error("CUDA pack: " + std::to_string(block.units) + " units in one net exceed the launch grid");
  switch (block.dtype) {
    case DType::float16: launch_pack_typed<std::uint16_t>(block, out, out_stride, col_offset, stream); break;
    case DType::float32: launch_pack_typed<std::uint32_t>(block, out, out_stride, col_offset, stream); break;
    case DType::float64: launch_pack_typed<std::uint64_t>(block, out, out_stride, col_offset, stream); break;
  }
}

void launch_find_nonfinite(const ActivationBlock& block, std::int64_t batch_units, std::int64_t col_offset,
                           unsigned char* row_bad, unsigned long long* first_nonfinite, StreamRef stream) {
  if (block.rows() == 0 || block.units == 0) return;
  switch (block.dtype) {
    case DType::float16:
      launch_find_nonfinite_typed<std::uint16_t>(block, batch_units, col_offset, row_bad, first_nonfinite, stream);
      break;
    case DType::float32:
      launch_find_nonfinite_typed<std::uint32_t>(block, batch_units, col_offset, row_bad, first_nonfinite, stream);
      break;
    case DType::float64:
      launch_find_nonfinite_typed<std::uint64_t>(block, batch_units, col_offset, row_bad, first_nonfinite, stream);
      break;
  }
}

}  // namespace convergent::cuda
