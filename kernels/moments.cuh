// Device side of one accumulation step after the scan for NaN and infinity (pack.cuh) and the exact
// conversion of the batch to float64 rows, in pipeline order: count the kept rows; each unit's exact
// range; its shift and power-of-two scale; the mean of the scaled values; the centred float32 product
// input; and the scaled float64 Chan merge of the chunk products. The references: ReferenceAccumulator
// (host/cpu/reference_backend.cpp) for the packing, RunningMoments (host/backend/running_moments.cpp) for the merge.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "device_memory.cuh"

namespace convergent::cuda {

// Per-batch bookkeeping that stays on the device so that skipping rows needs no host round trip.
struct BatchCounters {
  unsigned long long first_nonfinite;  // row-major index of the first NaN/inf; ~0ull when none
  unsigned long long kept_rows;        // rows without any non-finite value
};

// Running totals of the accumulator.
struct Totals {
  unsigned long long samples;
  unsigned long long skipped;
};

// The batch's shift and scale per unit (device arrays of `units` each): values become
// (v - centre) * multiplier with multiplier = 2^exponent, or 0 and exponent detail::no_spread for a unit
// constant over the batch's kept rows (which then become exact zeros). scaled_mean is the float64 mean
// of the scaled values before any rounding.
struct BatchScaling {
  double* low;
  double* high;
  double* centre;
  int* exponent;
  double* multiplier;
  double* scaled_mean;
};

// RunningMoments' members on the device: means as half offsets from the origin (the first merged batch's
// centres), the per-unit scale exponent of the comoment, the range, and M2 (row-major U x U, scaled by
// 2^(exponent_i + exponent_j), upper triangle only).
struct RunningState {
  double* origin;
  double* half_mean;
  int* exponent;
  double* min;
  double* max;
  double* m2;
};

// Per-unit factors of one batch's merge: M2_ij = M2_ij rescale_i rescale_j (exact, powers of two, when an
// exponent drops) + S_ij batch_scale_i batch_scale_j + weight delta_i delta_j.
struct MergeFactors {
  double* rescale;
  double* batch_scale;
  double* delta;
};

// Clears `row_bad` and `counters` for a new batch (first_nonfinite = ~0, kept_rows = 0).
void launch_reset_batch(unsigned char* row_bad, std::int64_t rows, BatchCounters* counters, StreamRef stream);

// Counts the rows that row_bad leaves clear into counters->kept_rows.
void launch_count_kept(const unsigned char* row_bad, std::int64_t rows, BatchCounters* counters, StreamRef stream);

// Scratch of the column reductions below: 2 * kStatsMaxChunks * units doubles.
constexpr int kStatsMaxChunks = 128;

// scaling.low / high = exact minimum and maximum of each column of the row-major float64 batch x over
// the kept rows (+inf / -inf when none is kept).
void launch_column_range(const double* x, std::int64_t rows, std::int64_t units, const unsigned char* row_bad,
                         double* partials, const BatchScaling& scaling, StreamRef stream);

// The batch's own shift and scale from its range, as ReferenceAccumulator::pack_chunk picks them when the
// reference ones do not suit: centre = mid-range, exponent = detail::spread_exponent(half-range), so that
// scaled values lie in [-2, 2).
void launch_choose_scaling(std::int64_t units, const BatchScaling& scaling, StreamRef stream);

// scaling.scaled_mean = float64 mean over the kept rows of (x - centre) * multiplier (0 when none is kept),
// summed in a fixed order.
void launch_scaled_mean(const double* x, std::int64_t rows, std::int64_t units, const unsigned char* row_bad,
                        const BatchCounters* counters, double* partials, const BatchScaling& scaling,
                        StreamRef stream);

// out = float32((x - centre) * multiplier - scaled_mean), all in float64 before the one rounding; dropped
// rows become 0 so that they add nothing to the product. When `out_bf16` is not null, the values are also
// written there (rounded from the float32 value).
void launch_scale_centre(const double* x, std::int64_t rows, std::int64_t units, const unsigned char* row_bad,
                         const BatchScaling& scaling, float* out, __nv_bfloat16* out_bf16, StreamRef stream);

// RunningMoments::merge's per-unit step for this batch: sets the origin on the first merge, picks each
// unit's common exponent, writes the merge factors, and updates half means, exponents and the range. A
// batch without kept rows changes nothing (factors 1, 0, 0). Reads totals->samples before the batch.
void launch_plan_merge(std::int64_t units, const BatchScaling& scaling, const BatchCounters* counters,
                       const Totals* totals, const RunningState& state, const MergeFactors& factors,
                       StreamRef stream);

// One pass over the upper triangle (j >= i) of M2 per chunk product `s` (row-major U x U float, upper
// triangle read; the column-major lower triangle cuBLAS writes): the batch's first chunk also rescales
// M2, its last also adds the Chan term weight delta_i delta_j with weight = n nb / (n + nb) from `totals`
// and `counters`. The lower triangle of M2 is left stale: launch_mirror_upper fills it when it is read.
void launch_merge_product(const float* s, std::int64_t units, bool first_chunk, bool last_chunk,
                          const MergeFactors& factors, const Totals* totals, const BatchCounters* counters,
                          double* m2, StreamRef stream);

// The norm sums of the debiased CKA about the running origin (Moments::sqnorm_comoment and
// unit_sqnorm_comoment before CudaAccumulator::moments moves them to the mean), over the kept rows of the
// float64 batch x: with d = x - origin and a_k the squared norm of d over net k's units (net k holds
// columns [net_offsets[k], net_offsets[k + 1])), unit_sums[u nets + k] += sum_r d_ru a_rk and
// pair_sums[k nets + l] += sum_r a_rk a_rl. The reference: ReferenceAccumulator::add_norm_sums. Fixed-order
// reductions; scratch: row_norms (rows x nets) and partials (kStatsMaxChunks x units x nets). Runs after
// launch_plan_merge, which sets the origin on the first batch.
void launch_norm_sums(const double* x, std::int64_t rows, std::int64_t units, const unsigned char* row_bad,
                      const double* origin, const std::int64_t* net_offsets, int nets, double* row_norms,
                      double* partials, double* unit_sums, double* pair_sums, StreamRef stream);

// samples += kept rows, skipped += rows - kept rows. Follows the batch's last merge, which reads the old
// count.
void launch_advance_totals(std::int64_t rows, const BatchCounters* counters, Totals* totals, StreamRef stream);

}  // namespace convergent::cuda
