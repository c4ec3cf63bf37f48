// Linear CKA (plain and debiased), CCA, SVCCA, PWCCA and orthogonal Procrustes from the study's moments. Every whitening is an
// eigendecomposition V diag(lambda) V^T of one net's matrix, made once per net; the whitened cross
// product of a pair is then diag(f_a) V_a^T X_ab V_b diag(f_b) with f = (lambda + shift)^-1/2 (the outer
// rotations V change no singular value, so they are never applied).
#include "convergent/similarity_indices.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "analysis/live_units.hpp"
#include "convergent/error.hpp"
#include "cpu/parallel.hpp"

namespace convergent {
namespace {

// Eigenpairs of a symmetric matrix, eigenvalues descending (clamped at 0: these matrices are positive
// semi-definite, and a negative value is rounding), vectors as the columns of `vectors`.
struct Eigen {
  std::vector<double> values;
  Matrix vectors;
};

Eigen symmetric_eigen(Backend& backend, const Matrix& m) {
  const std::int64_t n = m.rows();
  Eigen e;
  e.values.assign(static_cast<std::size_t>(n), 0.0);
  e.vectors = Matrix(n, n);
  if (n == 0) return e;
  const Eigenpairs ascending = backend.symmetric_eigenpairs(m.view());
  for (std::int64_t k = 0; k < n; ++k) {
    const std::int64_t from = n - 1 - k;
    e.values[static_cast<std::size_t>(k)] = std::max(0.0, ascending.values[static_cast<std::size_t>(from)]);
    for (std::int64_t i = 0; i < n; ++i) e.vectors(i, k) = ascending.vectors(i, from);
  }
  return e;
}

// f(lambda) = (lambda + shift)^-1/2, or 0 for directions below the numerical rank when there is no shift.
std::vector<double> inverse_sqrt(const std::vector<double>& values, double shift, std::int64_t dims) {
  const double largest = values.empty() ? 0.0 : values.front();
  const double floor = static_cast<double>(values.size()) * std::numeric_limits<double>::epsilon() * largest;
  std::vector<double> f(static_cast<std::size_t>(dims));
  for (std::int64_t k = 0; k < dims; ++k) {
    const double shifted = values[static_cast<std::size_t>(k)] + shift;
    f[static_cast<std::size_t>(k)] = shifted > floor && shifted > 0.0 ? 1.0 / std::sqrt(shifted) : 0.0;
  }
  return f;
}

// One net: its live units, scaled covariance (live_units.hpp) and the whitenings its indices need.
struct NetBasis {
  std::vector<std::int64_t> live;
  std::int64_t dead = 0;
  Matrix covariance;                  // p x p, scaled per net
  std::vector<double> spread;         // sqrt of its diagonal
  double trace = 0.0, frobenius = 0.0;
  int scale = 0;                      // the covariance is in units of 2^-scale (ScaledCovariance)
  Eigen correlation_eigen;            // of R (CCA, PWCCA)
  std::vector<double> correlation_f;  // p
  Eigen covariance_eigen;             // of the covariance (SVCCA)
  std::int64_t svcca_dims = 0;
  std::vector<double> covariance_f;   // svcca_dims
};

NetBasis net_basis(Backend& backend, const Study& study, const detail::ScaledCovariance& scaled, int net, const SimilarityOptions& o) {
  NetBasis n;
  n.live = detail::live_units(study, net);
  n.dead = study.nets[static_cast<std::size_t>(net)].units - static_cast<std::int64_t>(n.live.size());
  const std::int64_t p = static_cast<std::int64_t>(n.live.size());
  if (o.linear_cka || o.svcca || o.pwcca || o.procrustes) {
    n.covariance = scaled.block(net, n.live, net, n.live);
    for (std::int64_t i = 0; i < p; ++i) {
      n.spread.push_back(std::sqrt(std::max(0.0, n.covariance(i, i))));
      n.trace += n.covariance(i, i);
      for (std::int64_t j = 0; j < p; ++j) n.frobenius += n.covariance(i, j) * n.covariance(i, j);
    }
    n.frobenius = std::sqrt(n.frobenius);
    n.scale = scaled.net_scale(net, n.live);
  }
  if (o.cca || o.pwcca) {
    n.correlation_eigen = symmetric_eigen(backend, detail::correlation_block(study, net, n.live, net, n.live));
    n.correlation_f = inverse_sqrt(n.correlation_eigen.values, o.ridge, p);  // mean variance 1
  }
  if (o.svcca && p > 0) {
    n.covariance_eigen = symmetric_eigen(backend, n.covariance);
    double total = 0.0, kept = 0.0;
    for (const double v : n.covariance_eigen.values) total += v;
    n.svcca_dims = 0;
    while (n.svcca_dims < p && (n.svcca_dims == 0 || kept < o.svcca_variance * total))
      kept += n.covariance_eigen.values[static_cast<std::size_t>(n.svcca_dims++)];
    n.covariance_f = inverse_sqrt(n.covariance_eigen.values, o.ridge * n.trace / static_cast<double>(p), n.svcca_dims);
  }
  return n;
}

// diag(fa) Va[:, :ka]^T X Vb[:, :kb] diag(fb): ka x kb.
Matrix whitened_cross(const Matrix& va, const std::vector<double>& fa, const Matrix& x, const Matrix& vb,
                      const std::vector<double>& fb) {
  const auto ka = static_cast<std::int64_t>(fa.size()), kb = static_cast<std::int64_t>(fb.size());
  const std::int64_t p = x.rows(), q = x.cols();
  Matrix xv(p, kb), t(ka, kb);
  // Vb is q x q with the leading kb columns wanted: row-major with leading dimension q.
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(p), static_cast<int>(kb),
              static_cast<int>(q), 1.0, x.data(), static_cast<int>(q), vb.data(), static_cast<int>(vb.cols()), 0.0,
              xv.data(), static_cast<int>(kb));
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(ka), static_cast<int>(kb), static_cast<int>(p),
              1.0, va.data(), static_cast<int>(va.cols()), xv.data(), static_cast<int>(kb), 0.0, t.data(),
              static_cast<int>(kb));
  for (std::int64_t i = 0; i < ka; ++i)
    for (std::int64_t j = 0; j < kb; ++j) t(i, j) *= fa[static_cast<std::size_t>(i)] * fb[static_cast<std::size_t>(j)];
  return t;
}

CanonicalCorrelations canonical(const std::vector<double>& singular_values) {
  CanonicalCorrelations c;
  for (const double s : singular_values) c.correlations.push_back(std::clamp(s, 0.0, 1.0));
  for (const double r : c.correlations) c.mean += r;
  if (!c.correlations.empty()) c.mean /= static_cast<double>(c.correlations.size());
  return c;
}

// PWCCA weights from one side's canonical directions in its eigenbasis (columns of `directions`, p x r):
// the canonical weight vector is w = V diag(f) d, so R w = V diag(lambda f) d and Var(h) = d^T diag(lambda
// f^2) d. alpha_i = sum_j spread_j |(R w_i)_j| / sqrt(Var(h_i)): |<h_i, x_j>| for the unit-norm variate.
double pwcca(const NetBasis& n, const Matrix& directions, const std::vector<double>& rho) {
  const std::int64_t p = static_cast<std::int64_t>(n.live.size()), r = directions.cols();
  Matrix scaled(p, r);
  std::vector<double> variance(static_cast<std::size_t>(r), 0.0);
  for (std::int64_t k = 0; k < p; ++k) {
    const double lambda = n.correlation_eigen.values[static_cast<std::size_t>(k)];
    const double f = n.correlation_f[static_cast<std::size_t>(k)];
    for (std::int64_t i = 0; i < r; ++i) {
      scaled(k, i) = lambda * f * directions(k, i);
      variance[static_cast<std::size_t>(i)] += lambda * f * f * directions(k, i) * directions(k, i);
    }
  }
  Matrix rw(p, r);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(p), static_cast<int>(r), static_cast<int>(p),
              1.0, n.correlation_eigen.vectors.data(), static_cast<int>(p), scaled.data(), static_cast<int>(r), 0.0,
              rw.data(), static_cast<int>(r));
  double weighted = 0.0, total = 0.0;
  for (std::int64_t i = 0; i < r; ++i) {
    const double sd = std::sqrt(variance[static_cast<std::size_t>(i)]);
    if (!(sd > 0.0)) continue;  // a direction the pseudo-inverse dropped carries no variate
    double alpha = 0.0;
    for (std::int64_t j = 0; j < p; ++j) alpha += n.spread[static_cast<std::size_t>(j)] * std::abs(rw(j, i));
    alpha /= sd;
    weighted += alpha * rho[static_cast<std::size_t>(i)];
    total += alpha;
  }
  return total > 0.0 ? weighted / total : 0.0;
}

// Song et al.'s unbiased HSIC of nets a and b divided by n^2/(n(n-3)) (which cancels in CKA), in the
// nets' scaled units (NetBasis::scale): ||Cov(a,b)||_F^2 (given, as `cross_frobenius2`) + tr Cov(a)
// tr Cov(b)/((n-1)(n-2)) - Q_ab/(n(n-2)).
double unbiased_hsic(const Study& study, int a, int b, const NetBasis& na, const NetBasis& nb,
                     double cross_frobenius2) {
  const double n = static_cast<double>(study.moments.samples);
  const double q = std::ldexp(study.moments.sqnorm_comoment(a, b), 2 * na.scale + 2 * nb.scale);
  return cross_frobenius2 + na.trace * nb.trace / ((n - 1.0) * (n - 2.0)) - q / (n * (n - 2.0));
}

std::optional<double> debiased_cka(const Study& study, int a, int b, const NetBasis& na, const NetBasis& nb,
                                   double cross_frobenius2) {
  if (study.moments.samples < 4) return std::nullopt;
  const double ab = unbiased_hsic(study, a, b, na, nb, cross_frobenius2);
  const double aa = unbiased_hsic(study, a, a, na, na, na.frobenius * na.frobenius);
  const double bb = unbiased_hsic(study, b, b, nb, nb, nb.frobenius * nb.frobenius);
  if (!(std::isfinite(ab) && std::isfinite(aa) && std::isfinite(bb) && aa > 0.0 && bb > 0.0)) return std::nullopt;
  return std::clamp(ab / std::sqrt(aa * bb), -1.0, 1.0);
}

PairSimilarity pair_similarity(Backend& backend, const Study& study, const detail::ScaledCovariance& scaled, int a, int b,
                               const NetBasis& na, const NetBasis& nb, const SimilarityOptions& o) {
  PairSimilarity s;
  s.a = a;
  s.b = b;
  s.live_a = static_cast<std::int64_t>(na.live.size());
  s.live_b = static_cast<std::int64_t>(nb.live.size());
  s.dead_a = na.dead;
  s.dead_b = nb.dead;
  if (s.live_a == 0 || s.live_b == 0) return s;
  if (o.linear_cka || o.svcca || o.procrustes) {
    const Matrix cross = scaled.block(a, na.live, b, nb.live);
    if (o.linear_cka) {
      double sum = 0.0;
      for (std::int64_t i = 0; i < cross.rows(); ++i)
        for (std::int64_t j = 0; j < cross.cols(); ++j) sum += cross(i, j) * cross(i, j);
      const double denominator = na.frobenius * nb.frobenius;
      s.linear_cka = denominator > 0.0 ? std::clamp(sum / denominator, 0.0, 1.0) : 0.0;
      s.debiased_linear_cka = debiased_cka(study, a, b, na, nb, sum);
    }
    if (o.svcca) {
      const std::vector<double> rho =
          backend
              .singular_value_decomposition(whitened_cross(na.covariance_eigen.vectors, na.covariance_f, cross,
                                                           nb.covariance_eigen.vectors, nb.covariance_f)
                                                .view(),
                                            false)
              .values;
      s.svcca = SvccaResult{na.svcca_dims, nb.svcca_dims, canonical(rho)};
    }
    if (o.procrustes) {
      double nuclear = 0.0;
      for (const double v : backend.singular_value_decomposition(cross.view(), false).values) nuclear += v;
      const double denominator = std::sqrt(na.trace * nb.trace);
      const double nu = denominator > 0.0 ? std::clamp(nuclear / denominator, 0.0, 1.0) : 0.0;
      s.procrustes = ProcrustesResult{nu, std::sqrt(std::max(0.0, 2.0 - 2.0 * nu)), std::acos(nu)};
    }
  }
  if (o.cca || o.pwcca) {
    const Matrix corr = detail::correlation_block(study, a, na.live, b, nb.live);
    const SingularValueDecomposition t = backend.singular_value_decomposition(
        whitened_cross(na.correlation_eigen.vectors, na.correlation_f, corr, nb.correlation_eigen.vectors,
                       nb.correlation_f)
            .view(),
        o.pwcca);
    const CanonicalCorrelations c = canonical(t.values);
    if (o.pwcca) {
      const bool weigh_a = s.live_a <= s.live_b;
      Matrix directions = weigh_a ? t.u : Matrix(t.vt.cols(), t.vt.rows());
      if (!weigh_a)
        for (std::int64_t i = 0; i < t.vt.rows(); ++i)
          for (std::int64_t j = 0; j < t.vt.cols(); ++j) directions(j, i) = t.vt(i, j);
      s.pwcca = PwccaResult{pwcca(weigh_a ? na : nb, directions, c.correlations), weigh_a ? a : b};
    }
    if (o.cca) s.cca = c;
  }
  return s;
}

}  // namespace

std::vector<PairSimilarity> similarity_indices(Backend& backend, const Study& study, const SimilarityOptions& options) {
  if (study.nets.size() < 2) throw Error("similarity indices need at least two nets");
  if (!(std::isfinite(options.ridge) && options.ridge >= 0.0))
    throw Error("similarity indices: the ridge must be finite and >= 0, not " + std::to_string(options.ridge));
  if (!(options.svcca_variance > 0.0 && options.svcca_variance <= 1.0))
    throw Error("similarity indices: the SVCCA variance share must lie in (0, 1], not " +
                std::to_string(options.svcca_variance));
  const OneOpenBlasThread one;  // dsyevd, dgesdd and dgemm give the same bits on any thread count
  const detail::ScaledCovariance scaled(study);
  std::vector<NetBasis> bases;
  for (int net = 0; net < static_cast<int>(study.nets.size()); ++net) bases.push_back(net_basis(backend, study, scaled, net, options));
  std::vector<PairSimilarity> pairs;
  for (int a = 0; a < static_cast<int>(study.nets.size()); ++a)
    for (int b = a + 1; b < static_cast<int>(study.nets.size()); ++b)
      pairs.push_back(pair_similarity(backend, study, scaled, a, b, bases[static_cast<std::size_t>(a)],
                                      bases[static_cast<std::size_t>(b)], options));
  return pairs;
}

std::vector<PairSimilarity> image_cka_indices(Backend& backend, const ImageCka& image_cka) {
  const auto nets = static_cast<int>(image_cka.features.size());
  if (nets < 2) throw Error("image-level CKA needs at least two nets");
  if (image_cka.estimator == ImageCka::Estimator::exact) {
    // The flattened features as a study of their own: linear CKA reads the moments and dead flags alone.
    Study features;
    std::int64_t offset = 0;
    for (int k = 0; k < nets; ++k) {
      NetInfo info;
      info.units = image_cka.features[static_cast<std::size_t>(k)];
      info.offset = offset;
      offset += info.units;
      features.nets.push_back(info);
    }
    features.moments = image_cka.moments;
    features.dead = image_cka.dead;
    SimilarityOptions cka_only;
    cka_only.cca = cka_only.svcca = cka_only.pwcca = cka_only.procrustes = false;
    return similarity_indices(backend, features, cka_only);
  }
  std::vector<PairSimilarity> pairs;
  const Matrix& h = image_cka.hsic;
  for (int a = 0; a < nets; ++a)
    for (int b = a + 1; b < nets; ++b) {
      PairSimilarity s;
      s.a = a;
      s.b = b;
      s.live_a = image_cka.features[static_cast<std::size_t>(a)];
      s.live_b = image_cka.features[static_cast<std::size_t>(b)];
      if (image_cka.minibatches > 0 && h(a, a) > 0.0 && h(b, b) > 0.0 && std::isfinite(h(a, b)))
        s.debiased_linear_cka = std::clamp(h(a, b) / std::sqrt(h(a, a) * h(b, b)), -1.0, 1.0);
      pairs.push_back(s);
    }
  return pairs;
}

}  // namespace convergent
