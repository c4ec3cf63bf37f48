// What bench_corr compares the backend against: the bare cuBLAS product of one batch on data already on
// the device, and the pinned host-to-device copy rate. Both timed with CUDA events after a warm-up.
#include <cuda_bf16.h>

#include <algorithm>

#include "backend/cuda_backend.hpp"
#include "device_memory.cuh"
#include "product.cuh"

namespace convergent::cuda {
namespace {

// Deterministic values in [-1, 1): the product's speed must not depend on the data being zeros.
__global__ void fill_kernel(float* x, __nv_bfloat16* x_bf16, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; i < n;
       i += std::int64_t{gridDim.x} * blockDim.x) {
    const auto h = static_cast<std::uint32_t>(i * 2654435761u);
    const float v = static_cast<float>(h >> 8) / static_cast<float>(1u << 23) - 1.0f;
    if (x != nullptr) x[i] = v;
    if (x_bf16 != nullptr) x_bf16[i] = __float2bfloat16_rn(v);
  }
}

constexpr int kWarmups = 2;
constexpr int kRepeats = 10;

}  // namespace
}  // namespace convergent::cuda

namespace convergent::detail {

CudaCeiling measure_cuda_ceiling(std::int64_t rows, std::int64_t units, Precision precision) {
  using namespace convergent::cuda;
  const BackendStatus status = cuda_backend_status({});
  if (!status.usable) throw Error("CUDA backend not usable: " + status.detail);
  if (rows < 1 || units < 1) throw Error("measure_cuda_ceiling: rows and units must be positive");
  DeviceGuard guard(0);
  CudaCeiling ceiling;
  ceiling.device_name = status.detail;

  const Stream stream;
  const CublasHandle cublas(stream.ref());
  const std::int64_t n = rows * units;
  DeviceBuffer<float> x(precision == Precision::bf16 ? 0 : n);
  DeviceBuffer<__nv_bfloat16> x_bf16(precision == Precision::bf16 ? n : 0);
  DeviceBuffer<float> s(units * units);
  constexpr int threads = 256;
  const auto blocks = static_cast<unsigned>(std::min<std::int64_t>((n + threads - 1) / threads, 65536));
  fill_kernel<<<blocks, threads, 0, stream.handle()>>>(x.data(), x_bf16.data(), n);
  CONVERGENT_CUDA_CHECK_LAUNCH();
  const void* input = precision == Precision::bf16 ? static_cast<const void*>(x_bf16.data()) : x.data();
  const Fp32Routine routine = fp32_routine_from_environment();

  const Event start(true), stop(true);
  for (int i = 0; i < kWarmups; ++i) batch_product(cublas.get(), precision, routine, input, rows, units, s.data());
  start.record(stream.ref());
  for (int i = 0; i < kRepeats; ++i) batch_product(cublas.get(), precision, routine, input, rows, units, s.data());
  stop.record(stream.ref());
  stop.synchronize();
  const double product_seconds = stop.elapsed_ms_since(start) / 1e3 / kRepeats;
  // Useful flops of the symmetric product, the count bench_corr uses for the streaming pass.
  ceiling.product_gflops = double(rows) * double(units) * double(units + 1) / product_seconds / 1e9;

  // The copy the accumulator makes per batch: float32 rows x units (at least 64 MiB, to time a steady rate).
  const std::int64_t copy_bytes = std::max<std::int64_t>(n * 4, std::int64_t{64} << 20);
  const PinnedBuffer<std::byte> host(copy_bytes);
  const DeviceBuffer<std::byte> device(copy_bytes);
  std::fill(host.data(), host.data() + copy_bytes, std::byte{1});
  for (int i = 0; i < kWarmups; ++i)
    copy_async(device.data(), host.data(), copy_bytes, cudaMemcpyHostToDevice, stream.ref());
  start.record(stream.ref());
  for (int i = 0; i < kRepeats; ++i)
    copy_async(device.data(), host.data(), copy_bytes, cudaMemcpyHostToDevice, stream.ref());
  stop.record(stream.ref());
  stop.synchronize();
  const double copy_seconds = stop.elapsed_ms_since(start) / 1e3 / kRepeats;
  ceiling.host_to_device_gbps = double(copy_bytes) / copy_seconds / 1e9;
  return ceiling;
}

}  // namespace convergent::detail
