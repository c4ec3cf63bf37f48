// Moments: construction, the Chan-Golub-LeVeque merges, and the float64 oracle.
#include "convergent/moments.hpp"

#include <cmath>
#include <limits>
#include <numeric>

#include "convergent/error.hpp"
#include "batch_kernels.hpp"
#include "parallel.hpp"

namespace convergent {
namespace {

template <class T>
void merge_batch_impl(Moments& into, const BatchMoments& batch, MatrixView<const T> s, int threads) {
  const std::int64_t u = into.units();
  const double n = static_cast<double>(into.samples);
  const double nb = static_cast<double>(batch.rows);
  if (batch.rows == 0) return;
  const double total = n + nb;
  const double weight = n * nb / total;  // 0 for the first batch: M2 is then the batch's own comoment
  std::vector<double> delta(static_cast<std::size_t>(u));
  for (std::int64_t i = 0; i < u; ++i) delta[i] = batch.mean[i] - into.mean[i];
  // Every entry is updated by one thread in one fixed way, so the result does not depend on the thread
  // count; rows of the triangle shrink with i, and parallel_for deals them out round-robin.
  constexpr std::int64_t rows_per_task = 16;
  parallel_for((u + rows_per_task - 1) / rows_per_task, threads, [&](std::int64_t task) {
    for (std::int64_t i = task * rows_per_task; i < std::min(u, (task + 1) * rows_per_task); ++i) {
      merge_row(into.comoment.data() + i * u + i, s.row(i) + i, delta.data() + i, weight * delta[i], u - i);
    }
  });
  for (std::int64_t i = 0; i < u; ++i) {
    into.mean[i] += delta[i] * (nb / total);
    into.min[i] = std::min(into.min[i], batch.min[i]);
    into.max[i] = std::max(into.max[i], batch.max[i]);
  }
  into.samples += batch.rows;
}

}  // namespace

Moments::Moments(std::vector<std::int64_t> units_per_net) : net_units(std::move(units_per_net)) {
  const std::int64_t u = std::accumulate(net_units.begin(), net_units.end(), std::int64_t{0});
  mean.assign(static_cast<std::size_t>(u), 0.0);
  min.assign(static_cast<std::size_t>(u), std::numeric_limits<double>::infinity());
  max.assign(static_cast<std::size_t>(u), -std::numeric_limits<double>::infinity());
  comoment = Matrix(u, u);
}

std::int64_t Moments::net_offset(int net) const {
  return std::accumulate(net_units.begin(), net_units.begin() + net, std::int64_t{0});
}

std::vector<double> Moments::stddev() const {
  std::vector<double> sd(mean.size(), 0.0);
  if (samples < 2) return sd;
  for (std::int64_t i = 0; i < units(); ++i)
    sd[i] = std::sqrt(std::max(0.0, comoment(i, i)) / static_cast<double>(samples));
  return sd;
}

void merge_batch(Moments& into, const BatchMoments& batch, MatrixView<const float> batch_comoment, int threads) {
  merge_batch_impl(into, batch, batch_comoment, threads);
}

void merge_batch(Moments& into, const BatchMoments& batch, MatrixView<const double> batch_comoment, int threads) {
  merge_batch_impl(into, batch, batch_comoment, threads);
}

void fill_lower_triangle(Matrix& m) {
  for (std::int64_t i = 0; i < m.rows(); ++i)
    for (std::int64_t j = 0; j < i; ++j) m(i, j) = m(j, i);
}

void merge(Moments& into, const Moments& other) {
  if (into.net_units != other.net_units) throw Error("cannot merge Moments of different nets or unit counts");
  const BatchMoments batch{other.samples, other.mean.data(), other.min.data(), other.max.data()};
  merge_batch(into, batch, other.comoment.view());
  fill_lower_triangle(into.comoment);
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
  return m;
}

}  // namespace convergent
