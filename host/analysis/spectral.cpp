// Spectral clustering of the units of all nets: affinity from the combined correlation, symmetric
// normalised Laplacian, its smallest eigenvectors from the backend, then several candidate labellings
// (k-means++ on the NJW and the random-walk embeddings, Yu-Shi discretisation), each refined by single-unit
// moves that lower the normalised cut; the lowest cut wins. Everything after the eigensolver is
// deterministic given the seed: the sampling is written out here rather than left to std::
// distributions, whose output differs between standard libraries, and every sum has one fixed order.
#include "convergent/spectral.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>
#include <string>
#include <thread>

#include "analysis/splitmix64.hpp"
#include "convergent/error.hpp"
#include "cpu/parallel.hpp"
#include "cpu/target_clones.hpp"

namespace convergent {
namespace {

// The relative residual the clustering asks of the eigensolver (EigenOptions::relative_residual).
constexpr double eigen_residual = 1e-5;

using detail::SplitMix64;

// Every randomised run draws from its own stream, derived from (seed, stream), so that the result does not
// depend on which thread ran which run. Streams: k-means on the NJW embedding 0, 1, ...; on the random-walk
// embedding from 1 << 20; Yu-Shi starts from 2 << 20.
constexpr int random_walk_streams = 1 << 20;
constexpr int yu_shi_streams = 2 << 20;
std::uint64_t run_seed(std::uint64_t seed, int stream) {
  SplitMix64 mix(seed ^ (0xD1B54A32D192ED03ULL * (static_cast<std::uint64_t>(stream) + 1)));
  mix.next();
  return mix.next();
}

// Calls body(affinity) with a function object for `mode`, so that loops over matrix entries are compiled
// once per mode with no switch inside them.
template <class Body>
decltype(auto) with_affinity(AffinityMode mode, const Body& body) {
  switch (mode) {
    case AffinityMode::positive: return body([](double c) { return std::max(c, 0.0); });
    case AffinityMode::shifted: return body([](double c) { return 0.5 * (1.0 + c); });
    case AffinityMode::abs: break;
  }
  return body([](double c) { return std::abs(c); });
}

// Points for k-means: n x dim row-major, a dim x n copy (so that distances from every point to one point
// run as an elementwise loop over points that vectorises without reordering any sum), and |x|^2.
struct Embedding {
  std::int64_t n = 0, dim = 0;
  std::vector<double> points, transposed, squared;
  const double* point(std::int64_t i) const { return points.data() + i * dim; }
};

Embedding make_embedding(std::vector<double> points, std::int64_t n, std::int64_t dim) {
  Embedding e;
  e.n = n;
  e.dim = dim;
  e.points = std::move(points);
  e.transposed.resize(e.points.size());
  e.squared.resize(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const double* p = e.point(i);
    for (std::int64_t d = 0; d < dim; ++d) e.transposed[d * n + i] = p[d];
    e.squared[i] = std::inner_product(p, p + dim, p, 0.0);
  }
  return e;
}

struct KMeansRun {
  std::vector<std::int64_t> labels;
  double inertia = std::numeric_limits<double>::infinity();
};

// The hot loops of k-means and Yu-Shi come in AVX-512, AVX2 and plain clones picked at run time (the
// library is never built with -march). Each vectorises across centres or points, never inside a sum,
// and no clone contracts a multiply and an add (ISO C++ mode: -ffp-contract=off), so every clone makes
// the same roundings and labels do not depend on the machine.
#define CONVERGENT_CLONES CONVERGENT_TARGET_CLONES("avx512f", "avx2", "default")

// out = x R for one row x (rows values) and a rows x cols matrix R, row-major: the inner loop runs over
// columns, one running sum per column.
CONVERGENT_CLONES void row_times(const double* __restrict__ x, const double* __restrict__ r, std::int64_t rows,
                                 std::int64_t cols, double* __restrict__ out) {
  for (std::int64_t c = 0; c < cols; ++c) out[c] = 0.0;
  for (std::int64_t d = 0; d < rows; ++d) {
    const double xd = x[d];
    const double* row = r + d * cols;
    for (std::int64_t c = 0; c < cols; ++c) out[c] += xd * row[c];
  }
}

// Squared distances from one point to every centre, as |x|^2 + |c|^2 - 2 x.c, with the centres
// transposed (dim x k).
void distances_to_centres(const double* x, double x_squared, const std::vector<double>& centres_t,
                          const std::vector<double>& centre_squared, std::int64_t dim, std::int64_t k, double* out) {
  row_times(x, centres_t.data(), dim, k, out);
  for (std::int64_t j = 0; j < k; ++j) out[j] = std::max(0.0, x_squared + centre_squared[j] - 2.0 * out[j]);
}

// Squared distances from every point to the point p (dim values), from the dim x n transposed points:
// one running sum per point, the same arithmetic as a plain loop over the dimensions of each point.
CONVERGENT_CLONES void distances_to_point(const double* __restrict__ transposed, const double* __restrict__ p,
                                          std::int64_t n, std::int64_t dim, double* __restrict__ out) {
  for (std::int64_t i = 0; i < n; ++i) out[i] = 0.0;
  for (std::int64_t d = 0; d < dim; ++d) {
    const double c = p[d];
    const double* column = transposed + d * n;
    for (std::int64_t i = 0; i < n; ++i) out[i] += (column[i] - c) * (column[i] - c);
  }
}
void distances_to_point(const Embedding& e, std::int64_t p, std::vector<double>& out) {
  distances_to_point(e.transposed.data(), e.point(p), e.n, e.dim, out.data());
}

// Greedy k-means++ (Arthur and Vassilvitskii; with 2 + ln k candidate centres per step, keeping the one
// that lowers the potential most, as scikit-learn does), then Lloyd iterations until no label changes.
KMeansRun kmeans_run(const Embedding& e, std::int64_t k, int max_iterations, std::uint64_t seed) {
  const std::int64_t n = e.n, dim = e.dim;
  SplitMix64 rng(seed);
  std::vector<double> centres(static_cast<std::size_t>(k * dim));  // k x dim

  // Seeding.
  std::vector<double> closest(static_cast<std::size_t>(n));
  const std::int64_t first = rng.below(n);
  std::copy(e.point(first), e.point(first) + dim, centres.begin());
  distances_to_point(e, first, closest);
  double potential = std::accumulate(closest.begin(), closest.end(), 0.0);
  const int trials = 2 + static_cast<int>(std::log(static_cast<double>(k)));
  std::vector<double> to_pick(static_cast<std::size_t>(n)), candidate_closest(static_cast<std::size_t>(n)),
      best_closest(static_cast<std::size_t>(n));
  for (std::int64_t c = 1; c < k; ++c) {
    std::int64_t best = -1;
    double best_potential = std::numeric_limits<double>::infinity();
    for (int t = 0; t < trials; ++t) {
      // Draw a unit with probability proportional to its squared distance to the nearest centre.
      std::int64_t pick = n - 1;
      if (potential > 0.0) {
        const double target = rng.uniform() * potential;
        double running = 0.0;
        for (std::int64_t i = 0; i < n; ++i) {
          running += closest[i];
          if (running > target) {
            pick = i;
            break;
          }
        }
      } else {
        pick = rng.below(n);
      }
      distances_to_point(e, pick, to_pick);
      double candidate_potential = 0.0;
      for (std::int64_t i = 0; i < n; ++i) {
        candidate_closest[i] = std::min(closest[i], to_pick[i]);
        candidate_potential += candidate_closest[i];
      }
      if (candidate_potential < best_potential) {
        best_potential = candidate_potential;
        best = pick;
        best_closest.swap(candidate_closest);
      }
    }
    std::copy(e.point(best), e.point(best) + dim, centres.begin() + c * dim);
    closest.swap(best_closest);
    potential = best_potential;
  }

  // Lloyd.
  KMeansRun run;
  run.labels.assign(static_cast<std::size_t>(n), -1);
  std::vector<double> centres_t(static_cast<std::size_t>(dim * k)), dist(static_cast<std::size_t>(k)),
      own(static_cast<std::size_t>(n));
  std::vector<std::int64_t> counts(static_cast<std::size_t>(k));
  std::vector<double> centre_squared(static_cast<std::size_t>(k));
  for (int iteration = 0; iteration < max_iterations; ++iteration) {
    for (std::int64_t c = 0; c < k; ++c) {
      const double* centre = centres.data() + c * dim;
      centre_squared[c] = std::inner_product(centre, centre + dim, centre, 0.0);
      for (std::int64_t d = 0; d < dim; ++d) centres_t[d * k + c] = centre[d];
    }
    bool changed = false;
    double inertia = 0.0;
    for (std::int64_t i = 0; i < n; ++i) {
      distances_to_centres(e.point(i), e.squared[i], centres_t, centre_squared, dim, k, dist.data());
      const std::int64_t label = std::min_element(dist.begin(), dist.end()) - dist.begin();  // first on ties
      changed |= label != run.labels[i];
      run.labels[i] = label;
      own[i] = dist[label];
      inertia += dist[label];
    }
    run.inertia = inertia;
    if (!changed) break;
    // New centres: the means of their units. An empty cluster takes the unit farthest from its centre
    // (the first such unit), so that k clusters survive.
    std::fill(centres.begin(), centres.end(), 0.0);
    std::fill(counts.begin(), counts.end(), 0);
    for (std::int64_t i = 0; i < n; ++i) {
      ++counts[run.labels[i]];
      double* c = centres.data() + run.labels[i] * dim;
      for (std::int64_t d = 0; d < dim; ++d) c[d] += e.point(i)[d];
    }
    for (std::int64_t c = 0; c < k; ++c) {
      if (counts[c] != 0) continue;
      std::int64_t far = 0;
      for (std::int64_t i = 1; i < n; ++i)
        if (own[i] > own[far] && counts[run.labels[i]] > 1) far = i;
      if (counts[run.labels[far]] <= 1) continue;  // every cluster a singleton: nothing to move
      double* old = centres.data() + run.labels[far] * dim;
      const double* p = e.point(far);
      for (std::int64_t d = 0; d < dim; ++d) old[d] -= p[d];
      --counts[run.labels[far]];
      run.labels[far] = c;
      own[far] = 0.0;
      counts[c] = 1;
      std::copy(p, p + dim, centres.begin() + c * dim);
    }
    for (std::int64_t c = 0; c < k; ++c)
      for (std::int64_t d = 0; d < dim; ++d) centres[c * dim + d] /= static_cast<double>(counts[c]);
  }
  return run;
}

// The orthogonal polar factor R = J U^T of k x k matrices M = U S J^T, the rotation that maximises
// trace(M R). One-sided Jacobi (Hestenes): plane rotations J from the right orthogonalise the columns of
// M J, whose norms are then S and whose directions U. Columns with a zero singular value (a cluster
// without units makes a zero row of M) get an orthonormal completion. J is kept from one call to the next:
// the matrices of successive Yu-Shi iterations differ little, so M J starts nearly orthogonal and few
// sweeps remain. Written out rather than taken from LAPACK: k is small, and a fixed sequence of operations
// keeps labels the same on every machine and thread count. Matrices here are column-major.
class PolarFactor {
 public:
  explicit PolarFactor(std::int64_t k) : k_(k), j_(static_cast<std::size_t>(k * k), 0.0) {
    for (std::int64_t i = 0; i < k; ++i) j_[i * k + i] = 1.0;
  }

  // M is row-major (m[row * k + column]); writes R row-major and returns the sum of the singular values.
  double operator()(const std::vector<double>& m, std::vector<double>& rotation) {
    const std::int64_t k = k_;
    std::vector<double> g(static_cast<std::size_t>(k * k), 0.0);  // M J, column-major
    for (std::int64_t c = 0; c < k; ++c)
      for (std::int64_t a = 0; a < k; ++a) {
        const double jac = j_[c * k + a];
        if (jac == 0.0) continue;
        for (std::int64_t i = 0; i < k; ++i) g[c * k + i] += m[i * k + a] * jac;
      }
    for (int sweep = 0; sweep < 60; ++sweep) {
      bool rotated = false;
      for (std::int64_t p = 0; p < k; ++p)
        for (std::int64_t q = p + 1; q < k; ++q) {
          double* gp = g.data() + p * k;
          double* gq = g.data() + q * k;
          double alpha = 0.0, beta = 0.0, gamma = 0.0;
          for (std::int64_t i = 0; i < k; ++i) {
            alpha += gp[i] * gp[i];
            beta += gq[i] * gq[i];
            gamma += gp[i] * gq[i];
          }
          // Columns orthogonal to 1e-13 give a rotation far more accurate than the argmax needs.
          if (gamma == 0.0 || std::abs(gamma) <= 1e-13 * std::sqrt(alpha * beta)) continue;
          rotated = true;
          const double zeta = (beta - alpha) / (2.0 * gamma);
          const double t = (zeta >= 0.0 ? 1.0 : -1.0) / (std::abs(zeta) + std::sqrt(1.0 + zeta * zeta));
          const double c = 1.0 / std::sqrt(1.0 + t * t), s = c * t;
          for (double* x : {gp, j_.data() + p * k}) {
            double* y = x == gp ? gq : j_.data() + q * k;
            for (std::int64_t i = 0; i < k; ++i) {
              const double xp = x[i], yq = y[i];
              x[i] = c * xp - s * yq;
              y[i] = s * xp + c * yq;
            }
          }
        }
      if (!rotated) break;
    }
    std::vector<double> sigma(static_cast<std::size_t>(k));
    double largest = 0.0;
    for (std::int64_t c = 0; c < k; ++c) {
      const double* gc = g.data() + c * k;
      sigma[c] = std::sqrt(std::inner_product(gc, gc + k, gc, 0.0));
      largest = std::max(largest, sigma[c]);
    }
    std::vector<double>& u = g;  // normalised in place: U, column-major
    std::vector<bool> have(static_cast<std::size_t>(k), false);
    for (std::int64_t c = 0; c < k; ++c)
      if (sigma[c] > 1e-12 * largest) {
        for (std::int64_t i = 0; i < k; ++i) u[c * k + i] /= sigma[c];
        have[c] = true;
      }
    // Completion: unit vectors e_0, e_1, ... made orthogonal to the columns in hand (twice, for
    // accuracy), each kept when enough of it is left.
    std::int64_t next_unit = 0;
    for (std::int64_t c = 0; c < k; ++c) {
      while (!have[c] && next_unit < k) {
        std::vector<double> v(static_cast<std::size_t>(k), 0.0);
        v[next_unit++] = 1.0;
        for (int pass = 0; pass < 2; ++pass)
          for (std::int64_t o = 0; o < k; ++o) {
            if (!have[o]) continue;
            const double* uo = u.data() + o * k;
            const double dot = std::inner_product(uo, uo + k, v.begin(), 0.0);
            for (std::int64_t i = 0; i < k; ++i) v[i] -= dot * uo[i];
          }
        const double norm = std::sqrt(std::inner_product(v.begin(), v.end(), v.begin(), 0.0));
        if (norm < 0.5) continue;
        for (std::int64_t i = 0; i < k; ++i) u[c * k + i] = v[i] / norm;
        have[c] = true;
      }
    }
    rotation.assign(static_cast<std::size_t>(k * k), 0.0);  // R[a][b] = sum over c of J[a][c] U[b][c]
    for (std::int64_t c = 0; c < k; ++c)
      for (std::int64_t a = 0; a < k; ++a) {
        const double jac = j_[c * k + a];
        const double* uc = u.data() + c * k;
        double* r = rotation.data() + a * k;
        for (std::int64_t b = 0; b < k; ++b) r[b] += jac * uc[b];
      }
    return std::accumulate(sigma.begin(), sigma.end(), 0.0);
  }

 private:
  std::int64_t k_;
  std::vector<double> j_;  // column-major
};

// Yu and Shi's discretisation ("Multiclass spectral clustering", 2003): the rotation R of the unit-length
// rows X of the NJW embedding that brings X R closest to a 0/1 cluster indicator. Starts from R whose
// first column is a random row and whose further columns are the rows least aligned with those already
// taken (as the paper and scikit-learn do), then alternates labels = argmax of X R per row (first on
// ties) with R = the polar factor of indicator^T X, until the objective (sum of singular values) stops
// rising.
std::vector<std::int64_t> yu_shi(const Embedding& x, std::int64_t k, std::uint64_t seed) {
  const std::int64_t n = x.n;
  SplitMix64 rng(seed);
  std::vector<double> rotation(static_cast<std::size_t>(k * k), 0.0);  // k x k; column c is a direction
  auto take_row = [&](std::int64_t row, std::int64_t column) {
    for (std::int64_t d = 0; d < k; ++d) rotation[d * k + column] = x.point(row)[d];
  };
  take_row(rng.below(n), 0);
  std::vector<double> alignment(static_cast<std::size_t>(n), 0.0);
  for (std::int64_t c = 1; c < k; ++c) {
    for (std::int64_t i = 0; i < n; ++i) {
      double dot = 0.0;
      for (std::int64_t d = 0; d < k; ++d) dot += x.point(i)[d] * rotation[d * k + c - 1];
      alignment[i] += std::abs(dot);
    }
    take_row(std::min_element(alignment.begin(), alignment.end()) - alignment.begin(), c);
  }
  std::vector<std::int64_t> labels(static_cast<std::size_t>(n));
  std::vector<double> projection(static_cast<std::size_t>(k)), m(static_cast<std::size_t>(k * k));
  PolarFactor polar_factor(k);
  double last = -1.0;
  for (int iteration = 0; iteration < 30; ++iteration) {
    std::fill(m.begin(), m.end(), 0.0);
    for (std::int64_t i = 0; i < n; ++i) {
      const double* p = x.point(i);
      row_times(p, rotation.data(), k, k, projection.data());
      labels[i] = std::max_element(projection.begin(), projection.end()) - projection.begin();
      double* row = m.data() + labels[i] * k;
      for (std::int64_t d = 0; d < k; ++d) row[d] += p[d];
    }
    const double objective = polar_factor(m, rotation);
    // The objective never falls in exact arithmetic; a rise below rounding level means convergence.
    if (objective - last <= 1e-12 * static_cast<double>(n)) break;
    last = objective;
  }
  return labels;
}

// Renames labels in order of first appearance (0 for the first unit's cluster, and so on); returns the
// number of clusters.
std::int64_t canonicalise(std::vector<std::int64_t>& labels) {
  std::vector<std::int64_t> rename;
  std::int64_t next = 0;
  for (std::int64_t& l : labels) {
    if (l >= static_cast<std::int64_t>(rename.size())) rename.resize(static_cast<std::size_t>(l + 1), -1);
    if (rename[l] < 0) rename[l] = next++;
    l = rename[l];
  }
  return next;
}

// A labelling of the live units with the tallies the normalised cut needs: links(i, c) = sum over j in
// cluster c of A_ij, and per cluster its volume and internal weight (sum of A_ij over i, j inside).
// cut = sum over clusters of 1 - inside / volume.
struct Partition {
  LabelAssignment source = LabelAssignment::kmeans_njw;
  std::vector<std::int64_t> labels;
  std::int64_t k = 0;
  std::vector<double> links, volume, inside;
  std::vector<std::int64_t> count;
  std::int64_t moves = 0;

  double cut() const {
    double total = 0.0;
    for (std::int64_t c = 0; c < k; ++c)
      if (count[c] > 0) total += 1.0 - inside[c] / volume[c];
    return total;
  }
};

// One pass over the affinity of the live units fills the links of every partition and the degrees;
// rows are summed by one thread each, in column order, and folded into clusters in row order, so the
// tallies do not depend on the thread count.
void tally(MatrixView<const double> correlation, const std::vector<std::int64_t>& live, AffinityMode mode,
           std::vector<Partition>& parts, std::vector<double>& degree, int threads) {
  const std::int64_t n = static_cast<std::int64_t>(live.size());
  degree.assign(static_cast<std::size_t>(n), 0.0);
  for (Partition& p : parts) p.links.assign(static_cast<std::size_t>(n * p.k), 0.0);
  constexpr std::int64_t rows_per_task = 32;
  with_affinity(mode, [&](auto affinity) {
    parallel_for((n + rows_per_task - 1) / rows_per_task, threads, [&](std::int64_t task) {
      for (std::int64_t i = task * rows_per_task; i < std::min(n, (task + 1) * rows_per_task); ++i) {
        const double* row = correlation.row(live[i]);
        double d = 0.0;
        for (std::int64_t j = 0; j < n; ++j) {
          const double a = j == i ? 1.0 : affinity(row[live[j]]);
          d += a;
          for (Partition& p : parts) p.links[i * p.k + p.labels[j]] += a;
        }
        degree[i] = d;
      }
    });
  });
  for (Partition& p : parts) {
    p.volume.assign(static_cast<std::size_t>(p.k), 0.0);
    p.inside.assign(static_cast<std::size_t>(p.k), 0.0);
    p.count.assign(static_cast<std::size_t>(p.k), 0);
    for (std::int64_t i = 0; i < n; ++i) {
      p.volume[p.labels[i]] += degree[i];
      p.inside[p.labels[i]] += p.links[i * p.k + p.labels[i]];
      ++p.count[p.labels[i]];
    }
  }
}

// Greedy refinement of the normalised cut: in unit order, each unit moves to the cluster whose gain in
// normalised association (sum of inside / volume, which is k - cut) is largest, when that gain beats its
// loss where it is; sweeps repeat until a sweep moves nothing. Clusters are never emptied, so k stays.
// Each move lowers the cut by more than 1e-12, so the sweeps end. The kernel k-means view of the cut
// (Dhillon, Guan and Kulis, "Kernel k-means, spectral clustering and normalized cuts", KDD 2004) with the
// exact objective in place of its bound.
void refine(MatrixView<const double> correlation, const std::vector<std::int64_t>& live, AffinityMode mode,
            const std::vector<double>& degree, Partition& p) {
  const std::int64_t n = static_cast<std::int64_t>(live.size()), k = p.k;
  if (k < 2) return;
  constexpr double min_gain = 1e-12;
  constexpr int max_sweeps = 100;
  std::vector<double> ratio(static_cast<std::size_t>(k));
  for (std::int64_t c = 0; c < k; ++c) ratio[c] = p.inside[c] / p.volume[c];
  with_affinity(mode, [&](auto affinity) {
    for (int sweep = 0; sweep < max_sweeps; ++sweep) {
      bool moved = false;
      for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t from = p.labels[i];
        if (p.count[from] <= 1) continue;
        const double di = degree[i];
        const double* links = p.links.data() + i * k;
        const double from_inside = p.inside[from] - 2.0 * links[from] + 1.0;  // the unit diagonal leaves too
        const double loss = ratio[from] - from_inside / (p.volume[from] - di);
        std::int64_t to = -1;
        double best = -std::numeric_limits<double>::infinity();
        for (std::int64_t c = 0; c < k; ++c) {
          if (c == from) continue;
          const double gain = (p.inside[c] + 2.0 * links[c] + 1.0) / (p.volume[c] + di) - ratio[c];
          if (gain > best) best = gain, to = c;
        }
        if (!(best - loss > min_gain)) continue;
        p.inside[to] += 2.0 * links[to] + 1.0;
        p.volume[to] += di;
        p.inside[from] = from_inside;
        p.volume[from] -= di;
        ratio[from] = p.inside[from] / p.volume[from];
        ratio[to] = p.inside[to] / p.volume[to];
        --p.count[from];
        ++p.count[to];
        p.labels[i] = to;
        ++p.moves;
        moved = true;
        const double* row = correlation.row(live[i]);  // A is symmetric: row i is column i
        for (std::int64_t j = 0; j < n; ++j) {
          const double a = j == i ? 1.0 : affinity(row[live[j]]);
          p.links[j * k + from] -= a;
          p.links[j * k + to] += a;
        }
      }
      if (!moved) break;
    }
  });
}

std::vector<bool> find_dead(MatrixView<const double> correlation, const SpectralOptions& options) {
  const std::int64_t u = correlation.rows;
  if (options.dead) {
    if (static_cast<std::int64_t>(options.dead->size()) != u)
      throw Error("spectral clustering: the dead-unit mask has " + std::to_string(options.dead->size()) +
                  " entries for " + std::to_string(u) + " units");
    return *options.dead;
  }
  std::vector<bool> dead(static_cast<std::size_t>(u));
  for (std::int64_t i = 0; i < u; ++i) {
    const double diagonal = correlation(i, i);
    if (!std::isfinite(diagonal))
      throw Error("spectral clustering: correlation(" + std::to_string(i) + ", " + std::to_string(i) +
                  ") is not finite; pass SpectralOptions::dead to leave that unit out");
    dead[i] = diagonal == 0.0;
  }
  return dead;
}

struct Laplacian {
  std::vector<float> values;  // live x live, row-major
  std::vector<double> scale;  // D^-1/2
  double frobenius = 0.0;     // ||L||_F of the float32 values
};

// The Laplacian L = I - D^-1/2 A D^-1/2 over the live units (row-major live x live), in float32: the
// eigensolver only needs residuals of 1e-5, and half the bytes make its products twice as fast. Built in
// tiles so that each entry and its mirror are read together (checked for symmetry) without striding
// through a large matrix; degrees are summed in float64. Every entry is written by one thread and
// computed the same way on any thread count.
Laplacian normalized_laplacian(MatrixView<const double> correlation, const std::vector<std::int64_t>& live,
                               AffinityMode mode, int threads) {
  const std::int64_t n = static_cast<std::int64_t>(live.size());
  Laplacian result;
  std::vector<float>& lap = result.values;
  lap.resize(static_cast<std::size_t>(n * n));
  constexpr std::int64_t tile = 64;
  const std::int64_t tiles = (n + tile - 1) / tile;
  parallel_for(tiles, threads, [&](std::int64_t ti) {
    const std::int64_t i0 = ti * tile, i1 = std::min(n, i0 + tile);
    for (std::int64_t j0 = i0; j0 < n; j0 += tile) {
      const std::int64_t j1 = std::min(n, j0 + tile);
      for (std::int64_t i = i0; i < i1; ++i) {
        const double* row = correlation.row(live[i]);
        for (std::int64_t j = std::max(j0, i + 1); j < j1; ++j) {
          const double c = row[live[j]];
          const double mirror = correlation(live[j], live[i]);
          if (!std::isfinite(c) || !std::isfinite(mirror) || std::abs(c - mirror) > 1e-6)
            throw Error("spectral clustering: correlation(" + std::to_string(live[i]) + ", " +
                        std::to_string(live[j]) + ") = " + std::to_string(c) + " and its mirror " +
                        std::to_string(mirror) + (std::isfinite(c) && std::isfinite(mirror)
                                                      ? ": the matrix must be symmetric"
                                                      : ": live units need finite correlations"));
          lap[i * n + j] = lap[j * n + i] = static_cast<float>(affinity_of(0.5 * (c + mirror), mode));
        }
      }
    }
  });
  std::vector<double>& scale = result.scale;
  scale.resize(static_cast<std::size_t>(n));
  parallel_for(tiles, threads, [&](std::int64_t ti) {
    for (std::int64_t i = ti * tile; i < std::min(n, (ti + 1) * tile); ++i) {
      lap[i * n + i] = 1.0f;
      const float* row = lap.data() + i * n;
      scale[i] = 1.0 / std::sqrt(std::accumulate(row, row + n, 0.0));  // degree >= 1: the diagonal
    }
  });
  std::vector<double> squares(static_cast<std::size_t>(n));
  parallel_for(tiles, threads, [&](std::int64_t ti) {
    for (std::int64_t i = ti * tile; i < std::min(n, (ti + 1) * tile); ++i) {
      float* row = lap.data() + i * n;
      const double si = scale[i];
      double sum = 0.0;
      for (std::int64_t j = 0; j < n; ++j) {
        row[j] = static_cast<float>(-row[j] * si * scale[j]);
        sum += static_cast<double>(row[j]) * row[j];
      }
      const float diagonal = static_cast<float>(1.0 - si * si);
      sum += static_cast<double>(diagonal) * diagonal - static_cast<double>(row[i]) * row[i];
      row[i] = diagonal;
      squares[i] = sum;
    }
  });
  result.frobenius = std::sqrt(std::accumulate(squares.begin(), squares.end(), 0.0));
  return result;
}

// The tie tolerance of the eigengap rule (SpectralResult::eigengap_tolerance): each computed eigenvalue
// is within delta = r ||L||_2 + ||E||_2 of an exact one (a pair with residual rho lies within rho of an
// eigenvalue, and the CPU backend holds every pair it returns, Lanczos or dense, to rho <= r ||L||; the
// float32 rounding E of L moves eigenvalues by at most ||E||_2, Weyl), with
// ||L||_2 <= 2 for a normalised Laplacian of a non-negative affinity and ||E||_2 <= ||E||_F <= 2^-24
// ||L||_F. A difference of two eigenvalues is then known to within 2 delta.
double eigengap_tolerance(double frobenius) { return 2.0 * (eigen_residual * 2.0 + 0x1.0p-24 * frobenius); }

// SpectralOptions::max_k states the rule.
std::int64_t eigengap_k(const std::vector<double>& values, std::int64_t max_k, std::int64_t live, double tolerance) {
  if (live < 3) return 1;
  const std::int64_t last = std::min(max_k, live - 1);  // gaps g_j = values[j] - values[j - 1], 1-based j
  double largest = -std::numeric_limits<double>::infinity();
  for (std::int64_t j = 2; j <= last; ++j) largest = std::max(largest, values[j] - values[j - 1]);
  if (!(largest > tolerance)) return 1;
  for (std::int64_t j = 2; j <= last; ++j)
    if (values[j] - values[j - 1] >= largest - tolerance) return j;
  return last;  // not reached: the largest gap itself qualifies
}

// k-means objective of a labelling on the given points: the sum of squared distances to cluster means.
double inertia_of(const Embedding& e, const std::vector<std::int64_t>& labels, std::int64_t k) {
  std::vector<double> centres(static_cast<std::size_t>(k * e.dim), 0.0);
  std::vector<std::int64_t> counts(static_cast<std::size_t>(k), 0);
  for (std::int64_t i = 0; i < e.n; ++i) {
    ++counts[labels[i]];
    for (std::int64_t d = 0; d < e.dim; ++d) centres[labels[i] * e.dim + d] += e.point(i)[d];
  }
  for (std::int64_t c = 0; c < k; ++c)
    for (std::int64_t d = 0; d < e.dim; ++d) centres[c * e.dim + d] /= static_cast<double>(std::max<std::int64_t>(1, counts[c]));
  double total = 0.0;
  for (std::int64_t i = 0; i < e.n; ++i) {
    const double* centre = centres.data() + labels[i] * e.dim;
    for (std::int64_t d = 0; d < e.dim; ++d) total += (e.point(i)[d] - centre[d]) * (e.point(i)[d] - centre[d]);
  }
  return total;
}

// The candidate labellings of the live units (SpectralResult::assignment), refined; the kept one first
// has the most clusters (k unless units coincide), then the lowest cut, then comes first in candidate
// order.
Partition best_partition(MatrixView<const double> correlation, const std::vector<std::int64_t>& live,
                         const Embedding& njw, const Embedding& random_walk, std::int64_t k,
                         const SpectralOptions& options, int threads) {
  const int restarts = options.restarts, starts = options.yu_shi_starts;
  const int tasks = 2 * restarts + starts;
  std::vector<KMeansRun> runs(static_cast<std::size_t>(tasks));
  parallel_for(tasks, threads, [&](std::int64_t t) {
    const int r = static_cast<int>(t);
    if (r < restarts)
      runs[r] = kmeans_run(njw, k, options.max_iterations, run_seed(options.seed, r));
    else if (r < 2 * restarts)
      runs[r] = kmeans_run(random_walk, k, options.max_iterations,
                           run_seed(options.seed, random_walk_streams + r - restarts));
    else
      runs[r].labels = yu_shi(njw, k, run_seed(options.seed, yu_shi_streams + r - 2 * restarts));
  });
  // Per embedding, the k-means run of lowest inertia (the earliest on ties); every Yu-Shi start.
  std::vector<Partition> parts;
  auto add = [&](LabelAssignment source, std::vector<std::int64_t> labels) {
    const std::int64_t clusters = canonicalise(labels);
    for (const Partition& p : parts)
      if (p.labels == labels) return;  // the same partition: refined once
    Partition p;
    p.source = source;
    p.labels = std::move(labels);
    p.k = clusters;
    parts.push_back(std::move(p));
  };
  for (int embedding = 0; embedding < 2; ++embedding) {
    std::size_t best = static_cast<std::size_t>(embedding * restarts);
    for (std::size_t r = best + 1; r < static_cast<std::size_t>((embedding + 1) * restarts); ++r)
      if (runs[r].inertia < runs[best].inertia) best = r;
    if (restarts > 0)
      add(embedding == 0 ? LabelAssignment::kmeans_njw : LabelAssignment::kmeans_random_walk, std::move(runs[best].labels));
  }
  for (int s = 0; s < starts; ++s) add(LabelAssignment::yu_shi, std::move(runs[2 * restarts + s].labels));

  std::vector<double> degree;
  tally(correlation, live, options.affinity, parts, degree, threads);
  parallel_for(static_cast<std::int64_t>(parts.size()), threads,
               [&](std::int64_t c) { refine(correlation, live, options.affinity, degree, parts[c]); });
  std::size_t kept = 0;
  for (std::size_t c = 1; c < parts.size(); ++c) {
    const std::int64_t clusters = std::count_if(parts[c].count.begin(), parts[c].count.end(),
                                                [](std::int64_t x) { return x > 0; });
    const std::int64_t kept_clusters = std::count_if(parts[kept].count.begin(), parts[kept].count.end(),
                                                     [](std::int64_t x) { return x > 0; });
    if (clusters > kept_clusters || (clusters == kept_clusters && parts[c].cut() < parts[kept].cut())) kept = c;
  }
  return std::move(parts[kept]);
}

}  // namespace

const char* to_string(AffinityMode mode) {
  switch (mode) {
    case AffinityMode::abs: return "abs";
    case AffinityMode::positive: return "positive";
    case AffinityMode::shifted: return "shifted";
  }
  return "?";
}

AffinityMode parse_affinity_mode(const std::string& text) {
  for (AffinityMode mode : {AffinityMode::abs, AffinityMode::positive, AffinityMode::shifted})
    if (text == to_string(mode)) return mode;
  throw Error("unknown affinity '" + text + "': expected abs, positive or shifted");
}

const char* to_string(KRule rule) { return rule == KRule::given ? "given" : "eigengap"; }

const char* to_string(LabelAssignment assignment) {
  switch (assignment) {
    case LabelAssignment::kmeans_njw: return "kmeans-njw";
    case LabelAssignment::kmeans_random_walk: return "kmeans-random-walk";
    case LabelAssignment::yu_shi: return "yu-shi";
  }
  return "?";
}

std::string k_rule_text(const SpectralResult& result) {
  if (result.k_rule == KRule::given) return "k given";
  const std::size_t m = result.eigenvalues.size();
  if (m < 3) return "k = 1: fewer than three live units";
  char tolerance[32];
  std::snprintf(tolerance, sizeof tolerance, "%.3g", result.eigengap_tolerance);
  return "eigengap: on the m = " + std::to_string(m) +
         " smallest Laplacian eigenvalues l_1 <= ... <= l_m, with gaps g_j = l_{j+1} - l_j and G the largest g_j "
         "for j in [2, m - 1], k = the smallest j in [2, m - 1] with g_j >= G - tau (gaps within tau = " +
         tolerance +
         " are ties: the eigensolver's accuracy); k = 1 when G <= tau (the rest of the spectrum is flat: one "
         "tight block)";
}

double affinity_of(double correlation, AffinityMode mode) {
  switch (mode) {
    case AffinityMode::abs: return std::abs(correlation);
    case AffinityMode::positive: return std::max(correlation, 0.0);
    case AffinityMode::shifted: return 0.5 * (1.0 + correlation);
  }
  return 0.0;
}

double normalized_cut(MatrixView<const double> correlation, const std::vector<std::int64_t>& labels,
                      AffinityMode mode) {
  const std::int64_t u = correlation.rows;
  if (correlation.cols != u || static_cast<std::int64_t>(labels.size()) != u)
    throw Error("normalized_cut: needs a square matrix and one label per row");
  const std::int64_t k = labels.empty() ? 0 : *std::max_element(labels.begin(), labels.end()) + 1;
  // Units left out are skipped by index (their entries may be NaN). Per-row sums on all cores (each row
  // summed by one thread, in column order), then folded into the clusters in row order: the value does
  // not depend on the thread count.
  std::vector<std::int64_t> kept;
  for (std::int64_t j = 0; j < u; ++j)
    if (labels[j] >= 0) kept.push_back(j);
  const std::int64_t n = static_cast<std::int64_t>(kept.size());
  std::vector<double> degree(static_cast<std::size_t>(n)), own(static_cast<std::size_t>(n));
  constexpr std::int64_t rows_per_item = 64;
  with_affinity(mode, [&](auto affinity) {
    parallel_for((n + rows_per_item - 1) / rows_per_item, thread_count(0), [&](std::int64_t item) {
      for (std::int64_t i = item * rows_per_item; i < std::min(n, (item + 1) * rows_per_item); ++i) {
        const double* row = correlation.row(kept[i]);
        const std::int64_t li = labels[kept[i]];
        double d = 0.0, inside = 0.0;
        for (std::int64_t j = 0; j < n; ++j) {
          const double a = j == i ? 1.0 : affinity(row[kept[j]]);
          d += a;
          inside += labels[kept[j]] == li ? a : 0.0;
        }
        degree[i] = d;
        own[i] = inside;
      }
    });
  });
  std::vector<double> volume(static_cast<std::size_t>(k)), inside(static_cast<std::size_t>(k));
  for (std::int64_t i = 0; i < n; ++i) {
    volume[labels[kept[i]]] += degree[i];
    inside[labels[kept[i]]] += own[i];
  }
  double cut = 0.0;
  for (std::int64_t c = 0; c < k; ++c)
    if (volume[c] > 0.0) cut += (volume[c] - inside[c]) / volume[c];
  return cut;
}

Matrix permute_symmetric(MatrixView<const double> m, const std::vector<std::int64_t>& order) {
  const std::int64_t n = static_cast<std::int64_t>(order.size());
  if (m.rows != n || m.cols != n) throw Error("permute_symmetric: the order must list every row once");
  std::vector<bool> seen(static_cast<std::size_t>(n));
  for (std::int64_t p : order) {
    if (p < 0 || p >= n || seen[p]) throw Error("permute_symmetric: the order is not a permutation");
    seen[p] = true;
  }
  Matrix out(n, n);
  for (std::int64_t i = 0; i < n; ++i) {
    const double* row = m.row(order[i]);
    for (std::int64_t j = 0; j < n; ++j) out(i, j) = row[order[j]];
  }
  return out;
}

SpectralResult spectral_clustering(Backend& backend, MatrixView<const double> correlation,
                                   const std::vector<std::int64_t>& units_per_net,
                                   const SpectralOptions& options) {
  const std::int64_t u = correlation.rows;
  if (correlation.cols != u || correlation.data == nullptr || correlation.stride < u)
    throw Error("spectral clustering: the correlation matrix must be square (got " +
                std::to_string(correlation.rows) + " x " + std::to_string(correlation.cols) + ")");
  std::int64_t declared = 0;
  for (std::int64_t units : units_per_net) {
    if (units < 0) throw Error("spectral clustering: a net cannot have a negative number of units");
    declared += units;
  }
  if (declared != u)
    throw Error("spectral clustering: the nets have " + std::to_string(declared) +
                " units together but the correlation matrix is " + std::to_string(u) + " x " + std::to_string(u));
  if (options.restarts < 1) throw Error("spectral clustering: restarts must be at least 1");
  if (options.yu_shi_starts < 0) throw Error("spectral clustering: yu_shi_starts cannot be negative");
  if (options.max_iterations < 1) throw Error("spectral clustering: max_iterations must be at least 1");
  if (!options.k && options.max_k < 2) throw Error("spectral clustering: max_k must be at least 2");

  SpectralResult result;
  const std::vector<bool> dead = find_dead(correlation, options);
  std::vector<std::int64_t> live;
  for (std::int64_t i = 0; i < u; ++i) (dead[i] ? result.dead_units : live).push_back(i);
  const std::int64_t n = static_cast<std::int64_t>(live.size());
  if (options.k) {
    if (*options.k < 1) throw Error("spectral clustering: k = " + std::to_string(*options.k) + " must be at least 1");
    if (*options.k > n)
      throw Error("spectral clustering: k = " + std::to_string(*options.k) + " clusters but only " +
                  std::to_string(n) + " live units (" + std::to_string(result.dead_units.size()) +
                  " of " + std::to_string(u) + " are dead); ask for at most " + std::to_string(n));
  } else if (n == 0) {
    throw Error("spectral clustering: every one of the " + std::to_string(u) + " units is dead");
  }
  const int threads = thread_count(options.threads);

  // Eigenpairs. The Laplacian is the one dense live x live copy; it is freed before the assignment.
  const std::int64_t wanted = options.k ? *options.k : std::min(options.max_k + 1, n);
  Eigenpairs pairs;
  std::vector<double> scale;
  {
    Laplacian lap = normalized_laplacian(correlation, live, options.affinity, threads);
    EigenOptions eigen;
    eigen.relative_residual = eigen_residual;
    pairs = backend.smallest_eigenpairs(MatrixView<const float>(lap.values.data(), n, n), wanted, eigen);
    scale = std::move(lap.scale);
    if (!options.k) result.eigengap_tolerance = eigengap_tolerance(lap.frobenius);
  }
  result.k_rule = options.k ? KRule::given : KRule::eigengap;
  const std::int64_t k = options.k ? *options.k : eigengap_k(pairs.values, options.max_k, n, result.eigengap_tolerance);
  result.eigenvalues = pairs.values;

  std::vector<std::int64_t> labels(static_cast<std::size_t>(n), 0);
  if (k > 1) {
    // Embeddings of the first k eigenvectors: rows at unit length (NJW), and D^-1/2 V (random walk).
    std::vector<double> njw(static_cast<std::size_t>(n * k)), walk(static_cast<std::size_t>(n * k));
    for (std::int64_t i = 0; i < n; ++i) {
      double* p = njw.data() + i * k;
      double* q = walk.data() + i * k;
      for (std::int64_t j = 0; j < k; ++j) p[j] = pairs.vectors(i, j);
      for (std::int64_t j = 0; j < k; ++j) q[j] = p[j] * scale[i];
      const double norm = std::sqrt(std::inner_product(p, p + k, p, 0.0));
      if (norm > 0.0)
        for (std::int64_t j = 0; j < k; ++j) p[j] /= norm;
    }
    pairs = Eigenpairs();
    const Embedding njw_embedding = make_embedding(std::move(njw), n, k);
    Partition kept = best_partition(correlation, live, njw_embedding, make_embedding(std::move(walk), n, k), k,
                                    options, threads);
    result.assignment = kept.source;
    result.refinement_moves = kept.moves;
    labels = std::move(kept.labels);
    result.inertia = inertia_of(njw_embedding, labels, k);
  }

  // Canonical labels: clusters numbered in the order of their lowest unit. A cluster that lost every unit
  // (units that coincide) gets no number, and k says how many clusters hold units.
  result.k = canonicalise(labels);
  result.labels.assign(static_cast<std::size_t>(u), -1);
  for (std::int64_t i = 0; i < n; ++i) result.labels[live[i]] = labels[i];

  const std::int64_t nets = static_cast<std::int64_t>(units_per_net.size());
  result.cluster_sizes.assign(static_cast<std::size_t>(result.k), 0);
  result.net_counts.assign(static_cast<std::size_t>(result.k), std::vector<std::int64_t>(static_cast<std::size_t>(nets)));
  for (std::int64_t net = 0, unit = 0; net < nets; ++net)
    for (std::int64_t end = unit + units_per_net[net]; unit < end; ++unit)
      if (result.labels[unit] >= 0) {
        ++result.cluster_sizes[result.labels[unit]];
        ++result.net_counts[result.labels[unit]][net];
      }
  std::int64_t in_mixed = 0;
  result.mixed.resize(static_cast<std::size_t>(result.k));
  for (std::int64_t c = 0; c < result.k; ++c) {
    const auto& counts = result.net_counts[c];
    result.mixed[c] = std::count_if(counts.begin(), counts.end(), [](std::int64_t x) { return x > 0; }) >= 2;
    if (result.mixed[c]) in_mixed += result.cluster_sizes[c];
  }
  result.mixed_share = n > 0 ? static_cast<double>(in_mixed) / static_cast<double>(n) : 0.0;

  result.order.resize(static_cast<std::size_t>(u));
  std::iota(result.order.begin(), result.order.end(), 0);
  std::stable_sort(result.order.begin(), result.order.end(), [&](std::int64_t a, std::int64_t b) {
    const std::int64_t la = result.labels[a] < 0 ? result.k : result.labels[a];
    const std::int64_t lb = result.labels[b] < 0 ? result.k : result.labels[b];
    return la < lb;
  });
  result.normalized_cut = normalized_cut(correlation, result.labels, options.affinity);
  return result;
}

}  // namespace convergent
