// Sufficient statistics of the concatenated units of all nets: count, mean, centred comoment, min and
// max. They merge exactly (Chan, Golub and LeVeque), so shards from threads, GPUs or machines combine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "convergent/matrix.hpp"

namespace convergent {

// The comoment is kept scaled per unit by an exact power of two (DESIGN.md, numerics): entry (i, j) holds
//   sum over samples of (x_i - mean_i)(x_j - mean_j) * 2^(exponent_i + exponent_j),
// with exponent_i chosen so that unit i's spread is near 1. Then no finite input, from the smallest to the
// largest normal float64, overflows or underflows it. Correlation does not depend on the scale and reads
// the comoment as it is; stddev() and covariance() undo it.
struct Moments {
  std::int64_t samples = 0;
  std::vector<std::int64_t> net_units;  // units of each net, concatenated in this order
  std::vector<double> mean;             // per unit, exact to float64 rounding whatever the offset
  std::vector<double> min;              // per unit; +inf before the first sample
  std::vector<double> max;              // per unit; -inf before the first sample
  std::vector<int> exponent;            // per unit, the scale of the comoment (0 before the first sample)
  Matrix comoment;                      // U x U, scaled as above; both triangles, exactly symmetric

  Moments() = default;
  explicit Moments(std::vector<std::int64_t> units_per_net);

  std::int64_t units() const { return static_cast<std::int64_t>(mean.size()); }
  std::int64_t net_offset(int net) const;  // first column of that net in the concatenation
  // Population standard deviation (ddof = 0) of each unit, in the input's units; zero before two samples.
  // Always finite.
  std::vector<double> stddev() const;
  // Population covariance (ddof = 0) of units i and j, in the input's units: infinite only where the true
  // value lies beyond the float64 range (inputs near 1e154 and up).
  double covariance(std::int64_t i, std::int64_t j) const;
};

// Folds another shard's Moments into `into` (Chan merge in float64, scales reconciled exactly). Both must
// describe the same nets (Error otherwise). The result depends on the order of the merges only through
// float64 rounding.
void merge(Moments& into, const Moments& other);

// Straight float64 statistics of an in-memory (rows x units) matrix, unscaled (exponent 0): the oracle for
// tests. Its comoment overflows for values beyond about 1e150.
Moments moments_of(MatrixView<const double> rows, std::vector<std::int64_t> units_per_net);

}  // namespace convergent
