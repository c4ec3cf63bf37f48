// align after the pass: the pair alignments, spectral clustering and analyses of a study, and its outputs.
#include "analysis/align_job.hpp"

#include <algorithm>
#include <map>
#include <regex>

#include "convergent/error.hpp"
#include "report/layer_results.hpp"

namespace convergent {
namespace {

// The spectral options of the settings; no k with clusters = "auto". Throws Error as check_align_settings.
SpectralOptions spectral_options(const AlignSettings& settings) {
  SpectralOptions options;
  options.affinity = parse_affinity_mode(settings.affinity);
  options.seed = settings.seed;
  options.threads = settings.threads;
  if (settings.clusters != "auto" && settings.clusters != "none") {
    static const std::regex number("[0-9]{1,18}");
    if (!std::regex_match(settings.clusters, number))
      throw Error("--clusters '" + settings.clusters + "': expected a number of clusters, auto or none");
    options.k = std::stoll(settings.clusters);
    if (*options.k < 1) throw Error("--clusters must be at least 1");
  }
  return options;
}

AnalysisOptions analysis_options(const AlignSettings& settings) {
  AnalysisOptions options;
  options.selection = parse_analyses(settings.analyses);
  options.lasso.alphas = parse_alphas(settings.lasso_alphas);
  options.lasso.threads = settings.threads;
  options.means.seed = settings.seed;
  return options;
}

}  // namespace

void check_net_name(const std::string& name, const std::string& context) {
  static const std::regex valid_name("[A-Za-z0-9_-][A-Za-z0-9_.-]*");
  if (!std::regex_match(name, valid_name))
    throw Error(context + ": net name '" + name +
                "' must use only letters, digits, '_', '-' and '.', and must not start with '.'");
}

void check_output_names(const std::vector<std::string>& names, const std::string& rename_hint) {
  std::map<std::string, std::string> owner;  // file name stem -> what it belongs to
  auto claim = [&](const std::string& stem, const std::string& what) {
    const auto [it, fresh] = owner.emplace(stem, what);
    if (!fresh)
      throw Error(it->second + " and " + what + " would both write files named *_" + stem + ".*; " + rename_hint +
                  " (names without '_' never meet)");
  };
  for (const auto& name : names) claim(name, "net '" + name + "'");
  for (std::size_t a = 0; a < names.size(); ++a)
    for (std::size_t b = a + 1; b < names.size(); ++b)
      claim(names[a] + "_" + names[b], "the pair of nets '" + names[a] + "' and '" + names[b] + "'");
}

void check_align_settings(const AlignSettings& settings) {
  spectral_options(settings);
  analysis_options(settings);
  matrix_outputs(settings);
  mi_options(settings);
}

std::pair<bool, std::string> split_mutual_information(const std::string& list) {
  if (list == "all" || list == "none") return {list == "all", list};
  const std::string expected = "expected all, none or a comma-separated list of " + analysis_names() + ",mutual_information";
  if (list.empty()) throw Error("--analyses is empty; " + expected);
  bool selected = false, all = false;
  std::string rest;
  std::size_t start = 0;
  while (start <= list.size()) {
    const std::size_t comma = std::min(list.find(',', start), list.size());
    const std::string item = list.substr(start, comma - start);
    if (item.empty()) throw Error("--analyses '" + list + "': an empty entry; " + expected);
    if (item == "none") throw Error("--analyses '" + list + "': none stands alone, not in a list; " + expected);
    if (item == "all") {
      all = true;
    } else if (item == "mutual_information") {
      selected = true;
    } else {
      rest += (rest.empty() ? "" : ",") + item;
    }
    start = comma + 1;
  }
  if (all) {  // "all" in a list selects every analysis; the others must still be names
    if (!rest.empty()) parse_analyses(rest);
    return {true, "all"};
  }
  return {selected, rest.empty() ? "none" : rest};
}

MiOptions mi_options(const AlignSettings& settings) {
  MiOptions options;
  options.binning = parse_mi_binning(settings.mi_binning);
  options.bins = settings.mi_bins;
  options.base = parse_mi_base(settings.mi_base);
  if (settings.mi_bins < 2 || settings.mi_bins > 255) throw Error("--mi-bins must lie in [2, 255]");
  if (settings.mi_memory_mib < 1) throw Error("--mi-memory must be at least 1 MiB");
  options.memory_budget_bytes = settings.mi_memory_mib << 20;
  options.threads = settings.threads;
  return options;
}

MatrixOutputs matrix_outputs(const AlignSettings& settings) {
  if (settings.matrix_dtype != "float64" && settings.matrix_dtype != "float32")
    throw Error("--matrix-dtype '" + settings.matrix_dtype + "': expected float64 or float32");
  return {parse_save_matrices(settings.save_matrices), settings.matrix_dtype == "float32"};
}

AlignResults align_study(Backend& backend, const Study& study, const AlignSettings& settings,
                         const PhaseStart& phase) {
  const auto start = [&phase](const std::string& name) {
    if (phase) phase(name);
  };
  AlignResults results;
  start("matching");
  results.pairs = align_all_pairs(backend, study, std::max(1, settings.threads));
  start("clustering");
  if (settings.clusters != "none") {
    SpectralOptions options = spectral_options(settings);
    options.dead = study.dead;
    std::vector<std::int64_t> units_per_net;
    for (const NetInfo& net : study.nets) units_per_net.push_back(net.units);
    results.spectral = SpectralReport{spectral_clustering(backend, study.correlation.view(), units_per_net, options),
                                      options.affinity, options.seed};
  }
  start("analyses");
  std::vector<PairAlignment> matchings;
  for (const PairReport& pair : results.pairs) matchings.push_back(pair.alignment);
  results.analyses = run_analyses(backend, study, matchings, analysis_options(settings));
  return results;
}

nlohmann::json align_settings_json(const AlignSettings& settings) {
  return {{"clusters", settings.clusters},
          {"affinity", settings.affinity},
          {"seed", settings.seed},
          {"analyses", settings.analyses},
          {"lasso_alphas", parse_alphas(settings.lasso_alphas)},
          {"mi", {{"binning", settings.mi_binning}, {"bins", settings.mi_bins}, {"base", settings.mi_base},
                  {"memory_mib", settings.mi_memory_mib}}}};
}

void stage_align_outputs(OutputDir& out, const Study& study, const AlignSettings& settings,
                         const AlignResults& results, const std::optional<MiReport>& mutual_information,
                         const std::vector<SkippedAnalysis>& skipped, const nlohmann::json& run,
                         const std::string& layer, const std::optional<report::ReportOptions>& report,
                         const PhaseStart& phase) {
  if (phase) phase("writing");
  stage_study_outputs(out, study, results.pairs, results.spectral, results.analyses, run, mutual_information,
                      skipped, matrix_outputs(settings));
  if (!report) return;
  if (phase) phase("report");
  // The report reads the staged files back, so it shows exactly what is committed with it.
  const auto staged = [&out](const std::string& name) { return out.staged_path(name); };
  write_text_file(out.stage("report.html"), report::html_report({report::load_layer(layer, staged)}, *report).html);
}

}  // namespace convergent
