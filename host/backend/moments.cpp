// Moments: construction, unscaled readings, the merge of two shards, and the float64 oracle.
#include "convergent/moments.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "convergent/error.hpp"
#include "backend/running_moments.hpp"

namespace convergent {

Moments::Moments(std::vector<std::int64_t> units_per_net) : net_units(std::move(units_per_net)) {
  const std::int64_t u = std::accumulate(net_units.begin(), net_units.end(), std::int64_t{0});
  mean.assign(static_cast<std::size_t>(u), 0.0);
  min.assign(static_cast<std::size_t>(u), std::numeric_limits<double>::infinity());
  max.assign(static_cast<std::size_t>(u), -std::numeric_limits<double>::infinity());
  exponent.assign(static_cast<std::size_t>(u), 0);
  comoment = Matrix(u, u);
  const auto nets = static_cast<std::int64_t>(net_units.size());
  sqnorm_comoment = Matrix(nets, nets);
  unit_sqnorm_comoment = Matrix(u, nets);
}

std::int64_t Moments::net_offset(int net) const {
  return std::accumulate(net_units.begin(), net_units.begin() + net, std::int64_t{0});
}

std::vector<double> Moments::stddev() const {
  std::vector<double> sd(mean.size(), 0.0);
  if (samples < 2) return sd;
  for (std::int64_t i = 0; i < units(); ++i)
    sd[i] = std::ldexp(std::sqrt(std::max(0.0, comoment_diagonal(i)) / static_cast<double>(samples)), -exponent[i]);
  return sd;
}

double Moments::comoment_diagonal(std::int64_t i) const {
  return released_diagonal.empty() ? comoment(i, i) : released_diagonal[static_cast<std::size_t>(i)];
}

Matrix Moments::release_comoment() {
  if (!released_diagonal.empty() || comoment.rows() != units())
    throw Error("release_comoment: the comoment was handed over already");
  released_diagonal.resize(mean.size());
  for (std::int64_t i = 0; i < units(); ++i) released_diagonal[static_cast<std::size_t>(i)] = comoment(i, i);
  Matrix handed = std::move(comoment);
  comoment = Matrix();  // a moved-from Matrix keeps its shape; this one reads 0 x 0
  return handed;
}

double Moments::covariance(std::int64_t i, std::int64_t j) const {
  if (samples == 0) return 0.0;
  if (i != j && !released_diagonal.empty())
    throw Error("Moments::covariance: the comoment was handed over to the correlation (release_comoment)");
  return std::ldexp((i == j ? comoment_diagonal(i) : comoment(i, j)) / static_cast<double>(samples),
                    -exponent[i] - exponent[j]);
}

void merge(Moments& into, const Moments& other) {
  if (into.net_units != other.net_units) throw Error("cannot merge Moments of different nets or unit counts");
  if (!into.released_diagonal.empty() || !other.released_diagonal.empty())
    throw Error("cannot merge Moments whose comoment was handed over to a correlation");
  detail::RunningMoments running(into);
  std::vector<double> half_mean(other.mean.size());
  for (std::size_t i = 0; i < half_mean.size(); ++i) half_mean[i] = 0.5 * other.mean[i];
  std::vector<int> exponent = other.exponent;
  // A unit constant over the shard has a zero comoment row and no scale of its own.
  for (std::size_t i = 0; i < exponent.size(); ++i)
    if (other.comoment(static_cast<std::int64_t>(i), static_cast<std::int64_t>(i)) == 0.0) exponent[i] = detail::no_spread;
  const detail::ScaledBatch batch{other.samples, half_mean.data(), other.min.data(), other.max.data(), exponent.data()};
  running.merge(batch, other.comoment.view());
  Moments merged = running.result();
  // The norm sums: each shard's moved from its own mean to the common one, then added.
  merged.sqnorm_comoment = Matrix(into.sqnorm_comoment.rows(), into.sqnorm_comoment.cols());
  merged.unit_sqnorm_comoment = Matrix(into.unit_sqnorm_comoment.rows(), into.unit_sqnorm_comoment.cols());
  const std::vector<double> none(into.mean.size(), 0.0);
  for (const Moments* shard : {static_cast<const Moments*>(&into), &other}) {
    if (shard->samples == 0) continue;
    Matrix sqnorm = shard->sqnorm_comoment, unit_sqnorm = shard->unit_sqnorm_comoment;
    std::vector<double> shift(none.size());
    for (std::size_t i = 0; i < shift.size(); ++i) shift[i] = merged.mean[i] - shard->mean[i];
    detail::shift_norm_sums(*shard, none, shift, sqnorm, unit_sqnorm);
    for (std::int64_t i = 0; i < sqnorm.rows() * sqnorm.cols(); ++i) merged.sqnorm_comoment.data()[i] += sqnorm.data()[i];
    for (std::int64_t i = 0; i < unit_sqnorm.rows() * unit_sqnorm.cols(); ++i)
      merged.unit_sqnorm_comoment.data()[i] += unit_sqnorm.data()[i];
  }
  into = std::move(merged);
}

Moments moments_of(MatrixView<const double> rows, std::vector<std::int64_t> units_per_net) {
  Moments m(std::move(units_per_net));
  if (m.units() != rows.cols) throw Error("moments_of: the unit counts do not add up to the column count");
  const std::int64_t u = rows.cols;
  m.samples = rows.rows;
  for (std::int64_t r = 0; r < rows.rows; ++r)
    for (std::int64_t i = 0; i < u; ++i) {
      m.mean[i] += rows(r, i);
      m.min[i] = std::min(m.min[i], rows(r, i));
      m.max[i] = std::max(m.max[i], rows(r, i));
    }
  for (auto& x : m.mean) x /= static_cast<double>(rows.rows);
  for (std::int64_t r = 0; r < rows.rows; ++r)
    for (std::int64_t i = 0; i < u; ++i)
      for (std::int64_t j = 0; j < u; ++j) m.comoment(i, j) += (rows(r, i) - m.mean[i]) * (rows(r, j) - m.mean[j]);
  const auto nets = static_cast<std::int64_t>(m.net_units.size());
  std::vector<double> norm(static_cast<std::size_t>(nets));
  for (std::int64_t r = 0; r < rows.rows; ++r) {
    for (std::int64_t k = 0, i = 0; k < nets; ++k) {
      norm[k] = 0.0;
      for (std::int64_t end = i + m.net_units[k]; i < end; ++i) norm[k] += (rows(r, i) - m.mean[i]) * (rows(r, i) - m.mean[i]);
    }
    for (std::int64_t k = 0; k < nets; ++k) {
      for (std::int64_t l = 0; l < nets; ++l) m.sqnorm_comoment(k, l) += norm[k] * norm[l];
      for (std::int64_t i = 0; i < u; ++i) m.unit_sqnorm_comoment(i, k) += (rows(r, i) - m.mean[i]) * norm[k];
    }
  }
  return m;
}

}  // namespace convergent
