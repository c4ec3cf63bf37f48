// Two-sample Kolmogorov-Smirnov (scipy.stats.ks_2samp's exact p-value), Wasserstein-1, and the mean
// distributions of a study's nets with their within-net baseline.
#include "convergent/mean_distributions.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "analysis/live_units.hpp"
#include "analysis/splitmix64.hpp"
#include "convergent/error.hpp"

namespace convergent {
namespace {

std::vector<double> sorted_sample(const std::vector<double>& x, const char* what) {
  if (x.empty()) throw Error(std::string(what) + ": a sample is empty");
  for (std::size_t i = 0; i < x.size(); ++i)
    if (!std::isfinite(x[i])) throw Error(std::string(what) + ": value " + std::to_string(i) + " is not finite");
  std::vector<double> s = x;
  std::sort(s.begin(), s.end());
  return s;
}

// max over x of |n2 #{a <= x} - n1 #{b <= x}|: the KS statistic times n1 n2, an exact integer.
std::int64_t ks_numerator(const std::vector<double>& a, const std::vector<double>& b) {
  const auto n1 = static_cast<std::int64_t>(a.size()), n2 = static_cast<std::int64_t>(b.size());
  std::int64_t i = 0, j = 0, best = 0;
  while (i < n1 || j < n2) {
    const double x = j >= n2 || (i < n1 && a[i] <= b[j]) ? a[i] : b[j];
    while (i < n1 && a[i] <= x) ++i;
    while (j < n2 && b[j] <= x) ++j;
    best = std::max(best, std::abs(i * n2 - j * n1));
  }
  return best;
}

std::int64_t floor_div(std::int64_t a, std::int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return -floor_div(-a, b); }

// P(D >= h / n) for two samples of n: 2 (A0 - A0 A1 + A0 A1 A2 - ...) with A_k the ratios of binomials,
// evaluated Horner-like from the innermost term (no subtractive cancellation); scipy's
// _compute_prob_outside_square.
double prob_outside_square(std::int64_t n, std::int64_t h) {
  double p = 0.0;
  for (std::int64_t k = n / h; k >= 0; --k) {
    double term = 1.0;
    for (std::int64_t j = 0; j < h; ++j)
      term = static_cast<double>(n - k * h - j) * term / static_cast<double>(n + k * h + j + 1);
    p = term * (1.0 - p);
  }
  return 2.0 * p;
}

// P(D >= h / lcm(m, n)) for samples of m and n: the share of lattice paths from (0, 0) to (m, n) that
// leave the band |x / m - y / n| < h / lcm, by Hodges' inside method with Viehmann's recursion for the
// leaving share (arXiv 2102.08037), one column of the band at a time. Column entries outside the band
// hold 1 (every path through them has left); the band's ends only move up, so one array serves.
double prob_outside_band(std::int64_t m, std::int64_t n, std::int64_t g, std::int64_t h) {
  if (m < n) std::swap(m, n);
  const std::int64_t mg = m / g, ng = n / g;
  std::vector<double> column(static_cast<std::size_t>(n + 1), 1.0);
  std::int64_t top = std::min(ceil_div(h, mg), n + 1);
  std::fill(column.begin(), column.begin() + top, 0.0);
  for (std::int64_t i = 1; i <= m; ++i) {
    const std::int64_t bottom = std::min(std::max(floor_div(ng * i - h, mg) + 1, std::int64_t{0}), n);
    top = std::min(ceil_div(ng * i + h, mg), n + 1);
    if (top <= bottom) return 1.0;
    double below = bottom == 0 ? 0.0 : 1.0;
    for (std::int64_t j = bottom; j < top; ++j) {
      below = (column[static_cast<std::size_t>(j)] * static_cast<double>(i) + below * static_cast<double>(j)) /
              static_cast<double>(i + j);
      column[static_cast<std::size_t>(j)] = below;
    }
  }
  return column[static_cast<std::size_t>(top - 1)];
}

// Kolmogorov's limiting distribution: P(K > x) (scipy's kstwobign.sf).
double kolmogorov_sf(double x) {
  if (x <= 0.0) return 1.0;
  double sum = 0.0;
  if (x < 1.0) {  // the theta-function form converges fast for small x
    const double c = -M_PI * M_PI / (8.0 * x * x);
    for (int k = 1; k < 100; k += 2) sum += std::exp(c * k * k);
    return std::clamp(1.0 - std::sqrt(2.0 * M_PI) / x * sum, 0.0, 1.0);
  }
  for (int k = 1; k < 100; ++k) sum += (k % 2 ? 2.0 : -2.0) * std::exp(-2.0 * k * k * x * x);
  return std::clamp(sum, 0.0, 1.0);
}

}  // namespace

KsTest ks_2samp(const std::vector<double>& a_in, const std::vector<double>& b_in) {
  const std::vector<double> a = sorted_sample(a_in, "ks_2samp"), b = sorted_sample(b_in, "ks_2samp");
  const auto n1 = static_cast<std::int64_t>(a.size()), n2 = static_cast<std::int64_t>(b.size());
  const std::int64_t g = std::gcd(n1, n2);
  const std::int64_t lcm = n1 / g * n2;
  const std::int64_t h = ks_numerator(a, b) / g;  // the statistic in steps of 1 / lcm
  KsTest test;
  test.statistic = static_cast<double>(h) / static_cast<double>(lcm);
  if (h == 0) return test;
  const double p = n1 == n2 ? prob_outside_square(n1, h) : prob_outside_band(n1, n2, g, h);
  if (std::isfinite(p) && p >= 0.0 && p <= 1.0) {
    test.pvalue = p;
  } else {
    const double en = static_cast<double>(n1) * static_cast<double>(n2) / static_cast<double>(n1 + n2);
    test.pvalue = kolmogorov_sf(std::sqrt(en) * test.statistic);
    test.exact = false;
  }
  return test;
}

double wasserstein_1(const std::vector<double>& a_in, const std::vector<double>& b_in) {
  const std::vector<double> a = sorted_sample(a_in, "wasserstein_1"), b = sorted_sample(b_in, "wasserstein_1");
  const auto n1 = static_cast<std::int64_t>(a.size()), n2 = static_cast<std::int64_t>(b.size());
  std::int64_t i = 0, j = 0;
  double distance = 0.0, x = std::min(a[0], b[0]);
  while (i < n1 || j < n2) {
    while (i < n1 && a[i] <= x) ++i;
    while (j < n2 && b[j] <= x) ++j;
    if (i == n1 && j == n2) break;
    const double next = j >= n2 || (i < n1 && a[i] <= b[j]) ? a[i] : b[j];
    distance += std::abs(static_cast<double>(i) / static_cast<double>(n1) - static_cast<double>(j) / static_cast<double>(n2)) *
                (next - x);
    x = next;
  }
  return distance;
}

MeanDistributions mean_distributions(const Study& study, const MeanDistributionOptions& options) {
  if (options.splits < 1) throw Error("mean distributions: at least one split is needed for the baseline");
  MeanDistributions result;
  for (int net = 0; net < static_cast<int>(study.nets.size()); ++net) {
    const NetInfo& info = study.nets[static_cast<std::size_t>(net)];
    NetMeans means;
    for (const std::int64_t u : detail::live_units(study, net))
      means.sorted_means.push_back(study.moments.mean[static_cast<std::size_t>(info.offset + u)]);
    std::sort(means.sorted_means.begin(), means.sorted_means.end());
    means.dead = info.units - static_cast<std::int64_t>(means.sorted_means.size());
    const auto live = static_cast<std::int64_t>(means.sorted_means.size());
    if (live >= 2) {
      // Each net draws from its own stream, so adding a net changes no other net's baseline.
      detail::SplitMix64 rng(options.seed ^ (0xD1B54A32D192ED03ULL * (static_cast<std::uint64_t>(net) + 1)));
      std::vector<double> shuffled = means.sorted_means, first, second;
      double sum = 0.0, sum_squares = 0.0;
      for (int split = 0; split < options.splits; ++split) {
        for (std::int64_t k = live - 1; k > 0; --k) std::swap(shuffled[k], shuffled[rng.below(k + 1)]);
        first.assign(shuffled.begin(), shuffled.begin() + live / 2);
        second.assign(shuffled.begin() + live / 2, shuffled.end());
        std::sort(first.begin(), first.end());
        std::sort(second.begin(), second.end());
        const auto n1 = static_cast<double>(first.size()), n2 = static_cast<double>(second.size());
        const double d = static_cast<double>(ks_numerator(first, second)) / (n1 * n2);
        sum += d;
        sum_squares += d * d;
      }
      means.within_ks_mean = sum / options.splits;
      means.within_ks_std = std::sqrt(std::max(0.0, sum_squares / options.splits - means.within_ks_mean * means.within_ks_mean));
    }
    result.nets.push_back(std::move(means));
  }
  for (int a = 0; a < static_cast<int>(result.nets.size()); ++a)
    for (int b = a + 1; b < static_cast<int>(result.nets.size()); ++b) {
      const auto& ma = result.nets[static_cast<std::size_t>(a)].sorted_means;
      const auto& mb = result.nets[static_cast<std::size_t>(b)].sorted_means;
      if (ma.empty() || mb.empty()) continue;
      result.pairs.push_back({a, b, ks_2samp(ma, mb), wasserstein_1(ma, mb)});
    }
  return result;
}

}  // namespace convergent
