// Output writers for align and match.
#include "io/study_outputs.hpp"

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "convergent/error.hpp"
#include "io/npy.hpp"
#include "cpu/pack.hpp"

namespace convergent {
namespace {

using nlohmann::json;

std::string number_text(double v) {
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", v);  // round-trips every double
  return text;
}

// unit_a,unit_b,corr for each (a, b) with b >= 0.
std::string pairs_csv(const std::vector<std::int64_t>& a_to_b, MatrixView<const double> corr) {
  std::string text = "unit_a,unit_b,corr\n";
  for (std::size_t a = 0; a < a_to_b.size(); ++a) {
    const std::int64_t b = a_to_b[a];
    if (b < 0) continue;
    text += std::to_string(a) + "," + std::to_string(b) + "," + number_text(corr(static_cast<std::int64_t>(a), b)) + "\n";
  }
  return text;
}

json pair_json(const std::string& a, const std::string& b, const PairAlignment& p) {
  return {{"a", a},
          {"b", b},
          {"semi_matching", {{"mean_corr", p.semi_mean_corr}}},
          {"matching",
           {{"mean_corr", p.matching_mean_corr},
            {"total_corr", p.matching_total_corr},
            {"pairs", std::min(p.matching.row_to_col.size(), p.matching.col_to_row.size())}}},
          {"same_assignment_fraction", p.same_assignment_fraction}};
}

void stage_pair_tables(OutputDir& out, const std::string& a, const std::string& b, MatrixView<const double> corr,
                       const PairAlignment& p) {
  const std::string suffix = a + "_" + b + ".csv";
  write_text_file(out.stage("matching_" + suffix), pairs_csv(p.matching.row_to_col, corr));
  write_text_file(out.stage("semi_" + suffix), pairs_csv(p.semi_match, corr));
}

// A rows x cols matrix written row by row (no copy of it is built): row(r, values) fills row r in float64;
// the file holds float64 or, with --matrix-dtype float32, float32.
template <class Row>
void stage_matrix_npy(OutputDir& out, const MatrixOutputs& options, const std::string& name, std::int64_t rows,
                      std::int64_t cols, const Row& row) {
  const std::string path = out.stage(name);
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) throw Error(path + ": cannot create: " + std::strerror(errno));
  const std::string header = npy_header_bytes(options.float32 ? DType::float32 : DType::float64, {rows, cols});
  file.write(header.data(), static_cast<std::streamsize>(header.size()));
  std::vector<double> values(static_cast<std::size_t>(cols));
  std::vector<float> narrow(options.float32 ? values.size() : 0);
  for (std::int64_t r = 0; r < rows && file; ++r) {
    out.check_stop();  // a large matrix takes a while: an interruption stops it between rows
    row(r, values.data());
    if (options.float32) {
      std::copy(values.begin(), values.end(), narrow.begin());
      file.write(reinterpret_cast<const char*>(narrow.data()), static_cast<std::streamsize>(narrow.size() * sizeof(float)));
    } else {
      file.write(reinterpret_cast<const char*>(values.data()), static_cast<std::streamsize>(values.size() * sizeof(double)));
    }
  }
  file.close();
  if (!file) throw Error(path + ": write failed (disk full?)");
}

void stage_block_npy(OutputDir& out, const MatrixOutputs& options, const std::string& name,
                     MatrixView<const double> block) {
  stage_matrix_npy(out, options, name, block.rows, block.cols,
                   [&](std::int64_t r, double* values) { std::copy(block.row(r), block.row(r) + block.cols, values); });
}

// Net name and unit index within the net of a concatenated unit.
std::pair<const NetInfo*, std::int64_t> locate(const Study& study, std::int64_t unit) {
  for (const NetInfo& net : study.nets)
    if (unit < net.offset + net.units) return {&net, unit - net.offset};
  throw Error("unit index out of range");
}

json stage_spectral(OutputDir& out, const Study& study, const SpectralReport& report, const MatrixOutputs& matrices) {
  const SpectralResult& r = report.result;
  std::string csv = "net,unit,cluster\n";
  for (const std::int64_t unit : r.order) {
    const auto [net, index] = locate(study, unit);
    csv += net->name + "," + std::to_string(index) + "," + std::to_string(r.labels[unit]) + "\n";
  }
  write_text_file(out.stage("clusters.csv"), csv);
  if (matrices.save == SaveMatrices::all) {
    // permute_symmetric's matrix, one row at a time.
    const MatrixView<const double> corr = study.correlation.view();
    const std::int64_t u = corr.rows;
    stage_matrix_npy(out, matrices, "corr_clustered.npy", u, u, [&](std::int64_t i, double* values) {
      const double* row = corr.row(r.order[static_cast<std::size_t>(i)]);
      for (std::int64_t j = 0; j < u; ++j) values[j] = row[r.order[static_cast<std::size_t>(j)]];
    });
  }

  json clusters = json::array();
  for (std::int64_t c = 0; c < r.k; ++c) {
    json per_net = json::object();
    for (std::size_t n = 0; n < study.nets.size(); ++n) per_net[study.nets[n].name] = r.net_counts[c][n];
    clusters.push_back({{"cluster", c}, {"size", r.cluster_sizes[c]}, {"units_per_net", per_net}, {"mixed", r.mixed[c]}});
  }
  return {{"k", r.k},
          {"k_rule", to_string(r.k_rule)},
          {"k_rule_text", k_rule_text(r)},
          {"eigengap_tolerance", r.eigengap_tolerance},
          {"affinity", to_string(report.affinity)},
          {"seed", report.seed},
          {"normalized_cut", r.normalized_cut},
          {"assignment", to_string(r.assignment)},
          {"refinement_moves", r.refinement_moves},
          {"cluster_sizes", r.cluster_sizes},
          {"mixed_share", r.mixed_share},
          {"clusters", clusters},
          {"eigenvalues", r.eigenvalues},
          {"units_left_out", r.dead_units.size()}};
}

// unit_a,unit_b,mi_miller_madow for each (a, b) with b >= 0.
std::string mi_pairs_csv(const std::vector<std::int64_t>& a_to_b, MatrixView<const double> mi) {
  std::string text = "unit_a,unit_b,mi_miller_madow\n";
  for (std::size_t a = 0; a < a_to_b.size(); ++a) {
    const std::int64_t b = a_to_b[a];
    if (b < 0) continue;
    text += std::to_string(a) + "," + std::to_string(b) + "," + number_text(mi(static_cast<std::int64_t>(a), b)) + "\n";
  }
  return text;
}

}  // namespace

std::vector<PairReport> align_all_pairs(Backend& backend, const Study& study, int threads) {
  std::vector<PairReport> pairs;
  for (std::size_t a = 0; a < study.nets.size(); ++a)
    for (std::size_t b = a + 1; b < study.nets.size(); ++b) {
      const NetInfo& na = study.nets[a];
      const NetInfo& nb = study.nets[b];
      pairs.push_back({a, b, align_pair(backend, study.correlation.block(na.offset, nb.offset, na.units, nb.units),
                                        threads)});
    }
  return pairs;
}

MiReport align_all_pairs_by_mi(Backend& backend, const Study& study, const std::vector<PairReport>& pairs,
                               MutualInformation result, std::int64_t memory_budget_bytes, int threads) {
  MiReport report;
  report.memory_budget_bytes = memory_budget_bytes;
  for (const PairReport& pair : pairs) {
    const NetInfo& a = study.nets[pair.a];
    const NetInfo& b = study.nets[pair.b];
    report.pairs.push_back(align_pair_by_mi(
        backend, result.mi_miller_madow.block(a.offset, b.offset, a.units, b.units), pair.alignment, threads));
  }
  report.result = std::move(result);
  return report;
}

json stage_mi_outputs(OutputDir& out, const Study& study, const std::vector<PairReport>& pairs, const MiReport& report,
                      const MatrixOutputs& matrices) {
  const MutualInformation& r = report.result;
  const Matrix* results[] = {&r.mi, &r.mi_miller_madow, &r.normalized};
  const char* prefixes[] = {"mi_", "mi_mm_", "nmi_"};
  json nets = json::array();
  for (const NetInfo& net : study.nets) {
    for (int k = 0; k < 3 && matrices.save == SaveMatrices::all; ++k)
      stage_block_npy(out, matrices, prefixes[k] + net.name + ".npy",
                      results[k]->block(net.offset, net.offset, net.units, net.units));
    const auto first = static_cast<std::ptrdiff_t>(net.offset), last = first + static_cast<std::ptrdiff_t>(net.units);
    std::vector<std::int64_t> dead;
    for (std::int64_t u = 0; u < net.units; ++u)
      if (r.dead[static_cast<std::size_t>(net.offset + u)]) dead.push_back(u);
    nets.push_back({{"name", net.name},
                    {"entropy", std::vector<double>(r.entropy.begin() + first, r.entropy.begin() + last)},
                    {"entropy_miller_madow",
                     std::vector<double>(r.entropy_miller_madow.begin() + first, r.entropy_miller_madow.begin() + last)},
                    {"occupied_bins", std::vector<std::int64_t>(r.occupied_bins.begin() + first, r.occupied_bins.begin() + last)},
                    {"dead_units", dead}});
  }
  json pair_list = json::array();
  for (std::size_t k = 0; k < pairs.size() && k < report.pairs.size(); ++k) {
    const NetInfo& a = study.nets[pairs[k].a];
    const NetInfo& b = study.nets[pairs[k].b];
    const std::string suffix = a.name + "_" + b.name;
    for (int m = 0; m < 3 && matrices.save != SaveMatrices::none; ++m)
      stage_block_npy(out, matrices, prefixes[m] + suffix + ".npy", results[m]->block(a.offset, b.offset, a.units, b.units));
    const PairAlignment& p = report.pairs[k].alignment;
    const auto mi_mm = r.mi_miller_madow.block(a.offset, b.offset, a.units, b.units);
    write_text_file(out.stage("mi_matching_" + suffix + ".csv"), mi_pairs_csv(p.matching.row_to_col, mi_mm));
    write_text_file(out.stage("mi_semi_" + suffix + ".csv"), mi_pairs_csv(p.semi_match, mi_mm));
    pair_list.push_back({{"a", a.name},
                         {"b", b.name},
                         {"semi_matching", {{"mean_mi", p.semi_mean_corr}}},
                         {"matching",
                          {{"mean_mi", p.matching_mean_corr},
                           {"total_mi", p.matching_total_corr},
                           {"pairs", std::min(p.matching.row_to_col.size(), p.matching.col_to_row.size())}}},
                         {"same_assignment_fraction", p.same_assignment_fraction},
                         {"same_matching_as_correlation", report.pairs[k].same_matching_as_correlation},
                         {"same_semi_matching_as_correlation", report.pairs[k].same_semi_matching_as_correlation}});
  }
  return {{"binning", to_string(r.binning)},
          {"bins", r.bins},
          {"bin_slots", r.slots},
          {"base", to_string(r.base)},
          {"samples", r.samples},
          {"quantile_rank_error", r.quantile_rank_error},
          {"alignment_measure", "mi_miller_madow"},
          {"passes", r.passes},
          {"quantile_passes", r.quantile_passes},
          {"count_blocks", r.count_blocks},
          {"count_bytes", r.count_bytes},
          {"memory_budget_bytes", report.memory_budget_bytes},
          {"memory",
           "the joint counts take 8 (U S)^2 bytes for U units of S bin slots; above the budget the unit pairs "
           "are counted in blocks, one pass over the data each"},
          {"nets", nets},
          {"pairs", pair_list}};
}

void stage_study_outputs(OutputDir& out, const Study& study, const std::vector<PairReport>& pairs,
                         const std::optional<SpectralReport>& spectral, const AnalysisResults& analyses,
                         const nlohmann::json& run, const std::optional<MiReport>& mutual_information,
                         const std::vector<SkippedAnalysis>& skipped, const MatrixOutputs& matrices) {
  const std::vector<double> sd = study.moments.stddev();
  json nets = json::array();
  for (const NetInfo& net : study.nets) {
    const auto first = static_cast<std::ptrdiff_t>(net.offset);
    const auto last = first + static_cast<std::ptrdiff_t>(net.units);
    std::vector<std::int64_t> dead;
    for (std::int64_t u = 0; u < net.units; ++u)
      if (study.dead[net.offset + u]) dead.push_back(u);
    nets.push_back({{"name", net.name},
                    {"path", net.path},
                    {"shape", net.shape},
                    {"dtype", dtype_name(net.dtype)},
                    {"units", net.units},
                    {"mean", std::vector<double>(study.moments.mean.begin() + first, study.moments.mean.begin() + last)},
                    {"std", std::vector<double>(sd.begin() + first, sd.begin() + last)},
                    {"dead_units", dead}});
    if (matrices.save == SaveMatrices::all)
      stage_block_npy(out, matrices, "corr_" + net.name + ".npy",
                      study.correlation.block(net.offset, net.offset, net.units, net.units));
  }
  json pair_list = json::array();
  for (const PairReport& pair : pairs) {
    const NetInfo& a = study.nets[pair.a];
    const NetInfo& b = study.nets[pair.b];
    const auto corr = study.correlation.block(a.offset, b.offset, a.units, b.units);
    pair_list.push_back(pair_json(a.name, b.name, pair.alignment));
    stage_pair_tables(out, a.name, b.name, corr, pair.alignment);
    if (matrices.save != SaveMatrices::none) stage_block_npy(out, matrices, "corr_" + a.name + "_" + b.name + ".npy", corr);
  }
  json summary = {{"run", run},
                  {"samples", study.moments.samples},
                  {"skipped_rows", study.skipped_rows},
                  {"nets", nets},
                  {"pairs", pair_list}};
  summary["matrices"] = {{"saved", to_string(matrices.save)}, {"dtype", matrices.float32 ? "float32" : "float64"}};
  if (spectral) summary["spectral"] = stage_spectral(out, study, *spectral, matrices);
  stage_analysis_outputs(out, study, analyses, summary);
  if (mutual_information)
    summary["mutual_information"] = stage_mi_outputs(out, study, pairs, *mutual_information, matrices);
  for (const SkippedAnalysis& s : skipped) summary["skipped_analyses"].push_back({{"name", s.name}, {"reason", s.reason}});
  write_text_file(out.stage("summary.json"), summary.dump(2) + "\n");
}

json run_section(const std::string& version, const std::string& backend, int threads, double seconds, json settings) {
  return {{"convergent_version", version},
          {"backend", backend},
          {"threads", threads},
          {"seconds", seconds},
          {"settings", std::move(settings)}};
}

NpyMatrixRows::NpyMatrixRows(const std::string& path) : npy_(path) {
  const auto& shape = npy_.header().shape;
  if (shape.size() != 2)
    throw Error(path + ": shape " + shape_text(shape) + " is not a 2-D matrix (rows = units of net A, columns = net B)");
  if (shape[0] == 0 || shape[1] == 0) throw Error(path + ": shape " + shape_text(shape) + " has no entries");
  rows_ = shape[0];
  cols_ = shape[1];
  row_bytes_ = cols_ * static_cast<std::int64_t>(dtype_size(npy_.header().dtype));
}

void NpyMatrixRows::row(std::int64_t r, double* out) {
  const NpyHeader& header = npy_.header();
  const std::int64_t element = static_cast<std::int64_t>(dtype_size(header.dtype));
  ActivationBlock block = row_major_block(npy_.data() + (header.fortran_order ? r * element : r * row_bytes_),
                                          header.dtype, 1, cols_);
  block.big_endian = header.big_endian;
  if (header.fortran_order) block.unit_stride = rows_;
  pack_block(block, MatrixView<double>(out, 1, cols_), 0);
  for (std::int64_t c = 0; c < cols_; ++c)
    if (!std::isfinite(out[c]))
      throw Error(npy_.path() + ": " + (std::isnan(out[c]) ? "NaN" : "an infinity") + " at row " + std::to_string(r) +
                  ", column " + std::to_string(c) + "; the matrix must be finite (set dead units' correlations to 0)");
  // Drop the row's pages (with a margin for the pages it shares with its neighbours: a read-only mapping
  // faults them back in when asked again), so that reading every row, in any order, does not leave the
  // file resident. A Fortran-order row touches every page; align writes C order.
  if (!header.fortran_order) {
    constexpr std::int64_t margin = 65536;
    npy_.release(std::max<std::int64_t>(0, r * row_bytes_ - margin), std::min(rows_ * row_bytes_, (r + 1) * row_bytes_ + margin));
  }
}

Matrix read_matrix_npy(const std::string& path) {
  NpyMatrixRows rows(path);
  Matrix m(rows.rows(), rows.cols());
  for (std::int64_t r = 0; r < m.rows(); ++r) rows.row(r, m.data() + r * m.cols());
  return m;
}

Matrix read_correlation_npy(const std::string& path) {
  Matrix corr = read_matrix_npy(path);
  check_correlation_values(corr.view(), path);
  return corr;
}

void check_correlation_values(MatrixView<const double> corr, const std::string& context) {
  if (corr.rows == 0 || corr.cols == 0)
    throw Error(context + ": a " + std::to_string(corr.rows) + " x " + std::to_string(corr.cols) +
                " matrix has no entries; match needs at least one unit in each net");
  for (std::int64_t r = 0; r < corr.rows; ++r)
    for (std::int64_t c = 0; c < corr.cols; ++c)
      if (!(std::abs(corr(r, c)) <= 1.0))
        throw Error(context + ": " + std::to_string(corr(r, c)) + " at row " + std::to_string(r) + ", column " +
                    std::to_string(c) + " is not a correlation; match takes a matrix of values in [-1, 1]");
}

void stage_match_outputs(OutputDir& out, const std::string& corr_path, const std::string& name_a,
                         const std::string& name_b, MatrixView<const double> corr, const PairAlignment& alignment,
                         const json& run) {
  stage_pair_tables(out, name_a, name_b, corr, alignment);
  const json summary = {{"run", run},
                        {"input", corr_path},
                        {"shape", {corr.rows, corr.cols}},
                        {"pairs", json::array({pair_json(name_a, name_b, alignment)})}};
  write_text_file(out.stage("summary.json"), summary.dump(2) + "\n");
}

}  // namespace convergent
