// RunningMoments: the scaled Chan merge. See running_moments.hpp.
#include "backend/running_moments.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu/batch_kernels.hpp"
#include "convergent/error.hpp"
#include "cpu/parallel.hpp"

namespace convergent::detail {
namespace {

int clamp_exponent(int e) { return std::clamp(e, min_exponent, max_exponent); }

}  // namespace

int spread_exponent(double x) {
  if (x == 0.0) return no_spread;
  return clamp_exponent(-std::ilogb(x));
}

void shift_norm_sums(const Moments& m, const std::vector<double>& offset, const std::vector<double>& shift,
                     Matrix& sqnorm, Matrix& unit_sqnorm) {
  if (m.samples == 0) return;
  // With d the samples about p, a_k = ||d restricted to net k||^2, c = shift: the samples about p + c are
  // d - c, whose squared norms are a_k - 2 c_k.d_k + |c_k|^2. Expanding the products and summing over the
  // samples leaves sums of d (S1 = n offset), of d d^T (S2 = centred comoment + n offset offset^T), and the
  // norm sums themselves.
  const auto nets = static_cast<std::int64_t>(m.net_units.size());
  const std::int64_t u = m.units();
  const double n = static_cast<double>(m.samples);
  std::vector<std::int64_t> net_of(static_cast<std::size_t>(u));
  for (std::int64_t k = 0, i = 0; k < nets; ++k)
    for (std::int64_t j = 0; j < m.net_units[k]; ++j) net_of[i++] = k;
  auto s2 = [&](std::int64_t i, std::int64_t j) {
    return std::ldexp(m.comoment(i, j), -m.exponent[i] - m.exponent[j]) + n * offset[i] * offset[j];
  };
  std::vector<double> c2(nets, 0.0), cs1(nets, 0.0), trace(nets, 0.0);  // |c_k|^2, c_k.S1_k, tr S2_kk
  Matrix s2c(u, nets), cw(nets, nets), cs2c(nets, nets);  // S2_(i, net l) c_l; c_k.W_(k, l); c_k S2_kl c_l
  for (std::int64_t i = 0; i < u; ++i) {
    const std::int64_t k = net_of[i];
    c2[k] += shift[i] * shift[i];
    cs1[k] += n * shift[i] * offset[i];
    trace[k] += s2(i, i);
    for (std::int64_t j = 0; j < u; ++j) s2c(i, net_of[j]) += s2(i, j) * shift[j];
    for (std::int64_t l = 0; l < nets; ++l) {
      cw(k, l) += shift[i] * unit_sqnorm(i, l);
      cs2c(k, l) += shift[i] * s2c(i, l);
    }
  }
  for (std::int64_t k = 0; k < nets; ++k)
    for (std::int64_t l = k; l < nets; ++l) {
      sqnorm(k, l) += -2.0 * (cw(l, k) + cw(k, l)) + 2.0 * (cs2c(k, l) + cs2c(l, k)) + c2[l] * trace[k] +
                      c2[k] * trace[l] - 2.0 * (c2[k] * cs1[l] + c2[l] * cs1[k]) + n * c2[k] * c2[l];
      sqnorm(l, k) = sqnorm(k, l);
    }
  for (std::int64_t i = 0; i < u; ++i)
    for (std::int64_t l = 0; l < nets; ++l)
      unit_sqnorm(i, l) += -2.0 * s2c(i, l) + c2[l] * n * offset[i] - shift[i] * (trace[l] - 2.0 * cs1[l] + n * c2[l]);
  // Beyond the float64 range (moments.hpp) a sum reads +infinity, never NaN (inf - inf above).
  for (Matrix* sums : {&sqnorm, &unit_sqnorm})
    for (std::int64_t i = 0; i < sums->rows() * sums->cols(); ++i)
      if (!std::isfinite(sums->data()[i])) sums->data()[i] = std::numeric_limits<double>::infinity();
}

RunningMoments::RunningMoments(std::vector<std::int64_t> units_per_net)
    : moments_(std::move(units_per_net)),
      origin_(static_cast<std::size_t>(moments_.units()), 0.0),
      half_mean_(origin_.size(), 0.0) {}

RunningMoments::RunningMoments(const Moments& start)
    : moments_(start), origin_(start.mean.size(), 0.0), half_mean_(start.mean.size()) {
  for (std::size_t i = 0; i < half_mean_.size(); ++i) half_mean_[i] = 0.5 * start.mean[i];
}

void RunningMoments::set_origin(const std::vector<double>& origin) {
  if (moments_.samples != 0) throw Error("RunningMoments: the origin is set before the first merge");
  if (origin.size() != origin_.size()) throw Error("RunningMoments: one origin per unit");
  origin_ = origin;
}

template <class T>
void RunningMoments::merge_impl(const ScaledBatch& batch, MatrixView<const T> s, int threads) {
  if (batch.rows == 0) return;
  const std::int64_t u = moments_.units();
  const bool first = moments_.samples == 0;
  const double n = static_cast<double>(moments_.samples);
  const double nb = static_cast<double>(batch.rows);
  const double weight = n * nb / (n + nb);  // 0 for the first batch: M2 is then the batch's own comoment
  const double fraction = nb / (n + nb);
  std::vector<double> rescale(static_cast<std::size_t>(u), 1.0), batch_scale(rescale.size()), delta(rescale.size());
  bool rescaled = false;
  for (std::int64_t i = 0; i < u; ++i) {
    const int e = batch.exponent[i];
    const double half_delta = first ? 0.0 : batch.half_mean[i] - half_mean_[i];
    int f;
    if (first) {
      f = e == no_spread ? 0 : clamp_exponent(e - first_batch_headroom);
    } else {
      // The common scale must hold the larger of the two spreads and the spread the means' difference adds.
      f = moments_.exponent[i];
      if (e != no_spread) f = std::min(f, e);
      if (half_delta != 0.0) f = std::min(f, spread_exponent(half_delta));
      rescale[i] = std::ldexp(1.0, f - moments_.exponent[i]);
      rescaled = rescaled || f != moments_.exponent[i];
    }
    batch_scale[i] = e == no_spread ? 0.0 : std::ldexp(1.0, f - e);
    delta[i] = std::ldexp(half_delta, f + 1);  // at most 4 in magnitude
    moments_.exponent[i] = f;
    half_mean_[i] = first ? batch.half_mean[i] : half_mean_[i] + half_delta * fraction;
    moments_.min[i] = std::min(moments_.min[i], batch.min[i]);
    moments_.max[i] = std::max(moments_.max[i], batch.max[i]);
  }
  double* m2 = moments_.comoment.data();
  // Rows of the triangle shrink with i, and parallel_for deals them out round-robin.
  constexpr std::int64_t rows_per_task = 16;
  const std::int64_t tasks = (u + rows_per_task - 1) / rows_per_task;
  if (rescaled) {
    parallel_for(tasks, threads, [&](std::int64_t task) {
      for (std::int64_t i = task * rows_per_task; i < std::min(u, (task + 1) * rows_per_task); ++i)
        for (std::int64_t j = i; j < u; ++j) m2[i * u + j] *= rescale[i] * rescale[j];  // exact: powers of two
    });
  }
  parallel_for(tasks, threads, [&](std::int64_t task) {
    for (std::int64_t i = task * rows_per_task; i < std::min(u, (task + 1) * rows_per_task); ++i)
      merge_row(m2 + i * u + i, s.row(i) + i, batch_scale[i], batch_scale.data() + i, delta.data() + i,
                weight * delta[i], u - i);
  });
  moments_.samples += batch.rows;
}

void RunningMoments::merge(const ScaledBatch& batch, MatrixView<const float> batch_comoment, int threads) {
  merge_impl(batch, batch_comoment, threads);
}

void RunningMoments::merge(const ScaledBatch& batch, MatrixView<const double> batch_comoment, int threads) {
  merge_impl(batch, batch_comoment, threads);
}

std::vector<double> RunningMoments::offset() const {
  std::vector<double> o(half_mean_.size());
  for (std::size_t i = 0; i < o.size(); ++i) o[i] = 2.0 * half_mean_[i];
  return o;
}

Moments RunningMoments::result() const& { return RunningMoments(*this).result_moved(); }

Moments RunningMoments::result() && { return result_moved(); }

Moments RunningMoments::result_moved() {
  Moments m = std::move(moments_);
  // (origin + 2 half) / 2 lies between origin / 2 and the mean, so neither step overflows.
  for (std::size_t i = 0; i < half_mean_.size(); ++i) m.mean[i] = 2.0 * (0.5 * origin_[i] + half_mean_[i]);
  fill_lower_triangle(m.comoment);
  return m;
}

}  // namespace convergent::detail
