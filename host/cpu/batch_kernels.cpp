// See batch_kernels.hpp. Plain loops the compiler vectorises (the arrays never overlap: __restrict__ lets
// it know); each clone computes the same sums in the same order, so results do not depend on which runs.
#include "cpu/batch_kernels.hpp"
#include "cpu/target_clones.hpp"

#define CONVERGENT_CLONES CONVERGENT_TARGET_CLONES("avx2", "default")

namespace convergent {
namespace {

template <class T>
inline void row_scale_impl(const T* __restrict__ v, std::int64_t n, const double* __restrict__ centre,
                           const double* __restrict__ multiplier, float* __restrict__ out, double* __restrict__ sum,
                           double* __restrict__ low, double* __restrict__ high, double* __restrict__ probe) {
  for (std::int64_t c = 0; c < n; ++c) {
    const double x = static_cast<double>(v[c]);
    const double y = (x - centre[c]) * multiplier[c];
    out[c] = static_cast<float>(y);
    sum[c] += y;
    low[c] = x < low[c] ? x : low[c];
    high[c] = x > high[c] ? x : high[c];
    probe[c] += x - x;
  }
}

template <class T>
inline void merge_row_impl(double* __restrict__ m2, const T* __restrict__ s, double s_row_scale,
                           const double* __restrict__ s_scale, const double* __restrict__ delta, double weighted_delta,
                           std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j)
    m2[j] += static_cast<double>(s[j]) * (s_row_scale * s_scale[j]) + weighted_delta * delta[j];
}

}  // namespace

CONVERGENT_CLONES
void row_scale(const float* v, std::int64_t n, const double* centre, const double* multiplier, float* out,
               double* sum, double* low, double* high, double* probe) {
  row_scale_impl(v, n, centre, multiplier, out, sum, low, high, probe);
}

CONVERGENT_CLONES
void row_scale(const double* v, std::int64_t n, const double* centre, const double* multiplier, float* out,
               double* sum, double* low, double* high, double* probe) {
  row_scale_impl(v, n, centre, multiplier, out, sum, low, high, probe);
}

CONVERGENT_CLONES
void centre_rows(float* x, std::int64_t rows, std::int64_t cols, std::int64_t stride, const double* mean) {
  for (std::int64_t r = 0; r < rows; ++r) {
    float* row = x + r * stride;
    for (std::int64_t c = 0; c < cols; ++c) row[c] = static_cast<float>(static_cast<double>(row[c]) - mean[c]);
  }
}

CONVERGENT_CLONES
void merge_row(double* m2, const float* s, double s_row_scale, const double* s_scale, const double* delta,
               double weighted_delta, std::int64_t n) {
  merge_row_impl(m2, s, s_row_scale, s_scale, delta, weighted_delta, n);
}

CONVERGENT_CLONES
void merge_row(double* m2, const double* s, double s_row_scale, const double* s_scale, const double* delta,
               double weighted_delta, std::int64_t n) {
  merge_row_impl(m2, s, s_row_scale, s_scale, delta, weighted_delta, n);
}

CONVERGENT_CLONES
double row_sqnorm(const float* __restrict__ x, const double* __restrict__ scale, const double* __restrict__ offset,
                  std::int64_t n) {
  constexpr std::int64_t lanes = 8;
  double s[lanes] = {};
  std::int64_t c = 0;
  for (; c + lanes <= n; c += lanes)
    for (std::int64_t j = 0; j < lanes; ++j) {
      const double y = static_cast<double>(x[c + j]) * scale[c + j] + offset[c + j];
      s[j] += y * y;
    }
  for (std::int64_t j = 0; c < n; ++c, ++j) {
    const double y = static_cast<double>(x[c]) * scale[c] + offset[c];
    s[j] += y * y;
  }
  return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
}

CONVERGENT_CLONES
void unit_norm_sums(const float* __restrict__ x, std::int64_t rows, std::int64_t stride, std::int64_t count,
                    const double* __restrict__ scale, const double* __restrict__ offset,
                    const double* __restrict__ row_sqnorms, std::int64_t nets, double* __restrict__ sums,
                    std::int64_t sums_stride, double* __restrict__ work) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* __restrict__ row = x + r * stride;
    for (std::int64_t j = 0; j < count; ++j) work[j] = static_cast<double>(row[j]) * scale[j] + offset[j];
    for (std::int64_t k = 0; k < nets; ++k) {
      const double a = row_sqnorms[r * nets + k];
      double* __restrict__ s = sums + k * sums_stride;
      for (std::int64_t j = 0; j < count; ++j) s[j] += work[j] * a;
    }
  }
}

}  // namespace convergent
