// Exact linear assignment: Jonker-Volgenant shortest augmenting paths on a dense row-major cost matrix.
// The hot loops (one pass over a cost row) have an AVX2 version chosen at run time and a portable one;
// both do the same floating-point operations in the same order, so every result is bit-identical.
#include "convergent/lap.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CONVERGENT_LAP_X86 1
#endif

#include "convergent/error.hpp"

namespace convergent {
namespace {

using Index = std::int64_t;
constexpr double kInf = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------------------------------
// Row kernels. A cost row is c[j] = sign * w[j]; the sign is a template argument so that maximising
// costs nothing. Reduced cost of (i, j) is c[j] - v[j]; every kernel computes exactly (c[j] - v[j]) + h
// (or c[j] - v[j]) so the portable and AVX2 versions agree to the last bit.

template <bool Negate>
inline double cost_of(double w) {
  return Negate ? -w : w;
}

struct RowKernels {
  // d[j] = c[j] - v[j], pred[j] = row; returns min_j d[j].
  double (*init_row)(const double* w, const double* v, double* d, Index* pred, Index row, Index begin,
                     Index end);
  // For columns with d[j] finite or not: r = (c[j] - vv[j]) + h; if r < d[j] then d[j] = r, pred[j] = row.
  // Columns already settled carry vv[j] = -inf and d[j] = +inf, so they never change. Returns min_j d[j].
  double (*scan_row)(const double* w, const double* vv, double* d, Index* pred, Index row, double h,
                     Index begin, Index end);
  // The smallest and second smallest (as a multiset: equal when tied) of c[j] - v[j].
  void (*row_min2)(const double* w, const double* v, Index n, double* u1, double* u2);
  // colmin[j] = min(colmin[j], c[j]) with argmin[j] = row on strict improvement.
  void (*column_min)(const double* w, double* colmin, Index* argmin, Index row, Index n);
};

template <bool Negate>
double init_row_portable(const double* w, const double* v, double* d, Index* pred, Index row, Index begin,
                         Index end) {
  double m = kInf;
  for (Index j = begin; j < end; ++j) {
    const double r = cost_of<Negate>(w[j]) - v[j];
    d[j] = r;
    pred[j] = row;
    m = r < m ? r : m;
  }
  return m;
}

template <bool Negate>
double scan_row_portable(const double* w, const double* vv, double* d, Index* pred, Index row, double h,
                         Index begin, Index end) {
  double m = kInf;
  for (Index j = begin; j < end; ++j) {
    const double r = (cost_of<Negate>(w[j]) - vv[j]) + h;
    if (r < d[j]) {
      d[j] = r;
      pred[j] = row;
    }
    m = d[j] < m ? d[j] : m;
  }
  return m;
}

template <bool Negate>
void row_min2_portable(const double* w, const double* v, Index n, double* u1, double* u2) {
  double a = kInf;
  double b = kInf;
  for (Index j = 0; j < n; ++j) {
    const double r = cost_of<Negate>(w[j]) - v[j];
    b = std::min(std::max(a, r), b);
    a = std::min(a, r);
  }
  *u1 = a;
  *u2 = b;
}

template <bool Negate>
void column_min_portable(const double* w, double* colmin, Index* argmin, Index row, Index n) {
  for (Index j = 0; j < n; ++j) {
    const double c = cost_of<Negate>(w[j]);
    if (c < colmin[j]) {
      colmin[j] = c;
      argmin[j] = row;
    }
  }
}

#ifdef CONVERGENT_LAP_X86

template <bool Negate>
__attribute__((target("avx2"))) inline __m256d load_cost(const double* w) {
  const __m256d x = _mm256_loadu_pd(w);
  return Negate ? _mm256_xor_pd(x, _mm256_set1_pd(-0.0)) : x;
}

__attribute__((target("avx2"))) inline double hmin(__m256d x) {
  const __m128d lo = _mm256_castpd256_pd128(x);
  const __m128d hi = _mm256_extractf128_pd(x, 1);
  const __m128d m = _mm_min_pd(lo, hi);
  return std::min(_mm_cvtsd_f64(m), _mm_cvtsd_f64(_mm_unpackhi_pd(m, m)));
}

template <bool Negate>
__attribute__((target("avx2"))) double init_row_avx2(const double* w, const double* v, double* d,
                                                     Index* pred, Index row, Index begin, Index end) {
  __m256d m4 = _mm256_set1_pd(kInf);
  const __m256i rv = _mm256_set1_epi64x(row);
  Index j = begin;
  for (; j + 4 <= end; j += 4) {
    const __m256d r = _mm256_sub_pd(load_cost<Negate>(w + j), _mm256_loadu_pd(v + j));
    _mm256_storeu_pd(d + j, r);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(pred + j), rv);
    m4 = _mm256_min_pd(m4, r);
  }
  return std::min(hmin(m4), init_row_portable<Negate>(w, v, d, pred, row, j, end));  // the last < 4 columns
}

template <bool Negate>
__attribute__((target("avx2"))) double scan_row_avx2(const double* w, const double* vv, double* d,
                                                     Index* pred, Index row, double h, Index begin,
                                                     Index end) {
  __m256d m4 = _mm256_set1_pd(kInf);
  const __m256d h4 = _mm256_set1_pd(h);
  const __m256d rv = _mm256_castsi256_pd(_mm256_set1_epi64x(row));
  Index j = begin;
  for (; j + 4 <= end; j += 4) {
    const __m256d r = _mm256_add_pd(_mm256_sub_pd(load_cost<Negate>(w + j), _mm256_loadu_pd(vv + j)), h4);
    const __m256d dj = _mm256_loadu_pd(d + j);
    const __m256d better = _mm256_cmp_pd(r, dj, _CMP_LT_OQ);
    const __m256d nd = _mm256_blendv_pd(dj, r, better);
    if (_mm256_movemask_pd(better) != 0) {
      _mm256_storeu_pd(d + j, nd);
      double* p = reinterpret_cast<double*>(pred + j);
      _mm256_storeu_pd(p, _mm256_blendv_pd(_mm256_loadu_pd(p), rv, better));
    }
    m4 = _mm256_min_pd(m4, nd);
  }
  return std::min(hmin(m4), scan_row_portable<Negate>(w, vv, d, pred, row, h, j, end));  // the last < 4 columns
}

template <bool Negate>
__attribute__((target("avx2"))) void row_min2_avx2(const double* w, const double* v, Index n, double* u1,
                                                   double* u2) {
  __m256d a4 = _mm256_set1_pd(kInf);
  __m256d b4 = _mm256_set1_pd(kInf);
  Index j = 0;
  for (; j + 4 <= n; j += 4) {
    const __m256d r = _mm256_sub_pd(load_cost<Negate>(w + j), _mm256_loadu_pd(v + j));
    b4 = _mm256_min_pd(_mm256_max_pd(a4, r), b4);
    a4 = _mm256_min_pd(a4, r);
  }
  alignas(32) double a[4];
  alignas(32) double b[4];
  _mm256_store_pd(a, a4);
  _mm256_store_pd(b, b4);
  double x = kInf;
  double y = kInf;
  for (int k = 0; k < 4; ++k) {
    for (const double r : {a[k], b[k]}) {
      y = std::min(std::max(x, r), y);
      x = std::min(x, r);
    }
  }
  double tail_a = kInf;
  double tail_b = kInf;
  row_min2_portable<Negate>(w + j, v + j, n - j, &tail_a, &tail_b);  // the last < 4 columns
  for (const double r : {tail_a, tail_b}) {
    y = std::min(std::max(x, r), y);
    x = std::min(x, r);
  }
  *u1 = x;
  *u2 = y;
}

template <bool Negate>
__attribute__((target("avx2"))) void column_min_avx2(const double* w, double* colmin, Index* argmin,
                                                     Index row, Index n) {
  const __m256d rv = _mm256_castsi256_pd(_mm256_set1_epi64x(row));
  Index j = 0;
  for (; j + 4 <= n; j += 4) {
    const __m256d c = load_cost<Negate>(w + j);
    const __m256d m = _mm256_loadu_pd(colmin + j);
    const __m256d better = _mm256_cmp_pd(c, m, _CMP_LT_OQ);
    _mm256_storeu_pd(colmin + j, _mm256_blendv_pd(m, c, better));
    double* p = reinterpret_cast<double*>(argmin + j);
    _mm256_storeu_pd(p, _mm256_blendv_pd(_mm256_loadu_pd(p), rv, better));
  }
  column_min_portable<Negate>(w + j, colmin + j, argmin + j, row, n - j);  // the last < 4 columns
}

bool have_avx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

#endif  // CONVERGENT_LAP_X86

template <bool Negate>
RowKernels kernels_for() {
#ifdef CONVERGENT_LAP_X86
  if (have_avx2()) {
    return {&init_row_avx2<Negate>, &scan_row_avx2<Negate>, &row_min2_avx2<Negate>, &column_min_avx2<Negate>};
  }
#endif
  return {&init_row_portable<Negate>, &scan_row_portable<Negate>, &row_min2_portable<Negate>,
          &column_min_portable<Negate>};
}

// ---------------------------------------------------------------------------------------------------
// A fixed team of worker threads that splits one row pass into contiguous column ranges. Each range is
// reduced on its own and the minima are combined; min is exact, so the answer does not depend on the
// split. Threads are only worth it when a row is long enough to amortise the hand-off.

class ColumnTeam {
 public:
  explicit ColumnTeam(int threads) {
    for (int t = 1; t < threads; ++t) workers_.emplace_back([this, t] { work(t); });
    partial_.assign(static_cast<std::size_t>(std::max(threads, 1)), kInf);
  }
  ColumnTeam(const ColumnTeam&) = delete;
  ColumnTeam& operator=(const ColumnTeam&) = delete;
  ~ColumnTeam() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      ++generation_;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs task(begin, end) on `size()` contiguous pieces of [0, n) and returns the smallest result.
  double run_min(Index n, const std::function<double(Index, Index)>& task) {
    const int parts = size();
    if (parts == 1) return task(0, n);
    task_ = &task;
    n_ = n;
    pending_.store(parts - 1, std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++generation_;
    }
    wake_.notify_all();
    partial_[0] = task(0, piece_end(0));
    // Spin briefly: pieces take microseconds, a sleep would cost more than the work.
    while (pending_.load(std::memory_order_acquire) != 0) {
    }
    double m = kInf;
    for (const double p : partial_) m = std::min(m, p);
    return m;
  }

 private:
  Index piece_end(int t) const {
    const int parts = size();
    // Pieces are multiples of 8 columns so that vector loops stay on full lanes.
    const Index chunk = ((n_ + parts - 1) / parts + 7) / 8 * 8;
    return std::min(n_, chunk * (t + 1));
  }
  Index piece_begin(int t) const { return t == 0 ? 0 : piece_end(t - 1); }

  void work(int t) {
    std::uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
      }
      const Index b = piece_begin(t);
      const Index e = piece_end(t);
      partial_[static_cast<std::size_t>(t)] = b < e ? (*task_)(b, e) : kInf;
      pending_.fetch_sub(1, std::memory_order_release);
    }
  }

  std::vector<std::thread> workers_;
  std::vector<double> partial_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
  const std::function<double(Index, Index)>* task_ = nullptr;
  Index n_ = 0;
  std::atomic<int> pending_{0};
};

// ---------------------------------------------------------------------------------------------------
// The solver proper, for rows <= cols, minimising c = sign * w.

class DenseSolver {
 public:
  DenseSolver(const double* w, Index rows, Index cols, Index stride, bool negate, int threads)
      : w_(w), rows_(rows), cols_(cols), stride_(stride), negate_(negate),
        kernels_(negate ? kernels_for<true>() : kernels_for<false>()),
        x_(static_cast<std::size_t>(rows), -1), y_(static_cast<std::size_t>(cols), -1),
        v_(static_cast<std::size_t>(cols), 0.0) {
    // A hand-off costs a few microseconds; below this many columns one thread is faster.
    constexpr Index kMinColumnsPerThread = 2048;
    const int useful = static_cast<int>(std::max<Index>(1, cols / kMinColumnsPerThread));
    team_threads_ = std::max(1, std::min(threads, useful));
  }

  void solve() {
    if (rows_ == 0) return;
    if (rows_ == cols_) {
      column_reduction();
      // Large square problems: solve on each row's cheapest entries first, then prove (or repair)
      // optimality on the full matrix with the duals. Exact either way; the dense path is the fallback.
      if (rows_ >= kSparseMinSize && solve_sparse()) return;
      if (rows_ >= kSparseMinSize) {
        std::fill(x_.begin(), x_.end(), -1);
        std::fill(y_.begin(), y_.end(), -1);
        column_reduction();
      }
    }
    std::vector<Index> free_rows;
    for (Index i = 0; i < rows_; ++i) {
      if (x_[i] < 0) free_rows.push_back(i);
    }
    // Two passes, as Jonker and Volgenant recommend: cheap greedy moves settle most rows.
    for (int pass = 0; pass < 2 && !free_rows.empty(); ++pass) {
      free_rows = augmenting_row_reduction(free_rows);
    }
    if (!free_rows.empty()) augment(free_rows);
  }

  const std::vector<Index>& row_to_col() const { return x_; }
  const std::vector<Index>& col_to_row() const { return y_; }
  const std::vector<double>& col_dual() const { return v_; }
  double cost(Index i, Index j) const {
    const double w = w_[i * stride_ + j];
    return negate_ ? -w : w;
  }

 private:
  const double* row(Index i) const { return w_ + i * stride_; }

  [[noreturn]] static void infeasible() {
    throw Error("linear assignment: no complete assignment avoids the forbidden entries (+inf cost: "
                "+inf when minimising, -inf when maximising)");
  }

  // Square only: v[j] = min_i c[i][j]; each column goes to its lowest-index minimal row if that row is
  // still free. Rows that received exactly one column then move slack onto that column (reduction
  // transfer), which lets the later row reductions make progress.
  void column_reduction() {
    std::vector<double> colmin(static_cast<std::size_t>(cols_), kInf);
    col_argmin_.assign(static_cast<std::size_t>(cols_), -1);
    for (Index i = 0; i < rows_; ++i) kernels_.column_min(row(i), colmin.data(), col_argmin_.data(), i, cols_);
    std::vector<int> matches(static_cast<std::size_t>(rows_), 0);
    for (Index j = 0; j < cols_; ++j) {
      if (colmin[j] == kInf) infeasible();  // a square matrix needs every column
      v_[j] = colmin[j];
      const Index i = col_argmin_[j];
      ++matches[i];
      if (x_[i] < 0) {
        x_[i] = j;
        y_[j] = i;
      }
    }
    for (Index i = 0; i < rows_; ++i) {
      if (matches[i] != 1) continue;
      // The reduced cost at the row's column is exactly 0, the row minimum, so the second smallest of the
      // multiset is the minimum over the other columns.
      double u1 = kInf;
      double mu = kInf;
      kernels_.row_min2(row(i), v_.data(), cols_, &u1, &mu);
      // With every other entry of the row forbidden there is no slack to move.
      if (mu < kInf) v_[x_[i]] -= mu;
    }
  }

  // ---- Sparse stage (square matrices) ------------------------------------------------------------
  // Candidate edges: each row's kCandidates smallest reduced costs c[i][j] - v[j] after column
  // reduction, plus its assigned column and each column's minimal row. The exact optimum on this subgraph
  // with duals u, v is optimal for the whole matrix once c[i][j] - v[j] >= u[i] for every (i, j); rows
  // that violate it get the violating entries added and are re-solved, until none remain.

  struct Edges {
    std::vector<Index> start;  // row i's edges are [start[i], start[i + 1])
    std::vector<Index> col;
    std::vector<double> cost;
  };

  // Appends to `out` the k smallest c[i][j] - price[j] of row i over columns with mark[j] != i (finite
  // ones only).
  void select_row(Index i, Index k, const double* price, const std::vector<Index>& mark,
                  std::vector<Index>& out, std::vector<std::pair<double, Index>>& buf) const {
    const Index n = cols_;
    const double* wi = row(i);
    buf.clear();
    double threshold = kInf;
    // Ties at the threshold keep the columns met first; the scan starts at the diagonal so that a
    // matrix of equal entries keeps its diagonal, the lowest-index optimum.
    auto order = [i, n](const std::pair<double, Index>& a, const std::pair<double, Index>& b) {
      if (a.first != b.first) return a.first < b.first;
      return (a.second - i + n) % n < (b.second - i + n) % n;
    };
    auto shrink = [&] {
      std::nth_element(buf.begin(), buf.begin() + (k - 1), buf.end(), order);
      buf.resize(static_cast<std::size_t>(k));
      threshold = std::max_element(buf.begin(), buf.end(), order)->first;
    };
    for (Index step = 0; step < n; ++step) {
      Index j = i + step;
      if (j >= n) j -= n;
      const double r = (negate_ ? -wi[j] : wi[j]) - price[j];
      if ((r < threshold || static_cast<Index>(buf.size()) < k) && mark[j] != i) {
        buf.emplace_back(r, j);
        if (static_cast<Index>(buf.size()) >= 4 * k) shrink();
      }
    }
    if (static_cast<Index>(buf.size()) > k) shrink();
    for (const auto& [r, j] : buf) {
      if (r < kInf) out.push_back(j);
    }
  }

  // Initial candidates: each row's kCandidates and each column's kColumnCandidates cheapest entries (raw
  // costs: reduced costs after column reduction rank every all-zero column first, which is useless),
  // plus the pairs column reduction assigned and each column's minimal row.
  void select_candidates(std::vector<std::vector<Index>>& lists) {
    const Index k = std::min<Index>(kCandidates, cols_);
    std::vector<std::pair<double, Index>> buf;
    buf.reserve(static_cast<std::size_t>(4 * k + 8));
    const std::vector<Index> none(static_cast<std::size_t>(cols_), -1);
    const std::vector<double> zero(static_cast<std::size_t>(cols_), 0.0);
    for (Index i = 0; i < rows_; ++i) {
      select_row(i, k, zero.data(), none, lists[i], buf);
      if (x_[i] >= 0) lists[i].push_back(x_[i]);
    }
    for (Index j = 0; j < cols_; ++j) lists[col_argmin_[j]].push_back(j);
    // Column lists: a bounded buffer per column, shrunk to its kc smallest when full. Ties rank rows
    // cyclically from the diagonal, as rows rank columns, so that an all-zero (dead) column is offered
    // to kc different rows rather than always the first ones, which would leave too few paths into the
    // dead columns.
    const Index n = rows_;
    const Index kc = std::min<Index>(kColumnCandidates, rows_);
    const Index cap = 4 * kc;
    struct Entry {
      double cost;
      Index rank;  // (i - j) mod n
    };
    auto less = [](const Entry& a, const Entry& b) { return a.cost != b.cost ? a.cost < b.cost : a.rank < b.rank; };
    std::vector<Entry> threshold(static_cast<std::size_t>(cols_), Entry{kInf, n});
    std::vector<Entry> col_buf(static_cast<std::size_t>(cols_ * cap));
    std::vector<Index> col_size(static_cast<std::size_t>(cols_), 0);
    auto shrink = [&](Index j) {
      Entry* b = col_buf.data() + j * cap;
      std::nth_element(b, b + (kc - 1), b + col_size[j], less);
      col_size[j] = kc;
      threshold[j] = *std::max_element(b, b + kc, less);
    };
    for (Index i = 0; i < rows_; ++i) {
      const double* wi = row(i);
      for (Index j = 0; j < cols_; ++j) {
        const double c = negate_ ? -wi[j] : wi[j];
        if (c > threshold[j].cost || c == kInf) continue;
        const Entry entry{c, i >= j ? i - j : i - j + n};
        if (c == threshold[j].cost && entry.rank >= threshold[j].rank) continue;
        col_buf[j * cap + col_size[j]++] = entry;
        if (col_size[j] == cap) shrink(j);
      }
    }
    for (Index j = 0; j < cols_; ++j) {
      if (col_size[j] > kc) shrink(j);
      for (Index q = 0; q < col_size[j]; ++q) {
        Index i = col_buf[j * cap + q].rank + j;
        if (i >= n) i -= n;
        lists[i].push_back(j);
      }
    }
  }

  // Gives each of `rows` its next k cheapest columns (by reduced cost) that are not yet candidates. A row
  // whose new candidates undercut its dual is freed, as in verify().
  // Returns the number of candidates added.
  std::size_t widen(const std::vector<Index>& rows, Index k, std::vector<std::vector<Index>>& lists, const Edges& e,
                    std::vector<Index>& free_rows) {
    std::size_t added = 0;
    std::vector<Index> mark(static_cast<std::size_t>(cols_), -1);
    std::vector<std::pair<double, Index>> buf;
    for (const Index i : rows) {
      for (Index p = e.start[i]; p < e.start[i + 1]; ++p) mark[e.col[p]] = i;
      const std::size_t before = lists[i].size();
      // Doubling per row: a row that keeps blocking paths reaches its full width in log steps.
      select_row(i, std::min(std::max<Index>(k, static_cast<Index>(before)), cols_), v_.data(), mark, lists[i],
                 buf);
      added += lists[i].size() - before;
      if (x_[i] < 0) continue;
      const double* wi = row(i);
      const double ui = reduced(wi, x_[i]);
      for (std::size_t q = before; q < lists[i].size(); ++q) {
        if (reduced(wi, lists[i][q]) < ui) {
          y_[x_[i]] = -1;
          x_[i] = -1;
          free_rows.push_back(i);
          break;
        }
      }
    }
    return added;
  }

  // Merges the column lists into a compact edge table (sorted, duplicates dropped) with cached costs.
  Edges build_edges(std::vector<std::vector<Index>>& lists) const {
    Edges e;
    e.start.assign(static_cast<std::size_t>(rows_ + 1), 0);
    for (Index i = 0; i < rows_; ++i) {
      auto& l = lists[i];
      std::sort(l.begin(), l.end());
      l.erase(std::unique(l.begin(), l.end()), l.end());
      e.start[i + 1] = e.start[i] + static_cast<Index>(l.size());
    }
    e.col.resize(static_cast<std::size_t>(e.start[rows_]));
    e.cost.resize(static_cast<std::size_t>(e.start[rows_]));
    for (Index i = 0; i < rows_; ++i) {
      Index p = e.start[i];
      for (const Index j : lists[i]) {
        e.col[p] = j;
        e.cost[p] = cost(i, j);
        ++p;
      }
    }
    return e;
  }

  // Augmenting row reduction on the edge table; same moves and tie rules as the dense version. A row
  // with no finite candidate is left to the search, which can fall back.
  std::vector<Index> sparse_row_reduction(const Edges& e, const std::vector<Index>& free_rows) {
    return row_reduction(free_rows, [&](Index i) {
      RowMove move;
      for (Index p = e.start[i]; p < e.start[i + 1]; ++p) {
        const double r = e.cost[p] - v_[e.col[p]];
        if (r < move.best) {
          move.second = move.best;
          move.best = r;
          move.column = e.col[p];
        } else if (r < move.second) {
          move.second = r;
        }
      }
      if (move.column >= 0 && move.best == move.second) {
        for (Index p = e.start[i]; p < e.start[i + 1]; ++p) {
          if (e.cost[p] - v_[e.col[p]] == move.best && y_[e.col[p]] < 0) {
            move.column = e.col[p];
            break;
          }
        }
      }
      return move;
    });
  }

  // Dijkstra with a binary heap over the edge table, for each free row in order. When the candidates
  // admit no augmenting path from a row, stops and returns the rows that search reached (the caller
  // widens their candidates); `done` counts the rows augmented.
  std::vector<Index> sparse_augment(const Edges& e, const std::vector<Index>& free_rows, std::size_t& done) {
    const Index n = cols_;
    if (static_cast<Index>(sd_.size()) != n) {
      sd_.assign(static_cast<std::size_t>(n), kInf);
      spred_.assign(static_cast<std::size_t>(n), -1);
      sdone_.assign(static_cast<std::size_t>(n), 0);
    }
    using Item = std::pair<double, Index>;
    std::vector<Item> heap;
    std::vector<Index> touched;
    std::vector<Index> settled;
    const auto greater = std::greater<Item>();
    for (done = 0; done < free_rows.size(); ++done) {
      const Index f = free_rows[done];
      heap.clear();
      touched.clear();
      settled.clear();
      auto relax = [&](Index i, double h) {
        for (Index p = e.start[i]; p < e.start[i + 1]; ++p) {
          const Index j = e.col[p];
          if (sdone_[j]) continue;
          const double r = (e.cost[p] - v_[j]) + h;
          if (r < sd_[j]) {
            if (sd_[j] == kInf) touched.push_back(j);
            sd_[j] = r;
            spred_[j] = i;
            heap.emplace_back(r, j);
            std::push_heap(heap.begin(), heap.end(), greater);
          }
        }
      };
      relax(f, 0.0);
      Index sink = -1;
      double m = 0.0;
      while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), greater);
        const auto [dj, j] = heap.back();
        heap.pop_back();
        if (sdone_[j] || dj != sd_[j]) continue;  // stale entry
        if (y_[j] < 0) {
          sink = j;
          m = dj;
          break;
        }
        sdone_[j] = 1;
        settled.push_back(j);
        const Index i = y_[j];
        relax(i, dj - (cost(i, j) - v_[j]));
      }
      if (sink < 0) {
        std::vector<Index> reached{f};
        for (const Index j : settled) reached.push_back(y_[j]);
        for (const Index j : touched) {
          sd_[j] = kInf;
          sdone_[j] = 0;
        }
        return reached;
      }
      for (const Index j : settled) v_[j] -= std::max(0.0, m - sd_[j]);
      for (const Index j : touched) {
        sd_[j] = kInf;
        sdone_[j] = 0;
      }
      flip_path(spred_.data(), sink, f);
    }
    return {};
  }

  // One dense pass: rows whose best reduced cost beats their dual get the violating entries as new
  // candidates and are freed (their assigned entry is no longer the row minimum). Returns the freed rows.
  std::vector<Index> verify(std::vector<std::vector<Index>>& lists, const Edges& e) {
    std::vector<Index> freed;
    std::vector<Index> mark(static_cast<std::size_t>(cols_), -1);
    std::vector<Index> picked;
    std::vector<std::pair<double, Index>> buf;
    for (Index i = 0; i < rows_; ++i) {
      const double* wi = row(i);
      const double ui = reduced(wi, x_[i]);
      double u1 = kInf;
      double u2 = kInf;
      kernels_.row_min2(wi, v_.data(), cols_, &u1, &u2);
      if (!(u1 < ui)) continue;
      for (Index p = e.start[i]; p < e.start[i + 1]; ++p) mark[e.col[p]] = i;
      // Only the most violated entries join: a row may violate on hundreds of near-equal columns, and
      // the next round adds more if they are needed.
      picked.clear();
      select_row(i, std::min<Index>(kVerifyAdd, cols_), v_.data(), mark, picked, buf);
      bool added = false;
      for (const Index j : picked) {
        if (reduced(wi, j) < ui) {
          lists[i].push_back(j);
          added = true;
        }
      }
      if (added) {
        y_[x_[i]] = -1;
        x_[i] = -1;
        freed.push_back(i);
      }
    }
    return freed;
  }

  bool solve_sparse() {
    std::vector<std::vector<Index>> lists(static_cast<std::size_t>(rows_));
    select_candidates(lists);
    Edges e = build_edges(lists);
    std::vector<Index> free_rows;
    for (Index i = 0; i < rows_; ++i) {
      if (x_[i] < 0) free_rows.push_back(i);
    }
    for (int pass = 0; pass < 2 && !free_rows.empty(); ++pass) {
      free_rows = sparse_row_reduction(e, free_rows);
    }
    for (;;) {
      std::size_t done = 0;
      const std::vector<Index> stuck = sparse_augment(e, free_rows, done);
      if (!stuck.empty()) {
        // The unfinished rows stay free; widening may free more. Each widening adds columns to the
        // subgraph, so this ends (at worst with every entry a candidate).
        free_rows.erase(free_rows.begin(), free_rows.begin() + static_cast<std::ptrdiff_t>(done));
        // Every row the failed search reached already has all its allowed columns: no augmenting path
        // exists in the full matrix either (the search explored a Hall-violating set).
        if (widen(stuck, kCandidates, lists, e, free_rows) == 0) infeasible();
        std::sort(free_rows.begin(), free_rows.end());
        free_rows.erase(std::unique(free_rows.begin(), free_rows.end()), free_rows.end());
        e = build_edges(lists);
        continue;
      }
      free_rows = verify(lists, e);
      if (free_rows.empty()) return true;
      e = build_edges(lists);
    }
  }

  double reduced(const double* wi, Index j) const { return (negate_ ? -wi[j] : wi[j]) - v_[j]; }

  // First column (lowest index) whose reduced cost equals u; prefer_free restricts to unassigned ones.
  Index first_with_reduced(const double* wi, double u, bool only_free) const {
    for (Index j = 0; j < cols_; ++j) {
      if (reduced(wi, j) == u && (!only_free || y_[j] < 0)) return j;
    }
    return -1;
  }

  // A free row's move in augmenting row reduction: the column it takes, and its cheapest and second
  // cheapest reduced costs. column < 0 leaves the row to the shortest-path phase.
  struct RowMove {
    Index column = -1;
    double best = kInf;
    double second = kInf;
  };

  // Jonker-Volgenant augmenting row reduction: a free row takes its cheapest column (find_move) and
  // lowers that column's price to its second cheapest, evicting the previous owner, which then tries
  // again at once (or, after a tie, in the next pass). Returns the rows still free, ascending. Every
  // move keeps u[i] + v[j] <= c[i][j] and only lowers v of assigned columns, so unassigned columns keep
  // v == 0 in the rectangular case.
  template <class FindMove>
  std::vector<Index> row_reduction(const std::vector<Index>& free_rows, const FindMove& find_move) {
    std::vector<Index> next;
    std::vector<Index> stack(free_rows.rbegin(), free_rows.rend());
    // Chains of evictions are usually short; the cap keeps a float-degenerate chain from running long,
    // leaving its rows to the shortest-path phase, which is exact regardless.
    Index budget = 4 * rows_ + 16;
    while (!stack.empty()) {
      const Index i = stack.back();
      stack.pop_back();
      const RowMove move = budget-- > 0 ? find_move(i) : RowMove{};
      if (move.column < 0) {
        next.push_back(i);
        continue;
      }
      const bool evict_now = move.best < move.second && move.second < kInf;
      if (evict_now) v_[move.column] -= move.second - move.best;
      const Index owner = y_[move.column];
      x_[i] = move.column;
      y_[move.column] = i;
      if (owner >= 0) {
        x_[owner] = -1;
        (evict_now ? stack : next).push_back(owner);
      }
    }
    std::sort(next.begin(), next.end());
    return next;
  }

  // Row reduction on the dense matrix. Ties go to an unassigned tied column (no eviction), then to the
  // lowest index.
  std::vector<Index> augmenting_row_reduction(const std::vector<Index>& free_rows) {
    return row_reduction(free_rows, [&](Index i) {
      const double* wi = row(i);
      RowMove move;
      kernels_.row_min2(wi, v_.data(), cols_, &move.best, &move.second);
      if (move.best == kInf) infeasible();  // the whole row is forbidden
      if (move.best < move.second) {
        move.column = first_with_reduced(wi, move.best, false);
      } else {
        move.column = first_with_reduced(wi, move.best, true);
        if (move.column < 0) move.column = first_with_reduced(wi, move.best, false);
      }
      return move;
    });
  }

  // Shortest augmenting paths (Dijkstra on reduced costs) from each free row in turn. All columns tied at
  // the current minimum distance are settled together; the lowest-index free one among them ends the
  // path.
  void augment(const std::vector<Index>& free_rows) {
    ColumnTeam team(team_threads_);
    const Index n = cols_;
    std::vector<double> d(static_cast<std::size_t>(n));
    std::vector<Index> pred(static_cast<std::size_t>(n));
    std::vector<double> vv(v_);  // v, with -inf on settled columns so that scans skip them
    std::vector<double> settled_at(static_cast<std::size_t>(n));
    std::vector<Index> settled;  // in settling order
    std::vector<Index> queue;    // settled columns whose rows have not been scanned yet
    std::vector<Index> ties;
    settled.reserve(static_cast<std::size_t>(n));
    queue.reserve(static_cast<std::size_t>(n));

    double* dp = d.data();
    Index* pp = pred.data();
    double* vvp = vv.data();
    const RowKernels k = kernels_;

    auto collect_ties = [&](double m) {
      ties.clear();
      for (Index j = 0; j < n; ++j) {
        if (dp[j] == m) ties.push_back(j);
      }
    };

    for (const Index f : free_rows) {
      const double* wf = row(f);
      double m = team.run_min(n, [&](Index b, Index e) { return k.init_row(wf, v_.data(), dp, pp, f, b, e); });
      settled.clear();
      queue.clear();
      std::size_t head = 0;
      Index sink = -1;
      // Settles every column tied at distance `at`, unless one of them is free: that one ends the path.
      auto settle_ties_or_find_sink = [&](double at) {
        collect_ties(at);
        for (const Index j : ties) {
          if (y_[j] < 0) {
            sink = j;
            return true;
          }
        }
        for (const Index j : ties) {
          settled_at[j] = at;
          dp[j] = kInf;
          vvp[j] = -kInf;
          settled.push_back(j);
          queue.push_back(j);
        }
        return false;
      };
      double next_min = m;
      for (;;) {
        if (head == queue.size()) {
          m = next_min;
          if (m == kInf) infeasible();
          if (settle_ties_or_find_sink(m)) break;
        }
        const Index j = queue[head++];
        const Index i = y_[j];
        const double h = m - reduced(row(i), j);
        const double* wi = row(i);
        next_min = team.run_min(n, [&](Index b, Index e) { return k.scan_row(wi, vvp, dp, pp, i, h, b, e); });
        // The scan reached new columns at the current distance: settle them now, stop at a free one.
        if (next_min == m && settle_ties_or_find_sink(m)) break;
      }
      // Price update: settled columns move by the distance they were settled short of the sink, which
      // keeps every reduced cost non-negative and makes the new path tight.
      for (const Index j : settled) {
        v_[j] -= m - settled_at[j];
        vvp[j] = v_[j];
      }
      flip_path(pp, sink, f);
    }
  }

  // Below this size the dense solver is fast enough that the candidate machinery does not pay.
  static constexpr Index kSparseMinSize = 512;
  // Candidate counts: enough that most rows' optimal column is among them (measured on uniform and
  // correlation matrices up to n = 8192); verification adds up to kVerifyAdd entries per violating row
  // and round, which keeps the rounds few without letting near-tied rows flood the subgraph.
  static constexpr Index kCandidates = 32;
  static constexpr Index kColumnCandidates = 16;
  static constexpr Index kVerifyAdd = 256;

  // Assigns along the augmenting path that pred traces back from column `sink` to free row f: each row
  // on it takes the column after it, and f becomes assigned.
  void flip_path(const Index* pred, Index sink, Index f) {
    for (Index j = sink;;) {
      const Index i = pred[j];
      y_[j] = i;
      const Index prev = x_[i];
      x_[i] = j;
      if (i == f) break;
      j = prev;
    }
  }

  const double* w_;
  Index rows_;
  Index cols_;
  Index stride_;
  bool negate_;
  RowKernels kernels_;
  int team_threads_ = 1;
  std::vector<Index> x_;
  std::vector<Index> y_;
  std::vector<double> v_;
  std::vector<Index> col_argmin_;
  std::vector<double> sd_;
  std::vector<Index> spred_;
  std::vector<char> sdone_;
};

void check_entries(MatrixView<const double> w, Objective objective) {
  // The infinity that is good for the objective would make the optimum unbounded: reject it.
  const double bad_inf = objective == Objective::minimize ? -kInf : kInf;
  for (Index i = 0; i < w.rows; ++i) {
    const double* wi = w.row(i);
    bool suspicious = false;
    for (Index j = 0; j < w.cols; ++j) suspicious |= (wi[j] != wi[j]) | (wi[j] == bad_inf);
    if (!suspicious) continue;
    for (Index j = 0; j < w.cols; ++j) {
      if (std::isnan(wi[j])) {
        throw Error("linear assignment: weight at row " + std::to_string(i) + ", column " + std::to_string(j) +
                    " is NaN");
      }
      if (wi[j] == bad_inf) {
        throw Error("linear assignment: weight at row " + std::to_string(i) + ", column " + std::to_string(j) +
                    " is " + (bad_inf > 0 ? "+inf" : "-inf") + ", which is not allowed when " +
                    (objective == Objective::minimize ? "minimising" : "maximising") +
                    " (only " + (bad_inf > 0 ? "-inf" : "+inf") + " marks a forbidden pair)");
      }
    }
  }
}

}  // namespace

Assignment solve_assignment(MatrixView<const double> weights, const AssignmentOptions& options) {
  if (weights.rows < 0 || weights.cols < 0 || (weights.rows > 0 && weights.cols > 0 && weights.data == nullptr) ||
      (weights.rows > 1 && weights.stride < weights.cols)) {
    throw Error("linear assignment: invalid matrix view (" + std::to_string(weights.rows) + " x " +
                std::to_string(weights.cols) + ", stride " + std::to_string(weights.stride) + ")");
  }
  check_entries(weights, options.objective);
  const Index rows = weights.rows;
  const Index cols = weights.cols;
  Assignment result;
  result.row_to_col.assign(static_cast<std::size_t>(rows), -1);
  result.col_to_row.assign(static_cast<std::size_t>(cols), -1);
  result.row_dual.assign(static_cast<std::size_t>(rows), 0.0);
  result.col_dual.assign(static_cast<std::size_t>(cols), 0.0);
  if (rows == 0 || cols == 0) return result;

  const bool negate = options.objective == Objective::maximize;
  const bool transpose = rows > cols;
  // The solver wants rows <= cols; a taller matrix is solved as its transpose.
  std::vector<double> transposed;
  const double* data = weights.data;
  Index stride = weights.stride;
  Index r = rows;
  Index c = cols;
  if (transpose) {
    transposed.resize(static_cast<std::size_t>(rows * cols));
    for (Index i = 0; i < rows; ++i) {
      for (Index j = 0; j < cols; ++j) transposed[static_cast<std::size_t>(j * rows + i)] = weights(i, j);
    }
    data = transposed.data();
    stride = rows;
    r = cols;
    c = rows;
  }
  DenseSolver solver(data, r, c, stride, negate, std::max(1, options.threads));
  solver.solve();

  const auto& x = solver.row_to_col();
  const auto& v = solver.col_dual();
  std::vector<double> u(static_cast<std::size_t>(r));
  for (Index i = 0; i < r; ++i) u[i] = solver.cost(i, x[i]) - v[x[i]];
  if (!transpose) {
    for (Index i = 0; i < r; ++i) {
      result.row_to_col[i] = x[i];
      result.col_to_row[x[i]] = i;
    }
    result.row_dual = std::move(u);
    result.col_dual = v;
  } else {
    for (Index i = 0; i < r; ++i) {
      result.col_to_row[i] = x[i];
      result.row_to_col[x[i]] = i;
    }
    result.col_dual = std::move(u);
    result.row_dual = v;
  }
  double total = 0.0;
  for (Index i = 0; i < rows; ++i) {
    if (result.row_to_col[i] >= 0) total += weights(i, result.row_to_col[i]);
  }
  result.total = total;
  return result;
}

}  // namespace convergent
