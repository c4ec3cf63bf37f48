// See batch_kernels.hpp. Plain loops the compiler vectorises; each clone computes the same sums in the
// same order, so results do not depend on which one runs.
#include "batch_kernels.hpp"

#include <limits>

#define CONVERGENT_CLONES __attribute__((target_clones("avx2", "default")))

namespace convergent {

CONVERGENT_CLONES
void column_stats(const float* x, std::int64_t rows, std::int64_t cols, std::int64_t stride, double* sum, double* low,
                  double* high) {
  for (std::int64_t c = 0; c < cols; ++c) {
    sum[c] = 0.0;
    low[c] = std::numeric_limits<double>::infinity();
    high[c] = -std::numeric_limits<double>::infinity();
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * stride;
    for (std::int64_t c = 0; c < cols; ++c) {
      const double v = row[c];
      sum[c] += v;
      low[c] = v < low[c] ? v : low[c];
      high[c] = v > high[c] ? v : high[c];
    }
  }
}

CONVERGENT_CLONES
void centre_rows(float* x, std::int64_t rows, std::int64_t cols, std::int64_t stride, const double* mean) {
  for (std::int64_t r = 0; r < rows; ++r) {
    float* row = x + r * stride;
    for (std::int64_t c = 0; c < cols; ++c) row[c] = static_cast<float>(static_cast<double>(row[c]) - mean[c]);
  }
}

CONVERGENT_CLONES
void merge_row(double* m2, const float* s, const double* delta, double weight, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) m2[j] += static_cast<double>(s[j]) + weight * delta[j];
}

CONVERGENT_CLONES
void merge_row(double* m2, const double* s, const double* delta, double weight, std::int64_t n) {
  for (std::int64_t j = 0; j < n; ++j) m2[j] += s[j] + weight * delta[j];
}

}  // namespace convergent
