// Device side of one accumulation step, in pipeline order: flag non-finite rows, count the kept ones,
// per-unit batch mean/min/max (float64), centre (zeroing dropped rows), and the float64 Chan merge of the
// batch product into the running moments. The reference is host/reference_backend.cpp + host/moments.cpp.
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

// Clears `row_bad` and `counters` for a new batch (first_nonfinite = ~0, kept_rows = 0).
void launch_reset_batch(unsigned char* row_bad, std::int64_t rows, BatchCounters* counters, StreamRef stream);

// Marks rows of the row-major (rows x units) batch that hold a NaN or infinity, records the smallest
// row-major index of such an element, and counts the rows that are clean.
void launch_find_nonfinite(const float* x, std::int64_t rows, std::int64_t units, unsigned char* row_bad,
                           BatchCounters* counters, StreamRef stream);

// Per-unit mean, min and max over the kept rows, in float64. `partials` holds 3 * kStatsMaxChunks * units
// doubles of scratch.
constexpr int kStatsMaxChunks = 128;
void launch_column_stats(const float* x, std::int64_t rows, std::int64_t units, const unsigned char* row_bad,
                         const BatchCounters* counters, double* partials, double* mean, double* min, double* max,
                         StreamRef stream);

// x -= mean per column (in float64, rounded to float32 like the reference); dropped rows become 0 so that
// they add nothing to the product. When `x_bf16` is not null, the centred values are also written there.
void launch_centre(float* x, std::int64_t rows, std::int64_t units, const unsigned char* row_bad,
                   const double* mean, __nv_bfloat16* x_bf16, StreamRef stream);

// One pass over the upper triangle (j >= i) of the row-major U x U float64 M2 per chunk product:
//   M2_ij += S_ij, and on the batch's last chunk (`chan_term`) also + delta_i delta_j n nb / (n + nb),
//   delta = batch_mean - mean, n and nb from `totals` and `counters` on the device.
// The batch's product is taken in chunks so that float32 sums stay short; `s` is row-major and only its
// upper triangle is read (the column-major lower triangle cuBLAS syrk writes). The lower triangle of M2
// is left stale: launch_mirror_upper fills it when the moments are read.
void launch_merge_product(const float* s, std::int64_t units, bool chan_term, const double* batch_mean,
                          const double* mean, const Totals* totals, const BatchCounters* counters, double* m2,
                          StreamRef stream);

// mean += delta nb / (n + nb); min/max folded; then samples += nb and skipped += rows - nb. Must follow
// the batch's last launch_merge_product, which reads the old mean and count.
void launch_merge_moments(const double* batch_mean, const double* batch_min, const double* batch_max,
                          std::int64_t units, std::int64_t rows, const BatchCounters* counters, double* mean,
                          double* min, double* max, Totals* totals, StreamRef stream);

}  // namespace convergent::cuda
