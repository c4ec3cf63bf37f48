// Tests of the exact linear assignment solver: every solved instance must carry its dual certificate,
// small instances agree with brute force, bad inputs raise convergent::Error, and results reproduce
// across runs and thread counts.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "convergent/error.hpp"
#include "convergent/lap.hpp"
#include "convergent/matrix.hpp"

namespace {

using convergent::Assignment;
using convergent::AssignmentOptions;
using convergent::Matrix;
using convergent::Objective;
using convergent::solve_assignment;

constexpr double kInf = std::numeric_limits<double>::infinity();

AssignmentOptions opts(Objective objective, int threads = 1) {
  AssignmentOptions o;
  o.objective = objective;
  o.threads = threads;
  return o;
}

Matrix uniform(std::int64_t rows, std::int64_t cols, std::uint32_t seed, double lo = 0.0, double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  Matrix m(rows, cols);
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < cols; ++j) m(i, j) = dist(rng);
  return m;
}

// Small integers: many exact ties and many optimal assignments.
Matrix small_integers(std::int64_t rows, std::int64_t cols, int levels, std::uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> dist(0, levels - 1);
  Matrix m(rows, cols);
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < cols; ++j) m(i, j) = dist(rng);
  return m;
}

// Correlation-like: units of two nets share a few latent directions; some units are dead, which gives
// whole zero rows and columns, as the library feeds the solver for dead units.
Matrix correlation_like(std::int64_t n, std::uint32_t seed, double dead_fraction) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const int k = 6;
  std::vector<double> a(static_cast<std::size_t>(n * k));
  std::vector<double> b(static_cast<std::size_t>(n * k));
  for (auto& x : a) x = g(rng);
  for (auto& x : b) x = g(rng);
  Matrix m(n, n);
  for (std::int64_t i = 0; i < n; ++i) {
    for (std::int64_t j = 0; j < n; ++j) {
      double dot = 0, na = 1, nb = 1;
      for (int t = 0; t < k; ++t) {
        dot += a[i * k + t] * b[j * k + t];
        na += a[i * k + t] * a[i * k + t];
        nb += b[j * k + t] * b[j * k + t];
      }
      m(i, j) = dot / std::sqrt(na * nb) + 0.01 * g(rng);
    }
  }
  for (std::int64_t i = 0; i < n; ++i) {
    if (u(rng) < dead_fraction)
      for (std::int64_t j = 0; j < n; ++j) m(i, j) = 0.0;
    if (u(rng) < dead_fraction)
      for (std::int64_t r = 0; r < n; ++r) m(r, i) = 0.0;
  }
  return m;
}

double max_abs_finite(const Matrix& w) {
  double s = 0;
  for (std::int64_t i = 0; i < w.rows(); ++i)
    for (std::int64_t j = 0; j < w.cols(); ++j)
      if (std::isfinite(w(i, j))) s = std::max(s, std::abs(w(i, j)));
  return s;
}

// Checks that `a` is a complete assignment of min(R, C) pairs and that its duals prove it optimal.
void expect_certificate(const Matrix& w, Objective objective, const Assignment& a) {
  const std::int64_t rows = w.rows();
  const std::int64_t cols = w.cols();
  ASSERT_EQ(static_cast<std::int64_t>(a.row_to_col.size()), rows);
  ASSERT_EQ(static_cast<std::int64_t>(a.col_to_row.size()), cols);
  ASSERT_EQ(static_cast<std::int64_t>(a.row_dual.size()), rows);
  ASSERT_EQ(static_cast<std::int64_t>(a.col_dual.size()), cols);
  // Duals are sums and differences of O(n) costs built up over many augmentations; each step rounds
  // relative to the magnitude of the costs, so allow a few hundred ulps of the largest finite weight.
  const double tol = 1e-12 * (1.0 + max_abs_finite(w)) * std::max<double>(16.0, std::sqrt(double(rows + cols)));
  const double sign = objective == Objective::maximize ? -1.0 : 1.0;
  std::int64_t pairs = 0;
  double total = 0;
  for (std::int64_t i = 0; i < rows; ++i) {
    const std::int64_t j = a.row_to_col[i];
    if (j < 0) continue;
    ASSERT_LT(j, cols);
    ASSERT_EQ(a.col_to_row[j], i) << "row_to_col and col_to_row disagree at row " << i;
    ++pairs;
    total += w(i, j);
    // Assigned pairs are never forbidden, and they are tight.
    ASSERT_TRUE(std::isfinite(w(i, j))) << "assigned a forbidden pair (" << i << ", " << j << ")";
    EXPECT_NEAR(a.row_dual[i] + a.col_dual[j], sign * w(i, j), tol) << "assigned pair (" << i << ", " << j << ")";
  }
  for (std::int64_t j = 0; j < cols; ++j)
    if (a.col_to_row[j] >= 0) {
      ASSERT_EQ(a.row_to_col[a.col_to_row[j]], j);
    }
  ASSERT_EQ(pairs, std::min(rows, cols));
  // The total is the same sum in the caller's units; only summation order may differ.
  EXPECT_NEAR(a.total, total, 1e-12 * (1.0 + std::abs(total)));
  for (std::int64_t i = 0; i < rows; ++i) {
    for (std::int64_t j = 0; j < cols; ++j) {
      const double c = sign * w(i, j);
      if (c == kInf) continue;  // forbidden pair: no constraint
      ASSERT_LE(a.row_dual[i] + a.col_dual[j], c + tol) << "dual infeasible at (" << i << ", " << j << ")";
    }
  }
  // Rectangular: the unmatched side's duals are <= 0, and exactly 0 where unassigned (complementary
  // slackness of the "at most once" constraints); the solver never touches them, so 0 is exact.
  if (rows < cols) {
    for (std::int64_t j = 0; j < cols; ++j) {
      ASSERT_LE(a.col_dual[j], 0.0) << "column " << j;
      if (a.col_to_row[j] < 0) {
        ASSERT_EQ(a.col_dual[j], 0.0) << "column " << j;
      }
    }
  } else if (rows > cols) {
    for (std::int64_t i = 0; i < rows; ++i) {
      ASSERT_LE(a.row_dual[i], 0.0) << "row " << i;
      if (a.row_to_col[i] < 0) {
        ASSERT_EQ(a.row_dual[i], 0.0) << "row " << i;
      }
    }
  }
}

// Best total over all injections of the smaller side into the larger (n <= 8); NaN when none avoids
// forbidden pairs.
double brute_force(const Matrix& w, Objective objective) {
  const bool flip = w.rows() > w.cols();
  const std::int64_t r = flip ? w.cols() : w.rows();
  const std::int64_t c = flip ? w.rows() : w.cols();
  auto at = [&](std::int64_t i, std::int64_t j) { return flip ? w(j, i) : w(i, j); };
  std::vector<std::int64_t> perm(static_cast<std::size_t>(c));
  std::iota(perm.begin(), perm.end(), 0);
  double best = std::numeric_limits<double>::quiet_NaN();
  do {
    double s = 0;
    for (std::int64_t i = 0; i < r; ++i) s += at(i, perm[i]);
    if (!std::isfinite(s)) continue;
    if (std::isnan(best) || (objective == Objective::maximize ? s > best : s < best)) best = s;
  } while (std::next_permutation(perm.begin(), perm.end()));
  return best;
}

TEST(Lap, BruteForceSmall) {
  std::uint32_t seed = 1;
  for (std::int64_t r = 1; r <= 7; ++r) {
    for (std::int64_t c = 1; c <= 7; ++c) {
      for (int rep = 0; rep < 4; ++rep) {
        for (const Objective obj : {Objective::minimize, Objective::maximize}) {
          const Matrix w = rep % 2 == 0 ? uniform(r, c, seed++, -1.0, 1.0) : small_integers(r, c, 3, seed++);
          const Assignment a = solve_assignment(w.view(), opts(obj));
          expect_certificate(w, obj, a);
          // The solver and brute force add the same few numbers in different orders.
          EXPECT_NEAR(a.total, brute_force(w, obj), 1e-12) << r << "x" << c << " seed " << seed - 1;
        }
      }
    }
  }
  // Square 8 x 8: the largest brute force that stays fast.
  for (int rep = 0; rep < 3; ++rep) {
    const Matrix w = uniform(8, 8, 100 + rep);
    const Assignment a = solve_assignment(w.view(), opts(Objective::maximize));
    expect_certificate(w, Objective::maximize, a);
    EXPECT_NEAR(a.total, brute_force(w, Objective::maximize), 1e-12);
  }
}

TEST(Lap, BruteForceWithForbiddenPairs) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  int solved = 0;
  for (int rep = 0; rep < 300; ++rep) {
    const std::int64_t r = 1 + rep % 6;
    const std::int64_t c = 1 + (rep / 6) % 6;
    for (const Objective obj : {Objective::minimize, Objective::maximize}) {
      const double forbidden = obj == Objective::minimize ? kInf : -kInf;
      Matrix w = uniform(r, c, 1000 + rep);
      for (std::int64_t i = 0; i < r; ++i)
        for (std::int64_t j = 0; j < c; ++j)
          if (u(rng) < 0.4) w(i, j) = forbidden;
      const double best = brute_force(w, obj);
      if (std::isnan(best)) {
        EXPECT_THROW(solve_assignment(w.view(), opts(obj)), convergent::Error) << r << "x" << c << " rep " << rep;
        continue;
      }
      const Assignment a = solve_assignment(w.view(), opts(obj));
      expect_certificate(w, obj, a);
      EXPECT_NEAR(a.total, best, 1e-12);  // same few numbers, different summation order
      ++solved;
    }
  }
  EXPECT_GT(solved, 100);  // the instance mix must exercise both outcomes
}

TEST(Lap, RandomSquareCertificates) {
  for (const std::int64_t n : {1, 2, 3, 5, 17, 64, 100, 257, 600}) {
    for (const Objective obj : {Objective::minimize, Objective::maximize}) {
      const Matrix w = uniform(n, n, static_cast<std::uint32_t>(n) * 3 + (obj == Objective::maximize));
      expect_certificate(w, obj, solve_assignment(w.view(), opts(obj)));
    }
  }
}

TEST(Lap, LargeCertificates) {
  const Matrix w = uniform(2048, 2048, 11);
  expect_certificate(w, Objective::maximize, solve_assignment(w.view(), opts(Objective::maximize)));
  const Matrix c = correlation_like(1024, 12, 0.05);
  expect_certificate(c, Objective::maximize, solve_assignment(c.view(), opts(Objective::maximize)));
}

TEST(Lap, TiesAndZeros) {
  for (const int levels : {1, 2, 3, 10}) {
    for (const std::int64_t n : {1, 7, 50, 300}) {
      for (const Objective obj : {Objective::minimize, Objective::maximize}) {
        const Matrix w = small_integers(n, n, levels, static_cast<std::uint32_t>(n * 10 + levels));
        expect_certificate(w, obj, solve_assignment(w.view(), opts(obj)));
      }
    }
  }
  // Dead units: whole zero rows and columns in a correlation matrix.
  for (const double dead : {0.1, 0.5, 1.0}) {
    const Matrix w = correlation_like(400, 5, dead);
    expect_certificate(w, Objective::maximize, solve_assignment(w.view(), opts(Objective::maximize)));
  }
  const Matrix zeros(1000, 1000, 0.0);
  expect_certificate(zeros, Objective::maximize, solve_assignment(zeros.view(), opts(Objective::maximize)));
}

TEST(Lap, AllEqualGivesIdentity) {
  // Every assignment is optimal; ties break toward lower indices, so the first min(R, C) pairs are the
  // diagonal.
  for (const auto& [r, c] : std::vector<std::pair<int, int>>{{1, 1}, {5, 5}, {64, 64}, {500, 500}, {700, 700}, {3, 9}, {9, 3}}) {
    for (const Objective obj : {Objective::minimize, Objective::maximize}) {
      const Matrix w(r, c, 0.25);
      const Assignment a = solve_assignment(w.view(), opts(obj));
      expect_certificate(w, obj, a);
      for (int i = 0; i < std::min(r, c); ++i) EXPECT_EQ(a.row_to_col[i], i) << r << "x" << c;
    }
  }
}

TEST(Lap, Rectangular) {
  const std::vector<std::pair<int, int>> shapes = {{1, 10}, {10, 1}, {2, 3}, {50, 80}, {80, 50}, {300, 1000}, {1000, 300}};
  for (const auto& [r, c] : shapes) {
    for (const Objective obj : {Objective::minimize, Objective::maximize}) {
      const Matrix w = uniform(r, c, static_cast<std::uint32_t>(r * 7 + c));
      expect_certificate(w, obj, solve_assignment(w.view(), opts(obj)));
      const Matrix t = small_integers(r, c, 2, static_cast<std::uint32_t>(r + c));
      expect_certificate(t, obj, solve_assignment(t.view(), opts(obj)));
    }
  }
}

TEST(Lap, StridedView) {
  const Matrix big = uniform(40, 60, 3);
  const auto view = big.block(5, 7, 20, 30);  // stride 60, not 30
  Matrix copy(20, 30);
  for (int i = 0; i < 20; ++i)
    for (int j = 0; j < 30; ++j) copy(i, j) = view(i, j);
  const Assignment a = solve_assignment(view, opts(Objective::maximize));
  const Assignment b = solve_assignment(copy.view(), opts(Objective::maximize));
  expect_certificate(copy, Objective::maximize, a);
  EXPECT_EQ(a.row_to_col, b.row_to_col);
  EXPECT_EQ(a.total, b.total);  // same numbers, same order: bit-identical
}

TEST(Lap, EmptyMatrices) {
  for (const auto& [r, c] : std::vector<std::pair<int, int>>{{0, 0}, {0, 5}, {5, 0}}) {
    const Matrix w(r, c);
    const Assignment a = solve_assignment(w.view());
    EXPECT_EQ(a.row_to_col, std::vector<std::int64_t>(r, -1));
    EXPECT_EQ(a.col_to_row, std::vector<std::int64_t>(c, -1));
    EXPECT_EQ(a.total, 0.0);
  }
}

TEST(Lap, ForbiddenLarge) {
  // A planted feasible permutation keeps the instance solvable with 60% of the pairs forbidden.
  for (const Objective obj : {Objective::minimize, Objective::maximize}) {
    const double forbidden = obj == Objective::minimize ? kInf : -kInf;
    const std::int64_t n = 700;  // large enough for the candidate-subgraph path
    Matrix w = uniform(n, n, 77);
    std::mt19937_64 rng(5);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    std::vector<std::int64_t> perm(n);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < n; ++j)
        if (j != perm[i] && u(rng) < 0.6) w(i, j) = forbidden;
    expect_certificate(w, obj, solve_assignment(w.view(), opts(obj)));
    // Only the planted permutation survives: the solver must find exactly it.
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < n; ++j)
        if (j != perm[i]) w(i, j) = forbidden;
    const Assignment a = solve_assignment(w.view(), opts(obj));
    expect_certificate(w, obj, a);
    for (std::int64_t i = 0; i < n; ++i) EXPECT_EQ(a.row_to_col[i], perm[i]);
  }
}

TEST(Lap, InfeasibleThrows) {
  // A fully forbidden column in a square matrix.
  Matrix a = uniform(4, 4, 1);
  for (int i = 0; i < 4; ++i) a(i, 2) = kInf;
  EXPECT_THROW(solve_assignment(a.view(), opts(Objective::minimize)), convergent::Error);
  // Every row and column has an allowed pair, yet rows 0 and 1 compete for column 0 alone (Hall).
  Matrix b = uniform(3, 3, 2);
  for (int j = 1; j < 3; ++j) b(0, j) = b(1, j) = -kInf;
  EXPECT_THROW(solve_assignment(b.view(), opts(Objective::maximize)), convergent::Error);
  // Rectangular both ways.
  Matrix c = uniform(2, 5, 3);
  for (int j = 1; j < 5; ++j) c(0, j) = c(1, j) = kInf;
  EXPECT_THROW(solve_assignment(c.view(), opts(Objective::minimize)), convergent::Error);
  Matrix d = uniform(5, 2, 3);
  for (int i = 1; i < 5; ++i) d(i, 0) = d(i, 1) = kInf;
  EXPECT_THROW(solve_assignment(d.view(), opts(Objective::minimize)), convergent::Error);
  // Large enough for the candidate-subgraph path, which must also prove infeasibility: three rows share
  // two allowed columns.
  Matrix big = uniform(600, 600, 4);
  for (int i = 100; i < 103; ++i)
    for (int j = 0; j < 600; ++j)
      if (j != 7 && j != 300) big(i, j) = kInf;
  EXPECT_THROW(solve_assignment(big.view(), opts(Objective::minimize)), convergent::Error);
  try {
    solve_assignment(b.view(), opts(Objective::maximize));
    FAIL() << "expected an error";
  } catch (const convergent::Error& e) {
    EXPECT_NE(std::string(e.what()).find("forbidden"), std::string::npos) << e.what();
  }
}

TEST(Lap, BadValuesNameRowAndColumn) {
  auto message = [](const Matrix& w, Objective obj) {
    try {
      solve_assignment(w.view(), opts(obj));
    } catch (const convergent::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  Matrix w = uniform(5, 6, 9);
  w(2, 3) = std::numeric_limits<double>::quiet_NaN();
  for (const Objective obj : {Objective::minimize, Objective::maximize}) {
    const std::string m = message(w, obj);
    EXPECT_NE(m.find("row 2, column 3"), std::string::npos) << m;
    EXPECT_NE(m.find("NaN"), std::string::npos) << m;
  }
  Matrix lo = uniform(6, 5, 9);
  lo(4, 1) = -kInf;  // the good infinity for minimisation: unbounded
  const std::string m1 = message(lo, Objective::minimize);
  EXPECT_NE(m1.find("row 4, column 1"), std::string::npos) << m1;
  Matrix hi = uniform(6, 5, 9);
  hi(0, 4) = kInf;
  const std::string m2 = message(hi, Objective::maximize);
  EXPECT_NE(m2.find("row 0, column 4"), std::string::npos) << m2;
}

TEST(Lap, IdenticalAcrossThreadCounts) {
  // Thread counts split the column scans; the minima they combine are exact, so results must match bit
  // for bit. 4096 columns is large enough for the solver to use several threads.
  const std::vector<Matrix> cases = {uniform(4096, 4096, 21), small_integers(3000, 3000, 4, 22),
                                     uniform(1500, 4500, 23)};
  for (const Matrix& w : cases) {
    const Assignment one = solve_assignment(w.view(), opts(Objective::maximize, 1));
    for (const int t : {2, 4}) {
      const Assignment many = solve_assignment(w.view(), opts(Objective::maximize, t));
      EXPECT_EQ(one.row_to_col, many.row_to_col) << t << " threads";
      EXPECT_EQ(one.row_dual, many.row_dual) << t << " threads";
      EXPECT_EQ(one.col_dual, many.col_dual) << t << " threads";
      EXPECT_EQ(one.total, many.total) << t << " threads";
    }
  }
}

TEST(Lap, Deterministic) {
  const Matrix w = small_integers(500, 500, 3, 31);
  const Assignment a = solve_assignment(w.view(), opts(Objective::maximize));
  const Assignment b = solve_assignment(w.view(), opts(Objective::maximize));
  EXPECT_EQ(a.row_to_col, b.row_to_col);
  EXPECT_EQ(a.row_dual, b.row_dual);
  EXPECT_EQ(a.col_dual, b.col_dual);
}

TEST(Lap, MaximiseIsMinimiseOfNegation) {
  const Matrix w = uniform(300, 300, 41, -1.0, 1.0);
  Matrix neg(300, 300);
  for (int i = 0; i < 300; ++i)
    for (int j = 0; j < 300; ++j) neg(i, j) = -w(i, j);
  const Assignment a = solve_assignment(w.view(), opts(Objective::maximize));
  const Assignment b = solve_assignment(neg.view(), opts(Objective::minimize));
  EXPECT_EQ(a.row_to_col, b.row_to_col);  // the solver negates exactly, so the runs are the same
  EXPECT_EQ(a.total, -b.total);
}

}  // namespace
