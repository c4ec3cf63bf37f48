// Packing kernels; the reference is host/pack.cpp. Two shapes of the same operation: when units are
// adjacent in memory (NHWC, C-order rows) each thread copies one element in output order, which reads
// and writes coalesced; otherwise (NCHW, Fortran order) a 32 x 32 tile goes through shared memory so
// that both the strided reads and the row writes stay coalesced.
#include <cuda_fp16.h>

#include <algorithm>

#include "pack.cuh"

namespace convergent::cuda {
namespace {

constexpr int kTile = 32;
constexpr int kTileRows = 8;

// Exact conversions, identical to the host reference: half -> float is exact, double -> float rounds to
// nearest like static_cast.
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(double v) { return __double2float_rn(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

struct BlockShape {
  std::int64_t rows, units, height, width;
  std::int64_t image_stride, unit_stride, y_stride, x_stride;

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

// Units adjacent (unit_stride == 1): one element per thread, in output order.
template <class T>
__global__ void pack_rows_kernel(const T* __restrict__ src, BlockShape shape, float* __restrict__ out,
                                 std::int64_t out_stride, std::int64_t col_offset) {
  const std::int64_t total = shape.rows * shape.units;
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < total;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    const std::int64_t row = i / shape.units;
    const std::int64_t unit = i - row * shape.units;
    out[row * out_stride + col_offset + unit] = to_float(src[shape.offset(row, unit)]);
  }
}

// Any strides: tile (32 rows x 32 units). Loads walk rows (adjacent for NCHW), stores walk units.
template <class T>
__global__ void pack_transpose_kernel(const T* __restrict__ src, BlockShape shape, float* __restrict__ out,
                                      std::int64_t out_stride, std::int64_t col_offset) {
  __shared__ float tile[kTile][kTile + 1];  // +1: no bank conflicts on the transposed read
  const std::int64_t row0 = std::int64_t{blockIdx.x} * kTile;
  const std::int64_t unit0 = std::int64_t{blockIdx.y} * kTile;
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    const std::int64_t row = row0 + threadIdx.x;
    const std::int64_t unit = unit0 + k;
    if (row < shape.rows && unit < shape.units) tile[k][threadIdx.x] = to_float(src[shape.offset(row, unit)]);
  }
  __syncthreads();
  for (int k = threadIdx.y; k < kTile; k += kTileRows) {
    const std::int64_t row = row0 + k;
    const std::int64_t unit = unit0 + threadIdx.x;
    if (row < shape.rows && unit < shape.units) out[row * out_stride + col_offset + unit] = tile[threadIdx.x][k];
  }
}

template <class T>
void launch_pack_typed(const ActivationBlock& b, float* out, std::int64_t out_stride, std::int64_t col_offset,
                       StreamRef stream) {
  const BlockShape shape{b.rows(),        b.units,          b.height,     b.width,
                         b.image_stride,  b.unit_stride,    b.y_stride,   b.x_stride};
  const T* src = static_cast<const T*>(b.data);
  if (b.unit_stride == 1) {
    constexpr int threads = 256;
    const std::int64_t blocks = std::min<std::int64_t>((shape.rows * shape.units + threads - 1) / threads, 65536);
    pack_rows_kernel<T><<<static_cast<unsigned>(blocks), threads, 0, stream.handle>>>(src, shape, out, out_stride,
                                                                                     col_offset);
  } else {
    const dim3 threads(kTile, kTileRows);
    const dim3 blocks(static_cast<unsigned>((shape.rows + kTile - 1) / kTile),
                      static_cast<unsigned>((shape.units + kTile - 1) / kTile));
    pack_transpose_kernel<T><<<blocks, threads, 0, stream.handle>>>(src, shape, out, out_stride, col_offset);
  }
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_pack(const ActivationBlock& block, float* out, std::int64_t out_stride, std::int64_t col_offset,
                 StreamRef stream) {
  if (block.rows() == 0 || block.units == 0) return;
  if ((block.units + kTile - 1) / kTile > 65535)
    throw Error("CUDA pack: " + std::to_string(block.units) + " units in one net exceed the launch grid");
  switch (block.dtype) {
    case DType::float16: launch_pack_typed<__half>(block, out, out_stride, col_offset, stream); break;
    case DType::float32: launch_pack_typed<float>(block, out, out_stride, col_offset, stream); break;
    case DType::float64: launch_pack_typed<double>(block, out, out_stride, col_offset, stream); break;
  }
}

}  // namespace convergent::cuda
