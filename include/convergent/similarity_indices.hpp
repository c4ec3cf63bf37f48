// Similarity indices of two nets' representations, from the study's moments alone: linear CKA (plain and
// debiased), CCA, SVCCA, PWCCA and the orthogonal Procrustes distance with its angular shape metric. Dead units are left
// out (and counted); rank-deficient covariances get a stated ridge, so no index is ever NaN.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "convergent/backend.hpp"
#include "convergent/study.hpp"

namespace convergent {

struct SimilarityOptions {
  // Which indices to compute (all by default). linear_cka covers the debiased one too.
  bool linear_cka = true;
  bool cca = true;
  bool svcca = true;
  bool pwcca = true;
  bool procrustes = true;
  // Before any whitening, ridge x (mean variance of the net's live units) is added to every variance:
  // a rank-deficient covariance (duplicated or collinear units) then stays invertible, at a relative
  // cost of about ridge / (smallest eigenvalue) on the canonical correlations. CCA and PWCCA whiten the
  // correlation matrix (mean variance 1); SVCCA the PCA-reduced covariance. 0 takes the pseudo-inverse
  // (eigenvalues below p x machine epsilon x the largest count as zero). Must be finite and >= 0.
  double ridge = 1e-6;
  // SVCCA keeps the fewest leading principal directions whose eigenvalues sum to at least this share of
  // the trace (Raghu et al.: 0.99). In (0, 1].
  double svcca_variance = 0.99;
};

// Canonical correlations, descending, in [0, 1]; their mean.
struct CanonicalCorrelations {
  std::vector<double> correlations;
  double mean = 0.0;
};

struct SvccaResult {
  std::int64_t dims_a = 0;  // principal directions kept in each net
  std::int64_t dims_b = 0;
  CanonicalCorrelations cca;  // CCA of the two reduced representations; cca.mean is the SVCCA similarity
};

struct PwccaResult {
  double value = 0.0;
  // Whose canonical variates carry the weights: the net with fewer live units (A on a tie), as Morcos
  // et al.'s reference code does.
  int weighted_net = 0;
};

struct ProcrustesResult {
  // nu = ||Cov(A, B)||_* / sqrt(tr Cov(A) tr Cov(B)), in [0, 1]: 1 when B is a rotation of A.
  double similarity = 0.0;
  double distance = 0.0;  // min over orthogonal Q of ||A - B Q||_F on centred, unit-norm data: sqrt(2 - 2 nu)
  double angle = 0.0;     // the angular shape metric arccos(nu), radians (Williams et al. 2021)
};

// The indices of one pair of nets (a < b). An index is present when it was asked for and both nets have
// at least one live unit.
struct PairSimilarity {
  int a = 0;
  int b = 1;
  std::int64_t live_a = 0;  // units used
  std::int64_t live_b = 0;
  std::int64_t dead_a = 0;  // units left out
  std::int64_t dead_b = 0;
  // Linear CKA (Kornblith et al. 2019, eq. 5 in feature space): ||Cov(A, B)||_F^2 / (||Cov(A)||_F
  // ||Cov(B)||_F) on covariances in the input's units (it depends on each unit's scale), in [0, 1].
  std::optional<double> linear_cka;
  // Debiased linear CKA (Kornblith et al. 2019 section 6 / Nguyen et al. 2021): linear CKA with every HSIC
  // replaced by Song et al.'s (2012, eq. 5) unbiased estimator HSIC_1(K, L) = [tr(K~ L~) + 1^T K~ 1
  // 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3)), K~ = X X^T with its diagonal zeroed. On
  // centred samples it is n^2/(n(n-3)) [||Cov(A,B)||_F^2 + tr Cov(A) tr Cov(B)/((n-1)(n-2)) - Q_AB/(n(n-2))]
  // with Q_AB = Moments::sqnorm_comoment (the estimator is invariant to a constant shift of the samples,
  // so centring is free). Near 0 for independent nets (standard error about sqrt(2)/n for isotropic
  // units), 1 for a net with itself; in [-1, 1]. Dead units are in Q_AB (their centred values are zero or
  // negligible) and in nothing else. Present when linear_cka is, n >= 4, and every term is finite (the
  // norm sums overflow for spreads beyond about 1e70) with positive self-terms.
  std::optional<double> debiased_linear_cka;
  // CCA (Hotelling): the singular values of (R_aa + ridge I)^-1/2 R_ab (R_bb + ridge I)^-1/2 on the
  // correlation matrices (invariant to any invertible linear map of either net); min(live_a, live_b).
  std::optional<CanonicalCorrelations> cca;
  // SVCCA (Raghu et al. 2017): PCA of each net's covariance to svcca_variance of its trace, then CCA.
  std::optional<SvccaResult> svcca;
  // PWCCA (Morcos et al. 2018, eq. 2): sum_i alpha_i rho_i / sum_i alpha_i, with alpha_i = sum_j
  // |<h_i, x_j>| over the weighted net's units x_j (input units, centred) and its unit-norm canonical
  // variates h_i.
  std::optional<PwccaResult> pwcca;
  // Orthogonal Procrustes on centred representations scaled to unit Frobenius norm (Ding et al. 2021,
  // Williams et al. 2021); covariances in the input's units; a net with fewer units is padded with zeros.
  std::optional<ProcrustesResult> procrustes;
};

// Every pair of nets (a < b, in the order (0, 1), (0, 2), ..., (1, 2), ...). Reads the study's moments
// (comoment, exponents, sample count), dead units and correlation. Per net one symmetric
// eigendecomposition of its correlation (CCA, PWCCA) and one of its covariance (SVCCA), O(units^3); per
// pair a few products (BLAS, on the CPU) and SVDs of live_a x live_b matrices. The eigendecompositions and
// SVDs run on `backend` (Backend::symmetric_eigenpairs, singular_value_decomposition: LAPACK on the CPU,
// cuSOLVER on CUDA; the indices do not depend on the vectors' signs). Throws Error when ridge or
// svcca_variance is out of range, or the study has fewer than two nets.
std::vector<PairSimilarity> similarity_indices(Backend& backend, const Study& study,
                                               const SimilarityOptions& options = {});

// Image-level CKA of every pair (a < b, in similarity_indices' order) from the pass's ImageCka
// (StudyOptions::samples == images). exact: linear_cka and debiased_linear_cka of the flattened features'
// Moments as similarity_indices computes them, dead features left out and counted (live_a/dead_a count
// features); minibatch: debiased_linear_cka alone, Nguyen et al.'s (2021, eq. 3) mean HSIC_1(A, B) /
// sqrt(mean HSIC_1(A, A) mean HSIC_1(B, B)), absent when no minibatch was complete or a self-term is not
// positive (live/dead counts are then the features, all counted live). `backend` as for similarity_indices
// (linear CKA needs no decomposition). Throws Error for fewer than two nets.
std::vector<PairSimilarity> image_cka_indices(Backend& backend, const ImageCka& image_cka);

}  // namespace convergent
