// Lasso in covariance form (coordinate descent and active-set solves on the correlation matrix) and the
// sparse few-to-one prediction of one net's units from another's.
#include "convergent/sparse_prediction.hpp"

#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <numeric>
#include <string>

#include "analysis/live_units.hpp"
#include "convergent/error.hpp"
#include "cpu/parallel.hpp"
#include "cpu/target_clones.hpp"

namespace convergent {
namespace detail {

// One cyclic coordinate-descent sweep over a working set of k predictors: gram r (k x k, unit diagonal,
// rows `stride` apart), weights w and gradient g = c - R w, all packed. Returns how many weights changed
// sign (zero counting as a sign of its own). The update of g is most of a sweep's time; the AVX-512 and
// AVX2 clones do it 8 or 4 doubles at a time (which clone runs, and with it the roundings, depends on
// the machine, never on the thread count).
CONVERGENT_TARGET_CLONES("avx512f", "avx2", "default") std::int64_t lasso_sweep(
    const double* __restrict__ r, std::int64_t stride, double* __restrict__ w, double* __restrict__ g, std::int64_t k,
    double alpha) {
  std::int64_t sign_changes = 0;
  for (std::int64_t a = 0; a < k; ++a) {
    const double old = w[a];
    const double z = g[a] + old;  // the diagonal is 1
    const double updated = z > alpha ? z - alpha : (z < -alpha ? z + alpha : 0.0);
    if (updated == old) continue;
    sign_changes += (updated > 0.0) != (old > 0.0) || (updated < 0.0) != (old < 0.0);
    const double delta = updated - old;
    w[a] = updated;
    const double* row = r + a * stride;
    for (std::int64_t b = 0; b < k; ++b) g[b] -= delta * row[b];
  }
  return sign_changes;
}

// The sequential part of one block of a batched sweep (batch_descent) for a chunk's targets at once:
// coordinate descent over the `width` predictors of the block (gram rows `stride` apart) from the weights
// w and a scratch copy s of the block's gradient, updating s only within the block (the rest, and the
// block itself, gets every change at once by the caller's matrix product). w, s and the weight changes
// written to delta are predictor-major, `lanes` targets to a row (the chunk's, padded with zeros to a
// multiple of 8): each coordinate update is the same arithmetic for every target, so the clones make it
// in vector lanes (target by target, the soft-thresholding's branches cost more than the flops). Adds each
// target's sign changes (zero counting as a sign of its own) to sign_changes[lane].
CONVERGENT_TARGET_CLONES("avx512f", "avx2", "default") void lasso_block_sweep(
    const double* __restrict__ r, std::int64_t stride, double* __restrict__ w, double* __restrict__ s,
    double* __restrict__ delta, std::int64_t width, std::int64_t lanes, double alpha,
    std::int64_t* __restrict__ sign_changes) {
  for (std::int64_t a = 0; a < width; ++a) {
    double* wa = w + a * lanes;
    const double* sa = s + a * lanes;
    double* da = delta + a * lanes;
    for (std::int64_t l = 0; l < lanes; ++l) {
      const double old = wa[l];
      const double z = sa[l] + old;  // the diagonal is 1
      const double updated = std::max(z - alpha, 0.0) + std::min(z + alpha, 0.0);  // soft-thresholding, branch-free
      const std::int64_t before = (old > 0.0) - (old < 0.0), after = (updated > 0.0) - (updated < 0.0);
      sign_changes[l] += before != after;
      da[l] = updated - old;
      wa[l] = updated;
    }
    const double* row = r + a * stride;
    for (std::int64_t b = a + 1; b < width; ++b) {
      const double rb = row[b];
      double* sb = s + b * lanes;
      for (std::int64_t l = 0; l < lanes; ++l) sb[l] -= da[l] * rb;
    }
  }
}

// out += sum over r of coef[r] x row rows[r] of m (cols wide): the gradient refreshes and the Schur
// products of the active-set solves, as contiguous row updates the clones vectorise.
CONVERGENT_TARGET_CLONES("avx512f", "avx2", "default") void add_rows(
    const double* __restrict__ m, std::int64_t cols, const std::int64_t* rows, const double* coef, std::int64_t count,
    double* __restrict__ out) {
  for (std::int64_t r = 0; r < count; ++r) {
    const double c = coef[r];
    if (c == 0.0) continue;
    const double* row = m + rows[r] * cols;
    for (std::int64_t i = 0; i < cols; ++i) out[i] += c * row[i];
  }
}

// The dot product of two n-vectors, in 8 interleaved partial sums the clones keep in vector lanes.
CONVERGENT_TARGET_CLONES("avx512f", "avx2", "default") double dot(const double* __restrict__ a,
                                                                         const double* __restrict__ b, std::int64_t n) {
  double partial[8] = {};
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) partial[l] += a[i + l] * b[i + l];
  double sum = 0.0;
  for (; i < n; ++i) sum += a[i] * b[i];
  for (int l = 0; l < 8; ++l) sum += partial[l];
  return sum;
}

// The sums of the duality gap (duality_gap below) over n predictors: sums[0] = w . c, sums[1] = w . g,
// sums[2] = ||w||_1, sums[3] = max_j |g_j|, in 8 interleaved lanes the clones keep in vector registers
// (it runs after every batched sweep of every target).
CONVERGENT_TARGET_CLONES("avx512f", "avx2", "default") void gap_sums(const double* __restrict__ c,
                                                                     const double* __restrict__ w,
                                                                     const double* __restrict__ g, std::int64_t n,
                                                                     double* sums) {
  double wc[8] = {}, wg[8] = {}, l1[8] = {}, dual[8] = {};
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) {
      wc[l] += w[i + l] * c[i + l];
      wg[l] += w[i + l] * g[i + l];
      l1[l] += std::abs(w[i + l]);
      dual[l] = std::max(dual[l], std::abs(g[i + l]));
    }
  for (; i < n; ++i) {
    wc[0] += w[i] * c[i];
    wg[0] += w[i] * g[i];
    l1[0] += std::abs(w[i]);
    dual[0] = std::max(dual[0], std::abs(g[i]));
  }
  sums[0] = sums[1] = sums[2] = sums[3] = 0.0;
  for (int l = 0; l < 8; ++l) sums[0] += wc[l], sums[1] += wg[l], sums[2] += l1[l], sums[3] = std::max(sums[3], dual[l]);
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

// The duality gap over the whole problem from dense p-vectors c, w and g = c - R w.
Gap dense_gap(const double* c, const double* w, const double* g, std::int64_t p, double alpha) {
  double sums[4];
  detail::gap_sums(c, w, g, p, sums);
  return duality_gap(sums[0], sums[1], sums[2], sums[3], alpha);
}

// The inverse H = R^-1 of the gram matrix, for the Schur-complement solves of dense supports (TargetSolver::
// solve_on, dense_active_set): empty when the gram is not numerically positive definite (Cholesky fails),
// and then every solve factors its own block. Computed once, by whichever worker asks first (on one
// OpenBLAS thread, so the bits are the same whichever): see lasso_path.
class GramInverse {
 public:
  explicit GramInverse(MatrixView<const double> gram) : gram_(gram) {}
  const Matrix& get() {
    std::call_once(computed_, [this] {
      const std::int64_t p = gram_.rows;
      Matrix h(p, p);
      for (std::int64_t i = 0; i < p; ++i) std::copy(gram_.row(i), gram_.row(i) + p, h.data() + i * p);
      const auto n = static_cast<lapack_int>(std::max<std::int64_t>(1, p));
      if (p == 0 || LAPACKE_dpotrf_work(LAPACK_ROW_MAJOR, 'U', n, h.data(), n) != 0 ||
          LAPACKE_dpotri_work(LAPACK_ROW_MAJOR, 'U', n, h.data(), n) != 0)
        return;
      fill_lower_triangle(h);
      inverse_ = std::move(h);
    });
    return inverse_;
  }

 private:
  MatrixView<const double> gram_;
  std::once_flag computed_;
  Matrix inverse_;
};

// Coordinate descent hands over to the active-set solves once at most 1/settled_fraction of the
// working set changed sign in a sweep, after at least min_sweeps_before_solve sweeps.
constexpr std::int64_t settled_fraction = 64, min_sweeps_before_solve = 3;
// Per fit: at most this many active-set phases (each of at most LassoOptions::active_set_solves solves).
constexpr int max_active_set_phases = 3;

// x <- (L L^T)^-1 x for the lower factor L (column-major, leading dimension ld): two triangular solves,
// level 2 (LAPACK's dpotrs goes through dtrsm, which packs the triangle anew for a single right-hand side).
void triangular_solves(const double* l, lapack_int ld, double* x, lapack_int n) {
  if (n == 0) return;
  cblas_dtrsv(CblasColMajor, CblasLower, CblasNoTrans, CblasNonUnit, n, l, ld, x, 1);
  cblas_dtrsv(CblasColMajor, CblasLower, CblasTrans, CblasNonUnit, n, l, ld, x, 1);
}

// The Cholesky factor M_FF = U^T U of a symmetric positive definite p x p matrix M on a set F of its
// indices, carried from solve to solve while F changes a little: indices that leave are deleted (the column
// removed, the Hessenberg rest made triangular again by Givens rotations of neighbouring rows) and new ones
// appended (a triangular solve for the new column), each O(|F|^2); when more than 1/8 of F changes, M is
// another matrix, or an update meets a pivot that is not positive, the block is factored anew (LAPACK).
// U is row-major with rows ld_ apart, which is the column-major lower L = U^T that LAPACK and the
// triangular solves take. Its bits depend on the sets it was brought through, so each fit starts afresh
// (clear) and its bits do not depend on the fits solved before it.
class SetCholesky {
 public:
  // Brings the factor to F = set (kept in the order of order()) of M = m; false when M_FF is not
  // numerically positive definite (the next call then factors anew).
  bool factor(MatrixView<const double> m, const std::vector<std::int64_t>& set) {
    const auto k = static_cast<std::int64_t>(set.size());
    in_.resize(static_cast<std::size_t>(m.rows));
    if (m.data == matrix_) {
      std::fill(in_.begin(), in_.end(), 0);
      for (const std::int64_t j : set) in_[j] = 1;
      std::int64_t kept = 0;
      for (const std::int64_t j : order_) kept += in_[j];
      const std::int64_t changes = static_cast<std::int64_t>(order_.size()) - kept + (k - kept);
      if (8 * changes <= k) {
        bool ok = true;
        for (auto q = static_cast<std::int64_t>(order_.size()) - 1; q >= 0; --q)
          if (!in_[order_[q]]) remove(q);
        for (const std::int64_t j : order_) in_[j] = 2;  // already in the factor
        for (std::int64_t t = 0; t < k && ok; ++t)
          if (in_[set[t]] == 1) ok = append(m, set[t]);
        if (ok) return true;
      }
    }
    order_.clear();
    reserve(k, m.rows);
    matrix_ = m.data;
    order_ = set;
    for (std::int64_t a = 0; a < k; ++a) {
      const double* row = m.row(set[a]);
      double* out = u_.data() + a * ld_;
      for (std::int64_t b = 0; b < k; ++b) out[b] = row[set[b]];
    }
    const bool ok = k == 0 || LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', static_cast<lapack_int>(k), u_.data(),
                                                 static_cast<lapack_int>(ld_)) == 0;
    if (!ok) clear();
    return ok;
  }
  // x <- M_FF^-1 x, x in the order of order().
  void solve(double* x) const {
    triangular_solves(u_.data(), static_cast<lapack_int>(ld_), x, static_cast<lapack_int>(order_.size()));
  }
  const std::vector<std::int64_t>& order() const { return order_; }
  void clear() {  // keeps the memory
    order_.clear();
    matrix_ = nullptr;
    ld_ = 0;
  }

 private:
  // Room for n rows and columns (and a few appends more, up to the p of M), the factor's rows moved to
  // the new spacing, last first (it only grows). The memory is reused from fit to fit.
  void reserve(std::int64_t n, std::int64_t p) {
    if (n <= ld_) return;
    const std::int64_t ld = std::min(p, n + n / 8 + 1);
    if (u_.size() < static_cast<std::size_t>(ld * ld)) u_.resize(static_cast<std::size_t>(ld * ld));
    const auto held = static_cast<std::int64_t>(order_.size());
    for (std::int64_t i = held - 1; i >= 0; --i)
      std::copy_backward(u_.data() + i * ld_, u_.data() + i * ld_ + held, u_.data() + i * ld + held);
    ld_ = ld;
  }

  // Removes position q: M without row and column q = U~^T U~ for U~ = U without column q, upper
  // Hessenberg from row q on; rotations of rows (j, j + 1) for j = q.. clear its subdiagonal.
  void remove(std::int64_t q) {
    const auto n = static_cast<std::int64_t>(order_.size());
    double* u = u_.data();
    for (std::int64_t i = 0; i < n; ++i) std::copy(u + i * ld_ + q + 1, u + i * ld_ + n, u + i * ld_ + q);
    for (std::int64_t j = q; j + 1 < n; ++j) {
      double* top = u + j * ld_;
      double* bottom = u + (j + 1) * ld_;
      const double a = top[j], b = bottom[j], r = std::hypot(a, b), c = a / r, s = b / r;
      top[j] = r;
      bottom[j] = 0.0;
      for (std::int64_t l = j + 1; l + 1 < n; ++l) {
        const double x = top[l], y = bottom[l];
        top[l] = c * x + s * y;
        bottom[l] = c * y - s * x;
      }
    }
    order_.erase(order_.begin() + q);
  }

  // Appends index j: U^T u = M_Fj (forward substitution), pivot sqrt(M_jj - u.u). Returns false when the
  // pivot is not positive (to 1e-10 of M_jj), leaving the factor as it was.
  bool append(MatrixView<const double> m, std::int64_t j) {
    const auto n = static_cast<std::int64_t>(order_.size());
    reserve(n + 1, m.rows);
    double* u = u_.data();
    const double* row = m.row(j);
    column_.resize(static_cast<std::size_t>(n));
    for (std::int64_t t = 0; t < n; ++t) column_[t] = row[order_[t]];
    if (n > 0)
      cblas_dtrsv(CblasColMajor, CblasLower, CblasNoTrans, CblasNonUnit, static_cast<int>(n), u, static_cast<int>(ld_),
                  column_.data(), 1);
    const double pivot = row[j] - detail::dot(column_.data(), column_.data(), n);
    if (!(pivot > 1e-10 * row[j])) return false;
    for (std::int64_t t = 0; t < n; ++t) u[t * ld_ + n] = column_[t];  // column n of U
    u[n * ld_ + n] = std::sqrt(pivot);
    order_.push_back(j);
    return true;
  }

  const double* matrix_ = nullptr;  // the M the factor is of (nullptr: none)
  std::vector<std::int64_t> order_;
  std::vector<double> u_, column_;
  std::int64_t ld_ = 0;
  std::vector<char> in_;
};

// The Schur-complement solve of TargetSolver::solve_on is the cheaper of two exact ways for a support of k
// predictors out of p (d = p - k outside): a d x d Cholesky and products with H = R^-1, against a k x k one.
bool schur_is_cheaper(std::int64_t k, std::int64_t p) {
  const std::int64_t d = p - k;
  const double direct = static_cast<double>(k) * k * k / 3.0;
  const double schur = static_cast<double>(d) * d * d / 3.0 + static_cast<double>(p) * d;
  return schur < direct;
}

// The weights and gradients of a chunk of targets along the path (targets x predictors), carried from one
// alpha to the next, and what the batched descent (batch_descent) left for each target's own solver.
struct PathState {
  // The start of the path for targets with correlations `corr`: w = 0, g = c.
  explicit PathState(MatrixView<const double> corr)
      : w(corr.rows, corr.cols), g(corr.rows, corr.cols), sweeps(static_cast<std::size_t>(corr.rows)),
        settled(sweeps.size()), solves(sweeps.size()), solved(sweeps.size()), exact(sweeps.size(), 1) {
    for (std::int64_t b = 0; b < corr.rows; ++b) std::copy(corr.row(b), corr.row(b) + corr.cols, g.data() + b * corr.cols);
  }
  Matrix w, g;
  std::vector<std::int64_t> sweeps;  // batched sweeps and solves made at the current alpha
  std::vector<char> settled;         // the batched descent ended by the gap or settled signs
  std::vector<std::int64_t> solves;  // lock-step active-set solves at the current alpha (among the sweeps)
  std::vector<char> solved;          // the point is a lock-step solve the full duality gap accepted
  std::vector<char> exact;           // g is exact for w (recomputed from the gram), not the sweeps' drifted one
};

// Targets solved together (batch_descent, then each on its own): fixed chunks of this many (never split by
// thread, so the bits do not depend on the thread count), coordinates in blocks of this many, at most this
// many batched sweeps.
constexpr std::int64_t chunk_targets = 32, block_predictors = 32, max_batch_sweeps = 100;
// Lock-step solves per target and alpha (dense_active_set): most fits are accepted by the third or fourth;
// the few that cycle go on in their own solver, which sweeps between its solves.
constexpr int max_lock_step_solves = 4;
// The lock-step solves' factors kept from round to round: about this many doubles (32 MiB) a worker
// (host/analysis/memory_plan.cpp counts them).
constexpr std::int64_t lock_step_factor_doubles = std::int64_t{1} << 22;

// The buffers of batch_descent and dense_active_set, one set per worker, kept from chunk to chunk
// (allocated and zeroed per call, they were 5% of the path's time at U = 256).
struct ChunkBuffers {
  std::vector<double> batch_w, batch_g, block_w, block_s, delta;  // batch_descent
  std::vector<std::int64_t> rows, sign_changes, members;
  std::vector<double> w, g, b, y, z, best;  // dense_active_set
  std::vector<std::int64_t> open, round, outside;
  std::vector<char> in_a;
  std::vector<SetCholesky> factors;
  SetCholesky spill;
};

// Lock-step active-set solves for the settled targets of a chunk near the dense end of the path, where
// the Schur complement of H = R^-1 is the cheaper exact solve (see TargetSolver::solve_on). Each round takes
// every open target's guess A = {|w + g| > alpha} with signs s from its last iterate, forms y = H b for all
// of them in one product (b = c - alpha s on A, 0 outside), corrects each by its small outside block D,
// w_A = y_A - H_AD H_DD^-1 y_D, w_D = 0, and recomputes every gradient exactly, G = C - W R (one product),
// so the gram and H are read once per round for the chunk instead of once per target and solve. A target
// is accepted by the full duality gap (state.solved); one whose guess repeats, whose support is too small
// for the Schur side, or whose block is not positive definite leaves, and so does every target after
// max_lock_step_solves rounds; each keeps in state its point of lowest objective (with its exact
// gradient), from which its own solver goes on.
void dense_active_set(MatrixView<const double> gram, GramInverse& gram_inverse, MatrixView<const double> target_corr,
                      double alpha, const LassoOptions& options, const std::vector<std::int64_t>& targets,
                      PathState& state, ChunkBuffers& buffers) {
  const std::int64_t p = gram.rows;
  const auto slots = static_cast<std::int64_t>(targets.size());
  std::vector<double>&w = buffers.w, &g = buffers.g, &b = buffers.b, &y = buffers.y, &z = buffers.z, &best = buffers.best;
  std::vector<std::int64_t>&open = buffers.open, &round = buffers.round, &outside = buffers.outside;
  std::vector<char>& in_a = buffers.in_a;  // written at the first round before it is read
  for (std::vector<double>* buffer : {&w, &g, &b, &y}) buffer->resize(static_cast<std::size_t>(slots * p));
  best.resize(static_cast<std::size_t>(slots));
  in_a.resize(w.size());
  open.clear();
  for (std::int64_t i = 0; i < slots; ++i) {
    const std::int64_t t = targets[i];
    std::copy(state.w.data() + t * p, state.w.data() + (t + 1) * p, w.data() + i * p);
    std::copy(state.g.data() + t * p, state.g.data() + (t + 1) * p, g.data() + i * p);
    const Gap start = dense_gap(target_corr.row(t), w.data() + i * p, g.data() + i * p, p, alpha);
    best[i] = start.objective;
    if (start.gap > options.tolerance * start.objective) open.push_back(i);
  }
  // Each target's factor of H_DD carries over from round to round (a new guess moves few predictors in or
  // out of D, and updating the factor costs |D|^2 a move instead of |D|^3 / 3), within a budget: a larger
  // block is factored anew each round in `spill`.
  std::vector<SetCholesky>& factors = buffers.factors;
  SetCholesky& spill = buffers.spill;
  if (factors.size() < static_cast<std::size_t>(slots)) factors.resize(static_cast<std::size_t>(slots));
  for (SetCholesky& factor : factors) factor.clear();
  for (int solve = 0; solve < std::min(max_lock_step_solves, options.active_set_solves) && !open.empty(); ++solve) {
    round.clear();
    for (const std::int64_t i : open) {  // the guesses; b row by row for this round's targets
      const std::int64_t t = targets[i];
      const double* c = target_corr.row(t);
      double* row = b.data() + static_cast<std::int64_t>(round.size()) * p;
      char* mask = in_a.data() + i * p;
      std::int64_t k = 0;
      bool same = solve > 0;
      for (std::int64_t j = 0; j < p; ++j) {
        const double u = w[i * p + j] + g[i * p + j];
        const char sign = std::abs(u) > alpha ? (u > 0.0 ? 1 : 2) : 0;  // 0: outside A
        row[j] = sign == 0 ? 0.0 : c[j] - (sign == 1 ? alpha : -alpha);
        same = same && sign == mask[j];
        mask[j] = sign;
        k += sign != 0;
      }
      if (same || !schur_is_cheaper(k, p) || state.sweeps[t] >= options.max_sweeps - 1) continue;  // leaves
      round.push_back(i);
    }
    const auto m = static_cast<std::int64_t>(round.size());
    if (m == 0) break;
    const Matrix& inverse = gram_inverse.get();
    if (inverse.rows() == 0) break;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(p), static_cast<int>(p),
                1.0, b.data(), static_cast<int>(p), inverse.data(), static_cast<int>(p), 0.0, y.data(),
                static_cast<int>(p));  // H symmetric: B H = B H^T
    open.clear();
    std::int64_t solved_rows = 0;  // rows of b (reused for w) and y (reused for g) that hold a solve
    for (std::int64_t r = 0; r < m; ++r) {
      const std::int64_t i = round[r], t = targets[i];
      const char* mask = in_a.data() + i * p;
      double* cand = y.data() + r * p;
      outside.clear();
      for (std::int64_t j = 0; j < p; ++j)
        if (!mask[j]) outside.push_back(j);
      const auto d = static_cast<std::int64_t>(outside.size());
      ++state.solves[t], ++state.sweeps[t];
      const bool kept = (d + d / 8 + 1) * (d + d / 8 + 1) * chunk_targets <= lock_step_factor_doubles;
      SetCholesky& factor = kept ? factors[i] : spill;
      if (!kept) spill.clear();
      if (!factor.factor(inverse.view(), outside)) continue;  // leaves
      const std::vector<std::int64_t>& order = factor.order();
      z.resize(static_cast<std::size_t>(d));
      for (std::int64_t a = 0; a < d; ++a) z[a] = -cand[order[a]];
      factor.solve(z.data());
      detail::add_rows(inverse.data(), p, order.data(), z.data(), d, cand);
      for (const std::int64_t j : outside) cand[j] = 0.0;
      std::copy(cand, cand + p, b.data() + solved_rows * p);
      round[solved_rows++] = i;
    }
    for (std::int64_t r = 0; r < solved_rows; ++r)
      std::copy(target_corr.row(targets[round[r]]), target_corr.row(targets[round[r]]) + p, y.data() + r * p);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(solved_rows), static_cast<int>(p),
                static_cast<int>(p), -1.0, b.data(), static_cast<int>(p), gram.data, static_cast<int>(gram.stride), 1.0,
                y.data(), static_cast<int>(p));  // G = C - W R
    for (std::int64_t r = 0; r < solved_rows; ++r) {
      const std::int64_t i = round[r], t = targets[i];
      std::copy(b.data() + r * p, b.data() + (r + 1) * p, w.data() + i * p);
      std::copy(y.data() + r * p, y.data() + (r + 1) * p, g.data() + i * p);
      const Gap gap = dense_gap(target_corr.row(t), w.data() + i * p, g.data() + i * p, p, alpha);
      const bool accepted = gap.gap <= options.tolerance * gap.objective;
      if (accepted || gap.objective < best[i]) {
        best[i] = gap.objective;
        std::copy(w.data() + i * p, w.data() + (i + 1) * p, state.w.data() + t * p);
        std::copy(g.data() + i * p, g.data() + (i + 1) * p, state.g.data() + t * p);
        state.exact[t] = 1;
      }
      if (accepted) state.solved[t] = 1;
      else open.push_back(i);
    }
  }
}

// Coordinate descent over every predictor for a chunk of targets (the rows of target_corr) at once, for the
// targets whose working set (TargetSolver::fit) is at least half the predictors (near the dense end of the
// path it is nearly all of them, and one target's sweep streams the whole gram). The same cyclic sweep as
// TargetSolver's, blocked: within a block of 32 predictors each target updates its weights in order
// (lasso_block_sweep), then all the targets' gradients take the block's weight changes in one matrix
// product, -= delta (targets x 32) R (32 x p), so the gram is read once per block for the whole chunk
// and the work runs at level-3 BLAS speed. A target leaves once its duality gap (from this drifting
// gradient) is below half the tolerance, or its signs settle as TargetSolver::sweep_working_set judges
// them; its gradient is then recomputed exactly, g = c - W R, for every member, again as one product, the
// settled targets whose supports are near dense take their first active-set solves in lock step
// (dense_active_set), and each target's own solver goes on from there (active-set phases, the full gap).
void batch_descent(MatrixView<const double> gram, GramInverse& inverse, MatrixView<const double> target_corr,
                   double alpha, const LassoOptions& options, PathState& state, ChunkBuffers& buffers) {
  const std::int64_t p = gram.rows;
  std::vector<std::int64_t>& members = buffers.members;
  members.clear();
  for (std::int64_t t = 0; t < target_corr.rows; ++t) {
    state.sweeps[t] = 0, state.settled[t] = 0, state.solves[t] = 0, state.solved[t] = 0;
    const double* w = state.w.data() + t * p;
    const double* g = state.g.data() + t * p;
    std::int64_t kept = 0;
    for (std::int64_t j = 0; j < p; ++j) kept += w[j] != 0.0 || std::abs(g[j]) > alpha;
    if (2 * kept >= p) members.push_back(t);
  }
  const std::int64_t budget = std::min(max_batch_sweeps, options.max_sweeps - 1);
  if (members.empty() || budget < 1) return;
  auto n = static_cast<std::int64_t>(members.size());
  std::vector<std::int64_t>& rows = buffers.rows;  // the target in each packed row
  rows = members;
  const auto most_lanes = static_cast<std::size_t>((n + 7) / 8 * 8);
  std::vector<double>&w = buffers.batch_w, &g = buffers.batch_g, &block_w = buffers.block_w, &block_s = buffers.block_s,
                      &delta = buffers.delta;
  w.resize(static_cast<std::size_t>(n * p));
  g.resize(w.size());
  for (std::vector<double>* buffer : {&block_w, &block_s, &delta}) buffer->resize(block_predictors * most_lanes);
  std::vector<std::int64_t>& sign_changes = buffers.sign_changes;
  sign_changes.resize(most_lanes);
  for (std::int64_t i = 0; i < n; ++i) {
    std::copy(state.w.data() + rows[i] * p, state.w.data() + (rows[i] + 1) * p, w.data() + i * p);
    std::copy(state.g.data() + rows[i] * p, state.g.data() + (rows[i] + 1) * p, g.data() + i * p);
  }
  for (std::int64_t sweep = 1; n > 0 && sweep <= budget; ++sweep) {
    const std::int64_t lanes = (n + 7) / 8 * 8;
    std::fill(sign_changes.begin(), sign_changes.end(), 0);
    std::fill(block_w.begin(), block_w.end(), 0.0);  // the padding lanes stay zero
    std::fill(block_s.begin(), block_s.end(), 0.0);
    for (std::int64_t a0 = 0; a0 < p; a0 += block_predictors) {
      const std::int64_t width = std::min(block_predictors, p - a0);
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t a = 0; a < width; ++a)
          block_w[a * lanes + i] = w[i * p + a0 + a], block_s[a * lanes + i] = g[i * p + a0 + a];
      detail::lasso_block_sweep(gram.row(a0) + a0, gram.stride, block_w.data(), block_s.data(), delta.data(), width,
                                lanes, alpha, sign_changes.data());
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t a = 0; a < width; ++a) w[i * p + a0 + a] = block_w[a * lanes + i];
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(n), static_cast<int>(p),
                  static_cast<int>(width), -1.0, delta.data(), static_cast<int>(lanes), gram.row(a0),
                  static_cast<int>(gram.stride), 1.0, g.data(), static_cast<int>(p));  // G -= Delta^T R_block
    }
    for (std::int64_t i = n - 1; i >= 0; --i) {  // leavers: the last packed row (already judged) takes their place
      const Gap gap = dense_gap(target_corr.row(rows[i]), w.data() + i * p, g.data() + i * p, p, alpha);
      const bool settled = gap.gap <= 0.5 * options.tolerance * gap.objective ||
                           (options.active_set_solves > 0 && sweep >= min_sweeps_before_solve &&
                            sign_changes[i] <= p / settled_fraction);
      if (!settled && sweep < budget) continue;
      std::copy(w.data() + i * p, w.data() + (i + 1) * p, state.w.data() + rows[i] * p);
      std::copy(g.data() + i * p, g.data() + (i + 1) * p, state.g.data() + rows[i] * p);  // drifted
      state.sweeps[rows[i]] = sweep, state.settled[rows[i]] = settled, state.exact[rows[i]] = 0;

      --n;
      if (i != n) {
        std::copy(w.data() + n * p, w.data() + (n + 1) * p, w.data() + i * p);
        std::copy(g.data() + n * p, g.data() + (n + 1) * p, g.data() + i * p);
        rows[i] = rows[n], sign_changes[i] = sign_changes[n];
      }
    }
  }
  // The settled targets' lock-step solves guess their supports from the sweeps' own gradients (the rounding
  // the incremental updates left does not move a guess) and recompute every gradient after a solve; so
  // the exact gradient, g = c - W R in one product, is needed only for the points no solve replaced.
  if (options.active_set_solves > 0) {
    rows.clear();
    for (const std::int64_t t : members)
      if (state.settled[t]) rows.push_back(t);
    dense_active_set(gram, inverse, target_corr, alpha, options, rows, state, buffers);
  }
  members.erase(std::remove_if(members.begin(), members.end(), [&](std::int64_t t) { return state.exact[t] != 0; }),
                members.end());
  n = static_cast<std::int64_t>(members.size());
  for (std::int64_t i = 0; i < n; ++i) {
    std::copy(state.w.data() + members[i] * p, state.w.data() + (members[i] + 1) * p, w.data() + i * p);
    std::copy(target_corr.row(members[i]), target_corr.row(members[i]) + p, g.data() + i * p);
  }
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(n), static_cast<int>(p), static_cast<int>(p),
              -1.0, w.data(), static_cast<int>(p), gram.data, static_cast<int>(gram.stride), 1.0, g.data(),
              static_cast<int>(p));  // R symmetric: W R = W R^T
  for (std::int64_t i = 0; i < n; ++i) {
    std::copy(g.data() + i * p, g.data() + (i + 1) * p, state.g.data() + members[i] * p);
    state.exact[members[i]] = 1;
  }
}

// One target's path. Dense w and g = c - R w over all predictors. Coordinate descent runs on the gram
// restricted to the working set (a packed copy unless the set is every predictor; a sweep costs
// |working set|^2, not p |working set|); once its signs settle, an active-set phase solves the optimality
// conditions exactly on a guessed support (active_set_phase). Every answer is accepted only by the full
// problem's duality gap, from a gradient recomputed from the gram, so the exact solves change the speed,
// never the answer's guarantee.
class TargetSolver {
 public:
  TargetSolver(MatrixView<const double> gram, GramInverse& inverse, const LassoOptions& options)
      : gram_(gram), inverse_(inverse), options_(options), p_(gram.rows), w_(static_cast<std::size_t>(p_)),
        g_(w_.size()), in_set_(w_.size()) {}

  // The fit of target `target` at alpha, from the state the previous alpha and batch_descent left (its
  // row of state.w and state.g, updated).
  LassoFit solve(const double* c, double alpha, std::int64_t target, PathState& state) {
    c_ = c;
    factor_.clear();  // each fit starts from a fresh factor: its bits do not depend on the order
    double* w = state.w.data() + target * p_;
    double* g = state.g.data() + target * p_;
    std::copy(w, w + p_, w_.begin());
    std::copy(g, g + p_, g_.begin());
    LassoFit result = fit(alpha, state.sweeps[target], state.settled[target] != 0);
    result.solves += state.solves[target];
    result.from_solve = result.from_solve || state.solved[target] != 0;
    std::copy(w_.begin(), w_.end(), w);
    std::copy(g_.begin(), g_.end(), g);
    return result;
  }

 private:
  // `sweeps` made by batch_descent before; when `settled`, w and g are its settled point (g exact), and
  // the fit starts with the full gap and an active-set phase instead of sweeping first.
  LassoFit fit(double alpha, std::int64_t sweeps, bool settled) {
    // Working set: the current non-zeros and the predictors that violate their KKT condition there
    // (|g_j| > alpha); the KKT check below adds any that come to violate it. The sequential strong rule
    // (|g_j| > 2 alpha - alpha_previous) keeps every predictor at the first alpha and wherever the path
    // more than halves alpha, which sent the sparse end (11 non-zeros of 256 at alpha 0.1) through dense
    // batched sweeps: a tenth of the path's time at U = 256.
    // A settled point the gap already accepts (most often a lock-step solve's) needs none.
    Gap full = dense_gap(w_, g_, alpha);  // g is exact at a settled point
    const bool accepted = settled && full.gap <= options_.tolerance * full.objective;
    set_.clear();
    std::fill(in_set_.begin(), in_set_.end(), 0);
    if (!accepted)
      for (std::int64_t j = 0; j < p_; ++j)
        if (w_[j] != 0.0 || std::abs(g_[j]) > alpha) add(j);
    LassoFit result;
    result.sweeps = sweeps;
    double target = 0.5 * options_.tolerance;  // the working-set gap aimed at, below the full one
    int phases = 0;
    for (bool sweep = !settled;; sweep = true) {
      const bool hand_over = phases < max_active_set_phases && options_.active_set_solves > 0;
      if (sweep) {
        pack();
        result.sweeps += sweep_working_set(alpha, target, options_.max_sweeps - result.sweeps, hand_over);
        unpack_and_refresh_gradient();
        full = dense_gap(w_, g_, alpha);
      }
      if (full.gap <= options_.tolerance * full.objective) break;
      if (hand_over && result.sweeps < options_.max_sweeps) {
        ++phases;
        const bool solved = active_set_phase(alpha, &full, &result);
        for (std::int64_t j = 0; j < p_; ++j)  // the support the phase left may reach outside the set
          if (w_[j] != 0.0 && !in_set_[j]) add(j);
        if ((result.from_solve = solved)) break;
      }
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
    // Strongest first, ties to the lower index: one sort of 128-bit keys, the complement of |w_j|'s bits
    // (which order non-negative doubles as unsigned integers) above j, so each step is one comparison
    // (a stable sort through indices into w_ was a tenth of the path's time at U = 256, a sort of
    // (-|w|, j) pairs still 8%).
    ranked_.clear();
    for (std::int64_t j = 0; j < p_; ++j)
      if (w_[j] != 0.0) {
        const double strength = std::abs(w_[j]);
        std::uint64_t bits;
        std::memcpy(&bits, &strength, sizeof bits);
        ranked_.push_back(static_cast<unsigned __int128>(~bits) << 64 | static_cast<std::uint64_t>(j));
      }
    std::sort(ranked_.begin(), ranked_.end());
    result.predictors.reserve(ranked_.size());
    result.weights.reserve(ranked_.size());
    for (const unsigned __int128 key : ranked_) {
      const auto j = static_cast<std::int64_t>(static_cast<std::uint64_t>(key));
      result.predictors.push_back(j);
      result.weights.push_back(w_[j]);
    }
    return result;
  }

  void add(std::int64_t j) {
    in_set_[j] = 1;
    set_.push_back(j);
  }

  // The working set's w and g, packed, and its gram block: the gram itself when the set is every
  // predictor, else a packed copy (kept while the set is unchanged: it does not depend on the target).
  void pack() {
    std::sort(set_.begin(), set_.end());  // cyclic order over ascending predictors, as scikit-learn
    const std::size_t k = set_.size();
    ws_.resize(k);
    gs_.resize(k);
    for (std::size_t a = 0; a < k; ++a) ws_[a] = w_[set_[a]], gs_[a] = g_[set_[a]];
    if (static_cast<std::int64_t>(k) == p_) {
      block_rows_ = gram_.data, block_stride_ = gram_.stride;
      return;
    }
    block_stride_ = static_cast<std::int64_t>(k);
    if (set_ != packed_set_) {
      packed_.resize(k * k);
      for (std::size_t a = 0; a < k; ++a) {
        const double* row = gram_.row(set_[a]);
        for (std::size_t b = 0; b < k; ++b) packed_[a * k + b] = row[set_[b]];
      }
      packed_set_ = set_;
    }
    block_rows_ = packed_.data();
  }

  // Cyclic coordinate descent on the working set until its own duality gap is below target x objective,
  // or the sweep budget is spent, or (with hand_over) the signs have settled. Returns the sweeps made.
  std::int64_t sweep_working_set(double alpha, double target, std::int64_t budget, bool hand_over) {
    const auto k = static_cast<std::int64_t>(set_.size());
    std::int64_t sweeps = 0;
    while (sweeps < budget) {
      ++sweeps;
      const std::int64_t sign_changes =
          detail::lasso_sweep(block_rows_, block_stride_, ws_.data(), gs_.data(), k, alpha);
      const Gap working = packed_gap(alpha);
      if (working.gap <= target * working.objective) break;
      if (hand_over && sweeps >= min_sweeps_before_solve && sign_changes <= k / settled_fraction) break;
    }
    return sweeps;
  }

  // Active set (primal-dual active set, Ito and Kunisch 2008; Fan, Jiao and Lu 2014): with the guess
  // A = {j : |w_j + g_j| > alpha} and signs s = sign(w_j + g_j), the lasso's optimality conditions on A
  // read R_AA w_A = c_A - alpha s_A with w = 0 elsewhere. That system is solved exactly (solve_on), which
  // makes g_A = alpha s_A, so only g_D = c_D - R_DA w_A (D: outside A) is computed for the next guess.
  // A guess that reproduces itself satisfies the KKT conditions; from a coordinate-descent iterate whose
  // signs have settled that usually takes two to four solves. A candidate whose gap (from that g) passes
  // is checked with g recomputed over the whole gram, and returns true when the duality gap accepts it
  // (w_, g_, *point then hold it). Otherwise w_ and g_ hold the point of lowest objective seen (the
  // phase's start or a solve), so descent goes on from there and still converges. Each solve counts in
  // fit->solves and, as a sweep, in fit->sweeps.
  bool active_set_phase(double alpha, Gap* point, LassoFit* fit) {
    double best = point->objective;
    bool moved = false;  // best_w_ holds a solve better than the start
    const std::vector<double>* w = &w_;
    const std::vector<double>* g = &g_;
    active_.clear(), sign_.clear();
    y_valid_ = false;
    for (int solve = 0; solve < options_.active_set_solves && fit->sweeps < options_.max_sweeps; ++solve) {
      guess_.clear(), guess_sign_.clear();
      for (std::int64_t j = 0; j < p_; ++j) {
        const double u = (*w)[j] + (*g)[j];
        if (std::abs(u) > alpha) guess_.push_back(j), guess_sign_.push_back(u > 0.0 ? 1.0 : -1.0);
      }
      if (guess_ == active_ && guess_sign_ == sign_) break;  // a fixed point the gap refused: rounding
      active_.swap(guess_), sign_.swap(guess_sign_);
      ++fit->sweeps, ++fit->solves;
      bool exact = false;
      if (!solve_on(alpha, &exact)) break;
      // g on the active set as the solve makes it (alpha s_A) unless solve_on computed it, and the gap.
      const auto k = static_cast<std::int64_t>(active_.size());
      if (!exact)
        for (std::int64_t t = 0; t < k; ++t) cand_g_[active_[t]] = alpha * sign_[t];
      const Gap nominal = dense_gap(cand_w_, cand_g_, alpha);
      if (nominal.gap <= options_.tolerance * nominal.objective) {
        if (!exact) exact_gradient(cand_w_, active_, cand_g_);
        const Gap candidate = dense_gap(cand_w_, cand_g_, alpha);
        if (candidate.gap <= options_.tolerance * candidate.objective) {
          w_.swap(cand_w_), g_.swap(cand_g_);
          *point = candidate;
          return true;
        }
      }
      if (nominal.objective < best) best_w_ = cand_w_, best = nominal.objective, moved = true;
      w = &cand_w_, g = &cand_g_;
    }
    if (moved) {  // go on from the best solve, with its gradient recomputed
      w_.swap(best_w_);
      outside_.clear();
      for (std::int64_t j = 0; j < p_; ++j)
        if (w_[j] != 0.0) outside_.push_back(j);
      exact_gradient(w_, outside_, g_);
      *point = dense_gap(w_, g_, alpha);
    }
    return false;
  }

  // g = c - R w for w non-zero only on `support`, from the gram.
  void exact_gradient(const std::vector<double>& w, const std::vector<std::int64_t>& support, std::vector<double>& g) {
    g.assign(c_, c_ + p_);
    minus_w_.resize(support.size());
    for (std::size_t t = 0; t < support.size(); ++t) minus_w_[t] = -w[support[t]];
    detail::add_rows(gram_.data, gram_.stride, support.data(), minus_w_.data(), static_cast<std::int64_t>(support.size()),
                     g.data());
  }

  // cand_w_ = the solution of R_AA w_A = b_A = c_A - alpha s_A on active_ (zero elsewhere), and cand_g_ =
  // c - R w outside A (inside A it is left for the caller). Of two exact ways, the cheaper: a Cholesky of
  // R_AA (|A|^3 / 3), or for dense supports, with H = R^-1 and D the predictors outside A,
  // R_AA^-1 = H_AA - H_AD H_DD^-1 H_DA (Schur complement), so w_A = y_A - H_AD H_DD^-1 y_D with
  // y = H_{:,A} b_A: a |D| x |D| Cholesky and products with H. Within a phase y is updated by the
  // entries of b that changed since the last solve, so a solve after a small change of the guess costs
  // p (changes + |D|) besides the Cholesky. Returns false when the block is not numerically positive
  // definite.
  bool solve_on(double alpha, bool* exact) {
    const auto k = static_cast<std::int64_t>(active_.size()), d = p_ - k;
    outside_.clear();
    b_.assign(static_cast<std::size_t>(p_), 0.0);
    for (std::int64_t j = 0, t = 0; j < p_; ++j)
      if (t < k && active_[t] == j) b_[j] = c_[j] - alpha * sign_[t], ++t;
      else outside_.push_back(j);
    cand_w_.assign(static_cast<std::size_t>(p_), 0.0);
    if (schur_is_cheaper(k, p_) && inverse_.get().rows() > 0) {
      const Matrix& inverse = inverse_.get();
      changed_.clear(), delta_.clear();
      if (!y_valid_) {
        y_.assign(static_cast<std::size_t>(p_), 0.0);
        y_b_.assign(static_cast<std::size_t>(p_), 0.0);
      }
      for (std::int64_t j = 0; j < p_; ++j)
        if (b_[j] != y_b_[j]) changed_.push_back(j), delta_.push_back(b_[j] - y_b_[j]);
      detail::add_rows(inverse.data(), p_, changed_.data(), delta_.data(), static_cast<std::int64_t>(changed_.size()),
                       y_.data());  // H symmetric: rows = columns
      y_b_ = b_;
      y_valid_ = true;
      cand_w_ = y_;
      if (d > 0) {
        if (!factor_.factor(inverse.view(), outside_)) return false;
        const std::vector<std::int64_t>& order = factor_.order();
        rhs_.resize(static_cast<std::size_t>(d));
        for (std::int64_t t = 0; t < d; ++t) rhs_[t] = -y_[order[t]];
        factor_.solve(rhs_.data());
        detail::add_rows(inverse.data(), p_, order.data(), rhs_.data(), d, cand_w_.data());  // y - H_AD H_DD^-1 y_D
      }
      for (const std::int64_t j : outside_) cand_w_[j] = 0.0;
    } else {
      if (!factor_.factor(gram_, active_)) return false;
      const std::vector<std::int64_t>& order = factor_.order();
      rhs_.resize(static_cast<std::size_t>(k));
      for (std::int64_t t = 0; t < k; ++t) rhs_[t] = b_[order[t]];
      factor_.solve(rhs_.data());
      for (std::int64_t t = 0; t < k; ++t) cand_w_[order[t]] = rhs_[t];
    }
    // g_D = c_D - R_DA w_A: by rows of the gram outside A (w is zero outside A), or, when A is the
    // smaller side, all of g from the rows of A (*exact: g_A too comes from the gram).
    *exact = k <= d;
    if (*exact) {
      exact_gradient(cand_w_, active_, cand_g_);
      return true;
    }
    cand_g_.resize(static_cast<std::size_t>(p_));
    for (const std::int64_t j : outside_) cand_g_[j] = c_[j] - detail::dot(gram_.row(j), cand_w_.data(), p_);
    return true;
  }

  // w from the packed copy; g = c - R w recomputed from the gram, which also clears the rounding that
  // the incremental updates of the packed gradient carried.
  void unpack_and_refresh_gradient() {
    for (std::size_t a = 0; a < set_.size(); ++a) w_[set_[a]] = ws_[a];
    exact_gradient(w_, set_, g_);
  }

  // The duality gap over the whole problem from a dense w and its gradient g.
  Gap dense_gap(const std::vector<double>& w, const std::vector<double>& g, double alpha) const {
    return convergent::dense_gap(c_, w.data(), g.data(), p_, alpha);
  }

  // The duality gap of the working-set problem (packed ws_, gs_).
  Gap packed_gap(double alpha) const {
    double wc = 0.0, wg = 0.0, l1 = 0.0, dual_norm = 0.0;
    for (std::size_t a = 0; a < set_.size(); ++a) {
      wc += ws_[a] * c_[set_[a]];
      wg += ws_[a] * gs_[a];
      l1 += std::abs(ws_[a]);
      dual_norm = std::max(dual_norm, std::abs(gs_[a]));
    }
    return duality_gap(wc, wg, l1, dual_norm, alpha);
  }

  MatrixView<const double> gram_;
  GramInverse& inverse_;  // H = R^-1, possibly empty
  const LassoOptions& options_;
  std::int64_t p_;
  const double* c_ = nullptr;
  std::vector<double> w_, g_;             // all predictors
  std::vector<char> in_set_;
  std::vector<std::int64_t> set_;         // the working set
  std::vector<double> ws_, gs_;           // w and g on the working set
  const double* block_rows_ = nullptr;    // its gram block, rows block_stride_ apart
  std::int64_t block_stride_ = 0;
  std::vector<std::int64_t> packed_set_;  // the set packed_ holds the gram block of
  std::vector<double> packed_, minus_w_;
  // The active-set phase: the guess and its signs, the candidate and its gradient, the best point, the
  // Schur products y = H b kept within a phase, and the solves' scratch.
  std::vector<std::int64_t> active_, guess_, outside_, changed_;
  std::vector<double> sign_, guess_sign_, cand_w_, cand_g_, best_w_, b_, y_, y_b_, delta_, rhs_;
  SetCholesky factor_;  // of R_AA or, for the Schur complement, H_DD
  bool y_valid_ = false;
  std::vector<unsigned __int128> ranked_;  // the fit's non-zeros, ranked (fit)
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
  if (options.active_set_solves < 0) throw Error("lasso_path: active_set_solves must be 0 or more");
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
  // OpenBLAS single-threaded while the solvers' own threads call LAPACK: its threads inside ours only
  // contend, and one thread makes each factorisation's bits independent of the thread count.
  const OneOpenBlasThread one_openblas_thread;
  GramInverse inverse(gram);
  const std::int64_t p = gram.rows;
  // Each chunk of targets runs its whole path at once (batched descent, then each target's own solver, alpha
  // by alpha): chunks are independent, so they are handed out to the workers as they come free, and a
  // worker held up by the machine's other load holds up no barrier.
  const std::int64_t chunks = (targets + chunk_targets - 1) / chunk_targets;
  std::atomic<std::int64_t> next_chunk{0};
  parallel_for(threads, threads, [&](std::int64_t worker) {
    // With several workers, the first computes the inverse before its chunks while the others start theirs
    // (computed before the workers, it left the other cores idle; computed on first need, every worker
    // asked for it at once, about 1 ms into the path at U = 256, and all but one waited). With one it is
    // computed only if a Schur-complement solve asks.
    if (worker == 0 && threads > 1) inverse.get();
    TargetSolver solver(gram, inverse, options);  // one per worker, with its buffers
    ChunkBuffers buffers;
    for (std::int64_t chunk = next_chunk++; chunk < chunks; chunk = next_chunk++) {
      const std::int64_t first = chunk * chunk_targets;
      const MatrixView<const double> corr{target_corr.row(first), std::min(chunk_targets, targets - first), p,
                                          target_corr.stride};
      PathState state(corr);
      for (const std::size_t k : order) {
        const double alpha = options.alphas[k];
        batch_descent(gram, inverse, corr, alpha, options, state, buffers);
        for (std::int64_t b = 0; b < corr.rows; ++b)
          fits[k][static_cast<std::size_t>(first + b)] = solver.solve(corr.row(b), alpha, b, state);
      }
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
