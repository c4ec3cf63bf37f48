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

// The debiased CKA's norm sums (reference_backend.cpp, add_norm_sums), on values recovered from a centred
// float32 chunk as y[c] = x[c] * scale[c] + offset[c] in float64.
// Squared norm sum_c y[c]^2 over one net's n units of one row, in 8 interleaved partial sums (unit c adds
// to sum c mod 8, in order) combined as ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7)): that order is
// written out, so every clone rounds alike and the sums vectorise.
double row_sqnorm(const float* x, const double* scale, const double* offset, std::int64_t n);
// For the `count` units starting at x[0] of `rows` rows `stride` apart: sums[k * sums_stride + j] += y_j *
// row_sqnorms[r * nets + k] for every row r in order, net k < nets and unit j < count (`work`: count doubles).
void unit_norm_sums(const float* x, std::int64_t rows, std::int64_t stride, std::int64_t count, const double* scale,
                    const double* offset, const double* row_sqnorms, std::int64_t nets, double* sums,
                    std::int64_t sums_stride, double* work);

}  // namespace convergent
