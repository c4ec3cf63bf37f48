// Similarity indices against float64 oracles on the raw samples (plain loops; LAPACK only for the
// oracle's singular values), and the sanity cases of their papers: a net with itself, with a rotation of
// itself, with an independent net; dead units, rank deficiency and input magnitude.
#include <gtest/gtest.h>
#include <lapacke.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include "convergent/error.hpp"
#include "analysis/live_units.hpp"
#include "convergent/similarity_indices.hpp"
#include "test_analysis_util.hpp"
#include "test_util.hpp"

namespace convergent {
namespace {

using testing::Data;

// The CPU reference; tests/test_conformance.cpp holds the CUDA backend's indices against it.
Backend& cpu() {
  static const std::unique_ptr<Backend> backend = make_backend(BackendChoice::cpu);
  return *backend;
}

// Orthonormal basis of the columns of x (modified Gram-Schmidt; x must have full column rank).
Data orthonormal_columns(Data q) {
  for (std::int64_t j = 0; j < q.cols; ++j) {
    for (std::int64_t k = 0; k < j; ++k) {
      double dot = 0.0;
      for (std::int64_t r = 0; r < q.rows; ++r) dot += q(r, j) * q(r, k);
      for (std::int64_t r = 0; r < q.rows; ++r) q(r, j) -= dot * q(r, k);
    }
    double norm = 0.0;
    for (std::int64_t r = 0; r < q.rows; ++r) norm += q(r, j) * q(r, j);
    for (std::int64_t r = 0; r < q.rows; ++r) q(r, j) /= std::sqrt(norm);
  }
  return q;
}

Data transpose_product(const Data& x, const Data& y) {  // x^T y
  Data out(x.cols, y.cols);
  for (std::int64_t i = 0; i < x.cols; ++i)
    for (std::int64_t j = 0; j < y.cols; ++j) {
      double s = 0.0;
      for (std::int64_t r = 0; r < x.rows; ++r) s += x(r, i) * y(r, j);
      out(i, j) = s;
    }
  return out;
}

// Singular values (descending) and, when asked, the left vectors u (rows x r) and right vectors as
// rows vt (r x cols).
struct OracleSvd {
  std::vector<double> s;
  Data u, vt;
};
OracleSvd oracle_svd(Data m) {
  const std::int64_t r = std::min(m.rows, m.cols);
  OracleSvd out;
  out.s.resize(static_cast<std::size_t>(r));
  out.u = Data(m.rows, r);
  out.vt = Data(r, m.cols);
  std::vector<double> superb(static_cast<std::size_t>(r));
  const auto info = LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'S', 'S', static_cast<lapack_int>(m.rows), static_cast<lapack_int>(m.cols),
                                   m.v.data(), static_cast<lapack_int>(m.cols), out.s.data(), out.u.v.data(),
                                   static_cast<lapack_int>(r), out.vt.v.data(), static_cast<lapack_int>(m.cols), superb.data());
  EXPECT_EQ(info, 0);
  return out;
}

struct Oracle {
  double cka = 0, procrustes_nu = 0, pwcca = 0;
  std::vector<double> cca, svcca;
  std::int64_t svcca_dims_a = 0, svcca_dims_b = 0;
};

Data first_principal_scores(const Data& xc, double share, std::int64_t* dims) {
  const OracleSvd s = oracle_svd(xc);
  double total = 0.0, kept = 0.0;
  for (const double v : s.s) total += v * v;
  std::int64_t k = 0;
  while (k < static_cast<std::int64_t>(s.s.size()) && (k == 0 || kept < share * total)) kept += s.s[k] * s.s[k], ++k;
  *dims = k;
  Data scores(xc.rows, k);
  for (std::int64_t r = 0; r < xc.rows; ++r)
    for (std::int64_t j = 0; j < k; ++j) {
      double v = 0.0;
      for (std::int64_t i = 0; i < xc.cols; ++i) v += xc(r, i) * s.vt(j, i);
      scores(r, j) = v;
    }
  return scores;
}

// Every index straight from the samples: CKA in feature space, CCA as the singular values of Qa^T Qb
// (Bjorck and Golub), PWCCA with the unit-norm variates H = Qa U, SVCCA on principal scores from the
// data's SVD, Procrustes as the nuclear norm of Xc^T Yc over the Frobenius norms.
Oracle oracle(const Data& x, const Data& y) {
  const Data xc = testing::centred(x, false), yc = testing::centred(y, false);
  Oracle o;
  auto frobenius_squared = [](const Data& m) {
    double s = 0.0;
    for (const double v : m.v) s += v * v;
    return s;
  };
  o.cka = frobenius_squared(transpose_product(xc, yc)) /
          std::sqrt(frobenius_squared(transpose_product(xc, xc)) * frobenius_squared(transpose_product(yc, yc)));
  double nuclear = 0.0;
  for (const double v : oracle_svd(transpose_product(xc, yc)).s) nuclear += v;
  o.procrustes_nu = nuclear / std::sqrt(frobenius_squared(xc) * frobenius_squared(yc));
  const Data qa = orthonormal_columns(xc), qb = orthonormal_columns(yc);
  const OracleSvd c = oracle_svd(transpose_product(qa, qb));
  o.cca = c.s;
  const bool weigh_x = x.cols <= y.cols;
  const Data& q = weigh_x ? qa : qb;
  const Data& raw = weigh_x ? xc : yc;
  double weighted = 0.0, total = 0.0;
  for (std::size_t i = 0; i < c.s.size(); ++i) {
    double alpha = 0.0;
    for (std::int64_t j = 0; j < raw.cols; ++j) {
      double dot = 0.0;  // <h_i, x_j> with h_i = Q u_i (or Q v_i)
      for (std::int64_t r = 0; r < raw.rows; ++r) {
        double h = 0.0;
        for (std::int64_t k = 0; k < q.cols; ++k) h += q(r, k) * (weigh_x ? c.u(k, static_cast<std::int64_t>(i)) : c.vt(static_cast<std::int64_t>(i), k));
        dot += h * raw(r, j);
      }
      alpha += std::abs(dot);
    }
    weighted += alpha * c.s[i];
    total += alpha;
  }
  o.pwcca = weighted / total;
  const Data sa = first_principal_scores(xc, 0.99, &o.svcca_dims_a), sb = first_principal_scores(yc, 0.99, &o.svcca_dims_b);
  o.svcca = oracle_svd(transpose_product(orthonormal_columns(sa), orthonormal_columns(sb))).s;
  return o;
}

// Song et al. (2012, eq. 5): the unbiased HSIC of linear kernels straight from the raw (uncentred)
// samples, with the n x n Gram matrices K = X X^T, L = Y Y^T and their diagonals zeroed.
double oracle_unbiased_hsic(const Data& x, const Data& y) {
  const std::int64_t n = x.rows;
  auto gram = [n](const Data& d) {
    Data k(n, n);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < n; ++j) {
        double s = 0.0;
        for (std::int64_t c = 0; c < d.cols; ++c) s += d(i, c) * d(j, c);
        k(i, j) = i == j ? 0.0 : s;
      }
    return k;
  };
  const Data k = gram(x), l = gram(y);
  double trace_kl = 0.0, sum_k = 0.0, sum_l = 0.0, kl_sum = 0.0;
  std::vector<double> k_rows(static_cast<std::size_t>(n), 0.0), l_rows(static_cast<std::size_t>(n), 0.0);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      trace_kl += k(i, j) * l(j, i);
      sum_k += k(i, j);
      sum_l += l(i, j);
      k_rows[i] += k(i, j);
      l_rows[i] += l(i, j);
    }
  for (std::int64_t i = 0; i < n; ++i) kl_sum += k_rows[i] * l_rows[i];  // 1^T K L 1 (both symmetric)
  const double m = static_cast<double>(n);
  return (trace_kl + sum_k * sum_l / ((m - 1) * (m - 2)) - 2.0 / (m - 2) * kl_sum) / (m * (m - 3));
}

double oracle_debiased_cka(const Data& x, const Data& y) {
  return oracle_unbiased_hsic(x, y) / std::sqrt(oracle_unbiased_hsic(x, x) * oracle_unbiased_hsic(y, y));
}

Data shifted(Data d, double by) {
  for (std::int64_t r = 0; r < d.rows; ++r)
    for (std::int64_t c = 0; c < d.cols; ++c) d(r, c) += by * static_cast<double>(c + 1);
  return d;
}

double mean(const std::vector<double>& v) {
  double s = 0.0;
  for (const double x : v) s += x;
  return s / static_cast<double>(v.size());
}

// Net A: 8 units, net B: 6 units, both noisy mixtures of 5 shared factors, with offsets and unequal
// scales (CKA and Procrustes depend on them).
std::vector<Data> related_nets(std::uint64_t seed, std::int64_t rows = 300) {
  const Data f = testing::gaussian_data(rows, 5, seed);
  Data a = testing::mix(f, testing::gaussian_data(5, 8, seed + 1).v, 8);
  Data b = testing::mix(f, testing::gaussian_data(5, 6, seed + 2).v, 6);
  const Data na = testing::gaussian_data(rows, 8, seed + 3), nb = testing::gaussian_data(rows, 6, seed + 4);
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t c = 0; c < 8; ++c) a(r, c) = (1 + c) * (a(r, c) + 0.7 * na(r, c)) + 3.0;
    for (std::int64_t c = 0; c < 6; ++c) b(r, c) = std::max(0.0, b(r, c) + 0.9 * nb(r, c)) - 2.0;
  }
  return {a, b};
}

void expect_matches_oracle(const PairSimilarity& s, const Oracle& o, double tolerance) {
  ASSERT_TRUE(s.linear_cka && s.cca && s.svcca && s.pwcca && s.procrustes);
  EXPECT_NEAR(*s.linear_cka, o.cka, tolerance);
  ASSERT_EQ(s.cca->correlations.size(), o.cca.size());
  for (std::size_t i = 0; i < o.cca.size(); ++i) EXPECT_NEAR(s.cca->correlations[i], o.cca[i], tolerance) << i;
  EXPECT_NEAR(s.cca->mean, mean(o.cca), tolerance);
  EXPECT_EQ(s.svcca->dims_a, o.svcca_dims_a);
  EXPECT_EQ(s.svcca->dims_b, o.svcca_dims_b);
  EXPECT_NEAR(s.svcca->cca.mean, mean(o.svcca), tolerance);
  EXPECT_NEAR(s.pwcca->value, o.pwcca, tolerance);
  EXPECT_NEAR(s.procrustes->similarity, o.procrustes_nu, tolerance);
  EXPECT_NEAR(s.procrustes->distance, std::sqrt(2 - 2 * o.procrustes_nu), tolerance);
  EXPECT_NEAR(s.procrustes->angle, std::acos(o.procrustes_nu), tolerance);
}

TEST(SimilarityIndices, MatchFloat64OraclesOnTheRawSamples) {
  const std::vector<Data> nets = related_nets(21);
  const Study study = testing::study_of(nets);
  const Oracle o = oracle(nets[0], nets[1]);
  SimilarityOptions exact;
  exact.ridge = 0.0;  // the oracle has no ridge: agreement to float64 rounding of the moments
  const auto pairs = similarity_indices(cpu(), study, exact);
  ASSERT_EQ(pairs.size(), 1u);
  EXPECT_EQ(pairs[0].live_a, 8);
  EXPECT_EQ(pairs[0].pwcca->weighted_net, 1);  // B has fewer units
  expect_matches_oracle(pairs[0], o, 1e-9);
  // The default ridge (1e-6 of the mean variance) moves canonical correlations by about 1e-6 / lambda_min.
  expect_matches_oracle(similarity_indices(cpu(), study)[0], o, 1e-4);
  // The order of the nets: CKA, CCA and Procrustes are symmetric.
  const auto swapped = similarity_indices(cpu(), testing::study_of({nets[1], nets[0]}), exact)[0];
  EXPECT_NEAR(*swapped.linear_cka, o.cka, 1e-9);
  EXPECT_NEAR(swapped.cca->mean, mean(o.cca), 1e-9);
  EXPECT_NEAR(swapped.procrustes->similarity, o.procrustes_nu, 1e-9);
}

TEST(SimilarityIndices, DebiasedCkaMatchesSongsEstimatorOnTheRawSamples) {
  // The claim the streaming form rests on: the unbiased HSIC of linear kernels does not move when every
  // sample is shifted by one constant vector (here by 10 x (1, 2, ...)). Both sides are the O(n^2)
  // oracle on raw data; they differ by float64 rounding of Gram entries about 100 x their spread, whose
  // squares then cancel to the estimator's size (measured 2e-9): 1e-7, far below what a shift does to an
  // estimator that is not invariant (plain CKA on uncentred data moves by O(1)).
  const std::vector<Data> nets = related_nets(31, 120);
  const double raw = oracle_debiased_cka(nets[0], nets[1]);
  EXPECT_NEAR(oracle_debiased_cka(shifted(nets[0], 10.0), shifted(nets[1], -10.0)), raw, 1e-7);
  EXPECT_GT(std::abs(raw - oracle(nets[0], nets[1]).cka), 1e-3);  // debiasing matters at n = 120
  // From the moments (exact float64 norm sums): agreement to float64 rounding.
  const PairSimilarity s = similarity_indices(cpu(), testing::study_of(nets))[0];
  ASSERT_TRUE(s.debiased_linear_cka);
  EXPECT_NEAR(*s.debiased_linear_cka, raw, 1e-10);
  EXPECT_NEAR(*similarity_indices(cpu(), testing::study_of({nets[1], nets[0]}))[0].debiased_linear_cka, raw, 1e-10);
  // Streamed through the CPU accumulator (float32 products, norm sums about its origin, moved to the mean
  // at the end), in batches of 32 rows: float32 rounding, 1e-5.
  testing::ScratchDir dir;
  for (int k = 0; k < 2; ++k)
    testing::write_array(dir.file("n" + std::to_string(k) + ".npy"), shifted(nets[k], 50.0).v, {nets[k].rows, nets[k].cols});
  auto backend = make_backend(BackendChoice::cpu);
  StudyOptions options;
  options.batch_rows = 32;
  const Study streamed = run_study(*backend, {{"a", dir.file("n0.npy")}, {"b", dir.file("n1.npy")}}, options);
  EXPECT_NEAR(*similarity_indices(cpu(), streamed)[0].debiased_linear_cka, raw, 1e-5);
  // Below 4 samples the estimator is not defined.
  const PairSimilarity tiny =
      similarity_indices(cpu(), testing::study_of({testing::gaussian_data(3, 2, 1), testing::gaussian_data(3, 2, 2)}))[0];
  EXPECT_TRUE(tiny.linear_cka);
  EXPECT_FALSE(tiny.debiased_linear_cka);
}

TEST(SimilarityIndices, ANetWithItselfAndWithARotationOfItself) {
  const Data a = related_nets(4)[0];
  const Data rotated = testing::mix(a, testing::random_rotation(8, 99), 8);
  SimilarityOptions exact;
  exact.ridge = 0.0;
  for (const Data& other : {a, rotated}) {
    const PairSimilarity s = similarity_indices(cpu(), testing::study_of({a, other}), exact)[0];
    EXPECT_NEAR(*s.linear_cka, 1.0, 1e-12);
    EXPECT_NEAR(*s.debiased_linear_cka, 1.0, 1e-12);
    for (const double r : s.cca->correlations) EXPECT_NEAR(r, 1.0, 1e-9);
    EXPECT_NEAR(s.svcca->cca.mean, 1.0, 1e-9);
    EXPECT_NEAR(s.pwcca->value, 1.0, 1e-9);
    EXPECT_NEAR(s.procrustes->similarity, 1.0, 1e-12);
    EXPECT_LT(s.procrustes->distance, 1e-6);  // sqrt(2 - 2 nu): the square root of rounding
    EXPECT_LT(s.procrustes->angle, 1e-6);
  }
  // Every index is invariant to an orthogonal map of one net: (A, B) and (A Q, B) agree.
  const Data b = related_nets(4)[1];
  const PairSimilarity plain = similarity_indices(cpu(), testing::study_of({a, b}), exact)[0];
  const PairSimilarity turned = similarity_indices(cpu(), testing::study_of({rotated, b}), exact)[0];
  EXPECT_NEAR(*plain.linear_cka, *turned.linear_cka, 1e-12);
  EXPECT_NEAR(*plain.debiased_linear_cka, *turned.debiased_linear_cka, 1e-12);
  EXPECT_NEAR(plain.cca->mean, turned.cca->mean, 1e-9);
  EXPECT_NEAR(plain.svcca->cca.mean, turned.svcca->cca.mean, 1e-9);
  EXPECT_NEAR(plain.pwcca->value, turned.pwcca->value, 1e-9);
  EXPECT_NEAR(plain.procrustes->similarity, turned.procrustes->similarity, 1e-12);
}

TEST(SimilarityIndices, IndependentNetsSitNearTheNull) {
  // 10 + 10 independent Gaussian units, 4000 samples. Null sizes: CKA about sqrt(p q) / n = 0.0025;
  // canonical correlations about sqrt(p / n) = 0.05; nu about the same, so distance near sqrt(2).
  const PairSimilarity s = similarity_indices(cpu(), 
      testing::study_of({testing::gaussian_data(4000, 10, 1), testing::gaussian_data(4000, 10, 2)}))[0];
  EXPECT_LT(*s.linear_cka, 0.01);
  // Debiased CKA is centred on 0 for independent nets: its standard error for isotropic units is about
  // sqrt(2) / n = 3.5e-4 (HSIC_1 of the pair has variance 2 p q / n^2, the self-terms are about p and
  // q); 5 standard errors. Plain CKA's bias sqrt(p q) / n is gone.
  EXPECT_LT(std::abs(*s.debiased_linear_cka), 5 * std::sqrt(2.0) / 4000);
  EXPECT_LT(s.cca->mean, 0.1);
  EXPECT_LT(s.svcca->cca.mean, 0.1);
  EXPECT_LT(s.pwcca->value, 0.1);
  EXPECT_LT(s.procrustes->similarity, 0.1);
  EXPECT_GT(s.procrustes->distance, 1.3);
  EXPECT_GT(s.procrustes->angle, 1.4);
}

TEST(SimilarityIndices, UnitScaleMovesCkaButNotCca) {
  std::vector<Data> nets = related_nets(8);
  const PairSimilarity before = similarity_indices(cpu(), testing::study_of(nets))[0];
  for (std::int64_t r = 0; r < nets[1].rows; ++r) nets[1](r, 0) *= 100.0;
  const PairSimilarity after = similarity_indices(cpu(), testing::study_of(nets))[0];
  EXPECT_NEAR(before.cca->mean, after.cca->mean, 1e-9);  // CCA works on correlations
  EXPECT_GT(std::abs(*before.linear_cka - *after.linear_cka), 1e-3);
}

TEST(SimilarityIndices, DeadUnitsAreLeftOutAndRankDeficiencyStaysFinite) {
  std::vector<Data> nets = related_nets(13);
  Data with_dead(nets[0].rows, 9), duplicated(nets[0].rows, 9);
  for (std::int64_t r = 0; r < nets[0].rows; ++r) {
    for (std::int64_t c = 0; c < 8; ++c) with_dead(r, c + (c >= 3)) = duplicated(r, c) = nets[0](r, c);
    with_dead(r, 3) = 0.25;                   // a dead unit in the middle
    duplicated(r, 8) = 2.0 * nets[0](r, 1);  // a copy of unit 1: the correlation matrix is singular
  }
  const PairSimilarity reference = similarity_indices(cpu(), testing::study_of(nets))[0];
  const PairSimilarity dead = similarity_indices(cpu(), testing::study_of({with_dead, nets[1]}))[0];
  EXPECT_EQ(dead.live_a, 8);
  EXPECT_EQ(dead.dead_a, 1);
  EXPECT_NEAR(*dead.linear_cka, *reference.linear_cka, 1e-12);
  EXPECT_NEAR(dead.cca->mean, reference.cca->mean, 1e-12);
  EXPECT_NEAR(dead.pwcca->value, reference.pwcca->value, 1e-12);
  for (const double ridge : {1e-6, 0.0}) {
    SimilarityOptions options;
    options.ridge = ridge;
    const PairSimilarity s = similarity_indices(cpu(), testing::study_of({duplicated, nets[1]}), options)[0];
    for (const double r : s.cca->correlations) EXPECT_TRUE(std::isfinite(r) && r >= 0.0 && r <= 1.0) << ridge;
    EXPECT_TRUE(std::isfinite(s.pwcca->value));
    EXPECT_TRUE(std::isfinite(s.svcca->cca.mean));
    // The copy adds no direction: the canonical correlations are those without it, to the ridge's effect.
    EXPECT_NEAR(s.cca->mean * 6, reference.cca->mean * 6, 1e-4) << ridge;
  }
}

TEST(SimilarityIndices, InputMagnitudeDoesNotMatter) {
  // 1e200 x the data, streamed through run_study: comoments are kept scaled per unit, and the indices
  // factor one power of two per net out, so nothing overflows. Tolerance: float32 batch products.
  const std::vector<Data> nets = related_nets(17, 500);
  testing::ScratchDir dir;
  for (int k = 0; k < 2; ++k) {
    std::vector<double> big = nets[k].v;
    for (double& v : big) v *= 1e200;
    testing::write_array(dir.file("n" + std::to_string(k) + ".npy"), big, {nets[k].rows, nets[k].cols});
  }
  auto backend = make_backend(BackendChoice::cpu);
  const Study streamed = run_study(*backend, {{"a", dir.file("n0.npy")}, {"b", dir.file("n1.npy")}}, {});
  const PairSimilarity s = similarity_indices(cpu(), streamed)[0];
  const PairSimilarity reference = similarity_indices(cpu(), testing::study_of(nets))[0];
  EXPECT_NEAR(*s.linear_cka, *reference.linear_cka, 1e-5);
  EXPECT_NEAR(s.cca->mean, reference.cca->mean, 1e-5);
  EXPECT_NEAR(s.svcca->cca.mean, reference.svcca->cca.mean, 1e-5);
  EXPECT_NEAR(s.pwcca->value, reference.pwcca->value, 1e-5);
  EXPECT_NEAR(s.procrustes->similarity, reference.procrustes->similarity, 1e-5);
}

// The covariance blocks the indices read are scaled by powers of two without std::ldexp's call; the bits
// must be ldexp's, subnormal and overflowing results included (the oracle: std::ldexp itself).
TEST(SimilarityIndices, PowerOfTwoScalingHasTheBitsOfLdexp) {
  const double xs[] = {1.0, -1.5, 0.1, 3.0e-300, 1.7e300, std::nextafter(1.0, 2.0), 4.9e-324, 2.2250738585072014e-308,
                       -0.0, 0.0};
  for (const double x : xs)
    for (int k = -2200; k <= 2200; ++k) {
      const double expected = std::ldexp(x, k), got = detail::times_power_of_two(x, k);
      ASSERT_EQ(std::memcmp(&expected, &got, sizeof got), 0) << x << " x 2^" << k << ": " << got << " vs " << expected;
    }
}

// Image-level CKA (--samples images): every input one sample of its flattened C x H x W features. Two
// related nets of 2 x 3 x 2 and 3 x 3 x 2 maps, written as NCHW float64 files, so each input's features are
// a row of the Data below.
struct ImageNets {
  std::vector<Data> flat;
  testing::ScratchDir dir;
  std::vector<NetSource> sources;
  explicit ImageNets(std::int64_t inputs) {
    const Data f = testing::gaussian_data(inputs, 4, 5);
    flat = {testing::mix(f, testing::gaussian_data(4, 12, 6).v, 12), testing::mix(f, testing::gaussian_data(4, 18, 7).v, 18)};
    const Data noise = testing::gaussian_data(inputs, 18, 8);
    for (std::int64_t r = 0; r < inputs; ++r)
      for (std::int64_t c = 0; c < 18; ++c) flat[1](r, c) = std::max(0.0, flat[1](r, c) + noise(r, c)) + 1.5;
    testing::write_array(dir.file("a.npy"), flat[0].v, {inputs, 2, 3, 2});
    testing::write_array(dir.file("b.npy"), flat[1].v, {inputs, 3, 3, 2});
    sources = {{"a", dir.file("a.npy")}, {"b", dir.file("b.npy")}};
  }
};

Data rows_of(const Data& d, std::int64_t first, std::int64_t count) {
  Data out(count, d.cols);
  std::copy(d.v.begin() + first * d.cols, d.v.begin() + (first + count) * d.cols, out.v.begin());
  return out;
}

TEST(ImageCka, ExactFromTheMomentsOfTheFlattenedFeatures) {
  ImageNets nets(60);
  auto backend = make_backend(BackendChoice::cpu);
  StudyOptions options;
  options.samples = Samples::images;
  options.batch_rows = 7 * 6;  // batches of 7 images: the staging of inputs does not depend on them
  const Study study = run_study(*backend, nets.sources, options);
  ASSERT_TRUE(study.image_cka);
  EXPECT_EQ(study.image_cka->estimator, ImageCka::Estimator::exact);
  EXPECT_EQ(study.image_cka->features, (std::vector<std::int64_t>{12, 18}));
  EXPECT_EQ(study.image_cka->moments.samples, 60);
  const PairSimilarity s = image_cka_indices(cpu(), *study.image_cka)[0];
  // Against the oracles on the flattened raw data; float32 batch products: 1e-5.
  EXPECT_NEAR(*s.linear_cka, oracle(nets.flat[0], nets.flat[1]).cka, 1e-5);
  EXPECT_NEAR(*s.debiased_linear_cka, oracle_debiased_cka(nets.flat[0], nets.flat[1]), 1e-5);
  // The positions' study is the paper's: 2 and 3 units, 6 samples per image.
  EXPECT_EQ(study.moments.samples, 360);
  EXPECT_EQ(study.nets[1].units, 3);
  // A net with itself.
  const Study self = run_study(*backend, {nets.sources[1], {"c", nets.sources[1].path}}, options);
  const PairSimilarity one = image_cka_indices(cpu(), *self.image_cka)[0];
  EXPECT_NEAR(*one.linear_cka, 1.0, 1e-6);
  EXPECT_NEAR(*one.debiased_linear_cka, 1.0, 1e-6);
}

TEST(ImageCka, MinibatchEstimatorOfNguyenEtAl) {
  // 44 inputs in minibatches of 8: five of 8 and a last one of 4 (used: the estimator needs 4). Oracle:
  // the O(m^2) Song et al. estimator per minibatch on the raw flattened data, averaged, then the ratio.
  ImageNets nets(44);
  auto backend = make_backend(BackendChoice::cpu);
  StudyOptions options;
  options.samples = Samples::images;
  options.image_exact_features = 0;  // force the minibatch estimator
  options.image_minibatch = 8;
  options.batch_rows = 6;  // one image a batch asked for: batches become whole minibatches
  const Study study = run_study(*backend, nets.sources, options);
  ASSERT_TRUE(study.image_cka);
  const ImageCka& image = *study.image_cka;
  EXPECT_EQ(image.estimator, ImageCka::Estimator::minibatch);
  EXPECT_EQ(image.minibatches, 6);
  EXPECT_EQ(image.last_minibatch_inputs, 4);
  double ab = 0.0, aa = 0.0, bb = 0.0;
  for (std::int64_t first = 0; first < 44; first += 8) {
    const std::int64_t m = std::min<std::int64_t>(8, 44 - first);
    const Data x = rows_of(nets.flat[0], first, m), y = rows_of(nets.flat[1], first, m);
    ab += oracle_unbiased_hsic(x, y);
    aa += oracle_unbiased_hsic(x, x);
    bb += oracle_unbiased_hsic(y, y);
  }
  EXPECT_NEAR(image.hsic(0, 1), ab / 6, 1e-9 * std::sqrt(aa * bb) / 6);  // float64 throughout
  const PairSimilarity s = image_cka_indices(cpu(), image)[0];
  EXPECT_FALSE(s.linear_cka);
  EXPECT_NEAR(*s.debiased_linear_cka, ab / std::sqrt(aa * bb), 1e-9);
  // Sanity: a net with itself is 1; an independent net sits near 0. For independent Gaussian features
  // HSIC_1 of one minibatch has variance about 2 ||Cov(A)||_F^2 ||Cov(B)||_F^2 / m^2, so the ratio's
  // standard error over k minibatches is about sqrt(2 / k) / m = 0.07 here (k = 6, m = 8); 0.35 is 5 of them.
  const Study self = run_study(*backend, {nets.sources[0], {"c", nets.sources[0].path}}, options);
  EXPECT_NEAR(*image_cka_indices(cpu(), *self.image_cka)[0].debiased_linear_cka, 1.0, 1e-12);
  testing::write_array(nets.dir.file("independent.npy"), testing::gaussian_data(44, 12, 99).v, {44, 2, 3, 2});
  const Study independent = run_study(*backend, {nets.sources[0], {"i", nets.dir.file("independent.npy")}}, options);
  const double null_value = *image_cka_indices(cpu(), *independent.image_cka)[0].debiased_linear_cka;
  EXPECT_LT(std::abs(null_value), 0.35) << null_value;
}

TEST(ImageCka, CliStatesTheEstimatorInSummaryJson) {
  ImageNets nets(30);
  const auto r = testing::run_cli("align " + nets.sources[0].path + " " + nets.sources[1].path +
                                  " --samples images --clusters none --no-report --analyses linear_cka --out " +
                                  nets.dir.file("out"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream in(nets.dir.file("out/summary.json"));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("\"image_cka\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"estimator\": \"exact\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"samples\": \"images\""), std::string::npos) << text;
  const auto bad = testing::run_cli("align " + nets.sources[0].path + " " + nets.sources[1].path +
                                    " --samples pixels --out " + nets.dir.file("bad"));
  EXPECT_NE(bad.exit_code, 0);
}

TEST(SimilarityIndices, OptionsSelectAndAreChecked) {
  const Study study = testing::study_of(related_nets(2));
  SimilarityOptions options;
  options.cca = options.svcca = options.procrustes = false;
  const PairSimilarity s = similarity_indices(cpu(), study, options)[0];
  EXPECT_TRUE(s.linear_cka && s.pwcca);
  EXPECT_FALSE(s.cca || s.svcca || s.procrustes);
  options.ridge = -1.0;
  EXPECT_THROW(similarity_indices(cpu(), study, options), Error);
  options.ridge = 0.0;
  options.svcca_variance = 1.5;
  EXPECT_THROW(similarity_indices(cpu(), study, options), Error);
}

}  // namespace
}  // namespace convergent
