// What `convergent align` and `convergent match` write: summary.json, CSV tables and .npy matrices,
// all staged in an OutputDir so that they appear together or not at all.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "convergent/memory_plan.hpp"
#include "convergent/mutual_information.hpp"
#include "convergent/spectral.hpp"
#include "analysis/analyses.hpp"
#include "convergent/study.hpp"
#include "io/npy.hpp"
#include "io/outputs.hpp"

namespace convergent {

struct PairReport {
  std::size_t a = 0;  // net indices into Study::nets
  std::size_t b = 0;
  PairAlignment alignment;
};

// Aligns every pair of nets (a < b) of a study.
std::vector<PairReport> align_all_pairs(Backend& backend, const Study& study, int threads);

// Spectral clustering of all units of a study, with the settings that produced it.
struct SpectralReport {
  SpectralResult result;
  AffinityMode affinity = AffinityMode::abs;
  std::uint64_t seed = 0;
};

// Mutual information of a study and every pair's alignment by MI (issue 12), with the settings stated in
// summary.json.
struct MiReport {
  MutualInformation result;
  std::vector<MiPairAlignment> pairs;  // in the order of the correlation PairReports
  std::int64_t memory_budget_bytes = 0;
};

// Aligns every pair of nets (as align_all_pairs) by the Miller-Madow-corrected MI, beside their correlation
// alignments `pairs`.
MiReport align_all_pairs_by_mi(Backend& backend, const Study& study, const std::vector<PairReport>& pairs,
                               MutualInformation result, std::int64_t memory_budget_bytes, int threads);

// Which .npy matrices are written and in which dtype (--save-matrices, --matrix-dtype). Matrices are
// written row by row from the study's own, never copied whole.
struct MatrixOutputs {
  SaveMatrices save = SaveMatrices::all;
  bool float32 = false;  // float64 by default
};

// Stages summary.json, matching_<a>_<b>.csv, semi_<a>_<b>.csv, corr_<a>_<b>.npy and corr_<a>.npy; with
// a spectral report also clusters.csv (net,unit,cluster, in cluster order) and corr_clustered.npy (the
// combined correlation matrix with rows and columns in that same order); and the outputs of the
// analyses that ran (stage_analysis_outputs); with an MI report its outputs (stage_mi_outputs). `run`
// becomes summary.json's `run` section (see run_section). The .npy matrices as `matrices` says:
// corr_<net>.npy and corr_clustered.npy with `all` only, corr_<a>_<b>.npy unless `none`; summary.json's
// "matrices" section states the choice.
// An analysis that was selected but could not run (align --from-stats has no data for a second pass):
// listed in summary.json's "skipped_analyses" with the reason.
struct SkippedAnalysis {
  std::string name;
  std::string reason;
};

void stage_study_outputs(OutputDir& out, const Study& study, const std::vector<PairReport>& pairs,
                         const std::optional<SpectralReport>& spectral, const AnalysisResults& analyses,
                         const nlohmann::json& run, const std::optional<MiReport>& mutual_information = std::nullopt,
                         const std::vector<SkippedAnalysis>& skipped = {}, const MatrixOutputs& matrices = {});

// summary.json's `run` section, the one part of the outputs that may differ between runs of the same inputs
// and options: `convergent_version`, `backend` (as Backend::description), `threads` (used), `seconds`
// (wall time of the job) and `settings` (the options that shaped the results, as the command line gave
// them or as chosen automatically, e.g. the batch rows). Every other byte of every output is the same for
// the same inputs and options, whatever the thread count (tests/test_determinism.cpp).
nlohmann::json run_section(const std::string& version, const std::string& backend, int threads, double seconds,
                           nlohmann::json settings);

// Stages mi_<a>.npy, mi_mm_<a>.npy, nmi_<a>.npy per net and mi_<a>_<b>.npy, mi_mm_<a>_<b>.npy,
// nmi_<a>_<b>.npy (A's units as rows; plug-in MI, Miller-Madow MI, normalised MI; per net with `all`, per
// pair unless `none`),
// mi_matching_<a>_<b>.csv and mi_semi_<a>_<b>.csv (unit_a,unit_b,mi_miller_madow) per pair, and returns
// summary.json's mutual_information section.
nlohmann::json stage_mi_outputs(OutputDir& out, const Study& study, const std::vector<PairReport>& pairs,
                                const MiReport& report, const MatrixOutputs& matrices = {});

// A 2-D .npy matrix (float16/32/64, either byte order, C or Fortran order) read one row at a time from
// its mapping, so that a reader need not hold it (corr_clustered.npy of 32768 units is 8 GiB): the report
// draws its pictures from it. Throws Error naming the file when it is not a non-empty 2-D matrix, and
// from row() for a NaN or infinity (with its row and column).
class NpyMatrixRows {
 public:
  explicit NpyMatrixRows(const std::string& path);
  std::int64_t rows() const { return rows_; }
  std::int64_t cols() const { return cols_; }
  // Row r (cols() values) into `out` as float64, in any order; its pages leave this process's resident
  // set once read, so that reading the whole file does not keep it resident.
  void row(std::int64_t r, double* out);

 private:
  MappedNpy npy_;
  std::int64_t rows_ = 0, cols_ = 0, row_bytes_ = 0;
};

// Reads a 2-D correlation matrix (float16/32/64, C or Fortran order) whole; NaN is an error naming the file.
Matrix read_matrix_npy(const std::string& path);

// `convergent match`'s input: read_matrix_npy, then check_correlation_values.
Matrix read_correlation_npy(const std::string& path);

// Every entry must lie in [-1, 1] (NaN does not): throws Error starting with `context` (the file) naming the
// first other entry and its row and column, or the shape of a matrix with no row or no column.
void check_correlation_values(MatrixView<const double> corr, const std::string& context);

// Stages summary.json (with its `run` section), matching_<a>_<b>.csv and semi_<a>_<b>.csv for
// `convergent match`.
void stage_match_outputs(OutputDir& out, const std::string& corr_path, const std::string& name_a,
                         const std::string& name_b, MatrixView<const double> corr, const PairAlignment& alignment,
                         const nlohmann::json& run);

}  // namespace convergent
