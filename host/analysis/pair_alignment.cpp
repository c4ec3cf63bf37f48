// Dead units and the pairwise alignments that follow from a correlation block.
#include <algorithm>
#include <cmath>

#include "convergent/error.hpp"
#include "convergent/study.hpp"

namespace convergent {

std::vector<bool> dead_units(const Moments& moments, double dead_threshold) {
  const std::vector<double> sd = moments.stddev();
  std::vector<bool> dead(sd.size());
  for (std::size_t i = 0; i < sd.size(); ++i) {
    // The spread, not the magnitude: an offset of 1e8 on a unit of std 1 is signal, not noise. Halves
    // first, so that the range of values near the float64 limits does not overflow.
    const double half_range = 0.5 * moments.max[i] - 0.5 * moments.min[i];
    dead[i] = !(half_range > 0.0) || sd[i] == 0.0 || sd[i] <= dead_threshold * 2.0 * half_range;
  }
  return dead;
}

PairAlignment align_pair(Backend& backend, MatrixView<const double> corr_ab, int threads) {
  PairAlignment result;
  const std::int64_t units_a = corr_ab.rows;
  result.semi_match = backend.row_argmax(corr_ab);
  for (std::int64_t a = 0; a < units_a; ++a) result.semi_mean_corr += corr_ab(a, result.semi_match[a]);
  result.semi_mean_corr /= static_cast<double>(units_a);

  AssignmentOptions options;
  options.objective = Objective::maximize;
  options.threads = threads;
  result.matching = solve_assignment(corr_ab, options);
  const std::int64_t pairs = std::min(corr_ab.rows, corr_ab.cols);
  result.matching_total_corr = result.matching.total;
  result.matching_mean_corr = result.matching.total / static_cast<double>(pairs);
  std::int64_t same = 0;
  for (std::int64_t a = 0; a < units_a; ++a) same += result.matching.row_to_col[a] == result.semi_match[a];
  result.same_assignment_fraction = static_cast<double>(same) / static_cast<double>(units_a);
  return result;
}

}  // namespace convergent
