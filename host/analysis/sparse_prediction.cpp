// Lasso in covariance form (coordinate descent on the correlation matrix) and the sparse few-to-one
// prediction of one net's units from another's.
#include "convergent/sparse_prediction.hpp"

#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "analysis/live_units.hpp"
#include "convergent/error.hpp"
#include "cpu/parallel.hpp"

namespace convergent {
namespace detail {

// One cyclic coordinate-descent sweep over a working set of k predictors: gram r (k x k, unit diagonal),
// weights w and gradient g = c - R w, all packed. Returns how many weights changed sign (zero counting as
// a sign of its own). Most of a fit's time is spent here, in the update of g; the AVX-512 and AVX2 clones
// do it 8 or 4 doubles at a time, and every clone makes the same roundings (no FMA contraction in any),
// so the result does not depend on the machine.
__attribute__((target_clones("avx512f", "avx2", "default"))) std::int64_t lasso_sweep(
    const double* __restrict__ r, double* __restrict__ w, double* __restrict__ g, std::int64_t k, double alpha) {
  std::int64_t sign_changes = 0;
  for (std::int64_t a = 0; a < k; ++a) {
    const double old = w[a];
    const double z = g[a] + old;  // the diagonal is 1
    const double updated = z > alpha ? z - alpha : (z < -alpha ? z + alpha : 0.0);
    if (updated == old) continue;
    sign_changes += (updated > 0.0) != (old > 0.0) || (updated < 0.0) != (old < 0.0);
    const double delta = updated - old;
    w[a] = updated;
    const double* row = r + a * k;
    for (std::int64_t b = 0; b < k; ++b) g[b] -= delta * row[b];
  }
  return sign_changes;
}

// out += sum over r of coef[r] x row rows[r] of m (cols wide): the gradient refreshes and the Newton
// step's products, as contiguous row updates the clones vectorise (same roundings in every clone).
__attribute__((target_clones("avx512f", "avx2", "default"))) void add_rows(
    const double* __restrict__ m, std::int64_t cols, const std::int64_t* rows, const double* coef, std::int64_t count,
    double* __restrict__ out) {
  for (std::int64_t r = 0; r < count; ++r) {
    const double c = coef[r];
    if (c == 0.0) continue;
    const double* row = m + rows[r] * cols;
    for (std::int64_t i = 0; i < cols; ++i) out[i] += c * row[i];
  }
}

}  // namespace detail
namespace {

// Primal objective and duality gap of the covariance-form lasso at w, from
//   wc = w . c,  wg = w . g (g = c - R w),  l1 = ||w||_1,  dual_norm = max_j |g_j|.
// With rho = E[r^2] = 1 - wc - wg and the dual point s r / n, s = min(1, alpha / dual_norm), the gap is
// scikit-learn's (cd_fast.pyx) divided by the sample count: 1/2 rho (1 + s^2) + alpha l1 - s (1 - wc).
struct Gap {
  double loss, objective, gap;
};
Gap duality_gap(double wc, double wg, double l1, double dual_norm, double alpha) {
  const double rho = std::max(0.0, 1.0 - wc - wg);
  const double s = dual_norm > alpha ? alpha / dual_norm : 1.0;
  const double objective = 0.5 * rho + alpha * l1;
  return {rho, objective, std::max(0.0, 0.5 * rho * (1.0 + s * s) + alpha * l1 - s * (1.0 - wc))};
}

// Working sets from this size up may finish with a Newton step (TargetSolver::newton_step); below it,
// coordinate descent alone is cheaper than the step's p x |support| products.
constexpr std::int64_t newton_min_support = 64;

// The inverse of the gram matrix, for the Newton steps of dense fits: empty when the gram is small or
// not numerically positive definite (Cholesky fails), and then coordinate descent does all the work.
Matrix gram_inverse(MatrixView<const double> gram) {
  const std::int64_t p = gram.rows;
  if (p < newton_min_support) return {};
  Matrix h(p, p);
  for (std::int64_t i = 0; i < p; ++i) std::copy(gram.row(i), gram.row(i) + p, h.data() + i * p);
  const auto n = static_cast<lapack_int>(p);
  if (LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', n, h.data(), n) != 0) return {};
  if (LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'U', n, h.data(), n) != 0) return {};
  fill_lower_triangle(h);
  return h;
}

// One target's path. Dense w and g over all predictors; the coordinate sweeps run on a packed copy of the
// gram restricted to the working set, so a sweep costs |working set|^2, not p |working set|. Once the
// signs of a large working set stop changing, a Newton step solves for them exactly (newton_step); it is
// kept only when the full problem's duality gap accepts it, so it changes the speed, never the answer's
// guarantee.
class TargetSolver {
 public:
  TargetSolver(MatrixView<const double> gram, const Matrix& inverse, const LassoOptions& options)
      : gram_(gram), inverse_(inverse), options_(options), p_(gram.rows), w_(static_cast<std::size_t>(p_)),
        g_(w_.size()), in_set_(w_.size()) {}

  // Fits of one target for every alpha in `order` (indices into options.alphas, descending alpha).
  void solve(const double* c, const std::vector<std::size_t>& order, std::vector<LassoFit*> out) {
    c_ = c;
    std::fill(w_.begin(), w_.end(), 0.0);
    std::copy(c, c + p_, g_.begin());
    double previous = 0.0;  // the path starts at alpha_max = max |c_j|, where w = 0
    for (std::int64_t j = 0; j < p_; ++j) previous = std::max(previous, std::abs(c[j]));
    for (std::size_t k = 0; k < order.size(); ++k) {
      const double alpha = options_.alphas[order[k]];
      *out[k] = fit(alpha, previous);
      previous = alpha;
    }
  }

 private:
  LassoFit fit(double alpha, double previous_alpha) {
    // Working set: the current non-zeros and the predictors the sequential strong rule keeps
    // (|g_j| > 2 alpha - alpha_previous); the KKT check below adds any it wrongly left out.
    const double strong = 2.0 * alpha - previous_alpha;
    set_.clear();
    std::fill(in_set_.begin(), in_set_.end(), 0);
    for (std::int64_t j = 0; j < p_; ++j)
      if (w_[j] != 0.0 || std::abs(g_[j]) > strong) add(j);
    LassoFit result;
    double target = 0.5 * options_.tolerance;  // the working-set gap aimed at, below the full one
    Gap full{};
    for (;;) {
      pack();
      bool solved = false;
      result.sweeps += sweep_working_set(alpha, target, options_.max_sweeps - result.sweeps, &solved);
      if (!solved) unpack_and_refresh_gradient();
      full = gap(alpha, /*whole=*/true);
      if (full.gap <= options_.tolerance * full.objective) break;
      if (result.sweeps >= options_.max_sweeps) {
        result.converged = false;
        break;
      }
      bool added = false;  // KKT violations outside the working set: |g_j| > alpha with w_j = 0
      for (std::int64_t j = 0; j < p_; ++j)
        if (!in_set_[j] && std::abs(g_[j]) > alpha) add(j), added = true;
      if (!added) target *= 0.1;  // only rounding in the working set's gradient remains: aim lower
      result.sweeps += 1;  // the KKT pass reads every predictor once, as a sweep does
    }
    result.loss = full.loss;
    result.objective = full.objective;
    result.duality_gap = full.gap;
    for (const std::int64_t j : set_)
      if (w_[j] != 0.0) result.predictors.push_back(j);
    std::stable_sort(result.predictors.begin(), result.predictors.end(),
                     [&](std::int64_t a, std::int64_t b) { return std::abs(w_[a]) > std::abs(w_[b]); });
    for (const std::int64_t j : result.predictors) result.weights.push_back(w_[j]);
    return result;
  }

  void add(std::int64_t j) {
    in_set_[j] = 1;
    set_.push_back(j);
  }

  void pack() {
    std::sort(set_.begin(), set_.end());  // cyclic order over ascending predictors, as scikit-learn
    const std::size_t k = set_.size();
    packed_.resize(k * k);
    ws_.resize(k);
    gs_.resize(k);
    for (std::size_t a = 0; a < k; ++a) {
      const double* row = gram_.row(set_[a]);
      for (std::size_t b = 0; b < k; ++b) packed_[a * k + b] = row[set_[b]];
      ws_[a] = w_[set_[a]];
      gs_[a] = g_[set_[a]];
    }
  }

  // Cyclic coordinate descent on the working set until its own duality gap is below target x objective,
  // or the sweep budget is spent, or a Newton step solved the whole problem (*solved; w_ and g_ then hold
  // the solution). Returns the sweeps made, a Newton step counting as one.
  std::int64_t sweep_working_set(double alpha, double target, std::int64_t budget, bool* solved) {
    const auto k = static_cast<std::int64_t>(set_.size());
    const bool newton = inverse_.rows() > 0 && k >= newton_min_support;
    std::int64_t sweeps = 0, since_attempt = 0, attempts = 0;
    while (sweeps < budget) {
      ++sweeps, ++since_attempt;
      const std::int64_t sign_changes = detail::lasso_sweep(packed_.data(), ws_.data(), gs_.data(), k, alpha);
      const Gap working = gap(alpha, /*whole=*/false);
      if (working.gap <= target * working.objective) break;
      // Once few signs still change, the support is nearly final: a Newton step on it either solves the
      // problem or gives coordinate descent a better point to go on from. At most a few per working set.
      if (newton && sign_changes <= k / 64 && since_attempt >= 3 && attempts < 4 && sweeps < budget) {
        ++attempts, ++sweeps, since_attempt = 0;
        if ((*solved = newton_step(alpha, working.objective))) break;
      }
    }
    return sweeps;
  }

  // With the support S and signs s of the current weights, the lasso's optimality conditions on S read
  // R_SS w_S = c_S - alpha s_S. With H = R^-1 and D the predictors outside S, R_SS^-1 = H_SS - H_SD
  // H_DD^-1 H_DS (Schur complement), so w_S = y_S - H_SD H_DD^-1 y_D with y = H[:, S] b: a product of
  // p x |S| and a solve of |D| x |D|, taken only for dense fits (|D| <= |S| / 4), where the sweeps are
  // slowest and the solve cheapest. Weights whose sign flips are set to 0. Returns true when the full
  // problem's duality gap accepts the result (w_ and g_ then hold it); otherwise, when its objective is
  // below `current` (the iterate's), coordinate descent goes on from it (so the objective only ever
  // falls, and the sweeps still converge), else from where it was.
  bool newton_step(double alpha, double current) {
    std::vector<std::int64_t> support, outside;
    std::vector<double> sign;
    for (std::size_t a = 0; a < set_.size(); ++a)
      if (ws_[a] != 0.0) support.push_back(set_[a]), sign.push_back(ws_[a] > 0.0 ? 1.0 : -1.0);
    const auto k = static_cast<std::int64_t>(support.size()), d = p_ - k;
    if (k == 0 || 4 * d > k) return false;  // a Schur block that would cost more than the sweeps it saves
    std::vector<char> in_support(static_cast<std::size_t>(p_), 0);
    for (const std::int64_t j : support) in_support[static_cast<std::size_t>(j)] = 1;
    for (std::int64_t j = 0; j < p_; ++j)
      if (!in_support[static_cast<std::size_t>(j)]) outside.push_back(j);
    std::vector<double> b(static_cast<std::size_t>(k)), y(static_cast<std::size_t>(p_), 0.0);
    for (std::int64_t t = 0; t < k; ++t) b[t] = c_[support[t]] - alpha * sign[t];
    detail::add_rows(inverse_.data(), p_, support.data(), b.data(), k, y.data());  // H symmetric: rows = columns
    if (d > 0) {
      std::vector<double> hdd(static_cast<std::size_t>(d * d)), z(static_cast<std::size_t>(d));
      for (std::int64_t i = 0; i < d; ++i) {
        z[i] = -y[outside[i]];
        for (std::int64_t j = 0; j < d; ++j) hdd[i * d + j] = inverse_(outside[i], outside[j]);
      }
      const auto n = static_cast<lapack_int>(d);
      if (LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', n, 1, hdd.data(), n, z.data(), 1) != 0) return false;
      detail::add_rows(inverse_.data(), p_, outside.data(), z.data(), d, y.data());  // y_S -= H_SD H_DD^-1 y_D
    }
    for (std::int64_t t = 0; t < k; ++t)
      if (!(y[support[t]] * sign[t] > 0.0)) y[support[t]] = 0.0;  // a sign flipped: leave that weight out
    // The candidate, its exact gradient, and the full gap; on refusal the coordinate-descent iterate
    // (packed, untouched) carries on.
    std::vector<double> w(static_cast<std::size_t>(p_), 0.0), g(c_, c_ + p_), minus_w(static_cast<std::size_t>(k));
    for (std::int64_t t = 0; t < k; ++t) w[support[t]] = y[support[t]], minus_w[t] = -y[support[t]];
    detail::add_rows(gram_.data, gram_.stride, support.data(), minus_w.data(), k, g.data());
    double wc = 0.0, wg = 0.0, l1 = 0.0, dual_norm = 0.0;
    for (const std::int64_t j : support) wc += w[j] * c_[j], wg += w[j] * g[j], l1 += std::abs(w[j]);
    for (std::int64_t i = 0; i < p_; ++i) dual_norm = std::max(dual_norm, std::abs(g[i]));
    const Gap candidate = duality_gap(wc, wg, l1, dual_norm, alpha);
    if (candidate.gap <= options_.tolerance * candidate.objective) {
      w_.swap(w);
      g_.swap(g);
      return true;
    }
    if (candidate.objective < current)  // support is inside the working set: repack the candidate there
      for (std::size_t a = 0; a < set_.size(); ++a) ws_[a] = w[set_[a]], gs_[a] = g[set_[a]];
    return false;
  }

  // w from the packed copy; g = c - R w recomputed from the gram, which also clears the rounding that
  // the incremental updates of the packed gradient carried.
  void unpack_and_refresh_gradient() {
    for (std::size_t a = 0; a < set_.size(); ++a) w_[set_[a]] = ws_[a];
    std::copy(c_, c_ + p_, g_.begin());
    minus_w_.resize(set_.size());
    for (std::size_t a = 0; a < set_.size(); ++a) minus_w_[a] = -w_[set_[a]];
    detail::add_rows(gram_.data, gram_.stride, set_.data(), minus_w_.data(), static_cast<std::int64_t>(set_.size()),
                     g_.data());
  }

  // The duality gap over the whole problem (dense w_, g_) or over the working set (packed ws_, gs_).
  Gap gap(double alpha, bool whole) const {
    double wc = 0.0, wg = 0.0, l1 = 0.0, dual_norm = 0.0;
    for (std::size_t a = 0; a < set_.size(); ++a) {
      const std::int64_t j = set_[a];
      const double wj = whole ? w_[j] : ws_[a];
      const double gj = whole ? g_[j] : gs_[a];
      wc += wj * c_[j];
      wg += wj * gj;
      l1 += std::abs(wj);
      dual_norm = std::max(dual_norm, std::abs(gj));
    }
    if (whole)
      for (std::int64_t j = 0; j < p_; ++j) dual_norm = std::max(dual_norm, std::abs(g_[j]));
    return duality_gap(wc, wg, l1, dual_norm, alpha);
  }

  MatrixView<const double> gram_;
  const Matrix& inverse_;  // gram_inverse(gram_), possibly empty
  const LassoOptions& options_;
  std::int64_t p_;
  const double* c_ = nullptr;
  std::vector<double> w_, g_;             // all predictors
  std::vector<char> in_set_;
  std::vector<std::int64_t> set_;         // the working set
  std::vector<double> packed_, ws_, gs_;  // gram, w and g on the working set
  std::vector<double> minus_w_;
};

void check_finite_view(MatrixView<const double> m, const char* name) {
  for (std::int64_t r = 0; r < m.rows; ++r)
    for (std::int64_t c = 0; c < m.cols; ++c)
      if (!std::isfinite(m(r, c)))
        throw Error(std::string("lasso_path: ") + name + " (" + std::to_string(r) + ", " + std::to_string(c) +
                    ") is not finite");
}

}  // namespace

std::vector<std::vector<LassoFit>> lasso_path(MatrixView<const double> gram, MatrixView<const double> target_corr,
                                              const LassoOptions& options) {
  if (gram.rows != gram.cols)
    throw Error("lasso_path: the gram matrix is " + std::to_string(gram.rows) + " x " + std::to_string(gram.cols) +
                "; it must be square (predictors x predictors)");
  if (target_corr.cols != gram.rows)
    throw Error("lasso_path: target correlations have " + std::to_string(target_corr.cols) + " columns for " +
                std::to_string(gram.rows) + " predictors");
  if ((gram.rows > 0 && gram.data == nullptr) || (target_corr.rows > 0 && target_corr.cols > 0 && !target_corr.data))
    throw Error("lasso_path: a view without data");
  if (options.alphas.empty()) throw Error("lasso_path: no alpha given");
  for (const double alpha : options.alphas)
    if (!(std::isfinite(alpha) && alpha > 0.0))
      throw Error("lasso_path: alpha " + std::to_string(alpha) +
                  " must be finite and positive (a small one, such as 1e-4, is nearly unpenalised)");
  if (!(options.tolerance > 0.0)) throw Error("lasso_path: the tolerance must be positive");
  if (options.max_sweeps < 1) throw Error("lasso_path: max_sweeps must be at least 1");
  check_finite_view(gram, "gram entry");
  check_finite_view(target_corr, "target correlation");
  for (std::int64_t j = 0; j < gram.rows; ++j)
    if (std::abs(gram(j, j) - 1.0) > 1e-9)
      throw Error("lasso_path: gram diagonal entry " + std::to_string(j) + " is " + std::to_string(gram(j, j)) +
                  "; standardised predictors have a unit diagonal");

  std::vector<std::size_t> order(options.alphas.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return options.alphas[a] > options.alphas[b]; });
  const std::int64_t targets = target_corr.rows;
  std::vector<std::vector<LassoFit>> fits(options.alphas.size(), std::vector<LassoFit>(static_cast<std::size_t>(targets)));
  const int threads = static_cast<int>(std::min<std::int64_t>(thread_count(options.threads), std::max<std::int64_t>(1, targets)));
  const Matrix inverse = gram_inverse(gram);
  // One solver (and its buffers) per worker; worker t takes targets t, t + threads, ...
  parallel_for(threads, threads, [&](std::int64_t worker) {
    TargetSolver solver(gram, inverse, options);
    std::vector<LassoFit*> out(order.size());
    for (std::int64_t b = worker; b < targets; b += threads) {
      for (std::size_t k = 0; k < order.size(); ++k) out[k] = &fits[order[k]][static_cast<std::size_t>(b)];
      solver.solve(target_corr.row(b), order, out);
    }
  });
  return fits;
}

SparsePrediction sparse_prediction(const Study& study, int from_net, int to_net, const LassoOptions& options) {
  detail::check_net(study, from_net, "sparse_prediction");
  detail::check_net(study, to_net, "sparse_prediction");
  if (from_net == to_net) throw Error("sparse_prediction: a net predicting itself (net " + std::to_string(from_net) + ")");
  const std::vector<std::int64_t> predictors = detail::live_units(study, from_net);
  SparsePrediction result;
  result.from_net = from_net;
  result.to_net = to_net;
  result.targets = detail::live_units(study, to_net);
  result.predictors = static_cast<std::int64_t>(predictors.size());
  result.dead_targets = study.nets[static_cast<std::size_t>(to_net)].units - static_cast<std::int64_t>(result.targets.size());
  const Matrix gram = detail::correlation_block(study, from_net, predictors, from_net, predictors);
  const Matrix target_corr = detail::correlation_block(study, to_net, result.targets, from_net, predictors);
  auto fits = lasso_path(gram.view(), target_corr.view(), options);
  for (std::size_t k = 0; k < fits.size(); ++k) {
    SparsePredictionPoint point;
    point.alpha = options.alphas[k];
    point.mean_loss = 0.0;  // with no live target, both means stay 0
    for (LassoFit& fit : fits[k]) {
      for (std::int64_t& j : fit.predictors) j = predictors[static_cast<std::size_t>(j)];
      point.mean_loss += fit.loss;
      point.mean_nonzeros += static_cast<double>(fit.predictors.size());
      point.not_converged += fit.converged ? 0 : 1;
    }
    const double count = static_cast<double>(fits[k].size());
    if (count > 0) {
      point.mean_loss /= count;
      point.mean_nonzeros /= count;
    }
    point.fits = std::move(fits[k]);
    result.path.push_back(std::move(point));
  }
  return result;
}

}  // namespace convergent
