// Mean-activation distributions (the paper's finding 3): per-unit means vary a lot inside a net, yet the
// sorted distributions of two nets nearly coincide. Two-sample Kolmogorov-Smirnov tests and Wasserstein
// distances between nets, against the KS statistic between random halves of one net as the baseline.
#pragma once

#include <cstdint>
#include <vector>

#include "convergent/study.hpp"

namespace convergent {

struct KsTest {
  double statistic = 0.0;  // D = sup_x |F_a(x) - F_b(x)| over the empirical CDFs (right-continuous)
  double pvalue = 1.0;     // two-sided
  bool exact = true;       // false: the exact computation under- or overflowed and the asymptotic
                           // Kolmogorov distribution of sqrt(n m / (n + m)) D was used
};

// The two-sample KS test of scipy.stats.ks_2samp(a, b) (two-sided). The p-value is scipy's exact one
// (method='exact': Hodges' inside method with Viehmann's recursion for 1 - p, and the closed form for
// equal sizes); scipy's default method='auto' is the same up to 10000 values per sample and switches to an
// asymptotic formula beyond, where this stays exact. Ties are handled exactly (searchsorted 'right').
// Throws Error when a sample is empty or holds a NaN or infinity.
KsTest ks_2samp(const std::vector<double>& a, const std::vector<double>& b);

// Wasserstein-1 (earth mover's) distance between the empirical distributions of a and b, in their units:
// the integral of |F_a(x) - F_b(x)| dx, as scipy.stats.wasserstein_distance(a, b). Throws Error when a
// sample is empty or holds a NaN or infinity.
double wasserstein_1(const std::vector<double>& a, const std::vector<double>& b);

struct MeanDistributionOptions {
  int splits = 200;         // random halvings of each net's units for the within-net baseline (>= 1)
  std::uint64_t seed = 0;   // same seed, same baseline
};

struct NetMeans {
  std::vector<double> sorted_means;  // live units' means, ascending, in the input's units
  std::int64_t dead = 0;             // dead units, left out
  // Baseline: mean (and population std) over `splits` seeded random halvings of the live units (floor
  // and ceil of half) of the KS statistic between the two halves. 0 with fewer than 2 live units.
  double within_ks_mean = 0.0;
  double within_ks_std = 0.0;
};

struct MeanPair {
  int a = 0;
  int b = 1;
  KsTest ks;                 // between the two nets' live unit means
  double wasserstein = 0.0;  // Wasserstein-1 between them, in the input's units
};

struct MeanDistributions {
  std::vector<NetMeans> nets;   // in the study's order
  std::vector<MeanPair> pairs;  // a < b, in the order (0, 1), (0, 2), ..., (1, 2), ...
};

// Means come from the study's moments; pairs with a net without live units are left out of `pairs`.
// Throws Error when options.splits < 1.
MeanDistributions mean_distributions(const Study& study, const MeanDistributionOptions& options = {});

}  // namespace convergent
