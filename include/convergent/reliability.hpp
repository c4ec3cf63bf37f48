// Which units are learned reliably (the paper's finding 1): for every unit of every net, its best partner
// and its one-to-one partner in each other net, the weakest of those correlations over the other nets,
// and whether its one-to-one matches close every cycle through the other nets.
#pragma once

#include <cstdint>
#include <vector>

#include "convergent/study.hpp"

namespace convergent {

struct ReliabilityOptions {
  // A unit is "learned by all" at threshold t when its one-to-one correlation with every other net is
  // at least t. Counts are reported for each of these thresholds.
  std::vector<double> thresholds = {0.5, 0.7, 0.9};
};

// One unit of one net against one other net.
struct UnitPartner {
  int net = 0;                 // the other net
  std::int64_t semi = -1;      // its most correlated live unit there (ties to the lower index); -1: none
  double semi_corr = 0.0;
  std::int64_t match = -1;     // its one-to-one partner (from the matching); -1 when left unmatched
  double match_corr = 0.0;     // 0 when unmatched or matched to a dead unit
};

struct UnitReliability {
  bool dead = false;
  std::vector<UnitPartner> partners;  // one per other net, in net order
  double min_semi_corr = 0.0;         // minimum over the other nets; 0 for a dead unit
  double min_match_corr = 0.0;
  // Every one-to-one partner exists and is live, and the matches commute: for every two other nets j and
  // k, match_{j->k}(match_{i->j}(u)) == match_{i->k}(u), so every cycle a -> b -> c -> a closes.
  bool consistent = false;
};

struct NetReliability {
  std::vector<UnitReliability> units;  // every unit of the net, dead ones included (flagged)
  std::int64_t live = 0;
  // Per threshold (ReliabilityOptions order): live units whose min_match_corr, resp. min_semi_corr, is
  // at least the threshold; and those that are also consistent.
  std::vector<std::int64_t> learned_by_all;
  std::vector<std::int64_t> best_partner_in_all;
  std::vector<std::int64_t> learned_by_all_consistent;
  std::int64_t consistent = 0;  // live units with consistent matches
};

struct Reliability {
  std::vector<double> thresholds;
  std::vector<NetReliability> nets;  // in the study's order
};

// `matchings` are the one-to-one matchings of every pair (a < b) in the order (0, 1), (0, 2), ..., (1, 2),
// ...: align_pair on the study's correlation block of (a, b), as `convergent align` computes them; the
// direction b -> a reads their col_to_row. Semi-matches are taken here over live units. Meaningful for
// any number of nets; with two, consistency only asks for a live partner. Throws Error when the study
// has fewer than two nets, the number of matchings or their sizes do not fit the study, or a threshold
// is not finite.
Reliability reliability(const Study& study, const std::vector<PairAlignment>& matchings,
                        const ReliabilityOptions& options = {});

}  // namespace convergent
