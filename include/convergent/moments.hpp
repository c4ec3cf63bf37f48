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
  Matrix comoment;                      // U x U, scaled as above; both triangles, exactly symmetric; 0 x 0
                                        // once handed over by release_comoment()
  // Fourth- and third-order sums for the debiased linear CKA (unbiased HSIC, Song et al. 2012), in the
  // input's units and about the means. With d_i the centred sample i (d_iu = x_iu - mean_u) and
  // a_ik = sum over the units u of net k of d_iu^2 (its squared norm in net k):
  //   sqnorm_comoment(k, l)       = sum_i a_ik a_il   (nets x nets, symmetric): what the estimator reads;
  //   unit_sqnorm_comoment(u, k)  = sum_i d_iu a_ik   (U x nets): what merging two shards needs to move
  //                                 sqnorm_comoment to their common mean (zero in expectation for
  //                                 symmetric data, not in general).
  // Unscaled, unlike the comoment: finite while n (units of a net)^2 spread^4 stays below 1e308, i.e. for
  // spreads up to about 1e70 in the input's units; beyond that a sum reads +infinity (never NaN) and the
  // debiased CKA of that net is not reported.
  Matrix sqnorm_comoment;
  Matrix unit_sqnorm_comoment;
  // The comoment's diagonal (scaled as it) once release_comoment() has handed the comoment over; empty
  // while the comoment is held. stddev() and comoment_diagonal() read it then.
  std::vector<double> released_diagonal;

  Moments() = default;
  explicit Moments(std::vector<std::int64_t> units_per_net);

  std::int64_t units() const { return static_cast<std::int64_t>(mean.size()); }
  std::int64_t net_offset(int net) const;  // first column of that net in the concatenation
  // Population standard deviation (ddof = 0) of each unit, in the input's units; zero before two samples.
  // Always finite.
  std::vector<double> stddev() const;
  // Entry (i, i) of the comoment (scaled), whether the comoment is held or was handed over.
  double comoment_diagonal(std::int64_t i) const;
  // Hands the U x U comoment over (finish_study forms the correlation in its storage, so that a large
  // layer holds one U x U float64 matrix, not two) and keeps its diagonal in released_diagonal. Afterwards
  // covariance(i, j) of i != j and merge() throw Error; stddev() is unchanged.
  Matrix release_comoment();
  // Population covariance (ddof = 0) of units i and j, in the input's units: infinite only where the true
  // value lies beyond the float64 range (inputs near 1e154 and up). Error for i != j after release_comoment().
  double covariance(std::int64_t i, std::int64_t j) const;
};

// Folds another shard's Moments into `into` (Chan merge in float64, scales reconciled exactly; the norm
// sums moved to the common mean exactly, shift_norm_sums in host/backend/running_moments.hpp). Both must
// describe the same nets (Error otherwise). The result depends on the order of the merges only through
// float64 rounding.
void merge(Moments& into, const Moments& other);

// Straight float64 statistics of an in-memory (rows x units) matrix, unscaled (exponent 0): the oracle for
// tests. Its comoment overflows for values beyond about 1e150, its norm sums beyond about 1e70.
Moments moments_of(MatrixView<const double> rows, std::vector<std::int64_t> units_per_net);

}  // namespace convergent
