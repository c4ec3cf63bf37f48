// Sparse few-to-one prediction (the paper's section 3): every unit of net B predicted from all units of
// net A with an L1 penalty, on standardised units, over a path of penalties. The solver works on the
// correlation matrix alone (covariance form), so it never needs the activations again.
#pragma once

#include <cstdint>
#include <vector>

#include "convergent/matrix.hpp"
#include "convergent/study.hpp"

namespace convergent {

struct LassoOptions {
  // Penalties alpha, each finite and positive, in any order (solved from the largest down, each warm-
  // started from the previous solution; results come back in this order). The default runs from nearly
  // dense (0.001: about every predictor with |corr| above 0.001 may enter) to very sparse (0.3: only
  // predictors whose correlation with the target exceeds 0.3 can enter at all).
  std::vector<double> alphas = {0.001, 0.01, 0.03, 0.1, 0.3};
  // Converged when the duality gap is at most tolerance x the objective: the objective is then within
  // that relative distance of the optimum (the gap bounds P(w) - P*). scikit-learn's `tol` is the same
  // gap as an absolute bound (in units of the target's variance, here 1).
  double tolerance = 1e-7;
  // Coordinate-descent sweeps per target and penalty (over the working set, the KKT checks and the
  // active-set solves together); a fit that runs out is reported as not converged, never silently.
  std::int64_t max_sweeps = 10000;
  // Exact solves per active-set phase (see lasso_path); 0 leaves every fit to coordinate descent alone.
  int active_set_solves = 8;
  int threads = 0;  // targets are solved in parallel; 0 = all cores. The result does not depend on it.
};

// One target at one penalty.
struct LassoFit {
  double loss = 1.0;       // normalised loss 1 - R^2 = E[(z_b - w . z_a)^2] (targets have unit variance)
  double objective = 0.5;  // 1/2 loss + alpha ||w||_1
  double duality_gap = 0.0;
  std::int64_t sweeps = 0;
  std::int64_t solves = 0;   // active-set solves among the sweeps
  bool from_solve = false;   // the accepted weights are an active-set solve (else coordinate descent's)
  bool converged = true;
  // The non-zero weights, strongest (largest |w|) first, ties to the lower index. Indices are predictor
  // indices: rows of the gram matrix for lasso_path, unit indices of net A for sparse_prediction.
  std::vector<std::int64_t> predictors;
  std::vector<double> weights;
};

// Lasso in covariance form on standardised units: for every target b and penalty alpha, minimises over w
//   1/2 E[(z_b - w . z_a)^2] + alpha ||w||_1 = 1/2 (1 - 2 w . c_b + w^T R w) + alpha ||w||_1,
// which is scikit-learn's Lasso(alpha, fit_intercept=False) on z-scored data (DESIGN.md). Cyclic
// coordinate descent on the gram matrix, on working sets of the current non-zeros and the predictors that
// violate their KKT conditions there (targets whose set is at least half the predictors are swept
// together, 32 at a time, in vector lanes, the gradient updates of each block of 32 predictors as one
// matrix product, until their signs settle), every exclusion checked against the KKT conditions of the
// full problem before the duality gap (scikit-learn's, in covariance form) is accepted. Once the signs of
// the descent settle, an active-set phase (primal-dual active set, Ito and Kunisch 2008) guesses the
// support and signs from w + g and solves the optimality conditions R_AA w_A = c_A - alpha s_A exactly,
// up to options.active_set_solves times: by a Cholesky of R_AA or, for dense supports, by the Schur
// complement of the inverse gram (those first solves in lock step for the 32 targets of a chunk, with the
// products of all of them at once); either factor is updated, not refactored, when the guess changes a
// little. A solve is kept only when the full problem's duality gap, from
// the gradient recomputed over the whole gram, accepts it; otherwise descent goes on from the best
// point seen. Chunks of targets are independent and run in parallel; OpenBLAS runs single-threaded meanwhile
// (its thread count is restored after), and the result does not depend on the thread count.
//   gram        p x p correlation matrix R of the predictors (symmetric, unit diagonal, finite)
//   target_corr m x p: row b holds c_b, the correlations of target b with every predictor
// Returns fits[alpha index][target]. Throws Error when the shapes disagree, an entry is not finite, a
// diagonal entry is not 1 (to 1e-9), an alpha is not finite and positive, tolerance / max_sweeps are
// not positive, or active_set_solves is negative.
std::vector<std::vector<LassoFit>> lasso_path(MatrixView<const double> gram, MatrixView<const double> target_corr,
                                              const LassoOptions& options);

// The path of one direction (A predicts B) at one penalty.
struct SparsePredictionPoint {
  double alpha = 0.0;
  double mean_loss = 1.0;              // mean over B's live units of LassoFit::loss
  double mean_nonzeros = 0.0;          // mean number of non-zero weights
  std::int64_t not_converged = 0;      // fits that ran out of sweeps
  std::vector<LassoFit> fits;          // one per live unit of B, ascending (see SparsePrediction::targets)
};

struct SparsePrediction {
  int from_net = 0;                    // A, the predictors (index into Study::nets)
  int to_net = 1;                      // B, the targets
  std::vector<std::int64_t> targets;   // B's live units (indices within B) in the order of `fits`
  std::int64_t predictors = 0;         // A's live units; dead units of A are left out
  std::int64_t dead_targets = 0;       // B's dead units, left out (they have nothing to predict)
  std::vector<SparsePredictionPoint> path;  // in the order of options.alphas
};

// Predicts every live unit of net `to_net` from all live units of net `from_net` (lasso_path on the
// study's correlation blocks); predictor indices in the fits are unit indices within net A. Throws
// Error for a net index out of range or the same net twice, and as lasso_path does.
SparsePrediction sparse_prediction(const Study& study, int from_net, int to_net, const LassoOptions& options);

}  // namespace convergent
