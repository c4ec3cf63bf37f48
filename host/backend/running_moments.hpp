// The Chan-Golub-LeVeque merge as a pass accumulates it: batch statistics folded into running Moments in
// scaled coordinates, so that no finite input overflows or underflows and no offset eats the digits of
// the spread (DESIGN.md, numerics). Backends feed it; the public merge() of two Moments uses it too.
#pragma once

#include <climits>
#include <cstdint>
#include <vector>

#include "convergent/matrix.hpp"
#include "convergent/moments.hpp"

namespace convergent::detail {

// Batch exponent of a unit that is constant over the batch (its comoment row is exactly zero).
constexpr int no_spread = INT_MAX;
// Exponents stay where 2^e is a normal float64.
constexpr int min_exponent = -1022;
constexpr int max_exponent = 1023;
// The first batch sets a unit's exponent with this much headroom (a factor 16), so that later batches
// with a slightly larger spread do not force a rescale of the whole comoment. Shared with the CUDA
// backend's merge (kernels/moments.cu), which must pick the same exponents.
constexpr int first_batch_headroom = 4;

// Exponent e with |x| 2^e in [1, 2), clamped so that 2^e is a normal float64: the scale that brings a
// spread (or a mean difference) x > 0 near 1. no_spread for x == 0.
int spread_exponent(double x);

// One batch's statistics. Means are half offsets from the running origin: (mean - origin) / 2, which
// neither overflows nor loses the digits an offset holds when batch and origin are close.
struct ScaledBatch {
  std::int64_t rows = 0;
  const double* half_mean = nullptr;  // per unit
  const double* min = nullptr;        // per unit
  const double* max = nullptr;        // per unit
  // Per unit e_i: the batch comoment (i, j) is scaled by 2^(e_i + e_j); no_spread for a constant unit.
  const int* exponent = nullptr;
};

// Moves the norm sums for the debiased CKA (Moments::sqnorm_comoment and unit_sqnorm_comoment, passed as
// `sqnorm` and `unit_sqnorm`) from a point p to p + shift (per unit), exactly in exact arithmetic: on entry
// they are sums about p over the samples of `m`, whose mean is p + offset (per unit; zeros when the sums
// are about the mean already) and whose centred comoment is m.comoment (both triangles, scaled by
// m.exponent); on return they are sums about p + shift. O(U^2 + U nets). The pass accumulates the sums
// about its origin and moves them to the mean once; merge() moves each shard's to the common mean.
void shift_norm_sums(const Moments& m, const std::vector<double>& offset, const std::vector<double>& shift,
                     Matrix& sqnorm, Matrix& unit_sqnorm);

class RunningMoments {
 public:
  // Empty statistics; every unit's origin is 0 until set_origin().
  explicit RunningMoments(std::vector<std::int64_t> units_per_net);
  // Statistics to merge more into (origin 0).
  explicit RunningMoments(const Moments& start);

  // The per-unit values that means are kept relative to; only before the first merge (Error otherwise).
  // A value inside each unit's range (the first batch's mid-range) keeps every delta small.
  void set_origin(const std::vector<double>& origin);
  const std::vector<double>& origin() const { return origin_; }
  // Mean minus origin per unit, exactly as kept (twice the half offset).
  std::vector<double> offset() const;
  std::int64_t samples() const { return moments_.samples; }
  std::int64_t units() const { return moments_.units(); }

  // Folds a batch in. `batch_comoment` is U x U, scaled by the batch's exponents; only its upper
  // triangle (j >= i) is read. Each comoment entry is updated by one thread in one fixed way, so the
  // result does not depend on `threads`.
  void merge(const ScaledBatch& batch, MatrixView<const float> batch_comoment, int threads = 1);
  void merge(const ScaledBatch& batch, MatrixView<const double> batch_comoment, int threads = 1);

  // The statistics so far, with true means and both triangles of the comoment.
  Moments result() const&;
  // The same, handing over the comoment instead of copying it (U x U float64: the largest buffer of a pass).
  Moments result() &&;

 private:
  Moments result_moved();  // leaves moments_ empty
  template <class T>
  void merge_impl(const ScaledBatch& batch, MatrixView<const T> s, int threads);

  Moments moments_;  // mean unused (see half_mean_); comoment kept in its upper triangle
  std::vector<double> origin_;
  std::vector<double> half_mean_;  // (mean - origin) / 2 per unit
};

}  // namespace convergent::detail
