// The finished outputs of one `convergent align` run (one layer of a study), read back for the report and
// the study table: summary.json, the matching CSVs and, on demand, the correlation matrices. Sections
// that a run did not write (an analysis left out, or an older or newer summary.json) are simply absent.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace convergent {
class NpyMatrixRows;  // host/io/study_outputs.hpp
}  // namespace convergent

namespace convergent::report {

// Where a layer's output files are: the path of output `name` ("summary.json", "corr_a_b.npy"), or ""
// when the run did not write it.
using FileLocator = std::function<std::string(const std::string& name)>;

// The files of a finished output directory.
FileLocator directory_files(const std::string& dir);

struct NetResult {
  std::string name;
  std::int64_t units = 0;
  std::vector<double> mean;        // per unit, all units
  std::int64_t dead_units = 0;
};

// One point of a sparse-prediction path: the mean over target units at one L1 penalty.
struct AlphaPoint {
  double alpha = 0;
  double mean_loss = 0;
  double mean_nonzeros = 0;
};

struct SparseDirection {
  std::string from, to;  // `from` predicts `to`
  std::vector<AlphaPoint> path;
};

struct PairResult {
  std::string a, b;
  std::int64_t units_a = 0, units_b = 0;
  double semi_mean_corr = 0;
  double matching_mean_corr = 0;
  double same_assignment_fraction = 0;
  // The similarity indices present in summary.json, by name: linear_cka, cca (mean), svcca (mean), pwcca,
  // procrustes (similarity nu).
  std::map<std::string, double> indices;
  // matching_<a>_<b>.csv: A's unit, its one-to-one partner in B, their correlation.
  std::vector<std::int64_t> match_a, match_b;
  std::vector<double> match_corr;
  // semi_<a>_<b>.csv: the correlation of each of A's units with its best partner in B.
  std::vector<double> semi_corr;
  // Mutual information of each matched pair (aligned with match_a), when the run computed it.
  std::vector<double> match_mi;
  std::string mi_unit;  // "bits" or "nats"
};

struct LayerResults {
  std::string name;
  std::int64_t samples = 0;
  std::vector<NetResult> nets;
  std::vector<PairResult> pairs;
  std::optional<std::int64_t> clusters;        // spectral.k
  std::optional<double> mixed_share;           // spectral.mixed_share
  std::vector<SparseDirection> sparse;         // sparse_prediction.directions
  FileLocator files;                           // for the matrices, read when drawn

  const NetResult* net(const std::string& name) const;
};

// Reads summary.json and the matching tables of one layer. Throws Error naming the file when summary.json
// is missing or not the summary of an align run; sections it does not know are skipped.
LayerResults load_layer(const std::string& name, const FileLocator& files);

// A square or rectangular matrix written by align (corr_<a>_<b>.npy, corr_clustered.npy), opened to be
// read row by row (the report draws from it without holding it: 8 GiB for corr_clustered.npy of 32768
// units in float64); nothing when the layer has no such file. Errors as NpyMatrixRows.
std::unique_ptr<NpyMatrixRows> open_matrix(const LayerResults& layer, const std::string& file);

// clusters.csv as (net, unit, cluster) rows in cluster order (dead units last, cluster -1); empty when
// absent.
struct ClusterRow {
  std::string net;
  std::int64_t unit = 0;
  std::int64_t cluster = 0;
};
std::vector<ClusterRow> load_clusters(const LayerResults& layer);

// The layers named on `convergent report`'s command line, in order: finished output directories (NAME=DIR
// names the layer, a bare DIR is named by its last path component) and study manifests, JSON files
// {"layers": [{"name": "conv1", "dir": "conv1"}, "conv2", ...]} whose directories are relative to the
// manifest. Throws Error naming the argument that is neither, a directory without summary.json, two layers
// of one name, and as load_layer does.
std::vector<LayerResults> load_study(const std::vector<std::string>& arguments);

// One of those arguments as (layer name, path): "conv1=out/c1" -> ("conv1", "out/c1"); a bare path, or one
// whose first '=' follows a '/' ("out/a=b"), -> ("", path).
std::pair<std::string, std::string> split_layer_argument(const std::string& argument);

// A layer's name from its output directory: the last path component ("out/demo/conv1/" -> "conv1").
std::string layer_name_of(const std::string& dir);

}  // namespace convergent::report
