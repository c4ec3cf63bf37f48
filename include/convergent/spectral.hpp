// Many-to-many alignment (the paper's section 6): spectral clustering of the units of all nets together
// on an affinity made from their combined correlation matrix. Clusters that hold units of two or more
// nets are shared subspaces.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "convergent/backend.hpp"
#include "convergent/matrix.hpp"

namespace convergent {

// How a correlation c becomes an edge weight. The diagonal is always 1.
enum class AffinityMode {
  abs,       // |c|: a shared subspace does not care about the sign of a unit (the default)
  positive,  // max(c, 0): anti-correlated units are unrelated
  shifted,   // (1 + c) / 2: anti-correlated units are the least similar
};
const char* to_string(AffinityMode mode);
AffinityMode parse_affinity_mode(const std::string& text);  // "abs", "positive", "shifted"; else Error

// Which rule chose the number of clusters.
enum class KRule { given, eigengap };
const char* to_string(KRule rule);

// Which candidate labelling the clustering kept (see spectral_clustering): k-means++ on the NJW embedding
// (rows of the eigenvectors scaled to unit length, Ng, Jordan and Weiss 2001), k-means++ on the
// random-walk embedding D^-1/2 V (the Shi-Malik relaxation, scikit-learn's embedding), or Yu and Shi's
// discretisation ("Multiclass spectral clustering", ICCV 2003).
enum class LabelAssignment { kmeans_njw, kmeans_random_walk, yu_shi };
const char* to_string(LabelAssignment assignment);  // "kmeans-njw", "kmeans-random-walk", "yu-shi"

struct SpectralOptions {
  // Number of clusters. Without it, the eigengap rule picks k (see max_k).
  std::optional<std::int64_t> k;
  AffinityMode affinity = AffinityMode::abs;
  // Eigengap rule, on the m = min(max_k + 1, live) smallest eigenvalues l_1 <= ... <= l_m of the
  // Laplacian over the live units, with gaps g_j = l_{j+1} - l_j and a tolerance tau from the
  // eigensolver's accuracy (SpectralResult::eigengap_tolerance): gaps that differ by at most tau are ties.
  //   - G = the largest gap g_j with j in [2, m - 1]. If G > tau, k = the smallest j in [2, m - 1] with
  //     g_j >= G - tau (the smallest k on ties).
  //   - Otherwise every gap after the first is rounding noise: l_2 .. l_m are one tied group, the graph
  //     is one tight block (identical units, say), and k = 1.
  // g_1 is never a candidate by size: every |corr| is slightly positive, so the affinity graph is one
  // dense component whose gap l_2 - l_1 dwarfs all others even when there is inner structure (planted
  // subspaces give clear gaps at j >= 2); only a flat rest of the spectrum says there is none. With
  // fewer than three live units, k = 1.
  std::int64_t max_k = 64;
  // k-means++ runs on each of the two embeddings; per embedding the lowest inertia wins (the earliest
  // run on ties).
  int restarts = 2;
  int yu_shi_starts = 2;          // Yu-Shi discretisations, each from its own random first row
  int max_iterations = 300;       // Lloyd iterations per run; a run also stops when no label changes
  std::uint64_t seed = 0;         // same seed, same labels, on any thread count
  int threads = 0;                // k-means threads, 0 = all cores; the result does not depend on it
  // Units to leave out of the graph. Without it, a unit is dead when its diagonal entry is 0, which is
  // how Backend::correlation marks units with zero variance.
  std::optional<std::vector<bool>> dead;
};

struct SpectralResult {
  std::vector<std::int64_t> labels;  // per unit, in [0, k); -1 for dead units
  std::int64_t k = 0;
  KRule k_rule = KRule::given;
  // The tie tolerance tau of the eigengap rule: each eigenvalue is within delta = r ||L||_2 + ||E||_2 of
  // an exact eigenvalue of L, where r = 1e-5 is the eigensolver's relative residual, ||L||_2 <= 2, and
  // E is the float32 rounding of L (||E||_2 <= 2^-24 ||L||_F); a gap is then known to within 2 delta =
  // tau. 0 when k was given.
  double eigengap_tolerance = 0.0;
  // Eigenvalues of L = I - D^-1/2 A D^-1/2 over the live units, ascending: the k used for the embedding,
  // or, with the eigengap rule, the min(max_k + 1, live) it looked at.
  std::vector<double> eigenvalues;
  // Sum over clusters C of cut(C, V \ C) / vol(C) on the affinity A over the live units, where
  // vol(C) = sum over i in C of the degree d_i = sum_j A_ij (the unit diagonal included).
  double normalized_cut = 0.0;
  LabelAssignment assignment = LabelAssignment::kmeans_njw;  // the candidate whose refined labels were kept
  std::int64_t refinement_moves = 0;               // single-unit moves the greedy refinement made on it
  double inertia = 0.0;  // k-means objective of the final labels on the NJW embedding (unit-length rows)
  std::vector<std::int64_t> cluster_sizes;     // k
  std::vector<std::vector<std::int64_t>> net_counts;  // [cluster][net]: units of that net in the cluster
  std::vector<bool> mixed;                     // per cluster: units from two or more nets
  double mixed_share = 0.0;                    // share of live units that sit in mixed clusters
  std::vector<std::int64_t> dead_units;        // ascending
  // order[p] = the unit at position p when units are sorted by cluster (clusters in label order, units
  // ascending inside one), dead units last. permute_symmetric(corr, order) gives the block view.
  std::vector<std::int64_t> order;
};

// Clusters the units of all nets. `correlation` is the combined U x U correlation matrix (nets
// concatenated in the order of units_per_net, as Backend::correlation returns it); it must be
// symmetric and finite on live units.
// Steps: affinity A, symmetric normalised Laplacian L, its k smallest eigenvectors V (k from the eigengap
// rule unless given), then candidate labellings: k-means++ with restarts on the NJW embedding (rows of
// V at unit length), k-means++ on the random-walk embedding D^-1/2 V, and Yu-Shi discretisations. Each
// candidate is refined greedily (Dhillon, Guan and Kulis 2004: a unit moves to the cluster that lowers
// the normalised cut most, in unit order, sweep after sweep, until no move lowers it; no cluster is
// emptied), and the candidate with the lowest normalised cut is kept (the earlier one on ties, in the
// order above). The candidates were chosen by measurement (bench/RESULTS.md): on the bundled example's
// activations the NJW k-means alone cut 9-14% worse than the partition kept, and 0.6-3% worse than
// scikit-learn's best.
// Labels are canonical: cluster 0 holds the lowest live unit, cluster 1 the lowest unit not in cluster
// 0, and so on. Throws Error when k is larger than the number of live units, or on a malformed input.
// The Laplacian takes one dense live x live float32 matrix (1 GiB at U = 16384), plus a float32 copy
// inside the CPU backend when it uses its dense solver (a float64 one in the rare fallback, and on the
// CUDA backend); eigenvectors are solved to a residual of 1e-5 of ||L||, checked on every path of the
// CPU backend, ample for clustering on their rows.
SpectralResult spectral_clustering(Backend& backend, MatrixView<const double> correlation,
                                   const std::vector<std::int64_t>& units_per_net,
                                   const SpectralOptions& options = {});

// The rule that chose result.k, in words, with its figures (the number of eigenvalues looked at and the
// tie tolerance): for summary.json and logs.
std::string k_rule_text(const SpectralResult& result);

// The affinity of one correlation value under `mode` (off-diagonal entries).
double affinity_of(double correlation, AffinityMode mode);

// Normalised cut of a labelling (labels in [0, k) or -1 for units left out) on the affinity that `mode`
// makes from `correlation`, with the definition of SpectralResult::normalized_cut. Clusters without
// units add nothing.
double normalized_cut(MatrixView<const double> correlation, const std::vector<std::int64_t>& labels,
                      AffinityMode mode = AffinityMode::abs);

// m[order[i]][order[j]] at (i, j): the matrix with rows and columns in cluster order.
Matrix permute_symmetric(MatrixView<const double> m, const std::vector<std::int64_t>& order);

}  // namespace convergent
