// Reading align's outputs back (layer_results.hpp).
#include "report/layer_results.hpp"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "convergent/error.hpp"
#include "io/study_outputs.hpp"

namespace convergent::report {
namespace {

using nlohmann::json;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

double number_or(const json& j, const char* key, double fallback) {
  const auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : fallback;
}

std::string string_or(const json& j, const char* key, const std::string& fallback = "") {
  const auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}

// Index sections come as a list of pair entries, or as an object holding one under "pairs".
const json* pair_entries(const json& summary, const char* key) {
  const auto it = summary.find(key);
  if (it == summary.end()) return nullptr;
  if (it->is_array()) return &*it;
  if (it->is_object()) {
    const auto pairs = it->find("pairs");
    if (pairs != it->end() && pairs->is_array()) return &*pairs;
  }
  return nullptr;
}

void read_index(const json& summary, const char* section, const char* field, const std::string& name,
                std::vector<PairResult>& pairs) {
  const json* entries = pair_entries(summary, section);
  if (!entries) return;
  for (const json& e : *entries) {
    if (!e.is_object()) continue;
    const auto value = e.find(field);
    if (value == e.end() || !value->is_number()) continue;  // the index was not defined for this pair
    for (PairResult& p : pairs)
      if (p.a == string_or(e, "a") && p.b == string_or(e, "b")) p.indices[name] = value->get<double>();
  }
}

// unit_a,unit_b,corr rows of a matching table.
void read_pairs_csv(const std::string& path, std::vector<std::int64_t>& a, std::vector<std::int64_t>& b,
                    std::vector<double>& corr) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open");
  std::string line;
  std::getline(in, line);
  if (line.rfind("unit_a,unit_b,corr", 0) != 0) throw Error(path + ": expected the header unit_a,unit_b,corr");
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto c1 = line.find(','), c2 = line.find(',', c1 + 1);
    if (c1 == std::string::npos || c2 == std::string::npos) throw Error(path + ": malformed row '" + line + "'");
    try {
      a.push_back(std::stoll(line.substr(0, c1)));
      b.push_back(std::stoll(line.substr(c1 + 1, c2 - c1 - 1)));
      corr.push_back(std::stod(line.substr(c2 + 1)));
    } catch (const std::exception&) {
      throw Error(path + ": malformed row '" + line + "'");
    }
  }
}

// Mutual information of the matched pairs, from the between-net MI matrix when the run wrote one.
void read_matched_mi(const json& summary, const FileLocator& files, PairResult& pair) {
  const auto section = summary.find("mutual_information");
  if (section == summary.end() || !section->is_object()) return;
  // The Miller-Madow corrected MI first (the bias-corrected figure, what align matches by), else plug-in.
  for (const std::string& file : {"mi_mm_" + pair.a + "_" + pair.b + ".npy", "mi_" + pair.a + "_" + pair.b + ".npy"}) {
    const std::string path = files(file);
    if (path.empty()) continue;
    // Row by row (the matrix is 2 GiB at 16384 units a net): only the matched rows are read.
    NpyMatrixRows mi(path);
    std::vector<double> row(static_cast<std::size_t>(mi.cols()));
    pair.match_mi.clear();
    for (std::size_t i = 0; i < pair.match_a.size(); ++i) {
      if (pair.match_a[i] >= mi.rows() || pair.match_b[i] >= mi.cols())
        throw Error(path + ": " + std::to_string(mi.rows()) + " x " + std::to_string(mi.cols()) +
                    ", too small for the matching of " + pair.a + " and " + pair.b);
      mi.row(pair.match_a[i], row.data());
      pair.match_mi.push_back(row[static_cast<std::size_t>(pair.match_b[i])]);
    }
    pair.mi_unit = string_or(*section, "base", "bits") + (file.rfind("mi_mm_", 0) == 0 ? ", Miller-Madow" : ", plug-in");
    return;
  }
}

}  // namespace

FileLocator directory_files(const std::string& dir) {
  return [dir](const std::string& name) {
    const std::string path = (std::filesystem::path(dir) / name).string();
    std::error_code ec;
    return std::filesystem::is_regular_file(path, ec) ? path : std::string();
  };
}

const NetResult* LayerResults::net(const std::string& net_name) const {
  for (const NetResult& n : nets)
    if (n.name == net_name) return &n;
  return nullptr;
}

namespace {

// `where` (a layer or a directory) holds no summary.json.
Error no_summary(const std::string& where) {
  return Error(where + ": no summary.json; give the output directory of a finished `convergent align`");
}

}  // namespace

LayerResults load_layer(const std::string& name, const FileLocator& files) {
  const std::string summary_path = files("summary.json");
  if (summary_path.empty()) throw no_summary("layer " + name);
  json summary;
  try {
    summary = json::parse(read_text(summary_path));
  } catch (const json::exception& e) {
    throw Error(summary_path + ": not valid JSON (" + e.what() + ")");
  }
  if (!summary.is_object() || !summary.contains("nets") || !summary["nets"].is_array() || !summary.contains("pairs"))
    throw Error(summary_path + ": not the summary of `convergent align` (no nets and pairs); `convergent match` "
                               "outputs have no activations to report on");

  LayerResults layer;
  layer.name = name;
  layer.files = files;
  layer.samples = static_cast<std::int64_t>(number_or(summary, "samples", 0));
  for (const json& n : summary["nets"]) {
    NetResult net;
    net.name = string_or(n, "name");
    net.units = static_cast<std::int64_t>(number_or(n, "units", 0));
    if (n.contains("mean") && n["mean"].is_array()) net.mean = n["mean"].get<std::vector<double>>();
    if (n.contains("dead_units") && n["dead_units"].is_array())
      net.dead_units = static_cast<std::int64_t>(n["dead_units"].size());
    layer.nets.push_back(std::move(net));
  }
  for (const json& p : summary["pairs"]) {
    PairResult pair;
    pair.a = string_or(p, "a");
    pair.b = string_or(p, "b");
    if (const NetResult* a = layer.net(pair.a)) pair.units_a = a->units;
    if (const NetResult* b = layer.net(pair.b)) pair.units_b = b->units;
    pair.semi_mean_corr = p.contains("semi_matching") ? number_or(p["semi_matching"], "mean_corr", 0) : 0;
    pair.matching_mean_corr = p.contains("matching") ? number_or(p["matching"], "mean_corr", 0) : 0;
    pair.same_assignment_fraction = number_or(p, "same_assignment_fraction", 0);
    const std::string suffix = pair.a + "_" + pair.b + ".csv";
    if (const std::string path = files("matching_" + suffix); !path.empty())
      read_pairs_csv(path, pair.match_a, pair.match_b, pair.match_corr);
    if (const std::string path = files("semi_" + suffix); !path.empty()) {
      std::vector<std::int64_t> a, b;
      read_pairs_csv(path, a, b, pair.semi_corr);
    }
    read_matched_mi(summary, files, pair);
    layer.pairs.push_back(std::move(pair));
  }
  read_index(summary, "linear_cka", "value", "linear_cka", layer.pairs);
  read_index(summary, "cca", "mean", "cca", layer.pairs);
  read_index(summary, "svcca", "mean", "svcca", layer.pairs);
  read_index(summary, "pwcca", "value", "pwcca", layer.pairs);
  read_index(summary, "procrustes", "similarity", "procrustes", layer.pairs);

  if (const auto spectral = summary.find("spectral"); spectral != summary.end() && spectral->is_object()) {
    if (spectral->contains("k")) layer.clusters = static_cast<std::int64_t>(number_or(*spectral, "k", 0));
    if (spectral->contains("mixed_share")) layer.mixed_share = number_or(*spectral, "mixed_share", 0);
  }
  if (const auto sparse = summary.find("sparse_prediction"); sparse != summary.end() && sparse->is_object()) {
    for (const json& d : sparse->value("directions", json::array())) {
      SparseDirection direction{string_or(d, "from"), string_or(d, "to"), {}};
      for (const json& point : d.value("path", json::array()))
        direction.path.push_back({number_or(point, "alpha", 0), number_or(point, "mean_loss", 0),
                                  number_or(point, "mean_nonzeros", 0)});
      if (!direction.path.empty()) layer.sparse.push_back(std::move(direction));
    }
  }
  return layer;
}

std::unique_ptr<NpyMatrixRows> open_matrix(const LayerResults& layer, const std::string& file) {
  const std::string path = layer.files(file);
  if (path.empty()) return nullptr;
  return std::make_unique<NpyMatrixRows>(path);
}

std::vector<ClusterRow> load_clusters(const LayerResults& layer) {
  std::vector<ClusterRow> rows;
  const std::string path = layer.files("clusters.csv");
  if (path.empty()) return rows;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  if (line.rfind("net,unit,cluster", 0) != 0) throw Error(path + ": expected the header net,unit,cluster");
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto c1 = line.find(','), c2 = line.find(',', c1 + 1);
    if (c1 == std::string::npos || c2 == std::string::npos) throw Error(path + ": malformed row '" + line + "'");
    try {
      rows.push_back({line.substr(0, c1), std::stoll(line.substr(c1 + 1, c2 - c1 - 1)), std::stoll(line.substr(c2 + 1))});
    } catch (const std::exception&) {
      throw Error(path + ": malformed row '" + line + "'");
    }
  }
  return rows;
}

std::string layer_name_of(const std::string& dir) {
  std::filesystem::path path(dir);
  while (!path.empty() && path.filename().empty()) path = path.parent_path();  // "out/conv1/" -> conv1
  const std::string name = path.filename().string();
  return name.empty() || name == "." ? std::filesystem::absolute(dir).lexically_normal().filename().string() : name;
}

namespace {

// The layer of a finished output directory; Error naming the directory when it holds no summary.json.
LayerResults load_directory(const std::string& name, const std::string& dir) {
  FileLocator files = directory_files(dir);
  if (files("summary.json").empty()) throw no_summary(dir);
  return load_layer(name, files);
}

void add_manifest(const std::string& path, std::vector<LayerResults>& layers) {
  json manifest;
  try {
    manifest = json::parse(read_text(path));
  } catch (const json::exception& e) {
    throw Error(path + ": not valid JSON (" + e.what() + "); a study manifest is {\"layers\": [{\"name\": ..., \"dir\": ...}]}");
  }
  if (!manifest.is_object() || !manifest.contains("layers") || !manifest["layers"].is_array() || manifest["layers"].empty())
    throw Error(path + ": a study manifest needs a non-empty \"layers\" list of {\"name\": ..., \"dir\": ...} or directories");
  const std::filesystem::path base = std::filesystem::path(path).parent_path();
  for (const json& entry : manifest["layers"]) {
    std::string dir, name;
    if (entry.is_string()) {
      dir = entry.get<std::string>();
    } else if (entry.is_object() && entry.contains("dir") && entry["dir"].is_string()) {
      dir = entry["dir"].get<std::string>();
      name = string_or(entry, "name");
    } else {
      throw Error(path + ": each entry of \"layers\" is a directory or {\"name\": ..., \"dir\": ...}, not " + entry.dump());
    }
    const std::string resolved = std::filesystem::path(dir).is_absolute() ? dir : (base / dir).string();
    layers.push_back(load_directory(name.empty() ? layer_name_of(dir) : name, resolved));
  }
}

}  // namespace

std::pair<std::string, std::string> split_layer_argument(const std::string& argument) {
  const auto equals = argument.find('=');
  if (equals != std::string::npos && argument.substr(0, equals).find('/') == std::string::npos)
    return {argument.substr(0, equals), argument.substr(equals + 1)};
  return {"", argument};
}

std::vector<LayerResults> load_study(const std::vector<std::string>& arguments) {
  std::vector<LayerResults> layers;
  for (const std::string& argument : arguments) {
    const auto [name, dir] = split_layer_argument(argument);
    std::error_code ec;
    if (std::filesystem::is_directory(dir, ec)) {
      layers.push_back(load_directory(name.empty() ? layer_name_of(dir) : name, dir));
    } else if (std::filesystem::is_regular_file(dir, ec)) {
      add_manifest(dir, layers);
    } else {
      throw Error(dir + ": no such output directory or study manifest");
    }
  }
  // Two layers of one name would be two rows of the table that cannot be told apart.
  for (std::size_t i = 0; i < layers.size(); ++i)
    for (std::size_t j = i + 1; j < layers.size(); ++j)
      if (layers[i].name == layers[j].name)
        throw Error("two layers are named '" + layers[i].name +
                    "'; name them apart with NAME=DIR (or \"name\" in a study manifest)");
  return layers;
}

}  // namespace convergent::report
