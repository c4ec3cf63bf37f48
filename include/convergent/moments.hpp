// Sufficient statistics of the concatenated units of all nets: count, mean, centred comoment, min and
// max. They merge exactly (Chan, Golub and LeVeque), so shards from threads, GPUs or machines combine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "convergent/matrix.hpp"

namespace convergent {

struct Moments {
  std::int64_t samples = 0;
  std::vector<std::int64_t> net_units;  // units of each net, concatenated in this order
  std::vector<double> mean;             // per unit
  std::vector<double> min;              // per unit; +inf before the first sample
  std::vector<double> max;              // per unit; -inf before the first sample
  Matrix comoment;                      // U x U, sum over samples of (x_i - mean_i)(x_j - mean_j)

  Moments() = default;
  explicit Moments(std::vector<std::int64_t> units_per_net);

  std::int64_t units() const { return static_cast<std::int64_t>(mean.size()); }
  std::int64_t net_offset(int net) const;  // first column of that net in the concatenation
  // Population standard deviation (ddof = 0) of each unit; zero before two samples.
  std::vector<double> stddev() const;
};

// Folds a batch into `into` given the batch's own statistics: its row count, its mean and the comoment
// of its rows about that mean (only the upper triangle, j >= i, of `batch_comoment` is read; `into`
// keeps both triangles). Backends that form the product in float32 pass it as it is.
struct BatchMoments {
  std::int64_t rows = 0;
  const double* mean = nullptr;  // per unit
  const double* min = nullptr;
  const double* max = nullptr;
};
void merge_batch(Moments& into, const BatchMoments& batch, MatrixView<const float> batch_comoment, int threads = 1);
void merge_batch(Moments& into, const BatchMoments& batch, MatrixView<const double> batch_comoment, int threads = 1);

// Copies the upper triangle onto the lower one, after a run of merge_batch calls.
void fill_lower_triangle(Matrix& m);

// Folds another shard's Moments into `into`. Both must describe the same nets.
void merge(Moments& into, const Moments& other);

// Straight float64 statistics of an in-memory (rows x units) matrix: the oracle for tests.
Moments moments_of(MatrixView<const double> rows, std::vector<std::int64_t> units_per_net);

}  // namespace convergent
