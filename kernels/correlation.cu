// Correlation from the comoment: the upper triangle tile by tile (tiles below the diagonal return at
// once), then launch_mirror_upper. The arithmetic is the reference's, in the same order; double division
// and sqrt are correctly rounded on the device as on the host, so results agree to the last bit.
#include "correlation.cuh"
#include "mirror.cuh"

namespace convergent::cuda {
namespace {

__global__ void inverse_sd_kernel(const double* __restrict__ m2, const unsigned char* __restrict__ dead,
                                  std::int64_t units, double* __restrict__ scale) {
  const std::int64_t i = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x;
  if (i < units) scale[i] = dead[i] ? 0.0 : 1.0 / sqrt(m2[i * units + i]);
}

__global__ void correlation_upper_kernel(const double* __restrict__ m2, const unsigned char* __restrict__ dead,
                                         std::int64_t units, const double* __restrict__ scale,
                                         double* __restrict__ corr) {
  if (blockIdx.y > blockIdx.x) return;
  const std::int64_t j = std::int64_t{blockIdx.x} * kTileSize + threadIdx.x;
  if (j >= units) return;
  const double scale_j = scale[j];
  for (int k = threadIdx.y; k < kTileSize; k += kTileRowStep) {
    const std::int64_t i = std::int64_t{blockIdx.y} * kTileSize + k;
    if (i > j) break;  // i only grows with k
    double v;
    if (i == j) {
      v = dead[i] ? 0.0 : 1.0;
    } else {
      v = m2[i * units + j] * scale[i] * scale_j;
      v = v < -1.0 ? -1.0 : (1.0 < v ? 1.0 : v);  // std::clamp's comparisons
    }
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
  correlation_upper_kernel<<<upper_tile_grid(units, "CUDA correlation"), dim3(kTileSize, kTileRowStep), 0,
                             stream.handle>>>(m2, dead, units, scale, corr);
  CONVERGENT_CUDA_CHECK_LAUNCH();
  launch_mirror_upper(corr, units, stream);
}

}  // namespace convergent::cuda
