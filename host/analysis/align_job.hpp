// What `convergent align` does after the pass over the activations: align every pair of nets, cluster
// all units, run the selected analyses (align_study), then stage what align writes, report.html included
// (stage_align_outputs). Shared by the CLI and the Python package, so both write the same files.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "analysis/analyses.hpp"
#include "convergent/mutual_information.hpp"
#include "convergent/study.hpp"
#include "io/outputs.hpp"
#include "io/study_outputs.hpp"
#include "report/html_report.hpp"

namespace convergent {

// The settings of align's command line that act after the pass.
struct AlignSettings {
  std::string clusters = "auto";  // --clusters: a number, "auto" (eigengap) or "none"
  std::string affinity = "abs";   // --affinity: abs, positive or shifted
  std::uint64_t seed = 0;         // --seed: spectral clustering's k-means and the KS baseline splits
  std::string analyses = "all";   // --analyses, without mutual_information (see split_mutual_information)
  std::string lasso_alphas = "0.001,0.01,0.03,0.1,0.3";  // --lasso-alpha
  std::string save_matrices = "all";  // --save-matrices: all, pairs or none (see MatrixOutputs)
  std::string matrix_dtype = "float64";  // --matrix-dtype: float64 or float32
  std::string mi_binning = "quantile";  // --mi-binning: quantile or equal-width
  int mi_bins = 10;                     // --mi-bins: B in [2, 255]
  std::string mi_base = "2";            // --mi-base: 2 (bits) or e (nats)
  std::int64_t mi_memory_mib = 2048;    // --mi-memory: budget of the joint counts, MiB
  int threads = 0;                // CPU threads; 0 = all cores
};

// Net names become parts of output file names: letters, digits, '_', '-' and '.', not starting with '.'.
// Throws Error starting with `context` (the net's file, say) otherwise.
void check_net_name(const std::string& name, const std::string& context);

// Outputs are named corr_<a>.npy for a net and corr_<a>_<b>.npy for a pair, so names with '_' can meet
// (net "a_b" and the pair of "a" and "b"): throws Error naming both before any work, since the second
// file would replace the first. `rename_hint` says how the caller renames a net.
void check_output_names(const std::vector<std::string>& names, const std::string& rename_hint);

// Checks the settings before a long pass: throws Error for an unknown analysis, a malformed alpha list,
// an unknown affinity, a cluster count that is not a positive number, auto or none, an unknown
// save_matrices or matrix_dtype, or bad mutual-information options (mi_options).
void check_align_settings(const AlignSettings& settings);

// Mutual information is listed in --analyses as mutual_information beside the analyses of
// parse_analyses: returns whether it is selected ("all" selects it) and the list without it ("none" when
// nothing is left; "all" in a list selects every analysis). Throws Error for an empty list, an empty entry,
// none inside a list, or an unknown name beside all.
std::pair<bool, std::string> split_mutual_information(const std::string& list);

// The mutual-information options of the settings (bins, base, memory budget, threads). Throws Error for
// an unknown binning or base, bins outside [2, 255] or a budget below 1 MiB.
MiOptions mi_options(const AlignSettings& settings);

// The .npy matrices the settings ask for (save_matrices, matrix_dtype). Throws Error for unknown values.
MatrixOutputs matrix_outputs(const AlignSettings& settings);

// Called with a phase's name as it starts ("matching", "clustering", "analyses", "writing", "report"), for
// align's phase log; may be empty.
using PhaseStart = std::function<void(const std::string&)>;

struct AlignResults {
  std::vector<PairReport> pairs;           // every pair of nets (a < b)
  std::optional<SpectralReport> spectral;  // none with clusters = "none"
  AnalysisResults analyses;
};

// Pair alignments, spectral clustering and the selected analyses of a completed study.
AlignResults align_study(Backend& backend, const Study& study, const AlignSettings& settings,
                         const PhaseStart& phase = {});

// The settings as summary.json's run section states them: clusters, affinity, seed, analyses,
// lasso_alphas (parsed) and mi (binning, bins, base, memory_mib).
nlohmann::json align_settings_json(const AlignSettings& settings);

// Stages what align writes (stage_study_outputs, with `run` as its run section and the matrices the
// settings ask for) and, unless `report` is empty, report.html over the staged files with those options,
// as one layer named `layer`. Throws Error when Vega is missing for the report (report::require_vega).
// Nothing appears until out.commit().
void stage_align_outputs(OutputDir& out, const Study& study, const AlignSettings& settings,
                         const AlignResults& results, const std::optional<MiReport>& mutual_information,
                         const std::vector<SkippedAnalysis>& skipped, const nlohmann::json& run,
                         const std::string& layer, const std::optional<report::ReportOptions>& report,
                         const PhaseStart& phase = {});

}  // namespace convergent
