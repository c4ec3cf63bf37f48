// The paper's table across the layers of a study (Li et al. 2016, table 1 and figure 3's figures): per
// layer, for the first pair of same-size nets and averaged over all pairs of same-size nets, the mean
// correlation of semi-matched and one-to-one matched units, the share of identical assignments, linear
// CKA when it was computed, and the share of units in clusters that mix nets.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "report/layer_results.hpp"

namespace convergent::report {

struct PairFigures {
  double semi = 0;
  double matching = 0;
  double same = 0;                  // share of A's units whose semi-match is their match
  std::optional<double> cka;        // linear CKA, when every pair averaged has it
};

struct LayerRow {
  std::string layer;
  std::int64_t units = 0;           // units per net of the same-size group
  std::vector<std::string> group;   // the same-size nets, in summary order
  std::string first_pair;           // "net1-net2": the first pair of the group
  std::optional<PairFigures> first; // absent when the group has fewer than two nets
  std::optional<PairFigures> mean;  // over all pairs of the group
  std::int64_t group_pairs = 0;
  std::optional<double> mixed_share;
  std::optional<std::int64_t> clusters;
};

// The same-size group of a layer is the largest set of nets with one unit count (ties: the one holding
// the first net), so a wider or narrower extra net stays out of the averages, as in the paper.
std::vector<LayerRow> study_table(const std::vector<LayerResults>& layers);

// The table as fixed-width text for a terminal, with a header line saying what the columns are.
std::string format_study_table(const std::vector<LayerRow>& rows);

}  // namespace convergent::report
