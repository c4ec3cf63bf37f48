// Spectral clustering of the units of all nets (Ng, Jordan and Weiss): affinity from the combined
// correlation, symmetric normalised Laplacian, its k smallest eigenvectors from the backend, rows scaled
// to unit length, k-means++ with restarts. Everything after the eigensolver is deterministic given the
// seed: the sampling is written out here rather than left to std:: distributions, whose output differs
// between standard libraries.
#include "convergent/spectral.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <thread>

#include "convergent/error.hpp"
#include "parallel.hpp"

namespace convergent {
namespace {

// splitmix64: small, fast, and its output is fixed by its definition, so runs reproduce everywhere.
class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // Uniform in [0, n) for n >= 1.
  std::int64_t below(std::int64_t n) {
    return std::min(n - 1, static_cast<std::int64_t>(uniform() * static_cast<double>(n)));
  }

 private:
  std::uint64_t state_;
};

// Every k-means run draws from its own stream, derived from (seed, run), so that the result does not
// depend on which thread ran which run.
std::uint64_t run_seed(std::uint64_t seed, int run) {
  SplitMix64 mix(seed ^ (0xD1B54A32D192ED03ULL * (static_cast<std::uint64_t>(run) + 1)));
  mix.next();
  return mix.next();
}

struct KMeansRun {
  std::vector<std::int64_t> labels;
  double inertia = std::numeric_limits<double>::infinity();
};

// Squared distances from one point to every centre, as |x|^2 + |c|^2 - 2 x.c. Centres are stored
// transposed (dim x k) so that the inner loop runs over centres: an elementwise update that vectorises
// without reordering any sum, so the result does not depend on the vector width.
void distances_to_centres(const double* x, double x_squared, const std::vector<double>& centres_t,
                          const std::vector<double>& centre_squared, std::int64_t dim, std::int64_t k, double* out) {
  std::fill(out, out + k, 0.0);
  for (std::int64_t d = 0; d < dim; ++d) {
    const double xd = x[d];
    const double* c = centres_t.data() + d * k;
    for (std::int64_t j = 0; j < k; ++j) out[j] += xd * c[j];
  }
  for (std::int64_t j = 0; j < k; ++j) out[j] = std::max(0.0, x_squared + centre_squared[j] - 2.0 * out[j]);
}

double squared_distance(const double* a, const double* b, std::int64_t dim) {
  double s = 0.0;
  for (std::int64_t d = 0; d < dim; ++d) s += (a[d] - b[d]) * (a[d] - b[d]);
  return s;
}

// Greedy k-means++ (Arthur and Vassilvitskii; with 2 + ln k candidate centres per step, keeping the one
// that lowers the potential most, as scikit-learn does), then Lloyd iterations until no label changes.
KMeansRun kmeans_run(const std::vector<double>& points, std::int64_t n, std::int64_t dim, std::int64_t k,
                     int max_iterations, std::uint64_t seed) {
  SplitMix64 rng(seed);
  std::vector<double> centres(static_cast<std::size_t>(k * dim));  // k x dim
  auto point = [&](std::int64_t i) { return points.data() + i * dim; };

  // Seeding.
  std::vector<double> closest(static_cast<std::size_t>(n));
  std::int64_t first = rng.below(n);
  std::copy(point(first), point(first) + dim, centres.begin());
  double potential = 0.0;
  for (std::int64_t i = 0; i < n; ++i) potential += closest[i] = squared_distance(point(i), point(first), dim);
  const int trials = 2 + static_cast<int>(std::log(static_cast<double>(k)));
  std::vector<double> candidate_closest(static_cast<std::size_t>(n)), best_closest(static_cast<std::size_t>(n));
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
      double candidate_potential = 0.0;
      for (std::int64_t i = 0; i < n; ++i) {
        candidate_closest[i] = std::min(closest[i], squared_distance(point(i), point(pick), dim));
        candidate_potential += candidate_closest[i];
      }
      if (candidate_potential < best_potential) {
        best_potential = candidate_potential;
        best = pick;
        best_closest.swap(candidate_closest);
      }
    }
    std::copy(point(best), point(best) + dim, centres.begin() + c * dim);
    closest.swap(best_closest);
    potential = best_potential;
  }

  // Lloyd.
  KMeansRun run;
  run.labels.assign(static_cast<std::size_t>(n), -1);
  std::vector<double> centres_t(static_cast<std::size_t>(dim * k)), dist(static_cast<std::size_t>(k)),
      own(static_cast<std::size_t>(n));
  std::vector<std::int64_t> counts(static_cast<std::size_t>(k));
  std::vector<double> point_squared(static_cast<std::size_t>(n)), centre_squared(static_cast<std::size_t>(k));
  for (std::int64_t i = 0; i < n; ++i) point_squared[i] = std::inner_product(point(i), point(i) + dim, point(i), 0.0);
  for (int iteration = 0; iteration < max_iterations; ++iteration) {
    for (std::int64_t c = 0; c < k; ++c) {
      const double* centre = centres.data() + c * dim;
      centre_squared[c] = std::inner_product(centre, centre + dim, centre, 0.0);
      for (std::int64_t d = 0; d < dim; ++d) centres_t[d * k + c] = centre[d];
    }
    bool changed = false;
    double inertia = 0.0;
    for (std::int64_t i = 0; i < n; ++i) {
      distances_to_centres(point(i), point_squared[i], centres_t, centre_squared, dim, k, dist.data());
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
      for (std::int64_t d = 0; d < dim; ++d) c[d] += point(i)[d];
    }
    for (std::int64_t c = 0; c < k; ++c) {
      if (counts[c] == 0) {
        std::int64_t far = 0;
        for (std::int64_t i = 1; i < n; ++i)
          if (own[i] > own[far] && counts[run.labels[i]] > 1) far = i;
        if (counts[run.labels[far]] <= 1) continue;  // every cluster a singleton: nothing to move
        double* old = centres.data() + run.labels[far] * dim;
        const double* p = point(far);
        for (std::int64_t d = 0; d < dim; ++d) old[d] -= p[d];
        --counts[run.labels[far]];
        run.labels[far] = c;
        own[far] = 0.0;
        counts[c] = 1;
        std::copy(p, p + dim, centres.begin() + c * dim);
        continue;
      }
    }
    for (std::int64_t c = 0; c < k; ++c)
      for (std::int64_t d = 0; d < dim; ++d) centres[c * dim + d] /= static_cast<double>(counts[c]);
  }
  return run;
}

KMeansRun best_kmeans(const std::vector<double>& points, std::int64_t n, std::int64_t dim, std::int64_t k,
                      const SpectralOptions& options) {
  const int restarts = options.restarts;
  std::vector<KMeansRun> runs(static_cast<std::size_t>(restarts));
  parallel_for(restarts, thread_count(options.threads), [&](std::int64_t r) {
    runs[r] = kmeans_run(points, n, dim, k, options.max_iterations, run_seed(options.seed, static_cast<int>(r)));
  });
  std::size_t best = 0;
  for (std::size_t r = 1; r < runs.size(); ++r)
    if (runs[r].inertia < runs[best].inertia) best = r;  // strict: the earliest run wins ties
  return std::move(runs[best]);
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

// The Laplacian L = I - D^-1/2 A D^-1/2 over the live units (row-major live x live), in float32: the
// eigensolver only needs residuals of 1e-5, and half the bytes make its products twice as fast. Built in
// tiles so that each entry and its mirror are read together (checked for symmetry) without striding
// through a large matrix; degrees are summed in float64. Every entry is written by one thread and
// computed the same way on any thread count.
std::vector<float> normalized_laplacian(MatrixView<const double> correlation, const std::vector<std::int64_t>& live,
                                        AffinityMode mode, int threads) {
  const std::int64_t n = static_cast<std::int64_t>(live.size());
  std::vector<float> lap(static_cast<std::size_t>(n * n));
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
  std::vector<double> scale(static_cast<std::size_t>(n));
  parallel_for(tiles, threads, [&](std::int64_t ti) {
    for (std::int64_t i = ti * tile; i < std::min(n, (ti + 1) * tile); ++i) {
      lap[i * n + i] = 1.0f;
      const float* row = lap.data() + i * n;
      scale[i] = 1.0 / std::sqrt(std::accumulate(row, row + n, 0.0));  // degree >= 1: the diagonal
    }
  });
  parallel_for(tiles, threads, [&](std::int64_t ti) {
    for (std::int64_t i = ti * tile; i < std::min(n, (ti + 1) * tile); ++i) {
      float* row = lap.data() + i * n;
      const double si = scale[i];
      for (std::int64_t j = 0; j < n; ++j) row[j] = static_cast<float>(-row[j] * si * scale[j]);
      row[i] = static_cast<float>(1.0 - si * si);
    }
  });
  return lap;
}

std::int64_t eigengap_k(const std::vector<double>& values, std::int64_t max_k, std::int64_t live) {
  if (live < 3) return 1;
  const std::int64_t last = std::min(max_k, live - 1);
  std::int64_t best = 2;
  for (std::int64_t j = 3; j <= last; ++j)
    if (values[j] - values[j - 1] > values[best] - values[best - 1]) best = j;
  return best;
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
  // Per-row sums on all cores (each row summed by one thread, in column order), then folded into the
  // clusters in row order: the value does not depend on the thread count.
  std::vector<double> degree(static_cast<std::size_t>(u)), own(static_cast<std::size_t>(u));
  constexpr std::int64_t rows_per_item = 64;
  parallel_for((u + rows_per_item - 1) / rows_per_item, thread_count(0), [&](std::int64_t item) {
    for (std::int64_t i = item * rows_per_item; i < std::min(u, (item + 1) * rows_per_item); ++i) {
      if (labels[i] < 0) continue;
      const double* row = correlation.row(i);
      for (std::int64_t j = 0; j < u; ++j) {
        if (labels[j] < 0) continue;
        const double a = i == j ? 1.0 : affinity_of(row[j], mode);
        degree[i] += a;
        if (labels[j] == labels[i]) own[i] += a;
      }
    }
  });
  std::vector<double> volume(static_cast<std::size_t>(k)), inside(static_cast<std::size_t>(k));
  for (std::int64_t i = 0; i < u; ++i) {
    if (labels[i] < 0) continue;
    volume[labels[i]] += degree[i];
    inside[labels[i]] += own[i];
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

  // Eigenpairs. The Laplacian is the one dense live x live copy; it is freed before k-means.
  const std::int64_t wanted = options.k ? *options.k : std::min(options.max_k + 1, n);
  Eigenpairs pairs;
  {
    const std::vector<float> lap = normalized_laplacian(correlation, live, options.affinity, thread_count(options.threads));
    // Clustering needs eigenvectors to about 1e-5, not to working precision.
    EigenOptions eigen;
    eigen.relative_residual = 1e-5;
    pairs = backend.smallest_eigenpairs(MatrixView<const float>(lap.data(), n, n), wanted, eigen);
  }
  result.k_rule = options.k ? KRule::given : KRule::eigengap;
  result.k = options.k ? *options.k : eigengap_k(pairs.values, options.max_k, n);
  result.eigenvalues = pairs.values;
  const std::int64_t k = result.k;

  // Embedding: the first k eigenvectors, each row scaled to unit length.
  std::vector<double> points(static_cast<std::size_t>(n * k));
  for (std::int64_t i = 0; i < n; ++i) {
    double* p = points.data() + i * k;
    for (std::int64_t j = 0; j < k; ++j) p[j] = pairs.vectors(i, j);
    const double norm = std::sqrt(std::inner_product(p, p + k, p, 0.0));
    if (norm > 0.0)
      for (std::int64_t j = 0; j < k; ++j) p[j] /= norm;
  }
  pairs = Eigenpairs();
  KMeansRun best = best_kmeans(points, n, k, k, options);
  result.inertia = best.inertia;

  // Canonical labels: clusters numbered in the order of their lowest unit.
  std::vector<std::int64_t> rename(static_cast<std::size_t>(k), -1);
  std::int64_t next = 0;
  result.labels.assign(static_cast<std::size_t>(u), -1);
  for (std::int64_t i = 0; i < n; ++i) {
    std::int64_t& name = rename[best.labels[i]];
    if (name < 0) name = next++;
    result.labels[live[i]] = name;
  }
  // Lloyd keeps k clusters non-empty unless units coincide; a cluster lost that way gets no number
  // and k says how many clusters hold units.
  result.k = next;

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
