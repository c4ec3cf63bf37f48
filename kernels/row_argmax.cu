// First maximum of each row: one warp per row. Each lane keeps the first maximum of the columns it visits
// (strictly greater replaces), then the warp combines lanes preferring the larger value and, on a tie,
// the lower column, which is std::max_element's answer.
#include <algorithm>

#include "correlation.cuh"

namespace convergent::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;

__global__ void row_argmax_kernel(const double* __restrict__ m, std::int64_t rows, std::int64_t cols,
                                  std::int64_t stride, std::int64_t* __restrict__ out) {
  const int lane = threadIdx.x & 31;
  const std::int64_t first_row = std::int64_t{blockIdx.x} * kWarpsPerBlock + (threadIdx.x >> 5);
  for (std::int64_t r = first_row; r < rows; r += std::int64_t{gridDim.x} * kWarpsPerBlock) {
    const double* row = m + r * stride;
    double best = 0.0;
    std::int64_t best_col = -1;  // -1: this lane saw no column
    for (std::int64_t c = lane; c < cols; c += 32) {
      const double v = row[c];
      if (best_col < 0 || v > best) {
        best = v;
        best_col = c;
      }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
      const double other = __shfl_down_sync(0xffffffffu, best, offset);
      const std::int64_t other_col = __shfl_down_sync(0xffffffffu, best_col, offset);
      const bool take = other_col >= 0 &&
                        (best_col < 0 || other > best || (other == best && other_col < best_col));
      if (take) {
        best = other;
        best_col = other_col;
      }
    }
    if (lane == 0) out[r] = best_col < 0 ? 0 : best_col;  // an empty row answers 0, like max_element
  }
}

}  // namespace

void launch_row_argmax(const double* m, std::int64_t rows, std::int64_t cols, std::int64_t stride,
                       std::int64_t* out, StreamRef stream) {
  if (rows == 0) return;
  const auto blocks =
      static_cast<unsigned>(std::min<std::int64_t>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock, 65536));
  row_argmax_kernel<<<blocks, kWarpsPerBlock * 32, 0, stream.handle>>>(m, rows, cols, stride, out);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

}  // namespace convergent::cuda
