// Two-sample KS against closed forms and a brute-force count of lattice paths; Wasserstein-1 against the
// quantile-function integral; the mean distributions of a study.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "convergent/error.hpp"
#include "convergent/mean_distributions.hpp"
#include "test_analysis_util.hpp"

namespace convergent {
namespace {

// n1 n2 sup |F_a - F_b|, evaluating both empirical CDFs at every value (plain loops).
std::int64_t brute_numerator(const std::vector<double>& a, const std::vector<double>& b) {
  std::int64_t best = 0;
  std::vector<double> all = a;
  all.insert(all.end(), b.begin(), b.end());
  for (const double x : all) {
    std::int64_t fa = 0, fb = 0;
    for (const double v : a) fa += v <= x;
    for (const double v : b) fb += v <= x;
    best = std::max(best, std::abs(fa * static_cast<std::int64_t>(b.size()) - fb * static_cast<std::int64_t>(a.size())));
  }
  return best;
}

// The exact null p-value by enumeration: every way to label m + n distinct values as m from a and n from
// b is equally likely; p = share of labellings whose statistic is at least the observed one.
double brute_pvalue(std::int64_t m, std::int64_t n, std::int64_t observed_numerator) {
  std::int64_t hits = 0, total = 0;
  const std::int64_t size = m + n;
  for (std::uint32_t mask = 0; mask < (1u << size); ++mask) {
    if (__builtin_popcount(mask) != m) continue;
    ++total;
    std::int64_t fa = 0, fb = 0, best = 0;
    for (std::int64_t k = 0; k < size; ++k) {
      (mask >> k & 1u) ? ++fa : ++fb;
      best = std::max(best, std::abs(fa * n - fb * m));
    }
    hits += best >= observed_numerator;
  }
  return static_cast<double>(hits) / static_cast<double>(total);
}

TEST(MeanDistributions, KsClosedForms) {
  // Fully separated samples of 3 and 3: D = 1, p = 2 / C(6, 3) = 0.1 (scipy: 0.1).
  const KsTest t = ks_2samp({1, 2, 3}, {4, 5, 6});
  EXPECT_EQ(t.statistic, 1.0);
  EXPECT_NEAR(t.pvalue, 0.1, 1e-15);
  EXPECT_TRUE(t.exact);
  // The same sample twice: D = 0, p = 1.
  EXPECT_EQ(ks_2samp({3, 1, 2}, {1, 2, 3}).pvalue, 1.0);
  // 2 against 3, separated: p = 2 / C(5, 2) = 0.2.
  EXPECT_NEAR(ks_2samp({0, 1}, {5, 6, 7}).pvalue, 0.2, 1e-15);
}

TEST(MeanDistributions, KsMatchesABruteForceCountOfPaths) {
  std::mt19937_64 rng(7);
  std::normal_distribution<double> normal;
  // Equal sizes (the closed-form branch) and unequal ones with and without a common factor (the band).
  for (const auto& [m, n] : std::vector<std::pair<int, int>>{{6, 6}, {5, 7}, {4, 8}, {9, 6}, {1, 10}}) {
    for (int trial = 0; trial < 4; ++trial) {
      std::vector<double> a(static_cast<std::size_t>(m)), b(static_cast<std::size_t>(n));
      for (double& v : a) v = normal(rng) + 0.4 * trial;
      for (double& v : b) v = normal(rng);
      const KsTest t = ks_2samp(a, b);
      const std::int64_t numerator = brute_numerator(a, b);
      EXPECT_NEAR(t.statistic, static_cast<double>(numerator) / (m * n), 1e-15);
      EXPECT_NEAR(t.pvalue, brute_pvalue(m, n, numerator), 1e-12) << m << " x " << n << ", trial " << trial;
      EXPECT_TRUE(t.exact);
    }
  }
}

TEST(MeanDistributions, KsStatisticWithTies) {
  const std::vector<double> a = {0, 0, 1, 1, 1, 2}, b = {0, 1, 1, 2, 2, 2, 3};
  EXPECT_NEAR(ks_2samp(a, b).statistic, static_cast<double>(brute_numerator(a, b)) / 42.0, 1e-15);
  EXPECT_NEAR(ks_2samp(a, b).statistic, 5.0 / 6.0 - 3.0 / 7.0, 1e-15);  // at x = 1
}

// W1 = integral over t in (0, 1) of |Qa(t) - Qb(t)|, the quantile functions stepping at k / n.
double quantile_w1(std::vector<double> a, std::vector<double> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  const double n1 = static_cast<double>(a.size()), n2 = static_cast<double>(b.size());
  std::vector<double> steps = {0.0, 1.0};
  for (std::size_t k = 1; k < a.size(); ++k) steps.push_back(static_cast<double>(k) / n1);
  for (std::size_t k = 1; k < b.size(); ++k) steps.push_back(static_cast<double>(k) / n2);
  std::sort(steps.begin(), steps.end());
  double w = 0.0;
  for (std::size_t k = 0; k + 1 < steps.size(); ++k) {
    const double mid = 0.5 * (steps[k] + steps[k + 1]);
    w += (steps[k + 1] - steps[k]) *
         std::abs(a[static_cast<std::size_t>(mid * n1)] - b[static_cast<std::size_t>(mid * n2)]);
  }
  return w;
}

TEST(MeanDistributions, WassersteinIsTheQuantileIntegral) {
  EXPECT_NEAR(wasserstein_1({0, 1, 3}, {5, 6, 8}), 5.0, 1e-15);  // a shift by 5
  EXPECT_NEAR(wasserstein_1({0, 1}, {0, 1, 1, 1}), 0.25, 1e-15);
  std::mt19937_64 rng(3);
  std::exponential_distribution<double> expo;
  for (const auto& [m, n] : std::vector<std::pair<int, int>>{{10, 10}, {7, 13}, {50, 3}}) {
    std::vector<double> a(static_cast<std::size_t>(m)), b(static_cast<std::size_t>(n));
    for (double& v : a) v = expo(rng);
    for (double& v : b) v = 2.0 * expo(rng);
    EXPECT_NEAR(wasserstein_1(a, b), quantile_w1(a, b), 1e-12) << m << " x " << n;
  }
  EXPECT_THROW(wasserstein_1({}, {1.0}), Error);
  EXPECT_THROW(ks_2samp({1.0, NAN}, {1.0}), Error);
}

TEST(MeanDistributions, OfAStudy) {
  using testing::Data;
  Data a = testing::gaussian_data(50, 40, 1), b = testing::gaussian_data(50, 30, 2);
  for (std::int64_t r = 0; r < 50; ++r) {
    for (std::int64_t c = 0; c < 40; ++c) a(r, c) += 0.1 * c;  // unit means spread over [0, 4]
    for (std::int64_t c = 0; c < 30; ++c) b(r, c) += 0.13 * c;
    a(r, 5) = 100.0;  // dead: left out, its mean too
  }
  const Study study = testing::study_of({a, b});
  MeanDistributionOptions options;
  options.seed = 9;
  const MeanDistributions m = mean_distributions(study, options);
  ASSERT_EQ(m.nets.size(), 2u);
  EXPECT_EQ(m.nets[0].dead, 1);
  ASSERT_EQ(m.nets[0].sorted_means.size(), 39u);
  EXPECT_TRUE(std::is_sorted(m.nets[0].sorted_means.begin(), m.nets[0].sorted_means.end()));
  EXPECT_LT(m.nets[0].sorted_means.back(), 10.0);
  std::vector<double> means_b;
  for (std::int64_t c = 0; c < 30; ++c) means_b.push_back(study.moments.mean[static_cast<std::size_t>(40 + c)]);
  ASSERT_EQ(m.pairs.size(), 1u);
  const KsTest direct = ks_2samp(m.nets[0].sorted_means, means_b);
  EXPECT_EQ(m.pairs[0].ks.statistic, direct.statistic);
  EXPECT_EQ(m.pairs[0].ks.pvalue, direct.pvalue);
  EXPECT_EQ(m.pairs[0].wasserstein, wasserstein_1(m.nets[0].sorted_means, means_b));
  // The baseline: a KS statistic between halves lies in (0, 1]; same seed, same value; another seed moves it.
  EXPECT_GT(m.nets[0].within_ks_mean, 0.0);
  EXPECT_LE(m.nets[0].within_ks_mean, 1.0);
  EXPECT_EQ(mean_distributions(study, options).nets[1].within_ks_mean, m.nets[1].within_ks_mean);
  options.seed = 10;
  EXPECT_NE(mean_distributions(study, options).nets[1].within_ks_mean, m.nets[1].within_ks_mean);
  // A net against itself: D = 0, p = 1, W1 = 0.
  const MeanDistributions same = mean_distributions(testing::study_of({b, b}));
  EXPECT_EQ(same.pairs[0].ks.statistic, 0.0);
  EXPECT_EQ(same.pairs[0].ks.pvalue, 1.0);
  EXPECT_EQ(same.pairs[0].wasserstein, 0.0);
  options.splits = 0;
  EXPECT_THROW(mean_distributions(study, options), Error);
}

}  // namespace
}  // namespace convergent
