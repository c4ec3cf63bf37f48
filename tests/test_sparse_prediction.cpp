// Lasso in covariance form: the closed form on an orthogonal design, a float64 coordinate descent on the
// raw samples as the oracle, the KKT certificate, the path's shape, dead units, and bad inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "convergent/error.hpp"
#include "convergent/sparse_prediction.hpp"
#include "test_analysis_util.hpp"

namespace convergent {
namespace {

using testing::Data;

double soft(double z, double a) { return z > a ? z - a : (z < -a ? z + a : 0.0); }

// The oracle: scikit-learn's Lasso objective (1/2n) ||y - X w||^2 + alpha ||w||_1 on z-scored raw
// samples, minimised by plain cyclic coordinate descent on the residual until no weight moves by more
// than 1e-15: no gram matrix, no working sets, no duality gap.
std::vector<double> oracle_lasso(const Data& x, const std::vector<double>& y, double alpha) {
  const std::int64_t n = x.rows, p = x.cols;
  std::vector<double> w(static_cast<std::size_t>(p), 0.0), residual = y;
  for (int sweep = 0; sweep < 200000; ++sweep) {
    double largest = 0.0;
    for (std::int64_t j = 0; j < p; ++j) {
      double rho = 0.0, norm = 0.0;
      for (std::int64_t r = 0; r < n; ++r) {
        rho += x(r, j) * (residual[r] + x(r, j) * w[j]);
        norm += x(r, j) * x(r, j);
      }
      const double updated = soft(rho / static_cast<double>(n), alpha) / (norm / static_cast<double>(n));
      const double delta = updated - w[j];
      if (delta != 0.0)
        for (std::int64_t r = 0; r < n; ++r) residual[r] -= delta * x(r, j);
      w[j] = updated;
      largest = std::max(largest, std::abs(delta));
    }
    if (largest < 1e-15) break;
  }
  return w;
}

double oracle_objective(const Data& x, const std::vector<double>& y, const std::vector<double>& w, double alpha,
                        double* loss) {
  double ss = 0.0, l1 = 0.0;
  for (std::int64_t r = 0; r < x.rows; ++r) {
    double e = y[r];
    for (std::int64_t j = 0; j < x.cols; ++j) e -= x(r, j) * w[j];
    ss += e * e;
  }
  for (const double v : w) l1 += std::abs(v);
  *loss = ss / static_cast<double>(x.rows);
  return 0.5 * *loss + alpha * l1;
}

// Net A: 10 correlated units (mixtures of 6 factors plus noise); net B: 4 units driven by A's factors.
std::vector<Data> correlated_nets(std::uint64_t seed) {
  const std::int64_t rows = 400;
  const Data factors = testing::gaussian_data(rows, 6, seed);
  const Data wa = testing::gaussian_data(6, 10, seed + 1), wb = testing::gaussian_data(6, 4, seed + 2);
  Data a = testing::mix(factors, wa.v, 10), b = testing::mix(factors, wb.v, 4);
  const Data na = testing::gaussian_data(rows, 10, seed + 3), nb = testing::gaussian_data(rows, 4, seed + 4);
  for (std::size_t i = 0; i < a.v.size(); ++i) a.v[i] = std::max(0.0, a.v[i] + 0.5 * na.v[i]);  // ReLU units
  for (std::size_t i = 0; i < b.v.size(); ++i) b.v[i] += 1.5 * nb.v[i];
  return {a, b};
}

TEST(SparsePrediction, OrthogonalDesignIsSoftThresholding) {
  // R = I: each weight is S(c_j, alpha) exactly, and loss = 1 - 2 w.c + |w|^2.
  const Matrix gram = [] {
    Matrix m(5, 5);
    for (int i = 0; i < 5; ++i) m(i, i) = 1.0;
    return m;
  }();
  const std::vector<double> c = {0.6, -0.3, 0.05, 0.0, -0.12};
  LassoOptions options;
  options.alphas = {0.1, 0.01};
  const auto fits = lasso_path(gram.view(), MatrixView<const double>(c.data(), 1, 5), options);
  for (std::size_t k = 0; k < 2; ++k) {
    const double alpha = options.alphas[k];
    const LassoFit& fit = fits[k][0];
    std::vector<double> w(5, 0.0);
    for (std::size_t i = 0; i < fit.predictors.size(); ++i) w[static_cast<std::size_t>(fit.predictors[i])] = fit.weights[i];
    double loss = 1.0;
    for (int j = 0; j < 5; ++j) {
      EXPECT_NEAR(w[j], soft(c[j], alpha), 1e-15) << "alpha " << alpha << ", predictor " << j;
      loss += -2.0 * w[j] * c[j] + w[j] * w[j];
    }
    EXPECT_NEAR(fit.loss, loss, 1e-15);
    EXPECT_TRUE(fit.converged);
  }
  // Strongest first: at alpha 0.01, |0.59| > |-0.29| > |-0.11| > |0.04|.
  EXPECT_EQ(fits[1][0].predictors, (std::vector<std::int64_t>{0, 1, 4, 2}));
}

TEST(SparsePrediction, MatchesAFloat64CoordinateDescentOnTheRawSamples) {
  const std::vector<Data> nets = correlated_nets(11);
  const Study study = testing::study_of(nets);
  LassoOptions options;
  options.alphas = {0.003, 0.03, 0.1};
  options.tolerance = 1e-12;  // the objective within 1e-12 (relative) of the optimum
  const SparsePrediction s = sparse_prediction(study, 0, 1, options);
  ASSERT_EQ(s.targets.size(), 4u);
  ASSERT_EQ(s.path.size(), 3u);
  const Data x = testing::centred(nets[0], true), z = testing::centred(nets[1], true);
  for (std::size_t k = 0; k < options.alphas.size(); ++k) {
    const double alpha = options.alphas[k];
    for (std::int64_t b = 0; b < 4; ++b) {
      std::vector<double> y(static_cast<std::size_t>(z.rows));
      for (std::int64_t r = 0; r < z.rows; ++r) y[r] = z(r, b);
      const std::vector<double> w = oracle_lasso(x, y, alpha);
      double oracle_loss = 0.0;
      const double objective = oracle_objective(x, y, w, alpha, &oracle_loss);
      const LassoFit& fit = s.path[k].fits[static_cast<std::size_t>(b)];
      // Our objective and loss read from the correlation matrix: equal to the raw-sample ones to float64
      // rounding of the moments (1e-12 covers the sums over 400 samples).
      std::vector<double> ours(10, 0.0);
      for (std::size_t i = 0; i < fit.predictors.size(); ++i) ours[static_cast<std::size_t>(fit.predictors[i])] = fit.weights[i];
      double our_loss = 0.0;
      const double our_objective_on_samples = oracle_objective(x, y, ours, alpha, &our_loss);
      EXPECT_NEAR(fit.objective, our_objective_on_samples, 1e-12 * objective);
      EXPECT_NEAR(fit.loss, our_loss, 1e-11);
      EXPECT_LE(std::abs(fit.objective - objective), 1e-9 * objective) << "alpha " << alpha << ", target " << b;
      for (int j = 0; j < 10; ++j) EXPECT_NEAR(ours[j], w[j], 1e-5) << "alpha " << alpha << ", target " << b;
      EXPECT_TRUE(fit.converged);
    }
  }
}

// Net A: 80 mixtures of 12 factors plus `noise` x Gaussian noise (less noise, more collinear predictors);
// net B: 2 units driven by the same factors.
std::vector<Data> wide_nets(double noise = 2.0) {
  const std::int64_t rows = 600;
  const Data factors = testing::gaussian_data(rows, 12, 40);
  Data a = testing::mix(factors, testing::gaussian_data(12, 80, 41).v, 80);
  Data b = testing::mix(factors, testing::gaussian_data(12, 2, 42).v, 2);
  const Data na = testing::gaussian_data(rows, 80, 43), nb = testing::gaussian_data(rows, 2, 44);
  for (std::size_t i = 0; i < a.v.size(); ++i) a.v[i] += noise * na.v[i];
  for (std::size_t i = 0; i < b.v.size(); ++i) b.v[i] += nb.v[i];
  return {a, b};
}

// Every fit of A predicting B held to the oracle: the objective within 1e-9 (relative; the fits stop at a
// duality gap of 1e-12, the oracle's own stopping rule leaves it within about 1e-12) and every weight within
// 1e-5 (weights are less well determined than the objective). Returns the fits, alpha-major.
std::vector<LassoFit> check_against_oracle(const std::vector<Data>& nets, const LassoOptions& options) {
  const SparsePrediction s = sparse_prediction(testing::study_of(nets), 0, 1, options);
  const Data x = testing::centred(nets[0], true), z = testing::centred(nets[1], true);
  std::vector<LassoFit> fits;
  for (std::size_t k = 0; k < options.alphas.size(); ++k)
    for (std::int64_t t = 0; t < z.cols; ++t) {
      std::vector<double> y(static_cast<std::size_t>(z.rows));
      for (std::int64_t r = 0; r < z.rows; ++r) y[r] = z(r, t);
      const std::vector<double> w = oracle_lasso(x, y, options.alphas[k]);
      double loss = 0.0;
      const double objective = oracle_objective(x, y, w, options.alphas[k], &loss);
      const LassoFit& fit = s.path[k].fits[static_cast<std::size_t>(t)];
      EXPECT_LE(std::abs(fit.objective - objective), 1e-9 * objective) << "alpha " << options.alphas[k] << ", target " << t;
      std::vector<double> ours(static_cast<std::size_t>(x.cols), 0.0);
      for (std::size_t i = 0; i < fit.predictors.size(); ++i) ours[static_cast<std::size_t>(fit.predictors[i])] = fit.weights[i];
      for (std::int64_t j = 0; j < x.cols; ++j) EXPECT_NEAR(ours[j], w[j], 1e-5) << "alpha " << options.alphas[k];
      EXPECT_TRUE(fit.converged);
      fits.push_back(fit);
    }
  return fits;
}

// 80 predictors and small penalties: dense fits, where coordinate descent hands over to the active-set
// solves (here by the Schur complement of the inverse gram: few predictors are left out). The same
// oracle holds them to the same accuracy, and coordinate descent alone (active_set_solves = 0) too.
TEST(SparsePrediction, DenseFitsMatchTheOracleToo) {
  LassoOptions options;
  options.alphas = {0.0005, 0.002};
  options.tolerance = 1e-12;
  for (const LassoFit& fit : check_against_oracle(wide_nets(), options)) {
    EXPECT_GT(fit.predictors.size(), 64u);  // dense
    EXPECT_TRUE(fit.from_solve);
    EXPECT_GE(fit.solves, 1);
  }
  options.active_set_solves = 0;
  for (const LassoFit& fit : check_against_oracle(wide_nets(), options)) {
    EXPECT_EQ(fit.solves, 0);
    EXPECT_FALSE(fit.from_solve);
  }
}

// Mid penalties: supports of 10 to 40 of the 80 predictors, solved by a Cholesky of R_AA that is
// updated (predictors deleted and appended) while the guess changes a little. With one solve per phase
// most first guesses are refused (a sign or a predictor still wrong) and descent goes on from the better
// point; with the default, solves are accepted. Both end at the oracle's solution.
TEST(SparsePrediction, ActiveSetSolvesAcceptedOrRefusedEndAtTheOracle) {
  LassoOptions options;
  options.alphas = {0.01, 0.02, 0.04, 0.08};
  options.tolerance = 1e-12;
  std::int64_t accepted = 0;
  for (const LassoFit& fit : check_against_oracle(wide_nets(1.0), options)) accepted += fit.from_solve;
  EXPECT_EQ(accepted, 8);
  options.active_set_solves = 1;
  std::int64_t refused = 0;
  for (const LassoFit& fit : check_against_oracle(wide_nets(1.0), options)) refused += fit.solves > 0 && !fit.from_solve;
  EXPECT_GE(refused, 1);
}

// More targets than one chunk (70 targets in chunks of 32: batched descent, lock-step solves near the dense
// end, and the last chunk partly filled): targets from every chunk held to the oracle as above, and the
// same bits whatever the thread count (chunks are handed out to threads as they come free).
TEST(SparsePrediction, ChunksOfTargetsMatchTheOracleWhateverTheThreads) {
  const std::int64_t rows = 600;
  const Data factors = testing::gaussian_data(rows, 12, 50);
  Data a = testing::mix(factors, testing::gaussian_data(12, 80, 51).v, 80);
  Data b = testing::mix(factors, testing::gaussian_data(12, 70, 52).v, 70);
  const Data na = testing::gaussian_data(rows, 80, 53), nb = testing::gaussian_data(rows, 70, 54);
  for (std::size_t i = 0; i < a.v.size(); ++i) a.v[i] += 2.0 * na.v[i];
  for (std::size_t i = 0; i < b.v.size(); ++i) b.v[i] += nb.v[i];
  const std::vector<Data> nets = {a, b};
  LassoOptions options;
  options.alphas = {0.002, 0.02};
  options.tolerance = 1e-12;
  options.threads = 1;
  const SparsePrediction one = sparse_prediction(testing::study_of(nets), 0, 1, options);
  options.threads = 3;
  const SparsePrediction three = sparse_prediction(testing::study_of(nets), 0, 1, options);
  ASSERT_EQ(one.targets.size(), 70u);
  const Data x = testing::centred(a, true), z = testing::centred(b, true);
  for (std::size_t k = 0; k < 2; ++k) {
    for (std::size_t t = 0; t < 70; ++t) {
      EXPECT_EQ(one.path[k].fits[t].weights, three.path[k].fits[t].weights);
      EXPECT_EQ(one.path[k].fits[t].predictors, three.path[k].fits[t].predictors);
      EXPECT_TRUE(one.path[k].fits[t].converged);
    }
    for (const std::int64_t t : {0, 31, 32, 64, 69}) {
      std::vector<double> y(static_cast<std::size_t>(rows));
      for (std::int64_t r = 0; r < rows; ++r) y[r] = z(r, t);
      double loss = 0.0;
      const double objective = oracle_objective(x, y, oracle_lasso(x, y, options.alphas[k]), options.alphas[k], &loss);
      const LassoFit& fit = one.path[k].fits[static_cast<std::size_t>(t)];
      EXPECT_LE(std::abs(fit.objective - objective), 1e-9 * objective) << "alpha " << options.alphas[k] << ", target " << t;
    }
  }
  EXPECT_GT(one.path[0].mean_nonzeros, 64.0);  // dense at the small penalty: the lock-step solves' side
}

// Two identical predictors: the gram is singular, so is every block holding both (no inverse gram, and a
// Cholesky that fails is refused); coordinate descent still reaches the optimum (the objective is unique
// even though the weights are not).
TEST(SparsePrediction, SingularGramFallsBackToCoordinateDescent) {
  std::vector<Data> nets = wide_nets();
  for (std::int64_t r = 0; r < nets[0].rows; ++r) nets[0](r, 7) = nets[0](r, 3);
  const Study study = testing::study_of(nets);
  LassoOptions options;
  options.alphas = {0.0005, 0.01};
  options.tolerance = 1e-12;
  const SparsePrediction s = sparse_prediction(study, 0, 1, options);
  const Data x = testing::centred(nets[0], true), z = testing::centred(nets[1], true);
  for (std::size_t k = 0; k < 2; ++k)
    for (std::int64_t t = 0; t < 2; ++t) {
      std::vector<double> y(static_cast<std::size_t>(z.rows));
      for (std::int64_t r = 0; r < z.rows; ++r) y[r] = z(r, t);
      double loss = 0.0;
      const double objective = oracle_objective(x, y, oracle_lasso(x, y, options.alphas[k]), options.alphas[k], &loss);
      const LassoFit& fit = s.path[k].fits[static_cast<std::size_t>(t)];
      EXPECT_LE(std::abs(fit.objective - objective), 1e-9 * objective) << "alpha " << options.alphas[k];
      EXPECT_TRUE(fit.converged);
    }
}

// Optimality certificate: with g = c - R w, |g_j| <= alpha where w_j = 0 and g_j = alpha sign(w_j) where
// not, up to the tolerance the gap allows.
TEST(SparsePrediction, FitsSatisfyTheKktConditions) {
  const Study study = testing::study_of(correlated_nets(5));
  LassoOptions options;
  options.alphas = {0.002, 0.02};
  options.tolerance = 1e-12;
  const SparsePrediction s = sparse_prediction(study, 1, 0, options);  // 4 predictors, 10 targets
  const std::int64_t a0 = study.nets[1].offset, b0 = study.nets[0].offset;
  for (const SparsePredictionPoint& point : s.path)
    for (std::size_t t = 0; t < point.fits.size(); ++t) {
      const LassoFit& fit = point.fits[t];
      std::vector<double> w(4, 0.0);
      for (std::size_t i = 0; i < fit.predictors.size(); ++i) w[static_cast<std::size_t>(fit.predictors[i])] = fit.weights[i];
      for (std::int64_t j = 0; j < 4; ++j) {
        double g = study.correlation(a0 + j, b0 + s.targets[t]);
        for (std::int64_t k = 0; k < 4; ++k) g -= study.correlation(a0 + j, a0 + k) * w[k];
        if (w[j] == 0.0)
          EXPECT_LE(std::abs(g), point.alpha * (1 + 1e-6));
        else
          EXPECT_NEAR(g, point.alpha * (w[j] > 0 ? 1 : -1), 1e-6 * point.alpha);
      }
    }
}

TEST(SparsePrediction, PathShapeDeadUnitsAndThreads) {
  std::vector<Data> nets = correlated_nets(3);
  for (std::int64_t r = 0; r < nets[0].rows; ++r) nets[0](r, 2) = 7.0, nets[1](r, 3) = -1.0;  // one dead unit each
  const Study study = testing::study_of(nets);
  LassoOptions options;
  options.alphas = {0.001, 0.3, 0.01, 5.0};  // any order; 5 is beyond every |corr|
  options.threads = 1;
  const SparsePrediction one = sparse_prediction(study, 0, 1, options);
  options.threads = 3;
  const SparsePrediction three = sparse_prediction(study, 0, 1, options);
  EXPECT_EQ(one.predictors, 9);
  EXPECT_EQ(one.dead_targets, 1);
  EXPECT_EQ(one.targets, (std::vector<std::int64_t>{0, 1, 2}));
  for (std::size_t k = 0; k < 4; ++k) {
    EXPECT_EQ(one.path[k].alpha, options.alphas[k]);
    for (std::size_t t = 0; t < 3; ++t) {  // the same bits whatever the thread count
      EXPECT_EQ(one.path[k].fits[t].weights, three.path[k].fits[t].weights);
      EXPECT_EQ(one.path[k].fits[t].loss, three.path[k].fits[t].loss);
      for (const std::int64_t j : one.path[k].fits[t].predictors) EXPECT_NE(j, 2);  // the dead unit never predicts
    }
  }
  // Stronger penalty: fewer predictors, larger loss. Beyond every correlation: nothing, loss 1.
  EXPECT_GE(one.path[0].mean_nonzeros, one.path[2].mean_nonzeros);
  EXPECT_GE(one.path[2].mean_nonzeros, one.path[1].mean_nonzeros);
  EXPECT_LE(one.path[0].mean_loss, one.path[2].mean_loss);
  EXPECT_LE(one.path[2].mean_loss, one.path[1].mean_loss);
  EXPECT_EQ(one.path[3].mean_nonzeros, 0.0);
  EXPECT_EQ(one.path[3].mean_loss, 1.0);
  EXPECT_EQ(one.path[3].fits[0].objective, 0.5);
}

TEST(SparsePrediction, BadInputsAreErrors) {
  const Matrix gram(2, 2, 0.0);
  const std::vector<double> c = {0.1, 0.2};
  const MatrixView<const double> targets(c.data(), 1, 2);
  LassoOptions options;
  auto message = [&](MatrixView<const double> g, MatrixView<const double> t) -> std::string {
    try {
      lasso_path(g, t, options);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(message(gram.view(), targets).find("diagonal entry 0 is 0"), std::string::npos);
  Matrix identity(2, 2, 0.0);
  identity(0, 0) = identity(1, 1) = 1.0;
  options.alphas = {0.1, 0.0};
  EXPECT_NE(message(identity.view(), targets).find("must be finite and positive"), std::string::npos);
  options.alphas = {0.1};
  EXPECT_NE(message(identity.view(), MatrixView<const double>(c.data(), 2, 1)).find("columns for 2 predictors"),
            std::string::npos);
  options.active_set_solves = -1;
  EXPECT_NE(message(identity.view(), targets).find("active_set_solves must be 0 or more"), std::string::npos);
  options.active_set_solves = 8;
  const Study study = testing::study_of(correlated_nets(1));
  EXPECT_THROW(sparse_prediction(study, 0, 0, options), Error);
  EXPECT_THROW(sparse_prediction(study, 0, 2, options), Error);
}

}  // namespace
}  // namespace convergent
