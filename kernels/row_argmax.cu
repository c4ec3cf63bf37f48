// First maximum of each row: one warp per row. Each lane keeps the first maximum of the columns it visits
// (strictly greater replaces; NaN is noted and skipped, since no value compares greater than a NaN that
// a lane started from), then the warp combines lanes preferring the larger value and, on a tie, the lower
// column, which is the reference's answer.
#include <algorithm>

#include "row_argmax.cuh"

namespace convergent::cuda {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr std::int64_t kNone = -1;

__global__ void row_argmax_kernel(const double* __restrict__ m, std::int64_t rows, std::int64_t cols,
                                  std::int64_t stride, std::int64_t* __restrict__ out,
                                  unsigned long long* first_nan) {
  const int lane = threadIdx.x & 31;
  const std::int64_t first_row = std::int64_t{blockIdx.x} * kWarpsPerBlock + (threadIdx.x >> 5);
  for (std::int64_t r = first_row; r < rows; r += std::int64_t{gridDim.x} * kWarpsPerBlock) {
    const double* row = m + r * stride;
    double best = 0.0;
    std::int64_t best_col = kNone;  // this lane has seen no number yet
    std::int64_t nan_col = kNone;   // the first NaN this lane saw
    for (std::int64_t c = lane; c < cols; c += 32) {
      const double v = row[c];
      if (isnan(v)) {
        if (nan_col == kNone) nan_col = c;
      } else if (best_col == kNone || v > best) {
        best = v;
        best_col = c;
      }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
      const double other = __shfl_down_sync(0xffffffffu, best, offset);
      const std::int64_t other_col = __shfl_down_sync(0xffffffffu, best_col, offset);
      const std::int64_t other_nan = __shfl_down_sync(0xffffffffu, nan_col, offset);
      const bool take = other_col != kNone &&
                        (best_col == kNone || other > best || (other == best && other_col < best_col));
      if (take) {
        best = other;
        best_col = other_col;
      }
      if (other_nan != kNone && (nan_col == kNone || other_nan < nan_col)) nan_col = other_nan;
    }
    if (lane == 0) {
      out[r] = best_col == kNone ? 0 : best_col;  // a row of NaN only: the error below decides
      if (nan_col != kNone) atomicMin(first_nan, static_cast<unsigned long long>(r * cols + nan_col));
    }
  }
}

}  // namespace

void launch_row_argmax(const double* m, std::int64_t rows, std::int64_t cols, std::int64_t stride,
                       std::int64_t* out, unsigned long long* first_nan, StreamRef stream) {
  if (rows == 0 || cols == 0) return;
  const auto blocks =
      static_cast<unsigned>(std::min<std::int64_t>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock, 65536));
  row_argmax_kernel<<<blocks, kWarpsPerBlock * 32, 0, stream.handle>>>(m, rows, cols, stride, out, first_nan);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

}  // namespace convergent::cuda
