// Correlation from the comoment. The arithmetic is the reference's, in the same order, so results agree
// to the last bit: scale_i = 1 / sqrt(M2_ii), corr_ij = (M2_ij * scale_i) * scale_j.
#include <algorithm>

#include "correlation.cuh"

namespace convergent::cuda {
namespace {

constexpr int kColumns = 32;
constexpr int kRows = 8;

__global__ void inverse_sd_kernel(const double* __restrict__ m2, const unsigned char* __restrict__ dead,
                                  std::int64_t units, double* __restrict__ scale) {
  const std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x;
  if (i < units) scale[i] = dead[i] ? 0.0 : 1.0 / sqrt(m2[i * units + i]);
}

__global__ void correlation_kernel(const double* __restrict__ m2, const unsigned char* __restrict__ dead,
                                   std::int64_t units, const double* __restrict__ scale, double* __restrict__ corr) {
  const std::int64_t j = std::int64_t{blockIdx.x} * kColumns + threadIdx.x;
  if (j >= units) return;
  for (std::int64_t i = std::int64_t{blockIdx.y} * kRows + threadIdx.y; i < units;
       i += std::int64_t{gridDim.y} * kRows) {
    double v = m2[i * units + j] * scale[i] * scale[j];
    v = v < -1.0 ? -1.0 : (1.0 < v ? 1.0 : v);  // std::clamp's comparisons, so a NaN passes through alike
    if (i == j && !dead[i]) v = 1.0;
    corr[i * units + j] = v;
  }
}

}  // namespace

void launch_correlation(const double* m2, const unsigned char* dead, std::int64_t units, double* scale, double* corr,
                        StreamRef stream) {
  if (units == 0) return;
  constexpr int threads = 256;
  inverse_sd_kernel<<<static_cast<unsigned>((units + threads - 1) / threads), threads, 0, stream.handle>>>(
      m2, dead, units, scale);
  CONVERGENT_CUDA_CHECK_LAUNCH();
  const dim3 grid(static_cast<unsigned>((units + kColumns - 1) / kColumns),
                  static_cast<unsigned>(std::min<std::int64_t>((units + kRows - 1) / kRows, 65535)));
  correlation_kernel<<<grid, dim3(kColumns, kRows), 0, stream.handle>>>(m2, dead, units, scale, corr);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

}  // namespace convergent::cuda
