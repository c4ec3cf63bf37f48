// Kernels of one accumulation step. Columns are units, so 32 threads of a warp take 32 adjacent units of
// one row (coalesced) and the 8 warps of a block walk rows; reductions over rows go through fixed-order
// partials so that results do not depend on scheduling. M2 is updated in its upper triangle only.
#include <algorithm>
#include <cmath>

#include "mirror.cuh"
#include "moments.cuh"

namespace convergent::cuda {
namespace {

constexpr int kColumns = 32;  // units per block (one warp wide)
constexpr int kRowsPerPass = 8;
constexpr unsigned kMaxGridY = 65535;

dim3 column_grid(std::int64_t rows, std::int64_t units) {
  return dim3(static_cast<unsigned>((units + kColumns - 1) / kColumns),
              static_cast<unsigned>(std::min<std::int64_t>((rows + kRowsPerPass - 1) / kRowsPerPass, kMaxGridY)));
}

__global__ void find_nonfinite_kernel(const float* __restrict__ x, std::int64_t rows, std::int64_t units,
                                      unsigned char* __restrict__ row_bad, BatchCounters* counters) {
  const std::int64_t c = std::int64_t{blockIdx.x} * kColumns + threadIdx.x;
  if (c >= units) return;
  for (std::int64_t r = std::int64_t{blockIdx.y} * kRowsPerPass + threadIdx.y; r < rows;
       r += std::int64_t{gridDim.y} * kRowsPerPass) {
    const std::int64_t i = r * units + c;
    if (!isfinite(x[i])) {
      row_bad[r] = 1;  // every writer stores the same value
      atomicMin(&counters->first_nonfinite, static_cast<unsigned long long>(i));
    }
  }
}

__global__ void count_kept_kernel(const unsigned char* __restrict__ row_bad, std::int64_t rows,
                                  BatchCounters* counters) {
  __shared__ unsigned long long block_total;
  if (threadIdx.x == 0) block_total = 0;
  __syncthreads();
  unsigned long long kept = 0;
  for (std::int64_t r = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x; r < rows;
       r += std::int64_t{gridDim.x} * blockDim.x)
    kept += row_bad[r] == 0;
  atomicAdd(&block_total, kept);
  __syncthreads();
  if (threadIdx.x == 0) atomicAdd(&counters->kept_rows, block_total);
}

// Block (32 units x 8 row lanes), grid (unit tiles x row chunks). Each block writes the sum, min and max
// of its rows for its 32 units into partials[{0,1,2}][chunk][unit].
__global__ void column_partials_kernel(const float* __restrict__ x, std::int64_t rows, std::int64_t units,
                                       const unsigned char* __restrict__ row_bad, double* __restrict__ partials) {
  __shared__ double sum[kRowsPerPass][kColumns];
  __shared__ double lo[kRowsPerPass][kColumns];
  __shared__ double hi[kRowsPerPass][kColumns];
  const std::int64_t c = std::int64_t{blockIdx.x} * kColumns + threadIdx.x;
  const std::int64_t chunk = blockIdx.y;
  const std::int64_t chunk_rows = (rows + gridDim.y - 1) / gridDim.y;
  const std::int64_t first = chunk * chunk_rows;
  const std::int64_t last = min(rows, first + chunk_rows);
  double s = 0.0, mn = INFINITY, mx = -INFINITY;
  if (c < units) {
    for (std::int64_t r = first + threadIdx.y; r < last; r += kRowsPerPass) {
      if (row_bad[r]) continue;
      const double v = x[r * units + c];
      s += v;
      mn = fmin(mn, v);
      mx = fmax(mx, v);
    }
  }
  sum[threadIdx.y][threadIdx.x] = s;
  lo[threadIdx.y][threadIdx.x] = mn;
  hi[threadIdx.y][threadIdx.x] = mx;
  __syncthreads();
  if (threadIdx.y == 0 && c < units) {
    for (int k = 1; k < kRowsPerPass; ++k) {
      s += sum[k][threadIdx.x];
      mn = fmin(mn, lo[k][threadIdx.x]);
      mx = fmax(mx, hi[k][threadIdx.x]);
    }
    const std::int64_t plane = std::int64_t{gridDim.y} * units;
    partials[chunk * units + c] = s;
    partials[plane + chunk * units + c] = mn;
    partials[2 * plane + chunk * units + c] = mx;
  }
}

__global__ void column_finish_kernel(const double* __restrict__ partials, int chunks, std::int64_t units,
                                     const BatchCounters* counters, double* mean, double* min, double* max) {
  const std::int64_t c = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x;
  if (c >= units) return;
  const std::int64_t plane = std::int64_t{chunks} * units;
  double s = 0.0, mn = INFINITY, mx = -INFINITY;
  for (int k = 0; k < chunks; ++k) {
    s += partials[k * units + c];
    mn = fmin(mn, partials[plane + k * units + c]);
    mx = fmax(mx, partials[2 * plane + k * units + c]);
  }
  const unsigned long long kept = counters->kept_rows;
  mean[c] = kept > 0 ? s / static_cast<double>(kept) : 0.0;
  min[c] = mn;
  max[c] = mx;
}

template <bool kWriteBf16>
__global__ void centre_kernel(float* __restrict__ x, std::int64_t rows, std::int64_t units,
                              const unsigned char* __restrict__ row_bad, const double* __restrict__ mean,
                              __nv_bfloat16* __restrict__ x_bf16) {
  const std::int64_t c = std::int64_t{blockIdx.x} * kColumns + threadIdx.x;
  if (c >= units) return;
  const double m = mean[c];
  for (std::int64_t r = std::int64_t{blockIdx.y} * kRowsPerPass + threadIdx.y; r < rows;
       r += std::int64_t{gridDim.y} * kRowsPerPass) {
    const std::int64_t i = r * units + c;
    const float v = row_bad[r] ? 0.0f : static_cast<float>(static_cast<double>(x[i]) - m);
    x[i] = v;
    if (kWriteBf16) x_bf16[i] = __float2bfloat16_rn(v);
  }
}

// One block per 32 x 32 tile on or above the diagonal; a thread walks 4 rows of one column, so each row
// of the tile is read and written by one warp (coalesced). Entries below the diagonal are not touched.
__global__ void merge_product_kernel(const float* __restrict__ s, std::int64_t units, bool chan_term,
                                     const double* __restrict__ batch_mean, const double* __restrict__ mean,
                                     const Totals* totals, const BatchCounters* counters, double* __restrict__ m2) {
  if (blockIdx.y > blockIdx.x) return;
  const std::int64_t j = std::int64_t{blockIdx.x} * kTileSize + threadIdx.x;
  if (j >= units) return;
  double weight = 0.0, dj = 0.0;
  if (chan_term) {
    const double nb = static_cast<double>(counters->kept_rows);
    const double n = static_cast<double>(totals->samples);
    // 0 for the first batch (M2 is then the batch's own comoment) and for a batch with no kept rows.
    weight = nb > 0.0 ? n * nb / (n + nb) : 0.0;
    dj = batch_mean[j] - mean[j];
  }
  for (int k = threadIdx.y; k < kTileSize; k += kTileRowStep) {
    const std::int64_t i = std::int64_t{blockIdx.y} * kTileSize + k;
    if (i > j) break;  // i only grows with k
    double v = m2[i * units + j] + static_cast<double>(s[i * units + j]);
    if (chan_term) v += weight * ((batch_mean[i] - mean[i]) * dj);
    m2[i * units + j] = v;
  }
}

__global__ void merge_moments_kernel(const double* __restrict__ batch_mean, const double* __restrict__ batch_min,
                                     const double* __restrict__ batch_max, std::int64_t units,
                                     const BatchCounters* counters, const Totals* totals, double* mean, double* min,
                                     double* max) {
  const std::int64_t c = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x;
  if (c >= units) return;
  const double nb = static_cast<double>(counters->kept_rows);
  if (nb == 0.0) return;
  const double total = static_cast<double>(totals->samples) + nb;
  mean[c] += (batch_mean[c] - mean[c]) * (nb / total);
  min[c] = fmin(min[c], batch_min[c]);
  max[c] = fmax(max[c], batch_max[c]);
}

// One thread: runs after merge_moments_kernel so that no thread of that kernel reads a moving count.
__global__ void advance_totals_kernel(std::int64_t rows, const BatchCounters* counters, Totals* totals) {
  totals->samples += counters->kept_rows;
  totals->skipped += static_cast<unsigned long long>(rows) - counters->kept_rows;
}

// For grid-stride loops: enough blocks to fill any device, no more.
unsigned strided_blocks(std::int64_t n, int threads) {
  return static_cast<unsigned>(std::min<std::int64_t>((n + threads - 1) / threads, 65536));
}
// For one-thread-per-element kernels (gridDim.x allows 2^31 - 1 blocks).
unsigned exact_blocks(std::int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

}  // namespace

void launch_reset_batch(unsigned char* row_bad, std::int64_t rows, BatchCounters* counters, StreamRef stream) {
  if (rows > 0) CONVERGENT_CUDA_CHECK(cudaMemsetAsync(row_bad, 0, static_cast<std::size_t>(rows), stream.handle));
  CONVERGENT_CUDA_CHECK(
      cudaMemsetAsync(&counters->first_nonfinite, 0xff, sizeof counters->first_nonfinite, stream.handle));
  CONVERGENT_CUDA_CHECK(cudaMemsetAsync(&counters->kept_rows, 0, sizeof counters->kept_rows, stream.handle));
}

void launch_find_nonfinite(const float* x, std::int64_t rows, std::int64_t units, unsigned char* row_bad,
                           BatchCounters* counters, StreamRef stream) {
  if (rows == 0) return;
  if (units > 0) {
    find_nonfinite_kernel<<<column_grid(rows, units), dim3(kColumns, kRowsPerPass), 0, stream.handle>>>(
        x, rows, units, row_bad, counters);
    CONVERGENT_CUDA_CHECK_LAUNCH();
  }
  constexpr int threads = 256;
  count_kept_kernel<<<strided_blocks(rows, threads), threads, 0, stream.handle>>>(row_bad, rows, counters);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

void launch_column_stats(const float* x, std::int64_t rows, std::int64_t units, const unsigned char* row_bad,
                         const BatchCounters* counters, double* partials, double* mean, double* min, double* max,
                         StreamRef stream) {
  if (units == 0) return;
  // About 256 rows per chunk, at most kStatsMaxChunks chunks: enough blocks to fill the device for
  // narrow layers, little scratch for wide ones.
  const int chunks = static_cast<int>(std::clamp<std::int64_t>((rows + 255) / 256, 1, kStatsMaxChunks));
  const dim3 grid(static_cast<unsigned>((units + kColumns - 1) / kColumns), static_cast<unsigned>(chunks));
  column_partials_kernel<<<grid, dim3(kColumns, kRowsPerPass), 0, stream.handle>>>(x, rows, units, row_bad,
                                                                                  partials);
  CONVERGENT_CUDA_CHECK_LAUNCH();
  constexpr int threads = 256;
  column_finish_kernel<<<exact_blocks(units, threads), threads, 0, stream.handle>>>(partials, chunks, units, counters,
                                                                                 mean, min, max);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

void launch_centre(float* x, std::int64_t rows, std::int64_t units, const unsigned char* row_bad,
                   const double* mean, __nv_bfloat16* x_bf16, StreamRef stream) {
  if (rows == 0 || units == 0) return;
  const dim3 grid = column_grid(rows, units);
  const dim3 block(kColumns, kRowsPerPass);
  if (x_bf16 != nullptr)
    centre_kernel<true><<<grid, block, 0, stream.handle>>>(x, rows, units, row_bad, mean, x_bf16);
  else
    centre_kernel<false><<<grid, block, 0, stream.handle>>>(x, rows, units, row_bad, mean, nullptr);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

void launch_merge_product(const float* s, std::int64_t units, bool chan_term, const double* batch_mean,
                          const double* mean, const Totals* totals, const BatchCounters* counters, double* m2,
                          StreamRef stream) {
  if (units == 0) return;
  merge_product_kernel<<<upper_tile_grid(units, "CUDA merge"), dim3(kTileSize, kTileRowStep), 0, stream.handle>>>(
      s, units, chan_term, batch_mean, mean, totals, counters, m2);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

void launch_merge_moments(const double* batch_mean, const double* batch_min, const double* batch_max,
                          std::int64_t units, std::int64_t rows, const BatchCounters* counters, double* mean,
                          double* min, double* max, Totals* totals, StreamRef stream) {
  if (units > 0) {
    constexpr int threads = 256;
    merge_moments_kernel<<<exact_blocks(units, threads), threads, 0, stream.handle>>>(
        batch_mean, batch_min, batch_max, units, counters, totals, mean, min, max);
    CONVERGENT_CUDA_CHECK_LAUNCH();
  }
  advance_totals_kernel<<<1, 1, 0, stream.handle>>>(rows, counters, totals);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

}  // namespace convergent::cuda
