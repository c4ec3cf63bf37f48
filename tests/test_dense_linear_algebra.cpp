// Backend::symmetric_eigenpairs and Backend::singular_value_decomposition on every compiled backend (the
// CPU reference always, CUDA when compiled; CUDA cases skip without a usable device and fail instead when
// CONVERGENT_REQUIRE_GPU=1): against matrices built from a known spectrum (closed form), against the CPU
// reference, and the similarity indices computed through the backend against the CPU's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backend_test.hpp"
#include "convergent/backend.hpp"
#include "convergent/error.hpp"
#include "convergent/similarity_indices.hpp"
#include "test_analysis_util.hpp"

namespace convergent {
namespace {

using testing::compiled_backends;

// A random n x n orthogonal matrix (testing::random_rotation).
Matrix orthogonal(std::int64_t n, std::uint64_t seed) {
  const std::vector<double> q = testing::random_rotation(n, seed);
  Matrix m(n, n);
  std::copy(q.begin(), q.end(), m.data());
  return m;
}

// <column j of x, column k of y>.
double column_dot(const Matrix& x, std::int64_t j, const Matrix& y, std::int64_t k) {
  double dot = 0.0;
  for (std::int64_t i = 0; i < x.rows(); ++i) dot += x(i, j) * y(i, k);
  return dot;
}

Matrix transpose(const Matrix& m) {
  Matrix t(m.cols(), m.rows());
  for (std::int64_t i = 0; i < m.rows(); ++i)
    for (std::int64_t j = 0; j < m.cols(); ++j) t(j, i) = m(i, j);
  return t;
}

std::string error_text(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

class DenseLinearAlgebra : public testing::PerBackend {
 protected:
  void SetUp() override {
    PerBackend::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    reference_ = make_backend(BackendChoice::cpu);
  }
  std::unique_ptr<Backend> reference_;
};

// A = Q diag(lambda) Q^T, n = 40, lambda spaced 0.25 in [-3, 6.75], shuffled.
struct KnownSpectrum {
  Matrix a, q;
  std::vector<double> lambda;
};
KnownSpectrum known_spectrum() {
  const std::int64_t n = 40;
  KnownSpectrum s{Matrix(n, n), orthogonal(n, 41), std::vector<double>(static_cast<std::size_t>(n))};
  for (std::int64_t i = 0; i < n; ++i) s.lambda[i] = -3.0 + 0.25 * double(i);
  std::shuffle(s.lambda.begin(), s.lambda.end(), std::mt19937_64(42));
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j <= i; ++j) {
      double v = 0.0;
      for (std::int64_t p = 0; p < n; ++p) v += s.q(i, p) * s.lambda[p] * s.q(j, p);
      s.a(i, j) = s.a(j, i) = v;  // exactly symmetric
    }
  return s;
}

TEST_P(DenseLinearAlgebra, SymmetricEigenpairsOfAKnownSpectrum) {
  const KnownSpectrum s = known_spectrum();
  const std::int64_t n = s.a.rows();
  std::vector<std::int64_t> order(static_cast<std::size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](auto x, auto y) { return s.lambda[x] < s.lambda[y]; });
  const Eigenpairs e = backend_->symmetric_eigenpairs(s.a.view());
  ASSERT_EQ(static_cast<std::int64_t>(e.values.size()), n);
  ASSERT_EQ(e.vectors.rows(), n);
  ASSERT_EQ(e.vectors.cols(), n);
  for (std::int64_t j = 0; j < n; ++j) {
    // Backward stable: eigenvalues within a small multiple of n eps ||A|| = 40 x 2.2e-16 x 6.75 = 6e-14.
    EXPECT_NEAR(e.values[j], s.lambda[order[j]], 1e-12) << "value " << j;
    // Vectors up to sign: the gap is 0.25, so the angle is ~ 6e-14 / 0.25; |dot| = cos within 1e-10.
    EXPECT_NEAR(std::abs(column_dot(e.vectors, j, s.q, order[j])), 1.0, 1e-10) << "vector " << j;
    EXPECT_NEAR(column_dot(e.vectors, j, e.vectors, j), 1.0, 1e-12) << "vector " << j;
  }
}

// M = Q1[:, :r] diag(sigma) Q2[:, :r]^T with sigma = 1 + 0.1 k (distinct, gap 0.1), tall and wide.
TEST_P(DenseLinearAlgebra, SingularValueDecompositionOfAKnownMatrix) {
  for (const auto& [rows, cols] : {std::pair<std::int64_t, std::int64_t>{50, 30}, {30, 50}, {1, 7}, {7, 1}}) {
    const std::int64_t r = std::min(rows, cols);
    const Matrix q1 = orthogonal(rows, 43), q2 = orthogonal(cols, 44);
    std::vector<double> sigma(static_cast<std::size_t>(r));
    for (std::int64_t k = 0; k < r; ++k) sigma[k] = 1.0 + 0.1 * double(r - 1 - k);  // descending
    Matrix m(rows, cols);
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t j = 0; j < cols; ++j)
        for (std::int64_t k = 0; k < r; ++k) m(i, j) += q1(i, k) * sigma[k] * q2(j, k);
    const std::string label = std::to_string(rows) + " x " + std::to_string(cols);
    const SingularValueDecomposition values_only = backend_->singular_value_decomposition(m.view(), false);
    const SingularValueDecomposition s = backend_->singular_value_decomposition(m.view(), true);
    ASSERT_EQ(static_cast<std::int64_t>(s.values.size()), r) << label;
    ASSERT_EQ(static_cast<std::int64_t>(values_only.values.size()), r) << label;
    EXPECT_EQ(values_only.u.rows() * values_only.u.cols() + values_only.vt.rows() * values_only.vt.cols(), 0) << label;
    ASSERT_EQ(s.u.rows(), rows);
    ASSERT_EQ(s.u.cols(), r);
    ASSERT_EQ(s.vt.rows(), r);
    ASSERT_EQ(s.vt.cols(), cols);
    const Matrix v = transpose(s.vt);
    for (std::int64_t k = 0; k < r; ++k) {
      // Backward stable: within a small multiple of max(m, n) eps ||M|| = 50 x 2.2e-16 x 3.9 = 4e-14.
      EXPECT_NEAR(s.values[k], sigma[k], 1e-12) << label << " value " << k;
      EXPECT_NEAR(values_only.values[k], sigma[k], 1e-12) << label << " value " << k;
      // Gap 0.1: angles ~ 4e-14 / 0.1. The pair (u_k, v_k) shares one sign.
      const double du = column_dot(s.u, k, q1, k), dv = column_dot(v, k, q2, k);
      EXPECT_NEAR(std::abs(du), 1.0, 1e-10) << label << " u " << k;
      EXPECT_NEAR(du * dv, 1.0, 1e-10) << label << " sign of (u, v) " << k;
    }
  }
}

// The same decompositions as the CPU reference (the CUDA case's point; the CPU case compares the
// reference with itself), on a matrix without structure: a symmetric Gaussian one (n = 64, ||A|| ~ 2
// sqrt(n) = 16, smallest eigenvalue gap ~ 0.05) and a 48 x 64 Gaussian one.
TEST_P(DenseLinearAlgebra, DecompositionsMatchTheCpuReference) {
  const std::int64_t n = 64;
  const testing::Data g = testing::gaussian_data(n, n, 45), w = testing::gaussian_data(48, n, 46);
  Matrix a(n, n), m(48, n);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j <= i; ++j) a(i, j) = a(j, i) = 0.5 * (g(i, j) + g(j, i));
  for (std::int64_t i = 0; i < 48; ++i)
    for (std::int64_t j = 0; j < n; ++j) m(i, j) = w(i, j);
  const Eigenpairs ours = backend_->symmetric_eigenpairs(a.view()), cpu = reference_->symmetric_eigenpairs(a.view());
  for (std::int64_t j = 0; j < n; ++j) {
    // Both backward stable: eigenvalues within ~ n eps ||A|| = 2e-13 of each other.
    EXPECT_NEAR(ours.values[j], cpu.values[j], 1e-11) << "value " << j;
    // Vectors up to sign: angle ~ 2e-13 / gap; 1e-8 holds for gaps down to 1e-4 (checked below).
    const double gap = std::min(j > 0 ? cpu.values[j] - cpu.values[j - 1] : 1e300,
                                j + 1 < n ? cpu.values[j + 1] - cpu.values[j] : 1e300);
    ASSERT_GT(gap, 1e-4) << "the test matrix must have separated eigenvalues";
    EXPECT_NEAR(std::abs(column_dot(ours.vectors, j, cpu.vectors, j)), 1.0, 1e-8) << "vector " << j;
  }
  const SingularValueDecomposition s = backend_->singular_value_decomposition(m.view(), true),
                                   t = reference_->singular_value_decomposition(m.view(), true);
  const Matrix sv = transpose(s.vt), tv = transpose(t.vt);
  for (std::int64_t k = 0; k < 48; ++k) {
    EXPECT_NEAR(s.values[k], t.values[k], 1e-11) << "singular value " << k;
    const double du = column_dot(s.u, k, t.u, k), dv = column_dot(sv, k, tv, k);
    EXPECT_NEAR(std::abs(du), 1.0, 1e-8) << "u " << k;
    EXPECT_NEAR(du * dv, 1.0, 1e-8) << "sign of (u, v) " << k;
  }
}

// Every index through the backend against the CPU's: two nets of correlated Gaussian units (400 samples,
// 12 and 9 units, well-conditioned covariances), so that each index moves by about the decompositions'
// own differences (~1e-13): 1e-10 leaves margin.
TEST_P(DenseLinearAlgebra, SimilarityIndicesMatchTheCpuReference) {
  const testing::Data a = testing::gaussian_data(400, 12, 47);
  testing::Data b = testing::gaussian_data(400, 9, 48);
  for (std::int64_t r = 0; r < 400; ++r)
    for (std::int64_t j = 0; j < 9; ++j) b(r, j) += a(r, j) + 0.5 * a(r, j + 3);
  const Study study = testing::study_of({a, b});
  const PairSimilarity ours = similarity_indices(*backend_, study)[0], cpu = similarity_indices(*reference_, study)[0];
  ASSERT_TRUE(ours.linear_cka && ours.cca && ours.svcca && ours.pwcca && ours.procrustes);
  EXPECT_EQ(*ours.linear_cka, *cpu.linear_cka);  // no decomposition
  ASSERT_EQ(ours.cca->correlations.size(), cpu.cca->correlations.size());
  for (std::size_t k = 0; k < cpu.cca->correlations.size(); ++k)
    EXPECT_NEAR(ours.cca->correlations[k], cpu.cca->correlations[k], 1e-10) << "canonical correlation " << k;
  EXPECT_EQ(ours.svcca->dims_a, cpu.svcca->dims_a);
  EXPECT_EQ(ours.svcca->dims_b, cpu.svcca->dims_b);
  EXPECT_NEAR(ours.svcca->cca.mean, cpu.svcca->cca.mean, 1e-10);
  EXPECT_NEAR(ours.pwcca->value, cpu.pwcca->value, 1e-10);
  EXPECT_NEAR(ours.procrustes->similarity, cpu.procrustes->similarity, 1e-10);
}

TEST_P(DenseLinearAlgebra, BadMatricesAreRefusedWithTheSameWords) {
  Matrix a(4, 4);
  for (std::int64_t i = 0; i < 4; ++i) a(i, i) = 1.0;
  EXPECT_EQ(error_text([&] { backend_->symmetric_eigenpairs(a.block(0, 0, 3, 4)); }),
            "symmetric_eigenpairs: the matrix is 3 x 4, not square");
  a(1, 2) = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(error_text([&] { backend_->symmetric_eigenpairs(a.view()); }),
            "symmetric_eigenpairs: the matrix holds NaN at (1, 2)");
  a(1, 2) = 0.0;
  a(2, 0) = -std::numeric_limits<double>::infinity();
  EXPECT_EQ(error_text([&] { backend_->singular_value_decomposition(a.block(0, 0, 3, 2), true); }),
            "singular_value_decomposition: the matrix holds an infinity at (2, 0)");
  // Empty matrices: nothing to decompose, nothing thrown.
  EXPECT_TRUE(backend_->symmetric_eigenpairs(MatrixView<const double>(nullptr, 0, 0)).values.empty());
  const SingularValueDecomposition none = backend_->singular_value_decomposition(a.block(0, 0, 3, 0), true);
  EXPECT_TRUE(none.values.empty());
  EXPECT_EQ(none.u.rows(), 3);
  EXPECT_EQ(none.vt.cols(), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, DenseLinearAlgebra, ::testing::ValuesIn(compiled_backends()),
                         testing::backend_name);

}  // namespace
}  // namespace convergent
