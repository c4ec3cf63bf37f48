// The elementwise loops of the CPU backend's streaming pass. Built for AVX2 and for baseline x86-64,
// picked at run time (GCC target_clones): the library is never compiled with -march, yet these loops
// touch every value once and would otherwise run at SSE2 width next to an AVX2 BLAS.
#pragma once

#include <cstdint>

namespace convergent {

// Per-column float64 sums, minima and maxima of a row-major (rows x cols) block, summed in
// row order. The outputs are overwritten.
void column_stats(const float* x, std::int64_t rows, std::int64_t cols, std::int64_t stride, double* sum, double* low,
                  double* high);

// x[r][c] = float(x[r][c] - mean[c]).
void centre_rows(float* x, std::int64_t rows, std::int64_t cols, std::int64_t stride, const double* mean);

// m2[j] += s[j] + weight * delta[j] for j in [0, n): one row of the Chan merge.
void merge_row(double* m2, const float* s, const double* delta, double weight, std::int64_t n);
void merge_row(double* m2, const double* s, const double* delta, double weight, std::int64_t n);

}  // namespace convergent
