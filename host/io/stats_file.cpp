// Statistics files (.npz): header.json describes the study, the range and every array; the Moments' arrays
// follow as float64 .npy members, exactly as held in memory (the comoment scaled by its exponents).
#include "convergent/stats_file.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "convergent/error.hpp"
#include "io/npy.hpp"
#include "io/npz.hpp"
#include "io/outputs.hpp"

namespace convergent {
namespace {

using nlohmann::json;
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "stats files are written as little-endian float64");

const char* layout_name(Layout layout) { return layout == Layout::channels_last ? "channels-last" : "channels-first"; }

// The arrays beside header.json, by name: new Moments fields join this list (and header.json's
// "arrays" describes each to a numpy user). Per-unit arrays are (U,), the comoment (U, U); the norm sums of
// the debiased CKA (K, K) and (U, K) for K nets.
struct ArrayField {
  const char* name;
  const char* description;
};
constexpr ArrayField array_fields[] = {
    {"mean", "(U,) per-unit mean, units of all nets concatenated in the order of study.nets"},
    {"min", "(U,) per-unit minimum (+inf when the range holds no sample)"},
    {"max", "(U,) per-unit maximum (-inf when the range holds no sample)"},
    {"exponent", "(U,) per-unit integer scale e_i of the comoment, held exactly as float64"},
    {"sqnorm_comoment", "(K, K) for K nets: sum over samples of a_k a_l, a_k = squared norm of the centred sample "
                        "over net k's units (debiased CKA), in the input's units"},
    {"unit_sqnorm_comoment", "(U, K) sum over samples of (x_i - mean_i) a_k, in the input's units (what merging "
                             "shards needs to move sqnorm_comoment to their common mean)"},
    {"comoment", "(U, U) sum over samples of (x_i - mean_i)(x_j - mean_j) * 2^(e_i + e_j); covariance = "
                 "comoment / samples * 2^-(e_i + e_j)"},
};

std::string npy_member(const std::vector<double>& values, const std::vector<std::int64_t>& shape) {
  std::string bytes = npy_header_bytes(DType::float64, shape);
  bytes.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(double));
  return bytes;
}

std::vector<double> array_values(const Moments& m, const std::string& name) {
  if (name == "mean") return m.mean;
  if (name == "min") return m.min;
  if (name == "max") return m.max;
  if (name == "exponent") return {m.exponent.begin(), m.exponent.end()};
  const Matrix& matrix = name == "comoment" ? m.comoment : name == "sqnorm_comoment" ? m.sqnorm_comoment : m.unit_sqnorm_comoment;
  return {matrix.data(), matrix.data() + matrix.rows() * matrix.cols()};
}

std::vector<std::int64_t> array_shape(const Moments& m, const std::string& name) {
  if (name == "comoment") return {m.units(), m.units()};
  if (name == "sqnorm_comoment") return {m.sqnorm_comoment.rows(), m.sqnorm_comoment.cols()};
  if (name == "unit_sqnorm_comoment") return {m.unit_sqnorm_comoment.rows(), m.unit_sqnorm_comoment.cols()};
  return {m.units()};
}

void set_array(Moments& m, const std::string& name, std::vector<double> values, const std::string& where) {
  if (name == "mean") m.mean = std::move(values);
  else if (name == "min") m.min = std::move(values);
  else if (name == "max") m.max = std::move(values);
  else if (name == "comoment") std::copy(values.begin(), values.end(), m.comoment.data());
  else if (name == "sqnorm_comoment") std::copy(values.begin(), values.end(), m.sqnorm_comoment.data());
  else if (name == "unit_sqnorm_comoment") std::copy(values.begin(), values.end(), m.unit_sqnorm_comoment.data());
  else
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (values[i] != std::nearbyint(values[i]) || std::abs(values[i]) > 4096)
        throw Error(where + ": entry " + std::to_string(i) + " is not an integer scale exponent");
      m.exponent[i] = static_cast<int>(values[i]);
    }
}

DType dtype_of(const std::string& name, const std::string& where) {
  for (DType t : {DType::float16, DType::float32, DType::float64})
    if (name == dtype_name(t)) return t;
  throw Error(where + ": unknown dtype '" + name + "'");
}

json study_json(const StatsStudy& s) {
  json nets = json::array();
  for (const NetInfo& n : s.nets)
    nets.push_back({{"name", n.name}, {"path", n.path}, {"shape", n.shape}, {"dtype", dtype_name(n.dtype)}, {"units", n.units}});
  return {{"nets", nets},
          {"layout", layout_name(s.layout)},
          {"inputs", s.inputs},
          {"rows_per_input", s.rows_per_input},
          {"skip_nonfinite", s.skip_nonfinite_rows},
          {"precision", to_string(s.precision)}};
}

// "" when both describe one study; else what differs, for the error message.
std::string study_difference(const StatsStudy& a, const StatsStudy& b) {
  json ja = study_json(a), jb = study_json(b);
  for (json* j : {&ja, &jb})
    for (json& net : (*j)["nets"]) net.erase("path");  // the same files may sit elsewhere on another machine
  for (const auto& [key, value] : ja.items())
    if (jb[key] != value) return key + " " + value.dump() + " against " + jb[key].dump();
  return "";
}

std::string range_text(const InputRange& r) { return std::to_string(r.begin) + ":" + std::to_string(r.end); }

}  // namespace

StatsFile stats_of(const Study& study, const StudyOptions& options) {
  StatsFile stats;
  stats.study = {study.nets, options.layout, study.inputs, study.rows_per_input, options.skip_nonfinite_rows,
                 options.precision};
  stats.range = study.range;
  stats.skipped_rows = study.skipped_rows;
  stats.backend = study.backend;
  stats.moments = study.moments;
  return stats;
}

void write_stats_file(const std::string& path, const StatsFile& stats, const std::string& version) {
  write_file_atomically(path, stats_bytes(stats, version));
}

std::string stats_bytes(const StatsFile& stats, const std::string& version) {
  json arrays = json::object();
  for (const ArrayField& f : array_fields) arrays[std::string(f.name)] = f.description;
  const json header = {{"format", "convergent-stats"},
                       {"format_version", stats_format_version},
                       {"convergent_version", version},
                       {"study", study_json(stats.study)},
                       {"inputs", {stats.range.begin, stats.range.end}},
                       {"samples", stats.moments.samples},
                       {"skipped_rows", stats.skipped_rows},
                       {"backend", stats.backend},
                       {"arrays", arrays}};
  std::vector<NpzMember> members{{"header.json", header.dump(2) + "\n"}};
  for (const ArrayField& f : array_fields)
    members.push_back({std::string(f.name) + ".npy", npy_member(array_values(stats.moments, f.name),
                                                                 array_shape(stats.moments, f.name))});
  return npz_bytes(std::move(members));
}

StatsFile parse_stats(const std::string& path, const std::string& bytes) {
  const std::vector<NpzMember> members = parse_npz(path, bytes);
  auto member = [&](const std::string& name) -> std::string_view {
    for (const NpzMember& m : members)
      if (m.name == name) return m.bytes;
    throw Error(path + ": no member '" + name + "'; not a complete convergent stats file");
  };
  StatsFile stats;
  try {
    const json header = json::parse(member("header.json"));
    if (header.value("format", "") != "convergent-stats") throw Error(path + ": not a convergent stats file");
    if (header.at("format_version") != stats_format_version)
      throw Error(path + ": stats format version " + header.at("format_version").dump() + "; this convergent reads " +
                  std::to_string(stats_format_version));
    const json& s = header.at("study");
    std::int64_t offset = 0;
    for (const json& n : s.at("nets")) {
      NetInfo net{n.at("name"), n.at("path"), n.at("shape").get<std::vector<std::int64_t>>(),
                  dtype_of(n.at("dtype"), path), n.at("units"), offset};
      offset += net.units;
      stats.study.nets.push_back(std::move(net));
    }
    stats.study.layout = s.at("layout") == "channels-last" ? Layout::channels_last : Layout::channels_first;
    stats.study.inputs = s.at("inputs");
    stats.study.rows_per_input = s.at("rows_per_input");
    stats.study.skip_nonfinite_rows = s.at("skip_nonfinite");
    stats.study.precision = parse_precision(s.at("precision"));
    stats.range = {header.at("inputs").at(0), header.at("inputs").at(1)};
    stats.skipped_rows = header.at("skipped_rows");
    stats.backend = header.at("backend");
    std::vector<std::int64_t> units;
    for (const NetInfo& n : stats.study.nets) units.push_back(n.units);
    if (units.size() < 2 || std::any_of(units.begin(), units.end(), [](std::int64_t u) { return u < 1; }))
      throw Error(path + ": header.json lists " + std::to_string(units.size()) + " nets with these unit counts; a study has two or more, each with units");
    stats.moments = Moments(units);
    stats.moments.samples = header.at("samples");
  } catch (const json::exception& e) {
    throw Error(path + ": header.json is not what convergent writes: " + e.what());
  }
  const StatsStudy& s = stats.study;
  if (stats.range.begin < 0 || stats.range.end < stats.range.begin || stats.range.end > s.inputs || s.rows_per_input < 1 ||
      stats.moments.samples < 0 || stats.skipped_rows < 0 ||
      stats.moments.samples + stats.skipped_rows != stats.range.size() * s.rows_per_input)
    throw Error(path + ": header.json's inputs " + range_text(stats.range) + " of " + std::to_string(s.inputs) + " (" +
                std::to_string(s.rows_per_input) + " rows each) do not add up to its " +
                std::to_string(stats.moments.samples) + " samples and " + std::to_string(stats.skipped_rows) +
                " skipped rows");
  for (const ArrayField& f : array_fields) {
    const std::string where = path + ": " + f.name + ".npy";
    const std::string_view npy = member(std::string(f.name) + ".npy");
    const auto* data = reinterpret_cast<const unsigned char*>(npy.data());
    const NpyHeader h = parse_npy_header(where, data, static_cast<std::int64_t>(npy.size()));
    const std::vector<std::int64_t> expected = array_shape(stats.moments, f.name);
    if (h.dtype != DType::float64 || h.big_endian || h.fortran_order || h.shape != expected)
      throw Error(where + ": " + dtype_name(h.dtype) + " " + shape_text(h.shape) + ", expected little-endian C-order float64 " +
                  shape_text(expected));
    std::vector<double> values(static_cast<std::size_t>(h.elements()));
    std::memcpy(values.data(), data + h.data_offset, values.size() * sizeof(double));
    set_array(stats.moments, f.name, std::move(values), where);
  }
  return stats;
}

StatsFile read_stats_file(const std::string& path) { return parse_stats(path, read_file_bytes(path)); }

StatsFile merge_stats(std::vector<StatsFile> shards, std::vector<std::string> paths) {
  if (shards.empty()) throw Error("merge needs at least one stats file");
  for (std::size_t k = 1; k < shards.size(); ++k)
    if (const std::string d = study_difference(shards[0].study, shards[k].study); !d.empty())
      throw Error(paths[k] + ": a shard of another study than " + paths[0] + " (" + d + ")");
  std::vector<std::size_t> order(shards.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return std::pair(shards[a].range.begin, shards[a].range.end) < std::pair(shards[b].range.begin, shards[b].range.end);
  });
  StatsFile merged = std::move(shards[order[0]]);
  std::set<std::string> backends{merged.backend};
  for (std::size_t k = 1; k < order.size(); ++k) {
    const StatsFile& next = shards[order[k]];
    const std::string& here = paths[order[k]];
    const std::string& before = paths[order[k - 1]];
    if (next.range.begin < merged.range.end)
      throw Error(here + ": inputs " + range_text(next.range) + " overlap those of " + before + " (up to " +
                  std::to_string(merged.range.end) + "); each input must be counted once");
    if (next.range.begin > merged.range.end)
      throw Error(before + " ends at input " + std::to_string(merged.range.end) + " but " + here + " starts at " +
                  std::to_string(next.range.begin) + ": inputs " + range_text({merged.range.end, next.range.begin}) +
                  " are in no shard (a missing file?)");
    merge(merged.moments, next.moments);
    merged.skipped_rows += next.skipped_rows;
    merged.range.end = next.range.end;
    backends.insert(next.backend);
  }
  merged.backend.clear();
  for (const std::string& b : backends) merged.backend += (merged.backend.empty() ? "" : ", ") + b;
  return merged;
}

Study study_of(const StatsFile& stats, const std::string& path) {
  if (stats.range.begin != 0 || stats.range.end != stats.study.inputs)
    throw Error(path + ": covers inputs " + range_text(stats.range) + " of the study's " +
                std::to_string(stats.study.inputs) + "; merge every shard first (convergent merge)");
  Study study;
  study.nets = stats.study.nets;
  study.moments = stats.moments;
  study.skipped_rows = stats.skipped_rows;
  study.backend = stats.backend;
  study.inputs = stats.study.inputs;
  study.rows_per_input = stats.study.rows_per_input;
  study.range = stats.range;
  return study;
}

}  // namespace convergent
