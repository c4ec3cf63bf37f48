// Reliably learned units: planted shared and private features over three nets, a hand-made broken
// cycle, dead units and bad inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "convergent/error.hpp"
#include "convergent/reliability.hpp"
#include "test_analysis_util.hpp"

namespace convergent {
namespace {

using testing::Data;

std::vector<PairAlignment> all_matchings(const Study& study) {
  auto backend = make_backend(BackendChoice::cpu);
  std::vector<PairAlignment> out;
  for (std::size_t a = 0; a < study.nets.size(); ++a)
    for (std::size_t b = a + 1; b < study.nets.size(); ++b)
      out.push_back(align_pair(*backend, study.correlation.block(study.nets[a].offset, study.nets[b].offset,
                                                                 study.nets[a].units, study.nets[b].units)));
  return out;
}

TEST(Reliability, SharedFeaturesAreLearnedByAllAndPrivateOnesAreNot) {
  // 6 features; every net sees features 0-3 (shuffled units, noise 0.3); units 4 and 5 of each net are
  // private features of their own. Net 2 also has a dead unit 6.
  const std::int64_t rows = 2000;
  const Data shared = testing::gaussian_data(rows, 4, 1);
  std::mt19937_64 rng(2);
  std::vector<std::vector<std::int64_t>> where(3);  // where[net][feature] = unit
  std::vector<Data> nets;
  for (int k = 0; k < 3; ++k) {
    std::vector<std::int64_t> perm(4);
    std::iota(perm.begin(), perm.end(), 0);
    if (k > 0) std::shuffle(perm.begin(), perm.end(), rng);
    where[static_cast<std::size_t>(k)] = perm;
    const Data noise = testing::gaussian_data(rows, 6, 10 + k);
    Data d(rows, k == 2 ? 7 : 6);
    for (std::int64_t r = 0; r < rows; ++r) {
      for (std::int64_t f = 0; f < 4; ++f) d(r, perm[f]) = shared(r, f) + 0.3 * noise(r, f);
      d(r, 4) = noise(r, 4);
      d(r, 5) = noise(r, 5);
      if (k == 2) d(r, 6) = 1.0;
    }
    nets.push_back(d);
  }
  const Study study = testing::study_of(nets);
  const Reliability r = reliability(study, all_matchings(study));
  ASSERT_EQ(r.nets.size(), 3u);
  for (int k = 0; k < 3; ++k) {
    const NetReliability& net = r.nets[static_cast<std::size_t>(k)];
    for (std::int64_t f = 0; f < 4; ++f) {
      const UnitReliability& u = net.units[static_cast<std::size_t>(where[k][f])];
      ASSERT_EQ(u.partners.size(), 2u);
      for (const UnitPartner& p : u.partners) {
        EXPECT_EQ(p.semi, where[static_cast<std::size_t>(p.net)][f]);
        EXPECT_EQ(p.match, where[static_cast<std::size_t>(p.net)][f]);
        EXPECT_GT(p.match_corr, 0.85);  // corr of f + 0.3 e and f + 0.3 e': 1 / 1.09 = 0.917
      }
      EXPECT_TRUE(u.consistent);
      EXPECT_GT(u.min_match_corr, 0.85);
    }
    for (const std::int64_t unit : {4, 5}) EXPECT_LT(net.units[unit].min_semi_corr, 0.1);  // private
    // Learned by all at 0.5 and 0.7: the 4 shared features; at 0.9 some or none (0.917 on average).
    EXPECT_EQ(net.learned_by_all[0], 4);
    EXPECT_EQ(net.learned_by_all[1], 4);
    EXPECT_EQ(net.best_partner_in_all[0], 4);
    EXPECT_EQ(net.live, 6);
  }
  const UnitReliability& dead = r.nets[2].units[6];
  EXPECT_TRUE(dead.dead);
  EXPECT_FALSE(dead.consistent);
  EXPECT_EQ(dead.partners[0].semi, -1);
  EXPECT_EQ(dead.min_match_corr, 0.0);
}

// Three nets of two units, matchings made by hand: a0 -> b0 -> c1, but a0 -> c0 directly.
TEST(Reliability, ABrokenCycleIsNotConsistent) {
  Study study;
  for (int k = 0; k < 3; ++k) {
    NetInfo info;
    info.name = "n" + std::to_string(k);
    info.units = 2;
    info.offset = 2 * k;
    study.nets.push_back(info);
  }
  study.dead.assign(6, false);
  study.correlation = Matrix(6, 6, 0.5);
  auto assignment = [](std::vector<std::int64_t> row_to_col) {
    PairAlignment p;
    p.matching.col_to_row.assign(row_to_col.size(), -1);
    for (std::size_t r = 0; r < row_to_col.size(); ++r) p.matching.col_to_row[static_cast<std::size_t>(row_to_col[r])] = static_cast<std::int64_t>(r);
    p.matching.row_to_col = std::move(row_to_col);
    return p;
  };
  // (a, b): identity; (a, c): identity; (b, c): swapped.
  const Reliability broken = reliability(study, {assignment({0, 1}), assignment({0, 1}), assignment({1, 0})});
  for (int k = 0; k < 3; ++k)
    for (int u = 0; u < 2; ++u) EXPECT_FALSE(broken.nets[static_cast<std::size_t>(k)].units[static_cast<std::size_t>(u)].consistent);
  const Reliability closed = reliability(study, {assignment({0, 1}), assignment({1, 0}), assignment({1, 0})});
  for (int k = 0; k < 3; ++k) EXPECT_EQ(closed.nets[static_cast<std::size_t>(k)].consistent, 2);
  EXPECT_THROW(reliability(study, {assignment({0, 1})}), Error);  // three pairs need three matchings
}

}  // namespace
}  // namespace convergent
