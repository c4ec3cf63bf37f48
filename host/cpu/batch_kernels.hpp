// The elementwise loops of the CPU backend's streaming pass. Built for AVX2 and for baseline x86-64,
// picked at run time (GCC target_clones): the library is never compiled with -march, yet these loops
// touch every value once and would otherwise run at SSE2 width next to an AVX2 BLAS.
#pragma once

#include <cstdint>

namespace convergent {

// One row of n units: out[c] = float32((v[c] - centre[c]) * multiplier[c]), the subtraction in float64
// (the input's own precision or better, so an offset keeps the spread's digits); sum[c] += that value
// before rounding; low[c] and high[c] take the running minimum and maximum of v[c]; probe[c] stays 0 while
// every v[c] is finite and becomes NaN at the first NaN or infinity (v - v).
void row_scale(const float* v, std::int64_t n, const double* centre, const double* multiplier, float* out,
               double* sum, double* low, double* high, double* probe);
void row_scale(const double* v, std::int64_t n, const double* centre, const double* multiplier, float* out,
               double* sum, double* low, double* high, double* probe);

// x[r][c] = float(x[r][c] - mean[c]).
void centre_rows(float* x, std::int64_t rows, std::int64_t cols, std::int64_t stride, const double* mean);

// m2[j] += s[j] * (s_row_scale * s_scale[j]) + weighted_delta * delta[j] for j in [0, n): one row of the
// scaled Chan merge (running_moments.hpp).
void merge_row(double* m2, const float* s, double s_row_scale, const double* s_scale, const double* delta,
               double weighted_delta, std::int64_t n);
void merge_row(double* m2, const double* s, double s_row_scale, const double* s_scale, const double* delta,
               double weighted_delta, std::int64_t n);

}  // namespace convergent
