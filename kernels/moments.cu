// Kernels of one accumulation step. Columns are units, so 32 threads of a warp take 32 adjacent units of
// one row (coalesced) and the 8 warps of a block walk rows; reductions over rows go through fixed-order
// partials so that results do not depend on scheduling (no atomics in floating-point sums). Per-unit steps
// run one thread per unit. M2 is updated in its upper triangle only.
#include <algorithm>
#include <cmath>

#include "mirror.cuh"
#include "moments.cuh"
#include "backend/running_moments.hpp"

namespace convergent::cuda {
namespace {

constexpr int kColumns = 32;  // units per block (one warp wide)
constexpr int kRowsPerPass = 8;
constexpr unsigned kMaxGridY = 65535;

dim3 column_grid(std::int64_t rows, std::int64_t units) {
  return dim3(static_cast<unsigned>((units + kColumns - 1) / kColumns),
              static_cast<unsigned>(std::min<std::int64_t>((rows + kRowsPerPass - 1) / kRowsPerPass, kMaxGridY)));
}

// Row chunks of the column reductions: about 256 rows each, at most kStatsMaxChunks, enough blocks to
// fill the device for narrow layers and little scratch for wide ones. Depends on `rows` alone, so the
// summation order is the same on every run.
int reduction_chunks(std::int64_t rows) {
  return static_cast<int>(std::clamp<std::int64_t>((rows + 255) / 256, 1, kStatsMaxChunks));
}

// detail::spread_exponent (host/backend/running_moments.cpp) on the device: e with |x| 2^e in [1, 2), clamped
// so that 2^e is a normal float64; no_spread for 0.
__device__ int clamp_exponent(int e) { return min(max(e, detail::min_exponent), detail::max_exponent); }
__device__ int spread_exponent(double x) { return x == 0.0 ? detail::no_spread : clamp_exponent(-ilogb(x)); }

// Rows [first, last) of this block's chunk in the column reductions: gridDim.y chunks of equal size.
struct RowChunk {
  std::int64_t first, last;
};
__device__ RowChunk row_chunk(std::int64_t rows) {
  const std::int64_t chunk_rows = (rows + gridDim.y - 1) / gridDim.y;
  const std::int64_t first = std::int64_t{blockIdx.y} * chunk_rows;
  return {first, min(rows, first + chunk_rows)};
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
  atomicAdd(&block_total, kept);  // integers: the same total in any order
  __syncthreads();
  if (threadIdx.x == 0) atomicAdd(&counters->kept_rows, block_total);
}

// Block (32 units x 8 row lanes), grid (unit tiles x row chunks): the chunk's rows of each column are
// walked by the 8 lanes, then combined by lane 0 in lane order. Writes partials[{0,1}][chunk][unit]
// (min, max). min and max are exact whatever the order.
__global__ void column_range_kernel(const double* __restrict__ x, std::int64_t rows, std::int64_t units,
                                    const unsigned char* __restrict__ row_bad, double* __restrict__ partials) {
  __shared__ double lo[kRowsPerPass][kColumns];
  __shared__ double hi[kRowsPerPass][kColumns];
  const std::int64_t c = std::int64_t{blockIdx.x} * kColumns + threadIdx.x;
  const std::int64_t chunk = blockIdx.y;
  const RowChunk rows_of_chunk = row_chunk(rows);
  const std::int64_t first = rows_of_chunk.first, last = rows_of_chunk.last;
  double mn = INFINITY, mx = -INFINITY;
  if (c < units) {
    for (std::int64_t r = first + threadIdx.y; r < last; r += kRowsPerPass) {
      if (row_bad[r]) continue;
      const double v = x[r * units + c];
      mn = fmin(mn, v);
      mx = fmax(mx, v);
    }
  }
  lo[threadIdx.y][threadIdx.x] = mn;
  hi[threadIdx.y][threadIdx.x] = mx;
  __syncthreads();
  if (threadIdx.y == 0 && c < units) {
    for (int k = 1; k < kRowsPerPass; ++k) {
      mn = fmin(mn, lo[k][threadIdx.x]);
      mx = fmax(mx, hi[k][threadIdx.x]);
    }
    const std::int64_t plane = std::int64_t{gridDim.y} * units;
    partials[chunk * units + c] = mn;
    partials[plane + chunk * units + c] = mx;
  }
}

__global__ void range_finish_kernel(const double* __restrict__ partials, int chunks, std::int64_t units,
                                    double* __restrict__ low, double* __restrict__ high) {
  const std::int64_t c = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x;
  if (c >= units) return;
  const std::int64_t plane = std::int64_t{chunks} * units;
  double mn = INFINITY, mx = -INFINITY;
  for (int k = 0; k < chunks; ++k) {
    mn = fmin(mn, partials[k * units + c]);
    mx = fmax(mx, partials[plane + k * units + c]);
  }
  low[c] = mn;
  high[c] = mx;
}

// The reference: ReferenceAccumulator::pack_chunk, the chunk's own scaling. Halves first: the sum and
// difference of two finite values can overflow, their halves cannot.
__global__ void choose_scaling_kernel(std::int64_t units, BatchScaling scaling) {
  const std::int64_t c = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x;
  if (c >= units) return;
  const double lo = scaling.low[c], hi = scaling.high[c];
  if (!(lo <= hi)) {  // no kept row: nothing to scale (the merge ignores the batch)
    scaling.centre[c] = 0.0;
    scaling.exponent[c] = detail::no_spread;
    scaling.multiplier[c] = 0.0;
    return;
  }
  const int e = spread_exponent(0.5 * hi - 0.5 * lo);
  scaling.centre[c] = 0.5 * lo + 0.5 * hi;
  scaling.exponent[c] = e;
  scaling.multiplier[c] = e == detail::no_spread ? 0.0 : ldexp(1.0, e);
}

// As column_range_kernel, for the float64 sum of the scaled values (host/cpu/batch_kernels.cpp, row_scale).
__global__ void scaled_sum_kernel(const double* __restrict__ x, std::int64_t rows, std::int64_t units,
                                  const unsigned char* __restrict__ row_bad, const double* __restrict__ centre,
                                  const double* __restrict__ multiplier, double* __restrict__ partials) {
  __shared__ double sum[kRowsPerPass][kColumns];
  const std::int64_t c = std::int64_t{blockIdx.x} * kColumns + threadIdx.x;
  const std::int64_t chunk = blockIdx.y;
  const RowChunk rows_of_chunk = row_chunk(rows);
  const std::int64_t first = rows_of_chunk.first, last = rows_of_chunk.last;
  double s = 0.0;
  if (c < units) {
    const double shift = centre[c], scale = multiplier[c];
    for (std::int64_t r = first + threadIdx.y; r < last; r += kRowsPerPass)
      if (!row_bad[r]) s += (x[r * units + c] - shift) * scale;
  }
  sum[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < units) {
    for (int k = 1; k < kRowsPerPass; ++k) s += sum[k][threadIdx.x];
    partials[chunk * units + c] = s;
  }
}

__global__ void scaled_mean_finish_kernel(const double* __restrict__ partials, int chunks, std::int64_t units,
                                          const BatchCounters* counters, double* __restrict__ scaled_mean) {
  const std::int64_t c = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x;
  if (c >= units) return;
  double s = 0.0;
  for (int k = 0; k < chunks; ++k) s += partials[k * units + c];
  const unsigned long long kept = counters->kept_rows;
  scaled_mean[c] = kept > 0 ? s / static_cast<double>(kept) : 0.0;
}

// The reference packs float32((v - centre) multiplier), then centres that in float64 and rounds again
// (host/cpu/batch_kernels.cpp, row_scale and centre_rows); here the value is centred before its only rounding.
template <bool kWriteBf16>
__global__ void scale_centre_kernel(const double* __restrict__ x, std::int64_t rows, std::int64_t units,
                                    const unsigned char* __restrict__ row_bad, const double* __restrict__ centre,
                                    const double* __restrict__ multiplier, const double* __restrict__ scaled_mean,
                                    float* __restrict__ out, __nv_bfloat16* __restrict__ out_bf16) {
  const std::int64_t c = std::int64_t{blockIdx.x} * kColumns + threadIdx.x;
  if (c >= units) return;
  const double shift = centre[c], scale = multiplier[c], mean = scaled_mean[c];
  for (std::int64_t r = std::int64_t{blockIdx.y} * kRowsPerPass + threadIdx.y; r < rows;
       r += std::int64_t{gridDim.y} * kRowsPerPass) {
    const std::int64_t i = r * units + c;
    const float v = row_bad[r] ? 0.0f : static_cast<float>((x[i] - shift) * scale - mean);
    out[i] = v;
    if (kWriteBf16) out_bf16[i] = __float2bfloat16_rn(v);
  }
}

// RunningMoments::merge_impl (host/backend/running_moments.cpp), per unit; see there for why each step.
__global__ void plan_merge_kernel(std::int64_t units, BatchScaling scaling, const BatchCounters* counters,
                                  const Totals* totals, RunningState state, MergeFactors factors) {
  const std::int64_t c = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x;
  if (c >= units) return;
  const double nb = static_cast<double>(counters->kept_rows);
  if (nb == 0.0) {  // every row dropped: M2 stays as it is
    factors.rescale[c] = 1.0;
    factors.batch_scale[c] = 0.0;
    factors.delta[c] = 0.0;
    return;
  }
  const double n = static_cast<double>(totals->samples);
  const bool first = n == 0.0;
  // Means are kept relative to the first batch's mid-ranges: an offset then never enters a delta.
  if (first) state.origin[c] = scaling.centre[c];
  const int e = scaling.exponent[c];
  // The batch's mean as a half offset from the origin, halves first so that nothing overflows.
  const double batch_half_mean = (0.5 * scaling.centre[c] - 0.5 * state.origin[c]) +
                                 (e == detail::no_spread ? 0.0 : ldexp(scaling.scaled_mean[c], -e - 1));
  const double half_delta = first ? 0.0 : batch_half_mean - state.half_mean[c];
  int f;
  double rescale = 1.0;
  if (first) {
    f = e == detail::no_spread ? 0 : clamp_exponent(e - detail::first_batch_headroom);
  } else {
    f = state.exponent[c];
    if (e != detail::no_spread) f = min(f, e);
    if (half_delta != 0.0) f = min(f, spread_exponent(half_delta));
    rescale = ldexp(1.0, f - state.exponent[c]);
  }
  factors.rescale[c] = rescale;
  factors.batch_scale[c] = e == detail::no_spread ? 0.0 : ldexp(1.0, f - e);
  factors.delta[c] = ldexp(half_delta, f + 1);  // at most 4 in magnitude
  state.exponent[c] = f;
  state.half_mean[c] = first ? batch_half_mean : state.half_mean[c] + half_delta * (nb / (n + nb));
  state.min[c] = fmin(state.min[c], scaling.low[c]);
  state.max[c] = fmax(state.max[c], scaling.high[c]);
}

// One block per 32 x 32 tile on or above the diagonal; a thread walks 4 rows of one column, so each row
// of the tile is read and written by one warp (coalesced). Entries below the diagonal are not touched.
// The update of one entry is host/cpu/batch_kernels.cpp's merge_row, after RunningMoments' rescale.
__global__ void merge_product_kernel(const float* __restrict__ s, std::int64_t units, bool first_chunk,
                                     bool last_chunk, MergeFactors factors, const Totals* totals,
                                     const BatchCounters* counters, double* __restrict__ m2) {
  if (blockIdx.y > blockIdx.x) return;
  const std::int64_t j = std::int64_t{blockIdx.x} * kTileSize + threadIdx.x;
  if (j >= units) return;
  const double nb = static_cast<double>(counters->kept_rows);
  if (nb == 0.0) return;  // every row dropped (the product is of zeros)
  const double n = static_cast<double>(totals->samples);
  // 0 for the first batch: M2 is then the batch's own comoment.
  const double weight = last_chunk ? n * nb / (n + nb) : 0.0;
  const double rescale_j = factors.rescale[j], scale_j = factors.batch_scale[j], delta_j = factors.delta[j];
  for (int k = threadIdx.y; k < kTileSize; k += kTileRowStep) {
    const std::int64_t i = std::int64_t{blockIdx.y} * kTileSize + k;
    if (i > j) break;  // i only grows with k
    double v = m2[i * units + j];
    if (first_chunk) v *= factors.rescale[i] * rescale_j;  // exact: powers of two
    double add = static_cast<double>(s[i * units + j]) * (factors.batch_scale[i] * scale_j);
    if (last_chunk) add += (weight * factors.delta[i]) * delta_j;
    m2[i * units + j] = v + add;
  }
}

// One block of kRowThreads per row (grid-stride): per net, each thread sums the squares of a strided share
// of its units, then a tree in shared memory adds the shares in a fixed order.
constexpr int kRowThreads = 256;
__global__ void row_norms_kernel(const double* __restrict__ x, std::int64_t rows, std::int64_t units,
                                 const unsigned char* __restrict__ row_bad, const double* __restrict__ origin,
                                 const std::int64_t* __restrict__ net_offsets, int nets, double* __restrict__ row_norms) {
  __shared__ double share[kRowThreads];
  for (std::int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    for (int k = 0; k < nets; ++k) {
      double s = 0.0;
      if (!row_bad[r])
        for (std::int64_t c = net_offsets[k] + threadIdx.x; c < net_offsets[k + 1]; c += kRowThreads) {
          const double d = x[r * units + c] - origin[c];
          s += d * d;
        }
      share[threadIdx.x] = s;
      __syncthreads();
      for (int half = kRowThreads / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) share[threadIdx.x] += share[threadIdx.x + half];
        __syncthreads();
      }
      if (threadIdx.x == 0) row_norms[r * nets + k] = share[0];
      __syncthreads();
    }
  }
}

// As scaled_sum_kernel, for sum_r d_ru a_rk over the kept rows: partials[(k chunks + chunk) units + u].
__global__ void unit_norm_sum_kernel(const double* __restrict__ x, std::int64_t rows, std::int64_t units,
                                     const unsigned char* __restrict__ row_bad, const double* __restrict__ origin,
                                     const double* __restrict__ row_norms, int nets, double* __restrict__ partials) {
  __shared__ double sum[kRowsPerPass][kColumns];
  const std::int64_t c = std::int64_t{blockIdx.x} * kColumns + threadIdx.x;
  const std::int64_t chunk = blockIdx.y;
  const RowChunk rows_of_chunk = row_chunk(rows);
  const std::int64_t first = rows_of_chunk.first, last = rows_of_chunk.last;
  for (int k = 0; k < nets; ++k) {
    double s = 0.0;
    if (c < units)
      for (std::int64_t r = first + threadIdx.y; r < last; r += kRowsPerPass)
        if (!row_bad[r]) s += (x[r * units + c] - origin[c]) * row_norms[r * nets + k];
    sum[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < units) {
      for (int j = 1; j < kRowsPerPass; ++j) s += sum[j][threadIdx.x];
      partials[(std::int64_t{k} * gridDim.y + chunk) * units + c] = s;
    }
    __syncthreads();
  }
}

__global__ void unit_norm_sum_finish_kernel(const double* __restrict__ partials, int chunks, std::int64_t units, int nets,
                                            double* __restrict__ unit_sums) {
  const std::int64_t c = blockIdx.x * std::int64_t{blockDim.x} + threadIdx.x;
  if (c >= units) return;
  for (int k = 0; k < nets; ++k) {
    double s = 0.0;
    for (int j = 0; j < chunks; ++j) s += partials[(std::int64_t{k} * chunks + j) * units + c];
    unit_sums[c * nets + k] += s;
  }
}

// One block per pair (k, l): a strided share of the rows per thread, then a fixed-order tree.
__global__ void pair_norm_sum_kernel(const double* __restrict__ row_norms, std::int64_t rows, int nets,
                                     double* __restrict__ pair_sums) {
  __shared__ double share[kRowThreads];
  const int k = blockIdx.x / nets, l = blockIdx.x % nets;
  double s = 0.0;
  for (std::int64_t r = threadIdx.x; r < rows; r += kRowThreads) s += row_norms[r * nets + k] * row_norms[r * nets + l];
  share[threadIdx.x] = s;
  __syncthreads();
  for (int half = kRowThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) share[threadIdx.x] += share[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) pair_sums[blockIdx.x] += share[0];
}

// One thread: runs after the batch's last merge, so that no thread of it reads a moving count.
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
constexpr int kUnitThreads = 256;

}  // namespace

void launch_reset_batch(unsigned char* row_bad, std::int64_t rows, BatchCounters* counters, StreamRef stream) {
  if (rows > 0) CONVERGENT_CUDA_CHECK(cudaMemsetAsync(row_bad, 0, static_cast<std::size_t>(rows), stream.handle));
  CONVERGENT_CUDA_CHECK(
      cudaMemsetAsync(&counters->first_nonfinite, 0xff, sizeof counters->first_nonfinite, stream.handle));
  CONVERGENT_CUDA_CHECK(cudaMemsetAsync(&counters->kept_rows, 0, sizeof counters->kept_rows, stream.handle));
}

void launch_count_kept(const unsigned char* row_bad, std::int64_t rows, BatchCounters* counters, StreamRef stream) {
  if (rows == 0) return;
  constexpr int threads = 256;
  count_kept_kernel<<<strided_blocks(rows, threads), threads, 0, stream.handle>>>(row_bad, rows, counters);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

void launch_column_range(const double* x, std::int64_t rows, std::int64_t units, const unsigned char* row_bad,
                         double* partials, const BatchScaling& scaling, StreamRef stream) {
  if (units == 0) return;
  const int chunks = reduction_chunks(rows);
  const dim3 grid(static_cast<unsigned>((units + kColumns - 1) / kColumns), static_cast<unsigned>(chunks));
  column_range_kernel<<<grid, dim3(kColumns, kRowsPerPass), 0, stream.handle>>>(x, rows, units, row_bad, partials);
  CONVERGENT_CUDA_CHECK_LAUNCH();
  range_finish_kernel<<<exact_blocks(units, kUnitThreads), kUnitThreads, 0, stream.handle>>>(
      partials, chunks, units, scaling.low, scaling.high);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

void launch_choose_scaling(std::int64_t units, const BatchScaling& scaling, StreamRef stream) {
  if (units == 0) return;
  choose_scaling_kernel<<<exact_blocks(units, kUnitThreads), kUnitThreads, 0, stream.handle>>>(units, scaling);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

void launch_scaled_mean(const double* x, std::int64_t rows, std::int64_t units, const unsigned char* row_bad,
                        const BatchCounters* counters, double* partials, const BatchScaling& scaling,
                        StreamRef stream) {
  if (units == 0) return;
  const int chunks = reduction_chunks(rows);
  const dim3 grid(static_cast<unsigned>((units + kColumns - 1) / kColumns), static_cast<unsigned>(chunks));
  scaled_sum_kernel<<<grid, dim3(kColumns, kRowsPerPass), 0, stream.handle>>>(x, rows, units, row_bad, scaling.centre,
                                                                             scaling.multiplier, partials);
  CONVERGENT_CUDA_CHECK_LAUNCH();
  scaled_mean_finish_kernel<<<exact_blocks(units, kUnitThreads), kUnitThreads, 0, stream.handle>>>(
      partials, chunks, units, counters, scaling.scaled_mean);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

void launch_scale_centre(const double* x, std::int64_t rows, std::int64_t units, const unsigned char* row_bad,
                         const BatchScaling& scaling, float* out, __nv_bfloat16* out_bf16, StreamRef stream) {
  if (rows == 0 || units == 0) return;
  const dim3 grid = column_grid(rows, units);
  const dim3 block(kColumns, kRowsPerPass);
  if (out_bf16 != nullptr)
    scale_centre_kernel<true><<<grid, block, 0, stream.handle>>>(x, rows, units, row_bad, scaling.centre,
                                                                 scaling.multiplier, scaling.scaled_mean, out, out_bf16);
  else
    scale_centre_kernel<false><<<grid, block, 0, stream.handle>>>(x, rows, units, row_bad, scaling.centre,
                                                                  scaling.multiplier, scaling.scaled_mean, out, nullptr);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

void launch_plan_merge(std::int64_t units, const BatchScaling& scaling, const BatchCounters* counters,
                       const Totals* totals, const RunningState& state, const MergeFactors& factors,
                       StreamRef stream) {
  if (units == 0) return;
  plan_merge_kernel<<<exact_blocks(units, kUnitThreads), kUnitThreads, 0, stream.handle>>>(units, scaling, counters,
                                                                                         totals, state, factors);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

void launch_merge_product(const float* s, std::int64_t units, bool first_chunk, bool last_chunk,
                          const MergeFactors& factors, const Totals* totals, const BatchCounters* counters,
                          double* m2, StreamRef stream) {
  if (units == 0) return;
  merge_product_kernel<<<upper_tile_grid(units, "CUDA merge"), dim3(kTileSize, kTileRowStep), 0, stream.handle>>>(
      s, units, first_chunk, last_chunk, factors, totals, counters, m2);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

void launch_norm_sums(const double* x, std::int64_t rows, std::int64_t units, const unsigned char* row_bad,
                      const double* origin, const std::int64_t* net_offsets, int nets, double* row_norms,
                      double* partials, double* unit_sums, double* pair_sums, StreamRef stream) {
  if (rows == 0 || units == 0) return;
  row_norms_kernel<<<static_cast<unsigned>(std::min<std::int64_t>(rows, 65536)), kRowThreads, 0, stream.handle>>>(
      x, rows, units, row_bad, origin, net_offsets, nets, row_norms);
  CONVERGENT_CUDA_CHECK_LAUNCH();
  const int chunks = reduction_chunks(rows);
  const dim3 grid(static_cast<unsigned>((units + kColumns - 1) / kColumns), static_cast<unsigned>(chunks));
  unit_norm_sum_kernel<<<grid, dim3(kColumns, kRowsPerPass), 0, stream.handle>>>(x, rows, units, row_bad, origin,
                                                                               row_norms, nets, partials);
  CONVERGENT_CUDA_CHECK_LAUNCH();
  unit_norm_sum_finish_kernel<<<exact_blocks(units, kUnitThreads), kUnitThreads, 0, stream.handle>>>(
      partials, chunks, units, nets, unit_sums);
  CONVERGENT_CUDA_CHECK_LAUNCH();
  pair_norm_sum_kernel<<<static_cast<unsigned>(nets * nets), kRowThreads, 0, stream.handle>>>(row_norms, rows, nets,
                                                                                           pair_sums);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

void launch_advance_totals(std::int64_t rows, const BatchCounters* counters, Totals* totals, StreamRef stream) {
  advance_totals_kernel<<<1, 1, 0, stream.handle>>>(rows, counters, totals);
  CONVERGENT_CUDA_CHECK_LAUNCH();
}

}  // namespace convergent::cuda
