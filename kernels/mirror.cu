// Mirror of the upper triangle: one block per tile on or above the diagonal. An off-diagonal tile is read
// row by row (coalesced), held in shared memory, and written row by row into its transposed position
// (coalesced again); a diagonal tile is mirrored inside itself.
#include "mirror.cuh"

namespace convergent::cuda {
namespace {

__global__ void mirror_upper_kernel(double* m, std::int64_t n) {
  const int tile_col = blockIdx.x, tile_row = blockIdx.y;
  if (tile_row > tile_col) return;
  __shared__ double tile[kTileSize][kTileSize + 1];  // +1: the transposed read hits distinct banks
  const std::int64_t row0 = std::int64_t{tile_row} * kTileSize, col0 = std::int64_t{tile_col} * kTileSize;
  for (int k = threadIdx.y; k < kTileSize; k += kTileRowStep) {
    const std::int64_t i = row0 + k, j = col0 + threadIdx.x;
    if (i < n && j < n) tile[k][threadIdx.x] = m[i * n + j];
  }
  __syncthreads();
  // Element (j, i) of the lower triangle takes tile[i - row0][j - col0], i.e. (i, j) of the upper one.
  for (int k = threadIdx.y; k < kTileSize; k += kTileRowStep) {
    const std::int64_t j = col0 + k, i = row0 + threadIdx.x;  // write row j, column i
    if (i < n && j < n && i < j) m[j * n + i] = tile[threadIdx.x][k];
  }
}

}  // namespace

dim3 upper_tile_grid(std::int64_t n, const char* what) {
  const std::int64_t tiles = (n + kTileSize - 1) / kTileSize;
  if (tiles > 65535)
    throw Error(std::string(what) + ": " + std::to_string(n) + " units exceed the launch grid (at most " +
                std::to_string(65535 * kTileSize) + ")");
  return dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(tiles));
}

void launch_mirror_upper(double* m, std::int64_t n, StreamRef stream) {
  if (n <= 1) return;
  mirror_upper_kernel<<<upper_tile_grid(n, "CUDA mirror"), dim3(kTileSize, kTileRowStep), 0, stream.handle>>>(m, n);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

}  // namespace convergent::cuda
